//! Topic names (DESIGN.md §7), client setup, broker reachability, and `topics init`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::{Client, ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaErrorCode;
use tidemark_schemas::TableId;
use tracing::{debug, info, warn};

use crate::{Error, KafkaConfig, Result};

/// The names of tidemark's topics under one prefix.
///
/// A changes topic is `<prefix>.changes.<db>.<table>` where every character of the database and
/// table names outside `[A-Za-z0-9_]` is written `-hh` (its UTF-8 bytes in hex): Kafka topic names
/// admit only `[A-Za-z0-9._-]`, and a `.` inside a name would make the split ambiguous. So
/// `shop.order-items` becomes `tidemark.changes.shop.order-2ditems`, and the mapping is
/// injective and reversible ([`Topics::table_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    pub fn new(config: &KafkaConfig) -> Self {
        Topics {
            prefix: config.topic_prefix.clone(),
        }
    }
    /// Changes of one source table: key = canonical primary key text, value = Avro.
    pub fn changes(&self, table: &TableId) -> String {
        format!(
            "{}{}.{}",
            self.changes_prefix(),
            escape(&table.database),
            escape(&table.table)
        )
    }
    /// Every changes topic starts with this.
    pub fn changes_prefix(&self) -> String {
        format!("{}.changes.", self.prefix)
    }
    /// The table a changes topic carries, or `None` for any other topic.
    pub fn table_of(&self, topic: &str) -> Option<TableId> {
        let rest = topic.strip_prefix(&self.changes_prefix())?;
        let (db, table) = rest.split_once('.')?;
        Some(TableId::new(unescape(db)?, unescape(table)?))
    }
    /// Compacted; key = `stage/scope`, value = Avro `Checkpoint`.
    pub fn checkpoints(&self) -> String {
        format!("{}.checkpoints", self.prefix)
    }
    /// Drift events of the reconciler (Avro `DriftEvent`).
    pub fn drift(&self) -> String {
        format!("{}.drift", self.prefix)
    }
    /// Rejected records (JSON `Rejection`) and undecodable messages (raw, with error headers).
    pub fn dlq(&self) -> String {
        format!("{}.dlq", self.prefix)
    }
    /// Compacted, one partition: the authority-transfer record of a cutover (JSON).
    pub fn authority(&self) -> String {
        format!("{}.authority", self.prefix)
    }
    /// Control signals (JSON [`crate::ControlMessage`]).
    pub fn control(&self) -> String {
        format!("{}.control", self.prefix)
    }
}

fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("-{b:02x}"));
            }
        }
    }
    out
}

fn unescape(name: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(name.len());
    let mut it = name.bytes();
    while let Some(b) = it.next() {
        if b == b'-' {
            let hi = it.next()?;
            let lo = it.next()?;
            let hex = [hi, lo];
            bytes.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            bytes.push(b);
        }
    }
    String::from_utf8(bytes).ok()
}

/// Settings every client of this crate shares.
pub(crate) fn base_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", config.bootstrap());
    c
}

/// The idempotent producer: `enable.idempotence=true`, `acks=all`, plus `transport.producer`.
pub(crate) fn producer_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = base_config(config);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5");
    for (k, v) in &config.producer {
        c.set(k, v);
    }
    c
}

/// A consumer that never commits or stores offsets on its own, plus `transport.consumer`.
pub(crate) fn consumer_config(config: &KafkaConfig, group: &str) -> ClientConfig {
    let mut c = base_config(config);
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    for (k, v) in &config.consumer {
        c.set(k, v);
    }
    c
}

