//! Reading a whole topic up to its end as it is now: the checkpoints topic (latest value per
//! key), the drift topic and the dead-letter topic.
//!
//! A [`TopicReader`] is assigned every partition from the beginning (no group offsets) and
//! [`TopicReader::catch_up`] reads until each partition's position reaches the high watermark
//! fetched when the call started; later calls read only what was added since. Compaction leaves
//! gaps in the offsets, so a partition also counts as read once the consumer's position passed
//! the watermark without a message.
//!
//! A consumer assigned its partitions by hand can stop fetching after a broker restart and never
//! start again while the broker answers everything else (librdkafka issues #5153 and #4492,
//! rust-rdkafka #597: a partition left waiting in its fetch state machine). A reader therefore
//! replaces its consumer, assigned at the offsets it has read to, when a call failed or when
//! [`STALL_LIMIT`] passes with something left to read and nothing read.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};
use tracing::{debug, warn};

use crate::topics::{
    consumer_config, metadata_client, partition_count, wait_for_brokers, watermarks,
};
use crate::{Error, KafkaConfig, Result};

/// How long one [`TopicReader::catch_up`] may take before it is an error.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(120);

/// How long a reader waits with something left to read and nothing read before it replaces its
/// consumer (see the module doc). Fetches from a live broker answer within a second or two; a
/// broker that is away costs the new consumer nothing but its connection attempts.
const STALL_LIMIT: Duration = Duration::from_secs(10);

/// Reads one topic from the beginning, in calls that each end at the topic's end of that moment.
pub struct TopicReader {
    consumer: BaseConsumer,
    /// Set when a call failed: the next call starts with a new consumer.
    consumer_failed: bool,
    /// Asks the watermarks: not `consumer`, whose pending Fetch would hold them up (see
    /// [`watermarks`]).
    meta: BaseConsumer,
    config: KafkaConfig,
    purpose: String,
    topic: String,
    partitions: usize,
    /// partition → next offset to read
    next: HashMap<i32, i64>,
}

impl TopicReader {
    /// Connect (with the start-up retries) and assign every partition of `topic` from the
    /// beginning. `purpose` names the reader in errors and in its client group id.
    pub fn open(config: &KafkaConfig, topic: &str, purpose: &str) -> Result<Self> {
        config.check()?;
        let consumer = new_consumer(config, purpose)?;
        wait_for_brokers(consumer.client(), config)?;
        let partitions = partition_count(consumer.client(), topic)?;
        let reader = TopicReader {
            consumer,
            consumer_failed: false,
            meta: metadata_client(config)?,
            config: config.clone(),
            purpose: purpose.to_string(),
            topic: topic.to_string(),
            partitions,
            next: HashMap::new(),
        };
        reader.assign(&reader.consumer)?;
        Ok(reader)
    }

    /// Assign `consumer` every partition, at the offset read to (the beginning where nothing
    /// was read yet).
    fn assign(&self, consumer: &BaseConsumer) -> Result<()> {
        let topic = &self.topic;
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.partitions as i32 {
            let offset = self
                .next
                .get(&p)
                .map_or(Offset::Beginning, |&o| Offset::Offset(o));
            tpl.add_partition_offset(topic, p, offset)
                .map_err(|e| Error::kafka(format!("assigning `{topic}`"), e))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| Error::kafka(format!("assigning `{topic}`"), e))
    }

