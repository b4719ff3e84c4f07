//! The control topic: signals to running jobs (DESIGN.md §7), one JSON object per message.
//!
//! ```json
//! {"action": "start_backfill", "tables": ["shop.orders"]}
//! {"action": "pause_backfill"}
//! {"action": "resume_backfill"}
//! {"action": "reread_keys", "table": "shop.orders", "keys": [{"id": 42}]}
//! {"action": "reconcile", "tables": ["shop.orders"], "sample": 0.1}
//! ```
//!
//! The topic has one partition, so signals are seen in the order they were sent.

use futures_util::Stream;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::checkpoints::await_delivery;
use crate::topics::{
    blocking, consumer_config, partition_count, producer_config, wait_for_brokers, watermarks,
};
use crate::{Error, KafkaConfig, Result, Topics};

/// A signal to a running job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlMessage {
    /// Backfill these tables (`database.table`; empty: every table in scope).
    StartBackfill {
        #[serde(default)]
        tables: Vec<String>,
    },
    /// Pause a running backfill (`BackfillControl::pause`).
    PauseBackfill,
    /// Resume a paused backfill (`BackfillControl::resume`).
    ResumeBackfill,
    /// Re-read these keys of a table from the source through the normal path (repair); each key
    /// is a JSON object of the key columns, as in a keys file.
    RereadKeys {
        table: String,
        keys: Vec<serde_json::Value>,
    },
    /// Reconcile these tables (empty: every table in scope), optionally a sample of the keys.
    Reconcile {
        #[serde(default)]
        tables: Vec<String>,
        #[serde(default)]
        sample: Option<f64>,
    },
}

/// A control message and where it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlEnvelope {
    pub message: ControlMessage,
    pub offset: i64,
    /// Milliseconds since the epoch, when the broker or producer stamped one.
    pub timestamp_ms: Option<i64>,
}

/// Send one control message and wait until the broker acknowledged it.
pub async fn send_control(config: &KafkaConfig, message: &ControlMessage) -> Result<()> {
    config.check()?;
    let topic = Topics::new(config).control();
    let producer: FutureProducer = producer_config(config)
        .create()
        .map_err(|e| Error::kafka("creating the producer", e))?;
    {
        let producer = producer.clone();
        let config = config.clone();
        blocking(move || wait_for_brokers(producer.client(), &config).map(|_| ())).await?;
    }
    let value = serde_json::to_vec(message).map_err(|e| Error::Encode(e.to_string()))?;
    let f = producer
        .send_result(FutureRecord::<[u8], [u8]>::to(&topic).payload(&value))
        .map_err(|(e, _)| Error::Delivery {
            topic: topic.clone(),
            message: e.to_string(),
        })?;
    await_delivery(&topic, f).await
}

/// Listens to the control topic.
///
/// With a group, each group sees every message once across restarts (offsets committed after
/// the message was handed out; use one group per job kind, e.g. `tidemark-backfill`). Without a
/// group, the listener sees only messages sent after it started. A worker that must not lose a
/// message it had not finished acting on when it was killed uses [`ControlListener::worker`] and
/// commits with [`ControlListener::commit`] once the action is done.
pub struct ControlListener {
    consumer: StreamConsumer,
    topic: String,
    /// Commit each message's offset as it is handed out.
    commit_on_read: bool,
}

impl ControlListener {
    /// A listener of `group` (or, without one, of messages sent from now on) that commits each
    /// message as it is handed out.
    pub async fn start(config: &KafkaConfig, group: Option<&str>) -> Result<Self> {
        let mut listener = Self::connect(config, group).await?;
        listener.commit_on_read = group.is_some();
        Ok(listener)
    }

    /// A member of `group` that commits only through [`ControlListener::commit`]: after a
    /// restart the group resumes at the first message not committed.
    pub async fn worker(config: &KafkaConfig, group: &str) -> Result<Self> {
        Self::connect(config, Some(group)).await
    }

