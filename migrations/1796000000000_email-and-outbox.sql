-- Up Migration
-- When the address was last proven to belong to its user (a verify link, a reset link, an email
-- change); null: never.
ALTER TABLE users ADD COLUMN email_verified_at timestamptz;

-- Tokens sent by mail (verify-email, reset-password, change-email): only the SHA-256 of each is
-- kept, bound to one user, one purpose and the address it was mailed to (for change-email, the
-- new one), and deleted when used. `stamp` is the SHA-256 of the user's password hash and email
-- when it was minted: a token is void once either has changed (a reset link mailed to an address
-- the account has since left, a pending email change after a password reset).
CREATE TABLE email_tokens (
  token_hash bytea PRIMARY KEY,
  user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  purpose text NOT NULL CHECK (purpose IN ('verify-email', 'reset-password', 'change-email')),
  email text NOT NULL,
  stamp bytea NOT NULL,
  expires_at timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX email_tokens_user_id_idx ON email_tokens (user_id, purpose);
CREATE INDEX email_tokens_expires_at_idx ON email_tokens (expires_at);

-- At most one mail of a kind per address per EMAIL_COOLDOWN, known addresses or not.
CREATE TABLE email_cooldowns (
  email text NOT NULL,
  purpose text NOT NULL,
  until timestamptz NOT NULL,
  PRIMARY KEY (email, purpose)
);
CREATE INDEX email_cooldowns_until_idx ON email_cooldowns (until);

-- What the service must deliver after a commit (mail now, webhooks later): written in the
-- transaction of the change it reports, and deleted once delivered. A sender claims due rows for
-- a while (locked_until) with FOR UPDATE SKIP LOCKED, so replicas never take the same row and a
-- row whose sender died comes back when its claim runs out.
CREATE TABLE outbox (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  kind text NOT NULL,
  -- The user the row is about, if any: what a password change or deletion looks rows up by.
  user_id uuid,
  payload jsonb NOT NULL,
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  locked_until timestamptz,
  last_error text,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_next_attempt_at_idx ON outbox (next_attempt_at);
CREATE INDEX outbox_user_id_idx ON outbox (user_id) WHERE user_id IS NOT NULL;

-- Down Migration
DROP TABLE outbox;
DROP TABLE email_cooldowns;
DROP TABLE email_tokens;
ALTER TABLE users DROP COLUMN email_verified_at;
