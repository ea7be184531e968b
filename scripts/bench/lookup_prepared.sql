-- Encrypted OLTP, prepared statements: find a user by email and read three
-- encrypted columns, the email sent as a bind parameter. pgbench variables
-- are numbers, so the email string is made by a first statement (\gset); it
-- touches no table and passes through pgveil untouched, and it is in the
-- PgBouncer run too.
\set id random(1, :users)
SELECT 'u' || :id::text || '@example.com' AS email \gset
SELECT email, full_name, phone FROM users WHERE email = :email;
