//! Writing the canonical text: `Display` of a [`Value`], [`Value::temporal_text`] (dates and
//! times without the formatting machinery), [`Row::canonical_text`] (keys) and
//! [`Row::digest_input`] (what a source digest hashes).

use std::fmt;

use crate::{Row, Value};

/// A date or time's text, built on the stack: temporal values are formatted for every row that
/// is written, keyed or digested, so this avoids the formatting machinery and any allocation.
///
/// Fields below 100 (months, days, minutes, seconds, most hours, each half of a year, each pair
/// of a fraction's digits) are written two digits at a time from a table of the hundred pairs,
/// with no division loop and no zero-padding pass; anything wider (a TIME of more than 99 hours,
/// a year above 9999 or a fraction of a million microseconds or more, none of which MariaDB
/// stores) takes the general decimal path. A 1,000,000-row backfill of three temporal columns
/// formats about 2.3 million of these, twice (digest and write).
pub struct TemporalText {
    bytes: [u8; 48],
    len: usize,
}

/// `00`, `01`, … `99`: the two digits of `n` are `DIGIT_PAIRS[2n..2n + 2]`.
const DIGIT_PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

impl TemporalText {
    fn new() -> Self {
        TemporalText {
            bytes: [0; 48],
            len: 0,
        }
    }

    #[inline]
    fn byte(&mut self, b: u8) -> &mut Self {
        self.bytes[self.len] = b;
        self.len += 1;
        self
    }

    /// The two digits of `v`, which is below 100.
    #[inline]
    fn pair(&mut self, v: u32) -> &mut Self {
        let at = 2 * v as usize;
        self.bytes[self.len..self.len + 2].copy_from_slice(&DIGIT_PAIRS[at..at + 2]);
        self.len += 2;
        self
    }

    /// `v` in decimal, zero-padded to at least two digits (as `{v:02}`).
    #[inline]
    fn two(&mut self, v: u32) -> &mut Self {
        if v < 100 {
            self.pair(v)
        } else {
            self.padded(v, 2)
        }
    }

    /// `v` in decimal, zero-padded to at least `width` digits (as `{v:0width$}`).
    fn padded(&mut self, v: u32, width: usize) -> &mut Self {
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(v).as_bytes();
        for _ in digits.len()..width {
            self.byte(b'0');
        }
        for &d in digits {
            self.byte(d);
        }
        self
    }

    /// `.` and the first `fsp` digits of `micros` as six digits; nothing when `fsp` is 0.
    fn fraction(&mut self, micros: u32, fsp: u8) -> &mut Self {
        if fsp == 0 {
            return self;
        }
        self.byte(b'.');
        let keep = usize::from(fsp.min(6));
        if micros < 1_000_000 {
            // All six digits, then only the first `keep` of them kept.
            let start = self.len;
            self.pair(micros / 10_000)
                .pair(micros / 100 % 100)
                .pair(micros % 100);
            self.len = start + keep;
        } else {
            let mut all = TemporalText::new();
            all.padded(micros, 6);
            for &d in &all.bytes[..keep] {
                self.byte(d);
            }
        }
        self
    }

    fn date(&mut self, year: u16, month: u8, day: u8) -> &mut Self {
        let year = u32::from(year);
        if year < 10_000 {
            self.pair(year / 100).pair(year % 100);
        } else {
            self.padded(year, 4);
        }
        self.byte(b'-')
            .two(u32::from(month))
            .byte(b'-')
            .two(u32::from(day))
    }

    fn clock(&mut self, hours: u32, minute: u8, second: u8) -> &mut Self {
        self.two(hours)
            .byte(b':')
            .two(u32::from(minute))
            .byte(b':')
            .two(u32::from(second))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("ASCII digits and separators")
    }

