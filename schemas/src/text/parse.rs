//! Reading the canonical text back: the value of a text in a column of a given type, the
//! inverse of [`Value`]'s `Display`.
//!
//! Both sinks store some values as their canonical text (SQLite: BIGINT UNSIGNED, DECIMAL,
//! BIT(64), temporal values; ScyllaDB: DATE, DATETIME and TIMESTAMP). Reading them back needs the
//! column's [`TargetType`]: the text `2024-01-02 03:04:05.120` is a DATETIME(3) with 120,000
//! microseconds, and the fractional digits it shows are exactly `fsp`.
//!
//! Every parser here is strict: it accepts only what `Display` produces, so a value edited out of
//! band into another spelling is an error that names the text, not a silently different value.

use crate::{DateTime, TargetType, Value};

/// The value of canonical text `s` in a column of type `ty`.
pub fn value_from_text(ty: &TargetType, s: &str) -> Result<Value, String> {
    match ty {
        TargetType::Int { .. } => s
            .parse::<i64>()
            .map(Value::Int)
            .map_err(|_| format!("`{s}` is not a signed integer")),
        TargetType::UInt { .. } => s
            .parse::<u64>()
            .map(Value::UInt)
            .map_err(|_| format!("`{s}` is not an unsigned integer")),
        TargetType::Float => s
            .parse::<f32>()
            .map(Value::Float)
            .map_err(|_| format!("`{s}` is not a FLOAT")),
        TargetType::Double => s
            .parse::<f64>()
            .map(Value::Double)
            .map_err(|_| format!("`{s}` is not a DOUBLE")),
        TargetType::Decimal { .. } => {
            check_decimal(s)?;
            Ok(Value::Decimal(s.to_string()))
        }
        TargetType::Date => parse_date(s),
        TargetType::DateTime { fsp } => DateTime::parse(s, *fsp).map(Value::DateTime),
        TargetType::Timestamp { fsp } => DateTime::parse(s, *fsp).map(Value::Timestamp),
        TargetType::Time { fsp } => parse_time(s, *fsp),
        TargetType::Year => s
            .parse::<u16>()
            .map(Value::Year)
            .map_err(|_| format!("`{s}` is not a YEAR")),
        TargetType::Text { .. } => Ok(Value::Text(s.to_string())),
        TargetType::Enum { .. } => Ok(Value::Enum(s.to_string())),
        TargetType::Json => Ok(Value::Json(s.to_string())),
        TargetType::Set { .. } => Ok(parse_set(s)),
        TargetType::Bit { width } => s
            .parse::<u64>()
            .map(|value| Value::Bit {
                width: *width,
                value,
            })
            .map_err(|_| format!("`{s}` is not a BIT value")),
        TargetType::Bytes { .. } => parse_hex(s).map(Value::Bytes),
        TargetType::Geometry => parse_hex(s).map(Value::Geometry),
    }
}

/// A SET's canonical text is its members joined by `,` (MySQL forbids commas in SET members);
/// the empty text is the empty set.
fn parse_set(s: &str) -> Value {
    if s.is_empty() {
        Value::Set(Vec::new())
    } else {
        Value::Set(s.split(',').map(str::to_string).collect())
    }
}

/// `[-]digits[.digits]`, the exact text MySQL prints for a DECIMAL.
pub fn check_decimal(s: &str) -> Result<(), String> {
    let body = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if digits(int) && frac.is_none_or(digits) {
        Ok(())
    } else {
        Err(format!("`{s}` is not a DECIMAL in canonical form"))
    }
}

