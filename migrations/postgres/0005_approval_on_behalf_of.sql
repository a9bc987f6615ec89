-- Approval requests: on whose behalf (PostgreSQL).
-- The principal an approval request's action is done for (the MCP tool's caller), beside
-- the service that asked: neither may approve it. `on_behalf_of` is the principal as JSON
-- (NULL when the service acts for nobody else); `on_behalf_of_id` its stable id, or ''
-- then, so that "the same open request" can compare it without NULL semantics.
ALTER TABLE approval_requests ADD COLUMN on_behalf_of TEXT;
ALTER TABLE approval_requests ADD COLUMN on_behalf_of_id TEXT NOT NULL DEFAULT '';
