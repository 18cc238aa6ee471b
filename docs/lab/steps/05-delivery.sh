#!/usr/bin/env bash
# Step 5 of the lab (docs/lab/05-delivery.md): delivery semantics measured.
# Starts its own Prisms: two `prism up` (parts 1 and 2) and, for part 3, a distributed
# deployment (ingest-api, serving, two speed layers) on the Kafka broker and PostgreSQL named by
# PRISM_KAFKA_BROKERS and PRISM_DATABASE_URL (`eval "$(infra/test-env.sh start)"` starts both).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
: "${PRISM_KAFKA_BROKERS:?part 3 needs a Kafka broker and PostgreSQL: eval \"\$(infra/test-env.sh start)\"}"
: "${PRISM_DATABASE_URL:?part 3 needs a Kafka broker and PostgreSQL: eval \"\$(infra/test-env.sh start)\"}"

PIDS=() SPEED_PIDS=() DB="" ADMIN_URL=$PRISM_DATABASE_URL
cleanup() { # stops everything this step started, whatever happened
  # The speed layers with SIGKILL: two members leaving Tansu 0.6's group at once can leave it
  # waiting for a leader that is gone (a killed member just expires after its session).
  for pid in "${SPEED_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}" ${PRISM_PID:-}; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${SPEED_PIDS[@]}" "${PIDS[@]}" ${PRISM_PID:-}; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$DB" ]; then psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

post() { # BODY [IDEMPOTENCY-KEY]: the status (and the replay header), then the answer
  local headers=(-H 'content-type: application/x-ndjson')
  if [ -n "${2:-}" ]; then headers+=(-H "Idempotency-Key: $2"); fi
  local code; code=$(curl -s -D "$LAB_WORK/headers" -o "$LAB_WORK/answer" -w '%{http_code}' "${headers[@]}" \
    -X POST "$PRISM/v1/events/quotes" --data-binary "$1")
  echo "$code $(tr -d '\r' <"$LAB_WORK/headers" | grep -i '^idempotent-replayed:' || true)" | sed 's/ *$//'
  cat "$LAB_WORK/answer"; echo
}
speed_lags() { # the speed layer's lag on every partition of prism.quotes, from /v1/status
  curl -sf "$PRISM/v1/status" | jq_py '[c["lag"] for p in a["partitions"] if p["topic"] == "prism.quotes" for c in p["consumers"] if c["consumer"] == "speed-layer.ohlcv.v1"]'
}
caught_up() { [[ "$(speed_lags)" =~ ^\[0(,\ 0)*\]$ ]]; } # committed every record of the log
bars() { # SYMBOL: its 1-minute bars
  curl -s "$PRISM/v1/bars/$1?interval=1m" | python3 -c 'import json,sys
for b in json.load(sys.stdin)["bars"]:
    print(sys.argv[1], b["start"], "open", b["open"], "close", b["close"], "volume", b["volume"], "trades", b["trades"])' "$1"
}

echo "## 1. at-least-once: a client posts 3 trades, loses the answer, posts them again"
prism_start retry --no-feed
batch='{"symbol":"RETRY","ts":"2024-01-02T14:30:05Z","price":"10.00","size":100}
{"symbol":"RETRY","ts":"2024-01-02T14:30:20Z","price":"10.10","size":100}
{"symbol":"RETRY","ts":"2024-01-02T14:30:40Z","price":"10.20","size":100}'
post "$batch"
post "$batch"
wait_until 60 caught_up
bars RETRY
echo "## the same retry with an Idempotency-Key: the second answer is a replay"
post "${batch//RETRY/IDEM}" lab-05-batch-1
post "${batch//RETRY/IDEM}" lab-05-batch-1
wait_until 60 caught_up
bars IDEM
prism_stop

echo "## 2. exactly-once: SIGKILL prism up 5 times while its feed runs, restart it each time"
# The input: 30 trading days of the 5 symbols of the bundled lab file, 20 trades per daily bar.
feed="$LAB_WORK/lab-2012-06.csv"
python3 - "$LAB_ROOT/data/stocks-daily-2000-2013.csv.gz" "$feed" <<'EOF'
import csv, gzip, sys
with gzip.open(sys.argv[1], "rt") as src, open(sys.argv[2], "w") as out:
    out.write("Ticker,Date,Open,High,Low,Close,Volume\n")
    for r in csv.DictReader(src):
        if "2012-05-18" <= r["Date"] < "2012-07-01":
            out.write(",".join(r[k] for k in ("Ticker", "Date", "Open", "High", "Low", "Close", "Volume")) + "\n")