/// Wait until a broker answers a metadata request, retrying with backoff for
/// `transport.connect_timeout_seconds`; then fail with an error that names the brokers.
/// Blocking.
pub(crate) fn wait_for_brokers<C: ClientContext>(
    client: &Client<C>,
    config: &KafkaConfig,
) -> Result<Metadata> {
    let started = Instant::now();
    let deadline = config.connect_timeout();
    let mut backoff = Duration::from_millis(250);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let left = deadline.saturating_sub(started.elapsed());
        let timeout = left.clamp(Duration::from_millis(500), Duration::from_secs(10));
        match client.fetch_metadata(None, timeout) {
            Ok(m) => return Ok(m),
            Err(e) => {
                if started.elapsed() + backoff >= deadline {
                    return Err(Error::Unreachable {
                        brokers: config.bootstrap(),
                        attempts,
                        waited_seconds: started.elapsed().as_secs(),
                        message: e.to_string(),
                    });
                }
                warn!(brokers = %config.bootstrap(), attempt = attempts, error = %e, retry_in = ?backoff, "no Kafka broker answers yet; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Partition count of `topic`; a missing topic is [`Error::TopicMissing`]. Blocking.
pub(crate) fn partition_count<C: ClientContext>(client: &Client<C>, topic: &str) -> Result<usize> {
    let md = client
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| Error::kafka(format!("metadata of topic `{topic}`"), e))?;
    match md.topics().iter().find(|t| t.name() == topic) {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(t.partitions().len()),
        _ => Err(Error::TopicMissing {
            topic: topic.to_string(),
        }),
    }
}

/// How long [`watermarks`] retries before its error stands.
const WATERMARKS_RETRY_FOR: Duration = Duration::from_secs(20);

/// The low and high watermarks of a partition, asked of the broker (ListOffsets).
///
/// `client` must not be a consumer that is fetching: a broker answers the requests of one
/// connection in order, and a consumer's Fetch waits there up to `fetch.wait.max.ms` (500 ms by
/// default) when there is nothing new, so a ListOffsets sent behind it waits as long. Callers
/// pass a client of their own that does not fetch (a producer, or a [`metadata_client`]).
///
/// A partition can be without a leader for a moment (just created, its broker restarting,
/// leadership moving): the broker's answer then is an error such as `NotLeaderForPartition`
/// that passes, so errors are retried with backoff for [`WATERMARKS_RETRY_FOR`] before they
/// count. Blocking.
pub(crate) fn watermarks<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64)> {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        match client.fetch_watermarks(topic, partition, Duration::from_secs(10)) {
            Ok(w) => return Ok(w),
            Err(e) if started.elapsed() + backoff < WATERMARKS_RETRY_FOR => {
                debug!(topic, partition, error = %e, retry_in = ?backoff, "watermarks not answered yet; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                return Err(Error::kafka(
                    format!("watermarks of `{topic}` partition {partition}"),
                    e,
                ))
            }
        }
    }
}

/// A client that never fetches, for metadata and [`watermarks`].
pub(crate) fn metadata_client(config: &KafkaConfig) -> Result<BaseConsumer> {
    base_config(config)
        .create()
        .map_err(|e| Error::kafka("creating a metadata client", e))
}

/// How long `topics init` waits for a topic to show in metadata with a leader for every
/// partition.
const TOPIC_READY_WAIT: Duration = Duration::from_secs(30);

