//! Test support: Apache Kafka through the test kit (`dev/kafka`: the broker shared by the test
//! run, or one of the test's own), topic names and a consumer group of each test's own, and
//! hand-made changes.

#![allow(dead_code)]

pub mod registry;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use tidemark_ingest::CaptureMessage;
use tidemark_kafka::{
    ApplyOptions, ApplyReport, KafkaApplier, KafkaConfig, KafkaPublisher, PublishReport,
};
use tidemark_schemas::{
    BinlogPosition, ChangeEvent, Operation, Row, SourceColumn, SourceSchema, SourceType, TableId,
    TargetRecord, Value,
};
use tidemark_sink::{Sink, SqliteSink};
use tidemark_testkit::Kafka;
use tidemark_transform::Transformer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A Kafka broker for one test, with a topic prefix and a consumer group of the test's own.
pub struct Broker {
    kafka: Kafka,
}

impl Broker {
    /// The broker shared by the test run (started by the first test that asks). Panics (never
    /// skips) when it cannot be started.
    pub fn start() -> Broker {
        Broker {
            kafka: Kafka::shared(),
        }
    }

    /// A broker of this test only, one it may stop and start again.
    pub fn dedicated() -> Broker {
        Broker {
            kafka: Kafka::dedicated(),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        self.kafka.addr()
    }

    /// The test kit's handle (to stop and start a dedicated broker).
    pub fn kafka(&self) -> &Kafka {
        &self.kafka
    }

    /// A name of this test's own, for consumer groups of raw test clients.
    pub fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.kafka.prefix)
    }

    /// The transport of this test: librdkafka's defaults, except that a member that goes
    /// away loses its partitions in seconds rather than after librdkafka's default session
    /// timeout of 45 s (as the test kit's `transport_toml`).
    pub fn config(&self) -> KafkaConfig {
        let mut c = KafkaConfig::new(self.addr());
        c.topic_prefix = self.kafka.prefix.clone();
        c.group_id = self.kafka.group.clone();
        c.connect_timeout_seconds = 20;
        c.checkpoint_interval_ms = 100;
        c.heartbeat_seconds = 1;
        c.consumer
            .insert("session.timeout.ms".into(), "6000".into());
        c.consumer
            .insert("heartbeat.interval.ms".into(), "500".into());
        c
    }
}

/// The members of the consumer group of `config` (0 when the group is empty or unknown).
pub fn group_members(config: &KafkaConfig) -> usize {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", config.bootstrap())
        .create()
        .expect("a client to list groups");
    consumer
        .fetch_group_list(Some(&config.group_id), Duration::from_secs(10))
        .ok()
        .and_then(|list| {
            list.groups()
                .iter()
                .find(|g| g.name() == config.group_id)
                .map(|g| {
                    if g.state() == "Stable" {
                        g.members().len()
                    } else {
                        0
                    }
                })
        })
        .unwrap_or(0)
}

pub fn table() -> TableId {
    TableId::new("shop", "items")
}

pub fn schema() -> SourceSchema {
    let col = |name: &str, ty: SourceType, nullable: bool, ct: &str| SourceColumn {
        name: name.into(),
        ty,
        nullable,
        column_type: ct.into(),
    };
    SourceSchema {
        table: table(),
        columns: vec![
            col(
                "id",
                SourceType::Integer {
                    bits: 32,
                    unsigned: false,
                },
                false,
                "int(11)",
            ),
            col(
                "name",
                SourceType::Text {
                    charset: "utf8mb4".into(),
                    max_chars: Some(20),
                    fixed: false,
                },
                true,
                "varchar(20)",
            ),
            col(
                "qty",
                SourceType::Integer {
                    bits: 64,
                    unsigned: false,
                },
                true,
                "bigint(20)",
            ),
        ],
        key: vec![0],
        key_name: "PRIMARY".into(),
    }
}

pub fn pos(offset: u64) -> BinlogPosition {
    BinlogPosition::new("mysql-bin.000001", offset)
}

/// An insert/update of row `id` with `qty`, at version `version`.
pub fn upsert(id: i64, name: &str, qty: i64, version: i64) -> ChangeEvent {
    let mut key = Row::new();
    key.push("id", Value::Int(id));
    let mut after = Row::new();
    after.push("id", Value::Int(id));
    after.push("name", Value::Text(name.into()));
    after.push("qty", Value::Int(qty));
    ChangeEvent {
        source_server: "test-server".into(),
        table: table(),
        op: Operation::Insert,
        key,
        after: Some(after),
        version,
        position: pos(version as u64),
        gtid: None,
        commit_time_us: 1_700_000_000_000_000,
        chunk: None,
    }
}

