//! The reconciler end to end against a real MariaDB: every drift class produced by exactly the
//! fault that causes it, no false alarms under live load, repair through the pipeline, and a
//! summary that stays short for 100,000 mismatches.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::workload::{Pace, Workload};
use common::{assert_target_equals_source, run_ok, spawn, write_config};
use tidemark_schemas::TableId;
use tidemark_testkit::MariaDb;

const SHOP: &str = "CREATE DATABASE shop CHARACTER SET utf8mb4;
CREATE TABLE shop.accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL, note VARCHAR(40));
CREATE TABLE shop.items (id INT PRIMARY KEY, title VARCHAR(40));
CREATE TABLE shop.notes (id INT PRIMARY KEY, body VARCHAR(100));";

fn preload(db: &MariaDb, rows: u32) {
    db.sql_db(
        "shop",
        &format!(
            "INSERT INTO accounts SELECT seq, seq * 10, CONCAT('n', seq) FROM seq_1_to_{rows};
             INSERT INTO items SELECT seq, CONCAT('item ', seq) FROM seq_1_to_20;
             INSERT INTO notes SELECT seq, 'short' FROM seq_1_to_5;"
        ),
    );
}

/// Run `tidemark reconcile`; returns (exit code, stdout, drift records by key).
fn reconcile(
    cfg: &str,
    dir: &std::path::Path,
    extra: &[&str],
) -> (i32, String, BTreeMap<String, String>) {
    common::reconcile_drift(cfg, dir, extra)
}

