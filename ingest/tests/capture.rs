//! Capture against a real MariaDB started by the test harness: every column type arrives
//! exactly through the binlog, and the state rebuilt from captured changes equals the source.

use std::collections::BTreeMap;

use tidemark_ingest::source::select_rows;
use tidemark_ingest::{
    Capture, CaptureConfig, CaptureMessage, Scope, Source, SourceConfig, StopAt,
};
use tidemark_schemas::{
    BinlogPosition, ChangeEvent, DateTime, Operation, Row, SourceSchema, TableId, Value,
};
use tidemark_testkit::MariaDb;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Everything capture emits from the oldest binlog to the end of log observed now.
async fn capture_all(url: &str, databases: &[&str]) -> (Vec<ChangeEvent>, Vec<SourceSchema>) {
    let (changes, schemas, _) = capture_from(url, databases, "earliest").await;
    (changes, schemas)
}

/// Everything capture emits from `start` to the end of log observed now, and where it stopped.
async fn capture_from(
    url: &str,
    databases: &[&str],
    start: &str,
) -> (Vec<ChangeEvent>, Vec<SourceSchema>, BinlogPosition) {
    let cfg = SourceConfig {
        url: url.to_string(),
        server_id: 991,
        databases: databases.iter().map(|s| s.to_string()).collect(),
        tables: vec![],
        exclude_tables: vec![],
    };
    let scope = Scope::from_config(&cfg).unwrap();
    let mut source = Source::connect(url)
        .await
        .expect("connect to the test server");
    source
        .check_binlog_settings()
        .await
        .expect("test server has binlog settings");
    let capture_cfg = CaptureConfig {
        start: start.into(),
        ..CaptureConfig::default()
    };
    let mut capture = Capture::new(source, scope, cfg.server_id, capture_cfg);
    let start = capture.resolve_start(None).await.unwrap();
    let end = capture.source().end_of_log().await.unwrap();
    let (tx, mut rx) = mpsc::channel(1024);
    let collector = tokio::spawn(async move {
        let mut changes = Vec::new();
        let mut schemas = Vec::new();
        while let Some(m) = rx.recv().await {
            match m {
                CaptureMessage::Changes(c) => changes.extend(c),
                CaptureMessage::Schema(s) => schemas.push((*s).clone()),
                CaptureMessage::Commit { .. } | CaptureMessage::Checkpoint(_) => {}
            }
        }
        (changes, schemas)
    });
    let reached = capture
        .run(start, StopAt::Position(end), tx, CancellationToken::new())
        .await
        .expect("capture runs to the end of log");
    assert!(reached >= end, "capture stopped at {reached}, before {end}");
    let (changes, schemas) = collector.await.unwrap();
    (changes, schemas, reached)
}

/// Apply changes as the sink would (max version per key) and return live rows by key text.
fn final_state(changes: &[ChangeEvent], table: &TableId) -> BTreeMap<String, Row> {
    let mut state: BTreeMap<String, (i64, Option<Row>)> = BTreeMap::new();
    for c in changes.iter().filter(|c| &c.table == table) {
        let key = c.key.canonical_text();
        let newer = state.get(&key).is_none_or(|(v, _)| c.version > *v);
        if newer {
            state.insert(key, (c.version, c.after.clone()));
        }
    }
    state
        .into_iter()
        .filter_map(|(k, (_, row))| row.map(|r| (k, r)))
        .collect()
}

async fn source_state(url: &str, schema: &SourceSchema) -> BTreeMap<String, Row> {
    let mut source = Source::connect(url).await.unwrap();
    let mut conn = source.new_connection().await.unwrap();
    let _ = &mut source;
    let rows = select_rows(&mut conn, schema, "", mysql_async::Params::Empty)
        .await
        .expect("select source rows");
    rows.into_iter()
        .map(|r| {
            let key = tidemark_ingest::capture::key_of(schema, &r);
            (key.canonical_text(), r)
        })
        .collect()
}

#[allow(clippy::too_many_arguments)] // one argument per DATETIME part reads best here
fn dt(
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    micros: u32,
    fsp: u8,
) -> Value {
    Value::DateTime(DateTime {
        year,
        month,
        day,
        hour,
        minute,
        second,
        micros,
        fsp,
    })
}

