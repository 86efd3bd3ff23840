#!/usr/bin/env bash
# Builds the project's Docker image and proves it works: it starts as non-root, migrates a fresh
# database, answers the original service's calls, passes its own HEALTHCHECK and stops on SIGTERM.
# This machine has no Docker engine and cannot start containers (crun cannot set rlimits here), so:
# podman builds the image (chroot isolation) on a local stand-in for the Node base image, and the
# image's filesystem is exported and its CMD run in a chroot with the image's USER, WORKDIR and ENV.
# Run from anywhere as root: bash .ci/image.sh   (exits non-zero on any failure)
set -euo pipefail
cd "$(dirname "$0")/.."
start_time=$SECONDS

image=localhost/auth-service:ci
# Kept between runs (base image, layer cache); a fresh machine starts from nothing.
state=${IMAGE_CI_STATE:-/var/lib/auth-service-ci}
mkdir -p "$state"
# One run at a time: runs share the storage and the image tag.
exec 9>"$state/lock"
flock 9

tmp=$(mktemp -d)
server_pid='' cid='' db=''
cleanup() {
  local rc=$?
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  if [ -n "$db" ]; then psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; fi
  if [ -n "$cid" ]; then podman rm -f "$cid" >/dev/null 2>&1 || true; fi
  # podman's overlay driver leaves its layer directory bind-mounted; it is remounted when needed
  # (umount refuses while anything is mounted below it).
  umount "$state/storage-${IMAGE_CI_STORAGE_DRIVER:-overlay}/overlay" 2>/dev/null || true
  rm -rf "$tmp"
  if [ "$rc" != 0 ]; then echo "image: FAILED"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Any other failing command (set -e) says where it was.
trap 'echo "  FAIL  line $LINENO: $BASH_COMMAND"' ERR

ok() { echo "  ok    $*"; }
fail() { # fail MESSAGE [FILE to show]
  echo "  FAIL  $1"
  if [ -n "${2:-}" ] && [ -s "$2" ]; then tail -n 40 "$2" | sed 's/^/        /'; fi
  exit 1
}

echo "== tools"
# Debian packages, installed only when missing (apt-get update once, first time only).
missing=''
for pkg in podman buildah mmdebstrap; do command -v "$pkg" >/dev/null || missing="$missing $pkg"; done
if [ -n "$missing" ]; then
  t=$SECONDS
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing; } >"$tmp/apt.log" 2>&1 ||
    fail "apt-get install$missing" "$tmp/apt.log"
  ok "installed Debian packages$missing in $((SECONDS - t)) s"
fi
ok "$(podman --version), $(mmdebstrap --version)"

# podman's configuration, all in $state: the machine's own files are neither needed nor changed.
# overlay on the local ext4, cgroupfs and a file event log (no systemd), no registry lookups
# (every image here is local), and any image accepted (the base is an unsigned local import).
conf=$state/conf
mkdir -p "$conf"
cat >"$conf/storage.conf" <<EOF
[storage]
driver = "${IMAGE_CI_STORAGE_DRIVER:-overlay}"
graphroot = "$state/storage-${IMAGE_CI_STORAGE_DRIVER:-overlay}"
runroot = "$state/run"
EOF
cat >"$conf/containers.conf" <<EOF
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$state/events.log"
tmp_dir = "$state/run/libpod"
[network]
network_config_dir = "$state/networks"
EOF
cat >"$conf/registries.conf" <<EOF
unqualified-search-registries = []
short-name-mode = "disabled"
EOF
echo '{"default": [{"type": "insecureAcceptAnything"}]}' >"$conf/policy.json"
export CONTAINERS_STORAGE_CONF=$conf/storage.conf CONTAINERS_CONF=$conf/containers.conf CONTAINERS_REGISTRIES_CONF=$conf/registries.conf
policy=(--signature-policy "$conf/policy.json")
# Containers left by a run that was killed before its cleanup.
podman container prune -f >/dev/null