/// The partition count of `topic` once it shows in metadata with a leader for every partition
/// (a topic just created has none for a moment, and a client using it then fails). Blocking.
fn ready_partitions<C: ClientContext>(client: &Client<C>, topic: &str) -> Result<usize> {
    let started = Instant::now();
    loop {
        let md = client
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| Error::kafka(format!("metadata of topic `{topic}`"), e))?;
        let waiting = match md.topics().iter().find(|t| t.name() == topic) {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                match t
                    .partitions()
                    .iter()
                    .find(|p| p.leader() < 0 || p.error().is_some())
                {
                    None => return Ok(t.partitions().len()),
                    Some(p) => format!("partition {} of `{topic}` has no leader yet", p.id()),
                }
            }
            _ => format!("topic `{topic}` is not in the metadata yet"),
        };
        if started.elapsed() >= TOPIC_READY_WAIT {
            return if waiting.starts_with("topic") {
                Err(Error::TopicMissing {
                    topic: topic.to_string(),
                })
            } else {
                Err(Error::CreateTopic {
                    topic: topic.to_string(),
                    message: format!("{waiting} after {} s", TOPIC_READY_WAIT.as_secs()),
                })
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One topic `topics init` dealt with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicStatus {
    pub name: String,
    /// Whether this call created it (otherwise it existed with enough partitions).
    pub created: bool,
    pub partitions: usize,
}

/// Create every topic tidemark needs for `tables`, idempotently: existing topics are fine, a
/// topic with fewer partitions than configured is [`Error::TopicTooSmall`] naming it. The
/// checkpoints topic is compacted and has one partition (one order for all checkpoints); an
/// existing one that is not compacted is [`Error::TopicNotCompacted`]; so is the authority topic.
/// The control topic has one
/// partition (signals in order). It returns once every partition has a leader.
pub async fn topics_init(config: &KafkaConfig, tables: &[TableId]) -> Result<Vec<TopicStatus>> {
    config.check()?;
    let topics = Topics::new(config);
    let admin: AdminClient<DefaultClientContext> = base_config(config)
        .create()
        .map_err(|e| Error::kafka("creating the admin client", e))?;
    let admin = std::sync::Arc::new(admin);
    {
        let admin = admin.clone();
        let config = config.clone();
        blocking(move || wait_for_brokers(admin.inner(), &config).map(|_| ())).await?;
    }
    // (name, partitions, compacted)
    let mut wanted: Vec<(String, usize, bool)> = Vec::new();
    for t in tables {
        wanted.push((topics.changes(t), config.partitions_of(t) as usize, false));
    }
    wanted.push((topics.checkpoints(), 1, true));
    wanted.push((topics.drift(), config.partitions as usize, false));
    wanted.push((topics.dlq(), config.partitions as usize, false));
    wanted.push((topics.control(), 1, false));
    wanted.push((topics.authority(), 1, true));
    for (name, _, _) in &wanted {
        if name.len() > 249 {
            return Err(Error::Config {
                setting: "transport.topic_prefix".into(),
                message: format!("topic name `{name}` is longer than Kafka's 249 characters"),
            });
        }
    }
    let replication = config.replication_factor as i32;
    let new_topics: Vec<NewTopic<'_>> = wanted
        .iter()
        .map(|(name, parts, compacted)| {
            let t = NewTopic::new(name, *parts as i32, TopicReplication::Fixed(replication));
            if *compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(|e| Error::kafka("creating topics", e))?;
    let mut created = BTreeMap::new();
    for r in results {
        match r {
            Ok(name) => {
                created.insert(name, true);
            }
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                created.insert(name, false);
            }
            Err((name, code)) => {
                return Err(Error::CreateTopic {
                    topic: name,
                    message: code.to_string(),
                })
            }
        }
    }
    let mut out = Vec::new();
    for (name, parts, compacted) in wanted {
        let a = admin.clone();
        let n = name.clone();
        // A fresh topic takes a moment to show in metadata and to have its leaders: it is
        // usable when this returns.
        let actual = blocking(move || ready_partitions(a.inner(), &n)).await?;
        if actual < parts {
            return Err(Error::TopicTooSmall {
                topic: name,
                actual,
                wanted: parts,
            });
        }
        if compacted {
            check_compacted(&admin, &name).await?;
        }
        let was_created = created.get(&name).copied().unwrap_or(false);
        if was_created {
            info!(topic = %name, partitions = actual, "created topic");
        }
        out.push(TopicStatus {
            name,
            created: was_created,
            partitions: actual,
        });
    }
    Ok(out)
}

/// A topic whose records must be kept per key (the checkpoints topic) is compacted: a topic of
/// the same name made earlier by someone else with `cleanup.policy=delete` would lose the
/// checkpoints older than its retention, and a restart would then resume from nothing.
async fn check_compacted(admin: &AdminClient<DefaultClientContext>, topic: &str) -> Result<()> {
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let answer = admin
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &options)
        .await
        .map_err(|e| Error::kafka(format!("describing topic `{topic}`"), e))?;
    let resource = answer
        .into_iter()
        .next()
        .ok_or_else(|| Error::kafka(format!("describing topic `{topic}`"), "no answer"))?
        .map_err(|code| Error::kafka(format!("describing topic `{topic}`"), code))?;
    let policy = resource
        .get("cleanup.policy")
        .and_then(|e| e.value.clone())
        .unwrap_or_else(|| "delete".into());
    if policy.split(',').any(|p| p.trim() == "compact") {
        Ok(())
    } else {
        Err(Error::TopicNotCompacted {
            topic: topic.to_string(),
            policy,
        })
    }
}

/// Run blocking client work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::kafka("a blocking Kafka call", e))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_escape_and_round_trip() {
        let t = Topics::new(&KafkaConfig::new("k:1"));
        let id = TableId::new("shop", "order-items");
        assert_eq!(t.changes(&id), "tidemark.changes.shop.order-2ditems");
        assert_eq!(t.table_of(&t.changes(&id)), Some(id));
        let odd = TableId::new("d.b", "tä ble$");
        let name = t.changes(&odd);
        assert!(name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')));
        assert_eq!(t.table_of(&name), Some(odd));
        assert_eq!(t.table_of("tidemark.checkpoints"), None);
    }
}
