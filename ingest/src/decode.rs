//! Exact decoding of source values into [`Value`], from the binlog and from result sets.
//!
//! `mysql_common` parses the binlog's row images, but a row image alone does not say everything:
//! unless the server logs `binlog_row_metadata=FULL`, it carries no signedness, no character set
//! and no ENUM/SET member names. So every value is decoded against the column's
//! [`SourceType`] from `information_schema`:
//!
//! - integers: an unsigned column whose value arrived sign-extended is reinterpreted at the
//!   column's width (BIGINT UNSIGNED max arrives as -1 and becomes 18446744073709551615);
//! - DECIMAL: the exact decimal text, normalised to the column's scale (as `SELECT` prints it);
//! - TIMESTAMP: the binlog holds epoch seconds and microseconds; rendered as a UTC instant. The
//!   zero timestamp stays zero;
//! - YEAR: the binlog stores `year − 1900`, so the zero year `0000` would decode as 1900 (which a
//!   YEAR column cannot hold): it is mapped back to 0;
//! - text: decoded strictly from the column's character set (latin1 is cp1252, as in MySQL);
//!   a byte sequence that is not valid in the charset is an error, never a replacement character;
//! - BINARY(n): the binlog strips trailing zero bytes; they are restored to the declared length;
//! - ENUM: 1-based member index → name (0, the error value, → empty string);
//!   SET: little-endian bit mask → member names in definition order;
//! - BIT: big-endian bytes → number; JSON: MySQL's binary JSON → text, MariaDB's text as is.
//!
//! Result-set values (backfill, reconcile) arrive in the text protocol and are parsed to the same
//! [`Value`], so the two paths can be compared exactly.

use std::borrow::Cow;

use mysql_common::binlog::value::BinlogValue;
use mysql_common::value::Value as MyValue;
use tidemark_schemas::{text, DateTime, SourceColumn, SourceType, Value};

/// Decode one binlog row-image value of `column`.
pub fn from_binlog(column: &SourceColumn, value: BinlogValue<'_>) -> Result<Value, String> {
    match value {
        BinlogValue::Value(v) => from_mysql(column, v, Origin::Binlog),
        BinlogValue::Jsonb(j) => match column.ty {
            SourceType::Json => {
                let json = serde_json::Value::try_from(j)
                    .map_err(|e| format!("binary JSON could not be rendered: {e}"))?;
                Ok(Value::Json(json.to_string()))
            }
            _ => Err(format!(
                "binary JSON arrived for a column of type {}",
                column.column_type
            )),
        },
        BinlogValue::JsonDiff(_) => Err(
            "a partial JSON update arrived; set binlog_row_value_options='' on the source so full JSON images are logged"
                .into(),
        ),
    }
}

/// Where a `mysql_common` value came from: the binlog encodes some types differently from a
/// text-protocol result set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Binlog,
    ResultSet,
}

fn mask(bits: u8) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

fn utf8(bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|e| format!("not valid UTF-8: {e}"))
}

fn parse<T: std::str::FromStr>(bytes: &[u8], what: &str) -> Result<T, String> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| format!("`{}` is not a valid {what}", String::from_utf8_lossy(bytes)))
}