EOF
up_crash() { prism_start crash --partitions 2 --feed "$feed" --feed-speed 5 --feed-trades-per-day 20; }
days_done() { curl -s "$PRISM/v1/status" | jq_py 'a["feeds"][0]["days_done"] if a["feeds"] else 0'; }
past_day() { [ "$(days_done)" -ge "$1" ]; }
for day in 4 8 12 16 20; do
  up_crash
  wait_until 120 past_day "$day"
  sleep "0.$((RANDOM % 4))" # and a little further, anywhere in the feed, the log or the layers
  echo "SIGKILL at day $(days_done) of 30" >&2
  prism_kill
done
up_crash
feed_done() { [ "$(curl -s "$PRISM/v1/status" | jq_py 'a["feeds"][0]["done"]')" = True ]; }
wait_until 120 feed_done
wait_until 120 caught_up # asked after the feed said done, so the log end it compares with is final
for s in AAPL FB GOOG IBM MSFT; do
  curl -s "$PRISM/v1/bars/$s?interval=1d" >"$LAB_WORK/$s.1d.json"
  curl -s "$PRISM/v1/bars/$s?interval=1m&limit=100000" >"$LAB_WORK/$s.1m.json"
done
curl -s "$PRISM/v1/status" >"$LAB_WORK/status.json"
# What the input implies, from the CSV alone: each daily bar became 20 trades whose roll-up is
# the bar itself, so every 1d bar must equal its CSV row (open, high, low, close, volume) with 20
# trades, and the 1m bars must hold 20 trades per row.
python3 - "$feed" "$LAB_WORK" <<'EOF'
import csv, json, sys
from decimal import Decimal
feed, work = sys.argv[1], sys.argv[2]
want = {(r["Ticker"], r["Date"] + "T00:00:00Z"): (Decimal(r["Open"]), Decimal(r["High"]), Decimal(r["Low"]),
        Decimal(r["Close"]), int(r["Volume"]), min(20, int(r["Volume"]))) for r in csv.DictReader(open(feed))}
got, minute_trades = {}, 0
for s in sorted({symbol for symbol, _ in want}):
    for b in json.load(open(f"{work}/{s}.1d.json"))["bars"]:
        got[(s, b["start"])] = (Decimal(b["open"]), Decimal(b["high"]), Decimal(b["low"]),
                                Decimal(b["close"]), b["volume"], b["trades"])
    minute_trades += sum(b["trades"] for b in json.load(open(f"{work}/{s}.1m.json"))["bars"])
trades = sum(v[5] for v in want.values())
bad = [k for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k)]
for k in bad[:5]:
    print("differs:", k, "csv", want.get(k), "prism", got.get(k))
status = json.load(open(f"{work}/status.json"))
records = sum(p["log_end_offset"] for p in status["partitions"] if p["topic"] == "prism.quotes")
print(f"log: {records} records for {trades} trades")
print(f"verify: {trades} trades ({minute_trades} in the 1m bars), {len(want)} daily bars,",
      "all equal" if not bad and minute_trades == trades else f"{len(bad)} differ")
EOF
prism_stop

echo "## 3. a zombie fenced: two speed layers on Kafka and PostgreSQL"
# A database of its own (the view store: leases, offsets and views start empty); the topic
# prism.quotes may hold earlier runs' trades, so this run's trades get a symbol of their own.
DB="lab05_$$_$RANDOM"
psql -q "$ADMIN_URL" -c "CREATE DATABASE $DB" >/dev/null
export PRISM_DATABASE_URL="${ADMIN_URL%/*}/$DB" PRISM_PARTITIONS=2 \
  PRISM_MASTER_DATASET="$LAB_WORK/master" PRISM_KAFKA_SESSION_TIMEOUT=6s
