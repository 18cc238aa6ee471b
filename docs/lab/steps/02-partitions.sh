#!/usr/bin/env bash
# Step 2 of the lab (docs/lab/02-partitions.md): keys, partitions and skew.
# Starts its own Prism (on a free port, data in $LAB_WORK/lab02): 4 partitions of prism.quotes,
# fed the whole lab at 4 trades per day and symbol; stops it on exit.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"

# Kafka's default partitioner for a record with a key, in Python: the Java producer's
# BuiltInPartitioner.partitionForKey = Utils.toPositive(Utils.murmur2(key)) % partitions
# (org.apache.kafka.common.utils.Utils; toPositive(n) = n & 0x7fffffff).
cat > "$LAB_WORK/kafka_partitioner.py" <<'EOF'
import sys

def murmur2(data: bytes) -> int:
    """Kafka's Utils.murmur2: 32-bit MurmurHash2 with seed 0x9747b28c, as a Java int."""
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    h = 0x9747B28C ^ len(data)
    whole = len(data) // 4 * 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i:i + 4], "little") * m & mask
        k ^= k >> r
        h = (h * m & mask) ^ (k * m & mask)
    tail = data[whole:]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if len(tail) >= 1:
        h = (h ^ tail[0]) * m & mask
    h ^= h >> 13
    h = h * m & mask
    h ^= h >> 15
    return h - (1 << 32) if h >= 1 << 31 else h

def partition(key: str, partitions: int) -> int:
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions

# Kafka's own test vectors (UtilsTest.testMurmur2).
assert [murmur2(s.encode()) for s in ("21", "foobar", "a-little-bit-long-string")] == [-973932308, -790332482, -985981536]

if __name__ == "__main__":
    n = int(sys.argv[1])
    for key in sys.argv[2:]:
        print(f"{key}: murmur2 {murmur2(key.encode())}, partition {partition(key, n)} of {n}")
EOF
export PYTHONPATH=$LAB_WORK

echo "## the prediction: Kafka's default partitioner, key = the symbol, 4 partitions"
python3 "$LAB_WORK/kafka_partitioner.py" 4 AAPL IBM MSFT GOOG FB

trap prism_stop EXIT
prism_start lab02 --partitions 4 --feed-trades-per-day 4

status() { curl -sf "$PRISM/v1/status"; }
ends() { status | jq_py '" ".join(str(p["log_end_offset"]) for p in a["partitions"] if p["topic"] == "prism.quotes")'; }
feed_done() { status | jq_py 'len(a["feeds"]) == 1 and a["feeds"][0]["done"]' | grep -qx True; }
# What the speed layer's consumer of each partition has left to read (its lag), once a second on
# stderr (it depends on timing), until it has read every partition to its end.
follow_speed_layer() {
  local lags
  for _ in $(seq 1 120); do
    lags=$(status | jq_py '" ".join(str(c["lag"]) for p in a["partitions"] for c in p["consumers"] if c["consumer"].startswith("speed-layer"))')
    echo "speed layer lag per partition: $lags" >&2
    if [ "$lags" = "0 0 0 0" ]; then echo "speed layer: every partition read to its end"; return 0; fi
    sleep 1
  done
  echo "the speed layer did not catch up in 120 s" >&2; return 1
}

echo "## the whole lab through the feed: events per partition, predicted from the CSV and in Prism's log"
wait_until 120 feed_done
python3 - "$LAB_ROOT/data/stocks-daily-2000-2013.csv.gz" "$(ends)" <<'EOF'
import csv, gzip, sys
from kafka_partitioner import partition
predicted = [0, 0, 0, 0]
for row in csv.DictReader(gzip.open(sys.argv[1], "rt")):
    predicted[partition(row["Ticker"], 4)] += min(4, int(row["Volume"]))  # 4 trades per day and symbol
log = [int(e) for e in sys.argv[2].split()]
for p in range(4):
    print(f"partition {p}: predicted {predicted[p]}, log end offset {log[p]}, {100 * log[p] / sum(log):.1f} % of the events"
          + ("" if predicted[p] == log[p] else "  MISMATCH"))
EOF
follow_speed_layer

echo "## one trade per symbol: the partition in Prism's answer, and whose end offset grew"
for symbol in AAPL IBM MSFT GOOG FB; do
  before=$(ends)
  answer=$(curl -sf -X POST "$PRISM/v1/events/quotes" \
    --data-binary "{\"symbol\":\"$symbol\",\"ts\":\"2013-03-04T14:30:00Z\",\"price\":\"100.00\",\"size\":100}")
  python3 - "$symbol" "$answer" "$before" "$(ends)" <<'EOF'
import json, sys
from kafka_partitioner import partition
symbol, answer, before, after = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()
grew = [p for p in range(len(after)) if after[p] != before[p]]
said = answer["offsets"][0]["partition"]
print(f"{symbol}: predicted {partition(symbol, 4)}, answer {answer['topic']} partition {said},",
      f"end offset grew on partitions {grew}" + ("" if grew == [said] == [partition(symbol, 4)] else "  MISMATCH"))
EOF
done

echo "## a hot key: 23400 AAPL trades in one request (one a second, 2013-03-04 14:30 to 21:00)"
before=$(ends)
python3 -c '
for s in range(23400):
    print(f"{{\"symbol\":\"AAPL\",\"ts\":{1362407400000 + 1000 * s},\"price\":\"{420 + s % 100 / 100:.2f}\",\"size\":10}}")' |
  curl -sf -X POST "$PRISM/v1/events/quotes" --data-binary @- | jq_py '"accepted %d" % a["accepted"]'
python3 -c 'import sys
for p, (b, a) in enumerate(zip(sys.argv[1].split(), sys.argv[2].split())):
    print(f"partition {p}: +{int(a) - int(b)} events")' "$before" "$(ends)"
follow_speed_layer
curl -sf "$PRISM/v1/bars/AAPL?interval=1d&from=2013-03-04" | jq_py '"AAPL on 2013-03-04: %d trades in its daily bar" % a["bars"][0]["trades"]'

echo "## the same five keys over 1 to 8 partitions: the busiest partition's share of the lab (prediction)"
python3 - "$LAB_ROOT/data/stocks-daily-2000-2013.csv.gz" <<'EOF'
import collections, csv, gzip, sys
from kafka_partitioner import partition
days = collections.Counter(row["Ticker"] for row in csv.DictReader(gzip.open(sys.argv[1], "rt")))
for n in range(1, 9):
    load = [sum(d for t, d in days.items() if partition(t, n) == p) for p in range(n)]
    where = " ".join(f"{t}:{partition(t, n)}" for t in ("AAPL", "IBM", "MSFT", "GOOG", "FB"))
    print(f"{n} partition{'s' if n > 1 else ''}: {where}  idle {load.count(0)}, busiest {100 * max(load) / sum(load):.1f} %")
EOF
