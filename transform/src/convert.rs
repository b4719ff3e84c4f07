//! Exact conversion of a value into a target type, or a classified failure.
//!
//! [`convertible`] decides, from the types alone, whether a conversion exists at all (checked
//! when a plan is made); [`convert`] decides for one value whether it fits, exactly. Nothing is
//! rounded, truncated, clamped or wrapped: a value that does not fit is a [`Fail`] that the plan
//! turns into a `schema_rejection`.
//!
//! The target value's variant is fixed by the target type (`Int{..}` → `Value::Int`, `Text{..}` →
//! `Value::Text`, `Decimal{p,s}` → `Value::Decimal` with exactly `s` fraction digits, …), so the
//! sink sees well-typed rows whatever the source held.

use tidemark_schemas::{text, DateTime, TargetType, Value};

use crate::config::ZeroDates;
use crate::decimal::{parse_canonical_int, Dec};
use crate::error::RejectionKind;
use crate::syntax::render_type;

/// Why one value did not convert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fail {
    pub kind: RejectionKind,
    pub reason: String,
    /// The offending value's text when it is not the column's own value (an intermediate value
    /// inside a computed column's expression).
    pub value: Option<String>,
}

impl Fail {
    pub(crate) fn new(kind: RejectionKind, reason: impl Into<String>) -> Fail {
        Fail {
            kind,
            reason: reason.into(),
            value: None,
        }
    }

    /// Name the intermediate value that failed (first one wins).
    pub(crate) fn with_value(mut self, v: &Value) -> Fail {
        if self.value.is_none() && !v.is_null() {
            self.value = Some(v.to_string());
        }
        self
    }
}

pub(crate) type Conv<T> = Result<T, Fail>;

