-- Up Migration
-- Bans. A sign-in checks banned_until as it makes its session, under a share lock of the user row
-- (a ban racing a sign-in either waits for its session, and ends it, or makes it find the ban).
ALTER TABLE users ADD COLUMN banned_until timestamptz;
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
  -- When the row was ended (not the transaction's start, which a lock wait may put far earlier).
  ended_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX ended_sessions_ended_at_idx ON ended_sessions (ended_at);

CREATE FUNCTION note_ended_session() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO ended_sessions (session_id, user_id, reason)
  VALUES (OLD.id, OLD.user_id, CASE WHEN TG_OP = 'DELETE' THEN 'deleted' ELSE NEW.revoked_reason END)
  ON CONFLICT (session_id) DO NOTHING;
  PERFORM pg_notify('auth_session_ended', OLD.id::text);
  PERFORM queue_webhook('session.ended', jsonb_build_object('user_id', OLD.user_id, 'session_id', OLD.id,
    'reason', CASE WHEN TG_OP = 'DELETE' THEN 'deleted' ELSE NEW.revoked_reason END));
  IF TG_OP = 'UPDATE' AND NEW.revoked_reason = 'refresh-reuse' THEN
    PERFORM queue_webhook('refresh_token.reused', jsonb_build_object('user_id', OLD.user_id, 'session_id', OLD.id));
  END IF;
  RETURN NULL;
END
$$;

-- Rotation does not set revoked_at: these never fire on refresh. A session expired over a day ago
-- has no access token left (without rotation one may outlive its session by JWT_ACCESS_TTL):
-- ending it is noted nowhere, and pruning, which deletes only sessions a week past their end,
-- notes nothing.
CREATE TRIGGER sessions_revoked AFTER UPDATE OF revoked_at ON sessions FOR EACH ROW
  WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL AND OLD.expires_at > now() - interval '1 day')
  EXECUTE FUNCTION note_ended_session();
CREATE TRIGGER sessions_deleted AFTER DELETE ON sessions FOR EACH ROW
  WHEN (OLD.revoked_at IS NULL AND OLD.expires_at > now() - interval '1 day') EXECUTE FUNCTION note_ended_session();

-- Webhooks (WEBHOOK_URLS): the endpoints, as the replicas set them at start, and the events,
-- queued by triggers into the outbox in the transaction of the change they report (whatever made
-- it: the API, an operator, SQL by hand), one row per endpoint, each with its own webhook-id.
-- With no endpoint, the triggers queue nothing. An endpoint is named by its outbox kind,
-- 'webhook:' and the start of the SHA-256 of its URL: a URL may hold a secret, and stays in the
-- settings (src/webhooks.ts).
CREATE TABLE webhook_endpoints (kind text PRIMARY KEY);
-- A sender claims the due rows of its own kind: an endpoint's backlog is no scan for the others.
CREATE INDEX outbox_kind_next_attempt_at_idx ON outbox (kind, next_attempt_at);
DROP INDEX outbox_next_attempt_at_idx;

-- A real password change (by the user, a reset or an operator); a rehash at sign-in (new argon2
-- settings, the same password) leaves it alone.
ALTER TABLE users ADD COLUMN password_changed_at timestamptz;

CREATE FUNCTION queue_webhook(event_type text, data jsonb) RETURNS void LANGUAGE sql AS $$
  INSERT INTO outbox (kind, payload)
  SELECT kind, jsonb_build_object(
    'id', 'msg_' || replace(gen_random_uuid()::text, '-', ''),
    'type', event_type,
    'timestamp', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'data', data)
  FROM webhook_endpoints
$$;

CREATE FUNCTION user_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    PERFORM queue_webhook('user.created', jsonb_build_object('user_id', NEW.id));
  ELSIF TG_OP = 'DELETE' THEN
    PERFORM queue_webhook('user.deleted', jsonb_build_object('user_id', OLD.id));
  ELSE
    IF NEW.password_changed_at IS DISTINCT FROM OLD.password_changed_at THEN
      PERFORM queue_webhook('password.changed', jsonb_build_object('user_id', NEW.id));
    END IF;
    IF NEW.mfa_enabled IS DISTINCT FROM OLD.mfa_enabled THEN
      PERFORM queue_webhook(CASE WHEN NEW.mfa_enabled THEN 'mfa.enabled' ELSE 'mfa.disabled' END, jsonb_build_object('user_id', NEW.id));
    END IF;
    IF (NEW.name, NEW.email, NEW.email_verified_at, NEW.banned_until) IS DISTINCT FROM (OLD.name, OLD.email, OLD.email_verified_at, OLD.banned_until) THEN
      PERFORM queue_webhook('user.updated', jsonb_build_object('user_id', NEW.id));
    END IF;
  END IF;
  RETURN NULL;
END
$$;
-- Not on a rehash's password_hash.
CREATE TRIGGER users_webhook_insert AFTER INSERT OR DELETE ON users FOR EACH ROW EXECUTE FUNCTION user_webhook();
CREATE TRIGGER users_webhook_update AFTER UPDATE OF name, email, email_verified_at, banned_until, mfa_enabled, password_changed_at ON users
  FOR EACH ROW EXECUTE FUNCTION user_webhook();

CREATE FUNCTION session_created_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM queue_webhook('session.created', jsonb_build_object('user_id', NEW.user_id, 'session_id', NEW.id));
  RETURN NULL;
END
$$;
CREATE TRIGGER sessions_webhook_insert AFTER INSERT ON sessions FOR EACH ROW EXECUTE FUNCTION session_created_webhook();

-- Down Migration
DROP TRIGGER sessions_webhook_insert ON sessions;
DROP FUNCTION session_created_webhook();
DROP TRIGGER users_webhook_update ON users;
DROP TRIGGER users_webhook_insert ON users;
DROP FUNCTION user_webhook();
DROP TRIGGER sessions_deleted ON sessions;
DROP TRIGGER sessions_revoked ON sessions;
DROP FUNCTION note_ended_session();
DROP TABLE ended_sessions;
DROP FUNCTION queue_webhook(text, jsonb);
ALTER TABLE users DROP COLUMN password_changed_at;
CREATE INDEX outbox_next_attempt_at_idx ON outbox (next_attempt_at);
DROP INDEX outbox_kind_next_attempt_at_idx;
DROP TABLE webhook_endpoints;
DROP INDEX users_created_at_id_idx;
ALTER TABLE users DROP COLUMN banned_until;
