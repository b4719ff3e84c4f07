//! What the messages on the changes topics look like.
//!
//! Every message of a changes topic has a header `tm-kind`:
//! - `change`: value = Avro [`ChangeEvent`] (single-object encoding, or the Confluent wire format
//!   when a schema registry is configured: see [`crate::registry`]), key = the canonical text
//!   of its source primary key, header `tm-schema` = the id of the table description the row
//!   image was decoded against ([`schema_id`]).
//! - `marker`: value = JSON [`Marker`]; key empty. Written by capture into every partition of
//!   every changes topic at commits (at most every `marker_interval_ms`) and as a heartbeat while
//!   idle.
//!
//! Table descriptions travel out of band, in the compacted checkpoints topic under the key
//! `schema/<id>` (value: JSON of the [`SourceSchema`]), written and acknowledged before the first
//! change that names them. So an applier that starts in the middle of a partition, long after the
//! table was first seen, still finds the exact description every change was captured with.

use rdkafka::message::{Header, Headers, OwnedHeaders};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tidemark_schemas::{BinlogPosition, SourceSchema};

pub const KIND: &str = "tm-kind";
pub const SCHEMA: &str = "tm-schema";
pub const KIND_CHANGE: &str = "change";
pub const KIND_MARKER: &str = "marker";
pub const KIND_REJECTION: &str = "rejection";
pub const KIND_UNDECODABLE: &str = "undecodable";
/// Headers of an undecodable message in the dead-letter topic: where it came from, and why.
pub const ERROR: &str = "tm-error";
pub const SOURCE_TOPIC: &str = "tm-source-topic";
pub const SOURCE_PARTITION: &str = "tm-source-partition";
pub const SOURCE_OFFSET: &str = "tm-source-offset";
/// The `tm-kind` the undecodable message carried, if any.
pub const KIND_ORIGINAL: &str = "tm-original-kind";

/// Checkpoint stage under which table descriptions are stored (scope = schema id).
pub const SCHEMA_STAGE: &str = "schema";

/// A position marker: every change before `position` that belongs to this partition precedes
/// this message in the partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub position: String,
    #[serde(default)]
    pub gtid: Option<String>,
    /// Source server identity.
    pub server: String,
}

impl Marker {
    pub fn position(&self) -> Option<BinlogPosition> {
        self.position.parse().ok()
    }
}

/// The id of a table description: the first 16 hex digits of SHA-256 over its JSON.
pub fn schema_id(schema: &SourceSchema) -> String {
    let json = serde_json::to_vec(schema).expect("a source schema serializes");
    hex::encode(&Sha256::digest(&json)[..8])
}

/// Message headers from (key, value) pairs.
pub fn headers(pairs: &[(&str, &str)]) -> OwnedHeaders {
    let mut h = OwnedHeaders::new_with_capacity(pairs.len());
    for (k, v) in pairs {
        h = h.insert(Header {
            key: k,
            value: Some(*v),
        });
    }
    h
}

/// The value of header `key`, as UTF-8.
pub(crate) fn header<'a, H: Headers>(headers: Option<&'a H>, key: &str) -> Option<&'a str> {
    let h = headers?;
    (0..h.count())
        .filter_map(|i| h.try_get(i))
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// The partition of a key among `partitions`: CRC-32 of the key text. Fixed here (not left to
/// the producer's partitioner setting), so every publisher agrees and a key's changes stay in
/// one partition, in order.
pub fn partition_for(key: &str, partitions: usize) -> i32 {
    (crc32fast::hash(key.as_bytes()) as usize % partitions.max(1)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitioning_is_stable() {
        assert_eq!(
            partition_for("{\"id\":1}", 4),
            partition_for("{\"id\":1}", 4)
        );
        assert!((0..4).contains(&partition_for("x", 4)));
        assert_eq!(partition_for("x", 1), 0);
    }
}
