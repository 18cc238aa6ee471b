#!/usr/bin/env bash
# Starts (or stops) the servers Prism's tests need, on 127.0.0.1 with free ports:
#   - PostgreSQL 15: initdb into a temp dir, wal_level=logical (for CDC), trust auth, db "prism";
#   - a Kafka-protocol broker: Tansu 0.6.0 (Apache-2.0, Rust), SQLite storage in a fresh state dir;
#   - an S3-compatible object store: moto's server (Apache-2.0, Python), bucket "prism-test",
#     for the master dataset on object storage.
# Installs what is missing (Debian's postgresql-15; Tansu with cargo install, 8-13 min on 2 cores,
# reused when already installed; moto[server] with pip; logstalgia's example access log with
# apt-get download; for the lab course: a venv with docs/lab/requirements.txt).
#
#   eval "$(infra/test-env.sh start)"   # exports PRISM_DATABASE_URL, PRISM_KAFKA_BROKERS,
#                                       # PRISM_TEST_S3_ENDPOINT, PRISM_TEST_ENV_DIR
#   infra/test-env.sh start OWNER_PID    # also stops the servers once process OWNER_PID is gone
#                                       # (tests that start private servers pass their own PID)
#   infra/test-env.sh stop "$PRISM_TEST_ENV_DIR"
#   infra/test-env.sh restart-broker "$PRISM_TEST_ENV_DIR" [down-seconds]   # fault tests
#   infra/test-env.sh restart-postgres "$PRISM_TEST_ENV_DIR"                # fault tests
#   PRISM_TEST_TANSU_MAINTENANCE=1s infra/test-env.sh start OWNER_PID
#       # Tansu applies topics' retention (cleanup.policy=delete, retention.ms) every second
#       # instead of every 10 minutes (tests of a log whose first offsets are gone)
#
# Progress goes to stderr; stdout carries only the export lines.
set -euo pipefail

log() { echo "test-env: $*" >&2; }

# A free port below the kernel's ephemeral range, which outgoing connections take local ports
# from: a port chosen there can be taken by one before the server binds it.
free_port() {
  python3 - <<'PY'
import random, socket
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    low = 32768
for port in random.sample(range(10000, max(low, 10001)), k=min(2000, max(low, 10001) - 10000)):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
else:
    raise SystemExit("no free port below the ephemeral range")
PY
}

pg_bindir() {
  for d in /usr/lib/postgresql/15/bin "$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)")"; do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
  done
  return 1
}

ensure_postgres() {
  if ! pg_bindir >/dev/null; then
    log "installing postgresql-15"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15) >&2
  fi
  pg_bindir
}

ensure_tansu() {
  if command -v tansu >/dev/null 2>&1; then command -v tansu; return 0; fi
  if [ -x "$HOME/.cargo/bin/tansu" ]; then echo "$HOME/.cargo/bin/tansu"; return 0; fi
  log "installing tansu 0.6.0 with cargo install (a test broker: built at opt-level 1, no LTO, parallel codegen)"
  local build; build=$(mktemp -d)
  # A fast build profile: the broker only serves tests, so compile time matters more than speed.
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_INCREMENTAL=false CARGO_TARGET_DIR="$build" \
    cargo install tansu --version 0.6.0 --locked --no-default-features --features libsql,dynostore >&2
  rm -rf "$build"
  echo "$HOME/.cargo/bin/tansu"
}

ensure_moto() {
  # Run as a module (not the moto_server script), so no PATH or pyenv-shim lookup is needed.
  if ! python3 -c 'import moto.server, flask' 2>/dev/null; then
    log "installing moto[server] 5.2.5 with pip"
    python3 -m pip install --quiet --disable-pip-version-check 'moto[server]==5.2.5' >&2
  fi
}

ensure_browser() { # Debian's chromium and playwright-core (npm), for the dashboard test; prints the package dir
  if [ ! -x /usr/bin/chromium ]; then
    log "installing Debian's chromium"
    (apt-get install -y -qq chromium >&2 || (apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2))
  fi
  local cache="${XDG_CACHE_HOME:-$HOME/.cache}/prism-test-data/node"
  if [ ! -f "$cache/node_modules/playwright-core/package.json" ]; then
    log "installing playwright-core 1.65.2 with npm"
    mkdir -p "$cache"
    (cd "$cache" && npm install --silent --no-audit --no-fund --no-save playwright-core@1.65.2 >&2)
  fi
  echo "$cache/node_modules/playwright-core"
}

