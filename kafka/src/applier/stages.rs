//! The stages of an apply member after its consumer thread, each on a thread of its own: decode
//! (Avro → changes), transform (changes → records or rejections) and sink (write, answer), with
//! the batches that move between them (see the module doc of `applier`).

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::sync::{mpsc, Arc};

use tidemark_apply::{write_batch, TargetTables};
use tidemark_schemas::{BinlogPosition, ChangeEvent, TargetRecord, TargetSchema};
use tidemark_sink::{Sink, WriteStats};
use tidemark_transform::{Rejection, TablePlan};

use crate::registry::{self, Registry};
use crate::wire::Marker;
use crate::{Error, Result};

pub(super) type PartitionKey = (String, i32);

/// One message for the dead-letter topic.
pub(super) struct DeadLetter {
    pub(super) key: Option<Vec<u8>>,
    pub(super) value: Option<Vec<u8>>,
    pub(super) headers: Vec<(&'static str, String)>,
}

#[derive(Default)]
pub(super) struct Batch {
    /// Changes whose plan is known, for the decode thread.
    pub(super) pending: PendingBatch,
    /// The partitions the changes came from (`PendingChange::partition` indexes this).
    pub(super) partitions: Vec<PartitionKey>,
    pub(super) dead: Vec<DeadLetter>,
    /// next offset to read, per partition
    pub(super) offsets: BTreeMap<PartitionKey, i64>,
    pub(super) markers: BTreeMap<PartitionKey, (BinlogPosition, Marker)>,
    pub(super) rejected: BTreeMap<String, u64>,
    pub(super) undecodable: u64,
    pub(super) marker_count: u64,
    pub(super) messages: u64,
}

impl Batch {
    pub(super) fn is_empty(&self) -> bool {
        self.messages == 0 && self.offsets.is_empty()
    }

