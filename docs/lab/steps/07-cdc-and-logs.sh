#!/usr/bin/env bash
# Step 7 of the lab (docs/lab/07-cdc-and-logs.md): two more sources into the same log — a
# PostgreSQL table captured by logical replication (CDC) and an access log tailed through a
# rotation — and the views Prism builds over them: `changes` and `access`.
# Needs PostgreSQL with wal_level=logical at PRISM_DATABASE_URL (an admin URL: the step creates
# and drops its own database) and the `psql` client.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

admin=${PRISM_DATABASE_URL:-postgres://prism:prism@127.0.0.1:5432/prism}
PSQL=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | tail -n 1 || true)
[ -x "$PSQL" ] || { echo "no psql: install the PostgreSQL client (apt-get install postgresql-client)" >&2; exit 1; }
run="lab07_$(date +%s)_$$" # this run's database and replication slot (a slot is server-wide)
db="${admin%/*}/$run"
sql() { "$PSQL" "$1" -qAt -v ON_ERROR_STOP=1 -c "$2"; }

logs="$LAB_WORK/step07-logs"
mkdir -p "$logs"
PRISM_PID=""
cleanup() {
  prism_stop
  sql "$admin" "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$run'" >/dev/null 2>&1 || true
  sql "$admin" "DROP DATABASE IF EXISTS $run WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# A live database: the table of infra/compose/postgres-init.sql, with three flights already in it.
sql "$admin" "CREATE DATABASE $run"
sql "$db" "CREATE TABLE flights (
    id integer PRIMARY KEY, carrier text NOT NULL, flight integer NOT NULL, tailnum text,
    origin text NOT NULL, dest text NOT NULL, distance integer NOT NULL,
    sched_dep timestamptz NOT NULL, sched_dep_time integer NOT NULL, sched_arr_time integer NOT NULL,
    dep_time integer, dep_delay numeric(6, 1), arr_time integer, arr_delay numeric(6, 1),
    air_time numeric(6, 1), status text NOT NULL);
  INSERT INTO flights (id, carrier, flight, tailnum, origin, dest, distance, sched_dep, sched_dep_time, sched_arr_time, status) VALUES
    (1, 'UA', 1545, 'N14228', 'EWR', 'IAH', 1400, '2013-01-01 05:15-05', 515, 819, 'scheduled'),
    (2, 'UA', 1714, 'N24211', 'LGA', 'IAH', 1416, '2013-01-01 05:29-05', 529, 830, 'scheduled'),
    (3, 'AA', 1141, 'N619AA', 'JFK', 'MIA', 1089, '2013-01-01 05:40-05', 540, 850, 'scheduled');"

# An access log: combined-format lines (no latency in them) and JSON lines with `duration_ms`,
# plus one line that is neither (it goes to the dead-letter topic).
cat >"$logs/access.log" <<'EOF'
203.0.113.9 - - [01/Mar/2024:12:00:01 +0000] "GET / HTTP/1.1" 200 5120 "-" "curl/8.5.0"
203.0.113.9 - - [01/Mar/2024:12:00:07 +0000] "GET /v1/bars/AAPL?interval=1d HTTP/1.1" 200 81234 "https://prism.example/" "Mozilla/5.0"
198.51.100.7 - - [01/Mar/2024:12:00:09 +0000] "GET /favicon.ico HTTP/1.1" 404 153 "https://prism.example/" "Mozilla/5.0"
198.51.100.7 - alice [01/Mar/2024:12:00:30 +0000] "POST /v1/events/quotes HTTP/1.1" 202 0 "-" "python-requests/2.31"
203.0.113.9 - - [01/Mar/2024:12:00:45 +0000] "GET /v1/symbols HTTP/1.1" 304 - "-" "Mozilla/5.0"
{"ts":"2024-03-01T12:00:50Z","host":"203.0.113.9","method":"GET","path":"/v1/bars/IBM","status":200,"bytes":2048,"duration_ms":3}
{"ts":"2024-03-01T12:00:52Z","host":"203.0.113.9","method":"GET","path":"/v1/bars/IBM","status":200,"bytes":2048,"duration_ms":5}
{"ts":"2024-03-01T12:00:55Z","host":"203.0.113.9","method":"GET","path":"/v1/bars/MSFT","status":200,"bytes":4096,"duration_ms":8}
{"ts":"2024-03-01T12:01:02Z","host":"203.0.113.9","method":"GET","path":"/v1/bars/MSFT","status":200,"bytes":4096,"duration_ms":12}
{"ts":"2024-03-01T12:01:04Z","host":"203.0.113.9","method":"GET","path":"/v1/bars/GOOG","status":200,"bytes":1024,"duration_ms":15}
this is not an access-log line
EOF

echo "## capture the database (snapshot, then the replication stream) and tail the log"
prism_start step07 --no-feed --partitions 2 --cdc-database-url "$db" --cdc-slot "$run" \
  --cdc-keep-rows public.flights --tail "$logs/access.log*"