ensure_access_log() { # the real access log of Debian's logstalgia (GPL: fetched, never committed)
  local cache="${XDG_CACHE_HOME:-$HOME/.cache}/prism-test-data/logstalgia"
  local file="$cache/usr/share/logstalgia/example.log"
  if [ ! -s "$file" ]; then
    log "fetching logstalgia's example access log (apt-get download logstalgia)"
    mkdir -p "$cache"
    local deb
    deb=$(cd "$cache" && (apt-get download logstalgia >&2 || (apt-get update -qq >&2 && apt-get download logstalgia >&2)) && ls -t logstalgia_*.deb | head -1)
    dpkg-deb -x "$cache/$deb" "$cache"
  fi
  echo "$file"
}

ensure_lab_tools() { # a venv with docs/lab/requirements.txt, for the lab course; prints the venv dir
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/prism-test-data/labvenv" req
  req="$(cd "$(dirname "$0")/.." && pwd)/docs/lab/requirements.txt"
  if ! cmp -s "$req" "$venv/requirements.txt"; then
    log "installing the lab's Python packages (docs/lab/requirements.txt) into a venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
    cp "$req" "$venv/requirements.txt"
  fi
  echo "$venv"
}

start_s3() { # dir: starts moto's S3 server and creates the test bucket
  local dir=$1 port
  ensure_moto; port=$(free_port)
  log "starting moto S3 on 127.0.0.1:$port"
  mkdir -p "$dir/s3"
  (exec python3 -m moto.server -H 127.0.0.1 -p "$port" >>"$dir/s3/server.log" 2>&1) &
  echo $! > "$dir/s3.pid"
  wait_port 127.0.0.1 "$port" 60 || { log "moto did not listen; see $dir/s3/server.log"; tail -20 "$dir/s3/server.log" >&2; exit 1; }
  python3 -c "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:$port/prism-test', method='PUT'))"
  echo "$port" > "$dir/s3_port"
}

