#!/usr/bin/env bash
# Validates the deployment files (Dockerfile, docker-compose.yml, deploy/nginx.conf, .env.example)
# with real tools, without a Docker engine. Run from the repo root: bash .ci/check-deploy.sh
# Installs missing tools from Debian (as root) and the npm registry; exits non-zero on any failure.
set -euo pipefail

cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
upstream_pid='' nginx_pid=''
cleanup () {
  if [ -n "$nginx_pid" ]; then kill "$nginx_pid" 2>/dev/null || true; fi
  if [ -n "$upstream_pid" ]; then kill "$upstream_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

failures=0
pass () { echo "  ok    $*"; }
fail () { echo "  FAIL  $*"; failures=$((failures + 1)); }
skip () { echo "  skip  $*"; }
indent () { sed 's/^/        /'; }

# Debian packages, installed only when a tool is missing; apt-get update once, first time only.
apt_updated=''
need_pkg () { # need_pkg COMMAND PACKAGE
  command -v "$1" >/dev/null && return 0
  if [ "$(id -u)" != 0 ]; then echo "  $1 is missing; install Debian package $2 (not root, so not installing)"; return 1; fi
  if [ -z "$apt_updated" ]; then apt-get update -qq || true; apt_updated=1; fi
  echo "  installing Debian package $2"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null 2>&1 ||
    { echo "  apt-get install $2 failed"; return 1; }
}

echo "== .env.example: every setting of src/config.ts is documented"
missing=''
for name in $(grep -oE '^  [A-Z][A-Z0-9_]*:' src/config.ts | tr -d ' :'); do
  grep -qE "^#? ?$name=" .env.example || missing="$missing $name"
done
if [ -z "$missing" ]; then pass "all settings listed"; else fail "not in .env.example:$missing"; fi

echo "== docker-compose.yml"
# Compose v2 (the docker CLI plugin) when present; otherwise Debian's docker-compose (v1 on bookworm).
# `config` only reads and validates the files, so no engine is needed.
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  need_pkg docker-compose docker-compose || true
  compose=(docker-compose)
fi
if ! command -v "${compose[0]}" >/dev/null || ! "${compose[@]}" version >/dev/null 2>&1; then
  fail "no Compose available"
else
  echo "  using: $("${compose[@]}" version 2>/dev/null | head -n1)"
  # A copy with a dummy .env, so a developer's own .env never changes the result.
  mkdir -p "$tmp/compose/deploy"
  cp docker-compose.yml Dockerfile "$tmp/compose/"
  cp deploy/nginx.conf "$tmp/compose/deploy/"
  secret=$(head -c 48 /dev/urandom | base64 | tr -d '\n')
  check_compose () { # check_compose LABEL [ENV=VALUE...] -- COMPOSE ARGS...
    local label=$1; shift
    local envs=()
    while [ "$1" != -- ]; do envs+=("$1"); shift; done; shift
    if out=$(cd "$tmp/compose" && env "${envs[@]}" "${compose[@]}" "$@" config -q 2>&1); then
      pass "$label"
    else
      fail "$label"; indent <<<"$out"
    fi
  }
  printf 'JWT_SECRET_KEY=%s\n' "$secret" > "$tmp/compose/.env"
  check_compose "config (default services)" --
  check_compose "config --profile proxy" APP_PORTS=127.0.0.1::5000 -- --profile proxy
  check_compose "config --profile redis" -- --profile redis
  check_compose "config --profile mail" -- --profile mail
  # The documented start: cp .env.example .env (plus a secret) must give a valid file too.
  { cat .env.example; printf 'JWT_SECRET_KEY=%s\n' "$secret"; } > "$tmp/compose/.env"
  check_compose "config with .env copied from .env.example" -- --profile proxy --profile redis --profile mail
  services=$(cd "$tmp/compose" && "${compose[@]}" --profile proxy --profile redis --profile mail config --services 2>/dev/null | sort | tr '\n' ' ')
  if [ "$services" = "app db mailpit nginx redis " ]; then pass "services: $services"; else fail "services: expected app db mailpit nginx redis, got: $services"; fi
fi

echo "== deploy/nginx.conf"
need_pkg nginx nginx || true
if ! command -v nginx >/dev/null; then
  fail "nginx not available"
else
  echo "  using: $(nginx -v 2>&1)"
  # The file is a server block for the official image's http context. Wrap it in a main config
  # whose pid, logs and temp paths live in $tmp, and point it at loopback ports: the upstream is a
  # variable resolved per request, so only the address changes, not the directives under test.
  chmod 755 "$tmp"
  lport=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
  uport=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
  sed -e "s/listen 80;/listen 127.0.0.1:$lport;/" \
      -e "s/app:5000;/127.0.0.1:$uport;/" \
      -e "s#/var/log/nginx/access.log#$tmp/access.log#" deploy/nginx.conf > "$tmp/server.conf"
  cat > "$tmp/nginx-main.conf" <<EOF
pid $tmp/nginx.pid;
error_log $tmp/error.log warn;
events { worker_connections 64; }
http {
  client_body_temp_path $tmp/body;
  proxy_temp_path $tmp/proxy;
  fastcgi_temp_path $tmp/fastcgi;
  uwsgi_temp_path $tmp/uwsgi;
  scgi_temp_path $tmp/scgi;
  include $tmp/server.conf;
}
EOF
  if out=$(nginx -t -q -c "$tmp/nginx-main.conf" 2>&1); then
    pass "nginx -t"
    nginx_ok=1
  else
    fail "nginx -t"; indent <<<"$out"
    nginx_ok=''
  fi
fi

if [ -n "${nginx_ok:-}" ]; then
  # Loopback run: a stub upstream echoes what it received, so the headers nginx sets are checked.
  node -e "
    require('http').createServer((req, res) => {
      let n = 0
      req.on('data', (c) => { n += c.length })
      req.on('end', () => { res.setHeader('content-type', 'application/json'); res.end(JSON.stringify({ headers: req.headers, bytes: n })) })
    }).listen($uport, '127.0.0.1')" &
  upstream_pid=$!
  nginx -c "$tmp/nginx-main.conf" -g 'daemon off;' 2>>"$tmp/error.log" &
  nginx_pid=$!
  for _ in $(seq 50); do
    node -e "fetch('http://127.0.0.1:$lport/health').then(r=>process.exit(r.status===200?0:1),()=>process.exit(1))" 2>/dev/null && break
    sleep 0.1
  done
  # Each check is one request through nginx; the script prints ok or what came back.
  if out=$(LPORT=$lport node --input-type=module 2>&1 <<'EOF'
const base = `http://127.0.0.1:${process.env.LPORT}`
const checks = []
const check = (name, ok, got) => { checks.push(ok); console.log(`${ok ? '  ok   ' : '  FAIL '} proxy: ${name}${ok ? '' : ` (got ${JSON.stringify(got)})`}`) }

let r = await fetch(`${base}/health`, { headers: { 'x-forwarded-for': '203.0.113.9', authorization: 'Bearer SECRET-TOKEN-MUST-NOT-BE-LOGGED' } })
const { headers: h } = await r.json()
check('reaches the upstream', r.status === 200, r.status)
check('Host is passed on ($host: the name, without the port)', h.host === '127.0.0.1', h.host)
check('X-Forwarded-For appends the peer to the client\'s list', h['x-forwarded-for'] === '203.0.113.9, 127.0.0.1', h['x-forwarded-for'])
check('X-Forwarded-Proto is set', h['x-forwarded-proto'] === 'http', h['x-forwarded-proto'])
check('X-Request-Id is a fresh id the service accepts', /^[0-9a-f]{32}$/.test(h['x-request-id'] ?? ''), h['x-request-id'])

r = await fetch(`${base}/auth/sign-in`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: 'x'.repeat(16 * 1024) })
check('a 16 KiB body passes', r.status === 200 && (await r.json()).bytes === 16 * 1024, r.status)
r = await fetch(`${base}/auth/sign-in`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: 'x'.repeat(16 * 1024 + 1) })
check('a larger body gets 413 from nginx', r.status === 413, r.status)
process.exit(checks.every(Boolean) ? 0 : 1)
EOF
  ); then echo "$out"; else echo "$out"; fail "proxy behaviour (above)"; fi
  kill "$nginx_pid" 2>/dev/null || true; wait "$nginx_pid" 2>/dev/null || true; nginx_pid=''
  if [ -s "$tmp/access.log" ] && ! grep -q 'SECRET-TOKEN' "$tmp/access.log"; then
    pass "access log has the request id and no Authorization header"
    grep -q 'rid=[0-9a-f]\{32\}' "$tmp/access.log" || fail "access log lines lack rid="
  else
    fail "access log missing or contains the Authorization header"; indent < "$tmp/access.log"
  fi
