//! Helpers of the end-to-end tests over Apache Kafka (`tests/kafka_*.rs`): the test's transport
//! as a [`KafkaConfig`], what the broker holds read back (checkpoints, changes, the consumer
//! group, its lag), signals to the `tidemark` processes, and the closing reconcile.
//!
//! Every wait here is for a condition ([`tidemark_testkit::wait_for`]), never a fixed time.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::Child;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tidemark_ingest::CaptureCheckpoint;
use tidemark_kafka::{CheckpointReader, KafkaConfig, TopicReader, Topics, CAPTURE_STAGE};
use tidemark_schemas::{BinlogPosition, ChangeEvent, TableId};
use tidemark_testkit::Kafka;

/// The transport of `kafka` as the library sees it: what [`Kafka::transport_toml`] writes.
pub fn kafka_config(kafka: &Kafka) -> KafkaConfig {
    let text = kafka.transport_toml();
    let table: toml::Table = toml::from_str(&text).expect("transport_toml parses");
    let mut transport = table["transport"].as_table().expect("[transport]").clone();
    transport.remove("kind");
    transport
        .try_into()
        .expect("transport_toml is a Kafka transport")
}

/// Run blocking broker calls from an async test (multi-threaded runtime).
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Wait (blocking) until `ready`, panicking after `secs` seconds with `what`.
pub fn wait(what: &str, secs: u64, ready: impl FnMut() -> bool) {
    blocking(|| tidemark_testkit::wait_for(what, Duration::from_secs(secs), ready))
}

/// The capture checkpoint stored in the checkpoints topic now, if any.
pub fn capture_checkpoint(config: &KafkaConfig) -> Option<CaptureCheckpoint> {
    blocking(|| {
        let mut reader = CheckpointReader::open(config).expect("checkpoints reader");
        reader.catch_up().expect("read the checkpoints topic");
        reader
            .entries()
            .get(&format!("{CAPTURE_STAGE}/*"))
            .map(|cp| serde_json::from_str(&cp.value).expect("a capture checkpoint"))
    })
}

/// Wait until capture stored its start position (it does so before it reads the binlog).
pub fn wait_for_capture_start(config: &KafkaConfig) {
    wait(
        "capture's start position in the checkpoints topic",
        90,
        || capture_checkpoint(config).is_some(),
    );
}

fn client(config: &KafkaConfig) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", config.bootstrap())
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .create()
        .expect("a Kafka client")
}

/// The members of the apply group when it is stable (no rebalance under way), else `None`.
pub fn stable_members(config: &KafkaConfig) -> Option<usize> {
    let list = client(config)
        .fetch_group_list(Some(&config.group_id), Duration::from_secs(10))
        .ok()?;
    let group = list.groups().iter().find(|g| g.name() == config.group_id)?;
    match group.state() {
        "Stable" => Some(group.members().len()),
        "Empty" | "Dead" => Some(0),
        _ => None,
    }
}

/// Wait until the apply group is stable with `n` members.
pub fn wait_for_members(config: &KafkaConfig, n: usize) {
    wait(&format!("a stable apply group of {n}"), 90, || {
        stable_members(config) == Some(n)
    });
}

/// The changes topics of `tables` in `config`.
pub fn changes_topics(config: &KafkaConfig, tables: &[TableId]) -> Vec<String> {
    let topics = Topics::new(config);
    tables.iter().map(|t| topics.changes(t)).collect()
}