fn expected_row_1() -> Vec<(&'static str, Value)> {
    let nines = format!("{}.{}", "9".repeat(35), "9".repeat(30));
    let mut point = 0u32.to_le_bytes().to_vec(); // SRID 0
    point.extend([1u8, 1, 0, 0, 0]); // little-endian WKB point
    point.extend(1f64.to_le_bytes());
    point.extend(2f64.to_le_bytes());
    vec![
        ("id", Value::Int(1)),
        ("ti", Value::Int(127)),
        ("tiu", Value::UInt(255)),
        ("si", Value::Int(32767)),
        ("siu", Value::UInt(65535)),
        ("mi", Value::Int(8_388_607)),
        ("miu", Value::UInt(16_777_215)),
        ("i", Value::Int(2_147_483_647)),
        ("iu", Value::UInt(4_294_967_295)),
        ("bi", Value::Int(i64::MAX)),
        ("biu", Value::UInt(u64::MAX)),
        ("d", Value::Decimal(nines)),
        ("d2", Value::Decimal("-12345678.90".into())),
        ("d0", Value::Decimal("99999".into())),
        ("f", Value::Float(0.1)),
        ("db", Value::Double(f64::MAX)),
        (
            "dt",
            Value::Date {
                year: 9999,
                month: 12,
                day: 31,
            },
        ),
        ("dtm", dt(9999, 12, 31, 23, 59, 59, 0, 0)),
        ("dtm6", dt(2024, 2, 29, 12, 34, 56, 789_012, 6)),
        (
            "ts",
            Value::Timestamp(DateTime {
                year: 2038,
                month: 1,
                day: 19,
                hour: 3,
                minute: 14,
                second: 7,
                micros: 999_999,
                fsp: 6,
            }),
        ),
        (
            "t",
            Value::Time {
                negative: false,
                hours: 838,
                minute: 59,
                second: 59,
                micros: 0,
                fsp: 0,
            },
        ),
        (
            "t3",
            Value::Time {
                negative: true,
                hours: 1,
                minute: 2,
                second: 3,
                micros: 456_000,
                fsp: 3,
            },
        ),
        ("y", Value::Year(2155)),
        ("c", Value::Text("abc".into())),
        ("vc", Value::Text("héllo wörld €😀".into())),
        ("tx", Value::Text("x".repeat(1000))),
        ("lat", Value::Text("café€".into())),
        ("bn", Value::Bytes(b"ab\0\0".to_vec())),
        ("vb", Value::Bytes(vec![0, 0xff, 0])),
        ("bl", Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef, 0])),
        ("e", Value::Enum("large".into())),
        ("st", Value::Set(vec!["a".into(), "d".into()])),
        ("b1", Value::Bit { width: 1, value: 1 }),
        (
            "b64",
            Value::Bit {
                width: 64,
                value: u64::MAX,
            },
        ),
        (
            "j",
            Value::Json(r#"{"k": [1, 2.5, "s", null, true]}"#.into()),
        ),
        ("g", Value::Geometry(point)),
    ]
}

