-- Reference for the encrypted OLTP lookup, through PgBouncer with no
-- cryptography: users_shape is a copy of the encrypted users table (the
-- same tokens), its email_hash replaced by a 50-63 character key pgbench
-- can spell, so PostgreSQL does the lookup pgveil's rewrite asks of it.
\set id random(1, :users)
SELECT email, full_name, phone FROM users_shape WHERE email_hash = '3f9a1c0d5e7b2a4f6c8e0d1b3a5c7e9f1d3b5a7c9e1f3d5b7:id';
