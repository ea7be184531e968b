-- Encrypted OLTP, simple protocol: insert a user, three encrypted columns
-- (one searchable: pgveil also fills its blind index).
-- 16-digit ids: scripts/bench.sh deletes a run's rows after it, so a
-- duplicate needs two equal ids among one run's ~50,000 (once in millions
-- of runs).
\set id random(1000000000000000, 9999999999999999)
INSERT INTO users (email, full_name, phone) VALUES ('b:id@example.com', 'Bench User :id', '+1-555-:id');
