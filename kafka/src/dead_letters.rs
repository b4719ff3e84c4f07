//! Reading the dead-letter topic back: the schema rejections the appliers sent there, for the
//! reconciler, which classifies a key whose newest change was rejected as `schema_rejection`
//! rather than `missing` or `stale` (DESIGN.md, drift taxonomy).
//!
//! The topic also holds undecodable messages (header `tm-kind: undecodable`, the raw bytes as
//! they were read); they name no key the reconciler could use and are skipped here.

use rdkafka::Message;
use tidemark_transform::Rejection;

use crate::reader::TopicReader;
use crate::{wire, Error, KafkaConfig, Result, Topics};

/// Every schema rejection on the dead-letter topic up to its end as it is now. Blocking.
pub fn read_rejections(config: &KafkaConfig) -> Result<Vec<Rejection>> {
    let mut reader = TopicReader::open(config, &Topics::new(config).dlq(), "dlq-reader")?;
    let mut out = Vec::new();
    reader.catch_up(|m| {
        if wire::header(m.headers(), wire::KIND) != Some(wire::KIND_REJECTION) {
            return Ok(());
        }
        let decode_error = |message: String| Error::Decode {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            message,
        };
        let payload = m
            .payload()
            .ok_or_else(|| decode_error("a rejection without a value".into()))?;
        out.push(
            serde_json::from_slice::<Rejection>(payload)
                .map_err(|e| decode_error(format!("not a rejection record: {e}")))?,
        );
        Ok(())
    })?;
    Ok(out)
}
