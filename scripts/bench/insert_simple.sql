-- Encrypted OLTP, simple protocol: insert a user, three encrypted columns
-- (one searchable: pgveil also fills its blind index).
-- 16-digit ids: a run of all rounds inserts about two million rows, which
-- in a range of 10^12 would meet a duplicate in most runs, in 9*10^15 about
-- once in 10,000.
\set id random(1000000000000000, 9999999999999999)
INSERT INTO users (email, full_name, phone) VALUES ('b:id@example.com', 'Bench User :id', '+1-555-:id');
