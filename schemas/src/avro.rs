//! Avro form of the data contract: the schemas in `schemas/avro/*.avsc` and the encoding of
//! [`ChangeEvent`], [`Lineage`], [`TargetRecord`], [`DriftEvent`] and [`Checkpoint`].
//!
//! # Wire format
//!
//! Every message is Avro **single-object encoding** (DESIGN.md §7): the marker `C3 01`, the
//! 8-byte little-endian CRC-64-AVRO (Rabin) fingerprint of the writer schema's Parsing Canonical
//! Form, then the binary datum. [`fingerprint`] gives the fingerprint of each current schema.
//! A decoder accepts the current schema's fingerprint and the fingerprint of every committed
//! snapshot in `schemas/avro/compat/` (data written by older builds), resolving older data to
//! the current schema; any other fingerprint is refused with `unknown schema fingerprint <hex>`.
//!
//! The header and the fingerprint come from apache-avro ([`RabinFingerprintHeader`], the
//! [`Rabin`] digest), the datum from [`apache_avro::to_avro_datum`] /
//! [`apache_avro::from_avro_datum`]. apache-avro's `GenericSingleObjectWriter` is not used
//! because it needs `&mut self` (a shared writer would need a lock) and its reader knows exactly
//! one schema, while we accept several writer versions; a test checks that our bytes are
//! identical to `GenericSingleObjectWriter`'s and that `GenericSingleObjectReader` reads them.
//!
//! # Representation of [`Value`]
//!
//! A [`Row`] is an array of `io.tidemark.Column { name: string, value: union }`. The union is
//! `null` (SQL NULL) or one record per [`Value`] variant, in namespace `io.tidemark.value`, each
//! with exactly one field named after the variant in lower case:
//!
//! | variant | Avro branch |
//! |---|---|
//! | `Int(i64)` | `Int { int: long }` |
//! | `UInt(u64)` | `UInt { uint: string }` — decimal digits; a long would wrap above 2^63−1 |
//! | `Float(f32)` | `Float { float: float }` — the 4 IEEE bytes, bit for bit |
//! | `Double(f64)` | `Double { double: double }` |
//! | `Decimal(String)` | `Decimal { decimal: string }` |
//! | `Date {..}` | `Date { date: CalendarDate { year, month, day: int } }` |
//! | `DateTime {..}` | `DateTime { datetime: CalendarDateTime { year, month, day, hour, minute, second: int, micros: long, fsp: int } }` |
//! | `Timestamp {..}` | `Timestamp { timestamp: CalendarDateTime }` |
//! | `Time {..}` | `Time { time: SignedTime { negative: boolean, hours, minute, second: int, micros: long, fsp: int } }` |
//! | `Year(u16)` | `Year { year: int }` |
//! | `Text(String)` | `Text { text: string }` |
//! | `Bytes(Vec<u8>)` | `Bytes { bytes: bytes }` |
//! | `Enum(String)` | `Enum { enum: string }` |
//! | `Set(Vec<String>)` | `Set { set: array<string> }` |
//! | `Bit {..}` | `Bit { bit: BitString { width: int, value: string } }` |
//! | `Json(String)` | `Json { json: string }` |
//! | `Geometry(Vec<u8>)` | `Geometry { geometry: bytes }` |
//!
//! Why one uniquely named field per branch: apache-avro resolves a union branch of older data
//! *by structure* (the first reader branch the record resolves to), not by name. With a unique,
//! required field in every branch no branch can be mistaken for another (e.g. `DateTime` for
//! `Timestamp`, `Text` for `Enum`). Every Rust value fits its Avro type, so encoding a [`Value`]
//! never fails; decoding checks ranges and refuses what does not fit.
//!
//! # Untrusted input
//!
//! Before apache-avro decodes a datum, a bounds check walks it against the writer schema without
//! allocating: every length and item count must fit in the bytes that remain, union and enum
//! indexes must exist, strings must be UTF-8, and nothing may follow the datum. apache-avro 0.21
//! would otherwise `reserve` capacity for a corrupt item count (up to 2^29 items): a 5-byte
//! corrupt array count aborts the process (SIGABRT, measured on a 23 GiB machine). So corrupt
//! input gives an error naming the field, never a panic or abort.
//!
//! # Evolution
//!
//! See `schemas/avro/README.md`: add fields only with defaults, never remove or rename, snapshot
//! every wire version in `schemas/avro/compat/` and register it in [`SNAPSHOTS`].

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use apache_avro::headers::{HeaderBuilder, RabinFingerprintHeader};
use apache_avro::rabin::Rabin;
use apache_avro::schema::SchemaKind;
use apache_avro::types::Value as Avro;
pub use apache_avro::Schema;

use crate::{
    BinlogPosition, ChangeEvent, Checkpoint, ColumnName, DriftColumn, DriftEvent, Lineage,
    Operation, Row, TableId, TargetRecord, Value,
};

/// The two bytes that open every single-object encoded message.
pub const SINGLE_OBJECT_MARKER: [u8; 2] = [0xC3, 0x01];
/// Length of the single-object header: marker and 8-byte fingerprint.
pub const HEADER_LEN: usize = 10;

/// The records that have an Avro schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    ChangeEvent,
    Lineage,
    TargetRecord,
    DriftEvent,
    Checkpoint,
}

impl RecordKind {
    pub const ALL: [RecordKind; 5] = [
        RecordKind::ChangeEvent,
        RecordKind::Lineage,
        RecordKind::TargetRecord,
        RecordKind::DriftEvent,
        RecordKind::Checkpoint,
    ];

