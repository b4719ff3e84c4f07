//! The production path: capture and backfill publish to Apache Kafka, two apply members write to
//! the CQL target (the shared Apache Cassandra node), under a hot-key workload. The target ends
//! equal to the source row by row and reconcile finds no actionable drift (issue 27).

mod common;
mod kafka_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{assert_cql_target_equals_source, run_ok, CqlTarget};
use kafka_support::*;
use tidemark_schemas::BinlogPosition;
use tidemark_testkit::{Kafka, MariaDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_stages_with_two_apply_members_into_cassandra_converge() {
    let db = MariaDb::start();
    db.sql(SHOP);
    db.sql_db("shop", PRELOAD);
    let broker = Kafka::shared();
    let kafka = kafka_config(&broker);
    let target = CqlTarget::shared();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidemark.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{}\"\nserver_id = 4711\ndatabases = [\"shop\"]\n\n{}\n{}\n[reconcile]\nsettle_timeout_seconds = 30\n",
            db.url(),
            target.target_toml(),
            broker.transport_toml()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap().to_string();
    let tables = shop_tables();
    run_ok(&["topics", "init", "--config", &cfg]);
    run_ok(&["target", "init", "--config", &cfg]);

    let mut capture = Proc::start("capture", &["capture", "--config", &cfg], dir.path());
    wait_for_capture_start(&kafka);
    let member = |name: &str| Proc::start(name, &["apply", "--config", &cfg], dir.path());
    let mut a = member("apply-a");
    let mut b = member("apply-b");
    wait_for_members(&kafka, 2);

    let statements = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(4);
    let load = tokio::spawn(hot_keys(db.url(), until, 3000, statements.clone()));
    let mut backfill = Proc::start("backfill", &["backfill", "--config", &cfg], dir.path());
    assert!(backfill.wait().success(), "{}", backfill.log());
    let ran = load.await.unwrap();
    assert!(ran > 100, "the workload ran ({ran} statements)");
    assert!(statements.load(Ordering::SeqCst) > 0);

    // Both members apply everything capture publishes.
    let end = end_of_log(&db);
    let mut published = None;
    wait("capture published the whole binlog", 180, || {
        published = capture_checkpoint(&kafka)
            .map(|c| c.position.parse::<BinlogPosition>().expect("a position"))
            .filter(|p| *p >= end);
        published.is_some()
    });
    wait_for_frontier(&kafka, &tables, published.expect("set above"), 180);
    let topics = changes_topics(&kafka, &tables);
    wait_for_no_lag(&kafka, &topics, 180);
    capture.terminate();
    a.terminate();
    b.terminate();

    let rows = assert_cql_target_equals_source(&db.url(), &target, &tables).await;
    assert!(rows >= 3000, "compared {rows} rows");
    assert_reconcile_clean(&cfg);
}
