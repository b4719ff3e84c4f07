//! Splitting one table's key space into N parts of about equal rows, so that N workers (N pods of
//! an Indexed Job, or N tasks of one process) can backfill or reconcile one table together.
//!
//! ## The split
//! A [`KeySplit`] is a list of at most N − 1 boundary keys `b₀ < b₁ < …`, real keys of the table
//! in the server's own order. Part `i` holds the keys `k` with `b_{i−1} < k ≤ b_i` (no lower bound
//! for part 0, no upper bound for the last non-empty part). Every key, present or future, falls in
//! exactly one part, because the comparisons are the server's (the same keyset predicates the
//! backfill reads with). When the table has fewer distinct boundary keys than N − 1 (a small
//! table), the parts past the last boundary are empty.
//!
//! The split is computed once, by part 0, and stored with the checkpoints (stage
//! [`SPLIT_STAGE`], scope the table); every other part, and every restart, reads it from there.
//! A table's backfill checkpoint names the split its parts run in (`BackfillCheckpoint::split`);
//! a reset of the table's backfill (a resync, a schema change that needs a new backfill) writes a
//! checkpoint without it, which makes the split and every part's progress stale at once.
//!
//! ## How the boundaries are found, without reading the table
//! The server's own row estimates for key ranges (`EXPLAIN`'s `rows` for a range of the key's
//! index: InnoDB answers with a few index dives, whatever the table's size) say about how many
//! rows lie between two keys. They are good only for ranges well below half the table (InnoDB
//! doubles its estimate of a large range and caps it at half the table: measured on MariaDB
//! 10.11, a range of 10,000 of 60,000 rows is estimated at 20,588, any range above 30,000 at
//! 30,125), so the key space is cut into many small slices of the same estimated size (16 per
//! part), one after the other from the start:
//! - a slice after key `a` ends at the smallest value of the first key column whose range from
//!   `a` reaches the slice's size (a binary search between the column's minimum and maximum,
//!   two index dives);
//! - when that one value holds many rows (the leading column of a composite key with few values,
//!   a tenant id), the search goes on in the next key column among the rows with that value;
//! - the value found is replaced by the largest real key at or below it (one index dive): the
//!   next slice starts after it.
//!
//! The parts are then runs of consecutive slices of about equal estimated rows; their ends are
//! sorted and made distinct by the server (`ORDER BY` the key). A table of 2,000,000 rows takes a
//! few thousand `EXPLAIN`s, about a second.
//!
//! Values are searched as numbers: integers as themselves, texts by their first eight characters
//! read as digits in base 95 (the printable ASCII range), binary strings by their first eight
//! bytes. A search only needs values that lie between the minimum and the maximum in the server's
//! order; where its arithmetic and the server's collation disagree, a part comes out bigger or
//! smaller than the others, never wrong. Dates and date-times are searched as days and seconds.
//! DECIMALs of up to 38 digits as their unscaled integers.
//! A key that begins with a column of another type (an ENUM, a FLOAT, a TIME) cannot be searched
//! this way: the split refuses it, naming the column.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Value as MyValue};
use serde::{Deserialize, Serialize};
use tidemark_schemas::{Checkpoint, Row, SourceColumn, SourceSchema, SourceType, TableId, Value};
use tracing::info;

use crate::backfill::{key_param, BackfillCheckpoint, BACKFILL_STAGE};
use crate::capture::key_of;
use crate::source::{decode_row, quote_ident, select_sql};
use crate::{Error, Result};

/// Checkpoint stage of a table's split; the scope is the table.
pub const SPLIT_STAGE: &str = "backfill_split";
/// Checkpoint stage of one part's backfill progress; the scope is `db.table/i`.
pub const PART_STAGE: &str = "backfill_part";

/// One part of N, as `--part i/N` names it (`i` from 0, like a Kubernetes completion index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub index: u32,
    pub of: u32,
}

impl std::str::FromStr for Part {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("`{s}` is not a part: write i/N, with 0 ≤ i < N (e.g. 0/4)");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let of: u32 = n.trim().parse().map_err(|_| bad())?;
        if of == 0 || index >= of {
            return Err(bad());
        }
        Ok(Part { index, of })
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.of)
    }
}

/// A table's key space cut into parts (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeySplit {
    /// Names this split: the table's backfill checkpoint and each part's progress carry it.
    pub id: String,
    pub parts: u32,
    /// Boundary keys, ascending in the server's order and distinct; at most `parts − 1`.
    pub bounds: Vec<Row>,
    /// The server's estimate of the table's rows when the split was made.
    pub estimated_rows: u64,
}

/// The keys of one part: after `after` (exclusive) up to `upto` (inclusive); `None` is no bound.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRange {
    pub after: Option<Row>,
    pub upto: Option<Row>,
}

impl KeySplit {
    /// The key range of part `index`, or `None` when the part is empty (past the last boundary).
    pub fn range(&self, index: u32) -> Option<KeyRange> {
        let i = index as usize;
        if i > self.bounds.len() {
            return None;
        }
        Some(KeyRange {
            after: i.checked_sub(1).map(|j| self.bounds[j].clone()),
            upto: self.bounds.get(i).cloned(),
        })
    }