    /// The record's name, as in the schema (`io.tidemark.<name>`).
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::ChangeEvent => "ChangeEvent",
            RecordKind::Lineage => "Lineage",
            RecordKind::TargetRecord => "TargetRecord",
            RecordKind::DriftEvent => "DriftEvent",
            RecordKind::Checkpoint => "Checkpoint",
        }
    }

    /// The schema's file name in `schemas/avro/`.
    pub fn file_name(self) -> &'static str {
        match self {
            RecordKind::ChangeEvent => "change_event.avsc",
            RecordKind::Lineage => "lineage.avsc",
            RecordKind::TargetRecord => "target_record.avsc",
            RecordKind::DriftEvent => "drift_event.avsc",
            RecordKind::Checkpoint => "checkpoint.avsc",
        }
    }

    /// The current schema's JSON text, exactly as committed (e.g. to register it somewhere).
    pub fn schema_text(self) -> &'static str {
        match self {
            RecordKind::ChangeEvent => include_str!("../avro/change_event.avsc"),
            RecordKind::Lineage => include_str!("../avro/lineage.avsc"),
            RecordKind::TargetRecord => include_str!("../avro/target_record.avsc"),
            RecordKind::DriftEvent => include_str!("../avro/drift_event.avsc"),
            RecordKind::Checkpoint => include_str!("../avro/checkpoint.avsc"),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Every committed snapshot of an older (or the current) schema version: data written with any
/// of them stays readable. Keep in step with `schemas/avro/compat/` (a test checks).
pub const SNAPSHOTS: &[(RecordKind, &str, &str)] = &[
    (
        RecordKind::ChangeEvent,
        "change_event.v1.avsc",
        include_str!("../avro/compat/change_event.v1.avsc"),
    ),
    (
        RecordKind::Lineage,
        "lineage.v1.avsc",
        include_str!("../avro/compat/lineage.v1.avsc"),
    ),
    (
        RecordKind::TargetRecord,
        "target_record.v1.avsc",
        include_str!("../avro/compat/target_record.v1.avsc"),
    ),
    (
        RecordKind::DriftEvent,
        "drift_event.v1.avsc",
        include_str!("../avro/compat/drift_event.v1.avsc"),
    ),
    (
        RecordKind::Checkpoint,
        "checkpoint.v1.avsc",
        include_str!("../avro/compat/checkpoint.v1.avsc"),
    ),
];

/// Why a record could not be encoded or decoded. The message says which record and, where it
/// applies, which field; the underlying apache-avro error, if any, is the [`source`].
///
/// [`source`]: std::error::Error::source
#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    #[error("cannot encode {record}{}: {problem}", in_field(field))]
    EncodeField {
        record: RecordKind,
        field: String,
        problem: String,
    },
    #[error("cannot encode {record}: the value does not fit schemas/avro/{}", record.file_name())]
    Encode {
        record: RecordKind,
        #[source]
        source: apache_avro::Error,
    },
    #[error("cannot decode {record}: the message is {len} bytes long, shorter than the {HEADER_LEN}-byte Avro single-object header")]
    TooShort { record: RecordKind, len: usize },
    #[error("cannot decode {record}: the message does not start with the Avro single-object marker c301 (found {found})")]
    NotSingleObject { record: RecordKind, found: String },
    #[error("cannot decode {record}: unknown schema fingerprint {fingerprint} (this build reads {known})")]
    UnknownFingerprint {
        record: RecordKind,
        fingerprint: String,
        known: String,
    },
    #[error("cannot decode {record}: the message is not in Confluent wire format (magic byte 0 and a 4-byte schema id)")]
    NotConfluent { record: RecordKind },
    #[error(
        "cannot decode {record}: corrupt or truncated data{}: {problem}",
        inside(field)
    )]
    Corrupt {
        record: RecordKind,
        field: String,
        problem: String,
    },
    #[error("cannot decode {record}: the data does not resolve to the current schema schemas/avro/{}", record.file_name())]
    Datum {
        record: RecordKind,
        #[source]
        source: apache_avro::Error,
    },
    #[error("cannot decode {record}{}: {problem}", in_field(field))]
    DecodeField {
        record: RecordKind,
        field: String,
        problem: String,
    },
}

/// ": field `x`" for a field path, nothing for the record as a whole.
fn in_field(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(": field `{path}`")
    }
}

/// " in field `x`" for a field path, nothing for the record as a whole.
fn inside(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" in field `{path}`")
    }
}

/// A record type with an Avro schema. Implemented for the five contract records only.
pub trait AvroRecord: conv::ToFromAvro + Sized {
    const KIND: RecordKind;

    /// Decode a datum written with the current schema without apache-avro's generic values, or
    /// `None` to leave it to the generic path (which then decodes it or names the problem).
    fn decode_current(_datum: &[u8]) -> Option<Self> {
        None
    }
}

impl AvroRecord for ChangeEvent {
    const KIND: RecordKind = RecordKind::ChangeEvent;

    fn decode_current(datum: &[u8]) -> Option<Self> {
        fast::change_event(datum)
    }
}
impl AvroRecord for Lineage {
    const KIND: RecordKind = RecordKind::Lineage;
}
impl AvroRecord for TargetRecord {
    const KIND: RecordKind = RecordKind::TargetRecord;
}
impl AvroRecord for DriftEvent {
    const KIND: RecordKind = RecordKind::DriftEvent;
}
impl AvroRecord for Checkpoint {
    const KIND: RecordKind = RecordKind::Checkpoint;
}

/// The parsed current schema of `kind`.
pub fn schema(kind: RecordKind) -> &'static Schema {
    &compiled(kind).current.schema
}

/// The CRC-64-AVRO (Rabin) fingerprint of the current schema's Parsing Canonical Form, in the
/// byte order it has in the single-object header (little-endian).
pub fn fingerprint(kind: RecordKind) -> [u8; 8] {
    compiled(kind).current.fingerprint
}

/// Fingerprints of every writer schema this build decodes: the current schema first, then
/// committed older snapshots.
pub fn known_fingerprints(kind: RecordKind) -> Vec<[u8; 8]> {
    let c = compiled(kind);
    std::iter::once(&c.current)
        .chain(&c.older)
        .map(|w| w.fingerprint)
        .collect()
}

/// Encode a record: single-object header, then the Avro binary datum.
pub fn encode<T: AvroRecord>(value: &T) -> Result<Vec<u8>, AvroError> {
    let c = compiled(T::KIND);
    let datum = encode_datum(value)?;
    let mut out = Vec::with_capacity(c.header.len() + datum.len());
    out.extend_from_slice(&c.header);
    out.extend_from_slice(&datum);
    Ok(out)
}

