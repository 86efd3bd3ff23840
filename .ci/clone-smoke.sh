#!/usr/bin/env bash
# From a clean clone, on the embedded database: the README's two commands (npm ci, npm start),
# the original service's three curl calls, then me and sign-out; then a restart, showing that
# the user and the refresh token survived. Loopback only; everything started is stopped by PID.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
pgid=''
stop() {
  if [ -n "$pgid" ]; then
    kill -TERM -- "-$pgid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 -- "-$pgid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pgid" 2>/dev/null || true
    pgid=''
  fi
}
trap 'stop; rm -rf "$work"' EXIT

git clone -q "$repo" "$work/app"
cd "$work/app"
export HOST=127.0.0.1
PORT=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
export PORT
base="http://127.0.0.1:$PORT"
json() { node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{const v=JSON.parse(s)$1;if(v===undefined)process.exit(1);console.log(v)})"; }

start() {
  setsid npm start >>"$work/server.log" 2>&1 &
  pgid=$!
  for _ in $(seq 120); do curl -fs "$base/health" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "the service did not start:"; cat "$work/server.log"; return 1
}

echo "== npm ci"
npm ci --no-audit --no-fund >/dev/null
echo "== npm start (no DATABASE_URL: embedded database under ./data)"
start
grep -q 'embedded PostgreSQL (PGlite)' "$work/server.log"

echo "== the original three calls"
curl -fsS -X POST "$base/auth/sign-up" \
  -H "Content-Type: application/json" \
  -d '{"name": "usuario_test", "email": "test@example.com", "password": "correct horse battery"}' | json '.user.username' | grep -qx usuario_test
signin=$(curl -fsS -X POST "$base/auth/sign-in" \
  -H "Content-Type: application/json" \
  -d '{"email": "test@example.com", "password": "correct horse battery"}')
access=$(json '.access_token' <<<"$signin")
refresh=$(json '.refresh_token' <<<"$signin")
refreshed=$(curl -fsS -X POST "$base/auth/refresh" \
  -H "Content-Type: application/json" \
  -H "Authorization: Bearer $refresh")
json '.access_token' <<<"$refreshed" >/dev/null
refresh=$(json '.refresh_token' <<<"$refreshed")

echo "== me and sign-out"
curl -fsS "$base/auth/me" -H "Authorization: Bearer $access" | json '.email' | grep -qx test@example.com
other=$(curl -fsS -X POST "$base/auth/sign-in" -H "Content-Type: application/json" \
  -d '{"email": "test@example.com", "password": "correct horse battery"}' | json '.refresh_token')
test "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$base/auth/sign-out" -H "Authorization: Bearer $other")" = 204
test "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$base/auth/refresh" -H "Authorization: Bearer $other")" = 401

echo "== restart: the user and the refresh token survived"
stop
start
curl -fsS -X POST "$base/auth/refresh" -H "Authorization: Bearer $refresh" | json '.access_token' >/dev/null
curl -fsS -X POST "$base/auth/sign-in" -H "Content-Type: application/json" \
  -d '{"email": "test@example.com", "password": "correct horse battery"}' | json '.user.username' | grep -qx usuario_test
test "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$base/auth/refresh" -H "Authorization: Bearer $other")" = 401
stop
echo "clone-smoke: ok"