    /// Record that every message before `next_offset` was acted on.
    pub fn commit(&self, next_offset: i64) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, 0, Offset::Offset(next_offset))
            .map_err(|e| Error::kafka("committing the control topic offset", e))?;
        self.consumer
            .commit(&tpl, CommitMode::Async)
            .map_err(|e| Error::kafka("committing the control topic offset", e))
    }

    async fn connect(config: &KafkaConfig, group: Option<&str>) -> Result<Self> {
        config.check()?;
        let topic = Topics::new(config).control();
        let group_id = group
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}-control-listener", config.group_id));
        let consumer: StreamConsumer = consumer_config(config, &group_id)
            .create()
            .map_err(|e| Error::kafka("creating the control consumer", e))?;
        let consumer = std::sync::Arc::new(consumer);
        // Without a group, the listener starts at each partition's end as it is now, looked up
        // here rather than left to librdkafka (`Offset::End` is resolved only once the first
        // fetch starts, later than `start` returns): a message sent after `start` returned is
        // never missed.
        let ends = {
            let consumer = consumer.clone();
            let config = config.clone();
            let topic = topic.clone();
            let need_ends = group.is_none();
            blocking(move || {
                wait_for_brokers(consumer.client(), &config)?;
                let partitions = partition_count(consumer.client(), &topic)?;
                let mut ends = Vec::with_capacity(partitions);
                for p in 0..partitions as i32 {
                    let end = if need_ends {
                        watermarks(consumer.client(), &topic, p)?.1
                    } else {
                        0
                    };
                    ends.push(end);
                }
                Ok(ends)
            })
            .await?
        };
        let consumer = std::sync::Arc::into_inner(consumer).expect("the blocking task ended");
        if group.is_some() {
            consumer
                .subscribe(&[&topic])
                .map_err(|e| Error::kafka("subscribing to the control topic", e))?;
        } else {
            let mut tpl = TopicPartitionList::new();
            for (p, end) in ends.iter().enumerate() {
                tpl.add_partition_offset(&topic, p as i32, Offset::Offset(*end))
                    .map_err(|e| Error::kafka("assigning the control topic", e))?;
            }
            consumer
                .assign(&tpl)
                .map_err(|e| Error::kafka("assigning the control topic", e))?;
        }
        Ok(ControlListener {
            consumer,
            topic,
            commit_on_read: false,
        })
    }

    /// The next control message. A message that is not a valid control message is an
    /// [`Error::Decode`] (definite: log it and call again); broker trouble is transient.
    pub async fn next(&mut self) -> Result<ControlEnvelope> {
        let msg = self
            .consumer
            .recv()
            .await
            .map_err(|e| Error::kafka(format!("reading `{}`", self.topic), e))?;
        let (partition, offset) = (msg.partition(), msg.offset());
        let decoded = msg
            .payload()
            .ok_or_else(|| "an empty control message".to_string())
            .and_then(|p| serde_json::from_slice::<ControlMessage>(p).map_err(|e| e.to_string()));
        let timestamp_ms = msg.timestamp().to_millis();
        if self.commit_on_read {
            let mut tpl = TopicPartitionList::new();
            let _ = tpl.add_partition_offset(&self.topic, partition, Offset::Offset(offset + 1));
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::warn!(error = %e, "committing the control topic offset failed");
            }
        }
        match decoded {
            Ok(message) => Ok(ControlEnvelope {
                message,
                offset,
                timestamp_ms,
            }),
            Err(message) => Err(Error::Decode {
                topic: self.topic.clone(),
                partition,
                offset,
                message,
            }),
        }
    }

    /// The listener as a stream of control messages (never ends on its own).
    pub fn into_stream(self) -> impl Stream<Item = Result<ControlEnvelope>> {
        futures_util::stream::unfold(self, |mut l| async move {
            let item = l.next().await;
            Some((item, l))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_are_tagged_json() {
        let m: ControlMessage =
            serde_json::from_str(r#"{"action":"reread_keys","table":"db.t","keys":[{"id":1}]}"#)
                .expect("parses");
        assert!(matches!(m, ControlMessage::RereadKeys { .. }));
        let text = serde_json::to_string(&ControlMessage::PauseBackfill).expect("serializes");
        assert_eq!(text, r#"{"action":"pause_backfill"}"#);
        assert!(serde_json::from_str::<ControlMessage>(r#"{"action":"explode"}"#).is_err());
    }
}
