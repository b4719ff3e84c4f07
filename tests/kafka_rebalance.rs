//! A consumer-group rebalance under load over Apache Kafka: two apply members consume four
//! partitions while a hot-key workload runs; a third member joins (the partitions are spread over
//! three) and applies its share; then one of the first two leaves (SIGTERM: it commits what it
//! wrote and leaves the group, and the two left take its partitions over). No member restarts.
//! The target ends equal to the source row by row and reconcile finds no actionable drift.

mod common;
mod kafka_support;

use common::workload::{hot_keys, Workload};
use common::{assert_target_equals_source, run_ok, write_config};
use kafka_support::*;
use tidemark_testkit::{Kafka, MariaDb};

/// The applied count of a member's report, over both tables.
fn applied(member: &Proc) -> u64 {
    let text = member.report();
    ["accounts", "links"]
        .iter()
        .map(|t| applied_ignored(&text, t).0)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_member_joins_and_one_leaves_under_load() {
    let db = MariaDb::start();
    db.sql(SHOP);
    let broker = Kafka::shared();
    let transport = broker
        .transport_toml()
        .replace("partitions = 2\n", "partitions = 4\n");
    assert!(transport.contains("partitions = 4\n"), "{transport}");
    let kafka = {
        let mut k = kafka_config(&broker);
        k.partitions = 4;
        k
    };
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.url(), &["shop"], &transport);
    let cfg = config.to_str().unwrap().to_string();
    let target = dir.path().join("target.db");
    let tables = shop_tables();
    run_ok(&["topics", "init", "--config", &cfg]);
    let mut capture = Proc::start("capture", &["capture", "--config", &cfg], dir.path());
    wait_for_capture_start(&kafka);
    let member = |name: &str| Proc::start(name, &["apply", "--config", &cfg], dir.path());
    let mut a = member("apply-a");
    let mut b = member("apply-b");
    wait_for_members(&kafka, 2);

    db.sql_db("shop", PRELOAD);
    let load = Workload::start_paced(db.url(), STEADY, hot_keys(3000));
    wait("the workload under way and applied", 120, || {
        live_rows(&target, "accounts") > 0 && load.ran() > 200
    });

    // A third member joins under load: the group rebalances to three.
    let mut c = member("apply-c");
    wait_for_members(&kafka, 3);
    let joined_at = load.ran();
    wait("the workload to go on after the join", 60, || {
        load.ran() > joined_at + 300
    });
    // One of the first two leaves: the group rebalances to two, which take its partitions.
    a.terminate();
    assert!(applied(&a) > 0, "member a applied its share before leaving");
    wait_for_members(&kafka, 2);
    let left_at = load.ran();
    println!("c joined at statement {joined_at}, a left at {left_at}");
    // The workload runs on after a left.
    load.finish(left_at + 300).await;

    // b and c apply everything capture publishes.
    let published = wait_for_capture_to_publish_all(&kafka, &db, &mut capture);
    wait_for_frontier(&kafka, &tables, published, 180);
    capture.terminate();
    b.terminate();
    c.terminate();
    assert!(applied(&c) > 0, "the member that joined applied its share");

    let rows = assert_target_equals_source(&db.url(), &target, &tables).await;
    assert!(rows >= 3000, "compared {rows} rows");
    assert_reconcile_clean(&cfg);
}