/// Decode a single-object encoded record written with the current schema or any committed
/// snapshot of it.
pub fn decode<T: AvroRecord>(bytes: &[u8]) -> Result<T, AvroError> {
    let record = T::KIND;
    let c = compiled(record);
    if bytes.len() < HEADER_LEN {
        return Err(AvroError::TooShort {
            record,
            len: bytes.len(),
        });
    }
    if bytes[..2] != SINGLE_OBJECT_MARKER {
        return Err(AvroError::NotSingleObject {
            record,
            found: hex::encode(&bytes[..2]),
        });
    }
    let fp = &bytes[2..HEADER_LEN];
    let writer = std::iter::once(&c.current)
        .chain(&c.older)
        .find(|w| w.fingerprint == fp)
        .ok_or_else(|| AvroError::UnknownFingerprint {
            record,
            fingerprint: hex::encode(fp),
            known: std::iter::once(&c.current)
                .chain(&c.older)
                .map(|w| format!("{} ({})", hex::encode(w.fingerprint), w.file))
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    decode_datum(writer, &bytes[HEADER_LEN..])
}

/// Encode a record in the Confluent wire format: byte 0, the registry's 4-byte big-endian schema
/// id, then the Avro binary datum. The caller must have registered [`RecordKind::schema_text`]
/// under `schema_id`.
pub fn encode_confluent<T: AvroRecord>(schema_id: u32, value: &T) -> Result<Vec<u8>, AvroError> {
    let datum = encode_datum(value)?;
    let mut out = Vec::with_capacity(5 + datum.len());
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(&datum);
    Ok(out)
}

/// The schema id of a Confluent wire-format message, or `None` if it is not one.
pub fn confluent_schema_id(bytes: &[u8]) -> Option<u32> {
    match bytes {
        [0, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// Decode a Confluent wire-format message whose schema id the registry resolved to
/// `writer_schema`; the data is resolved to the current schema.
pub fn decode_confluent<T: AvroRecord>(
    bytes: &[u8],
    writer_schema: &Schema,
) -> Result<T, AvroError> {
    if confluent_schema_id(bytes).is_none() {
        return Err(AvroError::NotConfluent { record: T::KIND });
    }
    let current = &compiled(T::KIND).current;
    if *writer_schema == current.schema {
        return decode_datum(current, &bytes[5..]);
    }
    let writer = WriterSchema::new("the registry's schema", writer_schema.clone());
    decode_datum(&writer, &bytes[5..])
}

pub fn encode_change_event(event: &ChangeEvent) -> Result<Vec<u8>, AvroError> {
    encode(event)
}
pub fn decode_change_event(bytes: &[u8]) -> Result<ChangeEvent, AvroError> {
    decode(bytes)
}
pub fn encode_lineage(lineage: &Lineage) -> Result<Vec<u8>, AvroError> {
    encode(lineage)
}
pub fn decode_lineage(bytes: &[u8]) -> Result<Lineage, AvroError> {
    decode(bytes)
}
pub fn encode_target_record(record: &TargetRecord) -> Result<Vec<u8>, AvroError> {
    encode(record)
}
pub fn decode_target_record(bytes: &[u8]) -> Result<TargetRecord, AvroError> {
    decode(bytes)
}
pub fn encode_drift_event(event: &DriftEvent) -> Result<Vec<u8>, AvroError> {
    encode(event)
}
pub fn decode_drift_event(bytes: &[u8]) -> Result<DriftEvent, AvroError> {
    decode(bytes)
}
pub fn encode_checkpoint(checkpoint: &Checkpoint) -> Result<Vec<u8>, AvroError> {
    encode(checkpoint)
}
pub fn decode_checkpoint(bytes: &[u8]) -> Result<Checkpoint, AvroError> {
    decode(bytes)
}

// ---------------------------------------------------------------------------------------------
// Parsed schemas, once per process.

/// A schema data may have been written with, ready to decode.
struct WriterSchema {
    /// Where it came from, for messages.
    file: &'static str,
    schema: Schema,
    /// Named types by full name, to follow references while checking data.
    names: HashMap<String, Schema>,
    fingerprint: [u8; 8],
    /// The schema with its names resolved once: `apache_avro::from_avro_datum` resolves them
    /// again for every datum, which cost more than decoding it. Built with an empty header, so
    /// it decodes a bare datum (the single-object header was checked before).
    decoder: apache_avro::GenericSingleObjectReader,
}

/// The header the datum decoder expects: none.
struct NoHeader;

impl apache_avro::headers::HeaderBuilder for NoHeader {
    fn build_header(&self) -> Vec<u8> {
        Vec::new()
    }
}

impl WriterSchema {
    fn new(file: &'static str, schema: Schema) -> Self {
        let mut names = HashMap::new();
        collect_names(&schema, &mut names);
        let fingerprint = schema.fingerprint::<Rabin>().bytes;
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&fingerprint[..8]);
        let decoder = apache_avro::GenericSingleObjectReader::new_with_header_builder(
            schema.clone(),
            NoHeader,
        )
        .unwrap_or_else(|e| panic!("schemas/avro/{file}: its names do not resolve: {e}"));
        WriterSchema {
            file,
            schema,
            names,
            fingerprint: fp,
            decoder,
        }
    }
}

struct Compiled {
    current: WriterSchema,
    /// Committed snapshots whose fingerprint differs from the current one.
    older: Vec<WriterSchema>,
    header: Vec<u8>,
}

static COMPILED: LazyLock<Vec<Compiled>> = LazyLock::new(|| {
    RecordKind::ALL
        .iter()
        .map(|&kind| {
            let parse = |file: &str, text: &str| {
                Schema::parse_str(text).unwrap_or_else(|e| {
                    panic!("schemas/avro/{file} is not a valid Avro schema: {e}")
                })
            };
            let schema = parse(kind.file_name(), kind.schema_text());
            let header = RabinFingerprintHeader::from_schema(&schema).build_header();
            let current = WriterSchema::new(kind.file_name(), schema);
            let mut older: Vec<WriterSchema> = Vec::new();
            for (_, file, text) in SNAPSHOTS.iter().filter(|(k, _, _)| *k == kind) {
                let w = WriterSchema::new(file, parse(&format!("compat/{file}"), text));
                if w.fingerprint != current.fingerprint
                    && older.iter().all(|o| o.fingerprint != w.fingerprint)
                {
                    older.push(w);
                }
            }
            Compiled {
                current,
                older,
                header,
            }
        })
        .collect()
});

fn compiled(kind: RecordKind) -> &'static Compiled {
    &COMPILED[kind.index()]
}

fn collect_names(schema: &Schema, names: &mut HashMap<String, Schema>) {
    match schema {
        Schema::Record(r) => {
            names.insert(r.name.fullname(None), schema.clone());
            for f in &r.fields {
                collect_names(&f.schema, names);
            }
        }
        Schema::Enum(e) => {
            names.insert(e.name.fullname(None), schema.clone());
        }
        Schema::Fixed(f) => {
            names.insert(f.name.fullname(None), schema.clone());
        }
        Schema::Array(a) => collect_names(&a.items, names),
        Schema::Map(m) => collect_names(&m.types, names),
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_names(v, names)),
        Schema::Decimal(d) => collect_names(&d.inner, names),
        _ => {}
    }
}

fn encode_datum<T: AvroRecord>(value: &T) -> Result<Vec<u8>, AvroError> {
    let record = T::KIND;
    let avro = value.to_avro().map_err(|e| AvroError::EncodeField {
        record,
        field: e.path,
        problem: e.problem,
    })?;
    apache_avro::to_avro_datum(schema(record), avro)
        .map_err(|source| AvroError::Encode { record, source })
}

fn decode_datum<T: AvroRecord>(writer: &WriterSchema, datum: &[u8]) -> Result<T, AvroError> {
    if writer.fingerprint == compiled(T::KIND).current.fingerprint {
        if let Some(value) = T::decode_current(datum) {
            return Ok(value);
        }
    }
    decode_datum_generic(writer, datum)
}

/// Bounds check, apache-avro's generic decoding (resolving older data to the current schema),
/// then the conversion to `T`.
fn decode_datum_generic<T: AvroRecord>(
    writer: &WriterSchema,
    datum: &[u8],
) -> Result<T, AvroError> {
    let record = T::KIND;
    let current = &compiled(record).current;
    check::datum(&writer.schema, &writer.names, datum).map_err(|e| AvroError::Corrupt {
        record,
        field: e.path,
        problem: e.problem,
    })?;
    let same = writer.fingerprint == current.fingerprint;
    let mut reader = datum;
    let value = writer
        .decoder
        .read_value(&mut reader)
        .and_then(|value| {
            if same {
                Ok(value)
            } else {
                value.resolve(&current.schema)
            }
        })
        .map_err(|source| AvroError::Datum { record, source })?;
    T::from_avro(value).map_err(|e| AvroError::DecodeField {
        record,
        field: e.path,
        problem: e.problem,
    })
}

// ---------------------------------------------------------------------------------------------
// Errors with a field path, shared by the checker and the conversions.

use field::FieldError;

mod field {
    /// A problem at a field path such as `after[2].value.datetime.month`. Public only inside
    /// this private module: the sealed conversion trait names it, nothing outside can.
    #[derive(Debug)]
    pub struct FieldError {
        pub path: String,
        pub problem: String,
    }

    impl FieldError {
        pub fn new(problem: impl Into<String>) -> Self {
            FieldError {
                path: String::new(),
                problem: problem.into(),
            }
        }

        /// The same problem, one level up: inside field (or index) `segment`.
        pub fn at(mut self, segment: &str) -> Self {
            self.path = if self.path.is_empty() {
                segment.to_string()
            } else if self.path.starts_with('[') {
                format!("{segment}{}", self.path)
            } else {
                format!("{segment}.{}", self.path)
            };
            self
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bounds check of untrusted data, before apache-avro allocates anything.

mod check {
    use super::*;

    struct Cursor<'a> {
        data: &'a [u8],
        pos: usize,
    }

    impl Cursor<'_> {
        fn remaining(&self) -> usize {
            self.data.len() - self.pos
        }

        fn fail(&self, problem: impl fmt::Display) -> FieldError {
            FieldError::new(format!("at byte {} of the datum, {problem}", self.pos))
        }

        fn bytes(&mut self, n: usize) -> Result<&[u8], FieldError> {
            if n > self.remaining() {
                return Err(self.fail(format_args!(
                    "needs {n} bytes but only {} remain",
                    self.remaining()
                )));
            }
            let out = &self.data[self.pos..self.pos + n];
            self.pos += n;
            Ok(out)
        }

        /// A zig-zag varint long, at most 10 bytes.
        fn long(&mut self) -> Result<i64, FieldError> {
            let mut n: u64 = 0;
            for i in 0..10 {
                let Some(&b) = self.data.get(self.pos) else {
                    return Err(self.fail("the data ends inside a number"));
                };
                self.pos += 1;
                n |= u64::from(b & 0x7f) << (7 * i);
                if b & 0x80 == 0 {
                    return Ok(((n >> 1) as i64) ^ -((n & 1) as i64));
                }
            }
            Err(self.fail("a number is longer than 10 bytes"))
        }

        /// A length or count: not negative and not beyond the remaining bytes.
        fn len(&mut self, what: &str) -> Result<usize, FieldError> {
            let n = self.long()?;
            match usize::try_from(n) {
                Ok(n) if n <= self.remaining() => Ok(n),
                Err(_) => Err(self.fail(format_args!("{what} {n} is negative"))),
                _ => Err(self.fail(format_args!(
                    "{what} {n} exceeds the {} bytes that remain",
                    self.remaining()
                ))),
            }
        }

        fn index(&mut self, count: usize, what: &str) -> Result<usize, FieldError> {
            let n = self.long()?;
            match usize::try_from(n) {
                Ok(i) if i < count => Ok(i),
                _ => Err(self.fail(format_args!(
                    "{what} index {n} does not exist ({count} known)"
                ))),
            }
        }
    }

    /// Check that `data` is exactly one datum of `schema`.
    pub(super) fn datum(
        schema: &Schema,
        names: &HashMap<String, Schema>,
        data: &[u8],
    ) -> Result<(), FieldError> {
        let mut cur = Cursor { data, pos: 0 };
        walk(schema, names, &mut cur)?;
        if cur.remaining() > 0 {
            return Err(cur.fail(format_args!(
                "{} bytes follow the end of the record",
                cur.remaining()
            )));
        }
        Ok(())
    }

    fn walk(
        schema: &Schema,
        names: &HashMap<String, Schema>,
        cur: &mut Cursor<'_>,
    ) -> Result<(), FieldError> {
        match schema {
            Schema::Null => Ok(()),
            Schema::Boolean => {
                let b = cur.bytes(1)?[0];
                if b > 1 {
                    cur.pos -= 1;
                    return Err(cur.fail(format_args!("{b} is not a boolean (0 or 1)")));
                }
                Ok(())
            }
            Schema::Int | Schema::Date | Schema::TimeMillis => {
                let n = cur.long()?;
                if i32::try_from(n).is_err() {
                    return Err(cur.fail(format_args!("{n} does not fit an Avro int")));
                }
                Ok(())
            }
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => cur.long().map(|_| ()),
            Schema::Float => cur.bytes(4).map(|_| ()),
            Schema::Double => cur.bytes(8).map(|_| ()),
            Schema::Bytes | Schema::BigDecimal => {
                let n = cur.len("byte length")?;
                cur.bytes(n).map(|_| ())
            }
            Schema::String | Schema::Uuid => {
                let n = cur.len("string length")?;
                let start = cur.pos;
                let s = cur.bytes(n)?;
                if std::str::from_utf8(s).is_err() {
                    cur.pos = start;
                    return Err(cur.fail("the string is not valid UTF-8"));
                }
                Ok(())
            }
            Schema::Fixed(f) => cur.bytes(f.size).map(|_| ()),
            Schema::Duration => cur.bytes(12).map(|_| ()),
            Schema::Decimal(d) => walk(&d.inner, names, cur),
            Schema::Enum(e) => cur.index(e.symbols.len(), "enum symbol").map(|_| ()),
            Schema::Union(u) => {
                let i = cur.index(u.variants().len(), "union branch")?;
                walk(&u.variants()[i], names, cur)
            }
            Schema::Record(r) => {
                for f in &r.fields {
                    walk(&f.schema, names, cur).map_err(|e| e.at(&f.name))?;
                }
                Ok(())
            }
            Schema::Array(a) => {
                let mut i = 0usize;
                blocks(cur, |cur| {
                    let r = walk(&a.items, names, cur).map_err(|e| e.at(&format!("[{i}]")));
                    i += 1;
                    r
                })
            }
            Schema::Map(m) => blocks(cur, |cur| {
                walk(&Schema::String, names, cur)?;
                walk(&m.types, names, cur)
            }),
            Schema::Ref { name } => match names.get(&name.fullname(None)) {
                Some(s) => walk(s, names, cur),
                None => Err(cur.fail(format_args!(
                    "the schema refers to unknown type {}",
                    name.fullname(None)
                ))),
            },
        }
    }

    /// Array and map blocks: a count (negative: followed by the block's byte size), items, and
    /// a zero count at the end. Every item of our schemas takes at least one byte, so a count
    /// larger than the remaining bytes is corrupt.
    fn blocks(
        cur: &mut Cursor<'_>,
        mut item: impl FnMut(&mut Cursor<'_>) -> Result<(), FieldError>,
    ) -> Result<(), FieldError> {
        loop {
            let n = cur.long()?;
            if n == 0 {
                return Ok(());
            }
            if n < 0 {
                cur.len("block size")?;
            }
            let count = n.unsigned_abs();
            if count > cur.remaining() as u64 {
                return Err(cur.fail(format_args!(
                    "a block of {count} items exceeds the {} bytes that remain",
                    cur.remaining()
                )));
            }
            for _ in 0..count {
                item(cur)?;
            }
        }
    }
}

mod fast;

/// year, month, day, hour, minute, second, micros, fsp of an `io.tidemark.value.CalendarDateTime`.
type DateTimeParts = (u16, u8, u8, u8, u8, u8, u32, u8);

/// The `DateTime` value of decoded parts, or with `timestamp` the `Timestamp` value.
fn datetime_value(parts: DateTimeParts, timestamp: bool) -> Value {
    let (year, month, day, hour, minute, second, micros, fsp) = parts;
    if timestamp {
        Value::Timestamp {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
            fsp,
        }
    } else {
        Value::DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
            fsp,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rust <-> apache-avro values, field by field.

/// The union branches of `io.tidemark.Column.value`, in schema order, by their single field's
/// name (`null` for the null branch). A test checks this against every schema that has it.
const VALUE_BRANCHES: [&str; 18] = [
    "null",
    "int",
    "uint",
    "float",
    "double",
    "decimal",
    "date",
    "datetime",
    "timestamp",
    "time",
    "year",
    "text",
    "bytes",
    "enum",
    "set",
    "bit",
    "json",
    "geometry",
];

/// The symbols of `io.tidemark.Operation`, in schema order.
const OPERATIONS: [Operation; 5] = [
    Operation::Insert,
    Operation::Update,
    Operation::Delete,
    Operation::Backfill,
    Operation::Repair,
];

mod conv {
    use super::*;

    /// Conversion between a contract record and apache-avro's value. Sealed: only the contract
    /// records implement it.
    pub trait ToFromAvro: Sized {
        fn to_avro(&self) -> Result<Avro, FieldError>;
        fn from_avro(value: Avro) -> Result<Self, FieldError>;
    }

    // --- building ---

    fn record(fields: Vec<(&str, Avro)>) -> Avro {
        Avro::Record(
            fields
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
        )
    }

    fn string(s: &str) -> Avro {
        Avro::String(s.to_string())
    }

    /// A `["null", T]` union.
    fn optional(v: Option<Avro>) -> Avro {
        match v {
            None => Avro::Union(0, Box::new(Avro::Null)),
            Some(v) => Avro::Union(1, Box::new(v)),
        }
    }

    fn operation(op: Operation) -> Avro {
        let i = OPERATIONS.iter().position(|o| *o == op).unwrap_or(0);
        Avro::Enum(i as u32, op.as_str().to_string())
    }

    fn branch(field: &str, payload: Avro) -> Avro {
        let i = VALUE_BRANCHES.iter().position(|b| *b == field).unwrap_or(0);
        Avro::Union(i as u32, Box::new(record(vec![(field, payload)])))
    }

    fn int(n: impl Into<i32>) -> Avro {
        Avro::Int(n.into())
    }

    #[allow(clippy::too_many_arguments)]
    fn calendar_datetime(
        year: u16,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
        micros: u32,
        fsp: u8,
    ) -> Avro {
        record(vec![
            ("year", int(year)),
            ("month", int(month)),
            ("day", int(day)),
            ("hour", int(hour)),
            ("minute", int(minute)),
            ("second", int(second)),
            ("micros", Avro::Long(i64::from(micros))),
            ("fsp", int(fsp)),
        ])
    }

    pub(super) fn value_to_avro(v: &Value) -> Avro {
        match v {
            Value::Null => Avro::Union(0, Box::new(Avro::Null)),
            Value::Int(n) => branch("int", Avro::Long(*n)),
            Value::UInt(n) => branch("uint", Avro::String(n.to_string())),
            Value::Float(x) => branch("float", Avro::Float(*x)),
            Value::Double(x) => branch("double", Avro::Double(*x)),
            Value::Decimal(s) => branch("decimal", string(s)),
            Value::Date { year, month, day } => branch(
                "date",
                record(vec![
                    ("year", int(*year)),
                    ("month", int(*month)),
                    ("day", int(*day)),
                ]),
            ),
            Value::DateTime {
                year,
                month,
                day,
                hour,
                minute,
                second,
                micros,
                fsp,
            } => branch(
                "datetime",
                calendar_datetime(*year, *month, *day, *hour, *minute, *second, *micros, *fsp),
            ),
            Value::Timestamp {
                year,
                month,
                day,
                hour,
                minute,
                second,
                micros,
                fsp,
            } => branch(
                "timestamp",
                calendar_datetime(*year, *month, *day, *hour, *minute, *second, *micros, *fsp),
            ),
            Value::Time {
                negative,
                hours,
                minute,
                second,
                micros,
                fsp,
            } => branch(
                "time",
                record(vec![
                    ("negative", Avro::Boolean(*negative)),
                    ("hours", int(*hours)),
                    ("minute", int(*minute)),
                    ("second", int(*second)),
                    ("micros", Avro::Long(i64::from(*micros))),
                    ("fsp", int(*fsp)),
                ]),
            ),
            Value::Year(y) => branch("year", int(*y)),
            Value::Text(s) => branch("text", string(s)),
            Value::Bytes(b) => branch("bytes", Avro::Bytes(b.clone())),
            Value::Enum(s) => branch("enum", string(s)),
            Value::Set(members) => branch(
                "set",
                Avro::Array(members.iter().map(|m| string(m)).collect()),
            ),
            Value::Bit { width, value } => branch(
                "bit",
                record(vec![
                    ("width", int(*width)),
                    ("value", Avro::String(value.to_string())),
                ]),
            ),
            Value::Json(s) => branch("json", string(s)),
            Value::Geometry(b) => branch("geometry", Avro::Bytes(b.clone())),
        }
    }

    fn row(r: &Row) -> Avro {
        Avro::Array(
            r.0.iter()
                .map(|(name, v)| record(vec![("name", string(name)), ("value", value_to_avro(v))]))
                .collect(),
        )
    }

    // --- reading ---

    fn kind(v: &Avro) -> String {
        format!("{:?}", SchemaKind::from(v)).to_lowercase()
    }

    fn unexpected(expected: &str, found: &Avro) -> FieldError {
        FieldError::new(format!("expected {expected}, found {}", kind(found)))
    }

    /// A record's fields, taken out by name.
    struct Fields(Vec<(String, Avro)>);

    impl Fields {
        fn of(v: Avro) -> Result<Self, FieldError> {
            match v {
                Avro::Record(fields) => Ok(Fields(fields)),
                other => Err(unexpected("a record", &other)),
            }
        }

        fn take<T>(
            &mut self,
            name: &str,
            conv: impl FnOnce(Avro) -> Result<T, FieldError>,
        ) -> Result<T, FieldError> {
            let i = self
                .0
                .iter()
                .position(|(n, _)| n == name)
                .ok_or_else(|| FieldError::new("missing").at(name))?;
            let (_, v) = self.0.swap_remove(i);
            conv(v).map_err(|e| e.at(name))
        }
    }

    fn text(v: Avro) -> Result<String, FieldError> {
        match v {
            Avro::String(s) => Ok(s),
            other => Err(unexpected("a string", &other)),
        }
    }

    fn bytes(v: Avro) -> Result<Vec<u8>, FieldError> {
        match v {
            Avro::Bytes(b) => Ok(b),
            other => Err(unexpected("bytes", &other)),
        }
    }

    fn boolean(v: Avro) -> Result<bool, FieldError> {
        match v {
            Avro::Boolean(b) => Ok(b),
            other => Err(unexpected("a boolean", &other)),
        }
    }

    fn long(v: Avro) -> Result<i64, FieldError> {
        match v {
            Avro::Long(n) | Avro::TimestampMicros(n) => Ok(n),
            Avro::Int(n) => Ok(i64::from(n)),
            other => Err(unexpected("a long", &other)),
        }
    }

    /// An integer that must fit `T` (u8, u16, u32, u64).
    fn number<T: TryFrom<i64>>(v: Avro) -> Result<T, FieldError> {
        let n = long(v)?;
        T::try_from(n).map_err(|_| {
            FieldError::new(format!(
                "{n} is out of range for {}",
                std::any::type_name::<T>()
            ))
        })
    }

    /// An unsigned 64-bit number written as decimal digits.
    fn u64_text(v: Avro) -> Result<u64, FieldError> {
        let s = text(v)?;
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FieldError::new(format!(
                "`{s}` is not an unsigned decimal number"
            )));
        }
        s.parse()
            .map_err(|_| FieldError::new(format!("{s} does not fit an unsigned 64-bit number")))
    }

    /// A `["null", T]` union (or, after resolution, the bare value).
    fn nullable<T>(
        v: Avro,
        conv: impl FnOnce(Avro) -> Result<T, FieldError>,
    ) -> Result<Option<T>, FieldError> {
        match v {
            Avro::Union(_, inner) => match *inner {
                Avro::Null => Ok(None),
                inner => conv(inner).map(Some),
            },
            Avro::Null => Ok(None),
            other => conv(other).map(Some),
        }
    }

    fn array<T>(
        v: Avro,
        mut conv: impl FnMut(Avro) -> Result<T, FieldError>,
    ) -> Result<Vec<T>, FieldError> {
        match v {
            Avro::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| conv(item).map_err(|e| e.at(&format!("[{i}]"))))
                .collect(),
            other => Err(unexpected("an array", &other)),
        }
    }

    fn op(v: Avro) -> Result<Operation, FieldError> {
        match v {
            Avro::Enum(_, symbol) => Operation::parse(&symbol)
                .ok_or_else(|| FieldError::new(format!("unknown operation `{symbol}`"))),
            other => Err(unexpected("an operation", &other)),
        }
    }

    fn datetime_parts(v: Avro) -> Result<DateTimeParts, FieldError> {
        let mut f = Fields::of(v)?;
        Ok((
            f.take("year", number)?,
            f.take("month", number)?,
            f.take("day", number)?,
            f.take("hour", number)?,
            f.take("minute", number)?,
            f.take("second", number)?,
            f.take("micros", number)?,
            f.take("fsp", number)?,
        ))
    }

    pub(super) fn value_from_avro(v: Avro) -> Result<Value, FieldError> {
        let inner = match v {
            Avro::Union(_, inner) => *inner,
            other => other,
        };
        let mut fields = match inner {
            Avro::Null => return Ok(Value::Null),
            Avro::Record(fields) => fields,
            other => return Err(unexpected("null or a value record", &other)),
        };
        let (name, payload) = match (fields.pop(), fields.is_empty()) {
            (Some(only), true) => only,
            _ => {
                return Err(FieldError::new(
                    "a value record must have exactly one field, named after its type",
                ))
            }
        };
        let value = match name.as_str() {
            "int" => long(payload).map(Value::Int),
            "uint" => u64_text(payload).map(Value::UInt),
            "float" => match payload {
                Avro::Float(x) => Ok(Value::Float(x)),
                other => Err(unexpected("a float", &other)),
            },
            "double" => match payload {
                Avro::Double(x) => Ok(Value::Double(x)),
                other => Err(unexpected("a double", &other)),
            },
            "decimal" => text(payload).map(Value::Decimal),
            "date" => Fields::of(payload).and_then(|mut f| {
                Ok(Value::Date {
                    year: f.take("year", number)?,
                    month: f.take("month", number)?,
                    day: f.take("day", number)?,
                })
            }),
            "datetime" => datetime_parts(payload).map(|p| datetime_value(p, false)),
            "timestamp" => datetime_parts(payload).map(|p| datetime_value(p, true)),
            "time" => Fields::of(payload).and_then(|mut f| {
                Ok(Value::Time {
                    negative: f.take("negative", boolean)?,
                    hours: f.take("hours", number)?,
                    minute: f.take("minute", number)?,
                    second: f.take("second", number)?,
                    micros: f.take("micros", number)?,
                    fsp: f.take("fsp", number)?,
                })
            }),
            "year" => number(payload).map(Value::Year),
            "text" => text(payload).map(Value::Text),
            "bytes" => bytes(payload).map(Value::Bytes),
            "enum" => text(payload).map(Value::Enum),
            "set" => array(payload, text).map(Value::Set),
            "bit" => Fields::of(payload).and_then(|mut f| {
                Ok(Value::Bit {
                    width: f.take("width", number)?,
                    value: f.take("value", u64_text)?,
                })
            }),
            "json" => text(payload).map(Value::Json),
            "geometry" => bytes(payload).map(Value::Geometry),
            other => {
                return Err(FieldError::new(format!(
                    "unknown value type `{other}` (written by a newer tidemark?)"
                )))
            }
        };
        value.map_err(|e| e.at(&name))
    }

    fn row_from(v: Avro) -> Result<Row, FieldError> {
        array(v, |col| {
            let mut f = Fields::of(col)?;
            let name = f.take("name", text)?;
            let value = f.take("value", value_from_avro)?;
            Ok((ColumnName::from(name.as_str()), value))
        })
        .map(Row)
    }

    fn lineage_to_avro(l: &Lineage) -> Avro {
        record(vec![
            ("source_server", string(&l.source_server)),
            ("source_table", string(&l.source_table)),
            ("source_key", string(&l.source_key)),
            ("position", string(&l.position)),
            ("gtid", optional(l.gtid.as_deref().map(string))),
            ("version", Avro::Long(l.version)),
            ("op", operation(l.op)),
            ("commit_time_us", Avro::TimestampMicros(l.commit_time_us)),
            ("transform_name", string(&l.transform_name)),
            ("transform_version", string(&l.transform_version)),
            ("source_digest", string(&l.source_digest)),
            ("chunk", optional(l.chunk.as_deref().map(string))),
        ])
    }

    fn lineage_from(v: Avro) -> Result<Lineage, FieldError> {
        let mut f = Fields::of(v)?;
        Ok(Lineage {
            source_server: f.take("source_server", text)?.into(),
            source_table: f.take("source_table", text)?.into(),
            source_key: f.take("source_key", text)?,
            position: f.take("position", text)?.into(),
            gtid: f.take("gtid", |v| nullable(v, text))?,
            version: f.take("version", long)?,
            op: f.take("op", op)?,
            commit_time_us: f.take("commit_time_us", long)?,
            transform_name: f.take("transform_name", text)?.into(),
            transform_version: f.take("transform_version", text)?.into(),
            source_digest: f.take("source_digest", text)?,
            chunk: f.take("chunk", |v| nullable(v, text))?.map(Into::into),
        })
    }

    impl ToFromAvro for ChangeEvent {
        fn to_avro(&self) -> Result<Avro, FieldError> {
            let offset = i64::try_from(self.position.offset).map_err(|_| {
                FieldError::new(format!(
                    "{} exceeds the largest Avro long",
                    self.position.offset
                ))
                .at("offset")
                .at("position")
            })?;
            Ok(record(vec![
                ("source_server", string(&self.source_server)),
                (
                    "table",
                    record(vec![
                        ("database", string(&self.table.database)),
                        ("table", string(&self.table.table)),
                    ]),
                ),
                ("op", operation(self.op)),
                ("key", row(&self.key)),
                ("after", optional(self.after.as_ref().map(row))),
                ("version", Avro::Long(self.version)),
                (
                    "position",
                    record(vec![
                        ("file", string(&self.position.file)),
                        ("offset", Avro::Long(offset)),
                    ]),
                ),
                ("gtid", optional(self.gtid.as_deref().map(string))),
                ("commit_time_us", Avro::TimestampMicros(self.commit_time_us)),
                ("chunk", optional(self.chunk.as_deref().map(string))),
            ]))
        }

        fn from_avro(value: Avro) -> Result<Self, FieldError> {
            let mut f = Fields::of(value)?;
            Ok(ChangeEvent {
                source_server: f.take("source_server", text)?.into(),
                table: f.take("table", |v| {
                    let mut t = Fields::of(v)?;
                    Ok(TableId {
                        database: t.take("database", text)?.into(),
                        table: t.take("table", text)?.into(),
                    })
                })?,
                op: f.take("op", op)?,
                key: f.take("key", row_from)?,
                after: f.take("after", |v| nullable(v, row_from))?,
                version: f.take("version", long)?,
                position: f.take("position", |v| {
                    let mut p = Fields::of(v)?;
                    Ok(BinlogPosition {
                        file: p.take("file", text)?.into(),
                        offset: p.take("offset", number)?,
                    })
                })?,
                gtid: f.take("gtid", |v| nullable(v, text))?,
                commit_time_us: f.take("commit_time_us", long)?,
                chunk: f.take("chunk", |v| nullable(v, text))?.map(Into::into),
            })
        }
    }

    impl ToFromAvro for Lineage {
        fn to_avro(&self) -> Result<Avro, FieldError> {
            Ok(lineage_to_avro(self))
        }

        fn from_avro(value: Avro) -> Result<Self, FieldError> {
            lineage_from(value)
        }
    }

    impl ToFromAvro for TargetRecord {
        fn to_avro(&self) -> Result<Avro, FieldError> {
            Ok(record(vec![
                ("table", string(&self.table)),
                ("key", row(&self.key)),
                ("columns", optional(self.columns.as_ref().map(row))),
                ("lineage", lineage_to_avro(&self.lineage)),
            ]))
        }

        fn from_avro(value: Avro) -> Result<Self, FieldError> {
            let mut f = Fields::of(value)?;
            Ok(TargetRecord {
                table: f.take("table", text)?.into(),
                key: f.take("key", row_from)?,
                columns: f.take("columns", |v| nullable(v, row_from))?,
                lineage: f.take("lineage", lineage_from)?,
            })
        }
    }

    impl ToFromAvro for DriftEvent {
        fn to_avro(&self) -> Result<Avro, FieldError> {
            Ok(record(vec![
                ("table", string(&self.table)),
                ("key", string(&self.key)),
                ("class", string(&self.class)),
                (
                    "columns",
                    Avro::Array(
                        self.columns
                            .iter()
                            .map(|c| {
                                record(vec![
                                    ("name", string(&c.name)),
                                    ("source", optional(c.source.as_deref().map(string))),
                                    ("target", optional(c.target.as_deref().map(string))),
                                ])
                            })
                            .collect(),
                    ),
                ),
                (
                    "target_version",
                    optional(self.target_version.map(Avro::Long)),
                ),
                (
                    "target_lineage",
                    optional(self.target_lineage.as_ref().map(lineage_to_avro)),
                ),
                ("observed_before", string(&self.observed_before)),
                ("observed_after", string(&self.observed_after)),
                ("reason", string(&self.reason)),
            ]))
        }

        fn from_avro(value: Avro) -> Result<Self, FieldError> {
            let mut f = Fields::of(value)?;
            Ok(DriftEvent {
                table: f.take("table", text)?,
                key: f.take("key", text)?,
                class: f.take("class", text)?,
                columns: f.take("columns", |v| {
                    array(v, |c| {
                        let mut c = Fields::of(c)?;
                        Ok(DriftColumn {
                            name: c.take("name", text)?,
                            source: c.take("source", |v| nullable(v, text))?,
                            target: c.take("target", |v| nullable(v, text))?,
                        })
                    })
                })?,
                target_version: f.take("target_version", |v| nullable(v, long))?,
                target_lineage: f.take("target_lineage", |v| nullable(v, lineage_from))?,
                observed_before: f.take("observed_before", text)?,
                observed_after: f.take("observed_after", text)?,
                reason: f.take("reason", text)?,
            })
        }
    }

    impl ToFromAvro for Checkpoint {
        fn to_avro(&self) -> Result<Avro, FieldError> {
            Ok(record(vec![
                ("stage", string(&self.stage)),
                ("scope", string(&self.scope)),
                ("value", string(&self.value)),
            ]))
        }

        fn from_avro(value: Avro) -> Result<Self, FieldError> {
            let mut f = Fields::of(value)?;
            Ok(Checkpoint {
                stage: f.take("stage", text)?,
                scope: f.take("scope", text)?,
                value: f.take("value", text)?,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::conv::ToFromAvro;
    use super::*;
    use apache_avro::{GenericSingleObjectReader, GenericSingleObjectWriter};

    fn all_values() -> Row {
        let dt = |micros, fsp| (2024, 2, 29, 23, 59, 58, micros, fsp);
        let (year, month, day, hour, minute, second, micros, fsp) = dt(123_456, 6);
        Row(vec![
            ("null".into(), Value::Null),
            ("int".into(), Value::Int(i64::MIN)),
            ("uint".into(), Value::UInt(u64::MAX)),
            ("float".into(), Value::Float(-0.1)),
            ("double".into(), Value::Double(f64::MAX)),
            ("decimal".into(), Value::Decimal("-12.500".into())),
            (
                "date".into(),
                Value::Date {
                    year: 0,
                    month: 0,
                    day: 0,
                },
            ),
            (
                "datetime".into(),
                Value::DateTime {
                    year,
                    month,
                    day,
                    hour,
                    minute,
                    second,
                    micros,
                    fsp,
                },
            ),
            (
                "timestamp".into(),
                Value::Timestamp {
                    year,
                    month,
                    day,
                    hour,
                    minute,
                    second,
                    micros,
                    fsp,
                },
            ),
            (
                "time".into(),
                Value::Time {
                    negative: true,
                    hours: 838,
                    minute: 59,
                    second: 59,
                    micros: 999_999,
                    fsp: 6,
                },
            ),
            ("year".into(), Value::Year(2155)),
            ("text".into(), Value::Text("é\u{0}".into())),
            ("bytes".into(), Value::Bytes(vec![0, 255])),
            ("enum".into(), Value::Enum("".into())),
            ("set".into(), Value::Set(vec!["a".into(), "b".into()])),
            (
                "bit".into(),
                Value::Bit {
                    width: 64,
                    value: u64::MAX,
                },
            ),
            ("json".into(), Value::Json("{\"a\":[1]}".into())),
            (
                "geometry".into(),
                Value::Geometry(vec![0, 0, 0, 0, 1, 1, 0, 0, 0]),
            ),
        ])
    }

    fn event() -> ChangeEvent {
        ChangeEvent {
            source_server: "3e11fa47-71ca-11e1-9e33-c80aa9429562".into(),
            table: TableId::new("shop", "orders"),
            op: Operation::Update,
            key: Row(vec![("id".into(), Value::UInt(u64::MAX))]),
            after: Some(all_values()),
            version: (7 << 32) + 1234,
            position: BinlogPosition::new("mysql-bin.000007", 1234),
            gtid: Some("0-1-42".into()),
            commit_time_us: 1_700_000_000_123_456,
            chunk: Some("chunk-3".into()),
        }
    }

    /// The `io.tidemark.Column.value` union of a schema.
    fn value_union(kind: RecordKind) -> Vec<Schema> {
        let names = &compiled(kind).current.names;
        let Some(Schema::Record(column)) = names.get("io.tidemark.Column") else {
            panic!("{kind} has no io.tidemark.Column");
        };
        let value = column.fields.iter().find(|f| f.name == "value").unwrap();
        let Schema::Union(u) = &value.schema else {
            panic!("Column.value is not a union");
        };
        u.variants().to_vec()
    }

    #[test]
    fn value_branch_table_matches_the_schemas() {
        for kind in [RecordKind::ChangeEvent, RecordKind::TargetRecord] {
            let variants = value_union(kind);
            assert_eq!(variants.len(), VALUE_BRANCHES.len(), "{kind}");
            assert_eq!(variants[0], Schema::Null, "{kind}: branch 0 must be null");
            for (i, v) in variants.iter().enumerate().skip(1) {
                let Schema::Record(r) = v else {
                    panic!("{kind}: branch {i} is not a record");
                };
                assert_eq!(
                    r.fields.len(),
                    1,
                    "{kind}: {} must have one field",
                    r.name.name
                );
                assert_eq!(r.fields[0].name, VALUE_BRANCHES[i], "{kind}: branch {i}");
                assert!(
                    r.fields[0].default.is_none(),
                    "{kind}: the field must be required"
                );
            }
        }
    }

    #[test]
    fn operation_symbols_match_the_schemas() {
        for kind in [RecordKind::ChangeEvent, RecordKind::Lineage] {
            let Some(Schema::Enum(e)) = compiled(kind).current.names.get("io.tidemark.Operation")
            else {
                panic!("{kind} has no io.tidemark.Operation");
            };
            let ours: Vec<&str> = OPERATIONS.iter().map(|o| o.as_str()).collect();
            assert_eq!(e.symbols, ours, "{kind}");
        }
    }

    #[test]
    fn header_is_marker_and_little_endian_rabin_fingerprint() {
        for kind in RecordKind::ALL {
            let c = compiled(kind);
            assert_eq!(&c.header[..2], &SINGLE_OBJECT_MARKER);
            assert_eq!(&c.header[2..], &fingerprint(kind));
            // CRC-64-AVRO of the canonical form, little-endian (Avro specification).
            let canonical = schema(kind).canonical_form();
            let mut fp: u64 = 0xc15d_213a_a4d7_a795;
            for b in canonical.bytes() {
                fp = (fp >> 8) ^ rabin_table()[((fp ^ u64::from(b)) & 0xff) as usize];
            }
            assert_eq!(fp.to_le_bytes(), fingerprint(kind), "{kind}");
        }
    }

    fn rabin_table() -> [u64; 256] {
        let mut t = [0u64; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut fp = i as u64;
            for _ in 0..8 {
                fp = (fp >> 1) ^ (0xc15d_213a_a4d7_a795 & (!(fp & 1)).wrapping_add(1));
            }
            *e = fp;
        }
        t
    }

    #[test]
    fn bytes_match_apache_avro_single_object_writer_and_reader() {
        let ev = event();
        let ours = encode(&ev).unwrap();
        let schema = schema(RecordKind::ChangeEvent);
        let mut writer = GenericSingleObjectWriter::new_with_capacity(schema, 1024).unwrap();
        let mut theirs = Vec::new();
        writer
            .write_value(ev.to_avro().unwrap(), &mut theirs)
            .unwrap();
        assert_eq!(ours, theirs);
        let reader = GenericSingleObjectReader::new(schema.clone()).unwrap();
        let value = reader.read_value(&mut ours.as_slice()).unwrap();
        assert_eq!(ChangeEvent::from_avro(value).unwrap(), ev);
    }

    /// apache-avro resolves union branches by structure; with one uniquely named field per
    /// branch, every branch resolves to itself.
    #[test]
    fn every_value_branch_resolves_to_itself() {
        let ev = event();
        let bytes = encode(&ev).unwrap();
        let schema = schema(RecordKind::ChangeEvent);
        let resolved =
            apache_avro::from_avro_datum(schema, &mut &bytes[HEADER_LEN..], Some(schema)).unwrap();
        assert_eq!(ChangeEvent::from_avro(resolved).unwrap(), ev);
    }

    /// The reason for the one-unique-field rule: apache-avro 0.21 picks the first branch a
    /// record resolves to, so two branches of the same shape are confused.
    #[test]
    fn structural_twins_would_be_confused_by_resolution() {
        let twins = Schema::parse_str(
            r#"["null",
                {"type":"record","name":"A","fields":[{"name":"x","type":"string"}]},
                {"type":"record","name":"B","fields":[{"name":"x","type":"string"}]}]"#,
        )
        .unwrap();
        let b = Avro::Union(
            2,
            Box::new(Avro::Record(vec![("x".into(), Avro::String("v".into()))])),
        );
        let datum = apache_avro::to_avro_datum(&twins, b).unwrap();
        let resolved = apache_avro::from_avro_datum(&twins, &mut datum.as_slice(), Some(&twins));
        assert!(matches!(resolved, Ok(Avro::Union(1, _))), "{resolved:?}");
    }

    /// Data from an older writer whose union lists the branches in another order and which
    /// lacks a field that now has a default decodes to the same values.
    #[test]
    fn older_writer_with_other_branch_order_and_fewer_fields_resolves() {
        let mut json: serde_json::Value =
            serde_json::from_str(RecordKind::ChangeEvent.schema_text()).unwrap();
        let fields = json["fields"].as_array_mut().unwrap();
        fields.retain(|f| f["name"] != "chunk");
        let union = fields.iter_mut().find(|f| f["name"] == "key").unwrap()["type"]["items"]
            ["fields"][1]["type"]
            .as_array_mut()
            .unwrap();
        // Move simple branches to the front: geometry, json, enum, text, uint.
        let order = ["null", "geometry", "json", "enum", "text", "uint"];
        union.sort_by_key(|b| {
            let field = b["fields"][0]["name"].as_str().unwrap_or("null");
            order
                .iter()
                .position(|o| *o == field)
                .unwrap_or(order.len())
        });
        let new_order: Vec<String> = union
            .iter()
            .map(|b| {
                b["fields"][0]["name"]
                    .as_str()
                    .unwrap_or("null")
                    .to_string()
            })
            .collect();
        let old = Schema::parse_str(&json.to_string()).unwrap();
        let writer = WriterSchema::new("synthetic old change_event", old.clone());
        assert_ne!(writer.fingerprint, fingerprint(RecordKind::ChangeEvent));

        fn remap(v: &mut Avro, new_order: &[String]) {
            match v {
                Avro::Record(fields) => {
                    let is_column = fields.len() == 2 && fields[0].0 == "name";
                    for (name, f) in fields.iter_mut() {
                        if is_column && name == "value" {
                            if let Avro::Union(i, _) = f {
                                let branch = VALUE_BRANCHES[*i as usize];
                                *i = new_order.iter().position(|b| b == branch).unwrap() as u32;
                            }
                        } else {
                            remap(f, new_order);
                        }
                    }
                }
                Avro::Array(items) => items.iter_mut().for_each(|i| remap(i, new_order)),
                Avro::Union(_, inner) => remap(inner, new_order),
                _ => {}
            }
        }
        let mut ev = event();
        let mut value = ev.to_avro().unwrap();
        if let Avro::Record(fields) = &mut value {
            fields.retain(|(n, _)| n != "chunk");
        }
        remap(&mut value, &new_order);
        let datum = apache_avro::to_avro_datum(&old, value).unwrap();
        let back: ChangeEvent = decode_datum(&writer, &datum).unwrap();
        ev.chunk = None;
        assert_eq!(back, ev);
    }

    #[test]
    fn corrupt_counts_and_strings_are_refused_with_the_field() {
        let ev = ChangeEvent {
            after: None,
            ..event()
        };
        let bytes = encode(&ev).unwrap();
        let mut datum = bytes[HEADER_LEN..].to_vec();
        // source_server: its length is the first varint; claim a huge string.
        let mut huge = bytes[..HEADER_LEN].to_vec();
        huge.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]);
        huge.extend_from_slice(&datum[1..]);
        let err = decode::<ChangeEvent>(&huge).unwrap_err().to_string();
        assert!(err.contains("field `source_server`"), "{err}");
        assert!(err.contains("exceeds"), "{err}");

        // Invalid UTF-8 inside source_server.
        datum[1] = 0xff;
        let mut bad = bytes[..HEADER_LEN].to_vec();
        bad.extend_from_slice(&datum);
        let err = decode::<ChangeEvent>(&bad).unwrap_err().to_string();
        assert!(
            err.contains("UTF-8") && err.contains("source_server"),
            "{err}"
        );
    }

    #[test]
    fn a_huge_item_count_is_refused_before_anything_is_allocated() {
        let ck = DriftEvent {
            table: "t".into(),
            key: "k".into(),
            class: "stale".into(),
            columns: vec![],
            target_version: None,
            target_lineage: None,
            observed_before: "b.1:4".into(),
            observed_after: "b.1:5".into(),
            reason: "r".into(),
        };
        let bytes = encode(&ck).unwrap();
        // table "t", key "k", class "stale", then the columns array count: 0 → 2^29. Handed
        // to apache-avro 0.21 unchecked, these 5 bytes make it reserve 2^29 values and abort
        // the process (SIGABRT, measured).
        let pos = HEADER_LEN + 2 + 2 + 6;
        assert_eq!(bytes[pos], 0);
        let mut bad = bytes[..pos].to_vec();
        bad.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x04]);
        bad.extend_from_slice(&bytes[pos + 1..]);
        let err = decode::<DriftEvent>(&bad).unwrap_err();
        assert!(matches!(err, AvroError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("field `columns`"), "{err}");
    }
}
