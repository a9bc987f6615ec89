-- Approval requests and the hash-chained audit log (PostgreSQL).
-- Times are milliseconds since the epoch; JSON is stored as canonical text.

CREATE TABLE approval_requests (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    action       TEXT NOT NULL,
    digest       TEXT NOT NULL,
    requester_id TEXT NOT NULL,
    requester    TEXT NOT NULL,
    resource     TEXT NOT NULL,
    policy       TEXT NOT NULL,
    state        TEXT NOT NULL,
    approvals    TEXT NOT NULL,
    closed_by    TEXT,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    version      BIGINT NOT NULL
);
CREATE INDEX approval_requests_by_state ON approval_requests (state, created_at);
CREATE INDEX approval_requests_by_expiry ON approval_requests (expires_at) WHERE state IN ('pending', 'approved');
CREATE INDEX approval_requests_by_action ON approval_requests (requester_id, digest);

-- hash = sha256_hex(prev_hash || canonical JSON of {seq, at, actor, action, subject, data}).
-- seq is assigned by the appender under an advisory lock, not by a sequence, so that a
-- rolled-back append leaves no gap.
CREATE TABLE audit_log (
    seq       BIGINT PRIMARY KEY,
    at        BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    data      TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX audit_log_by_subject ON audit_log (subject, seq);

-- Append-only: changing the past takes disabling these first (and `inquest audit
-- verify` still finds it).
CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();
