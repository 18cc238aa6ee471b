#!/usr/bin/env bash
# Step 4 of the lab (docs/lab/04-lambda-merge.md): the Lambda merge made visible.
# Starts its own Prism in Lambda mode, without the feed, whose batch job runs only on request.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

prism_start lambda-merge --architecture lambda --no-feed --batch-interval 1h --no-batch-on-catch-up
trap prism_stop EXIT
ANSWERS=$LAB_WORK/lambda-merge-answers
mkdir -p "$ANSWERS"

post() { # NDJSON trades → the HTTP status
  curl -s -o /dev/null -w '%{http_code}\n' -X POST "$PRISM/v1/events/quotes" \
    -H 'content-type: application/x-ndjson' --data-binary "$1"
}
caught_up() { # the log holds $1 trades, and the speed layer and the archiver have committed them all
  curl -sf "$PRISM/v1/status" | python3 -c 'import json,sys
a = json.load(sys.stdin)
parts = [p for p in a["partitions"] if p["topic"] == "prism.quotes"]
done = lambda p, c: any(x["consumer"] == c and x["next_offset"] == p["log_end_offset"] for x in p["consumers"])
sys.exit(not (sum(p["log_end_offset"] for p in parts) == int(sys.argv[1])
              and all(done(p, "speed-layer.ohlcv.v1") and done(p, "archiver") for p in parts if p["log_end_offset"] > 0)))' "$1"
}
save() { # $ANSWERS/$1.json: MRG's 1-minute and 1-day bars, as served now
  printf '{"1m": %s, "1d": %s}\n' "$(curl -sf "$PRISM/v1/bars/MRG?interval=1m")" \
    "$(curl -sf "$PRISM/v1/bars/MRG?interval=1d")" >"$ANSWERS/$1.json"
}
show() { # prints a saved answer
  python3 -c 'import json,sys
a = json.load(open(sys.argv[1]))
for interval in ("1m", "1d"):
    r = a[interval]
    print(interval, "batch_horizon", r["batch_horizon"], "realtime_watermark", r["realtime_watermark"])
    for b in r["bars"]:
        print(" ", b["start"], "open", b["open"], "high", b["high"], "low", b["low"], "close", b["close"],
              "volume", b["volume"], "trades", b["trades"], b["layer"])' "$ANSWERS/$1.json"
}
compare() { # what changed from saved answer $1 to saved answer $2, field by field
  python3 -c 'import json,sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
numbers = ["open", "high", "low", "close", "volume", "notional", "vwap", "trades"]
for interval in ("1m", "1d"):
    lines = [f"{interval} {k}: {a[interval][k]} -> {b[interval][k]}"
             for k in ("batch_horizon", "segment_horizon", "realtime_watermark") if a[interval][k] != b[interval][k]]
    old = {x["start"]: x for x in a[interval]["bars"]}
    new = {x["start"]: x for x in b[interval]["bars"]}
    same = 0
    for start in sorted(old.keys() | new.keys()):
        if start not in old or start not in new:
            lines.append(f"{interval} {start} new" if start in new else f"{interval} {start} gone")
            continue
        changes = [f"{f} {old[start][f]} -> {new[start][f]}" for f in numbers + ["layer"] if old[start][f] != new[start][f]]
        same += all(old[start][f] == new[start][f] for f in numbers)
        if changes:
            lines.append(f"{interval} {start} " + ", ".join(changes))
    print("\n".join(lines) if lines else f"{interval}: nothing changed")
    print(f"{interval}: bars with the same numbers: {same} of {len(new)}")' "$ANSWERS/$1.json" "$ANSWERS/$2.json"
}
batch_run() { # runs the batch job now; answers once the new batch version is published
  curl -sf -X POST "$PRISM/v1/admin/batch-runs" | jq_py '"\n".join(
    "batch version %s published: batch_horizon %s, full %s, events %s, rows %s, segments built %s"
    % (r["view_version"], r["batch_horizon"], r["full"], r["events"], r["rows"], r["segments_built"])
    for r in a["runs"])'
}
merge_of() { # the 1d bar of day $2 in saved answer $1, as the sum of its batch and realtime 1m bars
  python3 -c 'import json,sys
a = json.load(open(sys.argv[1])); day = sys.argv[2]
parts = {}
for b in a["1m"]["bars"]:
    if b["start"].startswith(day):
        p = parts.setdefault(b["layer"], [0, 0])
        p[0] += b["volume"]; p[1] += b["trades"]
d = next(b for b in a["1d"]["bars"] if b["start"].startswith(day))
print(day, " + ".join(f"{layer} part: volume {v} trades {t}" for layer, (v, t) in sorted(parts.items())),
      "= 1d bar: volume %s trades %s %s" % (d["volume"], d["trades"], d["layer"]))' "$ANSWERS/$1.json" "$2"
}

echo "## six trades over two days; no batch run yet, so the speed layer answers everything"
post '{"symbol":"MRG","ts":"2024-01-02T14:30:05Z","price":"10.00","size":100}
{"symbol":"MRG","ts":"2024-01-02T14:31:10Z","price":"10.50","size":50}
{"symbol":"MRG","ts":"2024-01-02T14:32:20Z","price":"10.20","size":70}
{"symbol":"MRG","ts":"2024-01-03T14:30:00Z","price":"10.40","size":300}
{"symbol":"MRG","ts":"2024-01-03T14:31:30Z","price":"10.80","size":20}
{"symbol":"MRG","ts":"2024-01-03T14:32:40Z","price":"10.60","size":80}'
wait_until 60 caught_up 6
save before
show before

echo "## the batch job recomputes the archived trades up to the batch horizon"
batch_run
save after
show after

echo "## what the batch run changed, field by field"
compare before after

echo "## a new trade at 14:33:15, after the horizon: the speed layer adds it to the 2024-01-03 bar"
post '{"symbol":"MRG","ts":"2024-01-03T14:33:15Z","price":"10.90","size":40}'
wait_until 60 caught_up 7
save new
compare after new
merge_of new 2024-01-03

echo "## a late trade of 14:31:45, behind the horizon: the batch view owns that minute"
post '{"symbol":"MRG","ts":"2024-01-03T14:31:45Z","price":"11.00","size":10}'
wait_until 60 caught_up 8
save late
compare new late
curl -s "$PRISM/metrics" | grep -E '^prism_speed_(late|behind_horizon)_events_total\{view="ohlcv"\}' | LC_ALL=C sort

echo "## the next batch run reads it from the master dataset and corrects the minute"
batch_run
save corrected
compare late corrected
merge_of corrected 2024-01-03
