-- Alerts, episodes, investigations and their event logs (SQLite).
-- Times are milliseconds since the epoch; JSON is stored as text.

CREATE TABLE deliveries (
    id          TEXT PRIMARY KEY,
    source      TEXT NOT NULL,
    body        TEXT NOT NULL,
    received_at INTEGER NOT NULL
);

CREATE TABLE episodes (
    id               TEXT PRIMARY KEY,
    episode_key      TEXT NOT NULL,
    source           TEXT NOT NULL,
    title            TEXT NOT NULL,
    team             TEXT NOT NULL,
    service          TEXT,
    opened_at        INTEGER NOT NULL,
    last_alert_at    INTEGER NOT NULL,
    resolved_at      INTEGER,
    alert_count      INTEGER NOT NULL DEFAULT 0,
    investigation_id TEXT
);
CREATE INDEX episodes_by_key ON episodes (episode_key, opened_at);

CREATE TABLE alerts (
    id            TEXT PRIMARY KEY,
    dedup_key     TEXT NOT NULL UNIQUE,
    episode_id    TEXT NOT NULL REFERENCES episodes (id),
    delivery_id   TEXT NOT NULL REFERENCES deliveries (id),
    source        TEXT NOT NULL,
    status        TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    labels        TEXT NOT NULL,
    annotations   TEXT NOT NULL,
    starts_at     INTEGER,
    ends_at       INTEGER,
    generator_url TEXT,
    raw           TEXT NOT NULL,
    received_at   INTEGER NOT NULL
);
CREATE INDEX alerts_by_episode ON alerts (episode_id, received_at);

CREATE TABLE investigations (
    id               TEXT PRIMARY KEY,
    episode_id       TEXT NOT NULL UNIQUE REFERENCES episodes (id),
    title            TEXT NOT NULL,
    team             TEXT NOT NULL,
    service          TEXT,
    state            TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    resolved_at      INTEGER,
    attempts         INTEGER NOT NULL DEFAULT 0,
    failures         INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    summary          TEXT,
    next_seq         INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX investigations_by_state ON investigations (state, created_at);
CREATE INDEX investigations_by_created ON investigations (created_at);

CREATE TABLE investigation_events (
    investigation_id TEXT NOT NULL REFERENCES investigations (id),
    seq              INTEGER NOT NULL,
    kind             TEXT NOT NULL,
    data             TEXT NOT NULL,
    at               INTEGER NOT NULL,
    PRIMARY KEY (investigation_id, seq)
);
