#!/usr/bin/env bash
# Step 6 of the lab (docs/lab/06-lambda-vs-kappa.md): Lambda vs Kappa on the same input, then a
# Kappa replay into a new view version. Starts its own Prisms, one after the other. What it
# measures (time, storage) differs from run to run and machine to machine: it goes to stderr.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

RUN=$LAB_WORK/lambda-vs-kappa
mkdir -p "$RUN"
trap 'prism_stop 2>/dev/null || true' EXIT

measure() { echo "measured: $*" >&2; }
now() { date +%s.%N; }
since() { python3 -c 'import sys,time; print(f"{time.time() - float(sys.argv[1]):.1f} s")' "$1"; }
settled() { # the feed is done, and every consumer named in $@ has committed every record of the log
  curl -sf "$PRISM/v1/status" | python3 -c 'import json,sys
a = json.load(sys.stdin)
parts = [p for p in a["partitions"] if p["topic"] == "prism.quotes"]
at_end = lambda p, c: any(x["consumer"] == c and x["next_offset"] == p["log_end_offset"] for x in p["consumers"])
sys.exit(not (a["feeds"] and all(f["done"] for f in a["feeds"])
              and all(at_end(p, c) for p in parts if p["log_end_offset"] > 0 for c in sys.argv[1:])))' "$@"
}
handed_off() { # Kappa: the stream job has handed every finalized day off to segments
  curl -sf "$PRISM/v1/status" | jq_py 'a["segment_horizon"] == "2008-09-19T00:00:00Z"' | grep -qx True
}
save() { # $RUN/$1.json: every 1m, 1h and 1d bar of AAPL and MSFT, as served now
  python3 -c 'import json,sys,urllib.request
out = {}
for symbol in ("AAPL", "MSFT"):
    for interval in ("1m", "1h", "1d"):
        url = f"{sys.argv[1]}/v1/bars/{symbol}?interval={interval}&limit=100000"
        out[f"{symbol} {interval}"] = json.load(urllib.request.urlopen(url))["bars"]
json.dump(out, open(sys.argv[2], "w"))' "$PRISM" "$RUN/$1.json"
}
compare() { # do saved answers $1 and $2 hold the same bars? (numbers only: `layer` says who served them)
  python3 -c 'import json,sys
a, b = (json.load(open(f"{sys.argv[1]}/{n}.json")) for n in sys.argv[2:4])
numbers = ["start", "open", "high", "low", "close", "volume", "notional", "vwap", "trades"]
for k in a:
    same = [{f: x[f] for f in numbers} for x in a[k]] == [{f: x[f] for f in numbers} for x in b[k]]
    layers = lambda bars: " ".join("%s %d" % (l, sum(x["layer"] == l for x in bars)) for l in sorted({x["layer"] for x in bars}))
    print(f"{k}: {len(a[k])} and {len(b[k])} bars,", "the same numbers" if same else "DIFFERENT",
          f"| {sys.argv[2]}: {layers(a[k])} | {sys.argv[3]}: {layers(b[k])}")' "$RUN" "$1" "$2"
}
folders() { # the data folder's top two levels (the SQLite journal files come and go)
  (cd "$LAB_WORK/$1" && find . -maxdepth 2 ! -name '*-wal' ! -name '*-shm' ! -name . | sed 's|^\./||' | LC_ALL=C sort | paste -sd ' ' -)
}
storage() { # sizes of a data folder and its parts, to stderr
  measure "$1 data folder $(du -sh "$LAB_WORK/$1" | cut -f1)"
  for part in log master/quotes master/segments views.sqlite; do
    if [ -e "$LAB_WORK/$1/$part" ]; then measure "$1 $part $(du -sh "$LAB_WORK/$1/$part" | cut -f1)"; fi
  done
}

echo "## the input: AAPL and MSFT, 2008-09-08 to 2008-09-19, cut from the lab's file"
gzip -dc "$LAB_ROOT/data/stocks-daily-2000-2013.csv.gz" |
  awk -F, 'NR == 1 || (($1 == "AAPL" || $1 == "MSFT") && $2 >= "2008-09-08" && $2 <= "2008-09-19")' >"$RUN/two-weeks.csv"
echo "$(($(wc -l <"$RUN/two-weeks.csv") - 1)) daily bars, 390 trades each"

echo "## Lambda: the speed layer, the archiver and, on request, the batch job"
start=$(now)
prism_start lambda --architecture lambda --feed "$RUN/two-weeks.csv" --batch-interval 1h --no-batch-on-catch-up
wait_until 80 settled speed-layer.ohlcv.v1 archiver
curl -sf -X POST "$PRISM/v1/admin/batch-runs" |
  jq_py '"\n".join("batch version %s: batch_horizon %s, events %s" % (r["view_version"], r["batch_horizon"], r["events"]) for r in a["runs"])'
save lambda
measure "Lambda, from start to the batch view published: $(since "$start")"
prism_stop

echo "## Kappa: the speed layer only; finalized days are handed off to segments"
start=$(now)
prism_start kappa --architecture kappa --feed "$RUN/two-weeks.csv"
wait_until 80 settled speed-layer.ohlcv.v1
wait_until 80 handed_off
curl -sf "$PRISM/v1/status" | jq_py '"realtime_version %s, segment_horizon %s, batch_horizon %s" % (a["realtime_version"], a["segment_horizon"], a["batch_horizon"])'
curl -s -o /dev/null -w 'POST /v1/admin/batch-runs: %{http_code}\n' -X POST "$PRISM/v1/admin/batch-runs"
save kappa-v1
measure "Kappa, from start to every finalized day handed off: $(since "$start")"

echo "## the same input gives the same bars"
compare lambda kappa-v1

echo "## Kappa's reprocessing: replay the log into view version 2, then switch"
start=$(now)
"$PRISM_BIN" replay --url "$PRISM" --view ohlcv >&2
measure "prism replay, from its start until the switch: $(since "$start")"
curl -sf "$PRISM/v1/admin/replays/ohlcv.v2" >"$RUN/replay.json"
jq_py '"replay %s: %s, %s of %s events, lag %s" % (a["id"], a["state"], a["events_done"], a["events_total"], a["lag"])' <"$RUN/replay.json"
measure "replay ohlcv.v2 from started_at to ended_at (the switch): $(python3 -c 'import json,sys
from datetime import datetime
a = json.load(open(sys.argv[1]))
at = lambda k: datetime.fromisoformat(a[k].replace("Z", "+00:00"))
print("%.2f s" % (at("ended_at") - at("started_at")).total_seconds())' "$RUN/replay.json")"
curl -sf "$PRISM/v1/status" | jq_py '"realtime_version %s, segment_horizon %s" % (a["realtime_version"], a["segment_horizon"])'
save kappa-v2
compare kappa-v1 kappa-v2
prism_stop

echo "## what each keeps on disk (top two levels of its data folder)"
echo "lambda: $(folders lambda)"
echo "kappa: $(folders kappa)"
storage lambda
storage kappa
