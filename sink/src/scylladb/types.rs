//! Target types to CQL types and values, losslessly.
//!
//! [`cql_type`] is the one place that decides how each [`TargetType`] is stored in ScyllaDB;
//! [`cql_value`] and [`value_from_cql`] convert values accordingly and are exact inverses (unit
//! tests round-trip every type at its edges). The rule: a native CQL type when it holds every value
//! the source type can hold, exactly; otherwise the canonical text that SQLite stores too.
//!
//! | target type            | CQL type   | why                                                        |
//! |------------------------|------------|------------------------------------------------------------|
//! | `Int{8}`               | `tinyint`  |                                                            |
//! | `Int{16}`              | `smallint` |                                                            |
//! | `Int{24}`, `Int{32}`   | `int`      |                                                            |
//! | `Int{64}`              | `bigint`   |                                                            |
//! | `UInt{8}`              | `smallint` | 0‥255 exceeds `tinyint`                                    |
//! | `UInt{16}`, `UInt{24}` | `int`      |                                                            |
//! | `UInt{32}`             | `bigint`   |                                                            |
//! | `UInt{64}`             | `varint`   | 0‥2⁶⁴−1 exceeds `bigint`                                   |
//! | `Float`, `Double`      | `float`, `double` | IEEE-754 both sides                                 |
//! | `Decimal{p,s}`         | `decimal`  | unscaled integer + scale: exact, keeps trailing zeros      |
//! | `Date`                 | `text` `YYYY-MM-DD` | CQL `date` has no zero date (`0000-00-00`) nor zero month/day, which MariaDB accepts by default |
//! | `DateTime{fsp}`        | `text` `YYYY-MM-DD hh:mm:ss[.f…]` | CQL `timestamp` has milliseconds only, is an instant (DATETIME has no zone) and has no zero date |
//! | `Timestamp{fsp}`       | `text`, same form, UTC | milliseconds only, and the zero timestamp          |
//! | `Time{fsp}`            | `bigint`, signed microseconds | CQL `time` is 0‥24 h; MySQL TIME is ±838:59:59.999999 |
//! | `Year`                 | `smallint` | 0 is the zero year                                          |
//! | `Text`, `Enum`, `Json` | `text`     | ENUM as the member name, JSON as its text                  |
//! | `Set`                  | `text`, members joined by `,` | a CQL `set<text>` cannot tell the empty SET from NULL (an empty collection *is* null) |
//! | `Bit{w<64}`            | `bigint`   |                                                            |
//! | `Bit{64}`              | `varint`   | exceeds `bigint`                                           |
//! | `Bytes`, `Geometry`    | `blob`     | geometry in MySQL's internal form (SRID + WKB)             |
//!
//! Text forms are fixed-width per column (fixed `fsp`), so they sort chronologically for years
//! 0000‥9999. A value whose variant or precision does not match its column, an out-of-range
//! integer, a negative-zero TIME or DECIMAL (MySQL never produces either) is an error, never a
//! coercion.

use scylla::value::{CqlDecimal, CqlValue, CqlVarint};
use tidemark_schemas::{DateTime, TargetType, Value};

use tidemark_schemas::text::{check_decimal, value_from_text};

/// The CQL type that stores `ty` losslessly (see the module table).
pub fn cql_type(ty: &TargetType) -> &'static str {
    match ty {
        TargetType::Int { bits } if *bits <= 8 => "tinyint",
        TargetType::Int { bits } if *bits <= 16 => "smallint",
        TargetType::Int { bits } if *bits <= 32 => "int",
        TargetType::Int { .. } => "bigint",
        TargetType::UInt { bits } if *bits < 16 => "smallint",
        TargetType::UInt { bits } if *bits < 32 => "int",
        TargetType::UInt { bits } if *bits < 64 => "bigint",
        TargetType::UInt { .. } => "varint",
        TargetType::Float => "float",
        TargetType::Double => "double",
        TargetType::Decimal { .. } => "decimal",
        TargetType::Time { .. } => "bigint",
        TargetType::Year => "smallint",
        TargetType::Bit { width } if *width < 64 => "bigint",
        TargetType::Bit { .. } => "varint",
        TargetType::Bytes { .. } | TargetType::Geometry => "blob",
        TargetType::Date
        | TargetType::DateTime { .. }
        | TargetType::Timestamp { .. }
        | TargetType::Text { .. }
        | TargetType::Enum { .. }
        | TargetType::Set { .. }
        | TargetType::Json => "text",
    }
}

