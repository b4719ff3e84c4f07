//! The production path: capture and backfill publish to Apache Kafka, two apply members write to
//! the CQL target (the shared Apache Cassandra node), under a hot-key workload. The target ends
//! equal to the source row by row and reconcile finds no actionable drift (issue 27).

mod common;
mod kafka_support;

use common::workload::{hot_keys, Workload};
use common::{assert_cql_target_equals_source, run_ok, CqlTarget};
use kafka_support::*;
use tidemark_schemas::TableId;
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
    let (_, cfg) = shop_config(dir.path(), &db, &target, &broker);
    let tables = shop_tables();
    run_ok(&["topics", "init", "--config", &cfg]);
    run_ok(&["target", "init", "--config", &cfg]);

    let mut capture = Proc::start("capture", &["capture", "--config", &cfg], dir.path());
    wait_for_capture_start(&kafka);
    let member = |name: &str| Proc::start(name, &["apply", "--config", &cfg], dir.path());
    let mut a = member("apply-a");
    let mut b = member("apply-b");
    wait_for_members(&kafka, 2);

    let load = Workload::start_paced(db.url(), STEADY, hot_keys(3000));
    let mut backfill = Proc::start("backfill", &["backfill", "--config", &cfg], dir.path());
    assert!(backfill.wait().success(), "{}", backfill.log());
    load.finish(100).await;

    // Both members apply everything capture publishes.
    let published = wait_for_capture_to_publish_all(&kafka, &db, &mut capture);
    wait_for_frontier(&kafka, &tables, published, 180);
    let topics = changes_topics(&kafka, &tables);
    wait_for_no_lag(&kafka, &topics, 180);
    capture.terminate();
    a.terminate();
    b.terminate();

    let rows = assert_cql_target_equals_source(&db.url(), &target, &tables).await;
    assert!(rows >= 3000, "compared {rows} rows");
    assert_reconcile_clean(&cfg);
}

