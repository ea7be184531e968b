// Package proxy is pgveil's wire-protocol side: it accepts PostgreSQL
// clients, connects each to its own upstream PostgreSQL connection, and
// relays the protocol in both directions, applying the rewrite plans and
// the keyring on the way.
//
// # Sessions
//
// A Server runs one Session per client connection. Startup is one
// sequential phase under proxy.startup_timeout: SSLRequest (TLS toward the
// client when configured; plaintext bytes sent after SSLRequest are
// refused) and GSSENCRequest ('N'), the StartupMessage (replication
// refused; 57P03 while draining or in maintenance mode), the upstream
// connection (upstream_tls), the authentication relay (trust, password,
// md5, SCRAM-SHA-256; SCRAM-SHA-256-PLUS is removed from the server's
// offer because channel binding cannot cross a TLS-terminating proxy), and
// the catalog load (see catalog.go). When the login succeeds and a backend
// that an earlier client of the same user, database and parameters left
// idle is kept, the session moves to it (upstreams.go). BackendKeyData
// passes through: there is one upstream, so a CancelRequest that names a
// live session is forwarded to it, with the key of the backend that carries
// the session.
//
// Then the session's two directions run, on one of two I/O engines with the
// same handlers (onClientMessage, onServerMessage). A session without TLS
// moves to an event loop (eventloop_linux.go, proxy.event_loops): an epoll
// loop over non-blocking sockets that runs the handlers on whole frames
// already in memory (memFrames) and flushes after each readiness event; a
// session with TLS on a leg keeps two goroutines, described next. In both,
// only the client side writes upstream and only the server side writes to
// the client.
//
// On goroutines, clientLoop reads the client, plans each
// statement with rewrite, applies the write side of the plan (tokens, blind
// indexes, hidden parameters), writes only to PostgreSQL, and pushes one
// expect entry per message that earns a reply. serverLoop reads
// PostgreSQL, pops those entries, applies the read side (decrypting the
// columns RowDescription marks, cutting hidden parameters out of
// ParameterDescription, dropping replies to pgveil's own messages) and
// writes only to the client. Either loop ending closes both sockets.
//
// # The expect queue
//
// expectQueue is the only state both loops share. Each entry says which
// reply the server owes and carries what serverLoop needs (the statement,
// portal or plan, never the registry itself). On an ErrorResponse in the
// extended protocol serverLoop drops every entry up to the next Sync, as
// PostgreSQL discards the messages up to Sync; when the client's Sync is
// not queued yet, the queue records nothing the client sends until that
// Sync, whose ReadyForQuery it still awaits. In the simple protocol the
// Query's entry stays until its ReadyForQuery. PostgreSQL ignores Sync and
// Flush during COPY FROM STDIN: a Sync the client sent between a statement
// and its CopyDone or CopyFail (libpq sends one right after Execute) is
// dropped from the queue when CopyInResponse arrives, or not recorded if
// sent after it. NoticeResponse, NotificationResponse and ParameterStatus
// never pop anything.
//
// # Refusals and errors
//
// A statement pgveil refuses (0A000, 54000, 22021) is not answered by
// pgveil directly: clientLoop sends PostgreSQL, in its place, a DO block
// that raises the same SQLSTATE and message (raiseSQL). The error so takes
// the refused message's place in the reply order, the server discards the
// rest of the extended batch up to Sync, and inside a transaction block the
// server's transaction fails exactly as the client sees it fail, so a later
// COMMIT cannot commit work the client saw fail. A stored value no key
// opens (XX001) is found by serverLoop while rows stream; it answers with
// its own ErrorResponse and discards the server's replies up to the next
// ReadyForQuery, so no wrong row ever reaches the client. PostgreSQL saw no
// error: when that ReadyForQuery says 'T', the client is told 'E' and
// clientLoop sends a raising statement (its replies dropped) before the
// client's next message, so PostgreSQL's transaction block fails too and a
// COMMIT rolls back. What PostgreSQL ran before pgveil found the value (the
// rest of a multi-statement Query, or of an extended batch already sent) is
// not undone outside a transaction block: an implicit transaction commits
// at its ReadyForQuery (see README, Known limits).
//
// # Buffers and flushing
//
// Each socket has one read buffer and one write buffer (8 and 16 KiB at
// first; the goroutine engine swaps in 64 KiB ones, the event loop grows its
// input while reads fill it). Frames that
// need no change are copied from the read buffer to the write buffer
// without being decoded (large ones stream through); only Query, Parse,
// Bind, Describe, Execute and Close are looked at on the way in, and
// RowDescription plus the DataRows of results with encrypted columns on the
// way out. A loop flushes its write buffer only when its read buffer is
// empty, i.e. right before it would block: a pipeline or a result set goes
// out in as few writes as the kernel allows, and nothing waits in a buffer
// while pgveil waits for input.
//
// # What a statement costs
//
// On a small machine shared with the application and the database, the
// processes running between two events of a session evict most of its
// memory from the caches, so what a statement costs pgveil is mostly the
// cache lines it touches, not the instructions it runs. The hot path is
// built for that: the unnamed statement and portal (what most drivers use
// every time) live in fields, not maps, and the portal is reused once
// nothing owed refers to it; Bind is decoded in place; frames a handler
// decoded but left unchanged go out from the read buffer; the session owns
// the scratch memory of its plan lookups (rewrite.Scratch, which also
// remembers the last statement's shape so the same text with other
// constants skips the lexer) and of its tokens (keyring.Scratch, which
// also remembers the last column key); HMACs start from each key's
// precomputed SHA-256 states; the fields every statement uses are laid out
// together (Session); duration metrics are batched per session
// (timings.go) and, like the tokens' timestamps, read from the TSC where
// the kernel keeps time with it (clock.go). The
// session benchmarks (session_bench_test.go) run a statement's messages
// through the handlers, warm and with the caches evicted first.
//
// # COPY
//
// COPY FROM STDIN on a configured table is rewritten row by row as the
// CopyData stream arrives (rows do not align with messages); COPY TO
// STDOUT rows are decrypted one CopyData at a time. See copy.go.
package proxy
