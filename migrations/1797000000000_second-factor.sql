-- Up Migration
-- TOTP is on for the user. Kept on the user row (besides totp_secrets.confirmed_at) because a
-- password-only sign-in inserts its session under a share lock of this row, checking it: a
-- confirmation, which updates the row and then ends the other sessions, either waits for that
-- sign-in's session (and ends it) or makes it find TOTP on.
ALTER TABLE users ADD COLUMN mfa_enabled boolean NOT NULL DEFAULT false;

-- A user's TOTP secret (RFC 6238). With DATA_ENCRYPTION_KEY: AES-256-GCM, stored as
-- iv || ciphertext || tag with the user id as associated data, under the key named by key_id;
-- without one, the secret as is (key_id null). Unconfirmed until the first code proves the
-- authenticator has it. last_step is the newest time step accepted: a code is accepted only for a
-- later step (compare-and-set), so a code is never accepted twice, on any replica. codes_id names
-- the current set of recovery codes: a new set replaces it in one row update.
CREATE TABLE totp_secrets (
  user_id uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
  secret bytea NOT NULL,
  key_id text,
  confirmed_at timestamptz,
  last_step bigint NOT NULL DEFAULT 0,
  codes_id uuid,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Recovery codes: only the SHA-256 of each (84 random bits); deleted when used. Only the codes of
-- the secret's current set (codes_id) count; they go with the secret.
CREATE TABLE recovery_codes (
  user_id uuid NOT NULL REFERENCES totp_secrets (user_id) ON DELETE CASCADE,
  set_id uuid NOT NULL,
  code_hash bytea NOT NULL,
  PRIMARY KEY (user_id, code_hash)
);

-- The second step of a sign-in with TOTP on: the SHA-256 of the mfa_token, used once, dead after 5
-- codes tried and refused (each try is counted before its code is checked). Kept a day past
-- expiry so that a late use is told TOKEN_EXPIRED, not TOKEN_INVALID.
CREATE TABLE mfa_challenges (
  token_hash bytea PRIMARY KEY,
  user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  failures integer NOT NULL DEFAULT 0,
  used_at timestamptz,
  expires_at timestamptz NOT NULL
);
CREATE INDEX mfa_challenges_user_id_idx ON mfa_challenges (user_id);
CREATE INDEX mfa_challenges_expires_at_idx ON mfa_challenges (expires_at);

-- Down Migration
DROP TABLE mfa_challenges;
DROP TABLE recovery_codes;
DROP TABLE totp_secrets;
ALTER TABLE users DROP COLUMN mfa_enabled;
