-- GitHub: webhook deliveries and the approval gates of drafted pull requests (PostgreSQL).
-- Times are milliseconds since the epoch; JSON is stored as text.

-- The durable queue behind POST /v1/webhooks/github: a delivery is stored before it
-- is answered and processed afterwards. Keyed by X-GitHub-Delivery, so a redelivery
-- stores nothing new. A processor claims a row until `claimed_until`; one that died
-- mid-way leaves it to be claimed again.
CREATE TABLE github_deliveries (
    delivery_id   TEXT PRIMARY KEY,
    event         TEXT NOT NULL,
    body          TEXT NOT NULL,
    received_at   BIGINT NOT NULL,
    claimed_until BIGINT,
    processed_at  BIGINT,
    outcome       TEXT
);
CREATE INDEX github_deliveries_unprocessed ON github_deliveries (received_at) WHERE processed_at IS NULL;

-- One gate per drafted pull request: the head commit an approval is bound to and where
-- the gate stands. Changed by compare-and-set on `version`.
CREATE TABLE pr_gates (
    id               TEXT PRIMARY KEY,
    investigation_id TEXT NOT NULL,
    repo             TEXT NOT NULL,
    number           BIGINT NOT NULL,
    head_sha         TEXT NOT NULL,
    requester_login  TEXT,
    state            TEXT NOT NULL,
    approval         TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    version          BIGINT NOT NULL,
    UNIQUE (repo, number)
);

-- Every change of a gate, appended in the same transaction as the change.
CREATE TABLE pr_gate_log (
    gate_id  TEXT NOT NULL REFERENCES pr_gates (id),
    version  BIGINT NOT NULL,
    at       BIGINT NOT NULL,
    state    TEXT NOT NULL,
    head_sha TEXT NOT NULL,
    why      TEXT NOT NULL,
    source   TEXT NOT NULL,
    PRIMARY KEY (gate_id, version)
);

-- A pull-request draft: what to propose (plan) and how far it got (progress), both
-- JSON. The progress is written after every step, by compare-and-set on `version`,
-- so a restarted drafter resumes at the step it had not finished.
CREATE TABLE pr_drafts (
    id               TEXT PRIMARY KEY,
    investigation_id TEXT NOT NULL,
    n                BIGINT NOT NULL,
    plan             TEXT NOT NULL,
    progress         TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    version          BIGINT NOT NULL,
    UNIQUE (investigation_id, n)
);