/// Decode a value of `column` as `mysql_common` parsed it.
pub fn from_mysql(column: &SourceColumn, value: MyValue, origin: Origin) -> Result<Value, String> {
    use MyValue as M;
    if let M::NULL = value {
        return Ok(Value::Null);
    }
    let wrong = |v: &MyValue| {
        format!(
            "unexpected value {v:?} for a column of type {}",
            column.column_type
        )
    };
    Ok(match (&column.ty, value) {
        (SourceType::Integer { bits, unsigned }, v) => {
            let raw: i128 = match v {
                M::Int(i) => i128::from(i),
                M::UInt(u) => i128::from(u),
                M::Bytes(b) => parse::<i128>(&b, "integer")?,
                other => return Err(wrong(&other)),
            };
            if *unsigned {
                Value::UInt((raw as u64) & mask(*bits))
            } else {
                let shift = 64 - u32::from(*bits);
                Value::Int(((raw as i64) << shift) >> shift)
            }
        }
        (SourceType::Decimal { scale, .. }, M::Bytes(b)) => {
            Value::Decimal(canonical_decimal(utf8(b)?, *scale)?)
        }
        (SourceType::Float, M::Float(f)) => Value::Float(f),
        (SourceType::Float, M::Double(f)) => Value::Float(f as f32),
        (SourceType::Float, M::Bytes(b)) => Value::Float(parse(&b, "FLOAT")?),
        (SourceType::Double, M::Double(f)) => Value::Double(f),
        (SourceType::Double, M::Float(f)) => Value::Double(f64::from(f)),
        (SourceType::Double, M::Bytes(b)) => Value::Double(parse(&b, "DOUBLE")?),
        (SourceType::Bit { width }, M::Bytes(b)) => {
            let value = b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x));
            Value::Bit {
                width: *width,
                value,
            }
        }
        (SourceType::Bit { width }, M::Int(i)) => Value::Bit {
            width: *width,
            value: i as u64,
        },
        (SourceType::Bit { width }, M::UInt(u)) => Value::Bit {
            width: *width,
            value: u,
        },
        (SourceType::Date, M::Date(year, month, day, ..)) => Value::Date { year, month, day },
        // Temporal values sent as text (the text protocol, a key read back from a report) are
        // in their canonical form, which is the one MySQL prints: read by the one strict parse.
        (SourceType::Date, M::Bytes(b)) => text::parse_date(&utf8(b)?)?,
        (SourceType::DateTime { fsp }, M::Bytes(b)) => {
            Value::DateTime(DateTime::parse(&utf8(b)?, *fsp)?)
        }
        (SourceType::DateTime { fsp }, v) => Value::DateTime(server_datetime(v, *fsp, &wrong)?),
        (SourceType::Timestamp { fsp }, v) => Value::Timestamp(match (origin, v) {
            (Origin::Binlog, M::Bytes(b)) => epoch_to_utc(&utf8(b)?, *fsp)?,
            (Origin::Binlog, M::Int(secs)) => epoch_to_utc(&secs.to_string(), *fsp)?,
            (_, M::Bytes(b)) => DateTime::parse(&utf8(b)?, *fsp)?,
            (_, v) => server_datetime(v, *fsp, &wrong)?,
        }),
        (SourceType::Time { fsp }, M::Time(negative, days, h, minute, second, micros)) => {
            Value::Time {
                negative,
                hours: (days * 24 + u32::from(h)) as u16,
                minute,
                second,
                micros,
                fsp: *fsp,
            }
        }
        (SourceType::Time { fsp }, M::Bytes(b)) => text::parse_time(&utf8(b)?, *fsp)?,
        (SourceType::Year, M::Bytes(b)) => {
            let y: u16 = parse(&b, "YEAR")?;
            // The binlog stores year − 1900 in one byte; 0 is the zero year.
            Value::Year(if origin == Origin::Binlog && y == 1900 {
                0
            } else {
                y
            })
        }
        (SourceType::Year, M::Int(y)) => Value::Year(y as u16),
        (SourceType::Year, M::UInt(y)) => Value::Year(y as u16),
        // The binlog holds the column's own bytes; result sets arrive converted to the
        // connection's character set, which tidemark always sets to utf8mb4.
        (SourceType::Text { charset, .. }, M::Bytes(b)) if origin == Origin::Binlog => {
            Value::Text(decode_text(charset, b)?)
        }
        (SourceType::Text { .. }, M::Bytes(b)) => Value::Text(utf8(b)?),
        (SourceType::Binary { max_len, fixed }, M::Bytes(mut b)) => {
            if *fixed {
                if let Some(len) = max_len {
                    b.resize((*len as usize).max(b.len()), 0);
                }
            }
            Value::Bytes(b)
        }
        (SourceType::Enum { members }, M::Int(i)) => Value::Enum(enum_name(members, i as u64)?),
        (SourceType::Enum { members }, M::UInt(i)) => Value::Enum(enum_name(members, i)?),
        (SourceType::Enum { .. }, M::Bytes(b)) => Value::Enum(utf8(b)?),
        (SourceType::Set { members }, M::Bytes(b)) if origin == Origin::Binlog => {
            let bits = b
                .iter()
                .rev()
                .fold(0u64, |acc, x| (acc << 8) | u64::from(*x));
            let present = members
                .iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .map(|(_, m)| m.clone())
                .collect();
            Value::Set(present)
        }
        (SourceType::Set { .. }, M::Bytes(b)) => {
            let s = utf8(b)?;
            Value::Set(if s.is_empty() {
                Vec::new()
            } else {
                s.split(',').map(str::to_string).collect()
            })
        }
        (SourceType::Json, M::Bytes(b)) => Value::Json(utf8(b)?),
        (SourceType::Geometry, M::Bytes(b)) => Value::Geometry(b),
        (_, other) => return Err(wrong(&other)),
    })
}