    /// The text's bytes (ASCII), for callers that need no `str`: no UTF-8 check.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    f.write_str("0x")?;
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

impl Value {
    /// The canonical text of a DATE, DATETIME, TIMESTAMP or TIME, built without the formatting
    /// machinery; `None` for every other kind of value.
    pub fn temporal_text(&self) -> Option<TemporalText> {
        let mut text = TemporalText::new();
        match self {
            Value::Date { year, month, day } => {
                text.date(*year, *month, *day);
            }
            Value::DateTime(t) | Value::Timestamp(t) => {
                text.date(t.year, t.month, t.day)
                    .byte(b' ')
                    .clock(u32::from(t.hour), t.minute, t.second)
                    .fraction(t.micros, t.fsp);
            }
            Value::Time {
                negative,
                hours,
                minute,
                second,
                micros,
                fsp,
            } => {
                if *negative {
                    text.byte(b'-');
                }
                text.clock(u32::from(*hours), *minute, *second)
                    .fraction(*micros, *fsp);
            }
            _ => return None,
        }
        Some(text)
    }

    /// The canonical text of a temporal value as an owned string (the same text as `Display`,
    /// without its formatting machinery), or `None` for any other kind of value.
    pub fn temporal_string(&self) -> Option<String> {
        self.temporal_text().map(|t| t.as_str().to_owned())
    }
}

impl fmt::Display for Value {
    /// Canonical text: the form MySQL itself prints for the value, with binary data in hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(text) = self.temporal_text() {
            return f.write_str(text.as_str());
        }
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Int(v) => write!(f, "{v}"),
            Value::UInt(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v}"),
            Value::Double(v) => write!(f, "{v}"),
            Value::Decimal(v) => f.write_str(v),
            Value::Date { .. } | Value::DateTime(_) | Value::Timestamp(_) | Value::Time { .. } => {
                unreachable!("temporal values are written above")
            }
            Value::Year(y) => write!(f, "{y:04}"),
            Value::Text(s) | Value::Enum(s) | Value::Json(s) => f.write_str(s),
            Value::Set(members) => f.write_str(&members.join(",")),
            Value::Bit { value, .. } => write!(f, "{value}"),
            Value::Bytes(b) | Value::Geometry(b) => hex(f, b),
        }
    }
}

/// Whether `text` is a DECIMAL with `scale` fraction digits in the one form tidemark keeps it
/// in (and MySQL prints it in): an optional `-` (never on zero), the integer digits without a
/// leading zero (a single `0` when there are none), and when `scale > 0` a `.` and exactly
/// `scale` digits. The decoder keeps such a text as it came; the transform moves it into a
/// record of the same type instead of parsing and rendering it again.
pub fn is_canonical_decimal(text: &str, scale: u8) -> bool {
    let (negative, body) = match text.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        all => (false, all),
    };
    let scale = usize::from(scale);
    let (int, frac): (&[u8], &[u8]) = if scale == 0 {
        (body, &[])
    } else {
        match body.len().checked_sub(scale + 1) {
            Some(point) if body[point] == b'.' => (&body[..point], &body[point + 1..]),
            _ => return false,
        }
    };
    let digits = |d: &[u8]| d.iter().all(u8::is_ascii_digit);
    matches!(int, [b'0'] | [b'1'..=b'9', ..])
        && digits(int)
        && digits(frac)
        && !(negative && int == b"0" && frac.iter().all(|&d| d == b'0'))
}

impl Row {
    /// Canonical text of the row: a JSON object in column order whose values are the canonical
    /// value texts (NULL as JSON null). Deterministic; used for keys, digests and messages.
    pub fn canonical_text(&self) -> String {
        let mut out = String::with_capacity(16 + 24 * self.0.len());
        // One scratch buffer for every value's text: no allocation per value.
        let mut scratch = String::new();
        out.push('{');
        for (i, (name, value)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_string(&mut out, name);
            out.push(':');
            with_canonical_piece(value, &mut scratch, |piece| match piece {
                CanonicalPiece::Null => out.push_str("null"),
                CanonicalPiece::Signed(n) => out.push_str(itoa::Buffer::new().format(n)),
                CanonicalPiece::Unsigned(n) => out.push_str(itoa::Buffer::new().format(n)),
                CanonicalPiece::Text(text) => push_json_string(&mut out, text),
                CanonicalPiece::Temporal(text) => push_json_string(&mut out, text.as_str()),
            });
        }
        out.push('}');
        out
    }

