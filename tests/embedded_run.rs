//! End-to-end tests of `tidemark run` on the embedded default (in-process transport, SQLite),
//! against a real MariaDB started by the harness.

mod common;

use std::time::Duration;

use common::workload::Workload;
use common::{
    assert_target_equals_source, http_get, run_ok, series, spawn, tidemark, write_config,
};
use tidemark_schemas::TableId;
use tidemark_testkit::{wait_for, wait_for_or_show, MariaDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_until_caught_up_copies_every_type_losslessly_with_lineage() {
    let db = MariaDb::start();
    db.sql(tidemark_testkit::TYPE_MATRIX_DDL);
    db.sql(tidemark_testkit::TYPE_MATRIX_DML);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &db.url(),
        &["tm"],
        "[capture]\nstart = \"earliest\"",
    );
    let cfg = config.to_str().unwrap();

    let out = run_ok(&["run", "--config", cfg, "--until-caught-up"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("types"),
        "the report lists the table:\n{report}"
    );

    let target = dir.path().join("target.db");
    let rows =
        assert_target_equals_source(&db.url(), &target, &[TableId::new("tm", "types")]).await;
    assert_eq!(rows, 2, "rows 1 and 20 are live");

    let conn = rusqlite::Connection::open(&target).unwrap();
    // Lossless storage of what SQLite cannot hold natively.
    let (biu, d): (String, String) = conn
        .query_row("SELECT biu, d FROM types WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(biu, "18446744073709551615");
    assert_eq!(d, format!("{}.{}", "9".repeat(35), "9".repeat(30)));
    // Deletes and key moves leave tombstones with versions; lineage is stamped.
    let tombstones: Vec<(i64, i64, String)> = conn
        .prepare("SELECT id, _tm_version, _tm_op FROM types WHERE _tm_deleted = 1 ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(tombstones.len(), 2, "{tombstones:?}");
    assert_eq!((tombstones[0].0, tombstones[0].2.as_str()), (2, "delete"));
    assert_eq!((tombstones[1].0, tombstones[1].2.as_str()), (3, "delete"));
    let (table, key, position, digest, transform): (String, String, String, String, String) = conn
        .query_row(
            "SELECT _tm_source_table, _tm_source_key, _tm_position, _tm_source_digest, _tm_transform FROM types WHERE id = 20",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!(table, "tm.types");
    assert_eq!(key, r#"{"id":20}"#);
    assert!(position.starts_with("mysql-bin.000001:"), "{position}");
    assert!(
        digest.len() == 33 && digest.starts_with('y'),
        "an XXH3-128 source digest: {digest}"
    );
    assert_eq!(transform, "identity");

    // A second run resumes from the checkpoint and has nothing to do.
    let out = run_ok(&["run", "--config", cfg, "--until-caught-up"]);
    let report = String::from_utf8_lossy(&out.stdout);
    let total = report.lines().find(|l| l.starts_with("total")).unwrap();
    assert_eq!(
        total.split_whitespace().collect::<Vec<_>>(),
        ["total", "0", "0"],
        "{report}"
    );
}

/// A workload of hot keys: inserts, updates, deletes, re-inserts, key moves, multi-row txns
/// (statement `n` of a [`Workload`]).
fn hot_accounts(n: u64) -> String {
    let n = n as i64;
    let k = n % 97;
    match n % 6 {
        0 => format!("INSERT INTO shop.accounts VALUES ({k}, {n}, 'ins {n}') ON DUPLICATE KEY UPDATE balance = {n}"),
        1 => format!("UPDATE shop.accounts SET balance = balance + 1, note = 'upd {n}' WHERE id = {k}"),
        2 => format!("DELETE FROM shop.accounts WHERE id = {}", (k * 7) % 97),
        3 => format!("UPDATE IGNORE shop.accounts SET id = id + 1000 WHERE id = {k}"),
        4 => format!(
            "START TRANSACTION; INSERT IGNORE INTO shop.accounts VALUES ({a}, {n}, 'txn'); UPDATE shop.accounts SET balance = -{n} WHERE id = {b}; DELETE FROM shop.accounts WHERE id = {c}; COMMIT",
            a = k + 200,
            b = (k + 3) % 97,
            c = k + 1000
        ),
        _ => format!("REPLACE INTO shop.accounts VALUES ({}, {n}, NULL)", (k * 3) % 97),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_nothing() {
    let db = MariaDb::start();
    db.sql(
        "CREATE DATABASE shop CHARACTER SET utf8mb4;
         CREATE TABLE shop.accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL, note VARCHAR(40));",
    );
    let dir = tempfile::tempdir().unwrap();
    // Small batches so kills land between many checkpoints.
    let config = write_config(
        dir.path(),
        &db.url(),
        &["shop"],
        "[capture]\nstart = \"earliest\"\n[apply]\nbatch_records = 50",
    );
    let cfg = config.to_str().unwrap().to_string();

    let target = dir.path().join("target.db");
    let applied = || -> i64 {
        rusqlite::Connection::open(&target)
            .and_then(|c| c.query_row("SELECT COUNT(*) FROM accounts", [], |r| r.get(0)))
            .unwrap_or(0)
    };
    let load = Workload::start(db.url(), hot_accounts);
    // Killed at four points at least, and on until the killed runs applied something (below,
    // the final run must resume from their checkpoints).
    let mut kills = 0;
    while kills < 4 || applied() == 0 {
        let mut child = spawn(
            &["run", "--config", &cfg],
            &dir.path().join(format!("run-{kills}.log")),
        );
        tokio::time::sleep(Duration::from_millis(700 + 300 * (kills % 3))).await;
        child.kill().expect("kill -9 the pipeline"); // SIGKILL
        child.wait().unwrap();
        kills += 1;
    }
    load.finish(200).await;

    // A clean SIGTERM shutdown also leaves a usable checkpoint.
    let term_log = dir.path().join("term.log");
    let mut child = spawn(&["run", "--config", &cfg], &term_log);
    tokio::task::block_in_place(|| {
        wait_for("capture running", Duration::from_secs(60), || {
            std::fs::read_to_string(&term_log)
                .unwrap_or_default()
                .contains("binlog capture started")
        })
    });
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM shuts down cleanly (exit {status})"
    );

    run_ok(&["run", "--config", &cfg, "--until-caught-up"]);
    let rows = assert_target_equals_source(
        &db.url(),
        &dir.path().join("target.db"),
        &[TableId::new("shop", "accounts")],
    )
    .await;
    assert!(rows > 50, "compared {rows} rows");
}

#[test]
fn a_malformed_config_names_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[source]\nurl = \"mysql://root@127.0.0.1:1\"\nserver_id = 1\ndatabases = [\"x\"]\nheartbeat = 3\n[target]\nkind = \"sqlite\"\npath = \"t.db\"\n",
    )
    .unwrap();
    let out = tidemark()
        .args(["run", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("heartbeat"),
        "{err}"
    );
}

#[test]
fn an_unreachable_source_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1 on loopback: nothing listens there.
    let config = write_config(dir.path(), "mysql://root@127.0.0.1:1", &["shop"], "");
    let out = tidemark()
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--until-caught-up",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("127.0.0.1:1") && err.contains("cannot connect"),
        "{err}"
    );
}

#[test]
fn the_source_password_can_come_from_the_environment() {
    let db = MariaDb::start();
    db.sql(
        "CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY 's3cret-pw';
         GRANT ALL ON *.* TO 'repl'@'127.0.0.1';
         CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY); INSERT INTO shop.t VALUES (1);",
    );
    let dir = tempfile::tempdir().unwrap();
    let url = format!("mysql://repl@127.0.0.1:{}", db.port());
    let config = write_config(dir.path(), &url, &["shop"], "");
    let cfg = config.to_str().unwrap();
    let without = tidemark()
        .args(["run", "--config", cfg, "--until-caught-up"])
        .env_remove("TIDEMARK_SOURCE_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(without.status.code(), Some(1), "no password, no access");
    let with = tidemark()
        .args(["run", "--config", cfg, "--until-caught-up"])
        .env("TIDEMARK_SOURCE_PASSWORD", "s3cret-pw")
        .output()
        .unwrap();
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_are_served() {
    let db = MariaDb::start();
    db.sql(
        "CREATE DATABASE shop CHARACTER SET utf8mb4;
         CREATE TABLE shop.t (id INT PRIMARY KEY, v INT);
         INSERT INTO shop.t VALUES (1, 1), (2, 2), (3, 3);",
    );
    let port = tidemark_testkit::free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &db.url(),
        &["shop"],
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\""),
    );
    let mut child = spawn(
        &["run", "--config", config.to_str().unwrap()],
        &dir.path().join("m.log"),
    );
    tokio::task::block_in_place(|| {
        wait_for_or_show(
            "/readyz to turn 200 once the pipeline is connected",
            Duration::from_secs(20),
            &dir.path().join("m.log"),
            || http_get(port, "/readyz").is_some_and(|(s, _)| s == 200),
        )
    });
    assert_eq!(http_get(port, "/healthz").map(|(s, _)| s), Some(200));
    db.sql("INSERT INTO shop.t VALUES (4, 4)");
    let mut scraped = None;
    tokio::task::block_in_place(|| {
        wait_for(
            "the applied row counted in /metrics",
            Duration::from_secs(30),
            || {
                scraped = http_get(port, "/metrics");
                scraped.as_ref().is_some_and(|(_, body)| {
                    body.contains("tidemark_rows_applied_total{table=\"t\"}")
                })
            },
        )
    });
    let (status, body) = scraped.expect("/metrics answers");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("tidemark_capture_position_offset"), "{body}");
}

