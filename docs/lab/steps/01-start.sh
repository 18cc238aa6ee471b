#!/usr/bin/env bash
# Step 1 of the lab (docs/lab/01-start.md): start the platform and watch the layers.
# Starts its own Prism (on a free port, data in $LAB_WORK/lab01) on the lab's last year, and
# stops it on exit. Stdout is what every run prints; the layers' progress goes to stderr.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

# The lab's last year (2012-03-01 .. 2013-03-01) out of the bundled file: 5 symbols, FB from
# its first trading day (2012-05-18).
FEED=$LAB_WORK/stocks-2012-03-01-2013-03-01.csv
python3 - "$LAB_ROOT/data/stocks-daily-2000-2013.csv.gz" "$FEED" <<'EOF'
import gzip, sys
with gzip.open(sys.argv[1], "rt") as src, open(sys.argv[2], "w") as out:
    for n, line in enumerate(src):
        if n == 0 or line.split(",")[1] >= "2012-03-01":
            out.write(line)
EOF

trap 'kill "${WATCH:-}" 2>/dev/null || true; prism_stop' EXIT   # however it ends, stop what we start
prism_start lab01 --feed "$FEED" --feed-trades-per-day 78

status() { curl -sf "$PRISM/v1/status"; }
# One line a second on stderr while the layers work: timing-dependent, so not on stdout.
watch_layers() {
  local t=0
  while sleep 1; do
    t=$((t + 1))
    status | jq_py '"%3ds  feed %s days  log %d  speed lag %s  watermark %s  archiver lag %s  batch horizon %s" % ('"$t"',
      " ".join("%d/%d" % (f["days_done"], f["days_total"]) for f in a["feeds"]),
      sum(p["log_end_offset"] for p in a["partitions"]),
      "/".join(str(c["lag"]) for p in a["partitions"] for c in p["consumers"] if c["consumer"].startswith("speed-layer")),
      a["realtime_watermark"],
      "/".join(str(c["lag"]) for p in a["partitions"] for c in p["consumers"] if c["consumer"] == "archiver"),
      a["batch_horizon"])' >&2 || true
  done
}
watch_layers & WATCH=$!

feed_done() { status | jq_py 'all(f["done"] for f in a["feeds"]) and len(a["feeds"]) == 1' | grep -qx True; }
caught_up() { # caught_up CONSUMER-PREFIX: its next offset is the log's end on every partition
  status | jq_py 'all(any(c["consumer"].startswith("'"$1"'") and c["lag"] == 0 for c in p["consumers"]) for p in a["partitions"])' | grep -qx True
}

echo "## the feed appends the year's trades to the log (prism.quotes)"
wait_until 120 feed_done
status | jq_py '"\n".join("feed: %d of %d trading days appended, %d rows refused" % (f["days_done"], f["days_total"], f["rows_refused"]) for f in a["feeds"])'
status | jq_py '"\n".join("ingest source %s: %d events accepted, %d refused" % (i["source"], i["accepted"], i["refused"]) for i in a["ingest"])'
status | jq_py '"\n".join("%s partition %d: end offset %d" % (p["topic"], p["partition"], p["log_end_offset"]) for p in a["partitions"])'

echo "## the speed layer follows the log into the realtime view"
wait_until 120 caught_up speed-layer.
status | jq_py '"\n".join("%s partition %d: next offset %d, lag %d" % (c["consumer"], p["partition"], c["next_offset"], c["lag"]) for p in a["partitions"] for c in p["consumers"] if c["consumer"].startswith("speed-layer"))'
status | jq_py '"realtime watermark " + a["realtime_watermark"]'

echo "## the archiver writes the master dataset (Parquet, one folder per trading day)"
wait_until 120 caught_up archiver
status | jq_py '"\n".join("archiver partition %d: next offset %d, lag %d" % (p["partition"], c["next_offset"], c["lag"]) for p in a["partitions"] for c in p["consumers"] if c["consumer"] == "archiver")'
days=$(ls -d "$LAB_WORK/lab01/master/quotes/date="* | sort)
echo "day folders: $(echo "$days" | wc -l) ($(basename "$(echo "$days" | head -1)") .. $(basename "$(echo "$days" | tail -1)"))"
echo "Parquet files: $(find "$LAB_WORK/lab01/master/quotes" -name '*.parquet' | wc -l)" >&2
python3 - "$LAB_WORK/lab01/master/quotes" <<'EOF'
import duckdb, sys
# Compaction leaves the small files it merged readable for a while (--compact-grace), so count
# each log position (partition, offset) once.
[(n,)] = duckdb.sql(f"""SELECT count(DISTINCT (partition, "offset"))
                       FROM read_parquet('{sys.argv[1]}/*/*.parquet')""").fetchall()
print(f"events in the master dataset: {n}")
EOF

echo "## the batch job turns the master dataset into a batch view"
status | jq_py '"batch view before our request: version %s, horizon %s" % (a["batch_version"], a["batch_horizon"])' >&2
curl -sf -X POST "$PRISM/v1/admin/batch-runs" | jq_py '"\n".join("batch run of %s: horizon %s" % (r["view"], r["batch_horizon"]) for r in a["runs"])'
status | jq_py '"\n".join("view %s: batch horizon %s, %d segments" % (v["view"], v["batch_horizon"], v["batch_segments"]) for v in a["views"])'
ls "$LAB_WORK/lab01/master/segments/ohlcv" | sed 's/^/segment folder: /' >&2
kill "$WATCH" 2>/dev/null || true

echo "## the serving layer: AAPL's daily bars, week of 2013-02-25, against the CSV"
python3 - "$PRISM" "$FEED" <<'EOF'
import csv, json, sys, urllib.request
from decimal import Decimal
prism, feed = sys.argv[1], sys.argv[2]
daily = {(r["Ticker"], r["Date"]): r for r in csv.DictReader(open(feed))}

def bars(symbol, since="2012-03-01", until="2013-03-01"):
    with urllib.request.urlopen(f"{prism}/v1/bars/{symbol}?interval=1d&from={since}&to={until}") as r:
        return json.load(r)["bars"]

def same(symbol, bar):
    row = daily.get((symbol, bar["start"][:10]))
    return row is not None and all(Decimal(bar[k]) == Decimal(row[k.title()]) for k in ("open", "high", "low", "close")) \
        and bar["volume"] == int(row["Volume"])

for b in bars("AAPL", "2013-02-25"):
    print(b["start"][:10], "open", b["open"], "high", b["high"], "low", b["low"], "close", b["close"],
          "volume", b["volume"], "trades", b["trades"], b["layer"], "= CSV" if same("AAPL", b) else "≠ CSV")

print("## AAPL's last 5-minute bars, 2013-03-01 from 20:40: each says which layer answered")
with urllib.request.urlopen(f"{prism}/v1/bars/AAPL?interval=5m&from=2013-03-01T20:40:00Z") as r:
    for b in json.load(r)["bars"]:
        print(b["start"], "open", b["open"], "close", b["close"], "volume", b["volume"], "trades", b["trades"], b["layer"])

print("## every daily bar of the year, per symbol")
for symbol in json.load(urllib.request.urlopen(f"{prism}/v1/symbols"))["symbols"]:
    got = bars(symbol)
    layers = {}
    for b in got:
        layers[b["layer"]] = layers.get(b["layer"], 0) + 1
    rows = sum(1 for (s, _) in daily if s == symbol)
    print(f"{symbol}: {len(got)} daily bars ({rows} CSV rows), {sum(same(symbol, b) for b in got)} equal to the CSV;",
          ", ".join(f"{n} {layer}" for layer, n in sorted(layers.items())))
EOF
