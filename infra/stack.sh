#!/usr/bin/env bash
# The compose stack's topology as host processes, from the same .env (no Docker engine runs on
# the machines Prism is developed and tested on):
#
#   ./infra/stack.sh up     start the servers (unless given) and every Prism service of the
#                           architecture in .env; prints where they listen
#   ./infra/stack.sh down   stop them (by PID, SIGTERM then SIGKILL after 15 s)
#
# Same services, flags and ports as docker-compose.yml (serving on PRISM_STACK_PORT, default
# 8080, the others on the ports after it). Variables already set in the environment win over
# .env, as with docker compose. The servers: PRISM_KAFKA_BROKERS, PRISM_DATABASE_URL (an admin
# URL; the stack uses its databases `prism_stack` and `flights`) and PRISM_TEST_S3_ENDPOINT when
# set, else the private ones ./infra/test-env.sh starts (Tansu, PostgreSQL, moto's S3 server
# instead of the compose images). State, logs and PIDs live in PRISM_STACK_DIR (./prism-stack).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cmd="${1:-}"
env_file="${PRISM_STACK_ENV:-$root/.env}"
state="${PRISM_STACK_DIR:-$root/prism-stack}"
log() { echo "stack: $*" >&2; }

load_env() { # KEY=VALUE lines of the env file, ${VAR} expanded, unless already set
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in ''|'#'*) continue ;; esac
    local key="${line%%=*}" value="${line#*=}"
    if [ -z "${!key+x}" ]; then
      value="$(eval "printf '%s' \"$value\"")"
      export "$key=$value"
    fi
  done < "$env_file"
}

prism_bin() {
  if [ -n "${PRISM_BIN:-}" ]; then echo "$PRISM_BIN"; return; fi
  for b in "$root/target/release/prism" "$root/target/debug/prism"; do
    if [ -x "$b" ]; then echo "$b"; return; fi
  done
  log "no prism binary: cargo build --release -p prism (or set PRISM_BIN)"; exit 1
}

start_service() { # name port subcommand [VAR=value …]: starts one service, records its PID
  local name="$1" port="$2" sub="$3"; shift 3
  env "$@" PRISM_HTTP_ADDR="127.0.0.1:$port" "$bin" "$sub" >"$state/logs/$name.log" 2>&1 &
  echo "$!" > "$state/pids/$name"
  log "$name (pid $!) on 127.0.0.1:$port"
}

wait_ready() { # name url: up to 60 s; on failure prints the last answer and the service's log
  local why=""
  for _ in $(seq 1 600); do
    if why="$("$bin" healthcheck "$2" --timeout 2s 2>&1)"; then return 0; fi
    if ! kill -0 "$(cat "$state/pids/$1")" 2>/dev/null; then
      log "$1 exited; its log:"; tail -20 "$state/logs/$1.log" >&2; return 1
    fi
    sleep 0.1
  done
  log "$1 not ready at $2 ($why); its log:"; tail -20 "$state/logs/$1.log" >&2; return 1
}