echo "== base image (stand-in for node:*-bookworm-slim)"
# Debian bookworm minbase from the machine's own mirror, plus the machine's node and npm, its CA
# bundle (the network here needs it, for npm ci during the build) and user node (uid 1000), as in
# the official images. Rebuilt only when node, npm, the CA bundle or this recipe changes.
node_bin=$(command -v node)
npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
ca_file=/etc/ssl/certs/ca-certificates.crt
sources=/etc/apt/sources.list.d/debian.sources
[ -f "$sources" ] || sources=/etc/apt/sources.list
node_version=$(node -p process.versions.node)
build_base() { # build_base TAG
  NODE_BIN=$node_bin NPM_DIR=$npm_dir CA_FILE=$ca_file mmdebstrap --quiet --mode=root --variant=minbase \
    --include=ca-certificates \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook='set -e; r=$1
      install -D -m 755 "$NODE_BIN" "$r/usr/local/bin/node"
      mkdir -p "$r/usr/local/lib/node_modules" "$r/usr/local/etc"
      cp -a "$NPM_DIR" "$r/usr/local/lib/node_modules/npm"
      ln -s ../lib/node_modules/npm/bin/npm-cli.js "$r/usr/local/bin/npm"
      ln -s ../lib/node_modules/npm/bin/npx-cli.js "$r/usr/local/bin/npx"
      cp "$CA_FILE" "$r/etc/ssl/certs/ca-certificates.crt"
      echo "cafile=/etc/ssl/certs/ca-certificates.crt" >"$r/usr/local/etc/npmrc"
      chroot "$r" groupadd --gid 1000 node
      chroot "$r" useradd --uid 1000 --gid node --shell /bin/bash --create-home node' \
    bookworm "$tmp/base.tar" "$sources"
  podman import -q "${policy[@]}" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV NODE_VERSION=$node_version" \
    --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["node"]' \
    "$tmp/base.tar" "$1"
  rm -f "$tmp/base.tar"
}
key=$({ echo "$node_version"; npm --version; sha256sum <"$ca_file"; declare -f build_base; } | sha256sum | cut -c1-12)
base=localhost/auth-ci-node:$node_version-$key
if podman image exists "$base"; then
  ok "$base (cached)"
else
  t=$SECONDS
  build_base "$base" >"$tmp/base.log" 2>&1 || fail "building the base image" "$tmp/base.log"
  ok "$base built in $((SECONDS - t)) s"
  # Stand-ins from an older node, npm, CA bundle or recipe.
  for old in $(podman images --format '{{.Repository}}:{{.Tag}}' localhost/auth-ci-node); do
    [ "$old" = "$base" ] || podman rmi "$old" >/dev/null 2>&1 || true
  done
fi

echo "== podman build"
# The repo itself is the context (.dockerignore applies); the docker format keeps HEALTHCHECK
# (OCI image configs have no such field). Unchanged steps come from the layer cache.
t=$SECONDS
podman build "${policy[@]}" --isolation=chroot --network host --pull=never --format docker \
  --build-arg NODE_IMAGE="$base" -t "$image" . >"$tmp/build.log" 2>&1 || fail "podman build" "$tmp/build.log"
build_seconds=$((SECONDS - t))
size=$(podman image inspect --format '{{.Size}}' "$image")
ok "$image built in $build_seconds s ($(grep -c -- '--> Using cache' "$tmp/build.log" || true) steps from cache), size $((size / 1000000)) MB"
# Untagged images (older builds) a week old; newer ones stay as layer cache.
podman image prune -f --filter until=168h >/dev/null

