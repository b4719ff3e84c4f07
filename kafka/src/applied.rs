//! Whether the apply group has written what a changes topic holds now: what a re-read after a
//! schema change waits for before it scans the target (every change published before the
//! schema change must be in the target first, or a row applied after the scan would keep the
//! old shape's values).
//!
//! [`end_offsets`] takes the end of every partition of the tables' changes topics; the group's
//! committed offsets ([`uncommitted`]) reaching them means every message before was written by
//! the sink: apply commits an offset only after the sink acknowledged the records before it.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tidemark_schemas::TableId;

use crate::topics::{blocking, consumer_config, metadata_client, partition_count, watermarks};
use crate::{Error, KafkaConfig, Result, Topics};

/// End offset (high watermark) of each partition of a changes topic, by (topic, partition).
pub type EndOffsets = BTreeMap<(String, i32), i64>;

/// The end offset of every partition of the changes topics of `tables`, now.
pub async fn end_offsets(config: &KafkaConfig, tables: &[TableId]) -> Result<EndOffsets> {
    let config = config.clone();
    let topics: Vec<String> = tables
        .iter()
        .map(|t| Topics::new(&config).changes(t))
        .collect();
    blocking(move || {
        let client = metadata_client(&config)?;
        let mut out = EndOffsets::new();
        for topic in topics {
            for p in 0..partition_count(client.client(), &topic)? as i32 {
                let (_, high) = watermarks(client.client(), &topic, p)?;
                out.insert((topic.clone(), p), high);
            }
        }
        Ok(out)
    })
    .await
}

/// How many messages before `ends` the apply group (`transport.group_id`) has not committed.
pub async fn uncommitted(config: &KafkaConfig, ends: &EndOffsets) -> Result<i64> {
    let config = config.clone();
    let ends = ends.clone();
    blocking(move || {
        // A consumer of the group that never subscribes: it only asks for the group's offsets.
        let consumer: BaseConsumer = consumer_config(&config, &config.group_id)
            .create()
            .map_err(|e| Error::kafka("creating an offsets client", e))?;
        let mut tpl = TopicPartitionList::new();
        for (topic, p) in ends.keys() {
            tpl.add_partition(topic, *p);
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .map_err(|e| Error::kafka("reading the apply group's committed offsets", e))?;
        let mut left = 0;
        for ((topic, p), end) in &ends {
            let done = committed
                .find_partition(topic, *p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .unwrap_or(0);
            left += (end - done).max(0);
        }
        Ok(left)
    })
    .await
}