up() {
  load_env
  bin="$(prism_bin)"
  mkdir -p "$state/pids" "$state/logs" "$state/feed" "$state/poller" "$state/tail" "$state/access-logs"
  if [ -z "${PRISM_KAFKA_BROKERS:-}" ] || [ -z "${PRISM_DATABASE_URL:-}" ] || [ -z "${PRISM_TEST_S3_ENDPOINT:-}" ]; then
    "$root/infra/test-env.sh" start > "$state/servers.env"
    # shellcheck disable=SC1091
    source "$state/servers.env"
  fi
  local admin="$PRISM_DATABASE_URL"
  local base="${admin%/*}"
  psql "$admin" -qc "CREATE DATABASE prism_stack" >/dev/null 2>&1 || true
  # The compose stack's init SQL: the flights database, its table, the publication (re-runs skip
  # what exists).
  psql "$admin" -q -f "$root/infra/compose/postgres-init.sql" >/dev/null 2>&1 || true
  python3 -c "import urllib.request as u; u.urlopen(u.Request('$PRISM_TEST_S3_ENDPOINT/prism', method='PUT'))" 2>/dev/null || true
  local p="${PRISM_STACK_PORT:-8080}"
  local common=(
    PRISM_ARCHITECTURE="$PRISM_ARCHITECTURE" PRISM_VIEWS="$PRISM_VIEWS" PRISM_PARTITIONS="$PRISM_PARTITIONS"
    PRISM_KAFKA_BROKERS="$PRISM_KAFKA_BROKERS" PRISM_DATABASE_URL="$base/prism_stack"
    PRISM_MASTER_DATASET="s3://prism/master-$PRISM_ARCHITECTURE" AWS_ENDPOINT="$PRISM_TEST_S3_ENDPOINT" AWS_ALLOW_HTTP=true
    AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$S3_SECRET_KEY"
    PRISM_API_TOKEN="${PRISM_API_TOKEN:-}" PRISM_READ_TOKEN="${PRISM_READ_TOKEN:-}" PRISM_LOG="${PRISM_LOG:-info}"
  )
  start_service speed-layer $((p + 2)) speed-layer "${common[@]}"
  wait_ready speed-layer "http://127.0.0.1:$((p + 2))/readyz"
  if [ "$PRISM_ARCHITECTURE" = lambda ]; then
    start_service archiver $((p + 3)) archiver "${common[@]}"
    start_service batch-layer $((p + 4)) batch-layer "${common[@]}"
  fi
  start_service serving "$p" serving "${common[@]}"
  start_service ingest-api $((p + 1)) ingest-api "${common[@]}"
  start_service feed $((p + 8)) feed "${common[@]}" PRISM_DATA_DIR="$state/feed" PRISM_FEED_SPEED="$PRISM_FEED_SPEED"
  start_service quote-sim $((p + 10)) quote-sim PRISM_SIM_SYMBOLS="$PRISM_POLL_SYMBOLS"
  wait_ready quote-sim "http://127.0.0.1:$((p + 10))/healthz"
  start_service quote-poller $((p + 6)) quote-poller "${common[@]}" PRISM_DATA_DIR="$state/poller" \
    PRISM_POLL_URL="http://127.0.0.1:$((p + 10))/v1/quotes/{symbol}" PRISM_POLL_SYMBOLS="$PRISM_POLL_SYMBOLS"
  start_service ingest-cdc $((p + 7)) ingest-cdc "${common[@]}" PRISM_CDC_DATABASE_URL="$base/flights"
  start_service ingest-logs $((p + 5)) ingest-logs "${common[@]}" PRISM_DATA_DIR="$state/tail" \
    PRISM_TAIL="$state/access-logs/access.log*"
  for s in serving ingest-api feed quote-poller ingest-cdc ingest-logs; do
    case "$s" in
      serving) port=$p ;; ingest-api) port=$((p + 1)) ;; feed) port=$((p + 8)) ;;
      quote-poller) port=$((p + 6)) ;; ingest-cdc) port=$((p + 7)) ;; ingest-logs) port=$((p + 5)) ;;
    esac
    wait_ready "$s" "http://127.0.0.1:$port/readyz"
  done
  if [ "$PRISM_ARCHITECTURE" = lambda ]; then
    wait_ready archiver "http://127.0.0.1:$((p + 3))/readyz"
    wait_ready batch-layer "http://127.0.0.1:$((p + 4))/readyz"
  fi
  log "up ($PRISM_ARCHITECTURE): serving http://127.0.0.1:$p, ingest http://127.0.0.1:$((p + 1)), access logs into $state/access-logs/access.log, flights database $base/flights"
}

down() {
  [ -d "$state/pids" ] || { log "nothing runs from $state"; return 0; }
  for f in "$state"/pids/*; do
    [ -e "$f" ] || continue
    kill -TERM "$(cat "$f")" 2>/dev/null || true
  done
  for f in "$state"/pids/*; do
    [ -e "$f" ] || continue
    local pid; pid="$(cat "$f")"
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$f"
  done
  if [ -f "$state/servers.env" ]; then
    # shellcheck disable=SC1091
    source "$state/servers.env"
    "$root/infra/test-env.sh" stop "$PRISM_TEST_ENV_DIR" || true
    rm -f "$state/servers.env"
  fi
  log "down"
}

case "$cmd" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