    /// A new consumer in place of the one that stopped, assigned where the reading stopped.
    fn replace_consumer(&mut self, why: &str) -> Result<()> {
        warn!(topic = %self.topic, reader = %self.purpose, why, "replacing the reader's consumer");
        let consumer = new_consumer(&self.config, &self.purpose)?;
        self.assign(&consumer)?;
        let stopped = std::mem::replace(&mut self.consumer, consumer);
        self.consumer_failed = false;
        // Dropping a consumer closes its group session and waits until that is done, which a
        // consumer in this state may never see: it is closed on a thread of its own, so that
        // the reading goes on whatever becomes of it.
        let _ = stopped.unassign();
        let closing = std::thread::Builder::new()
            .name("tidemark-reader-close".into())
            .spawn(move || drop(stopped));
        if let Err(e) = closing {
            warn!(error = %e, "cannot start a thread to close the replaced consumer; it was closed here");
        }
        Ok(())
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Hand every message up to the high watermarks of now to `each`, in offset order per
    /// partition. An error from `each` stops the call (the message is read again next time).
    pub fn catch_up(&mut self, each: impl FnMut(&BorrowedMessage<'_>) -> Result<()>) -> Result<()> {
        if self.consumer_failed {
            self.replace_consumer("its last call failed")?;
        }
        let result = self.read_to_watermarks(each);
        // Whatever failed (a broker away, a fetch that never came), the next call starts afresh.
        self.consumer_failed = result.is_err();
        result
    }

    fn read_to_watermarks(
        &mut self,
        mut each: impl FnMut(&BorrowedMessage<'_>) -> Result<()>,
    ) -> Result<()> {
        let topic = self.topic.clone();
        let mut todo: HashMap<i32, i64> = HashMap::new();
        for p in 0..self.partitions as i32 {
            let (low, high) = watermarks(self.meta.client(), &topic, p)?;
            let next = self.next.get(&p).copied().unwrap_or(low).max(low);
            if high > next {
                todo.insert(p, high);
            }
        }
        let started = Instant::now();
        let mut progress_at = Instant::now();
        while !todo.is_empty() {
            if started.elapsed() > CATCH_UP_LIMIT {
                let left: Vec<String> = todo
                    .iter()
                    .map(|(p, high)| {
                        let read_to = self.next.get(p).map_or("none".into(), i64::to_string);
                        format!("partition {p} read to {read_to} of {high}")
                    })
                    .collect();
                return Err(Error::kafka(
                    format!("reading `{topic}`"),
                    format!(
                        "did not reach the high watermark within {} s ({})",
                        CATCH_UP_LIMIT.as_secs(),
                        left.join(", ")
                    ),
                ));
            }
            if progress_at.elapsed() > STALL_LIMIT {
                self.replace_consumer(&format!(
                    "nothing read for {} s with {} partition(s) left to read",
                    STALL_LIMIT.as_secs(),
                    todo.len()
                ))?;
                progress_at = Instant::now();
            }
            let Some(msg) = self
                .consumer
                .poll(Timeout::After(Duration::from_millis(200)))
            else {
                if let Ok(pos) = self.consumer.position() {
                    for e in pos.elements_for_topic(&topic) {
                        if let Offset::Offset(o) = e.offset() {
                            if self.next.insert(e.partition(), o) != Some(o) {
                                progress_at = Instant::now();
                            }
                            if todo.get(&e.partition()).is_some_and(|high| o >= *high) {
                                todo.remove(&e.partition());
                            }
                        }
                    }
                }
                continue;
            };
            let msg = match msg {
                Ok(msg) => msg,
                // The client's connections coming and going (a broker restarting): librdkafka
                // reconnects by itself, and the call goes on within its time limit. Such errors
                // also wait in the queue from an outage that is over by the time they are read.
                Err(e) if is_connection_error(&e) => {
                    debug!(topic = %topic, error = %e, "a reader's connection error; reading on");
                    continue;
                }
                Err(e) => return Err(Error::kafka(format!("reading `{topic}`"), e)),
            };
            progress_at = Instant::now();
            each(&msg)?;
            self.next.insert(msg.partition(), msg.offset() + 1);
            if todo
                .get(&msg.partition())
                .is_some_and(|high| msg.offset() + 1 >= *high)
            {
                todo.remove(&msg.partition());
            }
        }
        Ok(())
    }
}

/// Whether a consumer's error is about its connections to the brokers (which librdkafka
/// re-establishes by itself) rather than about what it reads.
fn is_connection_error(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::AllBrokersDown
                | C::BrokerTransportFailure
                | C::OperationTimedOut
                | C::RequestTimedOut
                | C::NetworkException
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
        )
    )
}

/// A consumer for a reader of `purpose` (its client group id says whose), not yet assigned.
fn new_consumer(config: &KafkaConfig, purpose: &str) -> Result<BaseConsumer> {
    consumer_config(config, &format!("{}-{purpose}", config.group_id))
        .create()
        .map_err(|e| Error::kafka(format!("creating the {purpose}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{topics_init, CheckpointStore, Topics};
    use tidemark_schemas::Checkpoint;

    /// Store checkpoints `k{i}` for `keys` (the checkpoints topic has one partition).
    async fn store(config: &KafkaConfig, keys: std::ops::Range<u32>) {
        let mut checkpoints = CheckpointStore::load(config)
            .await
            .expect("checkpoint store");
        for i in keys {
            let checkpoint = Checkpoint {
                stage: "test".into(),
                scope: format!("k{i}"),
                value: format!("v{i}"),
            };
            checkpoints.store(&checkpoint).await.expect("stored");
        }
    }

    /// The scopes `catch_up` hands over, in order.
    fn read(reader: &mut TopicReader) -> Vec<String> {
        let mut scopes = Vec::new();
        tokio::task::block_in_place(|| {
            reader.catch_up(|msg| {
                let key = String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned();
                scopes.push(key.trim_start_matches("test/").to_string());
                Ok(())
            })
        })
        .expect("caught up");
        scopes
    }

    /// A consumer that stops fetching (here: its partitions paused, as librdkafka can leave
    /// them after a broker restart) is replaced, and the new one reads on from where the old
    /// one stopped: every message once, none skipped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_consumer_that_stopped_fetching_is_replaced_and_reading_goes_on() {
        let kafka = tidemark_testkit::Kafka::shared();
        let mut config = KafkaConfig::new(kafka.addr());
        config.topic_prefix = kafka.prefix.clone();
        config.group_id = kafka.group.clone();
        topics_init(&config, &[]).await.expect("topics init");
        store(&config, 0..5).await;
        let topic = Topics::new(&config).checkpoints();
        let mut reader = tokio::task::block_in_place(|| {
            TopicReader::open(&config, &topic, "test-reader").expect("reader")
        });
        assert_eq!(read(&mut reader), ["k0", "k1", "k2", "k3", "k4"]);

        store(&config, 5..8).await;
        let assigned = reader.consumer.assignment().expect("assignment");
        reader.consumer.pause(&assigned).expect("paused");
        let started = Instant::now();
        assert_eq!(read(&mut reader), ["k5", "k6", "k7"]);
        assert!(
            started.elapsed() >= STALL_LIMIT,
            "the paused consumer read nothing; its replacement did"
        );

        store(&config, 8..9).await;
        assert_eq!(read(&mut reader), ["k8"], "the replacement reads on");
    }
}
