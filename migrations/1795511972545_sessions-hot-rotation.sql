-- Up Migration
-- A rotation rewrites expires_at; with an index on it, PostgreSQL cannot update the row in place
-- (a HOT update) and inserts a new entry into every index of sessions on every refresh.
DROP INDEX sessions_expires_at_idx;
ALTER TABLE sessions SET (fillfactor = 90);

-- Down Migration
ALTER TABLE sessions RESET (fillfactor);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);
