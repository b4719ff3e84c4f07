//! The apply frontier of a consumer group: per partition, the newest position marker its member
//! applied (published to the checkpoints topic), and over all of them the position up to which
//! every change is in the target. The reconciler settles keys on it.

use std::collections::BTreeMap;

use rdkafka::consumer::{BaseConsumer, Consumer};
use tidemark_schemas::{BinlogPosition, TableId};

use crate::checkpoints::{checkpoint_key, CheckpointReader, APPLY_STAGE};
use crate::topics::{consumer_config, partition_count};
use crate::wire::Marker;
use crate::{Error, KafkaConfig, Result, Topics};

/// Scope of the frontier checkpoint of one partition.
pub fn frontier_scope(group: &str, topic: &str, partition: i32) -> String {
    format!("{group}/{topic}/{partition}")
}

/// The apply frontier of a consumer group, per partition and overall.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupFrontier {
    /// Newest marker applied on each partition of every changes topic; `None` where none was.
    pub partitions: BTreeMap<(String, i32), Option<BinlogPosition>>,
}

impl GroupFrontier {
    /// The lowest position over all partitions: every change up to it is in the target. `None`
    /// when some partition has had no marker applied yet.
    pub fn min(&self) -> Option<BinlogPosition> {
        let mut min: Option<BinlogPosition> = None;
        for p in self.partitions.values() {
            let p = p.as_ref()?;
            if min.as_ref().is_none_or(|m| p < m) {
                min = Some(*p);
            }
        }
        min
    }
}

/// Reads the apply frontier of the group `transport.group_id` over the changes topics of a set of
/// tables, incrementally (each call reads only what was added to the checkpoints topic since the
/// last). For the reconciler: blocking, like `tidemark_reconcile::Frontier`.
pub struct FrontierReader {
    group: String,
    reader: CheckpointReader,
    partitions: Vec<(String, usize)>,
}

impl FrontierReader {
    /// Connect and look up the partitions of the changes topics of `tables`. Blocking.
    pub fn open(config: &KafkaConfig, tables: &[TableId]) -> Result<Self> {
        let reader = CheckpointReader::open(config)?;
        let topics = Topics::new(config);
        let consumer: BaseConsumer = consumer_config(config, &config.group_id)
            .create()
            .map_err(|e| Error::kafka("creating a metadata client", e))?;
        let mut partitions = Vec::new();
        for t in tables {
            let name = topics.changes(t);
            let n = partition_count(consumer.client(), &name)?;
            partitions.push((name, n));
        }
        Ok(FrontierReader {
            group: config.group_id.clone(),
            reader,
            partitions,
        })
    }

    /// The group's frontier now, per partition.
    pub fn read(&mut self) -> Result<GroupFrontier> {
        self.reader.catch_up()?;
        let mut out = GroupFrontier::default();
        for (topic, n) in &self.partitions {
            for p in 0..*n as i32 {
                let key = checkpoint_key(APPLY_STAGE, &frontier_scope(&self.group, topic, p));
                let pos = self
                    .reader
                    .entries()
                    .get(&key)
                    .and_then(|cp| serde_json::from_str::<Marker>(&cp.value).ok())
                    .and_then(|m| m.position());
                out.partitions.insert((topic.clone(), p), pos);
            }
        }
        Ok(out)
    }

    /// The lowest applied marker over every partition (see [`GroupFrontier::min`]).
    pub fn frontier(&mut self) -> Result<Option<BinlogPosition>> {
        Ok(self.read()?.min())
    }
}

/// One-shot: the frontier of the group over `tables` (see [`FrontierReader`]).
pub async fn group_frontier(config: &KafkaConfig, tables: &[TableId]) -> Result<GroupFrontier> {
    let config = config.clone();
    let tables = tables.to_vec();
    crate::topics::blocking(move || FrontierReader::open(&config, &tables)?.read()).await
}