    /// Append the bytes a source digest hashes: for each column, its name, then its value's
    /// [`CanonicalPiece`] as a kind (`n` NULL, `+`/`-` a non-negative/negative integer, `s` a
    /// text) and content (the integer's eight bytes, or the text's length and bytes). Every text
    /// is preceded by its length, so nothing needs escaping.
    ///
    /// Two rows give equal bytes exactly when their [`Row::canonical_text`]s are equal: both
    /// encode the same sequence of (name, piece) unambiguously, and a signed and an unsigned
    /// integer of one value are one number in either. This costs a fraction of the canonical
    /// text: no JSON escape test, no digits for integers, no string to build.
    pub fn digest_input(&self, out: &mut Vec<u8>) {
        /// A kind byte and eight little-endian bytes, appended in one copy.
        fn head(out: &mut Vec<u8>, kind: u8, word: u64) {
            let mut bytes = [kind; 9];
            bytes[1..].copy_from_slice(&word.to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        fn text(out: &mut Vec<u8>, kind: u8, bytes: &[u8]) {
            head(out, kind, bytes.len() as u64);
            out.extend_from_slice(bytes);
        }
        let mut scratch = String::new();
        for (name, value) in &self.0 {
            text(out, b'c', name.as_bytes());
            with_canonical_piece(value, &mut scratch, |piece| match piece {
                CanonicalPiece::Null => out.push(b'n'),
                CanonicalPiece::Signed(n) if n < 0 => head(out, b'-', n as u64),
                CanonicalPiece::Signed(n) => head(out, b'+', n as u64),
                CanonicalPiece::Unsigned(n) => head(out, b'+', n),
                CanonicalPiece::Text(t) => text(out, b's', t.as_bytes()),
                CanonicalPiece::Temporal(t) => text(out, b's', t.as_bytes()),
            });
        }
    }
}

/// What the canonical text of a row writes for one value: `null`, a bare integer, or a JSON
/// string of this text. [`Row::canonical_text`] and [`Row::digest_input`] both encode values
/// through it, which is what makes them tell apart the same rows.
enum CanonicalPiece<'a> {
    Null,
    Signed(i64),
    Unsigned(u64),
    Text(&'a str),
    /// A date or time's text, digested from its bytes (no UTF-8 check: it is ASCII).
    Temporal(&'a TemporalText),
}

/// Call `f` with the [`CanonicalPiece`] of `value`. The kinds of every row are written without
/// the formatting machinery (which cost more than the rest of a digest); the text is the same as
/// `Display`'s. `scratch` holds the text of the other kinds, so no value allocates.
fn with_canonical_piece<R>(
    value: &Value,
    scratch: &mut String,
    f: impl FnOnce(CanonicalPiece<'_>) -> R,
) -> R {
    use std::fmt::Write;
    match value {
        Value::Null => f(CanonicalPiece::Null),
        Value::Int(n) => f(CanonicalPiece::Signed(*n)),
        Value::UInt(n) => f(CanonicalPiece::Unsigned(*n)),
        Value::Text(s) | Value::Enum(s) | Value::Json(s) | Value::Decimal(s) => {
            f(CanonicalPiece::Text(s))
        }
        Value::Bit { value, .. } => f(CanonicalPiece::Text(itoa::Buffer::new().format(*value))),
        Value::Double(v) if !may_be_a_rounding_tie(*v) => {
            scratch.clear();
            push_float_text(scratch, zmij::Buffer::new().format_finite(*v));
            f(CanonicalPiece::Text(scratch))
        }
        other => match other.temporal_text() {
            Some(text) => f(CanonicalPiece::Temporal(&text)),
            None => {
                scratch.clear();
                let _ = write!(scratch, "{other}");
                f(CanonicalPiece::Text(scratch))
            }
        },
    }
}

/// Whether `v`'s shortest round-trip digits could be a tie between two equally near digit strings
/// (or `v` is not finite, or zero): where zmij and std's `Display` may differ, so the caller
/// formats with std.
///
/// A tie at `n` digits means `v` is exactly halfway between two `n`-digit decimals, so its exact
/// decimal expansion has `n + 1` significant digits, the last a 5, with `n` ≤ 17. Write `v` as
/// `m · 2^e` with `m` odd. For `e < 0` that expansion is the digits of `m · 5^−e`, so a tie needs
/// `m · 5^−e < 10^18`. For `e ≥ 0`, `v` is an integer and the halfway point needs a factor of 5
/// in `m` and a spacing of candidates (a power of ten of at least 10) below the float's own
/// spacing, which integers below 2^53 (spacing at most 1) do not have. Anything else — almost
/// every DOUBLE that is not a short decimal — has one nearest shortest string, the same in both.
fn may_be_a_rounding_tie(v: f64) -> bool {
    if !v.is_finite() || v == 0.0 {
        return true;
    }
    let bits = v.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1u64 << 52) - 1);
    let (mut m, mut e) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1u64 << 52), biased - 1075)
    };
    let zeros = m.trailing_zeros();
    m >>= zeros;
    e += zeros as i32;
    if e < 0 {
        u128::from(5u32)
            .checked_pow(e.unsigned_abs())
            .and_then(|p| p.checked_mul(u128::from(m)))
            .is_some_and(|digits| digits < 10u128.pow(18))
    } else {
        let bits_of_v = (64 - m.leading_zeros()) as i32 + e;
        bits_of_v > 53 && m % 5 == 0
    }
}

