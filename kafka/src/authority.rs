//! The authority-transfer record on its own compacted topic, `<prefix>.authority` (one
//! partition, key `authority`, value the record's JSON): written once by `tidemark cutover
//! record`, read by `cutover check` (the watch after the transfer) and `status`.

use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::Message;

use crate::checkpoints::await_delivery;
use crate::reader::TopicReader;
use crate::topics::{blocking, partition_count, producer_config, wait_for_brokers};
use crate::{Error, KafkaConfig, Result, Topics};

/// The record's key on the topic.
const KEY: &str = "authority";

/// Publish the record (JSON), waiting for the broker's acknowledgement. A missing topic is
/// [`Error::TopicMissing`] (created by `tidemark topics init`).
pub async fn publish_authority(config: &KafkaConfig, record: &str) -> Result<()> {
    let topic = Topics::new(config).authority();
    let producer: FutureProducer = producer_config(config)
        .create()
        .map_err(|e| Error::kafka("creating the producer", e))?;
    {
        let (p, c, t) = (producer.clone(), config.clone(), topic.clone());
        blocking(move || {
            wait_for_brokers(p.client(), &c)?;
            partition_count(p.client(), &t).map(|_| ())
        })
        .await?;
    }
    let future = producer
        .send_result(
            FutureRecord::to(&topic)
                .key(KEY)
                .payload(record)
                .partition(0),
        )
        .map_err(|(e, _)| Error::Delivery {
            topic: topic.clone(),
            message: e.to_string(),
        })?;
    await_delivery(&topic, future).await
}

/// The newest record on the topic, if any (none either when the topic does not exist yet: a
/// deployment whose topics were made before it). Blocking.
pub fn read_authority(config: &KafkaConfig) -> Result<Option<String>> {
    let topic = Topics::new(config).authority();
    let mut reader = match TopicReader::open(config, &topic, "authority-reader") {
        Ok(r) => r,
        Err(Error::TopicMissing { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut newest = None;
    reader.catch_up(|m| {
        if m.key() == Some(KEY.as_bytes()) {
            newest = m.payload().map(|p| String::from_utf8_lossy(p).into_owned());
        }
        Ok(())
    })?;
    Ok(newest)
}
