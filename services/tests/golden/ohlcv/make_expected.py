"""Independent oracle for the ohlcv golden file: reads events.jsonl (one partition, so an
event's offset is its line number) and writes expected.csv with the ohlcv view of DESIGN §4 at
every served interval. Exact decimal arithmetic; open/close by (event time, offset); vwap =
notional / volume rounded half away from zero to 6 decimals. Run: python3 make_expected.py"""
import csv, json
from datetime import datetime, timezone
from decimal import Decimal, ROUND_HALF_UP

INTERVALS = [("1m", 60_000), ("5m", 300_000), ("15m", 900_000), ("1h", 3_600_000), ("1d", 86_400_000)]

def ts_ms(v):
    if isinstance(v, int):
        return v
    return int(datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() * 1000 + 0.5)

events = []
with open("events.jsonl") as f:
    for offset, line in enumerate(f):
        e = json.loads(line, parse_float=Decimal)
        events.append((e["symbol"], ts_ms(e["ts"]), Decimal(str(e["price"])), int(e["size"]), offset))

def iso(ms):
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

rows = []
for name, size in INTERVALS:
    buckets = {}
    for sym, ts, price, qty, off in events:
        buckets.setdefault((sym, ts // size * size), []).append((ts, off, price, qty))
    for (sym, start), trades in sorted(buckets.items()):
        trades.sort()
        volume = sum(t[3] for t in trades)
        notional = sum(t[2] * t[3] for t in trades)
        vwap = (notional / volume).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)
        q = lambda d: str(d.quantize(Decimal("0.000001")))
        rows.append([name, sym, iso(start), q(trades[0][2]), q(max(t[2] for t in trades)),
                     q(min(t[2] for t in trades)), q(trades[-1][2]), volume, q(notional), str(vwap), len(trades)])

with open("expected.csv", "w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(["interval", "symbol", "start", "open", "high", "low", "close", "volume", "notional", "vwap", "trades"])
    w.writerows(rows)
