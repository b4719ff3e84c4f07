//! Writing through a target that is sometimes down and sometimes says no: what both apply paths
//! (embedded `tidemark run` and Kafka-mode `tidemark apply`) do around [`Sink::write`].
//!
//! - A **transient** failure ([`Error::is_transient`]: a node restarting, the SQLite file locked
//!   by another process) is answered by writing the same call again, with a pause doubling from
//!   250 ms up to 10 s, for up to a configured time. A write is idempotent (the version guard)
//!   and carries its checkpoints, so repeating it whole never puts a checkpoint ahead of its
//!   records. Past that time the transient error is returned: the job stops and is restarted
//!   from its checkpoint.
//! - A **refused value** ([`Error::Value`]: e.g. an empty text as a CQL partition key) is a
//!   property of one record, not of the batch: [`write_each`] writes the batch's records one at
//!   a time and hands back those the target refused, with the column and the target's reason,
//!   for the caller to put in its dead-letter output *before* it writes the checkpoints that
//!   pass them. Every other record of the batch is written; nothing is skipped silently and
//!   nothing wedges the pipeline on one bad row.

use std::time::{Duration, Instant};

use tidemark_schemas::TargetRecord;

use crate::{Error, Result, Sink, WriteStats};

/// `op`, repeated while it fails transiently, for up to `retry_for` (see the module docs). The
/// last error is returned as it is once that time has passed.
pub fn retry_transient<T>(retry_for: Duration, mut op: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + retry_for;
    let mut pause = Duration::from_millis(250);
    loop {
        match op() {
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tracing::warn!(error = %e, retry_in = ?pause, "the target did not take the write; trying again");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(10));
            }
            done => return done,
        }
    }
}

/// The column and the target's reason, when `e` is a value the target refused.
pub fn refused_value(e: &Error) -> Option<(&str, &str)> {
    match e {
        Error::Value {
            column, message, ..
        } => Some((column, message)),
        _ => None,
    }
}

/// A record of a batch the target refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Its index in the batch.
    pub index: usize,
    pub column: String,
    pub reason: String,
}

/// The records of `records` written one at a time (each retried as [`retry_transient`] says);
/// those whose value the target refuses are returned instead of written. Any other error stops
/// the call. Checkpoints are not written: the caller writes them once the refusals are kept.
pub fn write_each(
    sink: &mut (impl Sink + ?Sized),
    records: &[TargetRecord],
    retry_for: Duration,
) -> Result<(WriteStats, Vec<Refusal>)> {
    let mut stats = WriteStats::default();
    let mut refused = Vec::new();
    for (index, record) in records.iter().enumerate() {
        match retry_transient(retry_for, || sink.write(std::slice::from_ref(record), &[])) {
            Ok(one) => stats.merge(&one),
            Err(e) => match refused_value(&e) {
                Some((column, reason)) => refused.push(Refusal {
                    index,
                    column: column.to_string(),
                    reason: reason.to_string(),
                }),
                None => return Err(e),
            },
        }
    }
    Ok((stats, refused))
}