pub fn delete(id: i64, version: i64) -> ChangeEvent {
    let mut key = Row::new();
    key.push("id", Value::Int(id));
    ChangeEvent {
        source_server: "test-server".into(),
        table: table(),
        op: Operation::Delete,
        key,
        after: None,
        version,
        position: pos(version as u64),
        gtid: None,
        commit_time_us: 1_700_000_000_000_000,
        chunk: None,
    }
}

/// `n` rows, one transaction each: schema, then (change, commit)*.
pub fn workload(n: i64) -> Vec<CaptureMessage> {
    let mut out = vec![CaptureMessage::Schema(Arc::new(schema()))];
    for i in 0..n {
        let v = 1000 + i * 10;
        out.push(CaptureMessage::Changes(vec![upsert(
            i,
            &format!("item {i}"),
            i * 2,
            v,
        )]));
        out.push(CaptureMessage::Commit {
            position: pos(v as u64 + 5),
            gtid: None,
            source_time: None,
        });
    }
    out
}

/// Publish `messages` through a fresh publisher and wait until everything is acknowledged.
pub async fn publish(config: &KafkaConfig, messages: Vec<CaptureMessage>) -> PublishReport {
    let publisher = KafkaPublisher::new(config, "test-server", &[table()])
        .await
        .expect("publisher connects");
    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(publisher.run(rx));
    for m in messages {
        tx.send(m).await.expect("publisher alive");
    }
    drop(tx);
    task.await.expect("publisher task").expect("publisher run")
}

/// Run one applier on `sink_path` with `options` on a blocking thread.
pub async fn apply(config: &KafkaConfig, sink_path: &Path, options: ApplyOptions) -> ApplyReport {
    let config = config.clone();
    let path = sink_path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut sink = SqliteSink::open(&path).expect("sqlite sink");
        let mut applier = KafkaApplier::new(&config, Transformer::identity(), Some(&[table()]))
            .expect("applier joins");
        applier
            .run(&mut sink, &options, &CancellationToken::new())
            .expect("applier runs")
    })
    .await
    .expect("apply thread")
}

pub fn until_caught_up() -> ApplyOptions {
    ApplyOptions {
        until_caught_up: true,
        ..ApplyOptions::default()
    }
}

/// What the sink must hold for each key: the transform of the newest change.
pub fn expected(changes: &[ChangeEvent]) -> BTreeMap<String, TargetRecord> {
    let plan = Transformer::identity().plan(&schema()).expect("plan");
    let mut out: BTreeMap<String, TargetRecord> = BTreeMap::new();
    for c in changes {
        let r = plan.apply(c).expect("no rejection");
        let k = c.key.canonical_text();
        if out.get(&k).is_none_or(|old| old.version() < r.version()) {
            out.insert(k, r);
        }
    }
    out
}

pub fn target_table() -> String {
    Transformer::identity()
        .plan(&schema())
        .expect("plan")
        .target_schema()
        .table
        .clone()
}

/// Every record in the sink, by source key text.
pub fn contents(path: &Path) -> BTreeMap<String, TargetRecord> {
    let mut sink = SqliteSink::open(path).expect("sqlite sink");
    let plan = Transformer::identity().plan(&schema()).expect("plan");
    sink.ensure_table(plan.target_schema()).expect("ensure");
    let mut out = BTreeMap::new();
    let mut after: Option<Row> = None;
    loop {
        let page = sink
            .scan(&target_table(), after.as_ref(), 1000)
            .expect("scan");
        if page.is_empty() {
            break;
        }
        after = Some(page.last().expect("non-empty").key.clone());
        for r in page {
            out.insert(r.lineage.source_key.clone(), r);
        }
    }
    out
}

pub fn assert_same(sink: &BTreeMap<String, TargetRecord>, want: &BTreeMap<String, TargetRecord>) {
    assert_eq!(sink.len(), want.len(), "number of keys in the sink");
    for (k, w) in want {
        let got = sink
            .get(k)
            .unwrap_or_else(|| panic!("key {k} missing in the sink"));
        assert_eq!(got.columns, w.columns, "columns of key {k}");
        assert_eq!(got.lineage, w.lineage, "lineage of key {k}");
    }
}

pub fn changes_of(messages: &[CaptureMessage]) -> Vec<ChangeEvent> {
    messages
        .iter()
        .filter_map(|m| match m {
            CaptureMessage::Changes(c) => Some(c.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}