/// An integer in the CQL integer type [`cql_type`] chose for `ty`.
fn cql_integer(ty: &TargetType, v: i128) -> Result<CqlValue, String> {
    let range = |t: &str| format!("{v} is out of range for CQL {t}");
    Ok(match cql_type(ty) {
        "tinyint" => CqlValue::TinyInt(i8::try_from(v).map_err(|_| range("tinyint"))?),
        "smallint" => CqlValue::SmallInt(i16::try_from(v).map_err(|_| range("smallint"))?),
        "int" => CqlValue::Int(i32::try_from(v).map_err(|_| range("int"))?),
        "bigint" => CqlValue::BigInt(i64::try_from(v).map_err(|_| range("bigint"))?),
        "varint" => CqlValue::Varint(varint_from_i128(v)),
        other => return Err(format!("an integer cannot be stored as CQL {other}")),
    })
}

/// The bound value of `v` in a column of type `ty`; `None` is CQL null.
pub fn cql_value(ty: &TargetType, v: &Value) -> Result<Option<CqlValue>, String> {
    let mismatch = || format!("a {} value cannot be stored in a {ty:?} column", v.kind());
    let value = match (ty, v) {
        (_, Value::Null) => return Ok(None),
        (TargetType::Int { .. }, Value::Int(i)) => cql_integer(ty, i128::from(*i))?,
        (TargetType::UInt { .. }, Value::UInt(u)) => cql_integer(ty, i128::from(*u))?,
        (TargetType::Year, Value::Year(y)) => cql_integer(ty, i128::from(*y))?,
        (TargetType::Bit { width }, Value::Bit { width: w, value }) => {
            if w != width {
                return Err(format!(
                    "a BIT({w}) value cannot be stored in a BIT({width}) column"
                ));
            }
            cql_integer(ty, i128::from(*value))?
        }
        (TargetType::Float, Value::Float(f)) => CqlValue::Float(*f),
        (TargetType::Double, Value::Double(f)) => CqlValue::Double(*f),
        (TargetType::Decimal { .. }, Value::Decimal(d)) => CqlValue::Decimal(decimal_from_text(d)?),
        (TargetType::Time { fsp }, Value::Time { fsp: vf, .. }) => {
            check_fsp(*fsp, *vf)?;
            CqlValue::BigInt(time_micros(v)?)
        }
        (TargetType::Date, Value::Date { .. }) => CqlValue::Text(v.to_string()),
        (TargetType::DateTime { fsp }, Value::DateTime(DateTime { fsp: vf, .. }))
        | (TargetType::Timestamp { fsp }, Value::Timestamp(DateTime { fsp: vf, .. })) => {
            check_fsp(*fsp, *vf)?;
            CqlValue::Text(v.to_string())
        }
        (TargetType::Text { .. }, Value::Text(s))
        | (TargetType::Enum { .. }, Value::Enum(s))
        | (TargetType::Json, Value::Json(s)) => CqlValue::Text(s.clone()),
        (TargetType::Set { .. }, Value::Set(members)) => {
            if members.iter().any(|m| m.contains(',')) {
                return Err("a SET member contains a comma".into());
            }
            CqlValue::Text(members.join(","))
        }
        (TargetType::Bytes { .. }, Value::Bytes(b))
        | (TargetType::Geometry, Value::Geometry(b)) => CqlValue::Blob(b.clone()),
        _ => return Err(mismatch()),
    };
    Ok(Some(value))
}

