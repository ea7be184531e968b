-- Reference for the encrypted OLTP insert, through PgBouncer with no
-- cryptography: the statement pgveil sends for insert_simple.sql, with
-- token-sized values (about 130 characters) and a 64-character key spelled
-- by pgbench instead of computed.
\set id random(1000000000000000, 9999999999999999)
INSERT INTO users_shape (email, full_name, phone, email_hash) VALUES ('gAAAAABpKx7yQm3v9Zr1Tq8WnEb0sLd2YcHf5uJa6kOi4gXe7pMz3NwQ1rVt9yBc5dFh8jKl0sAq2wEr4tYu6iOp8aSd0fGh2jKl4zXc6vBn8mQ:id==', 'gAAAAABpKx7yQm3v9Zr1Tq8WnEb0sLd2YcHf5uJa6kOi4gXe7pMz3NwQ1rVt9yBc5dFh8jKl0sAq2wEr4tYu6iOp8aSd0fGh2jKl4zXc6vBn8mQ:id==', 'gAAAAABpKx7yQm3v9Zr1Tq8WnEb0sLd2YcHf5uJa6kOi4gXe7pMz3NwQ1rVt9yBc5dFh8jKl0sAq2wEr4tYu6iOp8aSd0fGh:id==', '3f9a1c0d5e7b2a4f6c8e0d1b3a5c7e9f1d3b5a7c9e1f3d5b7a9c1e:id');
