-- Encrypted OLTP, prepared statements: insert a user, three encrypted
-- columns as bind parameters (strings made by a first statement, \gset).
-- 16-digit ids: a run of all rounds inserts about two million rows, which
-- in a range of 10^12 would meet a duplicate in most runs, in 9*10^15 about
-- once in 10,000.
\set id random(1000000000000000, 9999999999999999)
SELECT 'b' || :id::text || '@example.com' AS email, 'Bench User ' || :id::text AS name, '+1-555-' || :id::text AS phone \gset
INSERT INTO users (email, full_name, phone) VALUES (:email, :name, :phone);
