//! The drift topic: reconciler findings as Avro, keyed by `table/key`, so an operator's tooling
//! can follow drift as it is found. Values are single-object encoded, or in the Confluent wire
//! format under the subject `<prefix>.drift-value` when a schema registry is configured
//! ([`crate::registry`]); [`read_drift`] reads both.

use std::time::Duration;

use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::Message;
use tidemark_schemas::avro::RecordKind;
use tidemark_schemas::DriftEvent;

use crate::checkpoints::await_delivery;
use crate::reader::TopicReader;
use crate::registry::{self, Registry};
use crate::topics::producer_config;
use crate::{Error, KafkaConfig, Result, Topics};

/// Publishes drift events to `<prefix>.drift`.
pub struct DriftPublisher {
    producer: FutureProducer,
    topic: String,
    /// Registry id of the `DriftEvent` schema under the drift topic's subject, when configured.
    schema_id: Option<u32>,
    pending: Vec<DeliveryFuture>,
    sent: u64,
}

impl DriftPublisher {
    /// A producer of the drift topic. With a schema registry configured this registers the
    /// `DriftEvent` schema (blocking, retried for `transport.connect_timeout_seconds`).
    pub fn new(config: &KafkaConfig) -> Result<Self> {
        config.check()?;
        let topic = Topics::new(config).drift();
        let schema_id = match Registry::from_config(config)? {
            Some(r) => Some(r.register(&topic, RecordKind::DriftEvent)?),
            None => None,
        };
        let producer: FutureProducer = producer_config(config)
            .create()
            .map_err(|e| Error::kafka("creating the drift producer", e))?;
        Ok(DriftPublisher {
            producer,
            topic,
            schema_id,
            pending: Vec::new(),
            sent: 0,
        })
    }

    /// Queue one drift event (synchronous; delivery is awaited by [`DriftPublisher::finish`]).
    pub fn enqueue(&mut self, event: &DriftEvent) -> Result<()> {
        let value = registry::encode_value(self.schema_id, event)?;
        let key = format!("{}/{}", event.table, event.key);
        let mut record = FutureRecord::<str, [u8]>::to(&self.topic)
            .key(key.as_str())
            .payload(value.as_slice());
        loop {
            match self.producer.send_result(record) {
                Ok(f) => {
                    self.pending.push(f);
                    self.sent += 1;
                    return Ok(());
                }
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err((e, _)) => {
                    return Err(Error::Delivery {
                        topic: self.topic.clone(),
                        message: e.to_string(),
                    })
                }
            }
        }
    }

    /// Wait until every queued event was acknowledged; returns how many were sent.
    pub async fn finish(self) -> Result<u64> {
        for f in self.pending {
            await_delivery(&self.topic, f).await?;
        }
        Ok(self.sent)
    }
}

/// Read every drift event on the topic up to its end as it is now (blocking; for tests and
/// operator tooling). Either framing is read; Confluent values need the registry configured.
pub fn read_drift(config: &KafkaConfig) -> Result<Vec<DriftEvent>> {
    let registry = Registry::from_config(config)?;
    let mut reader = TopicReader::open(config, &Topics::new(config).drift(), "drift-reader")?;
    let mut out = Vec::new();
    reader.catch_up(|m| {
        if let Some(payload) = m.payload() {
            let event = registry::decode_value::<DriftEvent>(registry.as_deref(), payload)?;
            out.push(event.map_err(|message| Error::Decode {
                topic: m.topic().to_string(),
                partition: m.partition(),
                offset: m.offset(),
                message,
            })?);
        }
        Ok(())
    })?;
    Ok(out)
}