wait_port() { # host port seconds
  local deadline=$((SECONDS + $3))
  until python3 -c "import socket,sys; socket.create_connection(('$1',$2),1)" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

start_broker() { # dir: (re)starts Tansu on its port with its state
  local dir=$1 tansu kafka_port
  tansu=$(cat "$dir/tansu_bin"); kafka_port=$(cat "$dir/kafka_port")
  log "starting Tansu on 127.0.0.1:$kafka_port"
  (cd "$dir/tansu" && exec "$tansu" broker \
      --listener-url "tcp://127.0.0.1:$kafka_port" \
      --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
      --storage-engine "sqlite://tansu.db?maintenance_interval=$(cat "$dir/tansu_maintenance")" >>"$dir/tansu/broker.log" 2>&1) &
  echo $! > "$dir/tansu.pid"
  wait_port 127.0.0.1 "$kafka_port" 60 || { log "Tansu did not listen; see $dir/tansu/broker.log"; tail -20 "$dir/tansu/broker.log" >&2; exit 1; }
}

# Fault injection for tests: stop a server hard and start it again on the same port and data.
restart_broker() {
  local dir=$1
  kill -9 "$(cat "$dir/tansu.pid")" 2>/dev/null || true
  sleep "${2:-1}"
  start_broker "$dir" >/dev/null
}

restart_postgres() {
  local dir=$1 bindir pg_user
  bindir=$(cat "$dir/pg_bindir"); pg_user=$(cat "$dir/pg_user")
  if [ "$(id -u)" = 0 ]; then runuser -u "$pg_user" -- "$bindir/pg_ctl" -D "$dir/pg/data" -m immediate -w -t 60 restart >/dev/null
  else "$bindir/pg_ctl" -D "$dir/pg/data" -m immediate -w -t 60 restart >/dev/null; fi
}

start() {
  local dir; dir=$(mktemp -d /tmp/prism-test-env.XXXXXX)
  chmod 755 "$dir"
  local bindir; bindir=$(ensure_postgres)
  local tansu; tansu=$(ensure_tansu)

  # PostgreSQL refuses to run as root: run it as an unprivileged user.
  local pg_user=postgres
  id "$pg_user" >/dev/null 2>&1 || { pg_user=prismtest; id "$pg_user" >/dev/null 2>&1 || useradd --system --no-create-home "$pg_user"; }
  local pg_port; pg_port=$(free_port)
  mkdir -p "$dir/pg"
  chown "$pg_user" "$dir/pg"
  as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u "$pg_user" -- "$@"; else "$@"; fi; }
  log "starting PostgreSQL on 127.0.0.1:$pg_port"
  as_pg "$bindir/initdb" -D "$dir/pg/data" -U prism --auth=trust -E UTF8 >/dev/null
  as_pg "$bindir/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w -t 60 \
    -o "-p $pg_port -k $dir/pg -c listen_addresses=127.0.0.1 -c wal_level=logical -c max_wal_senders=10 -c max_replication_slots=10 -c fsync=off" start >/dev/null
  as_pg "$bindir/createdb" -h 127.0.0.1 -p "$pg_port" -U prism prism
  head -1 "$dir/pg/data/postmaster.pid" > "$dir/postgres.pid"
  echo "$bindir" > "$dir/pg_bindir"
  echo "$pg_user" > "$dir/pg_user"

  local kafka_port; kafka_port=$(free_port)
  mkdir -p "$dir/tansu"
  echo "$tansu" > "$dir/tansu_bin"
  echo "$kafka_port" > "$dir/kafka_port"
  echo "${PRISM_TEST_TANSU_MAINTENANCE:-10m}" > "$dir/tansu_maintenance"
  start_broker "$dir"
  start_s3 "$dir"
  local access_log; access_log=$(ensure_access_log)
  local playwright; playwright=$(ensure_browser)
  local lab_venv; lab_venv=$(ensure_lab_tools)
  # The lab course's step scripts call curl.
  command -v curl >/dev/null || (apt-get install -y -qq curl >&2 || (apt-get update -qq >&2 && apt-get install -y -qq curl >&2))

  if [ -n "${1:-}" ]; then
    # A watchdog: if the owner dies without stopping us (killed by a signal), stop the servers.
    setsid bash "$0" watch "$1" "$dir" </dev/null >/dev/null 2>&1 &
  fi

  echo "export PRISM_TEST_ENV_DIR=$dir"
  echo "export PRISM_DATABASE_URL=postgres://prism@127.0.0.1:$pg_port/prism"
  echo "export PRISM_KAFKA_BROKERS=127.0.0.1:$kafka_port"
  echo "export PRISM_TEST_S3_ENDPOINT=http://127.0.0.1:$(cat "$dir/s3_port")"
  echo "export PRISM_TEST_ACCESS_LOG=$access_log"
  echo "export PRISM_TEST_PLAYWRIGHT=$playwright"
  echo "export PRISM_TEST_CHROMIUM=/usr/bin/chromium"
  echo "export PRISM_TEST_LAB_VENV=$lab_venv"
}

stop() {
  local dir=${1:-${PRISM_TEST_ENV_DIR:-}}
  [ -n "$dir" ] && [ -d "$dir" ] || { log "nothing to stop"; return 0; }
  if [ -f "$dir/tansu.pid" ]; then kill "$(cat "$dir/tansu.pid")" 2>/dev/null || true; fi
  if [ -f "$dir/s3.pid" ]; then kill "$(cat "$dir/s3.pid")" 2>/dev/null || true; fi
  if [ -f "$dir/pg_bindir" ]; then
    local bindir pg_user; bindir=$(cat "$dir/pg_bindir"); pg_user=$(cat "$dir/pg_user")
    if [ "$(id -u)" = 0 ]; then runuser -u "$pg_user" -- "$bindir/pg_ctl" -D "$dir/pg/data" -m fast stop >/dev/null 2>&1 || true
    else "$bindir/pg_ctl" -D "$dir/pg/data" -m fast stop >/dev/null 2>&1 || true; fi
  fi
  rm -rf "$dir"
  log "stopped"
}

watch() { # owner-pid dir
  while kill -0 "$1" 2>/dev/null && [ -d "$2" ]; do sleep 2; done
  [ -d "$2" ] && stop "$2"
}

case "${1:-}" in
  start) start "${2:-}" ;;
  watch) watch "$2" "$3" ;;
  stop) stop "${2:-}" ;;
  restart-broker) restart_broker "$2" "${3:-1}" ;;
  restart-postgres) restart_postgres "$2" ;;
  *) echo "usage: $0 start [owner-pid] | stop [dir] | restart-broker dir [down-seconds] | restart-postgres dir" >&2; exit 2 ;;
esac
