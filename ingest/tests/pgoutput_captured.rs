//! The `pgoutput` decoder on bytes a real PostgreSQL produced: a publication and a logical slot
//! on the test server (`PRISM_DATABASE_URL`, `wal_level=logical`, started by `infra/test.sh`;
//! without it this test fails), changes made in SQL, and the slot's binary changes read with
//! `pg_logical_slot_get_binary_changes` — the same messages a replication connection streams.

use prism_ingest::cdc_value::to_json;
use prism_ingest::pgoutput::{decode, Column, Message, OldTuple};
use serde_json::json;
use sqlx::{Connection, Executor, PgConnection, Row};

async fn fresh_database(url: &str, name: &str) -> String {
    let mut admin = PgConnection::connect(url).await.expect("connect to the test PostgreSQL (PRISM_DATABASE_URL)");
    admin.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await.expect("drop");
    admin.execute(format!("CREATE DATABASE {name}").as_str()).await.expect("create");
    let (base, _) = url.rsplit_once('/').expect("a database in the URL");
    format!("{base}/{name}")
}

fn text(c: &Column) -> Option<&str> {
    match c {
        Column::Text(t) => Some(t),
        _ => None,
    }
}

#[tokio::test]
async fn decodes_what_postgres_sends() {
    let url = std::env::var("PRISM_DATABASE_URL").expect("PRISM_DATABASE_URL: run the tests through ./infra/test.sh");
    let db = format!("prism_pgoutput_{}", std::process::id());
    let mut c = PgConnection::connect(&fresh_database(&url, &db).await).await.expect("connect");
    c.execute(
        "CREATE TABLE flights (id int PRIMARY KEY, dest text, dep timestamptz, delay numeric(6,1), tags text[], extra jsonb, note text);
         ALTER TABLE flights ALTER COLUMN note SET STORAGE EXTERNAL;
         CREATE TABLE gates (code text PRIMARY KEY);
         CREATE PUBLICATION prism_pub FOR TABLE flights, gates;",
    )
    .await
    .expect("schema");
    sqlx::query("SELECT pg_create_logical_replication_slot('prism_slot', 'pgoutput')").execute(&mut c).await.expect("slot");
    let long_note = "x".repeat(10_000);
    // Each statement its own transaction (one simple query with several runs them in one).
    let statements = [
        format!(
            "BEGIN;
             INSERT INTO flights VALUES (1, 'IAH', '2013-01-01 05:15:00+00', -2.5, ARRAY['a','b'], '{{\"k\": 1}}', '{long_note}');
             INSERT INTO gates VALUES ('A1');
             COMMIT;"
        ),
        "UPDATE flights SET dest = 'ORD' WHERE id = 1".to_string(),
        "UPDATE flights SET id = 2 WHERE id = 1".to_string(),
        "DELETE FROM flights WHERE id = 2".to_string(),
        "BEGIN; INSERT INTO gates VALUES ('B2'); ROLLBACK;".to_string(),
        "TRUNCATE gates".to_string(),
    ];
    for statement in &statements {
        c.execute(statement.as_str()).await.expect("a change");
    }
    let rows = sqlx::query(
        "SELECT data FROM pg_logical_slot_get_binary_changes('prism_slot', NULL, NULL, 'proto_version', '1', 'publication_names', 'prism_pub')",
    )
    .fetch_all(&mut c)
    .await
    .expect("binary changes");
    let messages: Vec<Message> = rows.iter().map(|r| decode(&r.get::<Vec<u8>, _>(0)).expect("every message decodes")).collect();
    sqlx::query("SELECT pg_drop_replication_slot('prism_slot')").execute(&mut c).await.expect("drop slot");
    drop(c);

    let flights = messages
        .iter()
        .find_map(|m| match m {
            Message::Relation(r) if r.name == "flights" => Some(r.clone()),
            _ => None,
        })
        .expect("the flights relation");
    assert_eq!((flights.namespace.as_str(), flights.replica_identity), ("public", 'd'));
    assert_eq!(flights.columns.iter().map(|c| (c.name.as_str(), c.key)).collect::<Vec<_>>()[..2], [("id", true), ("dest", false)]);
    let changes: Vec<&Message> = messages.iter().filter(|m| !matches!(m, Message::Relation(_) | Message::Type { .. })).collect();
    let kinds: String = changes
        .iter()
        .map(|m| match m {
            Message::Begin { .. } => 'B',
            Message::Commit { .. } => 'C',
            Message::Insert { .. } => 'I',
            Message::Update { .. } => 'U',
            Message::Delete { .. } => 'D',
            Message::Truncate { .. } => 'T',
            _ => '?',
        })
        .collect();
    // Two inserts in one transaction, two updates, a delete, a truncate; the rolled-back
    // insert is never sent.
    assert_eq!(kinds, "BIICBUCBUCBDCBTC");
    let Message::Insert { new, .. } = changes[1] else { panic!("an insert") };
    assert_eq!(
        new.iter().map(text).collect::<Vec<_>>(),
        [Some("1"), Some("IAH"), Some("2013-01-01 05:15:00+00"), Some("-2.5"), Some("{a,b}"), Some("{\"k\": 1}"), Some(long_note.as_str())]
    );
    // The envelope's JSON values, by the relation's column types.
    let values: Vec<Option<serde_json::Value>> = flights.columns.iter().zip(new).map(|(c, v)| to_json(c.type_oid, v)).collect();
    assert_eq!(
        values[..6],
        [
            Some(json!(1)),
            Some(json!("IAH")),
            Some(json!("2013-01-01T05:15:00Z")),
            Some(json!("-2.5")),
            Some(json!(["a", "b"])),
            Some(json!({"k": 1}))
        ]
    );
    // Unchanged TOASTed note under REPLICA IDENTITY DEFAULT: not sent.
    let Message::Update { old: None, new, .. } = changes[5] else { panic!("an update without an old key: {:?}", changes[5]) };
    assert_eq!((text(&new[1]), &new[6]), (Some("ORD"), &Column::UnchangedToast));
    assert_eq!(to_json(flights.columns[6].type_oid, &new[6]), None, "left out of the envelope's after");
    // A primary-key change carries the old key.
    let Message::Update { old: Some(OldTuple::Key(old)), new, .. } = changes[8] else { panic!("a key change: {:?}", changes[8]) };
    assert_eq!((text(&old[0]), &old[1], text(&new[0])), (Some("1"), &Column::Null, Some("2")));
    let Message::Delete { old: OldTuple::Key(old), .. } = changes[11] else { panic!("a delete: {:?}", changes[11]) };
    assert_eq!(text(&old[0]), Some("2"));
    let Message::Truncate { relations, cascade, .. } = changes[14] else { panic!("a truncate: {:?}", changes[14]) };
    assert_eq!((relations.len(), *cascade), (1, false));
    let (Message::Begin { final_lsn, .. }, Message::Commit { commit_lsn, end_lsn, .. }) = (changes[0], changes[3]) else {
        panic!("begin, commit")
    };
    assert!(final_lsn == commit_lsn && end_lsn > commit_lsn);

    let mut admin = PgConnection::connect(&url).await.expect("connect");
    admin.execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str()).await.expect("drop");
}
