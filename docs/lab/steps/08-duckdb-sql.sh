#!/usr/bin/env bash
# Step 8 of the lab (docs/lab/08-duckdb-sql.md): SQL with DuckDB over the files Prism's batch
# side writes — the Parquet master dataset (every trade) and the batch view's segments — and the
# same numbers from /v1/bars.
# Needs Python's duckdb module (pip install -r docs/lab/requirements.txt).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
python3 -c 'import duckdb' 2>/dev/null || { echo "no duckdb module: pip install -r docs/lab/requirements.txt" >&2; exit 1; }

# A small input: two weeks of AAPL and MSFT daily bars from the lab's file, 390 trades per bar.
bars="$LAB_WORK/step08-bars.csv"
gzip -dc "$LAB_ROOT/data/stocks-daily-2000-2013.csv.gz" | grep -E '^(Ticker,|(AAPL|MSFT),2008-09-(0[89]|1[0-9]),)' >"$bars"

echo "## Lambda, fed two weeks of AAPL and MSFT; the batch job runs only when asked"
PRISM_PID=""
trap prism_stop EXIT
prism_start step08 --feed "$bars" --batch-interval 1h --no-batch-on-catch-up
export DATA="$LAB_WORK/step08" BARS="$bars" PRISM

caught_up() { # the feed is done, and the speed layer and the archiver are at the log's end
  curl -sf "$PRISM/v1/status" | python3 -c 'import json, sys
a = json.load(sys.stdin)
feeds = a.get("feeds") or []
done = feeds and all(f["done"] for f in feeds)
idle = all((p["log_end_offset"] == 0 or len(p["consumers"]) == 2) and all(c["lag"] == 0 for c in p["consumers"])
           for p in a["partitions"] if p["topic"] == "prism.quotes")
sys.exit(0 if done and idle else 1)'
}
wait_until 80 caught_up
curl -s "$PRISM/v1/status" | jq_py '"\n".join("feed: {accepted} trades, {refused} refused".format(**i) for i in a["ingest"] if i["source"] == "feed")'
curl -s -X POST "$PRISM/v1/admin/batch-runs" | jq_py '"\n".join("batch run: view {view} version {view_version}, horizon {batch_horizon}, {events} events, {rows} rows, {segments_built} segment(s) built".format(**r) for r in a["runs"])'

echo "## the master dataset: master/quotes/date=YYYY-MM-DD/prism.quotes-<partition>-<first offset>-<last offset>.parquet"
(cd "$DATA/master/quotes" && ls -d date=*)
python3 - <<'PY'
import duckdb, json, os, urllib.request
data, prism = os.environ["DATA"], os.environ["PRISM"]
db = duckdb.connect()
# Every archived trade once: after a compaction the small files it merged stay readable for a
# while next to the big one, so a glob can see a trade twice; (partition, offset) is its identity.
db.sql(f"""CREATE VIEW trades AS
  SELECT * FROM read_parquet('{data}/master/quotes/*/*.parquet', hive_partitioning = true)
  QUALIFY row_number() OVER (PARTITION BY "partition", "offset") = 1""")
for name, ty in db.sql("SELECT column_name, column_type FROM (DESCRIBE trades)").fetchall():
    print(f"  {name} {ty}")
print("trades:", db.sql("SELECT count(*) FROM trades").fetchall()[0][0])

print("## SQL: AAPL's daily bars recomputed from the raw trades")
daily = """SELECT symbol, date::VARCHAR AS day,
    first(price ORDER BY ts, "partition", "offset")::VARCHAR AS open, max(price)::VARCHAR AS high,
    min(price)::VARCHAR AS low, last(price ORDER BY ts, "partition", "offset")::VARCHAR AS close,
    sum(size) AS volume, sum(price * size)::VARCHAR AS notional, count(*) AS trades
  FROM trades GROUP BY symbol, date ORDER BY symbol, date"""
rows = db.sql(daily).fetchall()
print("day open high low close volume notional trades")
for symbol, *rest in rows:
    if symbol == "AAPL":
        print(*rest)

