-- Encrypted OLTP, prepared statements: insert a user, three encrypted
-- columns as bind parameters (strings made by a first statement, \gset).
\set id random(10000000, 999999999999)
SELECT 'b' || :id::text || '@example.com' AS email, 'Bench User ' || :id::text AS name, '+1-555-' || :id::text AS phone \gset
INSERT INTO users (email, full_name, phone) VALUES (:email, :name, :phone);
