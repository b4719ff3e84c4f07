//! Writing transformed records to the target: what embedded `tidemark run`
//! (`src/embedded.rs`) and Kafka-mode `tidemark apply` (`kafka/src/applier`) both do between
//! the transform and the [`Sink`]. Each mode feeds it from its own source (the in-process
//! channel, the Kafka consumer) and keeps its own progress (checkpoints in the target, consumer
//! offsets); what reaches the target goes through here.
//!
//! - **A target table never narrows** ([`TargetTables`]). A sink writes every record by the
//!   columns it was last told of, and shapes of one table arrive interleaved around a schema
//!   change: a backfill in today's shape beside capture's rows written before an `ADD COLUMN`,
//!   or, in Kafka mode, partitions that are at different points of the change (an apply member
//!   restarted mid-change meets them in any order). Announcing an older, narrower shape must
//!   not make the sink forget a column a newer record carries, so each announced shape is
//!   widened by the columns announced before it (nullable). A record without such a column
//!   writes NULL there, which is what its row held when it was written.
//! - **A batch is written whole, or record by record** ([`write_batch`]). Transient failures
//!   are retried for up to `apply.retry_seconds`
//!   ([`tidemark_sink::resilient::retry_transient`]). A value the target refuses (an empty text
//!   as a CQL partition key) is a property of one record: the batch is written one record at a
//!   time, and each refused record comes back as a [`Rejection`] of kind `target_refused` for
//!   the caller's dead-letter output. The checkpoints that pass such a batch are then left to
//!   the caller, to write once the dead letters are kept ([`Written::checkpoints_pending`]).
//! - **What an operator counts** ([`count_applied`], [`count_rejected`]): the per-table
//!   counters of the metrics endpoint, the same in both modes.

use std::collections::HashMap;
use std::time::Duration;

use tidemark_schemas::{Checkpoint, TargetColumn, TargetRecord, TargetSchema};
use tidemark_sink::resilient::{refused_value, retry_transient, write_each};
use tidemark_sink::{Result, Sink, WriteStats};
use tidemark_transform::Rejection;
use tracing::warn;

/// The target tables announced to one sink, each in the widest shape announced so far.
#[derive(Debug, Default)]
pub struct TargetTables {
    announced: HashMap<String, TargetSchema>,
}

impl TargetTables {
    /// Announce `schema` to `sink` (create or alter its table), widened by the columns of the
    /// shapes announced before it (see the module doc), retrying transient failures for up to
    /// `retry_for`.
    pub fn ensure(
        &mut self,
        sink: &mut (impl Sink + ?Sized),
        schema: TargetSchema,
        retry_for: Duration,
    ) -> Result<()> {
        let schema = widened(self.announced.get(&schema.table), schema);
        retry_transient(retry_for, || sink.ensure_table(&schema))?;
        self.announced.insert(schema.table.clone(), schema);
        Ok(())
    }

    /// The shape `table` was last announced in (widened), if it was.
    pub fn get(&self, table: &str) -> Option<&TargetSchema> {
        self.announced.get(table)
    }
}

/// `new`'s columns, then those of `known` that `new` lacks, as nullable columns; `new` as it is
/// when the two do not share a key (a table written anew under another key).
fn widened(known: Option<&TargetSchema>, mut new: TargetSchema) -> TargetSchema {
    if let Some(known) = known.filter(|k| k.key == new.key) {
        for col in &known.columns {
            if new.column(&col.name).is_none() {
                new.columns.push(TargetColumn {
                    nullable: true,
                    ..col.clone()
                });
            }
        }
    }
    new
}

/// What [`write_batch`] did.
#[derive(Debug, Default)]
pub struct Written {
    pub stats: WriteStats,
    /// The records the target refused, by their index in the batch, as rejections for the
    /// dead-letter output.
    pub refused: Vec<(usize, Rejection)>,
    /// The target refused records, so the batch's checkpoints were not written: the caller
    /// writes them ([`write_checkpoints`]) once `refused` is in its dead-letter output, so that
    /// a crash in between re-reads the batch rather than loses a dead letter.
    pub checkpoints_pending: bool,
}

