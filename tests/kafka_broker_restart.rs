//! Apache Kafka stopped and started again (the same data directory, the same address) while
//! capture publishes and two apply members consume under a live hot-key workload. Every process
//! rides the outage out; afterwards nothing is lost (the target equals the source row by row,
//! and reconcile finds no actionable drift) and nothing is out of order: in every partition each
//! key's changes follow each other in source order (apply reads a partition in offset order, so
//! it applies them in that order; the idempotent producer's retries across the restart neither
//! reordered nor doubled them).
//!
//! The broker is this test's own (`Kafka::dedicated`): it is the one test that stops it.

mod common;
mod kafka_support;

use std::time::{Duration, Instant};

use common::workload::{hot_keys, Workload};
use common::{assert_target_equals_source, run_ok, write_config};
use kafka_support::*;
use tidemark_testkit::{Kafka, MariaDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_under_load_loses_nothing_and_reorders_nothing() {
    let db = MariaDb::start();
    db.sql(SHOP);
    let broker = Kafka::dedicated();
    let kafka = kafka_config(&broker);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.url(), &["shop"], &broker.transport_toml());
    let cfg = config.to_str().unwrap().to_string();
    let target = dir.path().join("target.db");
    let tables = shop_tables();
    run_ok(&["topics", "init", "--config", &cfg]);
    let mut capture = Proc::start("capture", &["capture", "--config", &cfg], dir.path());
    wait_for_capture_start(&kafka);
    let mut member_a = Proc::start("apply-a", &["apply", "--config", &cfg], dir.path());
    let mut member_b = Proc::start("apply-b", &["apply", "--config", &cfg], dir.path());
    wait_for_members(&kafka, 2);

    db.sql_db("shop", PRELOAD);
    let load = Workload::start_paced(db.url(), STEADY, hot_keys(3000));
    wait("the workload under way and applied", 120, || {
        live_rows(&target, "accounts") > 0 && load.ran() > 200
    });

    // The broker goes away mid-stream; the source moves on while it is down.
    blocking(|| broker.server.stop());
    let at_stop = load.ran();
    wait("the source to move on while the broker is down", 60, || {
        load.ran() > at_stop + 300
    });
    for p in [&mut capture, &mut member_a, &mut member_b] {
        assert!(p.running(), "{} rides out the broker's outage", p.name());
    }
    blocking(|| broker.server.start_again());
    println!(
        "the broker was down while the workload ran statements {at_stop} to {}",
        load.ran()
    );
    load.finish(1000).await;

    // Capture publishes everything, and the two members apply it, all without a restart.
    let published = wait_for_capture_to_publish_all(&kafka, &db, &mut capture);
    wait_for_frontier(&kafka, &tables, published, 180);
    capture.terminate();
    member_a.terminate();
    member_b.terminate();
    // Members leaving hand their partitions over, and the taker applies them again from the
    // committed offsets: the stored frontier must not move back with the older markers it meets
    // (reconcile would wait for the group to get there again, and with the group stopped, for
    // ever).
    assert!(
        frontier(&kafka, &tables).is_some_and(|f| f >= published),
        "the stored frontier moved back below {published} as the members left"
    );

    for topic in changes_topics(&kafka, &tables) {
        let changes = published_changes(&kafka, &topic);
        assert!(!changes.is_empty(), "changes in {topic}");
        assert_versions_ascend_per_key(&changes);
    }
    let rows = assert_target_equals_source(&db.url(), &target, &tables).await;
    assert!(rows >= 3000, "compared {rows} rows");
    assert_reconcile_clean(&cfg);
}

/// A member that stays out of its consumer group (here: the broker, its group coordinator, is
/// gone) for `transport.coordinator_timeout_seconds` stops with an error naming the setting, so
/// that it is restarted, instead of waiting detached for ever as librdkafka can after a
/// coordinator restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_out_of_its_group_too_long_stops_so_that_it_is_restarted() {
    let db = MariaDb::start();
    db.sql(SHOP);
    let broker = Kafka::dedicated();
    let kafka = kafka_config(&broker);
    let dir = tempfile::tempdir().unwrap();
    let transport = broker.transport_toml().replace(
        "[transport.consumer]",
        "coordinator_timeout_seconds = 10\n[transport.consumer]",
    );
    let config = write_config(dir.path(), &db.url(), &["shop"], &transport);
    let cfg = config.to_str().unwrap().to_string();
    run_ok(&["topics", "init", "--config", &cfg]);
    let mut member = Proc::start("apply", &["apply", "--config", &cfg], dir.path());
    wait_for_members(&kafka, 1);

    // From the moment the broker begins to stop (the member can lose its coordinator then).
    let stopped = Instant::now();
    blocking(|| broker.server.stop());
    wait("the detached member to stop", 120, || !member.running());
    let waited = stopped.elapsed();
    let status = member.wait();
    assert!(!status.success(), "{}", member.log());
    let log = member.log();
    assert!(
        log.contains("out of its group") && log.contains("transport.coordinator_timeout_seconds"),
        "{log}"
    );
    assert!(
        waited >= Duration::from_secs(10),
        "it waited the configured 10 s first ({waited:?})"
    );
    blocking(|| broker.server.start_again());
}