/// A date-time the server sent in its binary form, in a column of precision `fsp`.
fn server_datetime(
    v: MyValue,
    fsp: u8,
    wrong: &dyn Fn(&MyValue) -> String,
) -> Result<DateTime, String> {
    match v {
        MyValue::Date(year, month, day, hour, minute, second, micros) => Ok(DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            micros,
            fsp,
        }),
        other => Err(wrong(&other)),
    }
}

/// `secs[.micros]` since the epoch → UTC civil time; `0` is the zero timestamp.
fn epoch_to_utc(s: &str, fsp: u8) -> Result<DateTime, String> {
    let (secs, micros) = s.split_once('.').unwrap_or((s, "0"));
    let secs: i64 = secs.parse().map_err(|_| format!("bad timestamp `{s}`"))?;
    let micros: u32 = format!("{micros:0<6}")
        .parse()
        .map_err(|_| format!("bad timestamp `{s}`"))?;
    if secs == 0 && micros == 0 {
        return Ok(DateTime {
            fsp,
            ..DateTime::ZERO
        });
    }
    let t = time::OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|e| format!("timestamp {s} out of range: {e}"))?;
    Ok(DateTime {
        year: t.year() as u16,
        month: t.month() as u8,
        day: t.day(),
        hour: t.hour(),
        minute: t.minute(),
        second: t.second(),
        micros,
        fsp,
    })
}

fn enum_name(members: &[String], index: u64) -> Result<String, String> {
    if index == 0 {
        return Ok(String::new());
    }
    members
        .get(index as usize - 1)
        .cloned()
        .ok_or_else(|| format!("ENUM index {index} beyond the {} members", members.len()))
}

/// Parse a value of `column` from its canonical text (as [`Value`]'s `Display` writes it), e.g.
/// a key read back from a keys file or a drift report.
pub fn from_canonical_text(column: &SourceColumn, text: &str) -> Result<Value, String> {
    let bytes = match &column.ty {
        SourceType::Binary { .. } | SourceType::Geometry => {
            let hex = text
                .strip_prefix("0x")
                .ok_or_else(|| format!("`{text}` is not 0x-prefixed hex"))?;
            return hex::decode(hex)
                .map(Value::Bytes)
                .map_err(|e| e.to_string())
                .map(|v| match (v, &column.ty) {
                    (Value::Bytes(b), SourceType::Geometry) => Value::Geometry(b),
                    (v, _) => v,
                });
        }
        SourceType::Bit { width } => {
            let value = text
                .parse()
                .map_err(|_| format!("`{text}` is not a BIT value"))?;
            return Ok(Value::Bit {
                width: *width,
                value,
            });
        }
        _ => text.as_bytes().to_vec(),
    };
    from_mysql(column, MyValue::Bytes(bytes), Origin::ResultSet)
}