/// Append the text `Display` writes for a finite float (plain decimal digits, never an
/// exponent, no `.0` on whole numbers: `1e21` is `1000000000000000000000`, `1.5e-7` is
/// `0.00000015`), given `printed`, the same number's shortest round-trip digits as `zmij` lays
/// them out (`1.0`, `1.5e-7`, `1e21`).
///
/// Both hold the shortest digit string that reads back as the same float, the one nearest to it
/// when several are as short; only when two are equally near (an exact tie) do they choose
/// differently (zmij the even one, std the one above), which [`may_be_a_rounding_tie`] keeps
/// from here. Otherwise only the layout differs, and this rewrites it. zmij takes a fraction of
/// the instructions of std's formatting, and a digest formats every DOUBLE of every row.
fn push_float_text(out: &mut String, printed: &str) {
    if !printed.as_bytes().contains(&b'e') {
        // Plain digits already (zmij writes `1234.5`, `0.001`): as `Display`, but for the `.0`
        // zmij puts on whole numbers.
        out.push_str(printed.strip_suffix(".0").unwrap_or(printed));
        return;
    }
    let (negative, printed) = match printed.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, printed),
    };
    // Past the plain case above, zmij has written `<mantissa>e<exponent>`.
    let (mantissa, exponent) = printed.split_once('e').expect("an exponent, tested above");
    let exponent: i32 = exponent.parse().expect("zmij writes a decimal exponent");
    // The significant digits, and where the decimal point falls among them.
    let mut digits = [0u8; 40];
    let mut n = 0;
    let mut point = None;
    for b in mantissa.bytes() {
        if b == b'.' {
            point = Some(n);
        } else {
            digits[n] = b;
            n += 1;
        }
    }
    let mut point = point.unwrap_or(n) as i32 + exponent;
    let mut first = 0;
    while first < n && digits[first] == b'0' {
        first += 1;
        point -= 1;
    }
    while n > first && digits[n - 1] == b'0' {
        n -= 1;
    }
    let digits = std::str::from_utf8(&digits[first..n]).expect("ASCII digits");
    if negative {
        out.push('-');
    }
    if digits.is_empty() {
        out.push('0');
    } else if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
        out.push_str(digits);
    } else if point as usize >= digits.len() {
        out.push_str(digits);
        out.extend(std::iter::repeat_n('0', point as usize - digits.len()));
    } else {
        let (whole, fraction) = digits.split_at(point as usize);
        out.push_str(whole);
        out.push('.');
        out.push_str(fraction);
    }
}