/// The value a column of type `ty` holds when it reads back as `v`: the inverse of [`cql_value`].
pub fn value_from_cql(ty: &TargetType, v: Option<CqlValue>) -> Result<Value, String> {
    let Some(v) = v else {
        return Ok(Value::Null);
    };
    let int = |v: &CqlValue| {
        cql_int(v).ok_or_else(|| format!("a {v:?} is stored where {ty:?} was expected"))
    };
    let range = |n: i128| format!("{n} is out of range for {ty:?}");
    match (ty, v) {
        (TargetType::Int { .. }, v) => {
            let n = int(&v)?;
            i64::try_from(n).map(Value::Int).map_err(|_| range(n))
        }
        (TargetType::UInt { .. }, v) => {
            let n = int(&v)?;
            u64::try_from(n).map(Value::UInt).map_err(|_| range(n))
        }
        (TargetType::Year, v) => {
            let n = int(&v)?;
            u16::try_from(n).map(Value::Year).map_err(|_| range(n))
        }
        (TargetType::Bit { width }, v) => {
            let n = int(&v)?;
            u64::try_from(n)
                .map(|value| Value::Bit {
                    width: *width,
                    value,
                })
                .map_err(|_| range(n))
        }
        (TargetType::Time { fsp }, v) => {
            let n = int(&v)?;
            let micros = i64::try_from(n).map_err(|_| range(n))?;
            Ok(time_from_micros(micros, *fsp))
        }
        (TargetType::Float, CqlValue::Float(f)) => Ok(Value::Float(f)),
        (TargetType::Double, CqlValue::Double(f)) => Ok(Value::Double(f)),
        (TargetType::Decimal { .. }, CqlValue::Decimal(d)) => {
            Ok(Value::Decimal(decimal_to_text(&d)))
        }
        (TargetType::Bytes { .. }, CqlValue::Blob(b)) => Ok(Value::Bytes(b)),
        (TargetType::Geometry, CqlValue::Blob(b)) => Ok(Value::Geometry(b)),
        (ty, CqlValue::Text(s) | CqlValue::Ascii(s)) if cql_type(ty) == "text" => {
            value_from_text(ty, &s)
        }
        (ty, other) => Err(format!("a {other:?} is stored where {ty:?} was expected")),
    }
}

fn check_fsp(column: u8, value: u8) -> Result<(), String> {
    if column == value {
        Ok(())
    } else {
        Err(format!(
            "a value with {value} fractional-second digits cannot be stored in a column with {column}"
        ))
    }
}

/// Any CQL integer as an i128 (varints of up to 16 bytes).
fn cql_int(v: &CqlValue) -> Option<i128> {
    match v {
        CqlValue::TinyInt(i) => Some(i128::from(*i)),
        CqlValue::SmallInt(i) => Some(i128::from(*i)),
        CqlValue::Int(i) => Some(i128::from(*i)),
        CqlValue::BigInt(i) => Some(i128::from(*i)),
        CqlValue::Varint(v) => {
            let b = v.as_signed_bytes_be_slice();
            if b.is_empty() || b.len() > 16 {
                return None;
            }
            let fill = if b[0] & 0x80 != 0 { 0xff } else { 0 };
            let mut buf = [fill; 16];
            buf[16 - b.len()..].copy_from_slice(b);
            Some(i128::from_be_bytes(buf))
        }
        _ => None,
    }
}

/// Minimal two's-complement big-endian bytes, as CQL `varint` stores them.
fn minimal(mut b: Vec<u8>) -> Vec<u8> {
    while b.len() > 1 && ((b[0] == 0 && b[1] & 0x80 == 0) || (b[0] == 0xff && b[1] & 0x80 != 0)) {
        b.remove(0);
    }
    b
}

pub(crate) fn varint_from_i128(v: i128) -> CqlVarint {
    CqlVarint::from_signed_bytes_be(minimal(v.to_be_bytes().to_vec()))
}

/// TIME as signed microseconds.
fn time_micros(v: &Value) -> Result<i64, String> {
    let Value::Time {
        negative,
        hours,
        minute,
        second,
        micros,
        ..
    } = v
    else {
        return Err(format!("{v:?} is not a TIME"));
    };
    let magnitude = ((i64::from(*hours) * 60 + i64::from(*minute)) * 60 + i64::from(*second))
        * 1_000_000
        + i64::from(*micros);
    match (negative, magnitude) {
        (true, 0) => Err("a negative zero TIME cannot be stored as microseconds".into()),
        (true, m) => Ok(-m),
        (false, m) => Ok(m),
    }
}

fn time_from_micros(micros: i64, fsp: u8) -> Value {
    let negative = micros < 0;
    let m = micros.unsigned_abs();
    let total_seconds = m / 1_000_000;
    Value::Time {
        negative,
        hours: u16::try_from(total_seconds / 3600).unwrap_or(u16::MAX),
        minute: ((total_seconds / 60) % 60) as u8,
        second: (total_seconds % 60) as u8,
        micros: (m % 1_000_000) as u32,
        fsp,
    }
}

