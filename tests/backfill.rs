//! Backfill end to end against a real MariaDB: racing live writes, restarts, throttling, repair.

mod common;

use std::time::{Duration, Instant};

use common::workload::{hot_keys, preload, tables, Workload, SHOP};
use common::{
    assert_target_equals_source, run_ok, spawn, target_checkpoint, tidemark, write_config,
};
use tidemark_schemas::TableId;
use tidemark_testkit::{wait_for, MariaDb};

/// Start `tidemark backfill` of shop.accounts in the background, logging to `log` in `dir`.
fn spawn_accounts_backfill(
    dir: &std::path::Path,
    config: &std::path::Path,
    log: &str,
) -> common::Spawned {
    spawn(
        &[
            "backfill",
            "--config",
            config.to_str().unwrap(),
            "--table",
            "shop.accounts",
        ],
        &dir.join(log),
    )
}

/// The rows the backfill of `shop` has stored in the target so far (its checkpoints).
fn backfilled_rows(target: &std::path::Path) -> u64 {
    ["shop.accounts", "shop.links"]
        .iter()
        .filter_map(|table| {
            target_checkpoint(target, tidemark_ingest::backfill::BACKFILL_STAGE, table)
        })
        .filter_map(|text| serde_json::from_str::<tidemark_ingest::BackfillCheckpoint>(&text).ok())
        .map(|checkpoint| checkpoint.rows)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_racing_hot_key_writes_converges_exactly() {
    let db = MariaDb::start();
    db.sql(SHOP);
    preload(&db, 20_000);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &db.url(),
        &["shop"],
        "[backfill]\nchunk_rows = 500\nmin_chunk_rows = 100\nrows_per_second = 5000",
    );
    let cfg = config.to_str().unwrap().to_string();

    let target = dir.path().join("target.db");
    let load = Workload::start(db.url(), hot_keys(20_000));
    let mut run = spawn(&["run", "--config", &cfg], &dir.path().join("race.log"));
    // The run races the workload until half the rows are copied, then dies mid-backfill.
    wait_for(
        "the backfill to copy 20,000 rows",
        Duration::from_secs(120),
        || backfilled_rows(&target) >= 20_000,
    );
    load.finish(2_000).await;
    run.kill().unwrap();
    run.wait().unwrap();

    run_ok(&["run", "--config", &cfg, "--until-caught-up"]);
    let rows =
        assert_target_equals_source(&db.url(), &dir.path().join("target.db"), &tables()).await;
    assert!(rows > 30_000, "compared {rows} rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_race_survives_random_kill_9() {
    let db = MariaDb::start();
    db.sql(SHOP);
    preload(&db, 20_000);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &db.url(),
        &["shop"],
        "[backfill]\nchunk_rows = 400\nmin_chunk_rows = 100\nrows_per_second = 4000\n[apply]\nbatch_records = 300",
    );
    let cfg = config.to_str().unwrap().to_string();

    let target = dir.path().join("target.db");
    let load = Workload::start(db.url(), hot_keys(20_000));
    // Six runs killed at pseudo-random points, and more until one stored backfill progress
    // (below, the last run must resume rather than start over).
    let mut kills = 0u64;
    while kills < 6 || backfilled_rows(&target) == 0 {
        let mut child = spawn(
            &["run", "--config", &cfg],
            &dir.path().join(format!("run-{kills}.log")),
        );
        // Pseudo-random lifetimes between 0.6 and 2.1 s.
        let life = 600 + (kills * 7919 % 1500);
        tokio::time::sleep(Duration::from_millis(life)).await;
        child.kill().expect("kill -9");
        child.wait().unwrap();
        kills += 1;
    }
    load.finish(2_000).await;
    let out = run_ok(&["run", "--config", &cfg, "--until-caught-up"]);
    let report = String::from_utf8_lossy(&out.stdout);
    // The killed runs had made progress: the final run resumed, not restarted.
    let resumed: u64 = report
        .lines()
        .filter_map(|l| l.strip_prefix("backfilled shop.accounts: "))
        .filter_map(|l| l.trim_end_matches(" rows").parse::<u64>().ok())
        .sum();
    assert!(
        resumed < 20_000,
        "the last run resumed the backfill ({resumed} rows re-read):\n{report}"
    );
    let rows =
        assert_target_equals_source(&db.url(), &dir.path().join("target.db"), &tables()).await;
    assert!(rows > 30_000, "compared {rows} rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_side_by_side_in_one_process_survive_kill_9() {
    let db = MariaDb::start();
    db.sql(SHOP);
    preload(&db, 20_000);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &db.url(),
        &["shop"],
        "[backfill]\nparts = 3\nchunk_rows = 400\nmin_chunk_rows = 100\nrows_per_second = 6000",
    );
    let cfg = config.to_str().unwrap().to_string();
    let target = dir.path().join("target.db");
    let part = |table: &str, i: u32| -> Option<tidemark_ingest::BackfillCheckpoint> {
        target_checkpoint(&target, "backfill_part", &format!("{table}/{i}"))
            .map(|v| serde_json::from_str(&v).unwrap())
    };
    let part_rows = || -> u64 {
        ["shop.accounts", "shop.links"]
            .iter()
            .flat_map(|t| (0..3).filter_map(move |i| part(t, i)))
            .map(|p| p.rows)
            .sum()
    };

    let load = Workload::start(db.url(), hot_keys(20_000));
    // Killed twice, each time after the parts stored more progress.
    let mut seen = 0;
    for life in 0..2 {
        let mut child = spawn(
            &["run", "--config", &cfg],
            &dir.path().join(format!("run-{life}.log")),
        );
        wait_for(
            "the parts stored more progress",
            Duration::from_secs(60),
            || part_rows() > seen + 2000,
        );
        child.kill().expect("kill -9");
        child.wait().unwrap();
        seen = part_rows();
    }
    load.finish(0).await;
    let out = run_ok(&["run", "--config", &cfg, "--until-caught-up"]);
    let report = String::from_utf8_lossy(&out.stdout);
    let rows =
        assert_target_equals_source(&db.url(), &dir.path().join("target.db"), &tables()).await;
    assert!(rows > 30_000, "compared {rows} rows");
    // Each table was read in three parts of one split, each part resumed, none started over.
    for table in ["shop.accounts", "shop.links"] {
        let split: tidemark_ingest::split::KeySplit = serde_json::from_str(
            &target_checkpoint(&target, "backfill_split", table).expect("a stored split"),
        )
        .unwrap();
        assert_eq!(split.parts, 3, "{table}");
        for i in 0..3 {
            let part = part(table, i).expect("a part's checkpoint");
            assert!(
                part.done && part.split.as_deref() == Some(split.id.as_str()),
                "{table} part {i}: {part:?}"
            );
        }
    }
    // The last run read only what the killed runs had not stored.
    let reread: u64 = report
        .lines()
        .filter_map(|l| l.strip_prefix("backfilled "))
        .filter_map(|l| l.split(": ").nth(1))
        .filter_map(|l| l.trim_end_matches(" rows").parse::<u64>().ok())
        .sum();
    assert!(
        reread + seen / 2 <= rows as u64,
        "the last run resumed ({reread} rows read, {seen} stored before):\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_matrix_and_sakila_arrive_exactly_through_backfill() {
    let db = MariaDb::start();
    db.sql(tidemark_testkit::TYPE_MATRIX_DDL);
    db.sql(tidemark_testkit::TYPE_MATRIX_DML);
    db.load_sakila();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.url(), &["tm", "sakila"], "");
    let out = run_ok(&["backfill", "--config", config.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("backfilled sakila.rental: 16044 rows"),
        "{report}"
    );

    let mut all = vec![TableId::new("tm", "types")];
    all.extend(
        tidemark_testkit::SAKILA_ROW_COUNTS
            .iter()
            .map(|(t, _)| TableId::new("sakila", *t)),
    );
    let rows = assert_target_equals_source(&db.url(), &dir.path().join("target.db"), &all).await;
    let sakila: u64 = tidemark_testkit::SAKILA_ROW_COUNTS
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        rows as u64,
        2 + sakila,
        "type matrix rows + every Sakila row"
    );

    let conn = rusqlite::Connection::open(dir.path().join("target.db")).unwrap();
    let (op, chunk): (String, String) = conn
        .query_row("SELECT _tm_op, _tm_chunk FROM rental LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(op, "backfill");
    assert!(
        chunk.starts_with("sakila.rental#"),
        "lineage names the chunk: {chunk}"
    );
}

/// `rows_per_second` is a ceiling: over 15,000 rows read after the first 3,000, the backfill is
/// never faster than the configured rate (plus the 10% a token bucket may run ahead). How close
/// to the ceiling it runs depends on the machine's load, which is `bench/run`'s business, not
/// a test's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_per_second_is_never_exceeded() {
    let db = MariaDb::start();
    db.sql(SHOP);
    preload(&db, 30_000);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &db.url(),
        &["shop"],
        "[backfill]\nrows_per_second = 1500\n[apply]\nbatch_records = 100",
    );
    let mut child = spawn_accounts_backfill(dir.path(), &config, "throttle.log");
    let target = dir.path().join("target.db");
    let count = || -> i64 {
        rusqlite::Connection::open(&target)
            .ok()
            .and_then(|c| {
                c.query_row("SELECT COUNT(*) FROM accounts", [], |r| r.get(0))
                    .ok()
            })
            .unwrap_or(0)
    };
    // Past the start (the first chunk may arrive with the bucket full), then 15,000 rows more.
    let mut c0 = 0;
    tokio::task::block_in_place(|| {
        wait_for("3,000 rows backfilled", Duration::from_secs(120), || {
            c0 = count();
            c0 >= 3000
        })
    });
    let t0 = Instant::now();
    let mut c1 = 0;
    tokio::task::block_in_place(|| {
        wait_for("15,000 rows more", Duration::from_secs(240), || {
            c1 = count();
            c1 >= c0 + 15_000
        })
    });
    let seconds = t0.elapsed().as_secs_f64();
    child.kill().unwrap();
    child.wait().unwrap();
    let rate = (c1 - c0) as f64 / seconds;
    assert!(
        rate <= 1650.0,
        "measured {rate:.0} rows/s over {seconds:.1} s with rows_per_second = 1500"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_table_is_named_and_keys_can_be_reread() {
    let db = MariaDb::start();
    db.sql(SHOP);
    preload(&db, 100);
    db.sql("CREATE TABLE shop.nokey (a INT, b INT)");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.url(), &["shop"], "");
    let cfg = config.to_str().unwrap();

    let out = tidemark()
        .args(["backfill", "--config", cfg])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("shop.nokey") && err.contains("primary key"),
        "{err}"
    );

    run_ok(&["backfill", "--config", cfg, "--table", "shop.accounts"]);
    // Out of band: change one row and delete another without binlogging them.
    db.sql("SET sql_log_bin = 0; UPDATE shop.accounts SET note = 'fixed' WHERE id = 5; DELETE FROM shop.accounts WHERE id = 6;");
    let keys = dir.path().join("keys.jsonl");
    std::fs::write(
        &keys,
        "{\"table\": \"shop.accounts\", \"key\": {\"id\": 5}}\n{\"table\": \"shop.accounts\", \"key\": {\"id\": 6}}\n",
    )
    .unwrap();
    let out = run_ok(&[
        "backfill",
        "--config",
        cfg,
        "--keys",
        keys.to_str().unwrap(),
    ]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("1 rows re-sent, 1 gone"), "{report}");
    let rows = assert_target_equals_source(
        &db.url(),
        &dir.path().join("target.db"),
        &[TableId::new("shop", "accounts")],
    )
    .await;
    assert_eq!(rows, 99);
    let op: String = rusqlite::Connection::open(dir.path().join("target.db"))
        .unwrap()
        .query_row("SELECT _tm_op FROM accounts WHERE id = 6", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        op, "repair",
        "a re-read key that is gone is a repair tombstone"
    );
}