echo "== image filesystem and config"
cid=$(podman create -q --pull=never --no-healthcheck --network none --name "auth-image-ci-$$" "$image")
root=$tmp/rootfs
mkdir "$root"
podman export "$cid" | tar -x -C "$root"
podman rm -f "$cid" >/dev/null
cid=''
podman image inspect "$image" >"$tmp/image.json"
# jget FIELD: one field of the image's config; lists are printed NUL-separated.
jget() {
  node -e '
    const i = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))[0], c = i.Config ?? {}, f = process.argv[2]
    const v = f === "Cmd" ? [...(c.Entrypoint ?? []), ...(c.Cmd ?? [])]
      : f === "Health" ? i.Healthcheck?.Test ?? []
      : f === "HealthTimeout" ? String(Math.ceil((i.Healthcheck?.Timeout || 30e9) / 1e9))
      : c[f] ?? ""
    process.stdout.write(Array.isArray(v) ? v.map((x) => x + "\0").join("") : String(v))' "$tmp/image.json" "$1"
}
jlist() { jget "$2" >"$tmp/field"; mapfile -d '' "$1" <"$tmp/field"; }
user=$(jget User)
workdir=$(jget WorkingDir)
jlist image_env Env
jlist image_cmd Cmd
jlist health Health
health_timeout=$(jget HealthTimeout)
[ "${#image_cmd[@]}" -gt 0 ] || fail "the image has no CMD"
# USER as name, uid, name:group or uid:gid, resolved in the image's own /etc/passwd and /etc/group.
u=${user%%:*} g=''
[[ $user == *:* ]] && g=${user#*:}
if [ -z "$u" ]; then uid=0
elif [[ $u =~ ^[0-9]+$ ]]; then uid=$u
else uid=$(awk -F: -v n="$u" '$1 == n { print $3; exit }' "$root/etc/passwd"); fi
[ -n "$uid" ] || fail "USER $user is not in the image's /etc/passwd"
if [ -z "$g" ]; then gid=$(awk -F: -v n="$uid" '$3 == n { print $4; exit }' "$root/etc/passwd")
elif [[ $g =~ ^[0-9]+$ ]]; then gid=$g
else gid=$(awk -F: -v n="$g" '$1 == n { print $3; exit }' "$root/etc/group"); fi
gid=${gid:-0}
home=$(awk -F: -v n="$uid" '$3 == n { print $6; exit }' "$root/etc/passwd")
ok "USER ${user:-(none)} = uid $uid gid $gid, WORKDIR ${workdir:-/}, CMD ${image_cmd[*]}"
# Device nodes the runtime would provide (an exported image may have none).
mkdir -p "$root/dev"
for d in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
  IFS=: read -r n major minor <<<"$d"
  [ -e "$root/dev/$n" ] || mknod -m 666 "$root/dev/$n" c "$major" "$minor"
done

echo "== run the image's CMD (chroot, as the image's USER)"
pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
db=auth_image_$$
psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $db"
port=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
base_url=http://127.0.0.1:$port
run_env=("HOME=${home:-/}" "${image_env[@]}"
  "DATABASE_URL=postgres://postgres@127.0.0.1:5432/$db"
  "JWT_SECRET_KEY=$(head -c 48 /dev/urandom | base64 | tr -d '\n')"
  HOST=127.0.0.1 "PORT=$port")
# What `docker run` does, with host tools only: only the image's ENV, then chroot into the
# filesystem, cd WORKDIR, drop to USER's uid/gid (no supplementary groups) and exec the command
# (env and unshare exec in turn, so the PID is the command's). The private mount namespace holds
# /proc and goes away with the process, so nothing stays mounted. 9>&- keeps the lock's fd out.
in_image=(env -i "${run_env[@]}" unshare --mount --propagation private --mount-proc
  --root="$root" --wd="${workdir:-/}" --setgid="$gid" --setuid="$uid" --)
"${in_image[@]}" "${image_cmd[@]}" >"$tmp/server.log" 2>&1 </dev/null 9>&- &
server_pid=$!
up=''
for _ in $(seq 120); do
  kill -0 "$server_pid" 2>/dev/null || fail "the service exited at start" "$tmp/server.log"
  if [ "$(curl -s -o /dev/null -w '%{http_code}' "$base_url/health")" = 200 ]; then up=1; break; fi
  sleep 0.5
done
[ -n "$up" ] || fail "GET /health did not answer 200 within 60 s" "$tmp/server.log"
ok "GET /health 200"

status_uid=$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "/proc/$server_pid/status")
status_gid=$(awk '/^Gid:/ { print $2, $3, $4, $5 }' "/proc/$server_pid/status")
[ "$status_uid" = "$uid $uid $uid $uid" ] && [ "$uid" != 0 ] ||
  fail "process $server_pid runs as Uid $status_uid, expected the image's non-root USER"
