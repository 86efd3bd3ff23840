-- Up Migration
-- Per-account throttling, kept here so that every replica sees it.
-- Consecutive failed sign-ins for one email from one client IP; a success deletes the row.
CREATE TABLE sign_in_throttle (
  email text NOT NULL,
  ip text NOT NULL,
  failures integer NOT NULL,
  last_failure_at timestamptz NOT NULL,
  blocked_until timestamptz,
  PRIMARY KEY (email, ip)
);
CREATE INDEX sign_in_throttle_last_failure_at_idx ON sign_in_throttle (last_failure_at);

-- Failed sign-ins for one email from all IPs, in a one-hour window.
CREATE TABLE sign_in_email_failures (
  email text PRIMARY KEY,
  window_start timestamptz NOT NULL,
  failures integer NOT NULL
);
CREATE INDEX sign_in_email_failures_window_start_idx ON sign_in_email_failures (window_start);

-- Down Migration
DROP TABLE sign_in_email_failures;
DROP TABLE sign_in_throttle;
