-- Straight from PostgreSQL, bypassing pgveil: tokens and blind indexes only.
SELECT id,
       left(email, 16) || '...'   AS email_token,
       email LIKE 'gAAAAA%'       AS email_is_token,
       length(email_hash)         AS email_hash_len,
       left(full_name, 16) || '...' AS full_name_token
FROM users ORDER BY id;
SELECT id, left(title, 16) || '...' AS title_token FROM tasks ORDER BY id;