fn num<T: std::str::FromStr>(s: &str, width: usize, whole: &str) -> Result<T, String> {
    if s.len() != width || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{whole}` is not in canonical form"));
    }
    s.parse()
        .map_err(|_| format!("`{whole}` is not in canonical form"))
}

/// The DATE of canonical text `s` (`YYYY-MM-DD`).
pub fn parse_date(s: &str) -> Result<Value, String> {
    let (year, month, day) = match fixed_ymd(s.as_bytes()) {
        Some(ymd) => ymd,
        None => parse_ymd(s, s)?,
    };
    Ok(Value::Date { year, month, day })
}

/// The number written by `digits`, when every byte is an ASCII digit (at most 9 of them).
fn fixed_digits(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
    })
}

/// `YYYY-MM-DD` read at fixed positions: the only spelling [`parse_ymd`] accepts, without
/// splitting. `None` for anything else (the general parser then says what is wrong).
fn fixed_ymd(b: &[u8]) -> Option<(u16, u8, u8)> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    Some((
        u16::try_from(fixed_digits(&b[0..4])?).ok()?,
        u8::try_from(fixed_digits(&b[5..7])?).ok()?,
        u8::try_from(fixed_digits(&b[8..10])?).ok()?,
    ))
}

/// `YYYY-MM-DD hh:mm:ss[.f…]` with exactly `fsp` fraction digits, read at fixed positions: the
/// only spelling the general path of [`DateTime::parse`] accepts (the two are property-tested
/// to agree). `None` for anything else.
fn fixed_datetime(s: &str, declared_fsp: u8) -> Option<DateTime> {
    let b = s.as_bytes();
    let fsp = usize::from(declared_fsp.min(6));
    let len = if fsp == 0 { 19 } else { 20 + fsp };
    if b.len() != len || b[10] != b' ' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let micros = if fsp == 0 {
        0
    } else {
        if b[19] != b'.' {
            return None;
        }
        fixed_digits(&b[20..])? * 10u32.pow(6 - fsp as u32)
    };
    let (year, month, day) = fixed_ymd(&b[..10])?;
    Some(DateTime {
        year,
        month,
        day,
        hour: u8::try_from(fixed_digits(&b[11..13])?).ok()?,
        minute: u8::try_from(fixed_digits(&b[14..16])?).ok()?,
        second: u8::try_from(fixed_digits(&b[17..19])?).ok()?,
        micros,
        fsp: declared_fsp,
    })
}

fn parse_ymd(s: &str, whole: &str) -> Result<(u16, u8, u8), String> {
    let mut parts = s.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("`{whole}` is not a date of the form YYYY-MM-DD"));
    };
    Ok((num(y, 4, whole)?, num(m, 2, whole)?, num(d, 2, whole)?))
}

/// Split `ss[.ffffff]` into seconds and microseconds, requiring exactly `fsp` fraction digits.
fn parse_seconds(s: &str, fsp: u8, whole: &str) -> Result<(u8, u32), String> {
    let fsp = usize::from(fsp.min(6));
    let (sec, frac) = match s.split_once('.') {
        Some((sec, frac)) if fsp > 0 && frac.len() == fsp => (sec, frac),
        None if fsp == 0 => (s, ""),
        _ => {
            return Err(format!(
                "`{whole}` does not have exactly {fsp} fractional-second digits"
            ))
        }
    };
    let micros = if frac.is_empty() {
        0
    } else {
        num::<u32>(frac, fsp, whole)? * 10u32.pow(6 - fsp as u32)
    };
    Ok((num(sec, 2, whole)?, micros))
}

impl DateTime {
    /// The DATETIME or TIMESTAMP of canonical text `s` in a column of precision `fsp`:
    /// `YYYY-MM-DD hh:mm:ss` and exactly `fsp` fraction digits, nothing else.
    pub fn parse(s: &str, fsp: u8) -> Result<DateTime, String> {
        match fixed_datetime(s, fsp) {
            Some(parts) => Ok(parts),
            None => general_datetime(s, fsp),
        }
    }
}

/// [`DateTime::parse`] by splitting at the separators, with an error naming the text.
fn general_datetime(s: &str, fsp: u8) -> Result<DateTime, String> {
    let Some((date, time)) = s.split_once(' ') else {
        return Err(format!("`{s}` is not of the form YYYY-MM-DD hh:mm:ss"));
    };
    let (year, month, day) = parse_ymd(date, s)?;
    let mut parts = time.splitn(3, ':');
    let (Some(h), Some(mi), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("`{s}` is not of the form YYYY-MM-DD hh:mm:ss"));
    };
    let (second, micros) = parse_seconds(rest, fsp, s)?;
    Ok(DateTime {
        year,
        month,
        day,
        hour: num(h, 2, s)?,
        minute: num(mi, 2, s)?,
        second,
        micros,
        fsp,
    })
}

/// The TIME of canonical text `s` in a column of precision `fsp`: `[-]hh:mm:ss` (two or three
/// hour digits) and exactly `fsp` fraction digits.
pub fn parse_time(s: &str, fsp: u8) -> Result<Value, String> {
    let (negative, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let mut parts = body.splitn(3, ':');
    let (Some(h), Some(mi), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("`{s}` is not a TIME of the form [-]hh:mm:ss"));
    };
    if h.len() < 2 || h.len() > 3 {
        return Err(format!("`{s}` is not a TIME in canonical form"));
    }
    let hours = num(h, h.len(), s)?;
    let (second, micros) = parse_seconds(rest, fsp, s)?;
    Ok(Value::Time {
        negative,
        hours,
        minute: num(mi, 2, s)?,
        second,
        micros,
        fsp,
    })
}

/// `0x…` lowercase hex, the canonical text of binary values.
fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let Some(h) = s.strip_prefix("0x") else {
        return Err(format!("`{s}` is not binary data in 0x… hex"));
    };
    if h.len() % 2 != 0 {
        return Err(format!("`{s}` has an odd number of hex digits"));
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).map_err(|_| format!("`{s}` is not hex")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Canonical temporal texts, and near misses of them (a digit, a separator or the length
    /// changed).
    fn temporal_texts() -> impl Strategy<Value = String> {
        let canonical = (
            0u32..10000,
            0u32..100,
            0u32..100,
            0u32..100,
            0u32..100,
            0u32..100,
        )
            .prop_flat_map(|(y, mo, d, h, mi, s)| {
                (0usize..=6, 0u32..1_000_000).prop_map(move |(fsp, f)| {
                    let mut t = format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}");
                    if fsp > 0 {
                        t.push_str(&format!(".{:06}", f)[..=fsp]);
                    }
                    t
                })
            });
        (canonical, any::<u8>(), 0usize..30, 0u8..4).prop_map(|(t, byte, at, how)| {
            let mut b = t.into_bytes();
            let at = at % (b.len() + 1);
            match how {
                0 => {}
                1 if at < b.len() => b[at] = byte % 128,
                2 => b.insert(at, byte % 128),
                _ if at < b.len() => {
                    b.remove(at);
                }
                _ => {}
            }
            String::from_utf8(b).expect("ASCII")
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// The fixed-position readers accept exactly what the splitting parsers accept, with the
        /// same result.
        #[test]
        fn fixed_position_parsing_agrees_with_the_general_parsers(
            text in temporal_texts(),
            fsp in 0u8..=6,
        ) {
            let general = general_datetime(&text, fsp).ok();
            prop_assert_eq!(fixed_datetime(&text, fsp), general, "datetime `{}` fsp {}", text, fsp);
            let date = &text[..text.len().min(10)];
            prop_assert_eq!(fixed_ymd(date.as_bytes()), parse_ymd(date, date).ok(), "date `{}`", date);
        }
    }

    fn round_trip(ty: TargetType, v: Value) {
        let text = v.to_string();
        let back = value_from_text(&ty, &text)
            .unwrap_or_else(|e| panic!("canonical text `{text}` of {v:?} must parse: {e}"));
        assert_eq!(
            back, v,
            "canonical text `{text}` must parse back to the same value"
        );
    }

    #[test]
    fn canonical_text_round_trips_for_every_type() {
        round_trip(TargetType::Int { bits: 64 }, Value::Int(i64::MIN));
        round_trip(TargetType::UInt { bits: 64 }, Value::UInt(u64::MAX));
        round_trip(TargetType::Float, Value::Float(0.1));
        round_trip(TargetType::Double, Value::Double(-1.5e300));
        round_trip(
            TargetType::Decimal {
                precision: 10,
                scale: 3,
            },
            Value::Decimal("-12.500".into()),
        );
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
                year: 9999,
                month: 12,
                day: 31,
                hour: 23,
                minute: 59,
                second: 59,
                micros: 999_999,
                fsp: 6,
            }),
        );
        round_trip(
            TargetType::Timestamp { fsp: 3 },
            Value::Timestamp(DateTime {
                year: 2038,
                month: 1,
                day: 19,
                hour: 3,
                minute: 14,
                second: 7,
                micros: 120_000,
                fsp: 3,
            }),
        );
        round_trip(
            TargetType::Time { fsp: 1 },
            Value::Time {
                negative: true,
                hours: 838,
                minute: 59,
                second: 59,
                micros: 500_000,
                fsp: 1,
            },
        );
        round_trip(
            TargetType::Time { fsp: 0 },
            Value::Time {
                negative: false,
                hours: 0,
                minute: 0,
                second: 1,
                micros: 0,
                fsp: 0,
            },
        );
        round_trip(TargetType::Year, Value::Year(0));
        round_trip(
            TargetType::Set { members: vec![] },
            Value::Set(vec!["a".into(), "b c".into()]),
        );
        round_trip(TargetType::Set { members: vec![] }, Value::Set(vec![]));
        round_trip(
            TargetType::Bit { width: 64 },
            Value::Bit {
                width: 64,
                value: u64::MAX,
            },
        );
        round_trip(
            TargetType::Bytes { max_len: None },
            Value::Bytes(vec![0, 255, 16]),
        );
    }

    #[test]
    fn non_canonical_text_is_an_error_naming_it() {
        let e = value_from_text(&TargetType::DateTime { fsp: 3 }, "2024-01-02 03:04:05")
            .expect_err("a DATETIME(3) without fraction digits must be rejected");
        assert!(
            e.contains("2024-01-02 03:04:05"),
            "message names the text: {e}"
        );
        assert!(value_from_text(&TargetType::Date, "2024-1-2").is_err());
        assert!(check_decimal("1e5").is_err());
        assert!(check_decimal("-.5").is_err());
        assert!(check_decimal("-0.5").is_ok());
    }
}
