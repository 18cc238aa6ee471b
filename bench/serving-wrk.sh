#!/usr/bin/env bash
# Serving under load (issue 11, target 4): `prism up` on the stock-quote lab, caught up, then
# `wrk -t2 -c32` on loopback for 15 s (after a sync and a 5 s warm-up) on each of two queries:
#   - AAPL's 1-minute bars of the lab's last hour (across the batch horizon);
#   - AAPL's 13 years of daily bars (3,270 bars, about 680 KB of JSON).
# Prints one JSON report (requests/s, latency p50/p99/max, errors, the server's RSS after).
#
#   bench/serving-wrk.sh [PRISM_BIN] > bench/reports/<date>-serving-wrk.json
#
# Needs wrk (Debian package `wrk`), curl and python3. wrk and the server share the machine's
# cores, as in the issue's measurement.
set -euo pipefail
prism=${1:-target/release/prism}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
"$prism" up --data-dir "$work/data" --http-addr "127.0.0.1:$port" >"$work/prism.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$work"' EXIT
base="http://127.0.0.1:$port"
started=$SECONDS
until python3 - "$base" <<'PY' 2>/dev/null
import json, sys, urllib.request
a = json.load(urllib.request.urlopen(sys.argv[1] + "/v1/status", timeout=5))
done = a["feeds"] and all(f["done"] for f in a["feeds"])
caught_up = all(c["lag"] == 0 for p in a["partitions"] for c in p["consumers"])
sys.exit(0 if done and caught_up and a["batch_horizon"] else 1)
PY
do
  if ! kill -0 "$pid" 2>/dev/null; then echo "prism up exited; see its log" >&2; tail -20 "$work/prism.log" >&2; exit 1; fi
  if [ $((SECONDS - started)) -gt 600 ]; then echo "not caught up after 600 s" >&2; exit 1; fi
  sleep 1
done
echo "caught up after $((SECONDS - started)) s" >&2
# The catch-up leaves about a gigabyte of dirty pages (log, master dataset, segments, the view
# store's WAL) that the kernel writes back over the next 30 s: flush them first, so that what
# is measured is serving, not the write-back of the catch-up. Then each query gets a 5 s warm-up
# run (its segment row groups are read and decoded once), reported apart from the measurement.
sync
sleep 5
hour="$base/v1/bars/AAPL?interval=1m&from=2013-03-01T20:00:00Z"
daily="$base/v1/bars/AAPL?interval=1d"
wrk -t2 -c32 -d5s --latency "$hour" >"$work/hour-warmup.txt"
wrk -t2 -c32 -d15s --latency "$hour" >"$work/hour.txt"
wrk -t2 -c32 -d5s --latency "$daily" >"$work/daily-warmup.txt"
wrk -t2 -c32 -d15s --latency "$daily" >"$work/daily.txt"
bars_hour=$(curl -s "$hour" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["bars"]))')
bytes_daily=$(curl -s "$daily" | wc -c)
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
python3 - "$work" "$bars_hour" "$bytes_daily" "$rss_kb" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" <<'PY'
import json, re, sys
work, bars_hour, bytes_daily, rss_kb, commit = sys.argv[1:]
def parse(name):
    text = open(f"{work}/{name}.txt").read()
    def ms(v, unit):
        return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    lat = {p: ms(*re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", text).groups()) for p in ("50", "99")}
    mx = re.search(r"Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", text)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    timeouts = re.search(r"timeout (\d+)", text)
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        "p50_ms": lat["50"], "p99_ms": lat["99"], "max_ms": ms(*mx.groups()),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "timeouts": int(timeouts.group(1)) if timeouts else 0,
    }
print(json.dumps({
    "commit": commit, "tool": "wrk -t2 -c32 -d15s after a 5 s warm-up (reported as warmup_5s) and a sync, loopback, same 2-core machine",
    "last_hour_1m": dict(parse("hour"), bars=int(bars_hour), warmup_5s=parse("hour-warmup")),
    "thirteen_years_1d": dict(parse("daily"), bytes=int(bytes_daily), warmup_5s=parse("daily-warmup")),
    "server_rss_bytes_after": int(rss_kb) * 1024,
}, indent=2))
PY
