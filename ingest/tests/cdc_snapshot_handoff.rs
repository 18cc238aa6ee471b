//! The CDC source's foundation against the real server (`PRISM_DATABASE_URL`, started by
//! `./infra/test.sh` with `wal_level=logical`): a replication slot created with
//! `SNAPSHOT 'export'` on a `pgwire-replication` session, the snapshot imported in a
//! `REPEATABLE READ` transaction (`SET TRANSACTION SNAPSHOT`), then streaming from the slot and
//! decoding with `prism_formats::pgoutput`. Rows committed before the slot are exactly the
//! snapshot's; rows committed after it (while the snapshot is read) are exactly the stream's —
//! the hand-off loses and repeats nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use pgwire_replication::{ReplicationClient, ReplicationConfig, ReplicationEvent};
use prism_ingest::pgoutput::{decode, Column, Message};
use sqlx::{Connection, Executor, Row};

#[tokio::test]
async fn snapshot_then_stream_hands_off_without_loss_or_repeats() {
    let url = std::env::var("PRISM_DATABASE_URL").expect("PRISM_DATABASE_URL is not set: run ./infra/test.sh, which starts PostgreSQL");
    let suffix = std::process::id();
    let (table, slot, publication) = (format!("handoff_{suffix}"), format!("prism_handoff_{suffix}"), format!("prism_handoff_{suffix}"));
    let mut sql = sqlx::PgConnection::connect(&url).await.expect("connect");
    sql.execute(format!("CREATE TABLE {table} (id integer PRIMARY KEY, note text)").as_str()).await.expect("table");
    sql.execute(format!("INSERT INTO {table} SELECT g, 'before ' || g FROM generate_series(1, 100) g").as_str()).await.expect("rows");
    sql.execute(format!("CREATE PUBLICATION {publication} FOR TABLE {table}").as_str()).await.expect("publication");

    // postgres://user@host:port/db
    let rest = url.strip_prefix("postgres://").expect("a postgres URL");
    let (user, rest) = rest.split_once('@').expect("user@");
    let (host_port, database) = rest.split_once('/').expect("/db");
    let (host, port) = host_port.split_once(':').expect("host:port");
    let config = ReplicationConfig::new(host, user, "", database, slot.as_str(), publication.as_str())
        .with_port(port.parse().expect("port"))
        .with_status_interval(Duration::from_millis(200));
    let mut repl = ReplicationClient::connect_gated(config).await.expect("replication session");
    let created = repl
        .simple_query(&format!("CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput (SNAPSHOT 'export')"))
        .await
        .expect("create the slot with an exported snapshot");
    // slot_name, consistent_point, snapshot_name, output_plugin
    let snapshot = String::from_utf8(created[0][2].clone().expect("a snapshot name").to_vec()).expect("utf-8");

    // Rows committed after the slot: the stream's, not the snapshot's.
    sql.execute(format!("INSERT INTO {table} SELECT g, 'after ' || g FROM generate_series(101, 150) g").as_str()).await.expect("rows");
    sql.execute(format!("UPDATE {table} SET note = 'changed' WHERE id = 7").as_str()).await.expect("update");

    let mut reader = sqlx::PgConnection::connect(&url).await.expect("connect");
    let mut tx = reader.begin().await.expect("begin");
    tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").await.expect("isolation");
    tx.execute(format!("SET TRANSACTION SNAPSHOT '{snapshot}'").as_str()).await.expect("import the snapshot");
    let rows = sqlx::query(&format!("SELECT id, note FROM {table} ORDER BY id")).fetch_all(&mut *tx).await.expect("snapshot rows");
    tx.commit().await.expect("end the snapshot");
    let snapshot_ids: Vec<i32> = rows.iter().map(|r| r.get::<i32, _>(0)).collect();
    assert_eq!(snapshot_ids, (1..=100).collect::<Vec<_>>(), "the snapshot holds exactly the rows before the slot");
    assert!(rows.iter().all(|r| r.get::<String, _>(1).starts_with("before")), "and their values before the slot");

    // The stream from the slot's consistent point: exactly the later changes, decoded.
    repl.start().await.expect("START_REPLICATION");
    let mut inserted = BTreeSet::new();
    let mut updated = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while inserted.len() < 50 || updated.is_empty() {
        let event = tokio::time::timeout_at(deadline, repl.recv()).await.expect("changes within 30 s").expect("stream");
        let Some(event) = event else { break };
        if let ReplicationEvent::XLogData { data, wal_end, .. } = event {
            match decode(&data).expect("a pgoutput message") {
                Message::Insert { new, .. } => {
                    let Some(Column::Text(id)) = new.first() else { panic!("an id: {new:?}") };
                    assert!(inserted.insert(id.parse::<i32>().expect("int")), "id {id} streamed twice");
                }
                Message::Update { new, .. } => updated.push(new),
                _ => {}
            }
            repl.update_applied_lsn(wal_end);
        }
    }
    assert_eq!(inserted, (101..=150).collect::<BTreeSet<_>>(), "the stream holds exactly the rows after the slot");
    assert_eq!(updated.len(), 1);
    assert_eq!(updated[0][1], Column::Text("changed".into()));
    repl.shutdown().await.expect("stop streaming");
    // The server releases the slot when its walsender exits, a moment after the session ends.
    for _ in 0..100 {
        let active: bool = sqlx::query_scalar("SELECT active FROM pg_replication_slots WHERE slot_name = $1")
            .bind(&slot)
            .fetch_one(&mut sql)
            .await
            .expect("slot state");
        if !active {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sql.execute(format!("SELECT pg_drop_replication_slot('{slot}')").as_str()).await.expect("drop slot");
    sql.execute(format!("DROP PUBLICATION {publication}").as_str()).await.expect("drop publication");
    sql.execute(format!("DROP TABLE {table}").as_str()).await.expect("drop table");
}
