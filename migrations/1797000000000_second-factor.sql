-- Up Migration
-- A user's TOTP secret (RFC 6238). With DATA_ENCRYPTION_KEY: AES-256-GCM, stored as
-- iv || ciphertext || tag with the user id as associated data, under the key named by key_id;
-- without one, the secret as is (key_id null). Unconfirmed until the first code proves the
-- authenticator has it. last_step is the newest time step accepted: a code is accepted only for a
-- later step (compare-and-set), so a code is never accepted twice, on any replica.
CREATE TABLE totp_secrets (
  user_id uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
  secret bytea NOT NULL,
  key_id text,
  confirmed_at timestamptz,
  last_step bigint NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Recovery codes: only the SHA-256 of each (80 random bits); deleted when used.
CREATE TABLE recovery_codes (
  user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  code_hash bytea NOT NULL,
  PRIMARY KEY (user_id, code_hash)
);

-- The second step of a sign-in with TOTP on: the SHA-256 of the mfa_token, used once, dead after 5
-- wrong codes. Kept a day past expiry so that a late use is told TOKEN_EXPIRED, not TOKEN_INVALID.
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
