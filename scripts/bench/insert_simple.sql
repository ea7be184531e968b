-- Encrypted OLTP, simple protocol: insert a user, three encrypted columns
-- (one searchable: pgveil also fills its blind index).
\set id random(10000000, 999999999999)
INSERT INTO users (email, full_name, phone) VALUES ('b:id@example.com', 'Bench User :id', '+1-555-:id');
