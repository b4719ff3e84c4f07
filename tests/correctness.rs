//! Correctness holes found by trying tidemark as a new user would (issue 34), each shown fixed
//! end to end against a real MariaDB: values at the edges of the source's types, scope mistakes
//! refused before anything starts, writes capture cannot follow stopping it with a way out that
//! works (`tidemark resync`), a reconciler that identifies target rows by their own key, settles
//! on its own, and reports corrupt target rows as drift.

mod common;

use std::process::Output;
use std::time::Duration;

use common::{assert_target_equals_source, reconcile_classes, run_ok, tidemark, write_config};
use mysql_async::prelude::Queryable;
use tidemark_schemas::TableId;
use tidemark_testkit::{wait_for, MariaDb};

/// Run `tidemark ARGS`; return its output whatever the exit status.
fn run(args: &[&str]) -> Output {
    tidemark().args(args).output().expect("start tidemark")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn target(dir: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join("target.db")).unwrap()
}

fn shop_items() -> Vec<TableId> {
    vec![TableId::new("shop", "items")]
}

const ITEMS: &str = "CREATE DATABASE shop CHARACTER SET utf8mb4;
CREATE TABLE shop.items (id INT PRIMARY KEY, title VARCHAR(40), qty INT NOT NULL);
INSERT INTO shop.items SELECT seq, CONCAT('item ', seq), seq FROM shop.seq_1_to_50;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_values_at_mariadbs_edges_arrive_through_the_identity_mapping() {
    let db = MariaDb::start();
    db.sql(
        "CREATE DATABASE tm CHARACTER SET utf8mb4;
         CREATE TABLE tm.clock (id INT PRIMARY KEY, t6 TIME(6), t0 TIME, dt6 DATETIME(6));
         INSERT INTO tm.clock VALUES
           (1, '838:59:59.999999', '838:59:59', '9999-12-31 23:59:59.999999'),
           (2, '-838:59:59.999999', '-838:59:59', '1000-01-01 00:00:00.000000');",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.url(), &["tm"], "");
    let cfg = config.to_str().unwrap();
    // Backfilled…
    let out = run_ok(&["run", "--config", cfg, "--until-caught-up"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("rejected"));
    // … and captured.
    db.sql("INSERT INTO tm.clock VALUES (3, '-838:59:59.999999', '838:59:59', '2024-02-29 23:59:59.999999')");
    let out = run_ok(&["run", "--config", cfg, "--until-caught-up"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("rejected"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let rows = assert_target_equals_source(
        &db.url(),
        &dir.path().join("target.db"),
        &[TableId::new("tm", "clock")],
    )
    .await;
    assert_eq!(rows, 3);
}

#[test]
fn same_named_tables_in_two_databases_are_refused_until_a_mapping_separates_them() {
    let db = MariaDb::start();
    db.sql(
        "CREATE DATABASE shop_eu CHARACTER SET utf8mb4; CREATE DATABASE shop_us CHARACTER SET utf8mb4;
         CREATE TABLE shop_eu.orders (id INT PRIMARY KEY, total INT);
         CREATE TABLE shop_us.orders (id INT PRIMARY KEY, total INT);
         INSERT INTO shop_eu.orders VALUES (1, 10), (2, 20);
         INSERT INTO shop_us.orders VALUES (1, 99);",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.url(), &["shop_eu", "shop_us"], "");
    let out = run(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--until-caught-up",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let msg = stderr(&out);
    assert!(
        msg.contains("shop_eu.orders")
            && msg.contains("shop_us.orders")
            && msg.contains("[[mapping]]")
            && msg.contains("target ="),
        "{msg}"
    );
    assert!(
        !dir.path().join("target.db").exists()
            || target(dir.path())
                .query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE name = 'orders'",
                    [],
                    |r| r.get::<_, i64>(0)
                )
                .unwrap()
                == 0,
        "nothing was written"
    );

    let config = write_config(
        dir.path(),
        &db.url(),
        &["shop_eu", "shop_us"],
        "[[mapping]]\nsource = \"shop_us.orders\"\ntarget = \"orders_us\"\n",
    );
    run_ok(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--until-caught-up",
    ]);
    let t = target(dir.path());
    let total = |table: &str, id: i64| -> i64 {
        t.query_row(
            &format!("SELECT total FROM {table} WHERE id = ?1"),
            [id],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(
        (
            total("orders", 1),
            total("orders", 2),
            total("orders_us", 1)
        ),
        (10, 20, 99)
    );
}

#[test]
fn a_database_or_table_in_scope_that_does_not_exist_is_refused_by_name() {
    let db = MariaDb::start();
    db.sql(ITEMS);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.url(), &["shop", "shpo"], "");
    let out = run(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--until-caught-up",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("source.databases") && stderr(&out).contains("`shpo`"),
        "{}",
        stderr(&out)
    );

    let config = write_config(dir.path(), &db.url(), &[], "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "databases = []",
        "tables = [\"shop.items\", \"shop.itmes\"]",
    );
    std::fs::write(&config, text).unwrap();
    let out = run(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--until-caught-up",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("source.tables") && stderr(&out).contains("shop.itmes"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn tables_that_cannot_be_captured_are_listed_before_anything_starts_and_can_be_excluded() {
    let db = MariaDb::start();
    db.sql(ITEMS);
    db.sql(
        "CREATE TABLE shop.log_a (msg VARCHAR(10)); CREATE TABLE shop.log_b (msg VARCHAR(10));
         INSERT INTO shop.log_a VALUES ('x');",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.url(), &["shop"], "");
    let out = run(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--until-caught-up",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let msg = stderr(&out);
    assert!(
        msg.contains("shop.log_a") && msg.contains("shop.log_b") && msg.contains("exclude_tables"),
        "{msg}"
    );
    // Nothing was backfilled: the check comes first.
    let backfilled: i64 = target(dir.path())
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'items'",
            [],
            |r| r.get(0),
        )
        .unwrap_or(0);
    assert_eq!(backfilled, 0);

    let text = std::fs::read_to_string(&config).unwrap().replace(
        "databases = [\"shop\"]",
        "databases = [\"shop\"]\nexclude_tables = [\"shop.log_a\", \"shop.log_b\"]",
    );
    std::fs::write(&config, text).unwrap();
    run_ok(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--until-caught-up",
    ]);
    assert_eq!(
        target(dir.path())
            .query_row(
                "SELECT COUNT(*) FROM items WHERE _tm_deleted = 0",
                [],
                |r| r.get::<_, i64>(0)
            )
            .unwrap(),
        50
    );
}

/// A statement-logged write stops capture naming the table, the position and `tidemark resync`;
/// running exactly that command makes the target equal to the source. A TRUNCATE is followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_capture_cannot_follow_stop_it_and_the_resync_it_names_recovers() {
    let db = MariaDb::start();
    db.sql(ITEMS);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.url(), &["shop"], "");
    let cfg = config.to_str().unwrap();
    run_ok(&["run", "--config", cfg, "--until-caught-up"]);

    db.sql_db(
        "shop",
        "SET SESSION binlog_format = 'STATEMENT';
         UPDATE items SET qty = qty + 100 WHERE id <= 10;
         DELETE FROM items WHERE id > 45;
         SET SESSION binlog_format = 'ROW';
         INSERT INTO items VALUES (100, 'after', 1);",
    );
    let out = run(&["run", "--config", cfg, "--until-caught-up"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let msg = stderr(&out);
    assert!(
        msg.contains("shop.items")
            && msg.contains("mysql-bin.")
            && msg.contains("binlog_format")
            && msg.contains("tidemark resync"),
        "{msg}"
    );
    run_ok(&["resync", "--config", cfg, "--table", "shop.items"]);
    run_ok(&["run", "--config", cfg, "--until-caught-up"]);
    assert_eq!(
        assert_target_equals_source(&db.url(), &dir.path().join("target.db"), &shop_items()).await,
        46
    );

    // A TRUNCATE is followed (issue 25): every row the target held before it is re-read, and
    // the source no longer has them.
    db.sql("TRUNCATE TABLE shop.items; INSERT INTO shop.items VALUES (7, 'new', 7);");
    run_ok(&["run", "--config", cfg, "--until-caught-up"]);
    assert_eq!(
        assert_target_equals_source(&db.url(), &dir.path().join("target.db"), &shop_items()).await,
        1
    );
    let (code, drift) = reconcile_classes(cfg, dir.path(), &[]);
    assert_eq!((code, drift.len()), (0, 0), "{drift:?}");
}

/// A purged binlog: the error names `tidemark resync --all`, which moves capture to the end of
/// log, re-backfills, and removes the rows deleted in the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_binlog_is_recovered_by_the_resync_its_error_names() {
    let db = MariaDb::start();
    db.sql(ITEMS);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.url(), &["shop"], "");
    let cfg = config.to_str().unwrap();
    run_ok(&["run", "--config", cfg, "--until-caught-up"]);

    // While tidemark is stopped: changes, then their binlogs are purged.
    db.sql_db(
        "shop",
        "UPDATE items SET qty = -1 WHERE id <= 20;
         DELETE FROM items WHERE id BETWEEN 30 AND 39;
         INSERT INTO items VALUES (200, 'new', 2);",
    );
    db.sql("FLUSH BINARY LOGS");
    let logs = db.sql("SHOW BINARY LOGS");
    let newest = logs
        .lines()
        .last()
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_string();
    db.purge_binary_logs_to(&newest);

    let out = run(&["run", "--config", cfg, "--until-caught-up"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("tidemark resync") && stderr(&out).contains("--all"),
        "{}",
        stderr(&out)
    );
    // Only some tables: refused, the gap touched them all.
    db.sql("CREATE TABLE shop.other (id INT PRIMARY KEY)");
    let out = run(&["resync", "--config", cfg, "--table", "shop.items"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--all") && stderr(&out).contains("shop.other"),
        "{}",
        stderr(&out)
    );

    let out = run_ok(&["resync", "--config", cfg, "--all"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("purged") && report.contains("10 gone"),
        "{report}"
    );
    db.sql("INSERT INTO shop.items VALUES (201, 'later', 3)");
    run_ok(&["run", "--config", cfg, "--until-caught-up"]);
    let tables = vec![TableId::new("shop", "items"), TableId::new("shop", "other")];
    assert_eq!(
        assert_target_equals_source(&db.url(), &dir.path().join("target.db"), &tables).await,
        42
    );
    let (code, drift) = reconcile_classes(cfg, dir.path(), &[]);
    assert_eq!((code, drift.len()), (0, 0), "{drift:?}");
}

/// After the pipeline stopped, a write elsewhere moves the end of log; a standalone reconcile
/// reads the binlog past the stored position itself and settles every key no change touched.
#[test]
fn a_standalone_reconcile_settles_when_the_end_of_log_moved_elsewhere() {
    let db = MariaDb::start();
    db.sql(ITEMS);
    db.sql("CREATE DATABASE elsewhere; CREATE TABLE elsewhere.t (id INT PRIMARY KEY)");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &db.url(),
        &["shop"],
        "[reconcile]\nsettle_timeout_seconds = 3\n",
    );
    let cfg = config.to_str().unwrap();
    run_ok(&["run", "--config", cfg, "--until-caught-up"]);
    db.sql("INSERT INTO elsewhere.t VALUES (1), (2)");
    let (code, drift) = reconcile_classes(cfg, dir.path(), &[]);
    assert_eq!((code, drift.len()), (0, 0), "{drift:?}");

    // A change of a captured key that no pipeline applied stays unsettled: that is drift.
    db.sql("UPDATE shop.items SET qty = 0 WHERE id = 3");
    let (code, drift) = reconcile_classes(cfg, dir.path(), &[]);
    assert_eq!(code, 2);
    assert_eq!(
        drift.get("shop.items {\"id\":3}").map(String::as_str),
        Some("unsettled"),
        "{drift:?}"
    );
    assert_eq!(drift.len(), 1, "{drift:?}");
}

/// A target row copied under a new key with its lineage, and one whose lineage is empty, are
/// `extra` (found by their own key); repair removes them.
#[test]
fn a_target_row_whose_lineage_lies_is_extra_and_repair_removes_it() {
    let db = MariaDb::start();
    db.sql(ITEMS);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &db.url(),
        &["shop"],
        "[reconcile]\nsettle_timeout_seconds = 3\n",
    );
    let cfg = config.to_str().unwrap();
    run_ok(&["run", "--config", cfg, "--until-caught-up"]);
    let t = target(dir.path());
    // As an application writing into the new store by mistake would: lineage copied.
    t.execute("INSERT INTO items SELECT 9000, title, qty, _tm_version, _tm_deleted, _tm_op, _tm_source_server, _tm_source_table, _tm_source_key, _tm_position, _tm_gtid, _tm_commit_time_us, _tm_transform, _tm_transform_version, _tm_source_digest, _tm_chunk FROM items WHERE id = 5", []).unwrap();
    t.execute("INSERT INTO items SELECT 9001, title, qty, _tm_version, _tm_deleted, _tm_op, _tm_source_server, _tm_source_table, '', _tm_position, _tm_gtid, _tm_commit_time_us, _tm_transform, _tm_transform_version, _tm_source_digest, _tm_chunk FROM items WHERE id = 6", []).unwrap();
    let (code, drift) = reconcile_classes(cfg, dir.path(), &[]);
    assert_eq!(code, 2);
    assert_eq!(
        drift.get("shop.items {\"id\":9000}").map(String::as_str),
        Some("extra"),
        "{drift:?}"
    );
    assert_eq!(
        drift.get("shop.items {\"id\":9001}").map(String::as_str),
        Some("extra"),
        "{drift:?}"
    );
    assert_eq!(drift.len(), 2, "{drift:?}");
    reconcile_classes(cfg, dir.path(), &["--repair"]);
    let (code, drift) = reconcile_classes(cfg, dir.path(), &[]);
    assert_eq!((code, drift.len()), (0, 0), "{drift:?}");
    let live: i64 = t
        .query_row(
            "SELECT COUNT(*) FROM items WHERE id >= 9000 AND _tm_deleted = 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(live, 0);
}

/// Text that is not UTF-8 written into the target out of band is a `value_mismatch` of its key
/// (repairable); a target file with random bytes in its middle is an error or drift, never a
/// panic.
#[test]
fn corrupt_target_data_is_drift_or_an_error_never_a_panic() {
    let db = MariaDb::start();
    db.sql(ITEMS);
    db.sql("INSERT INTO shop.items SELECT seq, REPEAT('x', 30), seq FROM shop.seq_1000_to_6000");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &db.url(),
        &["shop"],
        "[reconcile]\nsettle_timeout_seconds = 3\n",
    );
    let cfg = config.to_str().unwrap();
    run_ok(&["run", "--config", cfg, "--until-caught-up"]);
    {
        let t = target(dir.path());
        t.execute(
            "UPDATE items SET title = CAST(x'c328ff' AS TEXT) WHERE id = 4",
            [],
        )
        .unwrap();
        t.execute(
            "UPDATE items SET _tm_source_digest = CAST(x'ff' AS TEXT) WHERE id = 8",
            [],
        )
        .unwrap();
    }
    let (code, drift) = reconcile_classes(cfg, dir.path(), &[]);
    assert_eq!(code, 2);
    assert_eq!(
        drift.get("shop.items {\"id\":4}").map(String::as_str),
        Some("value_mismatch"),
        "{drift:?}"
    );
    assert_eq!(
        drift.get("shop.items {\"id\":8}").map(String::as_str),
        Some("value_mismatch"),
        "{drift:?}"
    );
    reconcile_classes(cfg, dir.path(), &["--repair"]);
    let (code, drift) = reconcile_classes(cfg, dir.path(), &[]);
    assert_eq!((code, drift.len()), (0, 0), "{drift:?}");

    // Random bytes over pages in the middle of the file.
    let path = dir.path().join("target.db");
    {
        let t = target(dir.path());
        t.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    let mut x: u32 = 12345;
    for b in &mut bytes[middle..middle + 40_000] {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        *b = (x >> 16) as u8;
    }
    std::fs::write(&path, bytes).unwrap();
    let out = run(&["reconcile", "--config", cfg]);
    let code = out.status.code().expect("exit code");
    assert!((0..=2).contains(&code), "exit {code}:\n{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

/// The source restarts while a backfill runs: the backfill reconnects and carries on from its
/// last chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_restart_during_a_backfill_is_retried_from_the_last_chunk() {
    let mut db = MariaDb::start();
    db.sql(ITEMS);
    db.sql("INSERT INTO shop.items SELECT seq, 'bulk', seq FROM shop.seq_1000_to_30999");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &db.url(),
        &["shop"],
        "[backfill]\nrows_per_second = 5000\nchunk_rows = 1000\nmin_chunk_rows = 100\n",
    );
    let cfg = config.to_str().unwrap().to_string();
    let log = dir.path().join("backfill.log");
    let mut child = common::spawn(&["backfill", "--config", &cfg], &log);
    let t = dir.path().join("target.db");
    wait_for(
        "the backfill to be under way",
        Duration::from_secs(60),
        || {
            rusqlite::Connection::open(&t)
                .and_then(|c| c.query_row("SELECT COUNT(*) FROM items", [], |r| r.get::<_, i64>(0)))
                .is_ok_and(|n| n >= 3000)
        },
    );
    db.stop();
    db.start_again();
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{text}");
    assert!(
        text.contains("repeating it on a fresh connection"),
        "{text}"
    );
    assert_eq!(
        assert_target_equals_source(&db.url(), &t, &shop_items()).await,
        30_050
    );
}

/// A lock wait timeout (1205) in the backfill's locking read, and a deadlock (1213) in the
/// reconciler's, are the server saying "try again": both are retried and the run finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_wait_timeouts_and_deadlocks_are_retried() {
    let db = MariaDb::start_with_args(&["--innodb-lock-wait-timeout=1"]);
    db.sql(ITEMS);
    db.sql("CREATE TABLE shop.heavy (id INT PRIMARY KEY, v INT); INSERT INTO shop.heavy SELECT seq, 0 FROM shop.seq_1_to_2000");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &db.url(),
        &["shop"],
        "[reconcile]\nsettle_timeout_seconds = 5\n",
    );
    let cfg = config.to_str().unwrap().to_string();

    // 1205: a row of items is locked for three seconds while the backfill reads it.
    let pool = mysql_async::Pool::new(db.url().as_str());
    let mut holder = pool.get_conn().await.unwrap();
    holder.query_drop("BEGIN").await.unwrap();
    holder
        .query_drop("UPDATE shop.items SET qty = qty WHERE id = 25")
        .await
        .unwrap();
    let log = dir.path().join("run.log");
    let mut child = common::spawn(&["run", "--config", &cfg, "--until-caught-up"], &log);
    wait_for(
        "a lock wait timeout to be retried",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("repeating it on a fresh connection")
        },
    );
    holder.query_drop("COMMIT").await.unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );

    // 1213: the reconciler's locking read holds rows 1..24 and waits for 25; the holder, heavier
    // (it changed 2000 rows), then wants row 2: InnoDB picks the reader as the victim. A longer
    // lock wait timeout, so that the reader waits for the deadlock rather than times out.
    holder
        .query_drop("SET GLOBAL innodb_lock_wait_timeout = 30")
        .await
        .unwrap();
    holder.query_drop("BEGIN").await.unwrap();
    holder
        .query_drop("UPDATE shop.heavy SET v = v + 1")
        .await
        .unwrap();
    holder
        .query_drop("UPDATE shop.items SET qty = qty WHERE id = 25")
        .await
        .unwrap();
    let log = dir.path().join("reconcile.log");
    let mut child = common::spawn(
        &["reconcile", "--config", &cfg, "--table", "shop.items"],
        &log,
    );
    let mut watcher = pool.get_conn().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let waiting: Option<i64> = watcher
            .query_first(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE INFO LIKE '%FROM `shop`.`items`%LOCK IN SHARE MODE' AND TIME_MS > 300",
            )
            .await
            .unwrap();
        if waiting.unwrap_or(0) > 0 {
            break;
        }
        if std::time::Instant::now() >= deadline {
            let trx: Vec<(String, Option<String>)> = watcher
                .query("SELECT trx_state, trx_query FROM information_schema.INNODB_TRX")
                .await
                .unwrap();
            let procs: Vec<(String, Option<String>, Option<String>)> = watcher
                .query("SELECT COMMAND, STATE, INFO FROM information_schema.PROCESSLIST")
                .await
                .unwrap();
            panic!(
                "the reconciler never waited for row 25:\n{}\n{trx:?}\n{procs:?}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    holder
        .query_drop("UPDATE shop.items SET qty = qty WHERE id = 2")
        .await
        .unwrap();
    holder.query_drop("ROLLBACK").await.unwrap();
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("1213") || text.contains("Deadlock"), "{text}");
    drop(holder);
    drop(watcher);
    pool.disconnect().await.unwrap();
}