changes() { # the changes per operation, summed over every bucket: "c=2 d=1 r=3 u=3"
  curl -sf "$PRISM/v1/changes/public.flights?interval=1d" | python3 -c 'import collections, json, sys
total = collections.Counter()
for b in json.load(sys.stdin)["buckets"]:
    total.update(b["by_op"])
print(" ".join(f"{op}={n}" for op, n in sorted(total.items())))'
}
has_changes() { [ "$(changes)" = "$1" ]; }
row() { # the current row of flights.id = $1: some of its columns, or the HTTP status
  local answer code
  answer=$(curl -s -w '\n%{http_code}' "$PRISM/v1/changes/public.flights/rows/%7B%22id%22%3A$1%7D")
  code=${answer##*$'\n'}
  if [ "$code" != 200 ]; then echo "id=$1 $code"; return; fi
  echo "${answer%$'\n'*}" | jq_py '"id={id} {carrier} {flight} {status} dep_time={dep_time} dep_delay={dep_delay} arr_time={arr_time}".format(**a["row"])'
}

wait_until 60 has_changes "r=3"
echo "changes: $(changes)"

echo "## two inserts, three updates, one delete, in three transactions"
sql "$db" "INSERT INTO flights (id, carrier, flight, tailnum, origin, dest, distance, sched_dep, sched_dep_time, sched_arr_time, status) VALUES
    (4, 'B6', 725, 'N804JB', 'JFK', 'BQN', 1576, '2013-01-01 05:45-05', 545, 1022, 'scheduled'),
    (5, 'DL', 461, 'N668DN', 'LGA', 'ATL', 762, '2013-01-01 06:00-05', 600, 837, 'scheduled')"
sql "$db" "BEGIN;
  UPDATE flights SET dep_time = 517, dep_delay = 2, status = 'departed' WHERE id = 1;
  UPDATE flights SET dep_time = 533, dep_delay = 4, status = 'departed' WHERE id = 2;
  COMMIT"
sql "$db" "BEGIN;
  UPDATE flights SET arr_time = 830, arr_delay = 11, air_time = 227, status = 'arrived' WHERE id = 1;
  DELETE FROM flights WHERE id = 3;
  COMMIT"
wait_until 60 has_changes "c=2 d=1 r=3 u=3"
echo "changes: $(changes)"
echo "## the current rows, from the changes view (404: deleted)"
for id in 1 2 3 4 5; do row "$id"; done
echo "## the table itself"
sql "$db" "SELECT format('id=%s %s %s %s dep_time=%s dep_delay=%s arr_time=%s', id, carrier, flight, status,
  coalesce(dep_time::text, 'None'), coalesce(dep_delay::text, 'None'), coalesce(arr_time::text, 'None')) FROM flights ORDER BY id"

access() { curl -sf --get "$PRISM/v1/access" "$@"; }
requests() { access --data-urlencode interval=1d | jq_py 'sum(b["requests"] for b in a["buckets"])'; }
has_requests() { [ "$(requests)" = "$1" ]; }
echo "## the access log's first file"
wait_until 60 has_requests 10
echo "requests: $(requests)"

echo "## access log: rotate it (rename + create), and the writer appends one more line to the old file"
mv "$logs/access.log" "$logs/access.log.1"
cat >>"$logs/access.log.1" <<'EOF'
{"ts":"2024-03-01T12:01:09Z","host":"203.0.113.9","method":"GET","path":"/v1/status","status":200,"bytes":512,"duration_ms":20}
EOF
cat >"$logs/access.log" <<'EOF'
{"ts":"2024-03-01T12:01:15Z","host":"203.0.113.9","method":"GET","path":"/v1/bars/FB","status":200,"bytes":1024,"duration_ms":35}
{"ts":"2024-03-01T12:01:21Z","host":"203.0.113.9","method":"GET","path":"/v1/bars/FB","status":200,"bytes":1024,"duration_ms":60}
{"ts":"2024-03-01T12:01:30Z","host":"203.0.113.9","method":"GET","path":"/v1/bars/AAPL","status":200,"bytes":8192,"duration_ms":110}
{"ts":"2024-03-01T12:01:42Z","host":"203.0.113.9","method":"GET","path":"/v1/bars/AAPL","status":200,"bytes":8192,"duration_ms":480}
{"ts":"2024-03-01T12:01:44Z","host":"198.51.100.7","method":"GET","path":"/v1/bars/ZZZZ","status":404,"bytes":98,"duration_ms":2}
{"ts":"2024-03-01T12:01:50Z","host":"198.51.100.7","method":"POST","path":"/v1/admin/batch-runs","status":500,"bytes":64,"duration_ms":1250}
198.51.100.7 - - [01/Mar/2024:12:02:03 +0000] "GET /v1/bars/AAPL HTTP/1.1" 200 81234 "-" "Mozilla/5.0"
EOF
wait_until 60 has_requests 18
echo "requests: $(requests)"
echo "## per host and status class"
for key in "203.0.113.9 2xx" "203.0.113.9 3xx" "198.51.100.7 2xx" "198.51.100.7 4xx" "198.51.100.7 5xx"; do
  read -r host class <<<"$key"
  access --data-urlencode "host=$host" --data-urlencode "status_class=$class" --data-urlencode interval=1d |
    jq_py '"{} {}: requests {} bytes {} timed {} p50 {} p95 {} p99 {}".format(a["host"], a["status_class"],
      *[sum(b[f] for b in a["buckets"]) for f in ("requests", "bytes", "timed_requests")],
      *[a["buckets"][0][f] for f in ("p50_ms", "p95_ms", "p99_ms")])'
done
echo "## 203.0.113.9, every class, per minute"
access --data-urlencode host=203.0.113.9 --data-urlencode interval=1m | python3 -c 'import json, sys
for b in json.load(sys.stdin)["buckets"]:
    print(b["start"], "requests", b["requests"], "bytes", b["bytes"], "timed", b["timed_requests"],
          "p50", b["p50_ms"], "p95", b["p95_ms"], "p99", b["p99_ms"])'
curl -s "$PRISM/metrics" | grep -E '^prism_ingest_events_(appended|dead_lettered)_total\{source="logs"\}' | sort
