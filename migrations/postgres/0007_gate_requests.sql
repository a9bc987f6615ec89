-- Gates and the registry's approval service (PostgreSQL).
-- `diff_digest`: the digest of the drafted change, bound into the approval request
-- beside the head. `approval_request`: the registry's request for the current head,
-- once asked; NULL until then, and again whenever the head changes.
-- `settled_version`: the last version GitHub was made to show (ready, or closed); a
-- decided gate above it is settled again, so a failed settle is not left for later events.
-- `code_owners`: the changed files' CODEOWNERS owners (JSON list), asked to review.
ALTER TABLE pr_gates ADD COLUMN diff_digest TEXT NOT NULL DEFAULT '';
ALTER TABLE pr_gates ADD COLUMN approval_request TEXT;
ALTER TABLE pr_gates ADD COLUMN settled_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE pr_gates ADD COLUMN code_owners TEXT NOT NULL DEFAULT '[]';
CREATE INDEX pr_gates_pending ON pr_gates (updated_at) WHERE state = 'pending';