/// DECIMAL canonical text (`-12.500`) to CQL decimal (unscaled −12500, scale 3).
pub(crate) fn decimal_from_text(s: &str) -> Result<CqlDecimal, String> {
    check_decimal(s)?;
    let (negative, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let scale = i32::try_from(frac.len()).map_err(|_| format!("`{s}` has too many digits"))?;
    // Magnitude in little-endian base 256.
    let mut mag: Vec<u8> = vec![0];
    for d in int.bytes().chain(frac.bytes()) {
        let mut carry = u32::from(d - b'0');
        for byte in mag.iter_mut() {
            let x = u32::from(*byte) * 10 + carry;
            *byte = (x & 0xff) as u8;
            carry = x >> 8;
        }
        while carry > 0 {
            mag.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let zero = mag.iter().all(|b| *b == 0);
    if negative && zero {
        return Err(format!(
            "negative zero `{s}` cannot be stored as a CQL decimal"
        ));
    }
    mag.push(0); // sign byte: the magnitude is non-negative
    mag.reverse();
    if negative {
        // Two's complement: invert and add one.
        for b in mag.iter_mut() {
            *b = !*b;
        }
        for b in mag.iter_mut().rev() {
            let (x, overflow) = b.overflowing_add(1);
            *b = x;
            if !overflow {
                break;
            }
        }
    }
    Ok(CqlDecimal::from_signed_be_bytes_and_exponent(
        minimal(mag),
        scale,
    ))
}

/// CQL decimal back to DECIMAL canonical text.
pub(crate) fn decimal_to_text(d: &CqlDecimal) -> String {
    let (bytes, scale) = d.as_signed_be_bytes_slice_and_exponent();
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut mag: Vec<u8> = bytes.to_vec();
    if negative {
        for b in mag.iter_mut() {
            *b = !*b;
        }
        for b in mag.iter_mut().rev() {
            let (x, overflow) = b.overflowing_add(1);
            *b = x;
            if !overflow {
                break;
            }
        }
    }
    // Repeated division by 10 of the big-endian magnitude.
    let mut digits = Vec::new();
    loop {
        let mut rem = 0u32;
        for b in mag.iter_mut() {
            let cur = rem * 256 + u32::from(*b);
            *b = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
        if mag.iter().all(|b| *b == 0) {
            break;
        }
    }
    let scale = usize::try_from(scale.max(0)).unwrap_or(0);
    while digits.len() <= scale {
        digits.push(b'0');
    }
    digits.reverse();
    let text = String::from_utf8(digits).expect("ASCII digits");
    let (int, frac) = text.split_at(text.len() - scale);
    let sign = if negative { "-" } else { "" };
    if scale == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(ty: TargetType, v: Value) -> Option<CqlValue> {
        let cql =
            cql_value(&ty, &v).unwrap_or_else(|e| panic!("{v:?} must be storable in {ty:?}: {e}"));
        if let Some(c) = &cql {
            let expected = cql_type(&ty);
            let got = match c {
                CqlValue::TinyInt(_) => "tinyint",
                CqlValue::SmallInt(_) => "smallint",
                CqlValue::Int(_) => "int",
                CqlValue::BigInt(_) => "bigint",
                CqlValue::Varint(_) => "varint",
                CqlValue::Float(_) => "float",
                CqlValue::Double(_) => "double",
                CqlValue::Decimal(_) => "decimal",
                CqlValue::Text(_) => "text",
                CqlValue::Blob(_) => "blob",
                other => panic!("unexpected CQL value {other:?}"),
            };
            assert_eq!(
                got, expected,
                "{v:?} in {ty:?} must be bound as the column's CQL type"
            );
        }
        let back = value_from_cql(&ty, cql.clone())
            .unwrap_or_else(|e| panic!("{cql:?} must read back as {ty:?}: {e}"));
        assert_eq!(back, v, "{ty:?} must round-trip through {cql:?}");
        cql
    }

    #[test]
    fn type_mapping_is_the_documented_table() {
        let cases: &[(TargetType, &str)] = &[
            (TargetType::Int { bits: 8 }, "tinyint"),
            (TargetType::Int { bits: 16 }, "smallint"),
            (TargetType::Int { bits: 24 }, "int"),
            (TargetType::Int { bits: 32 }, "int"),
            (TargetType::Int { bits: 64 }, "bigint"),
            (TargetType::UInt { bits: 8 }, "smallint"),
            (TargetType::UInt { bits: 16 }, "int"),
            (TargetType::UInt { bits: 24 }, "int"),
            (TargetType::UInt { bits: 32 }, "bigint"),
            (TargetType::UInt { bits: 64 }, "varint"),
            (TargetType::Float, "float"),
            (TargetType::Double, "double"),
            (
                TargetType::Decimal {
                    precision: 65,
                    scale: 30,
                },
                "decimal",
            ),
            (TargetType::Date, "text"),
            (TargetType::DateTime { fsp: 6 }, "text"),
            (TargetType::Timestamp { fsp: 0 }, "text"),
            (TargetType::Time { fsp: 6 }, "bigint"),
            (TargetType::Year, "smallint"),
            (TargetType::Text { max_chars: None }, "text"),
            (TargetType::Bytes { max_len: None }, "blob"),
            (TargetType::Enum { members: vec![] }, "text"),
            (TargetType::Set { members: vec![] }, "text"),
            (TargetType::Bit { width: 1 }, "bigint"),
            (TargetType::Bit { width: 63 }, "bigint"),
            (TargetType::Bit { width: 64 }, "varint"),
            (TargetType::Json, "text"),
            (TargetType::Geometry, "blob"),
        ];
        for (ty, cql) in cases {
            assert_eq!(cql_type(ty), *cql, "CQL type of {ty:?}");
        }
    }

    #[test]
    fn every_type_round_trips_at_its_edges() {
        for (bits, min, max) in [
            (8u8, i64::from(i8::MIN), i64::from(i8::MAX)),
            (16, i64::from(i16::MIN), i64::from(i16::MAX)),
            (24, -8_388_608, 8_388_607),
            (32, i64::from(i32::MIN), i64::from(i32::MAX)),
            (64, i64::MIN, i64::MAX),
        ] {
            round_trip(TargetType::Int { bits }, Value::Int(min));
            round_trip(TargetType::Int { bits }, Value::Int(max));
        }
        for (bits, max) in [
            (8u8, u64::from(u8::MAX)),
            (16, u64::from(u16::MAX)),
            (24, 16_777_215),
            (32, u64::from(u32::MAX)),
            (64, u64::MAX),
        ] {
            round_trip(TargetType::UInt { bits }, Value::UInt(0));
            round_trip(TargetType::UInt { bits }, Value::UInt(max));
        }
        assert_eq!(
            round_trip(TargetType::UInt { bits: 64 }, Value::UInt(u64::MAX)),
            Some(CqlValue::Varint(CqlVarint::from_signed_bytes_be(vec![
                0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
            ]))),
            "BIGINT UNSIGNED max needs a sign byte"
        );
        round_trip(TargetType::Float, Value::Float(f32::MIN_POSITIVE));
        round_trip(TargetType::Float, Value::Float(-0.1));
        round_trip(TargetType::Double, Value::Double(f64::MAX));
        let dec = TargetType::Decimal {
            precision: 65,
            scale: 30,
        };
        for d in [
            "0",
            "0.000",
            "-12.500",
            "0.005",
            "-0.005",
            "128",
            "-128",
            "255",
            "-256",
            "99999999999999999999999999999999999.999999999999999999999999999999",
            "-99999999999999999999999999999999999.999999999999999999999999999999",
        ] {
            round_trip(dec.clone(), Value::Decimal(d.into()));
        }
        round_trip(
            TargetType::Date,
            Value::Date {
                year: 0,
                month: 0,
                day: 0,
            },
        );
        round_trip(
            TargetType::DateTime { fsp: 6 },
            Value::DateTime(DateTime {
                year: 2024,
                month: 2,
                day: 29,
                hour: 23,
                minute: 59,
                second: 59,
                micros: 999_999,
                fsp: 6,
            }),
        );
        round_trip(
            TargetType::Timestamp { fsp: 0 },
            Value::Timestamp(DateTime {
                year: 0,
                month: 0,
                day: 0,
                hour: 0,
                minute: 0,
                second: 0,
                micros: 0,
                fsp: 0,
            }),
        );
        for (negative, hours, micros) in
            [(true, 838, 999_999), (false, 838, 999_999), (false, 0, 0)]
        {
            round_trip(
                TargetType::Time { fsp: 6 },
                Value::Time {
                    negative,
                    hours,
                    minute: 59,
                    second: 59,
                    micros,
                    fsp: 6,
                },
            );
        }
        round_trip(TargetType::Year, Value::Year(0));
        round_trip(TargetType::Year, Value::Year(2155));
        round_trip(
            TargetType::Text { max_chars: None },
            Value::Text(String::new()),
        );
        round_trip(
            TargetType::Text { max_chars: None },
            Value::Text("é😀".into()),
        );
        round_trip(
            TargetType::Bytes { max_len: None },
            Value::Bytes(vec![0, 0xff]),
        );
        round_trip(
            TargetType::Enum { members: vec![] },
            Value::Enum(String::new()),
        );
        round_trip(TargetType::Set { members: vec![] }, Value::Set(vec![]));
        round_trip(
            TargetType::Set { members: vec![] },
            Value::Set(vec!["a".into(), "b".into()]),
        );
        round_trip(
            TargetType::Bit { width: 1 },
            Value::Bit { width: 1, value: 1 },
        );
        round_trip(
            TargetType::Bit { width: 64 },
            Value::Bit {
                width: 64,
                value: u64::MAX,
            },
        );
        round_trip(TargetType::Json, Value::Json(r#"{"a": [1, 2]}"#.into()));
        round_trip(
            TargetType::Geometry,
            Value::Geometry(vec![0, 0, 0, 0, 1, 1]),
        );
        assert_eq!(
            round_trip(TargetType::Json, Value::Null),
            None,
            "NULL binds as CQL null"
        );
    }

    #[test]
    fn values_the_column_cannot_hold_are_errors_not_coercions() {
        let e = cql_value(&TargetType::Int { bits: 8 }, &Value::Int(128))
            .expect_err("128 does not fit a TINYINT column");
        assert!(e.contains("out of range"), "{e}");
        assert!(cql_value(&TargetType::Int { bits: 64 }, &Value::Text("1".into())).is_err());
        assert!(cql_value(
            &TargetType::DateTime { fsp: 6 },
            &Value::DateTime(DateTime {
                year: 2024,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0,
                micros: 0,
                fsp: 3
            })
        )
        .is_err());
        assert!(cql_value(
            &TargetType::Decimal {
                precision: 5,
                scale: 2
            },
            &Value::Decimal("-0.00".into())
        )
        .is_err());
        assert!(cql_value(
            &TargetType::Time { fsp: 0 },
            &Value::Time {
                negative: true,
                hours: 0,
                minute: 0,
                second: 0,
                micros: 0,
                fsp: 0
            }
        )
        .is_err());
    }

    proptest! {
        #[test]
        fn decimals_round_trip(int in "-?[1-9][0-9]{0,34}|0", frac in "[0-9]{0,30}") {
            let text = if frac.is_empty() { int.clone() } else { format!("{int}.{frac}") };
            prop_assume!(!(text.starts_with('-') && text.trim_start_matches(['-', '0', '.']).is_empty()));
            let d = decimal_from_text(&text).unwrap();
            prop_assert_eq!(decimal_to_text(&d), text);
        }

        #[test]
        fn small_decimals_have_the_right_unscaled_value(v in any::<i64>(), scale in 0u32..10) {
            let s = v.unsigned_abs().to_string();
            let digits = format!("{s:0>width$}", width = scale as usize + 1);
            let (i, f) = digits.split_at(digits.len() - scale as usize);
            let sign = if v < 0 { "-" } else { "" };
            let text = if scale == 0 { format!("{sign}{i}") } else { format!("{sign}{i}.{f}") };
            let d = decimal_from_text(&text).unwrap();
            let (bytes, sc) = d.as_signed_be_bytes_slice_and_exponent();
            prop_assert_eq!(sc, scale as i32);
            prop_assert_eq!(cql_int(&CqlValue::Varint(CqlVarint::from_signed_bytes_be_slice(bytes))), Some(i128::from(v)));
        }
    }
}
