//! Checkpoints in the compacted checkpoints topic: key `stage/scope`, value Avro `Checkpoint`.
//!
//! [`CheckpointStore::load`] reads the topic from the beginning up to the high watermark it saw
//! at start and keeps the latest value per key (what compaction would keep). Capture and backfill
//! resume from it; apply finds table descriptions in it (stage `schema`); the reconciler reads
//! the apply frontier from it ([`crate::group_frontier`]).

use std::collections::BTreeMap;

use rdkafka::producer::FutureProducer;
use rdkafka::Message;
use tidemark_ingest::backfill::BACKFILL_STAGE;
use tidemark_ingest::split::StoredBackfill;
use tidemark_ingest::{BackfillCheckpoint, CaptureCheckpoint};
use tidemark_schemas::{avro, Checkpoint, TableId};

use crate::reader::TopicReader;
use crate::topics::{blocking, producer_config};
use crate::{Error, KafkaConfig, Result, Topics};

pub use tidemark_ingest::capture::{ALL_TABLES, CAPTURE_STAGE};
/// Checkpoint stage of the apply frontier: scope `<group>/<topic>/<partition>`, value JSON
/// [`crate::wire::Marker`] of the newest marker applied on that partition.
pub const APPLY_STAGE: &str = "apply";

/// The key of a checkpoint in the checkpoints topic.
pub fn checkpoint_key(stage: &str, scope: &str) -> String {
    format!("{stage}/{scope}")
}

/// The latest checkpoint per key, as read at start; and a writer.
pub struct CheckpointStore {
    topic: String,
    entries: BTreeMap<String, Checkpoint>,
    producer: FutureProducer,
}

impl CheckpointStore {
    /// Read the checkpoints topic from the beginning to its high watermark.
    pub async fn load(config: &KafkaConfig) -> Result<Self> {
        config.check()?;
        let c = config.clone();
        let entries = blocking(move || read_all(&c)).await?;
        let producer: FutureProducer = producer_config(config)
            .create()
            .map_err(|e| Error::kafka("creating the producer", e))?;
        Ok(CheckpointStore {
            topic: Topics::new(config).checkpoints(),
            entries,
            producer,
        })
    }

    /// The value stored for `stage` and `scope`.
    pub fn get(&self, stage: &str, scope: &str) -> Option<&str> {
        self.entries
            .get(&checkpoint_key(stage, scope))
            .map(|c| c.value.as_str())
    }

    /// Every checkpoint, by key.
    pub fn entries(&self) -> &BTreeMap<String, Checkpoint> {
        &self.entries
    }

    /// Where capture resumes, if it ran before.
    pub fn capture_checkpoint(&self) -> Result<Option<CaptureCheckpoint>> {
        self.get(CAPTURE_STAGE, ALL_TABLES)
            .map(|text| {
                serde_json::from_str(text).map_err(|e| Error::Checkpoint {
                    key: checkpoint_key(CAPTURE_STAGE, ALL_TABLES),
                    message: format!("{e}: `{text}`"),
                })
            })
            .transpose()
    }

    /// The backfill progress of each of `tables` that has one (a table backfilled in parts: the
    /// sum of its parts, see `tidemark_ingest::split`).
    pub fn backfill_checkpoints(
        &self,
        tables: &[TableId],
    ) -> Result<BTreeMap<TableId, BackfillCheckpoint>> {
        let mut out = BTreeMap::new();
        for t in tables {
            if let Some(cp) = self.stored_backfill(t)?.combined() {
                out.insert(*t, cp);
            }
        }
        Ok(out)
    }

    /// A table's stored backfill state: its checkpoint, and its split and parts' progress.
    pub fn stored_backfill(&self, table: &TableId) -> Result<StoredBackfill> {
        StoredBackfill::read(table, |stage, scope| {
            Ok::<_, std::convert::Infallible>(self.get(stage, scope).map(str::to_string))
        })
        .map_err(|e| Error::Checkpoint {
            key: checkpoint_key(BACKFILL_STAGE, &table.to_string()),
            message: e.to_string(),
        })
    }

    /// Write a checkpoint and wait until the broker acknowledged it.
    pub async fn store(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let future = send_checkpoint(&self.producer, &self.topic, checkpoint)?;
        await_delivery(&self.topic, future).await?;
        self.entries.insert(
            checkpoint_key(&checkpoint.stage, &checkpoint.scope),
            checkpoint.clone(),
        );
        Ok(())
    }
}

/// Produce one checkpoint (not awaited).
pub(crate) fn send_checkpoint(
    producer: &FutureProducer,
    topic: &str,
    checkpoint: &Checkpoint,
) -> Result<rdkafka::producer::DeliveryFuture> {
    let key = checkpoint_key(&checkpoint.stage, &checkpoint.scope);
    let value = avro::encode_checkpoint(checkpoint).map_err(|e| Error::Encode(e.to_string()))?;
    let record = rdkafka::producer::FutureRecord::to(topic)
        .key(&key)
        .payload(&value)
        .partition(0);
    producer
        .send_result(record)
        .map_err(|(e, _)| Error::Delivery {
            topic: topic.to_string(),
            message: e.to_string(),
        })
}

pub(crate) async fn await_delivery(
    topic: &str,
    future: rdkafka::producer::DeliveryFuture,
) -> Result<()> {
    match future.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(Error::Delivery {
            topic: topic.to_string(),
            message: e.to_string(),
        }),
        Err(_) => Err(Error::Delivery {
            topic: topic.to_string(),
            message: "the producer was dropped before the broker answered".into(),
        }),
    }
}

/// Read the checkpoints topic from the beginning to the high watermarks seen now. Blocking.
pub(crate) fn read_all(config: &KafkaConfig) -> Result<BTreeMap<String, Checkpoint>> {
    let mut reader = CheckpointReader::open(config)?;
    reader.catch_up()?;
    Ok(reader.entries)
}

/// A reader of the checkpoints topic that stays assigned and reads what was added since its last
/// call ([`CheckpointReader::catch_up`]): the latest value per key. Blocking.
pub struct CheckpointReader {
    reader: TopicReader,
    entries: BTreeMap<String, Checkpoint>,
}

impl CheckpointReader {
    /// Connect (with the start-up retries) and assign every partition from the beginning.
    pub fn open(config: &KafkaConfig) -> Result<Self> {
        let topic = Topics::new(config).checkpoints();
        Ok(CheckpointReader {
            reader: TopicReader::open(config, &topic, "checkpoint-reader")?,
            entries: BTreeMap::new(),
        })
    }

    /// The latest checkpoint per key read so far.
    pub fn entries(&self) -> &BTreeMap<String, Checkpoint> {
        &self.entries
    }

    /// Read up to the high watermarks of now.
    pub fn catch_up(&mut self) -> Result<()> {
        let entries = &mut self.entries;
        self.reader.catch_up(|msg| apply_message(entries, msg))
    }
}

/// A checkpoint message: the latest value of its key, or a tombstone that removes the key.
fn apply_message(
    entries: &mut BTreeMap<String, Checkpoint>,
    msg: &rdkafka::message::BorrowedMessage<'_>,
) -> Result<()> {
    let key = msg
        .key()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_default();
    match msg.payload() {
        None => {
            entries.remove(&key);
        }
        Some(bytes) => {
            let cp = avro::decode_checkpoint(bytes).map_err(|e| Error::Checkpoint {
                key: key.clone(),
                message: format!(
                    "at {}/{}@{}: {e}",
                    msg.topic(),
                    msg.partition(),
                    msg.offset()
                ),
            })?;
            entries.insert(key, cp);
        }
    }
    Ok(())
}