/// Write `records`, then `checkpoints`, in one write when the target takes every record (see
/// the module doc). Any error but a refused value is returned: nothing of the batch is known
/// written, and writing it again is harmless (the version guard).
pub fn write_batch(
    sink: &mut (impl Sink + ?Sized),
    tables: &TargetTables,
    records: &[TargetRecord],
    checkpoints: &[Checkpoint],
    retry_for: Duration,
) -> Result<Written> {
    // A write of checkpoints alone (capture's heartbeats) is not a batch of records.
    if !records.is_empty() {
        metrics::gauge!("tidemark_apply_batch_records").set(records.len() as f64);
    }
    match retry_transient(retry_for, || sink.write(records, checkpoints)) {
        Err(e) if refused_value(&e).is_some() => {
            let (stats, refusals) = write_each(sink, records, retry_for)?;
            let refused = refusals
                .into_iter()
                .map(|r| {
                    let record = &records[r.index];
                    let rejection = Rejection::target_refused(
                        record,
                        tables.get(record.table.as_str()),
                        &r.column,
                        r.reason,
                    );
                    warn!(%rejection, "the target refused a record; it goes to the dead-letter output");
                    (r.index, rejection)
                })
                .collect();
            Ok(Written {
                stats,
                refused,
                checkpoints_pending: !checkpoints.is_empty(),
            })
        }
        written => Ok(Written {
            stats: written?,
            ..Written::default()
        }),
    }
}

/// Write checkpoints alone (those a refused batch left pending), retried as [`write_batch`]'s.
pub fn write_checkpoints(
    sink: &mut (impl Sink + ?Sized),
    checkpoints: &[Checkpoint],
    retry_for: Duration,
) -> Result<WriteStats> {
    retry_transient(retry_for, || sink.write(&[], checkpoints))
}

/// Count what a write applied and ignored, per target table (`tidemark_rows_applied_total`,
/// `tidemark_rows_ignored_older_total`).
pub fn count_applied(stats: &WriteStats) {
    for (table, (applied, ignored)) in &stats.per_table {
        metrics::counter!("tidemark_rows_applied_total", "table" => table.clone())
            .increment(*applied);
        metrics::counter!("tidemark_rows_ignored_older_total", "table" => table.clone())
            .increment(*ignored);
    }
}

/// Count a rejection kept in the dead-letter output (`tidemark_rows_rejected_total`, by source
/// table and kind).
pub fn count_rejected(rejection: &Rejection) {
    metrics::counter!(
        "tidemark_rows_rejected_total",
        "table" => rejection.source_table.clone(),
        "kind" => rejection.kind.as_str()
    )
    .increment(1);
}

#[cfg(test)]
mod tests {
    use tidemark_schemas::{TargetColumn, TargetSchema, TargetType};

    use super::widened;

    fn shape(columns: &[&str], key: &str) -> TargetSchema {
        TargetSchema {
            table: "items".into(),
            columns: columns
                .iter()
                .map(|name| TargetColumn {
                    name: (*name).into(),
                    ty: TargetType::Int { bits: 32 },
                    nullable: *name != key,
                })
                .collect(),
            key: vec![key.into()],
        }
    }

    fn names(schema: &TargetSchema) -> Vec<&str> {
        schema.columns.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn an_older_shape_keeps_the_columns_announced_before_it() {
        let mut wide = shape(&["id", "a", "note"], "id");
        wide.columns[2].nullable = false;
        let narrow = shape(&["id", "a"], "id");
        let announced = widened(Some(&wide), narrow);
        assert_eq!(names(&announced), ["id", "a", "note"]);
        assert!(
            announced.columns[2].nullable,
            "a record of the older shape writes NULL there"
        );
        // Widening a shape that already holds every column changes nothing.
        let again = widened(Some(&announced), wide.clone());
        assert_eq!(again, wide);
    }

    #[test]
    fn a_shape_under_another_key_is_taken_as_it_is() {
        let before = shape(&["id", "a", "note"], "id");
        let rekeyed = shape(&["code", "a"], "code");
        assert_eq!(widened(Some(&before), rekeyed.clone()), rekeyed);
        assert_eq!(widened(None, rekeyed.clone()), rekeyed);
    }
}
