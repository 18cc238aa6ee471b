//! The CDC source against the real server (`PRISM_DATABASE_URL`, `wal_level=logical`): a
//! snapshot of the rows before the start (`r`), then inserts, updates (one changing the primary
//! key), a delete, a multi-table transaction, a rolled-back transaction (absent), a truncate;
//! then a restart that loses nothing and picks up what was committed while it was down.

use std::sync::Arc;
use std::time::Duration;

use prism_core::log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use prism_core::log::EventLog;
use prism_ingest::cdc::{run_cdc, CdcConfig, CdcStats};
use serde_json::{json, Value};
use sqlx::{Connection, Executor};
use tokio_util::sync::CancellationToken;

/// Every record of `topic` as (key, envelope), ordered by LSN.
async fn records(log: &EmbeddedLog, topic: &str) -> Vec<(Value, Value)> {
    let mut out = Vec::new();
    let Ok(ends) = log.end_offsets(topic).await else { return out };
    for p in 0..ends.len() {
        for r in log.read(topic, p as i32, 0, 100_000, Duration::ZERO).await.expect("read") {
            // Every envelope has the documented shape (the type /v1/schemas publishes).
            serde_json::from_slice::<prism_core::event::CdcEnvelope>(&r.value).expect("a CdcEnvelope");
            out.push((serde_json::from_slice(&r.key).expect("key json"), serde_json::from_slice(&r.value).expect("value json")));
        }
    }
    out.sort_by_key(|(k, v)| (v["source"]["lsn"].as_u64().expect("lsn"), k.to_string()));
    out
}

