//! Reading a whole topic up to its end as it is now: the checkpoints topic (latest value per
//! key), the drift topic and the dead-letter topic.
//!
//! A [`TopicReader`] is assigned every partition from the beginning (no group offsets) and
//! [`TopicReader::catch_up`] reads until each partition's position reaches the high watermark
//! fetched when the call started; later calls read only what was added since. Compaction leaves
//! gaps in the offsets, so a partition also counts as read once the consumer's position passed
//! the watermark without a message.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::topics::{
    consumer_config, metadata_client, partition_count, wait_for_brokers, watermarks,
};
use crate::{Error, KafkaConfig, Result};

/// How long one [`TopicReader::catch_up`] may take before it is an error.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(120);

/// Reads one topic from the beginning, in calls that each end at the topic's end of that moment.
pub struct TopicReader {
    consumer: BaseConsumer,
    /// Asks the watermarks: not `consumer`, whose pending Fetch would hold them up (see
    /// [`watermarks`]).
    meta: BaseConsumer,
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
        let consumer: BaseConsumer =
            consumer_config(config, &format!("{}-{purpose}", config.group_id))
                .create()
                .map_err(|e| Error::kafka(format!("creating the {purpose}"), e))?;
        wait_for_brokers(consumer.client(), config)?;
        let partitions = partition_count(consumer.client(), topic)?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| Error::kafka(format!("assigning `{topic}`"), e))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| Error::kafka(format!("assigning `{topic}`"), e))?;
        Ok(TopicReader {
            consumer,
            meta: metadata_client(config)?,
            topic: topic.to_string(),
            partitions,
            next: HashMap::new(),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Hand every message up to the high watermarks of now to `each`, in offset order per
    /// partition. An error from `each` stops the call (the message is read again next time).
    pub fn catch_up(
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
        while !todo.is_empty() {
            if started.elapsed() > CATCH_UP_LIMIT {
                return Err(Error::kafka(
                    format!("reading `{topic}`"),
                    format!(
                        "did not reach the high watermark within {} s",
                        CATCH_UP_LIMIT.as_secs()
                    ),
                ));
            }
            let Some(msg) = self
                .consumer
                .poll(Timeout::After(Duration::from_millis(200)))
            else {
                if let Ok(pos) = self.consumer.position() {
                    for e in pos.elements_for_topic(&topic) {
                        if let Offset::Offset(o) = e.offset() {
                            self.next.insert(e.partition(), o);
                            if todo.get(&e.partition()).is_some_and(|high| o >= *high) {
                                todo.remove(&e.partition());
                            }
                        }
                    }
                }
                continue;
            };
            let msg = msg.map_err(|e| Error::kafka(format!("reading `{topic}`"), e))?;
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