fi

echo "== Dockerfile"
# hadolint is the usual linter, but Debian does not package it and npm's `hadolint` package only
# downloads the binary from GitHub. Use it when it is already installed; otherwise lint with
# dockerfile-utils (the Dockerfile language server's validator, from the npm registry).
if command -v hadolint >/dev/null; then
  if out=$(hadolint Dockerfile 2>&1); then pass "hadolint"; else fail "hadolint"; indent <<<"$out"; fi
else
  skip "hadolint: not installed, and not available from Debian or the npm registry"
  lint=(npx --yes dockerfile-utils@0.16.3 lint)
  if out=$("${lint[@]}" --json Dockerfile 2>/dev/null) && [ "$out" = '[]' ]; then
    pass "dockerfile-utils lint: no errors or warnings"
  else
    fail "dockerfile-utils lint"; "${lint[@]}" Dockerfile 2>&1 | indent || true
  fi
fi
if docker buildx version >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  if out=$(docker buildx build --check . 2>&1); then pass "docker buildx build --check"; else fail "docker buildx build --check"; indent <<<"$out"; fi
else
  skip "docker buildx build --check: needs the buildx plugin and a Docker engine (not here)"
fi
# What the runtime stage relies on: the files it copies exist, and start is not run through npm.
for f in package.json package-lock.json tsconfig.json tsconfig.build.json src migrations; do
  [ -e "$f" ] || fail "Dockerfile copies $f, which does not exist"
done
# The same command as `npm start` (node flags included), run directly.
cmd=$(node -p 'JSON.stringify(require("./package.json").scripts.start.split(" "))' | sed 's/,/, /g')
if grep -qxF "CMD $cmd" Dockerfile; then pass "CMD $cmd, as npm start"; else fail "CMD is not $cmd (npm start)"; fi

echo
if [ "$failures" -eq 0 ]; then echo "check-deploy: all checks passed"; else echo "check-deploy: $failures check(s) failed"; exit 1; fi
