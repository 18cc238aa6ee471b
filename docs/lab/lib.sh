# Shared functions of the lab's step scripts (docs/lab/steps/*.sh source this file).
#
#   PRISM_BIN  the prism binary (default: target/release/prism of this repository;
#              build it once with `cargo build --release -p prism`)
#   LAB_WORK   a folder for the data of the Prisms a step starts (default: a new temporary one)
#
# A step that starts its own Prism calls `prism_start NAME [prism up flags…]`: the process's PID
# is in $PRISM_PID (crash steps kill that PID, never `pkill -f`), its URL in $PRISM, its data
# folder is $LAB_WORK/NAME and its log $LAB_WORK/NAME.log.

LAB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PRISM_BIN=${PRISM_BIN:-$LAB_ROOT/target/release/prism}
LAB_WORK=${LAB_WORK:-$(mktemp -d)}
if [ ! -x "$PRISM_BIN" ]; then
  echo "no prism binary at $PRISM_BIN: run \`cargo build --release -p prism\` or set PRISM_BIN" >&2
  exit 1
fi

# Debian's PostgreSQL server packages keep psql out of PATH (steps 5 and 7 call it): look there.
if ! command -v psql >/dev/null 2>&1; then
  for d in /usr/lib/postgresql/*/bin; do if [ -x "$d/psql" ]; then PATH="$PATH:$d"; fi; done
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# prism_start NAME [flags…]: `prism up` on a free port with data in $LAB_WORK/NAME; waits until
# /readyz answers (at most 120 s). Sets PRISM (its URL) and PRISM_PID.
prism_start() {
  local name=$1; shift
  local port; port=$(free_port)
  "$PRISM_BIN" up --data-dir "$LAB_WORK/$name" --http-addr "127.0.0.1:$port" "$@" >>"$LAB_WORK/$name.log" 2>&1 &
  PRISM_PID=$!
  PRISM="http://127.0.0.1:$port"
  for _ in $(seq 1 1200); do
    if curl -sf "$PRISM/readyz" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$PRISM_PID" 2>/dev/null; then
      echo "prism up ($name) exited; its log:" >&2; tail -n 30 "$LAB_WORK/$name.log" >&2; exit 1
    fi
    sleep 0.1
  done
  echo "prism up ($name) not ready after 120 s; its log: $LAB_WORK/$name.log" >&2
  kill -KILL "$PRISM_PID" 2>/dev/null || true; exit 1
}

# prism_stop: a graceful stop (SIGTERM) of $PRISM_PID, waiting for it to exit.
prism_stop() { kill -TERM "$PRISM_PID" 2>/dev/null || true; wait "$PRISM_PID" 2>/dev/null || true; }

# prism_kill: a crash (SIGKILL) of $PRISM_PID.
prism_kill() { kill -KILL "$PRISM_PID" 2>/dev/null || true; wait "$PRISM_PID" 2>/dev/null || true; }

# wait_until SECONDS CMD…: runs CMD every 0.1 s until it succeeds; fails the step after SECONDS.
wait_until() {
  local secs=$1; shift
  for _ in $(seq 1 $((secs * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "timed out after ${secs} s waiting for: $*" >&2; return 1
}

# jq_py EXPR: evaluates a Python expression over the JSON on stdin (bound to `a`) and prints it.
jq_py() { python3 -c 'import json,sys; a=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
