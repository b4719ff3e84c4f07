//! Change events written with the current schema, decoded straight from their bytes.
//!
//! Apply decodes one change event per message. apache-avro's generic path first builds a tree of
//! `apache_avro::types::Value`s (a `String` per field name, boxed unions) that
//! [`super::conv`] then takes apart by name; together with the bounds check that precedes them
//! that was most of apply's time. This module reads the layout of the current
//! `change_event.avsc` directly into a [`ChangeEvent`], in one pass over the datum.
//!
//! It only ever *accepts*: for any datum it does not decode in full — corrupt, out of range, or
//! valid but unusual (negative array block counts) — it answers `None`, and the
//! caller decodes that datum with the generic path, which either reads it or gives the precise
//! error naming the field. So a datum decodes to the same event, or fails with the same error,
//! whichever path reads it; `tests::the_fast_path_agrees_with_the_generic_one` checks that on
//! random events and on random corruptions of them.

use std::cell::RefCell;

use super::OPERATIONS;
use crate::{BinlogPosition, ChangeEvent, ColumnName, DateTime, Row, TableId, Ustr, Value};

/// Most column positions whose names a thread remembers (see [`Reader::column_name`]).
const MAX_REMEMBERED_NAMES: usize = 4096;

/// Which row of an event a name belongs to (each has its own remembered names).
#[derive(Clone, Copy)]
enum Names {
    Key = 0,
    After = 1,
}

/// Which interned text of an event a field holds (each remembers its last value).
#[derive(Clone, Copy)]
enum Interned {
    Server = 0,
    Database = 1,
    Table = 2,
    File = 3,
}

thread_local! {
    /// The column names of the last key and the last row image this thread decoded, by
    /// position.
    static LAST_NAMES: RefCell<[Vec<ColumnName>; 2]> =
        const { RefCell::new([Vec::new(), Vec::new()]) };
    /// The server, database, table and binlog file names of the last event this thread decoded.
    static LAST_INTERNED: RefCell<[Option<Ustr>; 4]> = const { RefCell::new([None; 4]) };
}

