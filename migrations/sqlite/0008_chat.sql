-- Chat threads (SQLite): per medium (sink) and investigation, the thread's reference at the
-- medium and how far the investigation's log was posted there. A relay claims a row
-- until `claimed_until` to post it; one that died leaves it to be claimed again.
CREATE TABLE chat_threads (
    sink             TEXT NOT NULL,
    investigation_id TEXT NOT NULL,
    thread_ref       TEXT,
    posted_seq       INTEGER NOT NULL DEFAULT 0,
    status           TEXT NOT NULL DEFAULT '',
    claimed_by       TEXT,
    claimed_until    INTEGER,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (sink, investigation_id)
);

-- Every post, keyed by the event it tells.
CREATE TABLE chat_posts (
    sink             TEXT NOT NULL,
    investigation_id TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    remote_id        TEXT NOT NULL,
    posted_at        INTEGER NOT NULL,
    PRIMARY KEY (sink, investigation_id, seq)
);