    pub fn to_checkpoint(&self, table: &TableId) -> Checkpoint {
        Checkpoint {
            stage: SPLIT_STAGE.into(),
            scope: table.to_string(),
            value: serde_json::to_string(self).expect("splits serialize"),
        }
    }
}

impl KeyRange {
    /// Whether this range's bounds name every key column of `schema` (a split made before the
    /// table's key changed does not): the error names the table, the column and the fix.
    pub fn check_key(&self, schema: &SourceSchema) -> Result<()> {
        for bound in [&self.after, &self.upto].into_iter().flatten() {
            if let Some(c) = schema.key_columns().find(|c| bound.get(&c.name).is_none()) {
                return Err(Error::Config {
                    key: "parts".into(),
                    message: format!(
                        "the stored split of {} has no key column `{}` (its key changed since the split was made); run `tidemark resync --table {}` to backfill it again with a new split",
                        schema.table, c.name, schema.table
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The checkpoint scope of part `index` of `table`.
pub fn part_scope(table: &TableId, index: u32) -> String {
    format!("{table}/{index}")
}

/// Where a table's backfill stands, from its stored checkpoints: the table's own checkpoint, and,
/// while it runs in parts, its split and each part's progress. `get(stage, scope)` reads one
/// stored checkpoint.
#[derive(Debug, Clone, Default)]
pub struct StoredBackfill {
    pub table: Option<BackfillCheckpoint>,
    /// The split the table's checkpoint names, when it names one and it is stored.
    pub split: Option<KeySplit>,
    /// Each part's progress in that split (stale progress of another split left out).
    pub parts: Vec<Option<BackfillCheckpoint>>,
}

impl StoredBackfill {
    pub fn read<E>(
        table: &TableId,
        mut get: impl FnMut(&str, &str) -> std::result::Result<Option<String>, E>,
    ) -> std::result::Result<StoredBackfill, StoredError<E>> {
        fn parse<T: serde::de::DeserializeOwned, E>(
            stage: &str,
            scope: &str,
            text: String,
        ) -> std::result::Result<T, StoredError<E>> {
            serde_json::from_str(&text).map_err(|e| StoredError::Unreadable {
                what: format!("the stored {stage} checkpoint of {scope}"),
                message: format!("{e}: `{text}`"),
            })
        }
        let scope = table.to_string();
        let own: Option<BackfillCheckpoint> = get(BACKFILL_STAGE, &scope)
            .map_err(StoredError::Read)?
            .map(|t| parse(BACKFILL_STAGE, &scope, t))
            .transpose()?;
        let mut out = StoredBackfill {
            table: own.clone(),
            ..Default::default()
        };
        let Some(id) = own.and_then(|cp| cp.split) else {
            return Ok(out);
        };
        let split: Option<KeySplit> = get(SPLIT_STAGE, &scope)
            .map_err(StoredError::Read)?
            .map(|t| parse(SPLIT_STAGE, &scope, t))
            .transpose()?
            .filter(|s: &KeySplit| s.id == id);
        if let Some(split) = &split {
            for i in 0..split.parts {
                let part_scope = part_scope(table, i);
                let cp: Option<BackfillCheckpoint> = get(PART_STAGE, &part_scope)
                    .map_err(StoredError::Read)?
                    .map(|t| parse(PART_STAGE, &part_scope, t))
                    .transpose()?
                    .filter(|cp: &BackfillCheckpoint| cp.split.as_deref() == Some(id.as_str()));
                out.parts.push(cp);
            }
        }
        out.split = split;
        Ok(out)
    }

    /// [`StoredBackfill::read`] from a list of stored checkpoints (all stages).
    pub fn from_checkpoints(
        table: &TableId,
        checkpoints: &[Checkpoint],
    ) -> std::result::Result<StoredBackfill, StoredError<std::convert::Infallible>> {
        StoredBackfill::read(table, |stage, scope| {
            Ok(checkpoints
                .iter()
                .find(|c| c.stage == stage && c.scope == scope)
                .map(|c| c.value.clone()))
        })
    }

    /// The table's backfill as one checkpoint: its own, or, while it runs in parts, the sum of
    /// its parts (done only when every part is; no resume key: a part resumes from its own).
    pub fn combined(&self) -> Option<BackfillCheckpoint> {
        let own = self.table.clone()?;
        if own.done || own.split.is_none() {
            return Some(own);
        }
        let Some(split) = &self.split else {
            // Named but not stored yet: part 0 stores the split with the table's checkpoint.
            return Some(own);
        };
        let mut sum = BackfillCheckpoint {
            split: own.split.clone(),
            done: true,
            estimated_rows: Some(0),
            ..BackfillCheckpoint::default()
        };
        let mut rate = 0.0;
        for (i, part) in self.parts.iter().enumerate() {
            let empty = split.range(i as u32).is_none();
            match part {
                Some(p) => {
                    sum.rows += p.rows;
                    sum.chunks += p.chunks;
                    sum.done &= p.done;
                    *sum.estimated_rows.as_mut().expect("set above") +=
                        p.estimated_rows.unwrap_or(p.rows);
                    if !p.done {
                        rate += p.rows_per_second.unwrap_or(0.0);
                    }
                }
                None => sum.done &= empty,
            }
        }
        sum.rows_per_second = (rate > 0.0).then_some(rate);
        if sum.done {
            sum.estimated_rows = None;
        }
        Some(sum)
    }
}

/// Why the stored backfill state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StoredError<E> {
    #[error("{0}")]
    Read(E),
    #[error("{what} is unreadable: {message}")]
    Unreadable { what: String, message: String },
}

/// What a part of a table's backfill should do, given what is stored.
#[derive(Debug, Clone)]
pub enum PartStep {
    /// The table's backfill is complete (whole, or every part).
    Done,
    /// Part 0, and no split is stored: make one and store it.
    Plan,
    /// Another part, and no split is stored yet: wait for part 0 to store it.
    Wait,
    /// Run this part from `checkpoint` (fresh or resumed) over its range.
    Run {
        split: KeySplit,
        checkpoint: BackfillCheckpoint,
    },
}

impl StoredBackfill {
    /// The step of `part` of `table`, or an error when the stored split has another number of
    /// parts.
    pub fn step(&self, table: &TableId, part: Part) -> Result<PartStep> {
        if self.table.as_ref().is_some_and(|cp| cp.done) {
            return Ok(PartStep::Done);
        }
        let Some(split) = &self.split else {
            return Ok(if part.index == 0 {
                PartStep::Plan
            } else {
                PartStep::Wait
            });
        };
        if split.parts != part.of {
            return Err(Error::Config {
                key: "--part".into(),
                message: format!(
                    "{table} is being backfilled in {} parts (split {}); run its parts as i/{}, or run `tidemark resync --table {table}` to start over with a new split",
                    split.parts, split.id, split.parts
                ),
            });
        }
        // A part without progress starts fresh (`Backfill::run_part` stamps it with the split).
        let checkpoint = self.parts[part.index as usize].clone().unwrap_or_default();
        Ok(PartStep::Run {
            split: split.clone(),
            checkpoint,
        })
    }
}

/// Compute a split of `schema`'s table into `parts` (see the module doc for how).
pub async fn plan(conn: &mut Conn, schema: &SourceSchema, parts: u32) -> Result<KeySplit> {
    check_splittable(schema)?;
    let key: Vec<&SourceColumn> = schema.key_columns().collect();
    let mut estimator = Estimator {
        conn,
        schema,
        key: &key,
    };
    let total = estimator.table_rows().await?;
    // Slices of about PIECES_PER_PART per part, each a range of the same estimated size, cut
    // one after the other from the start of the key space.
    let pieces_wanted = u64::from(parts.max(1)) * PIECES_PER_PART;
    let size = (total / pieces_wanted).max(1);
    let mut pieces: Vec<(Row, u64)> = Vec::new();
    let mut lower: Option<Row> = None;
    while total > 0 && (pieces.len() as u64) < pieces_wanted * 4 {
        let Some(prefix) = estimator.boundary(lower.as_ref(), size).await? else {
            break;
        };
        let Some(end) = estimator.last_key(lower.as_ref(), &prefix).await? else {
            break;
        };
        let rows = estimator.rows(lower.as_ref(), Some(&end)).await?;
        pieces.push((end.clone(), rows));
        lower = Some(end);
    }
    // Whatever follows the last slice.
    let rest = estimator.rows(lower.as_ref(), None).await?;
    let sum: u64 = pieces.iter().map(|(_, n)| n).sum::<u64>() + rest;
    // Part i ends at the first slice whose running sum reaches i / parts of the whole.
    let mut candidates = Vec::new();
    let mut running = 0u64;
    let mut next = 1u32;
    for (end, rows) in &pieces {
        running += rows;
        while next < parts
            && u128::from(running) * u128::from(parts) >= u128::from(sum) * u128::from(next)
        {
            if candidates.last() != Some(end) {
                candidates.push(end.clone());
            }
            next += 1;
        }
    }
    let bounds = estimator.sorted_distinct(&candidates).await?;
    let id = format!(
        "{:x}",
        time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u128
            ^ u128::from(std::process::id())
    );
    info!(table = %schema.table, parts, estimated_rows = total, slices = pieces.len() + 1, boundaries = ?bounds.iter().map(Row::canonical_text).collect::<Vec<_>>(), "split the table's keys into parts");
    Ok(KeySplit {
        id,
        parts,
        bounds,
        estimated_rows: total,
    })
}

/// Whether `schema`'s table can be split: its key must begin with a column whose values the
/// split can search (see the module doc). The error names the table, the column and the fix.
pub fn check_splittable(schema: &SourceSchema) -> Result<()> {
    let first = schema.key_columns().next().ok_or(Error::NoKey {
        table: schema.table,
    })?;
    if Axis::of(first).is_some() {
        return Ok(());
    }
    Err(Error::Config {
        key: "parts".into(),
        message: format!(
            "{} cannot be split into parts: its key begins with column `{}` ({}), and a split searches the key's values as numbers, which works for integer, DECIMAL (up to 38 digits), text, binary and date or date-time columns only; backfill it whole (without --part; `[backfill] parts` reads such a table whole by itself)",
            schema.table, first.name, first.column_type
        ),
    })
}

/// Slices of the key space per part: the server's range estimates are only good for ranges well
/// below half the table (InnoDB caps them there), so parts are made of many small slices.
const PIECES_PER_PART: u64 = 16;

/// A key column's values as numbers, for the binary search.
#[derive(Debug, Clone)]
enum Axis {
    Signed,
    Unsigned,
    /// The 8 characters after `prefix` (what the column's smallest and largest value share: URLs,
    /// `customer-…`), base 95 from ' ' (0x20) to '~' (0x7e).
    Text {
        prefix: String,
    },
    /// The 8 bytes after `prefix`, big-endian.
    Bytes {
        prefix: Vec<u8>,
    },
    /// DATE, as days since 1970-01-01.
    Days,
    /// DATETIME or TIMESTAMP, as whole seconds since 1970-01-01 00:00:00.
    Seconds,
    /// DECIMAL of at most 38 digits, as its unscaled integer (`12.50` with scale 2: 1250).
    Unscaled {
        scale: u8,
    },
}

const TEXT_DIGITS: u32 = 8;

impl Axis {
    fn of(column: &SourceColumn) -> Option<Axis> {
        match &column.ty {
            SourceType::Integer {
                unsigned: false, ..
            } => Some(Axis::Signed),
            SourceType::Integer { unsigned: true, .. } | SourceType::Year => Some(Axis::Unsigned),
            SourceType::Text { .. } => Some(Axis::Text {
                prefix: String::new(),
            }),
            SourceType::Binary { .. } => Some(Axis::Bytes { prefix: Vec::new() }),
            SourceType::Date => Some(Axis::Days),
            SourceType::Decimal { precision, scale } if *precision <= 38 => {
                Some(Axis::Unscaled { scale: *scale })
            }
            SourceType::DateTime { .. } | SourceType::Timestamp { .. } => Some(Axis::Seconds),
            _ => None,
        }
    }

    /// This axis between `min` and `max`: texts and bytes searched after the prefix they share.
    fn between(self, min: &Value, max: &Value) -> Axis {
        match (self, min, max) {
            (Axis::Text { .. }, Value::Text(a), Value::Text(b)) => Axis::Text {
                prefix: a
                    .chars()
                    .zip(b.chars())
                    .take_while(|(x, y)| x == y)
                    .map(|(x, _)| x)
                    .collect(),
            },
            (Axis::Bytes { .. }, Value::Bytes(a), Value::Bytes(b)) => Axis::Bytes {
                prefix: a
                    .iter()
                    .zip(b)
                    .take_while(|(x, y)| x == y)
                    .map(|(x, _)| *x)
                    .collect(),
            },
            (axis, _, _) => axis,
        }
    }

    fn number(&self, value: &Value) -> Option<i128> {
        Some(match (self, value) {
            (_, Value::Int(i)) => i128::from(*i),
            (_, Value::UInt(u)) => i128::from(*u),
            (_, Value::Year(y)) => i128::from(*y),
            (Axis::Text { prefix }, Value::Text(s)) => {
                let mut n: i128 = 0;
                let mut chars = s.strip_prefix(prefix.as_str())?.chars();
                for _ in 0..TEXT_DIGITS {
                    let digit = chars
                        .next()
                        .map_or(0, |c| (c as u32).clamp(0x20, 0x7e) - 0x20);
                    n = n * 95 + i128::from(digit);
                }
                n
            }
            (Axis::Bytes { prefix }, Value::Bytes(b)) => {
                let b = b.strip_prefix(prefix.as_slice())?;
                let mut n: i128 = 0;
                for i in 0..8 {
                    n = n * 256 + i128::from(b.get(i).copied().unwrap_or(0));
                }
                n
            }
            (Axis::Unscaled { scale }, Value::Decimal(text)) => unscaled(text, *scale)?,
            // Dates and date-times by their canonical text (`YYYY-MM-DD[ HH:MM:SS[.f]]`); zero
            // dates have no place on the calendar: no search through them.
            (Axis::Days, Value::Date { .. })
            | (Axis::Seconds, Value::DateTime(_) | Value::Timestamp(_)) => {
                seconds_of(&value.to_string())?
                    / if matches!(self, Axis::Days) {
                        86_400
                    } else {
                        1
                    }
            }
            _ => return None,
        })
    }

    fn value(&self, n: i128) -> Value {
        match self {
            Axis::Signed => Value::Int(n as i64),
            Axis::Unsigned => Value::UInt(n as u64),
            Axis::Text { prefix } => {
                let mut digits = Vec::new();
                let mut rest = n;
                for _ in 0..TEXT_DIGITS {
                    digits.push((rest % 95) as u8 + 0x20);
                    rest /= 95;
                }
                digits.reverse();
                let text = String::from_utf8(digits).expect("printable ASCII");
                Value::Text(format!("{prefix}{}", text.trim_end()))
            }
            Axis::Bytes { prefix } => {
                let bytes = (n as u64).to_be_bytes().to_vec();
                let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
                Value::Bytes([prefix.as_slice(), &bytes[..end]].concat())
            }
            // A date or date-time as its text: the server compares it with the column's values
            // in the column's type (it is only ever a search probe, never stored).
            Axis::Days => Value::Text(calendar_text(n * 86_400)[..10].to_string()),
            Axis::Seconds => Value::Text(calendar_text(n)),
            Axis::Unscaled { scale } => {
                let digits = n.unsigned_abs().to_string();
                let scale = usize::from(*scale);
                let padded = format!("{digits:0>width$}", width = scale + 1);
                let (whole, fraction) = padded.split_at(padded.len() - scale);
                let sign = if n < 0 { "-" } else { "" };
                Value::Decimal(if scale == 0 {
                    format!("{sign}{whole}")
                } else {
                    format!("{sign}{whole}.{fraction}")
                })
            }
        }
    }
}

/// A DECIMAL's text (`-12.5`) as its unscaled integer at `scale` (`-1250` at scale 2).
fn unscaled(text: &str, scale: u8) -> Option<i128> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let mut fraction = fraction.to_string();
    fraction.truncate(usize::from(scale));
    let fraction = format!("{fraction:0<width$}", width = usize::from(scale));
    let n: i128 = format!("{whole}{fraction}").parse().ok()?;
    Some(if negative { -n } else { n })
}

/// Seconds since 1970-01-01 00:00:00 of a date or date-time's canonical text (`2026-01-31` or
/// `2026-01-31 12:00:00[.f]`); `None` for a zero date.
fn seconds_of(text: &str) -> Option<i128> {
    let field = |range: std::ops::Range<usize>| -> Option<u32> { text.get(range)?.parse().ok() };
    let month = time::Month::try_from(u8::try_from(field(5..7)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(
        i32::try_from(field(0..4)?).ok()?,
        month,
        u8::try_from(field(8..10)?).ok()?,
    )
    .ok()?;
    let (h, m, sec) = if text.len() >= 19 {
        (field(11..13)?, field(14..16)?, field(17..19)?)
    } else {
        (0, 0, 0)
    };
    let days = i128::from(date.to_julian_day()) - i128::from(UNIX_EPOCH_JULIAN_DAY);
    Some(days * 86_400 + i128::from(h * 3600 + m * 60 + sec))
}

/// `YYYY-MM-DD HH:MM:SS` of seconds since 1970-01-01, within the years a DATE holds.
fn calendar_text(seconds: i128) -> String {
    let julian = (seconds.div_euclid(86_400) + i128::from(UNIX_EPOCH_JULIAN_DAY)).clamp(
        i128::from(FIRST_DAY.to_julian_day()),
        i128::from(LAST_DAY.to_julian_day()),
    );
    let date = time::Date::from_julian_day(julian as i32).expect("within the calendar");
    let s = seconds.rem_euclid(86_400);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        date.year(),
        date.month() as u8,
        date.day(),
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// The Julian day of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i32 = 2_440_588;
const FIRST_DAY: time::Date = time::macros::date!(0001 - 01 - 01);
const LAST_DAY: time::Date = time::macros::date!(9999 - 12 - 31);

struct Estimator<'a> {
    conn: &'a mut Conn,
    schema: &'a SourceSchema,
    key: &'a [&'a SourceColumn],
}

impl Estimator<'_> {
    fn from(&self) -> String {
        format!(
            "{}.{} FORCE INDEX ({})",
            quote_ident(&self.schema.table.database),
            quote_ident(&self.schema.table.table),
            quote_ident(&self.schema.key_name)
        )
    }

    /// `key > lower AND key[..prefix.len()] <= prefix` (or `<` with [`Compare::Below`]), either
    /// side left out when `None`.
    fn between(
        &self,
        lower: Option<&Row>,
        prefix: Option<&[Value]>,
        upper: Compare,
    ) -> (String, Vec<MyValue>) {
        let (mut predicate, mut params) = between_keys(self.key, lower, None);
        if let Some(prefix) = prefix {
            let (sql, more) = lexicographic(&self.key[..prefix.len()], prefix, upper);
            predicate = if predicate.is_empty() {
                format!("WHERE {sql}")
            } else {
                format!("{predicate} AND {sql}")
            };
            params.extend(more);
        }
        (predicate, params)
    }

    /// The server's estimate of the rows after `lower` whose key prefix is at or below `prefix`
    /// (below it with [`Compare::Below`]).
    async fn estimate(
        &mut self,
        lower: Option<&Row>,
        prefix: Option<&[Value]>,
        upper: Compare,
    ) -> Result<u64> {
        let (predicate, params) = self.between(lower, prefix, upper);
        self.explain_rows(&predicate, params).await
    }

    /// `EXPLAIN`'s `rows` for the key's index under `predicate` (a `WHERE …`, or empty).
    async fn explain_rows(&mut self, predicate: &str, params: Vec<MyValue>) -> Result<u64> {
        let sql = format!("EXPLAIN SELECT 1 FROM {} {predicate}", self.from());
        let rows: Vec<mysql_async::Row> = self.conn.exec(sql, Params::Positional(params)).await?;
        Ok(rows
            .first()
            .and_then(|r| r.get_opt::<Option<u64>, _>("rows"))
            .and_then(|r| r.ok())
            .flatten()
            .unwrap_or(0))
    }

    /// The estimate of the rows in (`lower`, `upto`] (`upto` a whole key, or no bound).
    async fn rows(&mut self, lower: Option<&Row>, upto: Option<&Row>) -> Result<u64> {
        let values: Option<Vec<Value>> = upto.map(|k| {
            self.key
                .iter()
                .map(|c| k.get(&c.name).cloned().unwrap_or(Value::Null))
                .collect()
        });
        self.estimate(lower, values.as_deref(), Compare::AtOrBelow)
            .await
    }

    /// The server's estimate of the table's rows (its statistics, not a count).
    async fn table_rows(&mut self) -> Result<u64> {
        self.explain_rows("", Vec::new()).await
    }

    /// The smallest and largest value of key column `prefix.len()` among rows with this prefix.
    async fn extent(&mut self, prefix: &[Value]) -> Result<Option<(Value, Value)>> {
        let column = self.key[prefix.len()];
        let name = quote_ident(&column.name);
        let mut conj = Vec::new();
        let mut params = Vec::new();
        for (c, v) in self.key.iter().zip(prefix) {
            conj.push(format!("{} = ?", quote_ident(&c.name)));
            params.push(key_param(c, v));
        }
        let predicate = if conj.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conj.join(" AND "))
        };
        let mut out = Vec::new();
        for order in ["ASC", "DESC"] {
            let sql = format!(
                "SELECT {name} FROM {} {predicate} ORDER BY {name} {order} LIMIT 1",
                self.from()
            );
            let row: Option<mysql_async::Row> = self
                .conn
                .exec_first(sql, Params::Positional(params.clone()))
                .await?;
            let Some(row) = row else { return Ok(None) };
            let value = crate::decode::from_mysql(
                column,
                row.unwrap().pop().expect("one column"),
                crate::decode::Origin::ResultSet,
            )
            .map_err(|detail| Error::Config {
                key: "--part".into(),
                message: format!("{}.{}: {detail}", self.schema.table, column.name),
            })?;
            out.push(value);
        }
        let max = out.pop().expect("two values");
        let min = out.pop().expect("two values");
        Ok(Some((min, max)))
    }

    /// A key prefix ending a slice after `lower` of about `size` estimated rows, refined into the
    /// next key column while the value found holds more than a tenth of `size`. `None` when
    /// fewer than `size` rows follow `lower`.
    async fn boundary(&mut self, lower: Option<&Row>, size: u64) -> Result<Option<Vec<Value>>> {
        if self.estimate(lower, None, Compare::AtOrBelow).await? < size.saturating_mul(2) {
            return Ok(None);
        }
        let mut prefix: Vec<Value> = Vec::new();
        while prefix.len() < self.key.len() {
            let column = self.key[prefix.len()];
            let Some(axis) = Axis::of(column) else { break };
            let Some((min, max)) = self.extent(&prefix).await? else {
                break;
            };
            let axis = axis.between(&min, &max);
            let (Some(mut lo), Some(mut hi)) = (axis.number(&min), axis.number(&max)) else {
                break;
            };
            // Smallest n in [lo, hi] with estimate(lower, prefix + n) ≥ size.
            while lo < hi {
                let mid = lo + (hi.abs_diff(lo) / 2) as i128;
                let mut probe = prefix.clone();
                probe.push(axis.value(mid));
                if self
                    .estimate(lower, Some(&probe), Compare::AtOrBelow)
                    .await?
                    >= size
                {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            let mut at = prefix.clone();
            at.push(axis.value(lo));
            let upto = self.estimate(lower, Some(&at), Compare::AtOrBelow).await?;
            let below = self.estimate(lower, Some(&at), Compare::Below).await?;
            prefix = at;
            if upto.saturating_sub(below) <= (size / 10).max(1) {
                break;
            }
        }
        Ok((!prefix.is_empty()).then_some(prefix))
    }

    /// The largest key after `lower` at or below the key prefix `prefix`.
    async fn last_key(&mut self, lower: Option<&Row>, prefix: &[Value]) -> Result<Option<Row>> {
        let (predicate, params) = self.between(lower, Some(prefix), Compare::AtOrBelow);
        let order: Vec<String> = self
            .key
            .iter()
            .map(|c| format!("{} DESC", quote_ident(&c.name)))
            .collect();
        let tail = format!(
            "FORCE INDEX ({}) {predicate} ORDER BY {} LIMIT 1",
            quote_ident(&self.schema.key_name),
            order.join(", ")
        );
        let row: Option<mysql_async::Row> = self
            .conn
            .exec_first(select_sql(self.schema, &tail), Params::Positional(params))
            .await?;
        row.map(|r| decode_row(self.schema, r).map(|row| key_of(self.schema, &row)))
            .transpose()
    }

    /// `keys` in the server's key order, each once (keys gone since are left out).
    async fn sorted_distinct(&mut self, keys: &[Row]) -> Result<Vec<Row>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = self.key.iter().map(|c| quote_ident(&c.name)).collect();
        let tuple = format!("({})", vec!["?"; self.key.len()].join(","));
        let mut params = Vec::new();
        for key in keys {
            for c in self.key {
                params.push(key_param(c, key.get(&c.name).unwrap_or(&Value::Null)));
            }
        }
        let tail = format!(
            "WHERE ({}) IN ({}) ORDER BY {}",
            names.join(", "),
            vec![tuple; keys.len()].join(", "),
            names.join(", ")
        );
        let rows: Vec<mysql_async::Row> = self
            .conn
            .exec(select_sql(self.schema, &tail), Params::Positional(params))
            .await?;
        rows.into_iter()
            .map(|r| decode_row(self.schema, r).map(|row| key_of(self.schema, &row)))
            .collect()
    }
}

/// Which of `keys` lie in `range`, decided by the server in each key column's own type and
/// collation (the keys need not exist in the table: a target key whose source row is gone).
pub async fn keys_in_range(
    conn: &mut Conn,
    schema: &SourceSchema,
    range: &KeyRange,
    keys: &[Row],
) -> Result<Vec<bool>> {
    let key: Vec<&SourceColumn> = schema.key_columns().collect();
    let collations: std::collections::BTreeMap<String, String> = conn
        .exec::<(String, Option<String>), _, _>(
            "SELECT COLUMN_NAME, COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (schema.table.database.as_str(), schema.table.table.as_str()),
        )
        .await?
        .into_iter()
        .filter_map(|(name, collation)| Some((name, collation?)))
        .collect();
    // Each key column as a value of the column's type, so comparisons are the column's.
    let typed = |column: &SourceColumn| -> String {
        match &column.ty {
            SourceType::Text { charset, .. } => match collations.get(column.name.as_str()) {
                Some(collation) => format!("CONVERT(? USING {charset}) COLLATE {collation}"),
                None => format!("CONVERT(? USING {charset})"),
            },
            SourceType::Binary { .. } => "CAST(? AS BINARY)".into(),
            SourceType::Decimal { precision, scale } => {
                format!("CAST(? AS DECIMAL({precision}, {scale}))")
            }
            SourceType::Date => "CAST(? AS DATE)".into(),
            SourceType::DateTime { fsp } | SourceType::Timestamp { fsp } => {
                format!("CAST(? AS DATETIME({fsp}))")
            }
            SourceType::Time { fsp } => format!("CAST(? AS TIME({fsp}))"),
            SourceType::Integer {
                unsigned: false, ..
            } => "CAST(? AS SIGNED)".into(),
            // ENUM and SET keys are passed as their numbers, the server's order for them.
            SourceType::Integer { unsigned: true, .. }
            | SourceType::Year
            | SourceType::Bit { .. }
            | SourceType::Enum { .. }
            | SourceType::Set { .. } => "CAST(? AS UNSIGNED)".into(),
            SourceType::Float | SourceType::Double => "CAST(? AS DOUBLE)".into(),
            _ => "?".into(),
        }
    };
    let mut inside = vec![false; keys.len()];
    // An integer first key column decides most keys here, exactly as the server would: a key
    // whose first value lies strictly between the bounds' first values is inside, one beyond
    // them outside. Only the keys that tie with a bound there go to the server.
    let first = key[0];
    let integer = |v: Option<&Value>| match v? {
        Value::Int(i) => Some(i128::from(*i)),
        Value::UInt(u) => Some(i128::from(*u)),
        _ => None,
    };
    let lower = range.after.as_ref().map(|b| integer(b.get(&first.name)));
    let upper = range.upto.as_ref().map(|b| integer(b.get(&first.name)));
    let mut ask = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let decided = integer(k.get(&first.name)).and_then(|n| {
            let above = match lower {
                None => Some(true),
                Some(Some(l)) if n > l => Some(true),
                Some(Some(l)) if n < l => Some(false),
                _ => None,
            }?;
            let below = match upper {
                None => Some(true),
                Some(Some(u)) if n < u => Some(true),
                Some(Some(u)) if n > u => Some(false),
                _ => None,
            }?;
            Some(above && below)
        });
        match decided {
            Some(x) => inside[i] = x,
            None => ask.push(i),
        }
    }
    for chunk in ask.chunks(500) {
        let mut selects = Vec::new();
        let mut params = Vec::new();
        for &i in chunk {
            let k = &keys[i];
            let mut columns = vec!["? AS `_tm_i`".to_string()];
            params.push(MyValue::UInt(i as u64));
            for c in &key {
                columns.push(format!("{} AS {}", typed(c), quote_ident(&c.name)));
                params.push(key_param(c, k.get(&c.name).unwrap_or(&Value::Null)));
            }
            selects.push(format!("SELECT {}", columns.join(", ")));
        }
        let (predicate, more) = between_keys(&key, range.after.as_ref(), range.upto.as_ref());
        params.extend(more);
        let sql = format!(
            "SELECT `_tm_i` FROM ({}) AS probe {predicate}",
            selects.join(" UNION ALL ")
        );
        let found: Vec<u64> = conn.exec(sql, Params::Positional(params)).await?;
        for i in found {
            inside[i as usize] = true;
        }
    }
    Ok(inside)
}

/// `WHERE key > after AND key <= upto` over the key columns `columns` (either side left out when
/// `None`, the whole clause when both are), with its parameters.
pub(crate) fn between_keys(
    columns: &[&SourceColumn],
    after: Option<&Row>,
    upto: Option<&Row>,
) -> (String, Vec<MyValue>) {
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    for (bound, compare) in [(after, Compare::After), (upto, Compare::AtOrBelow)] {
        if let Some(key) = bound {
            let values: Vec<Value> = columns
                .iter()
                .map(|c| key.get(&c.name).cloned().unwrap_or(Value::Null))
                .collect();
            let (sql, more) = lexicographic(columns, &values, compare);
            conditions.push(sql);
            params.extend(more);
        }
    }
    if conditions.is_empty() {
        (String::new(), params)
    } else {
        (format!("WHERE {}", conditions.join(" AND ")), params)
    }
}

/// Which side of a key a predicate keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Compare {
    /// Keys after it: `(a, b) > (x, y)`.
    After,
    /// Keys at or below it: `(a, b) <= (x, y)`.
    AtOrBelow,
    /// Keys below it: `(a, b) < (x, y)`.
    Below,
}

/// The lexicographic comparison of the key columns `columns` with `values`, expanded into
/// `a > ? OR (a = ? AND b > ?)` (or its `≤` twin), which every server's range optimizer reads as
/// a range of the index; the server compares, in each column's collation.
pub(crate) fn lexicographic(
    columns: &[&SourceColumn],
    values: &[Value],
    compare: Compare,
) -> (String, Vec<MyValue>) {
    let mut params = Vec::new();
    let mut disjuncts = Vec::new();
    let last = columns.len() - 1;
    for i in 0..columns.len() {
        let mut conj = Vec::new();
        for (j, col) in columns.iter().enumerate().take(i + 1) {
            let op = match (j == i, compare, i == last) {
                (false, _, _) => "=",
                (true, Compare::After, _) => ">",
                (true, Compare::AtOrBelow, false) => "<",
                (true, Compare::AtOrBelow, true) => "<=",
                (true, Compare::Below, _) => "<",
            };
            conj.push(format!("{} {op} ?", quote_ident(&col.name)));
            params.push(key_param(col, &values[j]));
        }
        disjuncts.push(format!("({})", conj.join(" AND ")));
    }
    (format!("({})", disjuncts.join(" OR ")), params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_parse_and_refuse_what_is_not_a_part() {
        assert_eq!("2/4".parse::<Part>().unwrap(), Part { index: 2, of: 4 });
        for bad in ["4/4", "1/0", "x/2", "3", "-1/2"] {
            assert!(bad.parse::<Part>().is_err(), "{bad}");
        }
    }

    #[test]
    fn text_numbers_keep_the_order_of_printable_text() {
        let text = Axis::Text {
            prefix: String::new(),
        };
        let words = ["", "0", "A", "Az", "a", "aa", "ab", "b", "zzzzzzzz"];
        let numbers: Vec<i128> = words
            .iter()
            .map(|w| text.number(&Value::Text(w.to_string())).unwrap())
            .collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
        for w in &words[1..] {
            let n = text.number(&Value::Text(w.to_string())).unwrap();
            assert_eq!(text.value(n), Value::Text(w.to_string()));
        }
    }

    #[test]
    fn decimals_round_trip_through_their_unscaled_integers() {
        let axis = Axis::Unscaled { scale: 2 };
        for (text, n) in [("12.50", 1250), ("-0.05", -5), ("0.00", 0), ("7.00", 700)] {
            assert_eq!(axis.number(&Value::Decimal(text.into())), Some(n), "{text}");
            assert_eq!(axis.value(n), Value::Decimal(text.into()), "{n}");
        }
        assert_eq!(
            Axis::Unscaled { scale: 0 }.value(-42),
            Value::Decimal("-42".into())
        );
    }

    #[test]
    fn ranges_cover_every_part_once_and_leave_the_parts_past_the_last_bound_empty() {
        let key = |i: i64| Row(vec![("id".into(), Value::Int(i))]);
        let split = KeySplit {
            id: "x".into(),
            parts: 4,
            bounds: vec![key(10), key(20)],
            estimated_rows: 30,
        };
        assert_eq!(split.range(0).unwrap().after, None);
        assert_eq!(split.range(0).unwrap().upto, Some(key(10)));
        assert_eq!(split.range(1).unwrap().after, Some(key(10)));
        assert_eq!(split.range(2).unwrap().upto, None);
        assert_eq!(split.range(3), None);
    }
}
