-- The application's schema before pgveil: plaintext personal data.
-- `pgveil schema --apply` (the `schema` service) adds what pgveil needs.
CREATE TABLE users (
    id         bigserial PRIMARY KEY,
    email      varchar(255) NOT NULL UNIQUE,
    full_name  varchar(255),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tasks (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users(id),
    title       varchar(200) NOT NULL,
    description text,
    done        boolean NOT NULL DEFAULT false
);

CREATE TABLE chat_history (
    id         bigserial PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users(id),
    message    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