/// Per partition of `topics`: (the group's committed offset, the high watermark).
pub fn offsets(config: &KafkaConfig, topics: &[String]) -> BTreeMap<(String, i32), (i64, i64)> {
    let consumer = client(config);
    let mut tpl = TopicPartitionList::new();
    let mut out = BTreeMap::new();
    for topic in topics {
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let parts = md.topics()[0].partitions().len() as i32;
        assert!(parts > 0, "topic {topic} exists");
        for p in 0..parts {
            tpl.add_partition(topic, p);
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            out.insert((topic.clone(), p), (0, high));
        }
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    for e in committed.elements() {
        if let Offset::Offset(o) = e.offset() {
            if let Some(entry) = out.get_mut(&(e.topic().to_string(), e.partition())) {
                entry.0 = o;
            }
        }
    }
    out
}

/// Messages of `topics` the group has not committed yet.
pub fn lag(config: &KafkaConfig, topics: &[String]) -> i64 {
    offsets(config, topics)
        .values()
        .map(|(committed, high)| (high - committed).max(0))
        .sum()
}

/// Wait until the running apply members committed everything in `topics`.
pub fn wait_for_no_lag(config: &KafkaConfig, topics: &[String], secs: u64) {
    wait("the apply group committed every message", secs, || {
        lag(config, topics) == 0
    });
}

/// A change message read back from a changes topic.
pub struct Published {
    pub partition: i32,
    pub offset: i64,
    pub change: ChangeEvent,
}

/// Every change message (markers left out) of `topic` now, per partition in offset order.
/// Single-object values only (no registry).
pub fn published_changes(config: &KafkaConfig, topic: &str) -> Vec<Published> {
    blocking(|| {
        let mut reader = TopicReader::open(config, topic, "test-reader").expect("topic reader");
        let mut out = Vec::new();
        reader
            .catch_up(|m| {
                let kind = m.headers().and_then(|h| {
                    use rdkafka::message::Headers;
                    h.iter()
                        .find(|h| h.key == "tm-kind")
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                });
                if kind.as_deref() == Some("change") {
                    let change =
                        tidemark_schemas::avro::decode_change_event(m.payload().expect("a value"))
                            .expect("a change event");
                    out.push(Published {
                        partition: m.partition(),
                        offset: m.offset(),
                        change,
                    });
                }
                Ok(())
            })
            .expect("read the changes topic");
        out.sort_by_key(|p| (p.partition, p.offset));
        out
    })
}

/// Every key's changes keep their source order in the topic: in offset order, each change of a
/// key has a higher version than the one before (so apply, reading a partition in order, never
/// meets an older change of a key after a newer one). For a topic written by one capture run.
pub fn assert_versions_ascend_per_key(published: &[Published]) {
    let mut last: BTreeMap<(i32, String), (i64, i64)> = BTreeMap::new();
    for p in published {
        let key = (p.partition, p.change.key.canonical_text());
        if let Some((version, offset)) = last.get(&key) {
            assert!(
                p.change.version > *version,
                "key {} in partition {}: version {} at offset {} after version {version} at offset {offset}",
                key.1,
                p.partition,
                p.change.version,
                p.offset
            );
        }
        last.insert(key, (p.change.version, p.offset));
    }
}

/// The newest change position in `published`.
pub fn newest_position(published: &[Published]) -> Option<BinlogPosition> {
    published.iter().map(|p| p.change.position).max()
}

/// Send `signal` (`STOP`, `CONT`, `TERM`, `KILL`) to a child process.
pub fn signal(child: &Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {}", child.id());
}

/// SIGTERM, then wait for a clean exit (0).
pub fn terminate(child: &mut Child, what: &str, log: &std::path::Path) {
    signal(child, "TERM");
    let status = child.wait().expect("wait");
    assert!(
        status.success(),
        "{what} shut down cleanly on SIGTERM ({status}):\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// `kill -9`, and reap it.
pub fn kill_9(child: &mut Child) {
    child.kill().expect("kill -9");
    child.wait().expect("wait");
}

/// `tidemark reconcile`: exit 0, no actionable drift. Returns its report.
pub fn assert_reconcile_clean(cfg: &str) -> String {
    let out = crate::common::tidemark()
        .args(["reconcile", "--config", cfg, "--settle-timeout", "30"])
        .output()
        .expect("run tidemark reconcile");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "reconcile reports no actionable drift:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
