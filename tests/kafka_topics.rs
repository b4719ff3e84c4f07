//! `tidemark topics init` on Apache Kafka, read back through Kafka's own admin API (metadata for
//! partition counts, DescribeConfigs for the cleanup policy), not through tidemark's code:
//! the changes topics get the configured partitions (`partitions`, `table_partitions`), the
//! checkpoints topic is compacted with one partition, the control topic has one partition. A
//! second run, and a run over a layout an operator made beforehand, change nothing; a layout that
//! does not fit (fewer partitions than configured, a checkpoints topic that is not compacted) is
//! refused with the topic named. Then the pipeline runs over that layout and the target equals the
//! source, with no actionable drift.

mod common;
mod kafka_support;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{assert_target_equals_source, run_ok, tidemark, write_config};
use kafka_support::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use tidemark_kafka::Topics;
use tidemark_schemas::TableId;
use tidemark_testkit::{Kafka, MariaDb};

fn admin(addr: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .expect("an admin client")
}

/// Partition count and cleanup policy of each of `topics`, as the broker reports them.
async fn layout(
    admin: &AdminClient<DefaultClientContext>,
    topics: &[String],
) -> BTreeMap<String, (usize, String)> {
    let mut out = BTreeMap::new();
    for topic in topics {
        let md = blocking(|| {
            admin
                .inner()
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .expect("metadata")
        });
        let t = &md.topics()[0];
        assert!(t.error().is_none(), "{topic}: {:?}", t.error());
        let described = admin
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())
            .await
            .expect("describe configs");
        let config = described
            .into_iter()
            .next()
            .expect("one answer")
            .expect("the topic's configuration");
        let policy = config
            .get("cleanup.policy")
            .and_then(|e| e.value.clone())
            .expect("a cleanup policy");
        out.insert(topic.clone(), (t.partitions().len(), policy));
    }
    out
}

/// `topics init` lines: topic → "created" or "exists".
fn init_report(out: &std::process::Output) -> BTreeMap<String, String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[2] == "partitions").then(|| (f[0].to_string(), f[3].to_string()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_init_creates_the_configured_layout_and_keeps_an_existing_one() {
    let db = MariaDb::start();
    db.sql(
        "CREATE DATABASE shop CHARACTER SET utf8mb4;
         CREATE TABLE shop.a (id INT PRIMARY KEY, v VARCHAR(20));
         CREATE TABLE shop.b (id INT PRIMARY KEY, v VARCHAR(20));
         CREATE TABLE shop.c (id INT PRIMARY KEY, v VARCHAR(20));",
    );
    db.sql_db(
        "shop",
        "INSERT INTO a SELECT seq, CONCAT('a', seq) FROM seq_1_to_300;
         INSERT INTO b SELECT seq, CONCAT('b', seq) FROM seq_1_to_300;
         INSERT INTO c SELECT seq, CONCAT('c', seq) FROM seq_1_to_300;",
    );
    let broker = Kafka::shared();
    let transport = broker.transport_toml().replace(
        "partitions = 2\n",
        "partitions = 3\ntable_partitions = { \"shop.b\" = 5 }\n",
    );
    let mut kafka = kafka_config(&broker);
    kafka.partitions = 3;
    let topics = Topics::new(&kafka);
    let (a, b, c) = (
        TableId::new("shop", "a"),
        TableId::new("shop", "b"),
        TableId::new("shop", "c"),
    );
    let all: Vec<String> = vec![
        topics.changes(&a),
        topics.changes(&b),
        topics.changes(&c),
        topics.checkpoints(),
        topics.drift(),
        topics.dlq(),
        topics.control(),
        topics.authority(),
    ];
    let admin = admin(broker.addr());
    // An operator made shop.c's changes topic beforehand, with more partitions than configured.
    let made = admin
        .create_topics(
            &[NewTopic::new(
                &topics.changes(&c),
                6,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .expect("create topics");
    assert!(made.iter().all(|r| r.is_ok()), "{made:?}");

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.url(), &["shop"], &transport);
    let cfg = config.to_str().unwrap().to_string();
    let first = init_report(&run_ok(&["topics", "init", "--config", &cfg]));
    let mut want_report: BTreeMap<String, String> =
        all.iter().map(|t| (t.clone(), "created".into())).collect();
    want_report.insert(topics.changes(&c), "exists".into());
    assert_eq!(first, want_report);

    let want: BTreeMap<String, (usize, String)> = [
        (topics.changes(&a), 3, "delete"),
        (topics.changes(&b), 5, "delete"),
        (topics.changes(&c), 6, "delete"),
        (topics.checkpoints(), 1, "compact"),
        (topics.drift(), 3, "delete"),
        (topics.dlq(), 3, "delete"),
        (topics.control(), 1, "delete"),
        (topics.authority(), 1, "compact"),
    ]
    .into_iter()
    .map(|(t, n, p)| (t, (n, p.to_string())))
    .collect();
    assert_eq!(layout(&admin, &all).await, want, "the layout after init");

    // Idempotent: a second run finds everything and changes nothing.
    let second = init_report(&run_ok(&["topics", "init", "--config", &cfg]));
    assert!(second.values().all(|s| s == "exists"), "{second:?}");
    assert_eq!(second.len(), all.len(), "{second:?}");
    assert_eq!(
        layout(&admin, &all).await,
        want,
        "the layout after a second init"
    );

    // A layout that does not fit is refused, naming the topic: fewer partitions than configured…
    let bigger = dir.path().join("bigger.toml");
    std::fs::write(
        &bigger,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("\"shop.b\" = 5", "\"shop.b\" = 5, \"shop.a\" = 4"),
    )
    .unwrap();
    let out = tidemark()
        .args(["topics", "init", "--config", bigger.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "`{}` has 3 partition(s), fewer than the 4",
            topics.changes(&a)
        )),
        "{err}"
    );
    // …or a checkpoints topic someone made without compaction (its checkpoints would expire).
    let elsewhere = dir.path().join("elsewhere.toml");
    let other_prefix = format!("{}_other", kafka.topic_prefix);
    std::fs::write(
        &elsewhere,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace(&kafka.topic_prefix, &other_prefix),
    )
    .unwrap();
    let plain_checkpoints = format!("{other_prefix}.checkpoints");
    admin
        .create_topics(
            &[NewTopic::new(
                &plain_checkpoints,
                1,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .expect("create topics");
    let out = tidemark()
        .args(["topics", "init", "--config", elsewhere.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("`{plain_checkpoints}` has cleanup.policy=delete"))
            && err.contains("cleanup.policy=compact"),
        "{err}"
    );
    assert_eq!(layout(&admin, &all).await, want, "refusals change nothing");

    // The pipeline over this layout: the target equals the source.
    run_ok(&["capture", "--config", &cfg, "--until-caught-up"]);
    run_ok(&["backfill", "--config", &cfg]);
    db.sql_db(
        "shop",
        "UPDATE a SET v = 'changed' WHERE id <= 10; DELETE FROM b WHERE id > 290;
         INSERT INTO c VALUES (301, 'new');",
    );
    run_ok(&["capture", "--config", &cfg, "--until-caught-up"]);
    let out = run_ok(&["apply", "--config", &cfg, "--until-caught-up"]);
    let report = String::from_utf8_lossy(&out.stdout);
    let rows =
        assert_target_equals_source(&db.url(), &dir.path().join("target.db"), &[a, b, c]).await;
    assert_eq!(rows, 300 + 290 + 301, "compared {rows} rows\n{report}");
    assert_reconcile_clean(&cfg);
}
