#!/usr/bin/env bash
# The batch-layer anchor of DESIGN §11, in one run on one machine: `prism bench` over the
# comparison workload (JSONL in, the archiver writes Parquet, the batch job builds segments)
# and DuckDB's SQL over the same events in Parquet; then the two results row for row.
#
#   bench/compare-duckdb.sh DIR [PRISM_BIN] [REPORT.json]
#
# DIR is a workload made by the shared generator (`gen_quotes.py N --out …` writes
# DIR/json/quotes.jsonl and DIR/quotes.parquet); PRISM_BIN defaults to target/release/prism.
# Needs python3 with `duckdb` and `pyarrow` (pip, in a venv outside the repo). Prints both
# reports and the comparison (also written to REPORT.json when given, e.g.
# bench/reports/<date>-duckdb-10m.json); exits non-zero when the rows differ.
set -euo pipefail
dir=${1:?usage: bench/compare-duckdb.sh WORKLOAD_DIR [PRISM_BIN]}
prism=${2:-target/release/prism}
report=${3:-}
shared=$(cd "$(dirname "$0")/../../shared/bench" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$prism" bench --workload "$dir/json/quotes.jsonl" --rows-out "$work/prism.csv" > "$work/prism.json"
python3 "$shared/duckdb_batch.py" "$dir/quotes.parquet" "$work/duckdb.parquet" | tee "$work/duckdb.txt"
python3 - "$work" "$report" <<'PY'
import json, sys, decimal
import pyarrow.parquet as pq
work = sys.argv[1]
prism = json.load(open(f"{work}/prism.json"))
duck = json.loads(open(f"{work}/duckdb.txt").read().split("BENCH ", 1)[1])
stage = {s["stage"]: s for s in prism["stages"]}
batch = stage["batch_job"]
ratio = (batch["events"] / batch["seconds"]) / (prism["events"] / duck["job_s"])
comparison = {"prism_batch_events_per_s": round(batch["events_per_second"]),
              "duckdb_events_per_s": round(prism["events"] / duck["job_s"]),
              "batch_ratio_vs_duckdb": round(ratio, 3),
              "prism_speed_layer_events_per_s": round(stage["speed_layer"]["events_per_second"]),
              "prism_peak_rss_bytes": prism["peak_rss_bytes"]}
print(json.dumps(comparison, indent=2))
D = decimal.Decimal
ours = {}
for line in open(f"{work}/prism.csv"):
    f = line.rstrip("\n").split(",")
    ours[(f[0], int(f[1]))] = (D(f[2]), D(f[3]), D(f[4]), D(f[5]), int(f[6]), D(f[7]), int(f[8]))
theirs = {}
for r in pq.read_table(f"{work}/duckdb.parquet").to_pylist():
    q = lambda x: D(str(x)).quantize(D("0.000001"), rounding=decimal.ROUND_HALF_UP)
    theirs[(r["symbol"], int(r["window_start"]))] = (q(r["open"]), q(r["high"]), q(r["low"]), q(r["close"]),
                                                    int(r["volume"]), q(r["vwap"]), int(r["trades"]))
# Every column exact, but vwap: the workload's Parquet prices are DOUBLE, so DuckDB's
# sum(price * size) is a float (503562.6899999999 for an exact 503562.69), and a quotient whose
# 7th decimal is a 5 can land a hair below it and round down; Prism sums and divides exactly
# (half away from zero). vwap may therefore differ by one unit of the 6th decimal, no more.
def same(a, b):
    if a is None or b is None:
        return a == b
    return a[:5] == b[:5] and a[6] == b[6] and abs(a[5] - b[5]) <= D("0.000001")
diff = [k for k in set(ours) | set(theirs) if not same(ours.get(k), theirs.get(k))]
vwap_ulp = sum(1 for k in set(ours) & set(theirs) if ours[k][5] != theirs[k][5] and same(ours[k], theirs[k]))
print(f"rows: prism {len(ours)}, duckdb {len(theirs)}, differing {len(diff)} "
      f"(and {vwap_ulp} vwaps one unit of the 6th decimal apart: DuckDB's float sums)")
if sys.argv[2]:
    comparison.update(rows_prism=len(ours), rows_duckdb=len(theirs), rows_differing=len(diff), vwaps_one_unit_apart=vwap_ulp)
    with open(sys.argv[2], "w") as f:
        json.dump({"comparison": comparison, "prism": prism, "duckdb": duck}, f, indent=2)
        f.write("\n")
for k in sorted(diff)[:5]:
    print("  ", k, ours.get(k), theirs.get(k))
sys.exit(1 if diff else 0)
PY