fn expected_row_2() -> Vec<(&'static str, Value)> {
    let nines = format!("-{}.{}", "9".repeat(35), "9".repeat(30));
    vec![
        ("id", Value::Int(2)),
        ("ti", Value::Int(-128)),
        ("tiu", Value::UInt(0)),
        ("si", Value::Int(-32768)),
        ("mi", Value::Int(-8_388_608)),
        ("i", Value::Int(-2_147_483_648)),
        ("bi", Value::Int(i64::MIN)),
        ("biu", Value::UInt(0)),
        ("d", Value::Decimal(nines)),
        ("d2", Value::Decimal("0.00".into())),
        ("d0", Value::Decimal("-99999".into())),
        ("f", Value::Float(-1.5)),
        ("db", Value::Double(-2.2250738585072014e-308)),
        (
            "dt",
            Value::Date {
                year: 0,
                month: 0,
                day: 0,
            },
        ),
        ("dtm", dt(0, 0, 0, 0, 0, 0, 0, 0)),
        ("dtm6", dt(1000, 1, 1, 0, 0, 0, 1, 6)),
        (
            "ts",
            Value::Timestamp(DateTime {
                year: 0,
                month: 0,
                day: 0,
                hour: 0,
                minute: 0,
                second: 0,
                micros: 0,
                fsp: 6,
            }),
        ),
        (
            "t",
            Value::Time {
                negative: true,
                hours: 838,
                minute: 59,
                second: 59,
                micros: 0,
                fsp: 0,
            },
        ),
        (
            "t3",
            Value::Time {
                negative: false,
                hours: 0,
                minute: 0,
                second: 0,
                micros: 1000,
                fsp: 3,
            },
        ),
        ("y", Value::Year(0)),
        ("c", Value::Text(String::new())),
        ("bn", Value::Bytes(vec![0, 0, 0, 0])),
        ("vb", Value::Bytes(vec![])),
        ("e", Value::Enum(String::new())),
        ("st", Value::Set(vec![])),
        ("b1", Value::Bit { width: 1, value: 0 }),
        (
            "b64",
            Value::Bit {
                width: 64,
                value: 0,
            },
        ),
        ("j", Value::Json("[]".into())),
        ("g", Value::Null),
    ]
}

