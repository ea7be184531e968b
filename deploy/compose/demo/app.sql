-- The application's queries, unchanged: pgveil encrypts, decrypts and
-- rewrites them. Safe to run more than once.
\set ON_ERROR_STOP on

INSERT INTO users (email, full_name)
VALUES ('alice@example.com', 'Alice Example'), ('bob@example.com', 'Bob Example')
ON CONFLICT (email) DO NOTHING;

-- Equality on an encrypted column goes through its blind index.
SELECT id AS alice FROM users WHERE email = 'alice@example.com' \gset

INSERT INTO tasks (user_id, title, description)
VALUES (:alice, 'Write the report', 'Quarterly numbers for the board');
INSERT INTO chat_history (user_id, message)
VALUES (:alice, 'Hi, can you send me the report?');

SELECT u.email, u.full_name, t.title, t.description
FROM users u JOIN tasks t ON t.user_id = u.id
WHERE u.email = 'alice@example.com';

SELECT count(*) AS messages FROM chat_history WHERE user_id = :alice;

-- What cannot be computed on ciphertext is refused (SQLSTATE 0A000),
-- never answered wrongly.
\set ON_ERROR_STOP off
\set VERBOSITY verbose
SELECT id FROM users WHERE email LIKE '%@example.com';
