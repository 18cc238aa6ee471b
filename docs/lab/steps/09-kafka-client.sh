#!/usr/bin/env bash
# Step 9 of the lab (docs/lab/09-kafka-client.md): the event log is a Kafka topic that any
# Kafka client reads — partitions, offsets, keys, values, headers, a consumer group's offsets.
# Needs a Kafka broker at PRISM_KAFKA_BROKERS (default: the compose stack's, 127.0.0.1:9094)
# and Python's confluent-kafka module (librdkafka, the library Prism and kcat use).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
python3 -c 'import confluent_kafka' 2>/dev/null || { echo "no confluent_kafka module: pip install -r docs/lab/requirements.txt" >&2; exit 1; }
export BROKERS=${PRISM_KAFKA_BROKERS:-127.0.0.1:9094}
export RUN="$LAB_WORK/step09" GROUP="lab-09-$(date +%s)-$$" # this run's consumer group
mkdir -p "$RUN"

echo "## prism ingest-api: HTTP in, Kafka out (its view store, for Idempotency-Key, is a SQLite file here)"
port=$(free_port)
"$PRISM_BIN" ingest-api --kafka-brokers "$BROKERS" --database-url "sqlite://$RUN/views.sqlite" \
  --http-addr "127.0.0.1:$port" >>"$RUN.log" 2>&1 &
PRISM_PID=$! PRISM="http://127.0.0.1:$port"
trap prism_stop EXIT
wait_until 60 curl -sf "$PRISM/readyz"

# Where each partition of prism.quotes ends before this step: the broker may hold earlier records
# (the compose stack's feed, an earlier run), so offsets below are shown as `start+n`.
python3 - <<'PY'
import json, os
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": os.environ["BROKERS"], "group.id": os.environ["GROUP"]})
parts = sorted(c.list_topics("prism.quotes", timeout=10).topics["prism.quotes"].partitions)
start = {p: c.get_watermark_offsets(TopicPartition("prism.quotes", p), timeout=10)[1] for p in parts}
json.dump(start, open(os.environ["RUN"] + "/start.json", "w"))
print(f"prism.quotes: {len(parts)} partitions")
c.close()
PY

post() { # $1 = Idempotency-Key, $2 = NDJSON trades → the HTTP status and the replay header
  curl -s -o /dev/null -D "$RUN/headers" -w '%{http_code}\n' -X POST "$PRISM/v1/events/quotes" \
    -H 'content-type: application/x-ndjson' -H "Idempotency-Key: $1" --data-binary "$2"
  grep -i '^idempotent-replayed' "$RUN/headers" | tr -d '\r' || true
}
read_log() { # this step's records on prism.quotes, read back from each partition's start offset
  SHOW=$1 python3 - <<'PY'
import json, os
from confluent_kafka import Consumer, TopicPartition
start = {int(p): o for p, o in json.load(open(os.environ["RUN"] + "/start.json")).items()}
c = Consumer({"bootstrap.servers": os.environ["BROKERS"], "group.id": os.environ["GROUP"], "enable.auto.commit": False})
end = {p: c.get_watermark_offsets(TopicPartition("prism.quotes", p), timeout=10)[1] for p in start}
c.assign([TopicPartition("prism.quotes", p, o) for p, o in start.items() if end[p] > o])
records, left, others = [], sum(end[p] - start[p] for p in start), 0
while left > 0:
    m = c.poll(10)
    if m is None:
        raise SystemExit("no record within 10 s")
    if m.error():
        raise SystemExit(str(m.error()))
    if m.offset() < end[m.partition()]:
        left -= 1
        headers = dict((k, v.decode()) for k, v in m.headers() or [])
        if headers.get("prism.source", "").startswith("http:lab-09"):
            records.append((m.partition(), m.offset() - start[m.partition()], m.key().decode(), m.value().decode(), headers))
        else:
            others += 1 # another producer's record (the compose stack's feed or poller)
for p, n, key, value, headers in sorted(records) if os.environ["SHOW"] == "records" else []:
    print(f"partition {p} offset start+{n} key {key} value {value}")
    print("   headers", " ".join(f"{k}={v}" for k, v in sorted(headers.items())))
print(f"{len(records)} records of this step in the log")
c.close()
PY
}

echo "## six trades of three symbols, one request"
trades='{"symbol":"KAFKA","ts":"2024-01-02T14:30:05Z","price":"10.00","size":100}
{"symbol":"LOG","ts":"2024-01-02T14:30:06Z","price":"20.5","size":10}
{"symbol":"TOPIC","ts":1704205807000,"price":3,"size":7}
{"symbol":"KAFKA","ts":"2024-01-02T14:31:10Z","price":"10.50","size":50}
{"symbol":"LOG","ts":"2024-01-02T14:31:11Z","price":"20.25","size":20}
{"symbol":"KAFKA","ts":"2024-01-02T14:32:00Z","price":"10.25","size":25}'
post lab-09-first "$trades"
read_log records

echo "## the same request again, same Idempotency-Key: answered from the view store, nothing appended"
post lab-09-first "$trades"
read_log count

echo "## a consumer group commits where it is; a new member of the group resumes there"
python3 - <<'PY'
import json, os
from confluent_kafka import Consumer, TopicPartition
start = {int(p): o for p, o in json.load(open(os.environ["RUN"] + "/start.json")).items()}
c = Consumer({"bootstrap.servers": os.environ["BROKERS"], "group.id": os.environ["GROUP"], "enable.auto.commit": False})
end = {p: c.get_watermark_offsets(TopicPartition("prism.quotes", p), timeout=10)[1] for p in start}
# Commit "read up to the end" for every partition, as a consumer does after processing.
c.commit(offsets=[TopicPartition("prism.quotes", p, end[p]) for p in start], asynchronous=False)
for tp in c.committed([TopicPartition("prism.quotes", p) for p in start], timeout=10):
    print(f"group committed: partition {tp.partition} offset start+{tp.offset - start[tp.partition]}")
c.close()
PY
post lab-09-second '{"symbol":"TOPIC","ts":"2024-01-02T14:33:00Z","price":"3.10","size":70}'
python3 - <<'PY'
import json, os
from confluent_kafka import Consumer, TopicPartition, OFFSET_STORED
start = {int(p): o for p, o in json.load(open(os.environ["RUN"] + "/start.json")).items()}
c = Consumer({"bootstrap.servers": os.environ["BROKERS"], "group.id": os.environ["GROUP"], "enable.auto.commit": False})
end = {p: c.get_watermark_offsets(TopicPartition("prism.quotes", p), timeout=10)[1] for p in start}
committed = {tp.partition: tp.offset for tp in c.committed([TopicPartition("prism.quotes", p) for p in start], timeout=10)}
c.assign([TopicPartition("prism.quotes", p, OFFSET_STORED) for p in start]) # from the group's offsets
left = sum(end[p] - committed[p] for p in start)
while left > 0:
    m = c.poll(10)
    if m is None or m.error():
        raise SystemExit(f"no record: {m and m.error()}")
    left -= 1
    if dict(m.headers() or []).get("prism.source") == b"http:lab-09-second":
        print(f"new member read: partition {m.partition()} offset start+{m.offset() - start[m.partition()]} key {m.key().decode()} value {m.value().decode()}")
c.close()
PY