fn assert_row(label: &str, row: &Row, expected: &[(&str, Value)]) {
    for (name, want) in expected {
        let got = row
            .get(name)
            .unwrap_or_else(|| panic!("{label}: column {name} missing from {row:?}"));
        assert_eq!(got, want, "{label}: column {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_column_type_arrives_exactly_through_the_binlog() {
    let db = MariaDb::start();
    db.sql(tidemark_testkit::TYPE_MATRIX_DDL);
    db.sql(tidemark_testkit::TYPE_MATRIX_DML);
    let (changes, schemas) = capture_all(&db.url(), &["tm"]).await;
    let table = TableId::new("tm", "types");
    let schema = schemas
        .iter()
        .find(|s| s.table == table)
        .expect("capture announced the table's schema")
        .clone();

    let ops: Vec<(Operation, String)> = changes
        .iter()
        .map(|c| (c.op, c.key.canonical_text()))
        .collect();
    assert_eq!(
        ops,
        vec![
            (Operation::Insert, r#"{"id":1}"#.to_string()),
            (Operation::Insert, r#"{"id":2}"#.to_string()),
            (Operation::Insert, r#"{"id":3}"#.to_string()),
            (Operation::Update, r#"{"id":1}"#.to_string()),
            // A primary-key change is a delete of the old key and an insert of the new one.
            (Operation::Delete, r#"{"id":2}"#.to_string()),
            (Operation::Insert, r#"{"id":20}"#.to_string()),
            (Operation::Delete, r#"{"id":3}"#.to_string()),
        ],
        "operations in binlog order"
    );
    assert_row(
        "insert of row 1",
        changes[0].after.as_ref().unwrap(),
        &expected_row_1(),
    );
    assert_row(
        "insert of row 2",
        changes[1].after.as_ref().unwrap(),
        &expected_row_2(),
    );
    let all_null = changes[2].after.as_ref().unwrap();
    assert!(
        all_null.iter().skip(1).all(|(_, v)| v.is_null()),
        "row 3 holds only NULLs besides its key: {all_null:?}"
    );
    let updated = changes[3].after.as_ref().unwrap();
    assert_eq!(updated.get("vc"), Some(&Value::Text("updated".into())));
    assert_eq!(updated.get("y"), Some(&Value::Year(1901)));
    assert_eq!(
        changes[4].version, changes[5].version,
        "both halves of a key move carry the version of their row image"
    );
    assert!(changes[5].after.as_ref().unwrap().get("biu") == Some(&Value::UInt(0)));

    // Versions strictly increase across row images, and every change names its position.
    let mut last = i64::MIN;
    for c in changes
        .iter()
        .filter(|c| !(c.op == Operation::Insert && c.key.canonical_text() == r#"{"id":20}"#))
    {
        assert!(c.version > last, "version {} after {last}", c.version);
        last = c.version;
        assert!(c.position.file.starts_with("mysql-bin."), "{}", c.position);
        assert!(c.gtid.is_some(), "MariaDB GTID events are understood");
    }

    // The binlog path and the SELECT path agree value for value.
    let from_binlog = final_state(&changes, &table);
    let from_select = source_state(&db.url(), &schema).await;
    assert_eq!(
        from_binlog, from_select,
        "state rebuilt from the binlog equals the source"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sakila_changes_are_captured_exactly() {
    let db = MariaDb::start();
    db.load_sakila();
    // Live changes on top of the load: updates, deletes, key moves on a composite key.
    db.sql_db(
        "sakila",
        "SET FOREIGN_KEY_CHECKS = 0;
         UPDATE actor SET last_name = 'ÅSTRÖM' WHERE actor_id <= 10;
         UPDATE film_actor SET film_id = 999 WHERE actor_id = 1 AND film_id = 1;
         DELETE FROM payment WHERE payment_id % 7 = 0;
         UPDATE film SET special_features = 'Trailers,Deleted Scenes', rating = 'NC-17' WHERE film_id < 50;
         UPDATE customer SET active = 0, email = NULL WHERE customer_id BETWEEN 100 AND 120;",
    );
    let (changes, schemas) = capture_all(&db.url(), &["sakila"]).await;
    assert!(changes.len() > 47_000, "captured {} changes", changes.len());
    let mut compared = 0;
    for schema in &schemas {
        let from_binlog = final_state(&changes, &schema.table);
        let from_select = source_state(&db.url(), schema).await;
        assert_eq!(
            from_binlog.len(),
            from_select.len(),
            "row count of {}",
            schema.table
        );
        for (key, row) in &from_select {
            assert_eq!(
                from_binlog.get(key),
                Some(row),
                "{} key {key}: binlog image differs from the source row",
                schema.table
            );
        }
        compared += from_select.len();
    }
    assert!(compared > 45_000, "compared {compared} rows");
    for (table, count) in tidemark_testkit::SAKILA_ROW_COUNTS {
        assert!(
            schemas.iter().any(|s| s.table.table == table),
            "sakila.{table} ({count} rows) was captured"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_and_rotation_mid_stream_are_followed() {
    let db = MariaDb::start();
    db.sql(
        "CREATE DATABASE shop CHARACTER SET utf8mb4;
         CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(10));
         INSERT INTO shop.items VALUES (1, 'a');
         FLUSH BINARY LOGS;
         INSERT INTO shop.items VALUES (2, 'b');",
    );
    // Capture up to here first, so the later ALTER is read at its own point in the stream.
    let (before, _, resume_at) = capture_from(&db.url(), &["shop"], "earliest").await;
    assert_eq!(before.len(), 2);
    assert_eq!(before[0].position.file, "mysql-bin.000001");
    assert_eq!(
        before[1].position.file, "mysql-bin.000002",
        "rotation followed"
    );
    assert!(
        before[1].version > before[0].version,
        "a new file orders after the old one"
    );

    db.sql(
        "ALTER TABLE shop.items ADD COLUMN price DECIMAL(6,2) NOT NULL DEFAULT 0;
         INSERT INTO shop.items VALUES (3, 'c', 9.99);",
    );
    // Resume where the first pass stopped, as a restarted pipeline does from its checkpoint.
    let (after, schemas, _) = capture_from(&db.url(), &["shop"], &resume_at.to_string()).await;
    assert_eq!(
        after.len(),
        1,
        "only the change after the resume point: {after:?}"
    );
    let third = &after[0];
    assert_eq!(
        third.after.as_ref().unwrap().get("price"),
        Some(&Value::Decimal("9.99".into())),
        "the added column is decoded after the ALTER"
    );
    assert!(
        schemas.iter().any(|s| s.column("price").is_some()),
        "the new table shape was announced downstream"
    );
}

/// Capture the `shop` database of `db` from the earliest position to the end of log; the error
/// it must stop with, as text.
async fn capture_error(db: &MariaDb, server_id: u32, why: &str) -> String {
    let cfg = SourceConfig {
        url: db.url(),
        server_id,
        databases: vec!["shop".into()],
        tables: vec![],
        exclude_tables: vec![],
    };
    let mut source = Source::connect(&db.url()).await.unwrap();
    source.check_binlog_settings().await.unwrap();
    let capture_cfg = CaptureConfig {
        start: "earliest".into(),
        ..CaptureConfig::default()
    };
    let mut capture = Capture::new(
        source,
        Scope::from_config(&cfg).unwrap(),
        server_id,
        capture_cfg,
    );
    let start = capture.resolve_start(None).await.unwrap();
    let end = capture.source().end_of_log().await.unwrap();
    let (tx, _rx) = mpsc::channel(1024);
    capture
        .run(start, StopAt::Position(end), tx, CancellationToken::new())
        .await
        .expect_err(why)
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_changed_again_later_stops_capture_with_the_table_named() {
    let db = MariaDb::start();
    db.sql(
        "CREATE DATABASE shop CHARACTER SET utf8mb4;
         CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(10));
         INSERT INTO shop.items VALUES (1, 'a');
         ALTER TABLE shop.items DROP COLUMN name;",
    );
    // Reading the old insert now: information_schema already has the later shape.
    let msg = capture_error(
        &db,
        992,
        "decoding with the wrong shape must not pass silently",
    )
    .await;
    assert!(
        msg.contains("shop.items") && msg.contains("tidemark resync"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_image_without_every_column_stops_capture_with_the_table_named() {
    let db = MariaDb::start();
    // The server logs FULL images; one session overrides it, as a careless client can.
    db.sql(
        "CREATE DATABASE shop CHARACTER SET utf8mb4;
         CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(10), qty INT);
         INSERT INTO shop.items VALUES (1, 'a', 1);
         SET SESSION binlog_row_image = 'MINIMAL';
         UPDATE shop.items SET qty = 2 WHERE id = 1;",
    );
    let msg = capture_error(
        &db,
        993,
        "a partial row image must not be applied as if it were whole",
    )
    .await;
    assert!(
        msg.contains("shop.items") && msg.contains("binlog_row_image"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_binlog_settings_name_the_setting_and_the_fix() {
    let db = MariaDb::start_with_args(&["--binlog-format=STATEMENT"]);
    let mut source = Source::connect(&db.url()).await.unwrap();
    let msg = source
        .check_binlog_settings()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("binlog_format=STATEMENT") && msg.contains("binlog_format=ROW"),
        "{msg}"
    );

    let db = MariaDb::start_with_args(&["--binlog-row-metadata=MINIMAL"]);
    let mut source = Source::connect(&db.url()).await.unwrap();
    let msg = source
        .check_binlog_settings()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("binlog_row_metadata=MINIMAL") && msg.contains("binlog_row_metadata=FULL"),
        "{msg}"
    );

    let db = MariaDb::start_with_args(&["--binlog-row-image=MINIMAL"]);
    let mut source = Source::connect(&db.url()).await.unwrap();
    let msg = source
        .check_binlog_settings()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("binlog_row_image") && msg.contains("FULL"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_resume_position_names_the_tables_to_backfill() {
    let db = MariaDb::start();
    db.sql(
        "CREATE DATABASE shop CHARACTER SET utf8mb4;
         CREATE TABLE shop.items (id INT PRIMARY KEY);
         CREATE TABLE shop.orders (id INT PRIMARY KEY);
         FLUSH BINARY LOGS; FLUSH BINARY LOGS;",
    );
    db.purge_binary_logs_to("mysql-bin.000003");
    let cfg = SourceConfig {
        url: db.url(),
        server_id: 993,
        databases: vec!["shop".into()],
        tables: vec![],
        exclude_tables: vec![],
    };
    let source = Source::connect(&db.url()).await.unwrap();
    let identity = source.info.identity;
    let mut capture = Capture::new(
        source,
        Scope::from_config(&cfg).unwrap(),
        993,
        CaptureConfig::default(),
    );
    let checkpoint = tidemark_ingest::CaptureCheckpoint {
        position: "mysql-bin.000001:500".into(),
        server: identity.to_string(),
        gtid: None,
        source_time: None,
    };
    let msg = capture
        .resolve_start(Some(&checkpoint))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("mysql-bin.000001:500")
            && msg.contains("shop.items")
            && msg.contains("shop.orders")
            && msg.contains("backfill"),
        "{msg}"
    );

    let other_server = tidemark_ingest::CaptureCheckpoint {
        position: "mysql-bin.000003:4".into(),
        server: "mariadb-77".into(),
        gtid: None,
        source_time: None,
    };
    let msg = capture
        .resolve_start(Some(&other_server))
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("mariadb-77"), "{msg}");
}

/// A purge can run between the resume check and the binlog request (issue 33): the server's
/// refusal is then the same definite error naming the tables, never a reconnect loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_purged_after_the_resume_check_stops_capture_naming_the_tables() {
    let db = MariaDb::start();
    db.sql(
        "CREATE DATABASE shop CHARACTER SET utf8mb4;
         CREATE TABLE shop.items (id INT PRIMARY KEY);
         INSERT INTO shop.items VALUES (1);
         FLUSH BINARY LOGS;",
    );
    let cfg = SourceConfig {
        url: db.url(),
        server_id: 994,
        databases: vec!["shop".into()],
        tables: vec![],
        exclude_tables: vec![],
    };
    let source = Source::connect(&db.url()).await.unwrap();
    let identity = source.info.identity;
    let mut capture = Capture::new(
        source,
        Scope::from_config(&cfg).unwrap(),
        994,
        CaptureConfig::default(),
    );
    let checkpoint = tidemark_ingest::CaptureCheckpoint {
        position: "mysql-bin.000001:4".into(),
        server: identity.to_string(),
        gtid: None,
        source_time: None,
    };
    let start = capture.resolve_start(Some(&checkpoint)).await.unwrap();
    db.purge_binary_logs_to("mysql-bin.000002");
    let (tx, mut rx) = mpsc::channel(1024);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let run = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        capture.run(start, StopAt::Never, tx, CancellationToken::new()),
    )
    .await
    .expect("capture stops instead of reconnecting to a purged position");
    let msg = run.unwrap_err().to_string();
    assert!(
        msg.contains("mysql-bin.000001:4")
            && msg.contains("shop.items")
            && msg.contains("backfill"),
        "{msg}"
    );
    drain.await.unwrap();
}

/// Issue 25: rows written before columns were moved or added decode into the columns they were
/// written to (by the names the table map carries), not into today's positions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_before_a_column_moved_or_was_added_decode_by_name() {
    let db = MariaDb::start();
    db.sql(
        "CREATE DATABASE shop CHARACTER SET utf8mb4;
         CREATE TABLE shop.t (id INT PRIMARY KEY, a INT, b INT);
         INSERT INTO shop.t VALUES (1, 10, 20);
         ALTER TABLE shop.t MODIFY b INT AFTER id;
         INSERT INTO shop.t (id, a, b) VALUES (2, 40, 30);
         UPDATE shop.t SET a = 11 WHERE id = 1;
         ALTER TABLE shop.t ADD COLUMN c VARCHAR(5) NOT NULL DEFAULT 'x';
         INSERT INTO shop.t (id, a, b, c) VALUES (3, 5, 6, 'y');",
    );
    let (changes, schemas) = capture_all(&db.url(), &["shop"]).await;
    let state = final_state(&changes, &TableId::new("shop", "t"));
    let get = |id: &str, col: &str| {
        state[&format!("{{\"id\":{id}}}")]
            .get(col)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        (get("1", "a"), get("1", "b")),
        (Value::Int(11), Value::Int(20))
    );
    assert_eq!(
        (get("2", "a"), get("2", "b")),
        (Value::Int(40), Value::Int(30))
    );
    assert_eq!(get("3", "c"), Value::Text("y".into()));
    // Each shape was announced before its changes: (id, a, b), (id, b, a), (id, b, a, c).
    let shapes: Vec<Vec<String>> = schemas
        .iter()
        .map(|s| s.columns.iter().map(|c| c.name.to_string()).collect())
        .collect();
    assert!(
        shapes.contains(&vec!["id".into(), "a".into(), "b".into()]),
        "{shapes:?}"
    );
    assert!(
        shapes.contains(&vec!["id".into(), "b".into(), "a".into(), "c".into()]),
        "{shapes:?}"
    );
}
