#!/usr/bin/env bash
# Step 3 of the lab (docs/lab/03-late-trade.md): event time, the watermark and a late trade.
# Needs a running Prism at $PRISM (e.g. http://127.0.0.1:8080, started with --no-feed).
set -euo pipefail

post() { # NDJSON trades → the HTTP status
  curl -s -o /dev/null -w '%{http_code}\n' -X POST "$PRISM/v1/events/quotes" \
    -H 'content-type: application/x-ndjson' --data-binary "$1"
}
bars() { # LATE's 1-minute bars once the speed layer has folded $1 trades
  for _ in $(seq 1 100); do
    answer=$(curl -s "$PRISM/v1/bars/LATE?interval=1m")
    if python3 -c 'import json,sys; a=json.loads(sys.argv[1]); sys.exit(sum(b["trades"] for b in a.get("bars", [])) != int(sys.argv[2]))' "$answer" "$1"; then break; fi
    sleep 0.1
  done
  python3 -c 'import json,sys
a = json.loads(sys.argv[1])
print("watermark", a["realtime_watermark"])
for b in a["bars"]:
    print(b["start"], "open", b["open"], "high", b["high"], "low", b["low"], "close", b["close"], "volume", b["volume"], "trades", b["trades"], b["layer"])' "$answer"
}

echo "## two trades, a minute apart"
post '{"symbol":"LATE","ts":"2024-01-02T14:30:05Z","price":"10.00","size":100}
{"symbol":"LATE","ts":"2024-01-02T14:31:10Z","price":"10.50","size":50}'
bars 2

echo "## a trade of 14:30:30 arrives after the 14:31:10 one: behind the watermark, late"
post '{"symbol":"LATE","ts":"2024-01-02T14:30:30Z","price":"10.25","size":200}'
bars 3
curl -s "$PRISM/metrics" | grep '^prism_speed_late_events_total{view="ohlcv"}'