/// [`normalize_decimal`] of an owned text, which is handed back as it is when it already is the
/// canonical form (as the server sends a DECIMAL: it is checked, not trusted).
pub fn canonical_decimal(text: String, scale: u8) -> Result<String, String> {
    if tidemark_schemas::is_canonical_decimal(&text, scale) {
        Ok(text)
    } else {
        normalize_decimal(&text, scale)
    }
}

/// Normalise exact decimal text to `scale` fraction digits, as MySQL prints DECIMAL(p, scale).
pub fn normalize_decimal(text: &str, scale: u8) -> Result<String, String> {
    let bad = || format!("`{text}` is not a decimal");
    let (negative, digits) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let scale = usize::from(scale);
    if frac.len() > scale && frac[scale..].bytes().any(|b| b != b'0') {
        return Err(format!("`{text}` has more than {scale} fraction digits"));
    }
    let frac: String = format!("{frac:0<scale$}").chars().take(scale).collect();
    let zero = int == "0" && frac.bytes().all(|b| b == b'0');
    let sign = if negative && !zero { "-" } else { "" };
    Ok(if scale == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    })
}

/// Decode `bytes` strictly from the MySQL character set `charset`.
pub fn decode_text(charset: &str, bytes: Vec<u8>) -> Result<String, String> {
    let cs = charset.to_ascii_lowercase();
    let label = match cs.as_str() {
        "utf8mb4" | "utf8mb3" | "utf8" | "ascii" => return utf8(bytes),
        "latin1" => "windows-1252",
        "ucs2" | "utf16" => "utf-16be",
        "utf16le" => "utf-16le",
        "utf32" => {
            if !bytes.len().is_multiple_of(4) {
                return Err("utf32 text with a partial character".into());
            }
            return bytes
                .chunks(4)
                .map(|c| {
                    char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .ok_or_else(|| "invalid utf32 character".to_string())
                })
                .collect();
        }
        "latin2" => "iso-8859-2",
        "latin5" => "iso-8859-9",
        "latin7" => "iso-8859-13",
        "greek" => "iso-8859-7",
        "hebrew" => "iso-8859-8",
        "cp1250" => "windows-1250",
        "cp1251" => "windows-1251",
        "cp1256" => "windows-1256",
        "cp1257" => "windows-1257",
        "koi8r" => "koi8-r",
        "koi8u" => "koi8-u",
        "sjis" | "cp932" => "shift_jis",
        "ujis" | "eucjpms" => "euc-jp",
        "euckr" => "euc-kr",
        "gbk" | "gb2312" => "gbk",
        "gb18030" => "gb18030",
        "big5" => "big5",
        other => return Err(format!("character set {other} is not supported")),
    };
    let encoding = encoding_rs::Encoding::for_label(label.as_bytes())
        .ok_or_else(|| format!("character set {charset} is not supported"))?;
    encoding
        .decode_without_bom_handling_and_without_replacement(&bytes)
        .map(Cow::into_owned)
        .ok_or_else(|| format!("bytes are not valid {charset}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(ty: SourceType) -> SourceColumn {
        SourceColumn {
            name: "c".into(),
            ty,
            nullable: true,
            column_type: "t".into(),
        }
    }

    #[test]
    fn unsigned_values_are_reinterpreted_at_their_width() {
        let c = col(SourceType::Integer {
            bits: 64,
            unsigned: true,
        });
        assert_eq!(
            from_mysql(&c, MyValue::Int(-1), Origin::Binlog).unwrap(),
            Value::UInt(u64::MAX)
        );
        let c = col(SourceType::Integer {
            bits: 24,
            unsigned: true,
        });
        assert_eq!(
            from_mysql(&c, MyValue::Int(-1), Origin::Binlog).unwrap(),
            Value::UInt(16_777_215)
        );
        let c = col(SourceType::Integer {
            bits: 8,
            unsigned: false,
        });
        assert_eq!(
            from_mysql(&c, MyValue::Int(-128), Origin::Binlog).unwrap(),
            Value::Int(-128)
        );
    }

    #[test]
    fn decimals_are_normalised_exactly() {
        for (text, scale) in [
            ("1.5", 2),
            ("-000.000", 3),
            ("007", 0),
            ("-0", 0),
            ("-0.00", 2),
            ("0.00", 2),
            ("-12.30", 2),
            ("12", 0),
            ("12.", 0),
            (".5", 1),
            ("+1.0", 1),
            ("1.50", 2),
            ("01.50", 2),
            ("1.500", 2),
            ("1e5", 0),
            ("", 0),
            ("-", 0),
        ] {
            assert_eq!(
                canonical_decimal(text.to_string(), scale),
                normalize_decimal(text, scale),
                "{text} at scale {scale}"
            );
        }
        assert_eq!(normalize_decimal("1.5", 2).unwrap(), "1.50");
        assert_eq!(normalize_decimal("-000.000", 3).unwrap(), "0.000");
        assert_eq!(normalize_decimal("007", 0).unwrap(), "7");
        let big = format!("{}.{}", "9".repeat(35), "9".repeat(30));
        assert_eq!(normalize_decimal(&big, 30).unwrap(), big);
        assert!(normalize_decimal("1.234", 2).is_err());
        assert!(normalize_decimal("1e5", 0).is_err());
    }

    #[test]
    fn text_is_decoded_strictly() {
        assert_eq!(decode_text("latin1", vec![0xe9, 0x80]).unwrap(), "é€");
        assert!(decode_text("utf8mb4", vec![0xff]).is_err());
        assert_eq!(decode_text("utf16", vec![0, 0x41]).unwrap(), "A");
        assert!(decode_text("klingon", vec![]).is_err());
    }

    #[test]
    fn time_and_datetime_text_parse() {
        let text = |ty: SourceType, s: &str| {
            from_mysql(&col(ty), MyValue::Bytes(s.into()), Origin::ResultSet)
        };
        assert_eq!(
            text(SourceType::Time { fsp: 1 }, "-838:59:59.5"),
            Ok(Value::Time {
                negative: true,
                hours: 838,
                minute: 59,
                second: 59,
                micros: 500_000,
                fsp: 1
            })
        );
        assert_eq!(
            text(SourceType::DateTime { fsp: 0 }, "0000-00-00 00:00:00"),
            Ok(Value::DateTime(DateTime::ZERO))
        );
        assert_eq!(
            text(SourceType::Date, "0000-00-00"),
            Ok(Value::Date {
                year: 0,
                month: 0,
                day: 0
            })
        );
        // Text that is not the canonical form of the column's type is an error naming it.
        let wrong = text(SourceType::DateTime { fsp: 3 }, "2024-01-02 03:04:05").unwrap_err();
        assert!(wrong.contains("2024-01-02 03:04:05"), "{wrong}");
        assert_eq!(
            epoch_to_utc("1.000001", 6).unwrap(),
            DateTime {
                year: 1970,
                month: 1,
                day: 1,
                second: 1,
                micros: 1,
                fsp: 6,
                ..DateTime::ZERO
            }
        );
        assert_eq!(epoch_to_utc("0", 0).unwrap(), DateTime::ZERO);
    }

    #[test]
    fn set_bits_map_to_members() {
        let c = col(SourceType::Set {
            members: vec!["a".into(), "b".into(), "c".into()],
        });
        assert_eq!(
            from_mysql(&c, MyValue::Bytes(vec![0b101]), Origin::Binlog).unwrap(),
            Value::Set(vec!["a".into(), "c".into()])
        );
        assert_eq!(
            from_mysql(&c, MyValue::Bytes(b"a,c".to_vec()), Origin::ResultSet).unwrap(),
            Value::Set(vec!["a".into(), "c".into()])
        );
    }
}
