-- Up Migration
-- Bans and the admin API's view of a user. A sign-in writes last_sign_in_at in the statement that
-- makes its session, which also checks banned_until under the row's lock (a ban racing a sign-in
-- either waits for its session, and ends it, or makes it find the ban).
ALTER TABLE users ADD COLUMN banned_until timestamptz, ADD COLUMN last_sign_in_at timestamptz;
-- The admin list: newest first, keyset on (created_at, id).
CREATE INDEX users_created_at_id_idx ON users (created_at, id);

-- Sessions that ended while their access tokens may still be alive: every replica keeps these ids
-- in memory and refuses those tokens. Written by the triggers below, whatever ends the session
-- (any statement, a cascade from a deleted user, SQL by hand), with a NOTIFY that reaches every
-- replica listening when the change commits; replicas read the table at start and after a
-- reconnect, as NOTIFY does not replay. Pruned once the access-token lifetime has passed.
CREATE TABLE ended_sessions (
  session_id uuid PRIMARY KEY,
  user_id uuid NOT NULL,
  reason text,
  ended_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ended_sessions_ended_at_idx ON ended_sessions (ended_at);

CREATE FUNCTION note_ended_session() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO ended_sessions (session_id, user_id, reason)
  VALUES (OLD.id, OLD.user_id, CASE WHEN TG_OP = 'DELETE' THEN 'deleted' ELSE NEW.revoked_reason END)
  ON CONFLICT (session_id) DO NOTHING;
  PERFORM pg_notify('auth_session_ended', OLD.id::text);
  RETURN NULL;
END
$$;

-- Rotation does not set revoked_at: these never fire on refresh. Pruning deletes only sessions
-- that ended or expired long ago: not live, so not noted.
CREATE TRIGGER sessions_revoked AFTER UPDATE OF revoked_at ON sessions FOR EACH ROW
  WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL) EXECUTE FUNCTION note_ended_session();
CREATE TRIGGER sessions_deleted AFTER DELETE ON sessions FOR EACH ROW
  WHEN (OLD.revoked_at IS NULL AND OLD.expires_at > now()) EXECUTE FUNCTION note_ended_session();

-- Down Migration
DROP TRIGGER sessions_deleted ON sessions;
DROP TRIGGER sessions_revoked ON sessions;
DROP FUNCTION note_ended_session();
DROP TABLE ended_sessions;
DROP INDEX users_created_at_id_idx;
ALTER TABLE users DROP COLUMN last_sign_in_at, DROP COLUMN banned_until;
