//! The stages as separate processes with Apache Kafka between them (the broker the test run
//! shares, under a topic prefix and consumer group of this test's own):
//! backfill, capture and two apply workers while a live workload runs; capture, backfill and one
//! apply worker are killed with `kill -9` midway (capture and backfill restart from the
//! checkpoints topic); after catching up the target equals the source exactly. Then a reconcile
//! over Kafka's apply frontier, and drift on the drift topic.

mod common;
mod kafka_support;

use std::time::{Duration, Instant};

use common::workload::{Pace, Workload};
use common::{assert_target_equals_source, run_ok, tidemark, write_config};
use kafka_support::{kafka_config, wait, wait_for_capture_start, wait_for_members, Proc};
use tidemark_schemas::TableId;
use tidemark_testkit::{Kafka, MariaDb};

/// Statement `n` of the workload: keys spread over the table, inserted, moved, updated, deleted.
fn spread_accounts(n: u64) -> String {
    let n = n as i64;
    let k = (n * 7919) % 3000 + 1;
    match n % 5 {
        0 => format!("DELETE FROM shop.accounts WHERE id = {k}"),
        1 => format!("INSERT INTO shop.accounts VALUES ({k}, {n}, 'ins') ON DUPLICATE KEY UPDATE note = 'dup {n}'"),
        2 => format!("UPDATE IGNORE shop.accounts SET id = id + 100000 WHERE id = {k}"),
        _ => format!("UPDATE shop.accounts SET balance = {n} WHERE id = {k}"),
    }
}

/// An invariant evaluated by the Kafka-mode reconcile, over the keys it settles from the
/// group's frontier.
const INVARIANT: &str = r#"
[[invariant]]
name = "balance per note kind"
table = "shop.accounts"
source = "sum(balance) + count(*) group by substring(coalesce(note, '-'), 1, 1)"
target = "sum(balance) + count(*) group by substring(coalesce(note, '-'), 1, 1)"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_jobs_over_kafka_converge_after_kill_9_of_capture_backfill_and_an_apply_worker() {
    let db = MariaDb::start();
    db.sql(
        "CREATE DATABASE shop CHARACTER SET utf8mb4;
         CREATE TABLE shop.accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL, note VARCHAR(40));",
    );
    db.sql_db(
        "shop",
        "INSERT INTO accounts SELECT seq, seq, CONCAT('n', seq) FROM seq_1_to_3000",
    );
    let broker = Kafka::shared();
    let kafka = kafka_config(&broker);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &db.url(),
        &["shop"],
        &format!(
            "[backfill]\nchunk_rows = 500\n{INVARIANT}\n{}",
            broker.transport_toml()
        ),
    );
    let cfg = config.to_str().unwrap().to_string();
    run_ok(&["topics", "init", "--config", &cfg]);
    // Idempotent.
    let again = run_ok(&["topics", "init", "--config", &cfg]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("exists"));

    let mut capture = Proc::start("capture", &["capture", "--config", &cfg], dir.path());
    wait_for_capture_start(&kafka); // before the backfill reads anything
    let pace = Pace {
        pause: Duration::from_millis(3),
        tolerate_errors: false,
    };
    let load = Workload::start_paced(db.url(), pace, spread_accounts);
    let mut backfill = Proc::start("backfill", &["backfill", "--config", &cfg], dir.path());
    let mut apply_a = Proc::start("apply-a", &["apply", "--config", &cfg], dir.path());
    let mut apply_b = Proc::start("apply-b", &["apply", "--config", &cfg], dir.path());
    // Midway: both apply members at work and the backfill partly done.
    wait_for_members(&kafka, 2);
    wait("the backfill under way (rows in the target)", 90, || {
        accounts_in_target(&dir.path().join("target.db")) >= 500
    });
    // kill -9 the capture and the backfill midway; they resume from the checkpoints topic.
    capture.kill_9();
    backfill.kill_9();
    let mut capture = Proc::start("capture-2", &["capture", "--config", &cfg], dir.path());
    let mut backfill = Proc::start("backfill-2", &["backfill", "--config", &cfg], dir.path());
    let before = accounts_in_target(&dir.path().join("target.db"));
    wait(
        "the restarted stages at work (more rows in the target)",
        90,
        || accounts_in_target(&dir.path().join("target.db")) > before,
    );
    apply_b.kill_9(); // mid-stream
    load.finish(500).await;
    let status = backfill.wait();
    assert!(status.success(), "backfill finished: {}", backfill.log());

    // Stop capture cleanly, then let it catch up as a batch job; apply catches up too.
    capture.terminate();
    run_ok(&["capture", "--config", &cfg, "--until-caught-up"]);
    apply_a.kill_9();
    // `apply --until-caught-up` catches up on the partitions it is assigned: wait until the group
    // has noticed that the killed members are gone, so the last worker gets every partition.
    wait_for_members(&kafka, 0);
    run_ok(&["apply", "--config", &cfg, "--until-caught-up"]);

    let rows = assert_target_equals_source(
        &db.url(),
        &dir.path().join("target.db"),
        &[TableId::new("shop", "accounts")],
    )
    .await;
    assert!(rows > 1000, "compared {rows} rows");

    // The reconciler reads the group's apply frontier from Kafka.
    let out = tidemark()
        .args(["reconcile", "--config", &cfg, "--settle-timeout", "20"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "no drift:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("invariant \"balance per note kind\" on shop.accounts: held in "),
        "{report}"
    );

    // A fault is reported on the drift topic too, in Avro.
    rusqlite::Connection::open(dir.path().join("target.db"))
        .unwrap()
        .execute(
            "DELETE FROM accounts WHERE id = (SELECT MIN(id) FROM accounts WHERE _tm_deleted = 0)",
            [],
        )
        .unwrap();
    let out = tidemark()
        .args(["reconcile", "--config", &cfg, "--settle-timeout", "20"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let drift = tokio::task::spawn_blocking(move || tidemark_kafka::read_drift(&kafka))
        .await
        .unwrap()
        .expect("read the drift topic");
    // The missing row, and the group of the invariant it changes (the drift topic's partitions
    // give no order between them).
    let mut classes: Vec<(&str, &str)> = drift
        .iter()
        .map(|d| (d.table.as_str(), d.class.as_str()))
        .collect();
    classes.sort();
    assert_eq!(
        classes,
        [
            ("shop.accounts", "invariant_violation"),
            ("shop.accounts", "missing")
        ],
        "{drift:?}"
    );
    let violation = drift
        .iter()
        .find(|d| d.class == "invariant_violation")
        .expect("the invariant's finding");
    assert_eq!(violation.columns[0].name, "balance per note kind");
}

/// Rows in the target's accounts table (0 before it exists).
fn accounts_in_target(target: &std::path::Path) -> i64 {
    rusqlite::Connection::open(target)
        .and_then(|c| c.query_row("SELECT COUNT(*) FROM accounts", [], |r| r.get(0)))
        .unwrap_or(0)
}

#[test]
fn apply_without_a_kafka_transport_says_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "mysql://root@127.0.0.1:1", &["shop"], "");
    let out = tidemark()
        .args(["apply", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("transport.kind"));
}

#[test]
fn a_broker_that_is_down_at_start_is_named() {
    let db = MariaDb::start();
    db.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY);");
    let port = tidemark_testkit::free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &db.url(),
        &["shop"],
        &format!("[transport]\nkind = \"kafka\"\nbrokers = [\"127.0.0.1:{port}\"]\nconnect_timeout_seconds = 3\n"),
    );
    let started = Instant::now();
    let out = tidemark()
        .args(["topics", "init", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "retries are bounded"
    );
}
