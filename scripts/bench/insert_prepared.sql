-- Encrypted OLTP, prepared statements: insert a user, three encrypted
-- columns as bind parameters (strings made by a first statement, \gset).
-- 16-digit ids: scripts/bench.sh deletes a run's rows after it, so a
-- duplicate needs two equal ids among one run's ~50,000 (once in millions
-- of runs).
\set id random(1000000000000000, 9999999999999999)
SELECT 'b' || :id::text || '@example.com' AS email, 'Bench User ' || :id::text AS name, '+1-555-' || :id::text AS phone \gset
INSERT INTO users (email, full_name, phone) VALUES (:email, :name, :phone);
