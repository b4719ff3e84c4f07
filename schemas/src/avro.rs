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
    BinlogPosition, ChangeEvent, Checkpoint, ColumnName, DateTime, DriftColumn, DriftEvent,
    Lineage, Operation, Row, TableId, TargetRecord, Value,
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

mod field;

// ---------------------------------------------------------------------------------------------
// Bounds check of untrusted data, before apache-avro allocates anything.

mod check;

mod fast;

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

mod conv;

#[cfg(test)]
mod tests;
