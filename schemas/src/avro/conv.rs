//! Rust values to and from apache-avro values, field by field.

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
fn calendar_datetime(t: &DateTime) -> Avro {
    record(vec![
        ("year", int(t.year)),
        ("month", int(t.month)),
        ("day", int(t.day)),
        ("hour", int(t.hour)),
        ("minute", int(t.minute)),
        ("second", int(t.second)),
        ("micros", Avro::Long(i64::from(t.micros))),
        ("fsp", int(t.fsp)),
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
        Value::DateTime(t) => branch("datetime", calendar_datetime(t)),
        Value::Timestamp(t) => branch("timestamp", calendar_datetime(t)),
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

fn datetime_parts(v: Avro) -> Result<DateTime, FieldError> {
    let mut f = Fields::of(v)?;
    Ok(DateTime {
        year: f.take("year", number)?,
        month: f.take("month", number)?,
        day: f.take("day", number)?,
        hour: f.take("hour", number)?,
        minute: f.take("minute", number)?,
        second: f.take("second", number)?,
        micros: f.take("micros", number)?,
        fsp: f.take("fsp", number)?,
    })
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
        "datetime" => datetime_parts(payload).map(Value::DateTime),
        "timestamp" => datetime_parts(payload).map(Value::Timestamp),
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