[ "$status_gid" = "$gid $gid $gid $gid" ] || fail "process $server_pid runs as Gid $status_gid, expected $gid"
ok "runs as non-root: pid $server_pid ($(cat "/proc/$server_pid/comm")), Uid $status_uid, Gid $status_gid"

applied=$(psql -h 127.0.0.1 -U postgres -d "$db" -tAc "SELECT count(*) FROM pgmigrations")
expected=$(ls migrations/*.sql | wc -l)
[ "$applied" = "$expected" ] || fail "pgmigrations has $applied rows, migrations/ has $expected files" "$tmp/server.log"
ok "migrations applied: $applied of $expected"

# call METHOD PATH STATUS [curl args...]: the response body is left in $tmp/body.
call() {
  local method=$1 path=$2 want=$3 got
  shift 3
  got=$(curl -sS -o "$tmp/body" -w '%{http_code}' -X "$method" "$base_url$path" "$@") || got=000
  [ "$got" = "$want" ] || { echo "        response: $(head -c 500 "$tmp/body")"; fail "$method $path: $got, expected $want" "$tmp/server.log"; }
  ok "$method $path $got"
}
json() { node -e "const v=JSON.parse(require('fs').readFileSync(process.argv[1],'utf8'))$1;if(typeof v!=='string'||!v)process.exit(1);console.log(v)" "$tmp/body"; }
call GET /health/ready 200
# The original service's three curl calls.
call POST /auth/sign-up 201 -H 'Content-Type: application/json' \
  -d '{"name": "usuario_test", "email": "test@example.com", "password": "correct horse battery"}'
call POST /auth/sign-in 200 -H 'Content-Type: application/json' \
  -d '{"email": "test@example.com", "password": "correct horse battery"}'
json .access_token >/dev/null || fail "sign-in: no access_token"
refresh=$(json .refresh_token) || fail "sign-in: no refresh_token"
call POST /auth/refresh 200 -H 'Content-Type: application/json' -H "Authorization: Bearer $refresh"
json .access_token >/dev/null || fail "refresh: no access_token"

# The image's own HEALTHCHECK, run the same way (same USER, WORKDIR and ENV), within its timeout.
case "${health[0]:-}" in
  CMD) hc=("${health[@]:1}") ;;
  CMD-SHELL) hc=(/bin/sh -c "${health[1]}") ;;
  *) fail "the image has no HEALTHCHECK (${health[*]:-none})" ;;
esac
if timeout "$health_timeout" "${in_image[@]}" "${hc[@]}" >"$tmp/health.log" 2>&1 </dev/null 9>&-; then
  ok "HEALTHCHECK exits 0"
else
  fail "HEALTHCHECK exited $?" "$tmp/health.log"
fi

# Graceful stop: SIGTERM, exit status 0 within 10 s.
t=$(date +%s%N)
kill -TERM "$server_pid"
for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$server_pid" 2>/dev/null && fail "still running 10 s after SIGTERM" "$tmp/server.log"
code=0
wait "$server_pid" || code=$?
server_pid=''
[ "$code" = 0 ] || fail "exit status $code after SIGTERM" "$tmp/server.log"
ok "SIGTERM: exit 0 in $(( ($(date +%s%N) - t) / 1000000 )) ms"

echo
echo "build: base image $base, project image built in $build_seconds s, size $((size / 1000000)) MB; whole script $((SECONDS - start_time)) s"
echo "(see it with: CONTAINERS_STORAGE_CONF=$conf/storage.conf CONTAINERS_CONF=$conf/containers.conf podman images)"
echo "image: ok"