    /// The index of `tp` in [`Batch::partitions`] (a batch holds a few partitions at most).
    pub(super) fn partition_index(&mut self, topic: &str, partition: i32) -> u32 {
        let found = self
            .partitions
            .iter()
            .rposition(|(t, p)| *p == partition && t == topic);
        let i = found.unwrap_or_else(|| {
            self.partitions.push((topic.to_string(), partition));
            self.partitions.len() - 1
        });
        u32::try_from(i).expect("a batch holds fewer than 2^32 partitions")
    }
}

/// A change message as the consumer thread leaves it for the decode thread: its table's plan
/// (found by the message's `tm-schema` header), where its key and value are in the batch's bytes,
/// and where it came from.
pub(super) struct PendingChange {
    pub(super) plan: Arc<TablePlan>,
    pub(super) key: Option<Range<usize>>,
    pub(super) value: Range<usize>,
    /// Index into the batch's [`Batch::partitions`].
    pub(super) partition: u32,
    pub(super) offset: i64,
}

/// A batch's changes for the decode thread.
#[derive(Default)]
pub(super) struct PendingBatch {
    pub(super) changes: Vec<PendingChange>,
    /// The keys and values of `changes`, one after the other.
    pub(super) bytes: Vec<u8>,
}

impl PendingBatch {
    /// Append `data` to the batch's bytes; where it is.
    pub(super) fn copy_in(&mut self, data: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        start..self.bytes.len()
    }
}

/// A change message the decode thread could not make a change of, with what the dead letter
/// needs.
pub(super) struct UndecodableChange {
    pub(super) why: String,
    pub(super) key: Option<Vec<u8>>,
    pub(super) value: Vec<u8>,
    pub(super) partition: u32,
    pub(super) offset: i64,
}

/// The decode's stage of [`KafkaApplier::run`]: each batch's messages → changes (Avro, through
/// the schema registry when configured) and undecodable messages, in order, handed to the
/// transform thread. A registry that does not answer ends the batch with that error (apply
/// stops; the batch is read again after a restart).
pub(super) fn decode_loop(
    registry: Option<Arc<Registry>>,
    jobs: mpsc::Receiver<DecodeJob>,
    transform: mpsc::SyncSender<TransformJob>,
) {
    for job in jobs {
        let next = match job {
            DecodeJob::Changes(batch) => match decode_batch(registry.as_deref(), batch) {
                Ok((changes, undecodable)) => TransformJob::Changes {
                    changes,
                    undecodable,
                },
                Err(e) => TransformJob::Fail(e),
            },
            DecodeJob::EnsureTable(schema) => TransformJob::EnsureTable(schema),
        };
        if transform.send(next).is_err() {
            break;
        }
    }
}

pub(super) fn decode_batch(
    registry: Option<&Registry>,
    batch: PendingBatch,
) -> Result<(Vec<DecodedChange>, Vec<UndecodableChange>)> {
    let mut changes = Vec::with_capacity(batch.changes.len());
    let mut undecodable = Vec::new();
    for p in batch.changes {
        let value = &batch.bytes[p.value.clone()];
        let why = match registry::decode_value::<ChangeEvent>(registry, value)? {
            Ok(change) if change.table == p.plan.source().table => {
                changes.push(DecodedChange {
                    plan: p.plan,
                    change,
                    partition: p.partition,
                    offset: p.offset,
                });
                continue;
            }
            Ok(change) => format!(
                "a change of {} names the table description of {}",
                change.table,
                p.plan.source().table
            ),
            Err(why) => why,
        };
        undecodable.push(UndecodableChange {
            why,
            key: p.key.map(|k| batch.bytes[k].to_vec()),
            value: value.to_vec(),
            partition: p.partition,
            offset: p.offset,
        });
    }
    Ok((changes, undecodable))
}

/// A change decoded by the decode thread, waiting for the transform thread: its table's plan,
/// and where it came from (for the dead letter of a rejection).
pub(super) struct DecodedChange {
    pub(super) plan: Arc<TablePlan>,
    pub(super) change: ChangeEvent,
    /// Index into the batch's [`Batch::partitions`].
    pub(super) partition: u32,
    pub(super) offset: i64,
}

/// A change the target schema rejected, with where it came from.
pub(super) struct RejectedChange {
    pub(super) rejection: Box<Rejection>,
    pub(super) partition: u32,
    pub(super) offset: i64,
}

/// What the decode thread is asked to do. Jobs go on to the transform and sink threads in the
/// order they came.
pub(super) enum DecodeJob {
    /// A batch's change messages, to be decoded, made into records and written.
    Changes(PendingBatch),
    /// Create or alter a target table (sent only with nothing in flight).
    EnsureTable(TargetSchema),
}

/// What the transform thread is asked to do.
pub(super) enum TransformJob {
    /// A batch's changes, to be made into records and written, and its undecodable messages.
    Changes {
        changes: Vec<DecodedChange>,
        undecodable: Vec<UndecodableChange>,
    },
    EnsureTable(TargetSchema),
    /// The batch could not be decoded: answer with this error.
    Fail(Error),
}

/// What the sink thread is asked to do.
pub(super) enum SinkJob {
    /// A batch's records, in its order, and its rejections and undecodable messages (passed
    /// back untouched).
    Write {
        records: Vec<TargetRecord>,
        /// Where each record came from: (partition index in its batch, offset).
        origins: Vec<(u32, i64)>,
        rejected: Vec<RejectedChange>,
        undecodable: Vec<UndecodableChange>,
    },
    EnsureTable(TargetSchema),
    Fail(Error),
}

/// The sink thread's answer to one job, in job order.
pub(super) struct SinkAnswer {
    pub(super) written: Result<WriteStats>,
    /// The batch's rejections and undecodable messages, for its dead letters.
    pub(super) rejected: Vec<RejectedChange>,
    pub(super) undecodable: Vec<UndecodableChange>,
}

impl SinkAnswer {
    /// The answer to a job that carries no dead letters (a table created, a batch failed).
    pub(super) fn without_letters(written: Result<WriteStats>) -> Self {
        SinkAnswer {
            written,
            rejected: Vec::new(),
            undecodable: Vec::new(),
        }
    }
}

/// The transform's stage of [`KafkaApplier::run`]: each batch's changes → records and
/// rejections, in order, handed straight to the sink thread. It also frees the records the sink
/// thread is done with, so they go back to the thread that allocated them.
pub(super) fn transform_loop(
    jobs: mpsc::Receiver<TransformJob>,
    sink: mpsc::SyncSender<SinkJob>,
    spent: mpsc::Receiver<Vec<TargetRecord>>,
) {
    for job in jobs {
        while let Ok(written) = spent.try_recv() {
            drop(written);
        }
        let next = match job {
            TransformJob::Changes {
                changes,
                undecodable,
            } => {
                let mut records = Vec::with_capacity(changes.len());
                let mut origins = Vec::with_capacity(changes.len());
                let mut rejected = Vec::new();
                for d in changes {
                    match d.plan.apply_owned(d.change) {
                        Ok(record) => {
                            records.push(record);
                            origins.push((d.partition, d.offset));
                        }
                        Err(rejection) => rejected.push(RejectedChange {
                            rejection,
                            partition: d.partition,
                            offset: d.offset,
                        }),
                    }
                }
                SinkJob::Write {
                    records,
                    origins,
                    rejected,
                    undecodable,
                }
            }
            TransformJob::EnsureTable(schema) => SinkJob::EnsureTable(schema),
            TransformJob::Fail(e) => SinkJob::Fail(e),
        };
        if sink.send(next).is_err() {
            break;
        }
    }
}

/// The sink's stage of [`KafkaApplier::run`]: jobs in order, one answer per job. Written records
/// go to `spent`, to be freed by the transform thread.
///
/// Tables are announced and batches written by `tidemark_apply` (a table never narrows; a
/// transient failure is written again for up to `retry_for`; a batch the target refuses because
/// of a value is written record by record). Each record the target refuses becomes a rejection
/// of its batch (kind `target_refused`), sent to the dead-letter topic before the batch's
/// offsets are committed, as the transform's rejections are.
pub(super) fn sink_loop<S: Sink + ?Sized>(
    sink: &mut S,
    retry_for: std::time::Duration,
    jobs: mpsc::Receiver<SinkJob>,
    answers: mpsc::Sender<SinkAnswer>,
    spent: mpsc::Sender<Vec<TargetRecord>>,
) {
    let mut tables = TargetTables::default();
    for job in jobs {
        let answer = match job {
            SinkJob::Write {
                records,
                rejected,
                undecodable,
                ..
            } if records.is_empty() => SinkAnswer {
                written: Ok(WriteStats::default()),
                rejected,
                undecodable,
            },
            SinkJob::Write {
                records,
                origins,
                mut rejected,
                undecodable,
            } => {
                let written = write_batch(sink, &tables, &records, &[], retry_for)
                    .map(|written| {
                        for (index, rejection) in written.refused {
                            let (partition, offset) = origins[index];
                            rejected.push(RejectedChange {
                                rejection: Box::new(rejection),
                                partition,
                                offset,
                            });
                        }
                        written.stats
                    })
                    .map_err(Error::from);
                let _ = spent.send(records);
                SinkAnswer {
                    written,
                    rejected,
                    undecodable,
                }
            }
            SinkJob::EnsureTable(schema) => SinkAnswer::without_letters(
                tables
                    .ensure(sink, schema, retry_for)
                    .map(|()| WriteStats::default())
                    .map_err(Error::from),
            ),
            SinkJob::Fail(e) => SinkAnswer::without_letters(Err(e)),
        };
        if answers.send(answer).is_err() {
            break;
        }
    }
}

/// Batches handed to the decode thread whose sink answer has not been settled yet, at most: one
/// queued and one being worked on for each of the decode, transform and sink threads. A crash
/// re-delivers at most these (the version-aware sink absorbs them).
pub(super) const MAX_BATCHES_IN_FLIGHT: usize = 6;

/// The applier's handle on the decode, transform and sink threads of a running applier.
pub(super) struct Stages {
    pub(super) jobs: mpsc::SyncSender<DecodeJob>,
    pub(super) answers: mpsc::Receiver<SinkAnswer>,
    /// The rest of each batch handed over (offsets, markers, dead letters, counts) and whether
    /// to commit its offsets, oldest first: the sink's answers come in this order.
    pub(super) in_flight: VecDeque<(Batch, bool)>,
}

impl Stages {
    pub(super) fn stopped() -> Error {
        Error::Protocol("the decode, transform or sink thread stopped".into())
    }

    pub(super) fn send(&self, job: DecodeJob) -> Result<()> {
        self.jobs.send(job).map_err(|_| Self::stopped())
    }

    pub(super) fn wait(&self) -> Result<SinkAnswer> {
        self.answers.recv().map_err(|_| Self::stopped())
    }

    /// Create or alter a target table (nothing may be in flight: callers drain first).
    pub(super) fn ensure_table(&mut self, schema: TargetSchema) -> Result<()> {
        debug_assert!(self.in_flight.is_empty());
        self.send(DecodeJob::EnsureTable(schema))?;
        self.wait()?.written.map(drop)
    }
}