#[test]
fn until_caught_up_returns_when_the_log_ends_after_a_rotation() {
    let db = MariaDb::start();
    db.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY); INSERT INTO shop.t VALUES (1);");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.url(), &["shop"], "");
    let cfg = config.to_str().unwrap().to_string();
    run_ok(&["run", "--config", &cfg, "--until-caught-up"]);
    // The end of log is now past the new file's preamble, with no transaction after it.
    db.sql("FLUSH BINARY LOGS");
    let mut child = spawn(
        &["run", "--config", &cfg, "--until-caught-up"],
        &dir.path().join("r.log"),
    );
    let mut status = None;
    wait_for_or_show(
        "--until-caught-up to return after a rotation with nothing after it",
        Duration::from_secs(30),
        &dir.path().join("r.log"),
        || {
            status = child.try_wait().unwrap();
            status.is_some()
        },
    );
    assert!(status.expect("waited for above").success());
}

/// What an operator watches, scraped from a live `tidemark run` that backfills 6,000 rows under a
/// throttle while a workload writes: the backfill's progress rises to its estimate and says
/// done with an ETA falling to 0, capture's lag in seconds and bytes is there and falls to 0 once
/// caught up, capture's rows are counted per table and operation, the rows applied are counted,
/// a row the mapping rejects is counted by table and kind, and the queue into apply is watched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_backfill_capture_and_dead_letters() {
    let db = MariaDb::start();
    db.sql(
        "CREATE DATABASE shop CHARACTER SET utf8mb4;
         CREATE TABLE shop.t (id INT PRIMARY KEY, v INT);
         CREATE TABLE shop.notes (id INT PRIMARY KEY, body VARCHAR(100) NOT NULL);
         INSERT INTO shop.t SELECT seq, seq FROM shop.seq_1_to_6000;",
    );
    let port = tidemark_testkit::free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &db.url(),
        &["shop"],
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:{port}\"\n[backfill]\nrows_per_second = 3000\nchunk_rows = 1000\nmin_chunk_rows = 500\n[capture]\nheartbeat_seconds = 1\n[[mapping]]\nsource = \"shop.notes\"\ntarget = \"notes\"\n[mapping.columns.body]\ntype = \"text(10)\"\n"
        ),
    );
    let mut child = spawn(
        &["run", "--config", config.to_str().unwrap()],
        &dir.path().join("m.log"),
    );
    let scrape = || {
        http_get(port, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    };
    let t = "{table=\"shop.t\"}";
    // Mid-backfill: some rows read, fewer than the estimate, not done.
    let mut mid = String::new();
    tokio::task::block_in_place(|| {
        wait_for("the backfill under way", Duration::from_secs(60), || {
            mid = scrape();
            series(&mid, "tidemark_backfill_rows", t).is_some_and(|n| n > 0.0)
                && series(&mid, "tidemark_backfill_eta_seconds", t).is_some_and(|s| s > 0.0)
        })
    });
    let estimated = series(&mid, "tidemark_backfill_rows_estimated", t).expect(&mid);
    assert!(
        estimated >= 5000.0,
        "the estimate is the table's size: {mid}"
    );
    assert_eq!(
        series(&mid, "tidemark_backfill_done", t),
        Some(0.0),
        "{mid}"
    );
    assert_eq!(
        series(&mid, "tidemark_backfill_paused", t),
        Some(0.0),
        "{mid}"
    );

    // Live writes meanwhile, one of them a value the mapping rejects (too long for text(10)).
    db.sql(
        "INSERT INTO shop.t VALUES (7001, 1), (7002, 2);
         INSERT INTO shop.notes VALUES (1, 'short'), (2, 'far too long for ten');",
    );
    let mut done = String::new();
    tokio::task::block_in_place(|| {
        wait_for(
            "the backfill done, the live rows applied, capture caught up",
            Duration::from_secs(120),
            || {
                done = scrape();
                series(&done, "tidemark_backfill_done", t) == Some(1.0)
                    && series(
                        &done,
                        "tidemark_rows_rejected_total",
                        "{table=\"shop.notes\",kind=\"too_long\"}",
                    ) == Some(1.0)
                    && series(&done, "tidemark_capture_lag_seconds", "") == Some(0.0)
                    && series(&done, "tidemark_capture_lag_bytes", "") == Some(0.0)
            },
        )
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let rows = series(&done, "tidemark_backfill_rows", t).expect(&done);
    assert!(rows >= 6000.0, "every row read: {done}");
    assert!(
        series(&done, "tidemark_backfill_rows_estimated", t).is_some_and(|e| e >= rows),
        "{done}"
    );
    assert!(
        series(&done, "tidemark_rows_applied_total", "{table=\"t\"}").is_some_and(|n| n >= 6002.0),
        "the backfill's rows and the live ones applied: {done}"
    );
    assert!(
        series(&done, "tidemark_rows_applied_total", "{table=\"notes\"}").is_some_and(|n| n >= 1.0),
        "{done}"
    );
    assert!(
        series(&done, "tidemark_capture_position_offset", "").is_some(),
        "{done}"
    );
    assert!(series(&done, "tidemark_source_retries_total", "").is_none_or(|n| n >= 0.0));
    assert_eq!(
        series(&done, "tidemark_backfill_eta_seconds", t),
        Some(0.0),
        "{done}"
    );
    // Capture counts the rows it read per table and operation, and the queue into apply is
    // watched.
    assert!(
        series(
            &done,
            "tidemark_capture_events_total",
            "{table=\"shop.t\",op=\"insert\"}"
        )
        .is_some_and(|n| n >= 2.0),
        "{done}"
    );
    assert_eq!(
        series(
            &done,
            "tidemark_capture_events_total",
            "{table=\"shop.notes\",op=\"insert\"}"
        ),
        Some(2.0),
        "{done}"
    );
    assert!(
        series(&done, "tidemark_queue_depth", "{queue=\"apply\"}").is_some(),
        "{done}"
    );
    assert!(
        series(&done, "tidemark_apply_batch_records", "").is_some_and(|n| n >= 1.0),
        "the last batch apply wrote: {done}"
    );
    // Every metric the Helm chart's alerts and dashboard use is served (those of Kafka-mode
    // apply members and of reconciles are checked where those run: tests/kafka_cql.rs,
    // tests/kafka_control.rs; the uncertainty window's and the gate's once there is a complete
    // reconcile and a verdict: tests/cutover.rs).
    let used = common::chart_metrics(
        &[],
        &[
            "tidemark_apply_",
            "tidemark_reconcile_",
            "tidemark_uncertainty_",
            "tidemark_cutover_",
        ],
    );
    common::assert_serves(&done, &used);
}
