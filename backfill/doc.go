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
// committed, saved at most every 200 ms, plus a signature of the columns
// and the target key so that progress of another configuration is not
// reused. After kill -9 a rerun starts after that key; batches committed
// after the last save are done again, which changes nothing. A run that
// ends (done, or stopped by MaxFailures) deletes its row, so the next run
// covers the whole table again. Without the privilege to create the table,
// runs still work and a rerun starts from the beginning (cheap: nothing is
// rewritten).
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
// A row fails when a value is undecryptable, over max_size or refused by
// sanitize_input; when failed rows exceed MaxFailures of the rows examined
// the run stops with a *FailureError. Failed values are never written.
//
// Nothing in a message, summary or report is a value: rows are named by
// primary key.
package backfill
