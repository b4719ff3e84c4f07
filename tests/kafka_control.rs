//! The control topic end to end: `tidemark control serve` as its own process, next to capture and
//! apply, acting on what `tidemark control send` puts on the topic: a backfill started on
//! request, paused and resumed; a reconcile whose findings land on the drift topic (a schema
//! rejection read back from the dead-letter topic, an unlogged change as `stale`); a key re-read
//! that repairs it. The worker is killed with `kill -9` mid-action and its replacement finishes
//! the action it had not committed.

mod common;
mod kafka_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{run_ok, write_config};
use kafka_support::{kafka_config, wait_for_capture_start, Proc};
use tidemark_kafka::KafkaConfig;
use tidemark_testkit::{Kafka, MariaDb};

/// Live rows of a target table.
fn live_rows(dir: &Path, table: &str) -> i64 {
    let Ok(conn) = rusqlite::Connection::open(dir.join("target.db")) else {
        return 0;
    };
    conn.query_row(
        &format!("SELECT COUNT(*) FROM \"{table}\" WHERE _tm_deleted = 0"),
        [],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

fn body_of(dir: &Path, id: i64) -> Option<String> {
    let conn = rusqlite::Connection::open(dir.join("target.db")).ok()?;
    conn.query_row(
        "SELECT body FROM notes WHERE id = ?1 AND _tm_deleted = 0",
        [id],
        |r| r.get(0),
    )
    .ok()
}

/// Wait up to `secs` for `done`, panicking with `what` and the worker's log.
async fn wait_for(secs: u64, what: &str, log: &Path, done: impl FnMut() -> bool) {
    tokio::task::block_in_place(|| {
        tidemark_testkit::wait_for_or_show(what, Duration::from_secs(secs), log, done)
    });
}

/// The drift topic as (key, class) of each event, in order.
fn drift(kafka: &KafkaConfig) -> Vec<(String, String)> {
    tokio::task::block_in_place(|| tidemark_kafka::read_drift(kafka))
        .expect("read the drift topic")
        .into_iter()
        .map(|e| (format!("{} {}", e.table, e.key), e.class))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_worker_backfills_pauses_reconciles_and_rereads_on_request() {
    let db = MariaDb::start();
    db.sql(
        "CREATE DATABASE shop CHARACTER SET utf8mb4;
         CREATE TABLE shop.notes (id INT PRIMARY KEY, body VARCHAR(60) NOT NULL);
         CREATE TABLE shop.bulk (id INT PRIMARY KEY, v BIGINT NOT NULL);",
    );
    db.sql_db(
        "shop",
        "INSERT INTO notes SELECT seq, CONCAT('n', seq) FROM seq_1_to_200;
         UPDATE notes SET body = 'far longer than ten characters' WHERE id = 7;
         INSERT INTO bulk SELECT seq, seq * 3 FROM seq_1_to_5000;",
    );
    let broker = Kafka::shared();
    let kafka = kafka_config(&broker);
    let dir = tempfile::tempdir().unwrap();
    // notes.body holds at most 10 characters in the target: key 7 is a schema rejection.
    let extra = format!(
        "[backfill]\nchunk_rows = 100\nrows_per_second = 500\n[reconcile]\nsettle_timeout_seconds = 15\n\n[[mapping]]\nsource = \"shop.notes\"\n[mapping.columns.body]\ntype = \"text(10)\"\n\n{}",
        broker.transport_toml()
    );
    let config = write_config(dir.path(), &db.url(), &["shop"], &extra);
    let cfg = config.to_str().unwrap().to_string();
    let log = |name: &str| dir.path().join(name);
    let send = |message: &str| {
        let out = run_ok(&["control", "send", "--config", &cfg, message]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("sent to"));
    };
    run_ok(&["topics", "init", "--config", &cfg]);
    let mut capture = Proc::start("capture", &["capture", "--config", &cfg], dir.path());
    wait_for_capture_start(&kafka); // before any backfill reads
    let mut apply = Proc::start("apply", &["apply", "--config", &cfg], dir.path());
    let worker_log = log("control.log");
    let mut worker = Proc::start(
        "control",
        &["control", "serve", "--config", &cfg],
        dir.path(),
    );

    // start_backfill: the worker copies notes.
    send(r#"{"action":"start_backfill","tables":["shop.notes"]}"#);
    wait_for(
        90,
        "notes backfilled (199 rows, one rejected)",
        &worker_log,
        || live_rows(dir.path(), "notes") == 199,
    )
    .await;

    // pause_backfill before start_backfill: the backfill starts paused and copies nothing.
    send(r#"{"action":"pause_backfill"}"#);
    send(r#"{"action":"start_backfill","tables":["shop.bulk"]}"#);
    wait_for(60, "the worker took the bulk backfill", &worker_log, || {
        std::fs::read_to_string(&worker_log)
            .unwrap_or_default()
            .matches("control: starting")
            .count()
            >= 2
    })
    .await;
    // An absence takes a window to observe: unpaused, the backfill would copy 500 rows a second.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        live_rows(dir.path(), "bulk"),
        0,
        "a paused backfill copies nothing"
    );

    // resume: rows flow (500 rows/s); kill -9 the worker midway through the action.
    send(r#"{"action":"resume_backfill"}"#);
    wait_for(60, "the bulk backfill under way", &worker_log, || {
        live_rows(dir.path(), "bulk") >= 500
    })
    .await;
    worker.kill_9();
    let copied = live_rows(dir.path(), "bulk");
    assert!(copied < 5000, "killed mid-action ({copied} rows copied)");
    // Its replacement resumes the uncommitted start_backfill (from its checkpoint) on its own.
    let worker_log = log("control-2.log");
    // This one serves /metrics (the reconcile's figures below).
    let (worker_config, port) = kafka_support::with_metrics(&config, "control-2");
    // It measures the uncertainty window every second (below).
    std::fs::write(
        &worker_config,
        format!(
            "{}window_seconds = 1\n",
            std::fs::read_to_string(&worker_config).unwrap()
        ),
    )
    .unwrap();
    let mut worker = Proc::start(
        "control-2",
        &[
            "control",
            "serve",
            "--config",
            worker_config.to_str().unwrap(),
        ],
        dir.path(),
    );
    wait_for(
        90,
        "the bulk backfill finished by the new worker",
        &worker_log,
        || live_rows(dir.path(), "bulk") == 5000,
    )
    .await;

    // The uncertainty window, measured by the worker from the topics: capture's share grows
    // while capture is frozen and writes go on, and shrinks to nothing once it runs again.
    let capture_share = |metrics: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("tidemark_uncertainty_bytes{stage=\"capture\"} "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    capture.signal("STOP");
    let mut frozen = 0.0;
    for (round, ids) in ["5001_to_5300", "5301_to_5600"].iter().enumerate() {
        db.sql_db(
            "shop",
            &format!("INSERT INTO bulk SELECT seq, seq FROM seq_{ids}"),
        );
        let before = frozen;
        wait_for(
            60,
            &format!("capture's share of the window grows while it is frozen (round {round})"),
            &worker_log,
            || {
                frozen = capture_share(&kafka_support::scrape(port)).unwrap_or(0.0);
                frozen > before
            },
        )
        .await;
    }
    capture.signal("CONT");
    wait_for(
        60,
        "capture's share back to nothing once it runs",
        &worker_log,
        || capture_share(&kafka_support::scrape(port)) == Some(0.0),
    )
    .await;

    // An unlogged change (the binlog never sees it) and a reconcile on request.
    db.sql("SET sql_log_bin = 0; UPDATE shop.notes SET body = 'quiet' WHERE id = 3;");
    send(r#"{"action":"reconcile","tables":["shop.notes"]}"#);
    let mut found = Vec::new();
    wait_for(
        90,
        "drift of the reconcile on the drift topic",
        &worker_log,
        || {
            found = drift(&kafka);
            found.len() >= 2
        },
    )
    .await;
    let by_key: BTreeMap<String, String> = found.iter().cloned().collect();
    assert_eq!(
        by_key,
        [
            ("shop.notes {\"id\":3}".to_string(), "stale".to_string()),
            (
                "shop.notes {\"id\":7}".to_string(),
                "schema_rejection".to_string()
            ),
        ]
        .into_iter()
        .collect(),
        "{found:?}"
    );
    // The last reconcile's figures, for alerts: keys per class (0 where none), and when it ran.
    let mut metrics = String::new();
    wait_for(30, "the reconcile's metrics", &worker_log, || {
        metrics = kafka_support::scrape(port);
        metrics.contains("tidemark_reconcile_last_actionable_keys 2")
    })
    .await;
    for line in [
        "tidemark_reconcile_last_drift_keys{class=\"stale\"} 1",
        "tidemark_reconcile_last_drift_keys{class=\"schema_rejection\"} 1",
        "tidemark_reconcile_last_drift_keys{class=\"missing\"} 0",
        "tidemark_reconcile_last_rows_compared{table=\"shop.notes\"} ",
        "tidemark_reconcile_runs_total 1",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    assert!(
        metrics.contains("tidemark_reconcile_last_finished_timestamp_seconds"),
        "{metrics}"
    );
    // The Helm chart's alerts and dashboard use only reconcile series a reconcile serves.
    common::assert_serves(
        &metrics,
        &common::chart_metrics(&["tidemark_reconcile_"], &[]),
    );

    // reread_keys repairs the stale key through the pipeline.
    send(r#"{"action":"reread_keys","table":"shop.notes","keys":[{"id":3}]}"#);
    wait_for(60, "key 3 repaired", &worker_log, || {
        body_of(dir.path(), 3).as_deref() == Some("quiet")
    })
    .await;

    // A message that is not a control message is refused before it is sent, naming the actions.
    let out = common::tidemark()
        .args([
            "control",
            "send",
            "--config",
            &cfg,
            r#"{"action":"explode"}"#,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a control message") && err.contains("reread_keys"),
        "{err}"
    );

    // Shut down cleanly: the worker reports what it did.
    for child in [&mut worker, &mut apply, &mut capture] {
        child.terminate();
    }
    let text = std::fs::read_to_string(&worker_log).unwrap();
    assert!(
        text.contains("control: done"),
        "the new worker logged finished actions:\n{text}"
    );
}