print("## the same SQL for every symbol and day, against GET /v1/bars?interval=1d")
equal = 0
for symbol in ("AAPL", "MSFT"):
    with urllib.request.urlopen(f"{prism}/v1/bars/{symbol}?interval=1d") as r:
        api = {b["start"][:10]: b for b in json.load(r)["bars"]}
    for s, day, o, h, l, c, volume, notional, trades in rows:
        b = api.get(day) if s == symbol else None
        if b and (b["open"], b["high"], b["low"], b["close"], b["volume"], b["notional"], b["trades"]) == (o, h, l, c, volume, notional, trades):
            equal += 1
        elif s == symbol:
            print("differs:", s, day, b)
print(f"{equal} of {len(rows)} daily bars equal")

print("## and against the daily bars of the source file")
real = db.sql(f"""SELECT Ticker, Date::VARCHAR, Open::DECIMAL(18,6)::VARCHAR, High::DECIMAL(18,6)::VARCHAR,
    Low::DECIMAL(18,6)::VARCHAR, Close::DECIMAL(18,6)::VARCHAR, Volume::BIGINT
  FROM read_csv('{os.environ["BARS"]}', header = true, all_varchar = true)""").fetchall()
mine = {(s, day): (o, h, l, c, v) for s, day, o, h, l, c, v, _, _ in rows}
same = sum(mine.get((s, day)) == tuple(rest) for s, day, *rest in real)
print(f"{same} of {len(real)} bars of the file equal")
PY

echo "## the batch view: the segments of the published version (its manifest is in the view store)"
python3 - <<'PY'
import datetime, duckdb, json, os, sqlite3, urllib.request
data, prism = os.environ["DATA"], os.environ["PRISM"]
utc = lambda ms: datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
store = sqlite3.connect(f"file:{data}/views.sqlite?mode=ro", uri=True)
segments = store.execute("""SELECT s.path, s.rows, s.covered_until FROM view_segments s
    JOIN view_pointers p ON p.view = s.view AND p.batch_version = s.view_version
    WHERE s.view = 'ohlcv' ORDER BY s.chunk_start""").fetchall()
for path, rows, covered_until in segments:
    print(path, "rows", rows, "covered until", utc(covered_until))
db = duckdb.connect()
files = ", ".join(f"'{data}/master/{path}'" for path, _, _ in segments)
db.sql(f"CREATE VIEW segment AS SELECT * FROM read_parquet([{files}])")
for name, ty in db.sql("SELECT column_name, column_type FROM (DESCRIBE segment)").fetchall():
    print(f"  {name} {ty}")
name = {60000: "1m", 300000: "5m", 900000: "15m", 3600000: "1h", 86400000: "1d"}
print("rows per interval:", ", ".join(f"{name[ms]} {n}" for ms, n in
      db.sql("SELECT interval_ms, count(*) FROM segment GROUP BY 1 ORDER BY 1").fetchall()))

print("## AAPL's daily rows in the segment, against GET /v1/bars?interval=1d")
with urllib.request.urlopen(f"{prism}/v1/bars/AAPL?interval=1d") as r:
    answer = json.load(r)
api = {b["start"][:10]: b for b in answer["bars"]}
print("batch horizon", answer["batch_horizon"])
for day, close, volume, trades in db.sql("""SELECT strftime(make_timestamp(epoch_ms(window_start) * 1000), '%Y-%m-%d'),
        close_price::VARCHAR, volume, trades FROM segment
        WHERE interval_ms = 86400000 AND symbol = 'AAPL' ORDER BY window_start""").fetchall():
    b = api[day]
    same = (b["close"], b["volume"], b["trades"]) == (close, volume, trades)
    print(day, "segment: close", close, "trades", trades, "| /v1/bars:", b["layer"], "close", b["close"], "trades", b["trades"],
          "| equal" if same else "| differs")
print("## the rest of the last day: 1-minute bars from the batch horizon on, from the realtime view")
with urllib.request.urlopen(f"{prism}/v1/bars/AAPL?interval=1m&from={answer['batch_horizon']}") as r:
    for b in json.load(r)["bars"]:
        print(b["start"], "close", b["close"], "trades", b["trades"], b["layer"])
PY