/// Whether values of type `from` can be converted to `to` at all (value by value, exactly).
pub(crate) fn convertible(from: &TargetType, to: &TargetType) -> Result<(), String> {
    use TargetType as T;
    let ok = match (from, to) {
        (
            T::Int { .. }
            | T::UInt { .. }
            | T::Year
            | T::Bit { .. }
            | T::Decimal { .. }
            | T::Float
            | T::Double
            | T::Text { .. },
            T::Int { .. } | T::UInt { .. },
        ) => true,
        (
            T::Int { .. }
            | T::UInt { .. }
            | T::Year
            | T::Bit { .. }
            | T::Float
            | T::Double
            | T::Text { .. },
            T::Float | T::Double,
        ) => true,
        (
            T::Int { .. }
            | T::UInt { .. }
            | T::Year
            | T::Bit { .. }
            | T::Decimal { .. }
            | T::Text { .. },
            T::Decimal { .. },
        ) => true,
        (
            T::Date | T::DateTime { .. } | T::Timestamp { .. } | T::Text { .. },
            T::Date | T::DateTime { .. } | T::Timestamp { .. },
        ) => true,
        (T::Time { .. } | T::Text { .. }, T::Time { .. }) => true,
        (T::Year | T::Int { .. } | T::UInt { .. } | T::Text { .. }, T::Year) => true,
        (T::Geometry, T::Text { .. }) => false,
        (_, T::Text { .. }) => true,
        (
            T::Bytes { .. } | T::Geometry | T::Text { .. } | T::Enum { .. } | T::Json,
            T::Bytes { .. },
        ) => true,
        (T::Enum { .. } | T::Text { .. }, T::Enum { .. }) => true,
        (T::Set { .. } | T::Text { .. }, T::Set { .. }) => true,
        (T::Bit { .. } | T::Int { .. } | T::UInt { .. }, T::Bit { .. }) => true,
        (T::Json | T::Text { .. }, T::Json) => true,
        (T::Geometry, T::Geometry) => true,
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let hint = match (from, to) {
        (T::Float | T::Double, T::Decimal { .. }) => {
            "a binary float has no exact decimal value of this scale; cast it to text first if its shortest decimal text is what you want"
        }
        (T::Decimal { .. }, T::Float | T::Double) => {
            "most decimals have no exact binary float; keep the decimal, or cast it to text"
        }
        _ => "there is no exact conversion between these types",
    };
    Err(format!(
        "cannot convert {} to {}: {hint}",
        render_type(from),
        render_type(to)
    ))
}

/// Whether the conversion maps different values to different values, as a key column needs
/// (so two source rows never share a target key).
pub(crate) fn injective(from: &TargetType, to: &TargetType) -> bool {
    use TargetType as T;
    !matches!(
        (from, to),
        (T::Text { .. }, T::Decimal { .. } | T::Set { .. })
            | (
                T::Float | T::Double,
                T::Int { .. } | T::UInt { .. } | T::Decimal { .. } | T::Year | T::Bit { .. }
            )
    )
}

fn int_range(bits: u8) -> (i128, i128) {
    let half = 1i128 << (bits - 1);
    (-half, half - 1)
}

fn uint_max(bits: u8) -> i128 {
    (1i128 << bits) - 1
}

fn integer_of(v: &Value) -> Option<i128> {
    match v {
        Value::Int(i) => Some(i128::from(*i)),
        Value::UInt(u) => Some(i128::from(*u)),
        Value::Year(y) => Some(i128::from(*y)),
        Value::Bit { value, .. } => Some(i128::from(*value)),
        _ => None,
    }
}

fn float_to_integer(x: f64) -> Conv<i128> {
    if !x.is_finite() {
        return Err(Fail::new(RejectionKind::OutOfRange, "not a finite number"));
    }
    if x.fract() != 0.0 {
        return Err(Fail::new(
            RejectionKind::Inexact,
            "has a fractional part that an integer cannot hold",
        ));
    }
    if x.abs() >= 1.0e38 {
        return Err(Fail::new(
            RejectionKind::OutOfRange,
            "is beyond every integer type",
        ));
    }
    Ok(x as i128)
}

/// The value as an exact integer, for integer-like targets.
fn to_integer(v: &Value) -> Conv<i128> {
    if let Some(i) = integer_of(v) {
        return Ok(i);
    }
    match v {
        Value::Float(f) => float_to_integer(f64::from(*f)),
        Value::Double(d) => float_to_integer(*d),
        Value::Decimal(s) => {
            let d = Dec::parse(s).ok_or_else(|| bad_text("a decimal number"))?;
            if !d.is_integer() {
                return Err(Fail::new(
                    RejectionKind::Inexact,
                    "has a fractional part that an integer cannot hold",
                ));
            }
            d.to_i128().ok_or_else(|| {
                Fail::new(RejectionKind::OutOfRange, "is beyond every integer type")
            })
        }
        Value::Text(s) => parse_canonical_int(s).ok_or_else(|| {
            bad_text("an integer in canonical form (digits, an optional leading '-', no leading zeros, no spaces)",
            )
        }),
        other => Err(cannot(other)),
    }
}

fn bad_text(what: &str) -> Fail {
    Fail::new(RejectionKind::BadCast, format!("is not {what}"))
}

fn cannot(v: &Value) -> Fail {
    Fail::new(
        RejectionKind::BadCast,
        format!("a {} value has no exact conversion to this type", v.kind()),
    )
}

/// Exactness of text → float: the text must denote exactly the decimal value of the float's
/// shortest round-trip text (`0.1` → 0.1 passes, `0.10000000000000001` does not).
fn float_from_text(s: &str, parsed: Option<f64>, shortest: impl Fn(f64) -> String) -> Conv<f64> {
    let want = Dec::parse(s).ok_or_else(|| bad_text("a number in plain decimal notation"))?;
    let x = parsed
        .filter(|x| x.is_finite())
        .ok_or_else(|| Fail::new(RejectionKind::OutOfRange, "is beyond the float's range"))?;
    if Dec::parse(&shortest(x)) == Some(want) {
        Ok(x)
    } else {
        Err(Fail::new(
            RejectionKind::Inexact,
            format!("has no exact binary float; the nearest is {}", shortest(x)),
        ))
    }
}

fn to_double(v: &Value) -> Conv<f64> {
    match v {
        Value::Float(f) if f.is_finite() => Ok(f64::from(*f)),
        Value::Double(d) if d.is_finite() => Ok(*d),
        Value::Float(_) | Value::Double(_) => {
            Err(Fail::new(RejectionKind::OutOfRange, "not a finite number"))
        }
        Value::Text(s) => float_from_text(s, s.parse::<f64>().ok(), |x| x.to_string()),
        other => {
            let i = integer_of(other).ok_or_else(|| cannot(other))?;
            let d = i as f64;
            if d as i128 == i {
                Ok(d)
            } else {
                Err(Fail::new(
                    RejectionKind::Inexact,
                    "has more significant digits than a double holds",
                ))
            }
        }
    }
}

fn to_float(v: &Value) -> Conv<f32> {
    match v {
        Value::Float(f) if f.is_finite() => Ok(*f),
        Value::Double(d) if d.is_finite() => {
            let f = *d as f32;
            if f.is_finite() && f64::from(f) == *d {
                Ok(f)
            } else {
                Err(Fail::new(
                    RejectionKind::Inexact,
                    "has no exact single-precision float",
                ))
            }
        }
        Value::Float(_) | Value::Double(_) => {
            Err(Fail::new(RejectionKind::OutOfRange, "not a finite number"))
        }
        Value::Text(s) => float_from_text(s, s.parse::<f32>().ok().map(f64::from), |x| {
            (x as f32).to_string()
        })
        .map(|x| x as f32),
        other => {
            let i = integer_of(other).ok_or_else(|| cannot(other))?;
            let f = i as f32;
            if f.is_finite() && f as i128 == i {
                Ok(f)
            } else {
                Err(Fail::new(
                    RejectionKind::Inexact,
                    "has more significant digits than a float holds",
                ))
            }
        }
    }
}

fn to_decimal(v: &Value, precision: u8, scale: u8) -> Conv<String> {
    let d = match v {
        Value::Decimal(s) => Dec::parse(s).ok_or_else(|| bad_text("a decimal number"))?,
        Value::Text(s) => Dec::parse(s).ok_or_else(|| {
            bad_text("a number in plain decimal notation (digits, optional '-' and '.')")
        })?,
        other => Dec::from_i128(integer_of(other).ok_or_else(|| cannot(other))?),
    };
    let int_room = usize::from(precision - scale);
    if d.int_digits() > int_room {
        return Err(Fail::new(
            RejectionKind::OutOfRange,
            format!(
                "has {} integer digits; decimal({precision},{scale}) holds at most {int_room}",
                d.int_digits()
            ),
        ));
    }
    d.render(usize::from(scale)).ok_or_else(|| {
        Fail::new(
            RejectionKind::Inexact,
            format!(
                "has {} fraction digits; decimal({precision},{scale}) keeps {scale}",
                d.frac_digits()
            ),
        )
    })
}

/// Whether `s` is already what [`to_decimal`] makes of it for `decimal(precision, scale)`: in
/// the canonical form for `scale` ([`tidemark_schemas::is_canonical_decimal`]) with at most
/// `precision - scale` integer digits. A source DECIMAL column mapped to the same type always is
/// (the decoder keeps it in that form), so its text moves into the record instead of being
/// parsed and rendered again.
fn decimal_in_target_form(s: &str, precision: u8, scale: u8) -> bool {
    if !tidemark_schemas::is_canonical_decimal(s, scale) {
        return false;
    }
    // Canonical: the integer digits are all but the sign, the point and `scale` digits.
    let body = s.strip_prefix('-').unwrap_or(s);
    let int = &body[..body.len() - if scale > 0 { usize::from(scale) + 1 } else { 0 }];
    let int_digits = if int == "0" { 0 } else { int.len() };
    int_digits <= usize::from(precision.saturating_sub(scale))
}

/// The date and time of day of a DATE, DATETIME or TIMESTAMP value (a DATE is its midnight,
/// with `fsp` 0). What conversions and comparisons read are the date and time; `fsp` is the
/// value's own precision, which a conversion replaces with the target column's.
pub(crate) fn date_time_of(v: &Value) -> Option<DateTime> {
    match *v {
        Value::Date { year, month, day } => Some(DateTime {
            year,
            month,
            day,
            ..DateTime::ZERO
        }),
        Value::DateTime(t) | Value::Timestamp(t) => Some(t),
        _ => None,
    }
}

/// The instant `t` names, as a key that orders instants (`fsp` left out: 10:00:00.5 at
/// precision 1 and 10:00:00.500000 at precision 6 are the same instant).
pub(crate) fn instant_order(t: &DateTime) -> (u16, u8, u8, u8, u8, u8, u32) {
    (t.year, t.month, t.day, t.hour, t.minute, t.second, t.micros)
}

/// Whether the date of `t` is a real day of the proleptic Gregorian calendar.
pub(crate) fn valid_date(t: &DateTime) -> bool {
    time::Month::try_from(t.month)
        .ok()
        .and_then(|m| time::Date::from_calendar_date(i32::from(t.year), m, t.day).ok())
        .is_some()
}

/// The instant `t` names in UTC, if it names one.
pub(crate) fn to_utc(t: &DateTime) -> Option<time::OffsetDateTime> {
    let month = time::Month::try_from(t.month).ok()?;
    let date = time::Date::from_calendar_date(i32::from(t.year), month, t.day).ok()?;
    let of_day = time::Time::from_hms_micro(t.hour, t.minute, t.second, t.micros).ok()?;
    Some(time::PrimitiveDateTime::new(date, of_day).assume_utc())
}

/// The number of fraction digits (1 to 6) a date-time or time text shows, 0 when it shows none:
/// the precision whose canonical text it is.
fn fraction_digits(s: &str) -> Option<u8> {
    match s.rsplit_once('.') {
        None => Some(0),
        Some((_, fraction)) if (1..=6).contains(&fraction.len()) => Some(fraction.len() as u8),
        Some(_) => None,
    }
}

/// `YYYY-MM-DD`, or `YYYY-MM-DD HH:MM:SS` with up to six fraction digits: the canonical text of
/// a DATE or of a DATETIME of the precision it shows (read by the one strict parse,
/// [`tidemark_schemas::text`]), with a time of day in range.
fn parse_datetime_text(s: &str) -> Option<DateTime> {
    if !s.contains(' ') {
        return date_time_of(&text::parse_date(s).ok()?);
    }
    let t = DateTime::parse(s, fraction_digits(s)?).ok()?;
    if t.hour > 23 || t.minute > 59 || t.second > 59 {
        return None;
    }
    Some(t)
}

/// The date and time of a value bound for a date, datetime or timestamp column.
pub(crate) fn temporal_parts(v: &Value) -> Conv<DateTime> {
    match v {
        Value::Text(s) => parse_datetime_text(s).ok_or_else(|| {
            bad_text("a date 'YYYY-MM-DD' or a datetime 'YYYY-MM-DD HH:MM:SS[.ffffff]'")
        }),
        other => date_time_of(other).ok_or_else(|| cannot(other)),
    }
}

fn fits_fsp(micros: u32, fsp: u8) -> bool {
    micros.is_multiple_of(10u32.pow(u32::from(6 - fsp.min(6))))
}

fn fsp_fail(micros: u32, fsp: u8) -> Fail {
    Fail::new(
        RejectionKind::Inexact,
        format!("fractional seconds .{micros:06} do not fit in {fsp} digit(s)"),
    )
}

/// The reason text for an invalid date under `zero_dates = "reject"`.
pub(crate) fn invalid_date_fail(t: &DateTime) -> Fail {
    Fail::new(
        RejectionKind::InvalidDate,
        format!(
            "{:04}-{:02}-{:02} is not a calendar date; set zero_dates = \"keep\" or \"null\" in the mapping to admit it",
            t.year, t.month, t.day
        ),
    )
}

/// TIME's range on both servers: MariaDB holds ±838:59:59.999999; MySQL holds ±838:59:59 (its
/// fractional part stops there), so the wider bound admits every value either server can hold.
const MAX_TIME_MICROS: u64 = (838 * 3600 + 59 * 60 + 59) * 1_000_000 + 999_999;

fn to_time(v: &Value, fsp: u8) -> Conv<Value> {
    let (negative, hours, minute, second, micros) = match v {
        Value::Time {
            negative,
            hours,
            minute,
            second,
            micros,
            ..
        } => (*negative, u32::from(*hours), *minute, *second, *micros),
        Value::Text(s) => {
            let bad = || bad_text("a time '[-]HH:MM:SS[.ffffff]'");
            // The canonical text of a TIME of the precision the text shows.
            match fraction_digits(s).and_then(|digits| text::parse_time(s, digits).ok()) {
                Some(Value::Time {
                    negative,
                    hours,
                    minute,
                    second,
                    micros,
                    ..
                }) if minute <= 59 && second <= 59 => {
                    (negative, u32::from(hours), minute, second, micros)
                }
                _ => return Err(bad()),
            }
        }
        other => return Err(cannot(other)),
    };
    let total = (u64::from(hours) * 3600 + u64::from(minute) * 60 + u64::from(second)) * 1_000_000
        + u64::from(micros);
    if total > MAX_TIME_MICROS {
        return Err(Fail::new(
            RejectionKind::OutOfRange,
            "is outside TIME's range ±838:59:59.999999",
        ));
    }
    if !fits_fsp(micros, fsp) {
        return Err(fsp_fail(micros, fsp));
    }
    Ok(Value::Time {
        negative: negative && total > 0,
        hours: hours as u16,
        minute,
        second,
        micros,
        fsp,
    })
}

/// The text of a value, for text targets and text functions.
pub(crate) fn text_of(v: &Value) -> Conv<String> {
    match v {
        Value::Text(s) | Value::Enum(s) | Value::Json(s) => Ok(s.clone()),
        Value::Bytes(b) => String::from_utf8(b.clone())
            .map_err(|_| Fail::new(RejectionKind::BadCast, "is not valid UTF-8 text")),
        Value::Geometry(_) => Err(cannot(v)),
        other => Ok(other.to_string()),
    }
}

/// Whether [`convert`] of `v` into `to` gives back `v` itself: a text that fits a text column,
/// an ENUM member into its ENUM, JSON into JSON, bytes that fit a binary column. Such a value
/// can be moved into the target record instead of copied. Never true for NULL (whose
/// nullability the caller checks against the value it still holds).
pub(crate) fn moves_unchanged(v: &Value, to: &TargetType) -> bool {
    use TargetType as T;
    match (v, to) {
        (Value::Text(s), T::Text { max_chars }) => {
            max_chars.is_none_or(|max| s.len() as u64 <= max || s.chars().count() as u64 <= max)
        }
        (Value::Enum(s), T::Enum { members }) => s.is_empty() || members.contains(s),
        (Value::Json(_), T::Json) => true,
        (Value::Bytes(b), T::Bytes { max_len }) => max_len.is_none_or(|max| b.len() as u64 <= max),
        (Value::Decimal(s), T::Decimal { precision, scale }) => {
            decimal_in_target_form(s, *precision, *scale)
        }
        (Value::Int(i), T::Int { bits }) => {
            let (lo, hi) = int_range(*bits);
            (lo..=hi).contains(&i128::from(*i))
        }
        (Value::UInt(u), T::UInt { bits }) => i128::from(*u) <= uint_max(*bits),
        (Value::Double(d), T::Double) => d.is_finite(),
        (Value::Float(f), T::Float) => f.is_finite(),
        (Value::Date { .. }, T::Date) => date_time_of(v).is_some_and(|t| valid_date(&t)),
        (Value::DateTime(DateTime { micros, fsp, .. }), T::DateTime { fsp: to_fsp })
        | (Value::Timestamp(DateTime { micros, fsp, .. }), T::Timestamp { fsp: to_fsp }) => {
            fsp == to_fsp
                && fits_fsp(*micros, *fsp)
                && date_time_of(v).is_some_and(|t| valid_date(&t))
        }
        _ => false,
    }
}

/// Convert `v` into a value of type `to`, exactly. NULL stays NULL (nullability is the caller's
/// check); an invalid date follows `zero_dates`.
pub(crate) fn convert(v: &Value, to: &TargetType, zero_dates: ZeroDates) -> Conv<Value> {
    use TargetType as T;
    if v.is_null() {
        return Ok(Value::Null);
    }
    match to {
        T::Int { bits } => {
            let i = to_integer(v)?;
            let (lo, hi) = int_range(*bits);
            if i < lo || i > hi {
                return Err(Fail::new(
                    RejectionKind::OutOfRange,
                    format!("is outside int{bits}'s range {lo}..={hi}"),
                ));
            }
            Ok(Value::Int(i as i64))
        }
        T::UInt { bits } => {
            let i = to_integer(v)?;
            let hi = uint_max(*bits);
            if i < 0 || i > hi {
                return Err(Fail::new(
                    RejectionKind::OutOfRange,
                    format!("is outside uint{bits}'s range 0..={hi}"),
                ));
            }
            Ok(Value::UInt(i as u64))
        }
        T::Float => to_float(v).map(Value::Float),
        T::Double => to_double(v).map(Value::Double),
        T::Decimal { precision, scale } => to_decimal(v, *precision, *scale).map(Value::Decimal),
        T::Date | T::DateTime { .. } | T::Timestamp { .. } => {
            let p = temporal_parts(v)?;
            if !valid_date(&p) {
                match zero_dates {
                    ZeroDates::Reject => return Err(invalid_date_fail(&p)),
                    ZeroDates::Null => return Ok(Value::Null),
                    ZeroDates::Keep => {}
                }
            }
            let DateTime {
                year,
                month,
                day,
                hour,
                minute,
                second,
                micros,
                ..
            } = p;
            match to {
                T::Date => {
                    if (hour, minute, second, micros) != (0, 0, 0, 0) {
                        return Err(Fail::new(
                            RejectionKind::Inexact,
                            "has a time of day that a date cannot hold",
                        ));
                    }
                    Ok(Value::Date { year, month, day })
                }
                T::DateTime { fsp } | T::Timestamp { fsp } => {
                    if !fits_fsp(micros, *fsp) {
                        return Err(fsp_fail(micros, *fsp));
                    }
                    let t = DateTime { fsp: *fsp, ..p };
                    Ok(if matches!(to, T::DateTime { .. }) {
                        Value::DateTime(t)
                    } else {
                        Value::Timestamp(t)
                    })
                }
                _ => Err(cannot(v)),
            }
        }
        T::Time { fsp } => to_time(v, *fsp),
        T::Year => {
            let y = to_integer(v)?;
            if y == 0 || (1901..=2155).contains(&y) {
                Ok(Value::Year(y as u16))
            } else {
                Err(Fail::new(
                    RejectionKind::OutOfRange,
                    "is outside YEAR's range (0, or 1901..=2155)",
                ))
            }
        }
        T::Text { max_chars } => {
            let s = text_of(v)?;
            // A text of at most `max` bytes has at most `max` characters: count only longer ones.
            if let Some(max) = max_chars.filter(|max| s.len() as u64 > *max) {
                let n = s.chars().count() as u64;
                if n > max {
                    return Err(Fail::new(
                        RejectionKind::TooLong,
                        format!("is {n} characters long; text({max}) holds at most {max}"),
                    ));
                }
            }
            Ok(Value::Text(s))
        }
        T::Bytes { max_len } => {
            let b = match v {
                Value::Bytes(b) | Value::Geometry(b) => b.clone(),
                Value::Text(s) | Value::Enum(s) | Value::Json(s) => s.as_bytes().to_vec(),
                other => return Err(cannot(other)),
            };
            if let Some(max) = max_len {
                if b.len() as u64 > *max {
                    return Err(Fail::new(
                        RejectionKind::TooLong,
                        format!(
                            "is {} bytes long; bytes({max}) holds at most {max}",
                            b.len()
                        ),
                    ));
                }
            }
            Ok(Value::Bytes(b))
        }
        T::Enum { members } => {
            let (s, from_enum) = match v {
                Value::Enum(s) => (s, true),
                Value::Text(s) => (s, false),
                other => return Err(cannot(other)),
            };
            // The empty string is ENUM's error value 0, which every ENUM column admits.
            if members.contains(s) || (from_enum && s.is_empty()) {
                Ok(Value::Enum(s.clone()))
            } else {
                Err(Fail::new(
                    RejectionKind::BadCast,
                    format!("is not a member of {}", render_type(to)),
                ))
            }
        }
        T::Set { members } => {
            let present: Vec<String> = match v {
                Value::Set(names) => names.clone(),
                Value::Text(s) if s.is_empty() => Vec::new(),
                Value::Text(s) => s.split(',').map(str::to_string).collect(),
                other => return Err(cannot(other)),
            };
            for (i, name) in present.iter().enumerate() {
                if !members.contains(name) {
                    return Err(Fail::new(
                        RejectionKind::BadCast,
                        format!("'{name}' is not a member of {}", render_type(to)),
                    ));
                }
                if present[..i].contains(name) {
                    return Err(Fail::new(
                        RejectionKind::BadCast,
                        format!("names '{name}' twice"),
                    ));
                }
            }
            Ok(Value::Set(
                members
                    .iter()
                    .filter(|m| present.contains(m))
                    .cloned()
                    .collect(),
            ))
        }
        T::Bit { width } => {
            let value = match v {
                Value::Bit { value, .. } | Value::UInt(value) => *value,
                Value::Int(i) if *i >= 0 => *i as u64,
                Value::Int(_) => {
                    return Err(Fail::new(
                        RejectionKind::OutOfRange,
                        "is negative; bits are unsigned",
                    ))
                }
                other => return Err(cannot(other)),
            };
            if *width < 64 && value >> width != 0 {
                return Err(Fail::new(
                    RejectionKind::OutOfRange,
                    format!("does not fit in bit({width})"),
                ));
            }
            Ok(Value::Bit {
                width: *width,
                value,
            })
        }
        T::Json => match v {
            Value::Json(s) => Ok(Value::Json(s.clone())),
            Value::Text(s) => serde_json::from_str::<serde::de::IgnoredAny>(s)
                .map(|_| Value::Json(s.clone()))
                .map_err(|e| Fail::new(RejectionKind::BadCast, format!("is not JSON ({e})"))),
            other => Err(cannot(other)),
        },
        T::Geometry => match v {
            Value::Geometry(b) => Ok(Value::Geometry(b.clone())),
            other => Err(cannot(other)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value `moves_unchanged` says may move is exactly what `convert` makes of it; the
    /// others (too long, not a member, another kind, NULL) are left to `convert`.
    #[test]
    fn values_that_move_are_what_convert_gives() {
        let text = |s: &str| Value::Text(s.into());
        let cases: Vec<(Value, &str, bool)> = vec![
            (text("abc"), "text(3)", true),
            (text("çéü"), "text(3)", true),
            (text("abcd"), "text(3)", false),
            (text(""), "text", true),
            (Value::Enum("b".into()), "enum('a','b')", true),
            (Value::Enum("".into()), "enum('a','b')", true),
            (Value::Enum("c".into()), "enum('a','b')", false),
            (Value::Json("{\"a\":1}".into()), "json", true),
            (Value::Bytes(vec![1, 2]), "bytes(2)", true),
            (Value::Bytes(vec![1, 2, 3]), "bytes(2)", false),
            (Value::Null, "text", false),
            (Value::Int(3), "text", false),
            (Value::Decimal("1.50".into()), "decimal(4,2)", true),
            (Value::Decimal("-0.05".into()), "decimal(4,2)", true),
            (Value::Decimal("0.0500".into()), "decimal(4,4)", true),
            (Value::Decimal("12".into()), "decimal(2,0)", true),
            (Value::Decimal("1.5".into()), "decimal(4,2)", false),
            (Value::Decimal("1.500".into()), "decimal(4,2)", false),
            (Value::Decimal("01.50".into()), "decimal(4,2)", false),
            (Value::Decimal("-0.00".into()), "decimal(4,2)", false),
            (Value::Decimal("-0".into()), "decimal(2,0)", false),
            (Value::Decimal("123.00".into()), "decimal(4,2)", false),
            (Value::Decimal("12.".into()), "decimal(2,0)", false),
            (text("x"), "enum('x')", false),
        ];
        for (v, ty, moves) in cases {
            let to = crate::syntax::parse_type(ty).unwrap();
            assert_eq!(moves_unchanged(&v, &to), moves, "{v:?} into {ty}");
            if moves {
                assert_eq!(convert(&v, &to, ZeroDates::Reject).unwrap(), v, "{ty}");
            }
        }
    }

    fn value_strategy() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let date = (0u16..10000, 0u8..14, 0u8..33);
        prop_oneof![
            any::<i64>().prop_map(Value::Int),
            (-300i64..300).prop_map(Value::Int),
            any::<u64>().prop_map(Value::UInt),
            (0u64..70000).prop_map(Value::UInt),
            any::<f64>().prop_map(Value::Double),
            any::<f32>().prop_map(Value::Float),
            date.clone()
                .prop_map(|(year, month, day)| Value::Date { year, month, day }),
            (date, 0u32..1_000_000, 0u8..7, any::<bool>()).prop_map(
                |((year, month, day), micros, fsp, timestamp)| {
                    let micros = if micros % 2 == 0 {
                        micros / 1000 * 1000
                    } else {
                        micros
                    };
                    if timestamp {
                        Value::Timestamp(DateTime {
                            year,
                            month,
                            day,
                            hour: 12,
                            minute: 30,
                            second: 59,
                            micros,
                            fsp,
                        })
                    } else {
                        Value::DateTime(DateTime {
                            year,
                            month,
                            day,
                            hour: 12,
                            minute: 30,
                            second: 59,
                            micros,
                            fsp,
                        })
                    }
                }
            ),
        ]
    }

    fn target_strategy() -> impl proptest::strategy::Strategy<Value = TargetType> {
        use proptest::prelude::*;
        prop_oneof![
            prop::sample::select(vec![8u8, 16, 24, 32, 64])
                .prop_map(|bits| TargetType::Int { bits }),
            prop::sample::select(vec![8u8, 16, 24, 32, 64])
                .prop_map(|bits| TargetType::UInt { bits }),
            Just(TargetType::Double),
            Just(TargetType::Float),
            Just(TargetType::Date),
            (0u8..7).prop_map(|fsp| TargetType::DateTime { fsp }),
            (0u8..7).prop_map(|fsp| TargetType::Timestamp { fsp }),
        ]
    }

    proptest::proptest! {
        /// A number, date or time moves exactly when converting it gives the same value back,
        /// under every zero-date policy.
        #[test]
        fn values_move_exactly_when_convert_keeps_them(v in value_strategy(), to in target_strategy()) {
            let moves = moves_unchanged(&v, &to);
            for zero_dates in [ZeroDates::Reject, ZeroDates::Null, ZeroDates::Keep] {
                let kept = convert(&v, &to, zero_dates).is_ok_and(|c| c == v);
                if moves {
                    proptest::prop_assert!(kept, "{:?} into {:?} moves, but converts otherwise", v, to);
                } else if zero_dates == ZeroDates::Reject {
                    proptest::prop_assert!(!kept, "{:?} into {:?} converts to itself, but does not move", v, to);
                }
            }
        }

        /// A decimal text moves exactly when converting it would give the same text back.
        #[test]
        fn decimals_move_exactly_when_convert_keeps_their_text(
            neg in proptest::bool::ANY,
            int in "[0-9]{0,5}",
            frac in proptest::option::of("[0-9]{0,4}"),
            precision in 1u8..8,
            scale in 0u8..5,
        ) {
            proptest::prop_assume!(scale <= precision);
            let text = format!(
                "{}{int}{}",
                if neg { "-" } else { "" },
                frac.map(|f| format!(".{f}")).unwrap_or_default()
            );
            let v = Value::Decimal(text.clone());
            let to = TargetType::Decimal { precision, scale };
            let kept = matches!(convert(&v, &to, ZeroDates::Reject), Ok(Value::Decimal(t)) if t == text);
            proptest::prop_assert_eq!(moves_unchanged(&v, &to), kept, "{} into {:?}", text, to);
        }
    }

    fn conv(v: Value, ty: &str) -> Conv<Value> {
        convert(
            &v,
            &crate::syntax::parse_type(ty).unwrap(),
            ZeroDates::Reject,
        )
    }

    fn kind(v: Value, ty: &str) -> RejectionKind {
        conv(v.clone(), ty)
            .map(|ok| panic!("{v:?} → {ty} should fail, gave {ok:?}"))
            .unwrap_err()
            .kind
    }

    #[test]
    fn integers_convert_exactly_or_fail() {
        assert_eq!(conv(Value::Int(127), "int8"), Ok(Value::Int(127)));
        assert_eq!(kind(Value::Int(128), "int8"), RejectionKind::OutOfRange);
        assert_eq!(kind(Value::Int(-1), "uint64"), RejectionKind::OutOfRange);
        assert_eq!(
            conv(Value::UInt(u64::MAX), "uint64"),
            Ok(Value::UInt(u64::MAX))
        );
        assert_eq!(
            kind(Value::UInt(u64::MAX), "int64"),
            RejectionKind::OutOfRange
        );
        assert_eq!(
            conv(Value::Text("-42".into()), "int16"),
            Ok(Value::Int(-42))
        );
        assert_eq!(
            kind(Value::Text("042".into()), "int16"),
            RejectionKind::BadCast
        );
        assert_eq!(
            kind(Value::Text(" 42".into()), "int16"),
            RejectionKind::BadCast
        );
        assert_eq!(
            conv(Value::Decimal("12.00".into()), "int8"),
            Ok(Value::Int(12))
        );
        assert_eq!(
            kind(Value::Decimal("12.50".into()), "int8"),
            RejectionKind::Inexact
        );
        assert_eq!(conv(Value::Double(3.0), "uint8"), Ok(Value::UInt(3)));
        assert_eq!(kind(Value::Double(3.5), "uint8"), RejectionKind::Inexact);
        assert_eq!(
            kind(Value::Double(f64::NAN), "uint8"),
            RejectionKind::OutOfRange
        );
    }

    #[test]
    fn decimals_and_floats_are_exact() {
        assert_eq!(
            conv(Value::Decimal("4.99".into()), "decimal(10,3)"),
            Ok(Value::Decimal("4.990".into()))
        );
        assert_eq!(
            kind(Value::Decimal("4.99".into()), "decimal(3,1)"),
            RejectionKind::Inexact
        );
        assert_eq!(
            kind(Value::Decimal("123.4".into()), "decimal(4,2)"),
            RejectionKind::OutOfRange
        );
        assert_eq!(
            conv(Value::Text("1.5".into()), "decimal(4,2)"),
            Ok(Value::Decimal("1.50".into()))
        );
        assert_eq!(
            kind(Value::Text("1e3".into()), "decimal(9,2)"),
            RejectionKind::BadCast
        );
        assert_eq!(
            conv(Value::Text("0.1".into()), "double"),
            Ok(Value::Double(0.1))
        );
        assert_eq!(
            kind(Value::Text("0.10000000000000001".into()), "double"),
            RejectionKind::Inexact
        );
        assert_eq!(
            conv(Value::Int(1 << 53), "double"),
            Ok(Value::Double(9007199254740992.0))
        );
        assert_eq!(
            kind(Value::Int((1 << 53) + 1), "double"),
            RejectionKind::Inexact
        );
        assert_eq!(kind(Value::Double(0.1), "float"), RejectionKind::Inexact);
        assert_eq!(conv(Value::Double(0.5), "float"), Ok(Value::Float(0.5)));
        assert!(convertible(
            &TargetType::Double,
            &TargetType::Decimal {
                precision: 5,
                scale: 2
            }
        )
        .is_err());
    }

    #[test]
    fn dates_follow_the_zero_date_policy() {
        let zero = Value::Date {
            year: 0,
            month: 0,
            day: 0,
        };
        assert_eq!(kind(zero.clone(), "date"), RejectionKind::InvalidDate);
        let ty = TargetType::Date;
        assert_eq!(convert(&zero, &ty, ZeroDates::Keep), Ok(zero.clone()));
        assert_eq!(convert(&zero, &ty, ZeroDates::Null), Ok(Value::Null));
        let feb30 = Value::Text("2021-02-30".into());
        assert_eq!(kind(feb30, "datetime"), RejectionKind::InvalidDate);
        // A zero date bound for a text column is just text.
        assert_eq!(conv(zero, "text"), Ok(Value::Text("0000-00-00".into())));
        assert_eq!(
            conv(Value::Text("2006-02-15 05:03:42".into()), "datetime"),
            Ok(Value::DateTime(DateTime {
                year: 2006,
                month: 2,
                day: 15,
                hour: 5,
                minute: 3,
                second: 42,
                micros: 0,
                fsp: 0
            }))
        );
        assert_eq!(
            kind(Value::Text("2006-02-15 05:03:42.5".into()), "datetime"),
            RejectionKind::Inexact
        );
        assert_eq!(
            kind(Value::Text("2006-02-15 05:03:42".into()), "date"),
            RejectionKind::Inexact
        );
        assert_eq!(
            kind(Value::Text("2006-2-15".into()), "date"),
            RejectionKind::BadCast
        );
        assert_eq!(
            kind(Value::Text("2006-02-15 24:00:00".into()), "datetime"),
            RejectionKind::BadCast
        );
        assert_eq!(
            kind(Value::Text("839:00:00".into()), "time"),
            RejectionKind::OutOfRange
        );
        assert!(conv(Value::Text("-838:59:59".into()), "time").is_ok());
        // MariaDB's TIME(6) holds the whole last second (issue 34).
        assert!(conv(Value::Text("838:59:59.999999".into()), "time(6)").is_ok());
        assert!(conv(Value::Text("-838:59:59.999999".into()), "time(6)").is_ok());
        assert_eq!(
            kind(Value::Text("839:00:00.000000".into()), "time(6)"),
            RejectionKind::OutOfRange
        );
    }

    #[test]
    fn text_bytes_enum_set_bit_json() {
        assert_eq!(
            kind(Value::Text("héllo".into()), "text(4)"),
            RejectionKind::TooLong
        );
        assert!(conv(Value::Text("héllo".into()), "text(5)").is_ok());
        assert_eq!(
            kind(Value::Text("héllo".into()), "bytes(5)"),
            RejectionKind::TooLong
        );
        assert_eq!(
            kind(Value::Bytes(vec![0xff]), "text"),
            RejectionKind::BadCast
        );
        assert_eq!(
            kind(Value::Text("X".into()), "enum('G','PG')"),
            RejectionKind::BadCast
        );
        assert_eq!(
            conv(Value::Enum(String::new()), "enum('G')"),
            Ok(Value::Enum(String::new()))
        );
        assert_eq!(
            conv(Value::Text("b,a".into()), "set('a','b','c')"),
            Ok(Value::Set(vec!["a".into(), "b".into()]))
        );
        assert_eq!(
            kind(Value::Text("a,a".into()), "set('a')"),
            RejectionKind::BadCast
        );
        assert_eq!(kind(Value::UInt(2), "bit(1)"), RejectionKind::OutOfRange);
        assert_eq!(
            conv(Value::UInt(u64::MAX), "bit(64)"),
            Ok(Value::Bit {
                width: 64,
                value: u64::MAX
            })
        );
        assert_eq!(
            kind(Value::Text("{".into()), "json"),
            RejectionKind::BadCast
        );
        assert_eq!(
            kind(Value::Int(1901 - 1), "year"),
            RejectionKind::OutOfRange
        );
    }
}