fn target(dir: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join("target.db")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_injected_fault_is_reported_with_exactly_its_class() {
    let db = MariaDb::start();
    db.sql(SHOP);
    preload(&db, 200);
    let dir = tempfile::tempdir().unwrap();
    // notes.body may hold at most 10 characters in the target.
    let mapping = "[reconcile]\nsettle_timeout_seconds = 5\n\n[[mapping]]\nsource = \"shop.notes\"\n[mapping.columns.body]\ntype = \"text(10)\"\n";
    let config = write_config(dir.path(), &db.url(), &["shop"], mapping);
    let cfg = config.to_str().unwrap().to_string();
    run_ok(&["run", "--config", &cfg, "--until-caught-up"]);
    let (code, stdout, drift) = reconcile(&cfg, dir.path(), &[]);
    assert_eq!(
        (code, drift.len()),
        (0, 0),
        "a fresh copy has no drift:\n{stdout}"
    );

    // One fault per key.
    let t = target(dir.path());
    t.execute("DELETE FROM accounts WHERE id = 1", []).unwrap(); // missing
    t.execute(
        "INSERT INTO accounts SELECT 100000, balance, note, _tm_version, _tm_deleted, _tm_op, _tm_source_server, _tm_source_table, '{\"id\":100000}', _tm_position, _tm_gtid, _tm_commit_time_us, _tm_transform, _tm_transform_version, _tm_source_digest, _tm_chunk FROM accounts WHERE id = 2",
        [],
    )
    .unwrap(); // extra (out-of-band target insert)
    t.execute("UPDATE accounts SET note = 'edited' WHERE id = 3", [])
        .unwrap(); // value_mismatch

    drop(t);
    db.sql("SET sql_log_bin = 0; UPDATE shop.accounts SET note = 'unlogged' WHERE id = 4;"); // stale
    db.sql("SET sql_log_bin = 0; DELETE FROM shop.accounts WHERE id = 5;"); // extra (unlogged delete)
                                                                            // A value the target schema rejects, through the pipeline.
    db.sql("INSERT INTO shop.notes VALUES (6, 'far too long for ten characters')");
    run_ok(&["run", "--config", &cfg, "--until-caught-up"]);
    // Change the mapping of items: every items row was written by another transform version.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config).unwrap()
            + "\n[[mapping]]\nsource = \"shop.items\"\n[mapping.columns.title]\ntype = \"text(60)\"\n",
    )
    .unwrap();

    let (code, stdout, drift) = reconcile(&cfg, dir.path(), &[]);
    assert_eq!(code, 2, "actionable drift exits 2:\n{stdout}");
    let mut expected: BTreeMap<String, String> = [
        ("shop.accounts {\"id\":1}", "missing"),
        ("shop.accounts {\"id\":100000}", "extra"),
        ("shop.accounts {\"id\":3}", "value_mismatch"),
        ("shop.accounts {\"id\":4}", "stale"),
        ("shop.accounts {\"id\":5}", "extra"),
        ("shop.notes {\"id\":6}", "schema_rejection"),
    ]
    .into_iter()
    .map(|(k, c)| (k.to_string(), c.to_string()))
    .collect();
    for i in 1..=20 {
        expected.insert(
            format!("shop.items {{\"id\":{i}}}"),
            "transform_skew".into(),
        );
    }
    assert_eq!(
        drift, expected,
        "exactly the injected faults, each with its class:\n{stdout}"
    );
    assert!(
        stdout.contains("shop.items transform_skew: 20 keys"),
        "{stdout}"
    );
    assert!(
        stdout.contains("shop.accounts value_mismatch [note]: 1 keys"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_goes_through_the_pipeline_and_the_target_then_equals_the_source() {
    let db = MariaDb::start();
    db.sql(SHOP);
    preload(&db, 300);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &db.url(),
        &["shop"],
        "[reconcile]\nsettle_timeout_seconds = 5",
    );
    let cfg = config.to_str().unwrap().to_string();
    run_ok(&["run", "--config", &cfg, "--until-caught-up"]);
    let t = target(dir.path());
    t.execute("DELETE FROM accounts WHERE id IN (10, 11)", [])
        .unwrap();
    t.execute("UPDATE accounts SET balance = -1 WHERE id = 12", [])
        .unwrap();
    drop(t);
    db.sql("SET sql_log_bin = 0; UPDATE shop.accounts SET note = 'x' WHERE id = 13; DELETE FROM shop.accounts WHERE id = 14;");

    let (code, stdout, drift) = reconcile(&cfg, dir.path(), &["--repair", "--dry-run"]);
    assert_eq!(code, 2);
    assert_eq!(drift.len(), 5, "{stdout}");
    assert!(
        stdout.contains("repair plan: re-read 5 keys")
            && stdout.contains("dry run: nothing was sent"),
        "{stdout}"
    );
    let (_, _, again) = reconcile(&cfg, dir.path(), &[]);
    assert_eq!(again.len(), 5, "a dry run changes nothing");

    let (code, stdout, _) = reconcile(&cfg, dir.path(), &["--repair"]);
    assert_eq!(code, 2, "the run that found drift still reports it");
    assert!(stdout.contains("4 rows re-sent, 1 gone"), "{stdout}");
    run_ok(&["run", "--config", &cfg, "--until-caught-up"]);
    let (code, stdout, drift) = reconcile(&cfg, dir.path(), &[]);
    assert_eq!((code, drift.len()), (0, 0), "repaired:\n{stdout}");
    assert_target_equals_source(
        &db.url(),
        &dir.path().join("target.db"),
        &[TableId::new("shop", "accounts")],
    )
    .await;
    let op: String = target(dir.path())
        .query_row("SELECT _tm_op FROM accounts WHERE id = 12", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(op, "repair", "repaired rows say so in their lineage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsettled_keys_are_in_flight_or_unsettled_never_false_drift() {
    let db = MariaDb::start();
    db.sql(SHOP);
    preload(&db, 50);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.url(), &["shop"], "");
    let cfg = config.to_str().unwrap().to_string();
    run_ok(&["run", "--config", &cfg, "--until-caught-up"]);
    // A logged change the pipeline (stopped) has not applied: the frontier is behind.
    db.sql("UPDATE shop.accounts SET note = 'later' WHERE id = 7");
    let (code, stdout, drift) = reconcile(
        &cfg,
        dir.path(),
        &["--table", "shop.accounts", "--settle-timeout", "0"],
    );
    assert_eq!(code, 0, "in-flight keys are not actionable:\n{stdout}");
    assert_eq!(
        drift.get("shop.accounts {\"id\":7}").map(String::as_str),
        Some("in_flight"),
        "{stdout}"
    );
    assert!(drift.values().all(|c| c == "in_flight"), "{drift:?}");
    let (code, _, drift) = reconcile(
        &cfg,
        dir.path(),
        &["--table", "shop.accounts", "--settle-timeout", "1"],
    );
    assert_eq!(code, 2, "a key that never settles is actionable");
    assert!(drift.values().all(|c| c == "unsettled"), "{drift:?}");
    run_ok(&["run", "--config", &cfg, "--until-caught-up"]);
    let (code, _, drift) = reconcile(&cfg, dir.path(), &[]);
    assert_eq!(
        (code, drift.len()),
        (0, 0),
        "settled once applied: {drift:?}"
    );
}

/// Random writes over many keys, so that keys settle between their changes (the statements
/// of a [`Workload`]).
fn spread_writes() -> impl FnMut(u64) -> String + Send + 'static {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    move |n| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = x % 3000 + 1;
        match x % 5 {
            0 => format!("DELETE FROM shop.accounts WHERE id = {k}"),
            1 => format!("INSERT INTO shop.accounts VALUES ({k}, {n}, 'new') ON DUPLICATE KEY UPDATE note = 'again {n}'"),
            2 => format!(
                "START TRANSACTION; UPDATE shop.accounts SET balance = balance - 1 WHERE id = {k}; UPDATE shop.accounts SET balance = balance + 1 WHERE id = {}; COMMIT",
                (k + 1) % 3000 + 1
            ),
            _ => format!("UPDATE shop.accounts SET balance = {n}, note = NULL WHERE id = {k}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_actionable_drift_under_live_load() {
    let db = MariaDb::start();
    db.sql(SHOP);
    preload(&db, 3000);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &db.url(),
        &["shop"],
        "[reconcile]\nsettle_timeout_seconds = 20\nchunk_rows = 500",
    );
    let cfg = config.to_str().unwrap().to_string();
    run_ok(&["run", "--config", &cfg, "--until-caught-up"]);
    let mut pipeline = spawn(&["run", "--config", &cfg], &dir.path().join("pipeline.log"));
    let pace = Pace {
        pause: Duration::from_millis(2),
        tolerate_errors: false,
    };
    let load = Workload::start_paced(db.url(), pace, spread_writes());
    for round in 0..3 {
        let before = load.ran();
        let (code, stdout, drift) = reconcile(&cfg, dir.path(), &["--table", "shop.accounts"]);
        let records = std::fs::read_to_string(dir.path().join("drift.jsonl")).unwrap_or_default();
        assert_eq!(
            code, 0,
            "round {round}: no actionable drift under live load:\n{stdout}\n{records}"
        );
        assert!(drift.is_empty(), "round {round}: {drift:?}");
        assert!(stdout.contains("compared"), "{stdout}");
        assert!(
            load.ran() > before,
            "round {round}: the reconcile ran while the load was running"
        );
    }
    load.finish(1000).await;
    pipeline.kill().unwrap();
    pipeline.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_mismatches_read_as_a_few_lines() {
    let db = MariaDb::start();
    db.sql(SHOP);
    preload(&db, 100_000);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &db.url(),
        &["shop"],
        "[backfill]\nchunk_rows = 20000\n[reconcile]\nchunk_rows = 5000",
    );
    let cfg = config.to_str().unwrap().to_string();
    run_ok(&["run", "--config", &cfg, "--until-caught-up"]);
    target(dir.path())
        .execute("UPDATE accounts SET note = 'x'", [])
        .unwrap();
    let (code, stdout, drift) = reconcile(&cfg, dir.path(), &["--table", "shop.accounts"]);
    assert_eq!(code, 2);
    assert_eq!(drift.len(), 100_000);
    assert!(stdout.lines().count() <= 4, "a short summary:\n{stdout}");
    assert!(
        stdout.contains("shop.accounts value_mismatch [note]: 100000 keys, e.g."),
        "{stdout}"
    );
}
