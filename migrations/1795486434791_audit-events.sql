-- Up Migration
-- Security events (sign-up, sign-in success and failure, throttling, refresh reuse, sign-out,
-- password change), pruned after AUDIT_RETENTION_DAYS.
CREATE TABLE audit_events (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  event text NOT NULL,
  user_id uuid,
  session_id uuid,
  ip text,
  user_agent text,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_created_at_idx ON audit_events (created_at);
CREATE INDEX audit_events_user_id_idx ON audit_events (user_id);
-- Pruning finds ended sessions by these.
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);
CREATE INDEX sessions_revoked_at_idx ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

-- Down Migration
DROP INDEX sessions_revoked_at_idx;
DROP INDEX sessions_expires_at_idx;
DROP TABLE audit_events;