/// Waits (up to 30 s) until `topic` holds a record `done` accepts; returns its records.
async fn wait_for(log: &EmbeddedLog, topic: &str, done: impl Fn(&(Value, Value)) -> bool) -> Vec<(Value, Value)> {
    for _ in 0..300 {
        let all = records(log, topic).await;
        if all.iter().any(&done) {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{topic}: the expected record did not arrive within 30 s: {:?}", records(log, topic).await);
}

fn ops(all: &[(Value, Value)]) -> Vec<(String, Value)> {
    all.iter().map(|(k, v)| (v["op"].as_str().expect("op").to_string(), k.clone())).collect()
}

#[tokio::test]
async fn snapshot_stream_and_restart() {
    let url = std::env::var("PRISM_DATABASE_URL").expect("PRISM_DATABASE_URL is not set: run ./infra/test.sh, which starts PostgreSQL");
    let schema = format!("cdc_{}", std::process::id());
    let (slot, publication) = (format!("{schema}_slot"), format!("{schema}_pub"));
    let mut sql = sqlx::PgConnection::connect(&url).await.expect("connect");
    for statement in [
        format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        format!("CREATE SCHEMA {schema}"),
        format!("CREATE TABLE {schema}.items (id integer PRIMARY KEY, price numeric, at timestamptz, doc jsonb, tags integer[], note text)"),
        format!("CREATE TABLE {schema}.orders (id bigint PRIMARY KEY, item integer, qty integer)"),
        format!("ALTER TABLE {schema}.orders REPLICA IDENTITY FULL"),
        format!("INSERT INTO {schema}.items VALUES (1, 12345678901234567890.123, '2024-01-02 03:04:05.5+02', '{{\"a\": [1, null]}}', '{{1,NULL,3}}', 'one'), (2, NULL, NULL, NULL, NULL, NULL)"),
        format!("INSERT INTO {schema}.orders VALUES (1, 1, 5)"),
    ] {
        sql.execute(statement.as_str()).await.expect(&statement);
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(EmbeddedLog::open(dir.path().join("log"), EmbeddedLogConfig::default()).expect("log"));
    let config = CdcConfig {
        database_url: url.clone(),
        slot: slot.clone(),
        publication: publication.clone(),
        schemas: vec![schema.clone()],
        partitions: 2,
    };
    let (items, orders) = (format!("prism.cdc.prism.{schema}.items"), format!("prism.cdc.prism.{schema}.orders"));
    let start = |cancel: CancellationToken| tokio::spawn(run_cdc(config.clone(), log.clone(), cancel));

    // Run 1: the snapshot.
    let cancel = CancellationToken::new();
    let run = start(cancel.clone());
    let snap = wait_for(&log, &items, |(k, _)| k == &json!({"id": 2})).await;
    assert_eq!(snap.len(), 2);
    let (_, one) = snap.iter().find(|(k, _)| k == &json!({"id": 1})).expect("row 1");
    assert_eq!(one["op"], "r");
    assert_eq!(one["before"], Value::Null);
    assert_eq!(
        one["after"],
        json!({"id": 1, "price": "12345678901234567890.123", "at": "2024-01-02T01:04:05.500Z", "doc": {"a": [1, null]}, "tags": [1, null, 3], "note": "one"})
    );
    assert_eq!(one["source"]["snapshot"], true);
    assert_eq!((one["source"]["connector"].clone(), one["source"]["db"].clone()), (json!("postgresql"), json!("prism")));
    assert_eq!((one["source"]["schema"].clone(), one["source"]["table"].clone()), (json!(schema), json!("items")));
    assert!(one["source"]["lsn"].as_u64().expect("lsn") > 0);
    let (_, two) = snap.iter().find(|(k, _)| k == &json!({"id": 2})).expect("row 2");
    assert_eq!(two["after"], json!({"id": 2, "price": null, "at": null, "doc": null, "tags": null, "note": null}));
    let snap_orders = wait_for(&log, &orders, |_| true).await;
    assert_eq!(ops(&snap_orders), [("r".to_string(), json!({"id": 1}))]);

    // The stream.
    for statement in [
        format!("INSERT INTO {schema}.items VALUES (3, 1.50, '2024-05-06 07:08:09+00', '[true]', '{{}}', 'three')"),
        format!("UPDATE {schema}.items SET price = 2.25 WHERE id = 1"),
        format!("UPDATE {schema}.items SET id = 20 WHERE id = 2"),
        format!("DELETE FROM {schema}.items WHERE id = 3"),
        format!("BEGIN; INSERT INTO {schema}.orders VALUES (2, 20, 1); UPDATE {schema}.items SET note = 'both' WHERE id = 1; COMMIT"),
        format!("BEGIN; INSERT INTO {schema}.items VALUES (99, 9, NULL, NULL, NULL, 'never'); ROLLBACK"),
        format!("UPDATE {schema}.orders SET qty = 6 WHERE id = 1"),
        format!("TRUNCATE {schema}.orders"),
    ] {
        sql.execute(statement.as_str()).await.expect(&statement);
    }
    let streamed_orders = wait_for(&log, &orders, |(_, v)| v["op"] == "t").await;
    let streamed = wait_for(&log, &items, |(_, v)| v["after"]["note"] == "both").await;
    assert_eq!(
        ops(&streamed),
        [
            ("r", json!({"id": 1})),
            ("r", json!({"id": 2})),
            ("c", json!({"id": 3})),
            ("u", json!({"id": 1})),
            ("u", json!({"id": 20})),
            ("d", json!({"id": 3})),
            ("u", json!({"id": 1}))
        ]
        .map(|(o, k)| (o.to_string(), k))
    );
    let inserted = &streamed[2].1;
    assert_eq!(
        inserted["after"],
        json!({"id": 3, "price": "1.50", "at": "2024-05-06T07:08:09Z", "doc": [true], "tags": [], "note": "three"})
    );
    assert_eq!((inserted["before"].clone(), inserted["source"]["snapshot"].clone()), (Value::Null, json!(false)));
    assert!(inserted["source"]["txId"].as_u64().is_some() && inserted["source"]["ts_ms"].as_i64().expect("ts") > 1_700_000_000_000);
    // The first change may start right at the consistent point.
    assert!(inserted["source"]["lsn"].as_u64() >= streamed[0].1["source"]["lsn"].as_u64(), "not before the consistent point");
    assert_eq!(streamed[3].1["before"], Value::Null, "no old row under DEFAULT when the key did not change");
    assert_eq!(streamed[3].1["after"]["price"], "2.25");
    assert_eq!((streamed[4].1["before"].clone(), streamed[4].1["after"]["id"].clone()), (json!({"id": 2}), json!(20)));
    assert_eq!((streamed[5].1["before"].clone(), streamed[5].1["after"].clone()), (json!({"id": 3}), Value::Null));
    assert!(!streamed.iter().any(|(k, _)| k == &json!({"id": 99})), "a rolled-back transaction never appears");
    assert_eq!(
        ops(&streamed_orders),
        [("r", json!({"id": 1})), ("c", json!({"id": 2})), ("u", json!({"id": 1})), ("t", json!({}))].map(|(o, k)| (o.to_string(), k))
    );
    let multi = &streamed_orders[1].1;
    assert_eq!(multi["source"]["txId"], streamed[6].1["source"]["txId"], "one transaction over two tables");
    assert_eq!(multi["source"]["ts_ms"], streamed[6].1["source"]["ts_ms"]);
    let full = &streamed_orders[2].1;
    assert_eq!(
        (full["before"].clone(), full["after"].clone()),
        (json!({"id": 1, "item": 1, "qty": 5}), json!({"id": 1, "item": 1, "qty": 6}))
    );
    assert_eq!((streamed_orders[3].1["before"].clone(), streamed_orders[3].1["after"].clone()), (Value::Null, Value::Null));

    cancel.cancel();
    let stats: CdcStats = run.await.expect("join").expect("run 1");
    assert_eq!((stats.snapshot_rows, stats.changes), (3, 8));

    // While it is down.
    for statement in
        [format!("INSERT INTO {schema}.items VALUES (4, 4, NULL, NULL, NULL, 'down')"), format!("DELETE FROM {schema}.items WHERE id = 1")]
    {
        sql.execute(statement.as_str()).await.expect(&statement);
    }
    // Run 2: no new snapshot, the changes made while down, nothing repeated.
    let cancel = CancellationToken::new();
    let run = start(cancel.clone());
    let after = wait_for(&log, &items, |(k, v)| v["op"] == "d" && k == &json!({"id": 1})).await;
    let more: Vec<(String, Value)> = ops(&after).split_off(streamed.len());
    assert_eq!(more, [("c", json!({"id": 4})), ("d", json!({"id": 1}))].map(|(o, k)| (o.to_string(), k)));
    assert_eq!(after[..streamed.len()], streamed[..], "nothing before the restart is appended again");
    cancel.cancel();
    let stats = run.await.expect("join").expect("run 2");
    assert_eq!((stats.snapshot_rows, stats.changes, stats.transactions), (0, 2, 2));
    assert_eq!(records(&log, &orders).await.len(), 4);

    // Clean up: the slot once its walsender exited, the publication, the schema.
    for _ in 0..100 {
        let active: Option<bool> = sqlx::query_scalar("SELECT active FROM pg_replication_slots WHERE slot_name = $1")
            .bind(&slot)
            .fetch_optional(&mut sql)
            .await
            .expect("slot");
        if active != Some(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sqlx::query("SELECT pg_drop_replication_slot($1)").bind(&slot).execute(&mut sql).await.expect("drop slot");
    sql.execute(format!("DROP PUBLICATION {publication}").as_str()).await.expect("drop publication");
    sql.execute(format!("DROP SCHEMA {schema} CASCADE").as_str()).await.expect("drop schema");
}