SYMBOL="ZOMBIE-$$-$RANDOM"
service() { # NAME SUBCOMMAND [flags…]: starts it on a free port (in $PORT), waits until ready
  local name=$1; shift
  PORT=$(free_port)
  "$PRISM_BIN" "$@" --http-addr "127.0.0.1:$PORT" >>"$LAB_WORK/$name.log" 2>&1 &
  if [ "$1" = speed-layer ]; then SPEED_PIDS+=($!); else PIDS+=($!); fi
  wait_until 120 curl -sf "127.0.0.1:$PORT/readyz"
}
metric() { curl -s "127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
partitions() { curl -sf "$PRISM/v1/status" | jq_py 'len([p for p in a["partitions"] if p["topic"] == "prism.quotes"])'; }
owns_all() { # the speed layer at port $1 holds every partition of prism.quotes
  [ "$(metric "$1" 'prism_speed_assigned_partitions{view="ohlcv"}')" = "$(partitions)" ]
}
lags_zero() { # every partition's lag gauge of the speed layer at port $1 is 0
  curl -s "127.0.0.1:$1/metrics" | awk '/^prism_speed_consumer_lag_events/ {n++; if ($2 != 0) bad=1} END {exit !(n && !bad)}'
}
read_events() { local n; n=$(metric "$1" 'prism_speed_events_total{view="ohlcv"}'); echo "${n:-0}"; }
bar() { # SYMBOL's 1-hour bar, without the symbol (it changes from run to run)
  curl -s "$PRISM/v1/bars/$SYMBOL?interval=1h" | jq_py '"; ".join(" ".join(str(x) for x in (b["start"], "open", b["open"], "close", b["close"], "volume", b["volume"], "trades", b["trades"])) for b in a.get("bars", [])) or "no bar"'
}
has_ten() { [[ "$(bar)" == *" trades 10" ]]; }

service ingest ingest-api; INGEST=$PORT # first: it creates the topics
service serving serving; PRISM="http://127.0.0.1:$PORT"
# speed-a commits once an hour (or every 10^8 events), not every 100 ms: the freeze below is
# then sure to fall between its reading the trades and its committing them.
service speed-a speed-layer --instance-id speed-a --commit-interval 1h --commit-max-events 100000000
SPEED_A=$PORT A_PID=${SPEED_PIDS[-1]}
if ! wait_until 90 owns_all "$SPEED_A"; then
  echo "speed-a got no partition: is the consumer group stuck? (infra/test-env.sh restart-broker)" >&2; exit 1
fi
echo "speed-a owns every partition"
wait_until 120 lags_zero "$SPEED_A" # it has read what earlier runs left in the topic
read_before=$(read_events "$SPEED_A")
for i in $(seq 0 9); do
  echo "{\"symbol\":\"$SYMBOL\",\"ts\":\"2024-01-02T14:3$i:00Z\",\"price\":\"20.0$i\",\"size\":$((i + 1))}"
done | curl -s -o /dev/null -H 'Idempotency-Key: lab-05-zombie' --data-binary @- "127.0.0.1:$INGEST/v1/events/quotes"
read_ten() { [ "$(read_events "$SPEED_A")" -ge $((read_before + 10)) ]; }
wait_until 120 read_ten
echo "speed-a has read the 10 trades (events: +$(($(read_events "$SPEED_A") - read_before))) and committed none: $(bar)"
echo "## speed-a freezes (SIGSTOP); speed-b joins and takes over once speed-a's session times out"
kill -STOP "$A_PID"
service speed-b speed-layer --instance-id speed-b
SPEED_B=$PORT
wait_until 120 owns_all "$SPEED_B"
echo "speed-b owns every partition (it claimed their leases: a new epoch each)"
wait_until 60 has_ten
echo "speed-b resumed from the offsets in PostgreSQL: $(bar)"
echo "## speed-a wakes up (SIGCONT) and commits the 10 trades it holds: refused"
kill -CONT "$A_PID"
fenced() { local n; n=$(metric "$1" 'prism_speed_fenced_commits_total{view="ohlcv"}'); echo "${n:-0}"; }
was_fenced() { [ "$(fenced "$SPEED_A")" != 0 ]; }
wait_until 60 was_fenced
echo "speed-a: prism_speed_fenced_commits_total $(fenced "$SPEED_A")"
echo "speed-b: prism_speed_fenced_commits_total $(fenced "$SPEED_B")"
echo "bars: $(bar)"
