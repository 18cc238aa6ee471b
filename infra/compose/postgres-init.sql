-- The compose stack's PostgreSQL, first start only (docker-entrypoint-initdb.d): the view store
-- database `prism` exists already (POSTGRES_DB); this adds the lab's live database `flights`, its
-- table (the schema infra/lab/load_flights.py plays into) and the publication `prism ingest-cdc`
-- streams. The server runs with wal_level=logical (see docker-compose.yml).
CREATE DATABASE flights;
\connect flights
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
CREATE PUBLICATION prism_cdc FOR TABLES IN SCHEMA public;
