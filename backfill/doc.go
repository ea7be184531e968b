// Package backfill holds pgveil's admin data commands: backfill (encrypt
// existing rows and fill blind indexes), reencrypt (key rotation), rehash
// (hash key rotation), decrypt (rollback) and verify, plus the schema DDL
// planner behind pgveil schema and pgveil check. It is the only package
// that writes rows; it connects to PostgreSQL directly with pgx, never
// through the proxy.
//
// # Batches
//
// A Job walks each configured table by primary key (keyset pagination,
// composite keys included; a table without a primary key is refused with a
// *SchemaError). One reader reads batches of BatchSize rows, with their
// xmin, in key order; Workers goroutines evaluate them (encrypt, open,
// hash) and write each batch with one UPDATE ... FROM unnest(arrays), one
// statement and so one transaction per batch.
//
// # Concurrent writers
//
// The UPDATE writes a row only when
//
//   - its xmin is still the one the batch read: the application has not
//     changed the row since (compare-and-swap), and
//   - no other transaction holds its lock: rows are locked with
//     FOR UPDATE SKIP LOCKED, so the backfill never waits on the
//     application and cannot deadlock with it.
//
// The rows it did not write (RETURNING tells) are read again and
// evaluated afresh, with backoff, until each is written, found deleted or
// found to need nothing. The application's last write always wins; the
// value it wrote is then encrypted from what it is now, never from what
// the batch read.
//
// # Idempotence and resuming
//
// Every operation moves a value towards one state and skips values already
// there: backfill never encrypts a value that is a token under any
// configured key (a token no key opens is a failed row, left alone);
// reencrypt leaves tokens of the primary key; rehash leaves correct blind
// indexes; decrypt leaves plaintext. So running a batch twice changes
// nothing.
//
// Progress is kept in pgveil.backfill_progress (ProgressTable): per table,
// operation and shard, the primary key below which every batch has
// committed (with the rows done and failed below it), saved at most every
// 200 ms, or that the table is done; plus a signature of the columns and
// the target key so that progress of another configuration is not reused.
// After kill -9 a rerun skips the tables marked done and starts the one in
// progress after its key; batches committed after the last save are done
// again, which changes nothing. A table is marked done only when it
// finished without failed rows (one with failures, or stopped by
// MaxFailures, is gone over again by the rerun, to retry them). A run that
// gets through all its tables deletes their rows, so the next run covers
// everything again; NoResume does so at the start. Without the privilege
// to create the table, runs still work and a rerun starts from the
// beginning (cheap: nothing is rewritten).
//
// # Duplicates
//
// A blind index inherits the uniqueness of its plaintext column. A value
// written through the proxy while an older row still holds it in plaintext
// (mode: migrating), or under a new hash key while the older row's blind
// index is under the old one (a rehash), is not refused by PostgreSQL; the
// write that would give the older row its blind index then is (23505). The
// batch is written again in halves until the rows that violate it are
// alone; each is written without the columns of the violated index (left
// as they are, consistent) and counts as failed (reason "duplicate"), and
// the summary names it with the rows that hold the value already, by
// primary key. verify finds the same rows before any write.
//
// # Decrypt and the blind index
//
// decrypt writes the plaintext back and sets the blind index to NULL: the
// state before the backfill, which mode: migrating serves (plaintext rows
// are looked up by their plaintext while their blind index is empty), and
// which cannot leave a stale hash that a unique index on the blind index
// would trip over later. verify therefore reports a decrypted column as
// plaintext with its blind index missing (exit 1), and backfill brings it
// back to OK.
//
// # Shards, rate and failures
//
// Shard I/N selects the rows whose primary key hashes to I modulo N
// (hashtext of the key's text form), which every pod of a Kubernetes
// Indexed Job computes alike, whatever the others do; each pod keeps its
// own progress. MaxRate paces rows over all workers with a token bucket.
// A row fails when a value is undecryptable, over max_size, refused by
// sanitize_input or a duplicate; when failed rows exceed MaxFailures of the
// rows examined the run stops with a *FailureError, whose Hint says what
// to do for each reason. Failed values are never written.
//
// Nothing in a message, summary or report is a value: rows are named by
// primary key.
package backfill
