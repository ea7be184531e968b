-- Encrypted OLTP, prepared statements: insert a user, three encrypted
-- columns as bind parameters (strings made by a first statement, \gset).
-- 16-digit ids: a run of all rounds inserts about a million rows, which
-- would meet a duplicate in a range of 10^12 about once in ten runs.
\set id random(1000000000000000, 9999999999999999)
SELECT 'b' || :id::text || '@example.com' AS email, 'Bench User ' || :id::text AS name, '+1-555-' || :id::text AS phone \gset
INSERT INTO users (email, full_name, phone) VALUES (:email, :name, :phone);
