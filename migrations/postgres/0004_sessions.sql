-- Web sessions and logins in progress, for people using the pages (PostgreSQL).
-- Times are milliseconds since the epoch; JSON is stored as text.

-- A signed-in browser. The cookie holds a random 256-bit id; only its SHA-256 is kept
-- here, so reading this table does not let anyone act as a signed-in person.
CREATE TABLE web_sessions (
    id_hash    TEXT PRIMARY KEY,
    principal  TEXT NOT NULL,
    via        TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX web_sessions_by_expiry ON web_sessions (expires_at);

-- An authorization-code login between the redirect to the provider and its callback,
-- keyed by the SHA-256 of its `state`; taken (deleted) by the callback, so used once.
CREATE TABLE web_logins (
    state_hash    TEXT PRIMARY KEY,
    nonce         TEXT NOT NULL,
    code_verifier TEXT NOT NULL,
    next_path     TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX web_logins_by_expiry ON web_logins (expires_at);
