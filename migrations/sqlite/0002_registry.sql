-- The registry: catalog, policy, health and tool snapshots, history, usage (SQLite).
-- Times are milliseconds since the epoch; JSON is stored as text; flags are 0 or 1.

-- One row per server (its name): governance, health, live tools, usage counters.
CREATE TABLE registry_servers (
    name              TEXT PRIMARY KEY,
    latest_version    TEXT,
    -- The latest version's status; `deleted` when every version is.
    status            TEXT NOT NULL,
    -- The admin's policy document (owner, service identity, access); NULL until written.
    policy            TEXT,
    owner_team        TEXT,
    service_identity  TEXT,
    security_review   TEXT NOT NULL,
    production        TEXT NOT NULL,
    -- The policy revision of the last write that changed a decision input.
    policy_rev        INTEGER NOT NULL,
    health_status     TEXT NOT NULL DEFAULT 'unknown',
    health_checked_at INTEGER,
    health_latency_ms INTEGER,
    health_error      TEXT,
    health_failures   INTEGER NOT NULL DEFAULT 0,
    health_since      INTEGER,
    tools             TEXT,
    tools_seen_at     INTEGER,
    tools_changed_at  INTEGER,
    usage_month       TEXT,
    usage_invocations INTEGER NOT NULL DEFAULT 0,
    usage_users       INTEGER NOT NULL DEFAULT 0,
    usage_total       INTEGER NOT NULL DEFAULT 0,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX registry_servers_by_rev ON registry_servers (policy_rev);
CREATE INDEX registry_servers_by_team ON registry_servers (owner_team);

-- Every published version, its server.json as published.
CREATE TABLE registry_server_versions (
    name         TEXT NOT NULL REFERENCES registry_servers (name),
    version      TEXT NOT NULL,
    server_json  TEXT NOT NULL,
    -- Name, title and description, lower-cased, for `search`.
    search_text  TEXT NOT NULL,
    status       TEXT NOT NULL,
    is_latest    INTEGER NOT NULL,
    published_at INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX registry_versions_latest ON registry_server_versions (is_latest, name, version);
CREATE INDEX registry_versions_by_updated ON registry_server_versions (updated_at);

-- The policy revision counter: one row.
CREATE TABLE registry_policy_rev (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    rev INTEGER NOT NULL
);
INSERT INTO registry_policy_rev (id, rev) VALUES (1, 0);

-- A server's history: publishes, status, policy and review changes, health and tool changes.
CREATE TABLE registry_events (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    server TEXT NOT NULL,
    kind   TEXT NOT NULL,
    actor  TEXT,
    data   TEXT NOT NULL,
    at     INTEGER NOT NULL
);
CREATE INDEX registry_events_by_server ON registry_events (server, id);

-- Every reported invocation, as reported ('' for no team).
CREATE TABLE registry_usage_events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    server        TEXT NOT NULL,
    tool          TEXT NOT NULL,
    principal     TEXT NOT NULL,
    team          TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    latency_ms    INTEGER NOT NULL,
    minutes_saved INTEGER NOT NULL,
    month         TEXT NOT NULL,
    at            INTEGER NOT NULL
);
CREATE INDEX registry_usage_events_by_at ON registry_usage_events (at);

-- Invocations folded by month (YYYY-MM), team, server and tool.
CREATE TABLE registry_usage_monthly (
    month          TEXT NOT NULL,
    team           TEXT NOT NULL,
    server         TEXT NOT NULL,
    tool           TEXT NOT NULL,
    invocations    INTEGER NOT NULL,
    succeeded      INTEGER NOT NULL,
    failed         INTEGER NOT NULL,
    denied         INTEGER NOT NULL,
    latency_ms_sum INTEGER NOT NULL,
    minutes_saved  INTEGER NOT NULL,
    PRIMARY KEY (month, team, server, tool)
);

-- Who used what in a month, for distinct-user counts.
CREATE TABLE registry_usage_principals (
    month     TEXT NOT NULL,
    server    TEXT NOT NULL,
    principal TEXT NOT NULL,
    team      TEXT NOT NULL,
    PRIMARY KEY (month, server, principal, team)
);
CREATE INDEX registry_usage_principals_by_team ON registry_usage_principals (month, team);