/// Whether any byte of `bytes` is below U+0020, `"` or `\\`: what a JSON string must escape.
fn needs_json_escape(bytes: &[u8]) -> bool {
    bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Append `s` as a JSON string literal, escaped exactly as `serde_json` does: `"` and `\`, the
/// short escapes `\b \f \n \r \t`, `\u00xx` (lower-case hex) for the other control characters
/// below U+0020, everything else as is.
pub fn push_json_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    // Most text needs no escape: find that out, then copy it whole.
    if !needs_json_escape(s.as_bytes()) {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ColumnName, DateTime};

    #[test]
    fn canonical_text_is_mysql_like() {
        let t = Value::Time {
            negative: true,
            hours: 838,
            minute: 59,
            second: 59,
            micros: 500_000,
            fsp: 3,
        };
        assert_eq!(t.to_string(), "-838:59:59.500");
        let d = Value::DateTime(DateTime {
            year: 0,
            month: 0,
            day: 0,
            hour: 0,
            minute: 0,
            second: 0,
            micros: 0,
            fsp: 0,
        });
        assert_eq!(d.to_string(), "0000-00-00 00:00:00");
        assert_eq!(Value::Bytes(vec![0, 255]).to_string(), "0x00ff");
        assert_eq!(Value::Float(0.1).to_string(), "0.1");
        assert_eq!(Value::UInt(u64::MAX).to_string(), "18446744073709551615");
        let row: Row = [
            ("id".into(), Value::Int(7)),
            ("n\"ame".into(), Value::Text("é".into())),
            ("z".into(), Value::Null),
        ]
        .into_iter()
        .collect();
        assert_eq!(row.canonical_text(), r#"{"id":7,"n\"ame":"é","z":null}"#);
    }

    /// What `canonical_text` wrote before it wrote numbers, dates and decimals by hand: each
    /// value's `Display` text as a JSON string, numbers bare.
    fn canonical_text_by_display(row: &Row) -> String {
        let mut out = String::from("{");
        for (i, (name, value)) in row.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_string(&mut out, name);
            out.push(':');
            match value {
                Value::Null => out.push_str("null"),
                Value::Int(_) | Value::UInt(_) => out.push_str(&value.to_string()),
                other => push_json_string(&mut out, &other.to_string()),
            }
        }
        out.push('}');
        out
    }

    #[test]
    fn canonical_text_of_every_kind_is_its_display_text() {
        let dt = |micros, fsp| {
            Value::DateTime(DateTime {
                year: 2024,
                month: 2,
                day: 29,
                hour: 23,
                minute: 5,
                second: 9,
                micros,
                fsp,
            })
        };
        let values = [
            Value::Null,
            Value::Int(i64::MIN),
            Value::Int(-7),
            Value::UInt(u64::MAX),
            Value::Float(0.1),
            Value::Double(-1e300),
            Value::Decimal("-12.50".into()),
            Value::Date {
                year: 0,
                month: 0,
                day: 0,
            },
            dt(0, 0),
            dt(123_456, 6),
            dt(120_000, 3),
            Value::Timestamp(DateTime {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0,
                minute: 0,
                second: 1,
                micros: 5,
                fsp: 6,
            }),
            Value::Time {
                negative: true,
                hours: 838,
                minute: 59,
                second: 59,
                micros: 0,
                fsp: 0,
            },
            Value::Year(2155),
            Value::Year(0),
            Value::Text("a \"b\"\n".into()),
            Value::Enum("paid".into()),
            Value::Set(vec!["a".into(), "b".into()]),
            Value::Json("{\"k\": [1]}".into()),
            Value::Bit {
                width: 64,
                value: u64::MAX,
            },
            Value::Bytes(vec![0, 1, 254]),
            Value::Geometry(vec![]),
        ];
        let row: Row = values
            .iter()
            .enumerate()
            .map(|(i, v)| (ColumnName::from(format!("c{i}").as_str()), v.clone()))
            .collect();
        assert_eq!(row.canonical_text(), canonical_text_by_display(&row));
    }

    /// A DOUBLE's digest bytes are those of its `Display` text on the edges (zeros, subnormals,
    /// the extremes, powers of ten around where zmij switches to exponents) and on 200,000 bit
    /// patterns of each kind: any double, a FLOAT widened, a short decimal.
    #[test]
    fn doubles_digest_as_their_display_text_on_edges_and_many_bit_patterns() {
        fn check(v: f64) {
            let mut digested = Vec::new();
            let mut row = Row::new();
            row.push("x", Value::Double(v));
            row.digest_input(&mut digested);
            let mut expected = Vec::new();
            let mut as_text = Row::new();
            as_text.push("x", Value::Text(v.to_string()));
            as_text.digest_input(&mut expected);
            assert_eq!(digested, expected, "{v:e}");
        }
        let mut edges = vec![
            0.0,
            -0.0,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            f64::EPSILON,
            5e-324,
            -5e-324,
            0.1,
            1.0 / 3.0,
            123456.789,
            9007199254740993.0,
        ];
        for e in -30..=30 {
            let p = 10f64.powi(e);
            edges.extend([p, -p, p * 1.5, p * 9.999, p + p * f64::EPSILON]);
        }
        for v in edges {
            check(v);
            check(f64::from(v as f32));
        }
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..200_000 {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let bits = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
            // Any double, a FLOAT widened (short expansions: ties are common), a short decimal.
            for v in [
                f64::from_bits(bits),
                f64::from(f32::from_bits(bits as u32)),
                (bits % 100_000_000) as f64 / 1000.0,
            ] {
                check(v);
            }
        }
    }

    proptest::proptest! {
        /// The hand escaper writes exactly what serde_json writes, so canonical texts (and the
        /// digests and keys made of them) never change with it.
        #[test]
        fn json_strings_are_escaped_as_serde_json_does(
            s in "(?s).{0,40}",
            c in 0u8..0x20,
            long in "[a-zA-Z0-9 .,@\u{e9}\u{4e2d}]{0,70}",
            at in 0usize..70,
        ) {
            // One byte that needs an escape at any place of a long plain text.
            let mut spliced = long.clone();
            let at = (0..=at.min(spliced.len())).rev().find(|&i| spliced.is_char_boundary(i)).unwrap_or(0);
            spliced.insert(at, ['"', '\\', c as char][at % 3]);
            for text in [s.clone(), format!("{s}{}", c as char), format!("\"\\{s}\u{7f}"), long, spliced] {
                let mut out = String::new();
                push_json_string(&mut out, &text);
                proptest::prop_assert_eq!(out, serde_json::to_string(&text).unwrap());
            }
        }

        /// Doubles are digested in `Display`'s text whatever their bits: zmij's digits laid out
        /// as std does, or std's own where the two could round a tie apart.
        #[test]
        fn double_texts_match_display(bits in proptest::prelude::any::<u64>(), small in proptest::prelude::any::<u32>()) {
            for v in [f64::from_bits(bits), f64::from(f32::from_bits(small)), f64::from(small) / 1000.0] {
                if !may_be_a_rounding_tie(v) {
                    let mut out = String::new();
                    push_float_text(&mut out, zmij::Buffer::new().format_finite(v));
                    proptest::prop_assert_eq!(out, v.to_string());
                }
            }
        }

        /// Dates and times are written by hand exactly as the format strings they replace would
        /// write them (stored target values and digests depend on this text).
        #[test]
        fn temporal_texts_match_the_format_strings(
            year in proptest::prelude::any::<u16>(), month in 0u8..=255, day in 0u8..=255,
            hour in 0u8..=255, minute in 0u8..=255, second in 0u8..=255,
            hours in proptest::prelude::any::<u16>(), micros in 0u32..1_000_000, fsp in 0u8..=8,
            negative in proptest::prelude::any::<bool>(),
        ) {
            let fraction = if fsp == 0 {
                String::new()
            } else {
                format!(".{}", &format!("{micros:06}")[..usize::from(fsp.min(6))])
            };
            let dt = Value::DateTime(DateTime { year, month, day, hour, minute, second, micros, fsp });
            proptest::prop_assert_eq!(
                dt.to_string(),
                format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02}{fraction}")
            );
            let ts = Value::Timestamp(DateTime { year, month, day, hour, minute, second, micros, fsp });
            proptest::prop_assert_eq!(ts.to_string(), dt.to_string());
            proptest::prop_assert_eq!(
                Value::Date { year, month, day }.to_string(),
                format!("{year:04}-{month:02}-{day:02}")
            );
            let sign = if negative { "-" } else { "" };
            proptest::prop_assert_eq!(
                Value::Time { negative, hours, minute, second, micros, fsp }.to_string(),
                format!("{sign}{hours:02}:{minute:02}:{second:02}{fraction}")
            );
        }
    }
}