/// Decode `datum` (a change event written with the current schema, no header) or answer `None`.
pub(super) fn change_event(datum: &[u8]) -> Option<ChangeEvent> {
    let mut r = Reader {
        data: datum,
        pos: 0,
    };
    let event = ChangeEvent {
        source_server: r.interned(Interned::Server)?,
        table: TableId {
            database: r.interned(Interned::Database)?,
            table: r.interned(Interned::Table)?,
        },
        op: *OPERATIONS.get(r.index()?)?,
        key: r.row(Names::Key)?,
        after: match r.index()? {
            0 => None,
            1 => Some(r.row(Names::After)?),
            _ => return None,
        },
        version: r.long()?,
        position: BinlogPosition {
            file: r.interned(Interned::File)?,
            offset: u64::try_from(r.long()?).ok()?,
        },
        gtid: r.optional_string()?,
        commit_time_us: r.long()?,
        chunk: r.optional_str()?.map(std::sync::Arc::from),
    };
    (r.pos == datum.len()).then_some(event)
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    /// A zig-zag varint, at most 10 bytes.
    fn long(&mut self) -> Option<i64> {
        let mut n: u64 = 0;
        for i in 0..10 {
            let b = *self.data.get(self.pos)?;
            self.pos += 1;
            n |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(((n >> 1) as i64) ^ -((n & 1) as i64));
            }
        }
        None
    }

    /// An Avro `int` that must also fit `T`.
    fn int<T: TryFrom<i64>>(&mut self) -> Option<T> {
        let n = self.long()?;
        i32::try_from(n).ok()?;
        T::try_from(n).ok()
    }

    /// An Avro `long` that must fit `T`.
    fn long_as<T: TryFrom<i64>>(&mut self) -> Option<T> {
        T::try_from(self.long()?).ok()
    }

    fn index(&mut self) -> Option<usize> {
        usize::try_from(self.long()?).ok()
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.index()?;
        self.take(n).map(<[u8]>::to_vec)
    }

    fn string(&mut self) -> Option<String> {
        self.str().map(str::to_string)
    }

    /// An interned string: the one `slot` held in the event before when the text is the same
    /// (a run of events of one table repeats it), so that most events look nothing up.
    fn interned(&mut self, slot: Interned) -> Option<Ustr> {
        let text = self.str()?;
        Some(LAST_INTERNED.with_borrow_mut(|last| {
            let last = &mut last[slot as usize];
            match last {
                Some(known) if known.as_str() == text => *known,
                _ => *last.insert(Ustr::from(text)),
            }
        }))
    }

    /// A string borrowed from the datum.
    fn str(&mut self) -> Option<&'a str> {
        let n = self.index()?;
        let raw = self.take(n)?;
        std::str::from_utf8(raw).ok()
    }

    fn optional_str(&mut self) -> Option<Option<&'a str>> {
        match self.index()? {
            0 => Some(None),
            1 => self.str().map(Some),
            _ => None,
        }
    }

    fn optional_string(&mut self) -> Option<Option<String>> {
        match self.index()? {
            0 => Some(None),
            1 => self.string().map(Some),
            _ => None,
        }
    }

    fn boolean(&mut self) -> Option<bool> {
        match self.take(1)?[0] {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    /// An unsigned 64-bit number written as decimal digits.
    fn u64_text(&mut self) -> Option<u64> {
        let s = self.string()?;
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    }

    /// Array blocks with positive counts, items read by `item`.
    fn array<T>(&mut self, mut item: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        let mut out = Vec::new();
        loop {
            let count = self.index()?;
            if count == 0 {
                return Some(out);
            }
            // Every item takes at least one byte.
            if count > self.data.len() - self.pos {
                return None;
            }
            out.reserve(count);
            for _ in 0..count {
                out.push(item(self)?);
            }
        }
    }

    fn row(&mut self, names: Names) -> Option<Row> {
        let mut column = 0;
        self.array(|r| {
            let name = r.column_name(names, column)?;
            column += 1;
            Some((name, r.value()?))
        })
        .map(Row)
    }

    /// The name of the `column`-th column of a row. Consecutive events of a table name their
    /// columns alike, so each thread keeps the names of the last key and the last row image it
    /// read, by position: a name whose bytes equal the one remembered there is that name
    /// (already checked UTF-8 and interned) and costs one comparison instead of a UTF-8 check
    /// and a lookup in the global table of names.
    fn column_name(&mut self, which: Names, column: usize) -> Option<ColumnName> {
        let n = self.index()?;
        let raw = self.take(n)?;
        LAST_NAMES.with_borrow_mut(|last| {
            let names = &mut last[which as usize];
            if let Some(name) = names.get(column) {
                if name.as_bytes() == raw {
                    return Some(*name);
                }
            }
            let name = ColumnName::from(std::str::from_utf8(raw).ok()?);
            if column < names.len() {
                names[column] = name;
            } else if column == names.len() && column < MAX_REMEMBERED_NAMES {
                names.push(name);
            }
            Some(name)
        })
    }

    /// One `io.tidemark.Column.value`: the union branch, then its one-field record.
    fn value(&mut self) -> Option<Value> {
        // By branch number, in the order of VALUE_BRANCHES (named beside each arm; matching the
        // names themselves would compare up to 18 strings per value).
        Some(match self.index()? {
            0 /* null */ => Value::Null,
            1 /* int */ => Value::Int(self.long()?),
            2 /* uint */ => Value::UInt(self.u64_text()?),
            3 /* float */ => Value::Float(f32::from_le_bytes(self.take(4)?.try_into().ok()?)),
            4 /* double */ => Value::Double(f64::from_le_bytes(self.take(8)?.try_into().ok()?)),
            5 /* decimal */ => Value::Decimal(self.string()?),
            6 /* date */ => Value::Date {
                year: self.int()?,
                month: self.int()?,
                day: self.int()?,
            },
            7 /* datetime */ => Value::DateTime(self.datetime()?),
            8 /* timestamp */ => Value::Timestamp(self.datetime()?),
            9 /* time */ => Value::Time {
                negative: self.boolean()?,
                hours: self.int()?,
                minute: self.int()?,
                second: self.int()?,
                micros: self.long_as()?,
                fsp: self.int()?,
            },
            10 /* year */ => Value::Year(self.int()?),
            11 /* text */ => Value::Text(self.string()?),
            12 /* bytes */ => Value::Bytes(self.bytes()?),
            13 /* enum */ => Value::Enum(self.string()?),
            14 /* set */ => Value::Set(self.array(Self::string)?),
            15 /* bit */ => Value::Bit {
                width: self.int()?,
                value: self.u64_text()?,
            },
            16 /* json */ => Value::Json(self.string()?),
            17 /* geometry */ => Value::Geometry(self.bytes()?),
            _ => return None,
        })
    }

    /// `CalendarDateTime`: year, month, day, hour, minute, second, micros, fsp.
    fn datetime(&mut self) -> Option<DateTime> {
        Some(DateTime {
            year: self.int()?,
            month: self.int()?,
            day: self.int()?,
            hour: self.int()?,
            minute: self.int()?,
            second: self.int()?,
            micros: self.long_as()?,
            fsp: self.int()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::option;
    use proptest::prelude::*;

    use super::super::{
        compiled, decode, decode_datum_generic, encode, AvroError, RecordKind, HEADER_LEN,
    };
    use super::*;
    use crate::Operation;

    fn generic(datum: &[u8]) -> Result<ChangeEvent, AvroError> {
        decode_datum_generic(&compiled(RecordKind::ChangeEvent).current, datum)
    }

    fn datum(event: &ChangeEvent) -> Vec<u8> {
        encode(event).expect("every generated event encodes")[HEADER_LEN..].to_vec()
    }

    /// The same event, floats bit for bit (NaN payloads included): the same encoding.
    fn same(a: &ChangeEvent, b: &ChangeEvent) -> bool {
        encode(a).ok() == encode(b).ok()
    }

    fn value() -> impl Strategy<Value = Value> {
        let text = || "(?s).{0,12}";
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Int),
            any::<u64>().prop_map(Value::UInt),
            any::<u32>().prop_map(|b| Value::Float(f32::from_bits(b))),
            any::<u64>().prop_map(|b| Value::Double(f64::from_bits(b))),
            text().prop_map(Value::Decimal),
            (any::<u16>(), any::<u8>(), any::<u8>()).prop_map(|(year, month, day)| Value::Date {
                year,
                month,
                day
            }),
            (
                (any::<u16>(), any::<u8>(), any::<u8>()),
                (any::<u8>(), any::<u8>(), any::<u8>()),
                (any::<u32>(), any::<u8>(), any::<bool>())
            )
                .prop_map(
                    |((year, month, day), (hour, minute, second), (micros, fsp, ts))| {
                        let t = DateTime {
                            year,
                            month,
                            day,
                            hour,
                            minute,
                            second,
                            micros,
                            fsp,
                        };
                        if ts {
                            Value::Timestamp(t)
                        } else {
                            Value::DateTime(t)
                        }
                    }
                ),
            (
                any::<bool>(),
                any::<u16>(),
                any::<u8>(),
                any::<u8>(),
                any::<u32>(),
                any::<u8>()
            )
                .prop_map(|(negative, hours, minute, second, micros, fsp)| {
                    Value::Time {
                        negative,
                        hours,
                        minute,
                        second,
                        micros,
                        fsp,
                    }
                }),
            any::<u16>().prop_map(Value::Year),
            text().prop_map(Value::Text),
            vec(any::<u8>(), 0..12).prop_map(Value::Bytes),
            text().prop_map(Value::Enum),
            vec(text(), 0..3).prop_map(Value::Set),
            (any::<u8>(), any::<u64>()).prop_map(|(width, value)| Value::Bit { width, value }),
            text().prop_map(Value::Json),
            vec(any::<u8>(), 0..12).prop_map(Value::Geometry),
        ]
    }

    fn row() -> impl Strategy<Value = Row> {
        vec(("[a-z_]{1,8}", value()), 0..4).prop_map(|columns| {
            Row(columns
                .into_iter()
                .map(|(name, v)| (ColumnName::from(name.as_str()), v))
                .collect())
        })
    }

    fn event() -> impl Strategy<Value = ChangeEvent> {
        (
            (
                "(?s).{0,10}",
                "[a-z]{1,8}",
                "[a-z]{1,8}",
                0..OPERATIONS.len(),
            ),
            (row(), option::of(row()), any::<i64>()),
            ("[a-z.0-9]{0,12}", 0..=i64::MAX as u64),
            (
                option::of("[0-9-]{0,12}"),
                any::<i64>(),
                option::of("(?s).{0,10}"),
            ),
        )
            .prop_map(
                |(
                    (server, database, table, op),
                    (key, after, version),
                    (file, offset),
                    (gtid, commit, chunk),
                )| {
                    ChangeEvent {
                        source_server: server.into(),
                        table: TableId {
                            database: database.into(),
                            table: table.into(),
                        },
                        op: OPERATIONS[op],
                        key,
                        after,
                        version,
                        position: BinlogPosition {
                            file: file.into(),
                            offset,
                        },
                        gtid,
                        commit_time_us: commit,
                        chunk: chunk.map(Into::into),
                    }
                },
            )
    }

    /// Whatever the fast path accepts, the generic path decodes to the same event.
    fn agrees(datum: &[u8]) -> Result<(), TestCaseError> {
        match (change_event(datum), generic(datum)) {
            (Some(fast), Ok(slow)) => prop_assert!(same(&fast, &slow), "{fast:?} != {slow:?}"),
            (Some(fast), Err(e)) => {
                prop_assert!(
                    false,
                    "accepted what the generic path refuses ({e}): {fast:?}"
                )
            }
            (None, _) => {}
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Every event written by this build takes the fast path and decodes exactly.
        #[test]
        fn the_fast_path_agrees_with_the_generic_one(event in event()) {
            let d = datum(&event);
            let fast = change_event(&d);
            prop_assert!(fast.is_some(), "a valid datum left to the generic path: {event:?}");
            prop_assert!(same(fast.as_ref().unwrap(), &event));
            agrees(&d)?;
        }

        /// Corrupt data: changed, dropped or inserted bytes anywhere.
        #[test]
        fn on_corrupt_data_the_fast_path_never_disagrees(
            event in event(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            how in 0u8..3,
        ) {
            let mut d = datum(&event);
            let i = at.index(d.len() + 1);
            match how {
                0 if i < d.len() => d[i] = byte,
                1 => d.truncate(i),
                _ => d.insert(i, byte),
            }
            agrees(&d)?;
        }
    }

    /// A valid encoding the fast path leaves alone (an array block with a negative count, which
    /// carries its byte size) still decodes, through the generic path.
    #[test]
    fn valid_data_it_does_not_read_still_decodes() {
        let event = ChangeEvent {
            source_server: "s".into(),
            table: TableId {
                database: "d".into(),
                table: "t".into(),
            },
            op: Operation::Insert,
            key: Row(vec![("id".into(), Value::Int(1))]),
            after: None,
            version: 7,
            position: BinlogPosition {
                file: "f".into(),
                offset: 4,
            },
            gtid: None,
            commit_time_us: 9,
            chunk: None,
        };
        let bytes = encode(&event).unwrap();
        let (header, d) = bytes.split_at(HEADER_LEN);
        // "s", "d", "t", op 0, then the key: count 1 (02), item `04 i d 02 02`, end (00).
        assert_eq!(&d[..13], b"\x02s\x02d\x02t\x00\x02\x04id\x02\x02");
        let mut blocked = d[..7].to_vec();
        blocked.extend_from_slice(b"\x01\x0a"); // count -1, block of 5 bytes
        blocked.extend_from_slice(&d[8..]);
        assert!(change_event(&blocked).is_none());
        let mut message = header.to_vec();
        message.extend_from_slice(&blocked);
        let decoded: ChangeEvent = decode(&message).expect("the generic path reads it");
        assert!(same(&decoded, &event));
    }
}
