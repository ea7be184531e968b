// Package pgtest runs the real PostgreSQL that pgveil's integration tests
// talk to.
//
// One throwaway cluster is started per test binary, lazily, by the first
// call to Get (or Shared): initdb into a temporary directory, then the
// postgres server from the installed binaries (PGVEIL_TEST_PGBIN, else
// pg_config --bindir, else the newest /usr/lib/postgresql/*/bin) on a free
// port of 127.0.0.1, with
// fsync=off, ssl=on and max_connections=300. When the test process runs as
// root, initdb and postgres run as the postgres OS user. Main, called from
// TestMain, stops the cluster and removes its directory when the tests end;
// if the test binary dies instead (a -timeout panic), the server gets
// SIGQUIT through the parent-death signal and the next run removes the
// directory it left.
//
// When PGVEIL_TEST_DSN is set (a superuser DSN), that server is used
// instead and nothing is started; the login roles are created there if
// missing. pg_hba.conf and the server's TLS set-up are then the server's
// own, so tests that need them call RequireLocal.
//
// Roles of the harness cluster, each allowed over TCP from 127.0.0.1 with
// exactly one authentication method (pg_hba.conf has one line per role):
//
//	postgres       superuser     scram-sha-256 (trust on the unix socket)
//	veil_trust     login         trust
//	veil_md5       login         md5 (password stored as md5)
//	veil_scram     login         scram-sha-256
//	veil_password  login         password (cleartext)
//
// The login roles are not superusers; they are members of veil_app, which
// owns every database NewDB creates, and default privileges in those
// databases give veil_app everything any of them (or the superuser) creates,
// so a table made by one role is usable by the others.
//
// Under go test -short, Get skips the test: integration tests are the slow
// part of the suite. Otherwise a missing PostgreSQL fails the test with a
// message naming the Debian package to install; it never skips silently.
package pgtest