fn live_rows(target: &std::path::Path, table: &str) -> i64 {
    rusqlite::Connection::open(target)
        .ok()
        .and_then(|c| {
            c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .ok()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_pauses_and_resumes_a_running_backfill() {
    let db = MariaDb::start();
    db.sql(SHOP);
    preload(&db, 20_000);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &db.url(),
        &["shop"],
        "[backfill]\nrows_per_second = 2000\n[apply]\nbatch_records = 100",
    );
    let mut child = spawn_accounts_backfill(dir.path(), &config, "pause.log");
    let target = dir.path().join("target.db");
    let log_path = dir.path().join("pause.log");
    let logged = |what: &str| {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains(what)
    };
    tokio::task::block_in_place(|| {
        wait_for("rows backfilled", Duration::from_secs(120), || {
            live_rows(&target, "accounts") > 0
        })
    });
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-USR1", &pid])
        .status()
        .unwrap();
    // Paused once it says so and the rows already read have landed: the count has not moved for
    // a second (the reader's chunk in flight goes through the transform and a write batch).
    let mut paused_at = -1;
    let mut unchanged_since = Instant::now();
    tokio::task::block_in_place(|| {
        wait_for("the backfill paused", Duration::from_secs(60), || {
            let now = live_rows(&target, "accounts");
            if now != paused_at {
                paused_at = now;
                unchanged_since = Instant::now();
            }
            logged("backfill paused") && unchanged_since.elapsed() >= Duration::from_secs(1)
        })
    });
    // That nothing arrives while paused can only be seen over some time: 2 s, 4,000 rows' worth.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        live_rows(&target, "accounts"),
        paused_at,
        "no rows while paused"
    );
    // `status` meanwhile: how far the backfill has got of the table's estimate, its rate and
    // the time left at it.
    let out = run_ok(&["status", "--config", config.to_str().unwrap()]);
    let status = String::from_utf8_lossy(&out.stdout);
    let line = status
        .lines()
        .skip_while(|l| *l != "backfills:")
        .find(|l| l.contains("shop.accounts"))
        .unwrap_or_else(|| panic!("a backfill line for shop.accounts:\n{status}"));
    assert!(
        line.contains(" of about ")
            && line.contains("%")
            && line.contains("rows/s")
            && line.contains("left"),
        "{status}"
    );
    std::process::Command::new("kill")
        .args(["-USR1", &pid])
        .status()
        .unwrap();
    tokio::task::block_in_place(|| {
        wait_for("the backfill resumed", Duration::from_secs(120), || {
            live_rows(&target, "accounts") > paused_at + 1000
        })
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        logged("backfill resumed"),
        "{}",
        std::fs::read_to_string(&log_path).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_source_makes_the_backfill_back_off() {
    let db = MariaDb::start();
    db.sql(SHOP);
    preload(&db, 1000);
    let dir = tempfile::tempdir().unwrap();
    // Threads_running is at least 1 (the status query itself): the source always looks busy.
    let config = write_config(
        dir.path(),
        &db.url(),
        &["shop"],
        "[backfill]\nmax_threads_running = 0",
    );
    let mut child = spawn_accounts_backfill(dir.path(), &config, "busy.log");
    let log_path = dir.path().join("busy.log");
    tokio::task::block_in_place(|| {
        wait_for("the backfill backing off", Duration::from_secs(60), || {
            std::fs::read_to_string(&log_path)
                .unwrap_or_default()
                .contains("backfill backing off")
        })
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        live_rows(&dir.path().join("target.db"), "accounts"),
        0,
        "nothing is read while the source is busy"
    );
    let log = std::fs::read_to_string(dir.path().join("busy.log")).unwrap();
    assert!(
        log.contains("backfill backing off") && log.contains("max_threads_running"),
        "{log}"
    );
}
