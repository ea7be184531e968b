-- Encrypted OLTP, simple protocol: find a user by email and read three
-- encrypted columns. pgbench substitutes the id inside the quoted literal, so
-- the server (or pgveil) receives an inlined value, as from psql or psycopg2.
\set id random(1, :users)
SELECT email, full_name, phone FROM users WHERE email = 'u:id@example.com';