/// A row Cassandra refuses (an empty text as its partition key) met by a Kafka-mode apply member:
/// it goes to the dead-letter topic as `target_refused`, with the column, the target's type and
/// reason and where it was read from; its neighbours arrive, the member's offsets move past it
/// (no crash loop on one row), and reconcile names the key as `schema_rejection`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_cassandra_refuses_goes_to_the_dead_letter_topic_and_apply_goes_on() {
    let db = MariaDb::start();
    db.sql(
        "CREATE DATABASE shop CHARACTER SET utf8mb4;
         CREATE TABLE shop.tags (name VARCHAR(20) PRIMARY KEY, n INT);
         INSERT INTO shop.tags VALUES ('a', 1), ('', 2), ('b', 3);",
    );
    let broker = Kafka::shared();
    let kafka = kafka_config(&broker);
    let target = CqlTarget::shared();
    let dir = tempfile::tempdir().unwrap();
    let (config, cfg) = shop_config(dir.path(), &db, &target, &broker);
    let tags = TableId::new("shop", "tags");
    run_ok(&["topics", "init", "--config", &cfg]);
    run_ok(&["target", "init", "--config", &cfg]);
    let mut capture = Proc::start("capture", &["capture", "--config", &cfg], dir.path());
    wait_for_capture_start(&kafka);
    let mut backfill = Proc::start("backfill", &["backfill", "--config", &cfg], dir.path());
    assert!(backfill.wait().success(), "{}", backfill.log());
    // A live change after the refused row, in the same partition order: it must arrive too.
    db.sql("INSERT INTO shop.tags VALUES ('c', 4)");

    // The member serves /metrics (a config of its own: the other stages would take the port).
    let (member_config, port) = kafka_support::with_metrics(&config, "apply");
    let mut member = Proc::start(
        "apply",
        &["apply", "--config", member_config.to_str().unwrap()],
        dir.path(),
    );
    let topics = changes_topics(&kafka, std::slice::from_ref(&tags));
    wait_for_capture_to_publish_all(&kafka, &db, &mut capture);
    wait_for_no_lag(&kafka, &topics, 180);
    assert!(member.running(), "apply keeps going:\n{}", member.log());
    let metrics = scrape(port);
    assert!(
        metrics
            .contains("tidemark_rows_rejected_total{table=\"shop.tags\",kind=\"target_refused\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tidemark_rows_applied_total{table=\"tags\"}"),
        "{metrics}"
    );
    // Caught up: the lag of every partition it consumes is 0 by the next statistics (5 s), and
    // its applied frontier is published.
    let mut metrics = String::new();
    wait("the member's lag at 0 in its metrics", 30, || {
        metrics = scrape(port);
        let lags: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("tidemark_apply_lag_messages{"))
            .collect();
        !lags.is_empty() && lags.iter().all(|l| l.ends_with(" 0"))
    });
    assert!(
        metrics.contains("tidemark_apply_frontier_offset "),
        "{metrics}"
    );
    // The Helm chart's alerts and dashboard use only apply series a member serves.
    common::assert_serves(&metrics, &common::chart_metrics(&["tidemark_apply_"], &[]));
    capture.terminate();
    member.terminate();

    let letters = dead_letters(&kafka);
    let refused: Vec<&serde_json::Value> = letters
        .iter()
        .filter(|l| l["source_table"] == "shop.tags")
        .collect();
    assert!(
        !refused.is_empty(),
        "a dead letter for the row: {letters:?}"
    );
    for r in &refused {
        assert_eq!(r["kind"], "target_refused", "{r}");
        assert_eq!(r["key"], "{\"name\":\"\"}", "{r}");
        assert_eq!(r["column"], "name", "{r}");
        assert_eq!(r["target_type"], "text(20) not null", "{r}");
        assert!(
            r["reason"].as_str().unwrap().contains("the target refused"),
            "{r}"
        );
    }
    let mut source = tidemark_ingest::Source::connect(&db.url()).await.unwrap();
    let schema = source.load_schema(&tags).await.unwrap();
    let plan = tidemark_transform::Transformer::new(&[]).unwrap();
    let target_schema = plan.plan(&schema).unwrap().target_schema().clone();
    let stored = blocking(|| {
        use tidemark_sink::Sink;
        let mut sink = target.sink();
        sink.ensure_table(&target_schema).unwrap();
        sink.scan("tags", None, 100).unwrap().len()
    });
    assert_eq!(stored, 3, "'a', 'b' and 'c' arrived");
    let out = crate::common::tidemark()
        .args(["reconcile", "--config", &cfg, "--settle-timeout", "30"])
        .output()
        .expect("run tidemark reconcile");
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("schema_rejection") && report.contains("{\"name\":\"\"}"),
        "{report}"
    );
}

/// Every rejection on the dead-letter topic now, as the JSON it carries.
fn dead_letters(kafka: &tidemark_kafka::KafkaConfig) -> Vec<serde_json::Value> {
    blocking(|| {
        let topic = tidemark_kafka::Topics::new(kafka).dlq();
        let mut reader =
            tidemark_kafka::TopicReader::open(kafka, &topic, "test-dlq").expect("topic reader");
        let mut out = Vec::new();
        reader
            .catch_up(|m| {
                use rdkafka::message::{Headers, Message};
                let rejection = m.headers().is_some_and(|h| {
                    h.iter()
                        .any(|h| h.key == "tm-kind" && h.value == Some(b"rejection".as_slice()))
                });
                if rejection {
                    out.push(serde_json::from_slice(m.payload().expect("a value")).expect("JSON"));
                }
                Ok(())
            })
            .expect("read the dead-letter topic");
        out
    })
}

/// The configuration of both tests (database `shop`, the CQL target, the Kafka transport), at
/// `DIR/tidemark.toml`: its path, and the path as text.
fn shop_config(
    dir: &std::path::Path,
    db: &MariaDb,
    target: &CqlTarget,
    broker: &Kafka,
) -> (std::path::PathBuf, String) {
    let config = dir.join("tidemark.toml");
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
    (config, cfg)
}
