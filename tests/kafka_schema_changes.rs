//! Schema changes of captured tables in Kafka mode: capture, apply and the control worker as
//! separate processes on the shared Apache Kafka broker. While they run, the source gets a column
//! added with a default (the rows already in the target must get it), a TRUNCATE, a DROP TABLE
//! and a RENAME TABLE, with writes after each. Nobody runs a command: capture stores a resync
//! marker for each (`status` shows it in flight, reconcile leaves the table out), the control
//! worker re-reads (and for the new name, backfills) through the changes topics, and the target
//! ends equal to the source with a clean reconcile. The worker
//! is killed with `kill -9` once mid-way, and its replacement finishes.

mod common;
mod kafka_support;

use std::path::Path;

use common::{assert_target_equals_source, run_ok, write_config};
use kafka_support::{
    assert_reconcile_clean, kafka_config, live_rows, wait, wait_for_capture_start, Proc,
};
use tidemark_schemas::TableId;
use tidemark_testkit::{Kafka, MariaDb};

/// Target rows of shop.items whose `status` is `value`.
fn items_with_status(target: &Path, value: &str) -> i64 {
    rusqlite::Connection::open(target)
        .and_then(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM items WHERE _tm_deleted = 0 AND status = ?1",
                [value],
                |r| r.get(0),
            )
        })
        .unwrap_or(0)
}

/// Resync markers in the checkpoints topic whose re-read is not done.
fn unswept_markers(kafka: &tidemark_kafka::KafkaConfig) -> usize {
    let mut reader = tidemark_kafka::CheckpointReader::open(kafka).expect("checkpoints reader");
    reader.catch_up().expect("read the checkpoints topic");
    reader
        .entries()
        .values()
        .filter(|cp| cp.stage == tidemark_ingest::RESYNC_STAGE)
        .filter(|cp| {
            !serde_json::from_str::<tidemark_ingest::ResyncMarker>(&cp.value)
                .expect("a resync marker")
                .sweep_done
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_are_followed_by_the_control_worker() {
    let db = MariaDb::start();
    db.sql(
        "CREATE DATABASE shop CHARACTER SET utf8mb4;
         CREATE TABLE shop.items (id INT PRIMARY KEY, a INT NOT NULL, note VARCHAR(20));
         CREATE TABLE shop.logs (id INT PRIMARY KEY, line VARCHAR(40) NOT NULL);
         CREATE TABLE shop.scratch (id INT PRIMARY KEY, v INT NOT NULL);
         CREATE TABLE shop.old_name (id INT PRIMARY KEY, v INT NOT NULL);",
    );
    db.sql_db(
        "shop",
        "INSERT INTO items SELECT seq, seq, CONCAT('n', seq) FROM seq_1_to_2000;
         INSERT INTO logs SELECT seq, CONCAT('line ', seq) FROM seq_1_to_300;
         INSERT INTO scratch SELECT seq, seq FROM seq_1_to_100;
         INSERT INTO old_name SELECT seq, seq FROM seq_1_to_150;",
    );
    let broker = Kafka::shared();
    let kafka = kafka_config(&broker);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target.db");
    let config = write_config(
        dir.path(),
        &db.url(),
        &["shop"],
        &format!(
            "[reconcile]\nsettle_timeout_seconds = 30\n\n{}",
            broker.transport_toml()
        ),
    );
    let cfg = config.to_str().unwrap().to_string();
    run_ok(&["topics", "init", "--config", &cfg]);
    let _capture = Proc::start("capture", &["capture", "--config", &cfg], dir.path());
    wait_for_capture_start(&kafka);
    let _apply = Proc::start("apply", &["apply", "--config", &cfg], dir.path());
    run_ok(&["backfill", "--config", &cfg]);
    wait("the backfill applied", 120, || {
        live_rows(&target, "items") == 2000 && live_rows(&target, "old_name") == 150
    });

    // A column added with a default: 2000 rows in the target lack it, and no binlog event will
    // bring it. Then writes in the new shape.
    db.sql_db(
        "shop",
        "ALTER TABLE items ADD COLUMN status VARCHAR(10) NOT NULL DEFAULT 'new';
         INSERT INTO items (id, a, note, status) VALUES (9001, 1, 'n', 'z');
         UPDATE items SET status = 'done' WHERE id <= 10;",
    );
    // Before a control worker runs it, the re-read is in flight: `status` says so, and
    // reconcile leaves the table out instead of reporting its rows as drift.
    wait("status to show the re-read in flight", 60, || {
        let out = run_ok(&["status", "--config", &cfg]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("re-reads in flight") && text.contains("shop.items")
    });
    let report = assert_reconcile_clean(&cfg);
    assert!(
        report.contains("skipped shop.items") && report.contains("in flight"),
        "{report}"
    );
    let mut worker = Proc::start(
        "control",
        &["control", "serve", "--config", &cfg],
        dir.path(),
    );
    wait(
        "every old row of items re-read with its default",
        180,
        || {
            items_with_status(&target, "new") == 1990
                && items_with_status(&target, "done") == 10
                && items_with_status(&target, "z") == 1
        },
    );

    // TRUNCATE, DROP TABLE and RENAME TABLE, with writes after them; the worker is killed once
    // while it works on them and its replacement carries on.
    db.sql_db(
        "shop",
        "TRUNCATE TABLE logs;
         INSERT INTO logs VALUES (1, 'after the truncate'), (7, 'seven');
         DROP TABLE scratch;
         RENAME TABLE old_name TO new_name;
         INSERT INTO new_name VALUES (1000, 1);
         UPDATE new_name SET v = -1 WHERE id = 5;",
    );
    wait("the control worker took a re-read", 120, || {
        worker.log().contains("control: re-reading")
    });
    worker.kill_9();
    let _worker = Proc::start(
        "control-2",
        &["control", "serve", "--config", &cfg],
        dir.path(),
    );
    wait(
        "the truncated, dropped and renamed tables followed",
        240,
        || {
            live_rows(&target, "logs") == 2
                && live_rows(&target, "scratch") == 0
                && live_rows(&target, "old_name") == 0
                && live_rows(&target, "new_name") == 151
        },
    );
    let tables: Vec<TableId> = ["items", "logs", "new_name"]
        .iter()
        .map(|t| TableId::new("shop", *t))
        .collect();
    assert_target_equals_source(&db.url(), &target, &tables).await;
    // Every marker swept: the reconcile compares all three, none skipped as in flight.
    wait("every re-read done", 120, || unswept_markers(&kafka) == 0);
    let report = assert_reconcile_clean(&cfg);
    assert!(!report.contains("skipped"), "{report}");
}
