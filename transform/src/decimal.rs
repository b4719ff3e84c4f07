//! Exact decimal numbers as text, for conversions and comparisons.
//!
//! MySQL's DECIMAL holds up to 65 digits, more than any fixed-width Rust type (or
//! `rust_decimal`'s 28 digits) can hold, so values are kept as digit strings: a sign, the integer
//! digits without leading zeros and the fraction digits without trailing zeros. That form is
//! unique per number, so equality and order are plain string comparisons.

use std::cmp::Ordering;

/// An exact decimal number in normal form (zero is never negative).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dec {
    neg: bool,
    /// Integer digits without leading zeros; empty for zero.
    int: String,
    /// Fraction digits without trailing zeros; empty for an integer.
    frac: String,
}

impl Dec {
    /// Parse plain decimal notation: `-?[0-9]+(\.[0-9]+)?`. No exponent, no `+`, no spaces.
    pub(crate) fn parse(s: &str) -> Option<Dec> {
        let (neg, body) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (int, frac) = match body.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (body, None),
        };
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if let Some(f) = frac {
            if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
        }
        Some(Dec::from_parts(neg, int, frac.unwrap_or("")))
    }

    fn from_parts(neg: bool, int: &str, frac: &str) -> Dec {
        let int = int.trim_start_matches('0').to_string();
        let frac = frac.trim_end_matches('0').to_string();
        let zero = int.is_empty() && frac.is_empty();
        Dec {
            neg: neg && !zero,
            int,
            frac,
        }
    }

    pub(crate) fn from_i128(v: i128) -> Dec {
        let digits = v.unsigned_abs().to_string();
        Dec::from_parts(v < 0, &digits, "")
    }

    /// Number of digits before the decimal point (0 for |x| < 1).
    pub(crate) fn int_digits(&self) -> usize {
        self.int.len()
    }

    /// Number of significant digits after the decimal point.
    pub(crate) fn frac_digits(&self) -> usize {
        self.frac.len()
    }

    pub(crate) fn is_integer(&self) -> bool {
        self.frac.is_empty()
    }

    /// The value as an integer, if it is one and fits.
    pub(crate) fn to_i128(&self) -> Option<i128> {
        if !self.is_integer() || self.int.len() > 38 {
            return None;
        }
        let magnitude: i128 = if self.int.is_empty() {
            0
        } else {
            self.int.parse().ok()?
        };
        Some(if self.neg { -magnitude } else { magnitude })
    }

    /// Text with exactly `scale` fraction digits; `None` if that would drop a nonzero digit.
    pub(crate) fn render(&self, scale: usize) -> Option<String> {
        if self.frac.len() > scale {
            return None;
        }
        let mut out = String::new();
        if self.neg {
            out.push('-');
        }
        out.push_str(if self.int.is_empty() { "0" } else { &self.int });
        if scale > 0 {
            out.push('.');
            out.push_str(&self.frac);
            out.extend(std::iter::repeat_n('0', scale - self.frac.len()));
        }
        Some(out)
    }

    fn cmp_magnitude(&self, other: &Dec) -> Ordering {
        self.int
            .len()
            .cmp(&other.int.len())
            .then_with(|| self.int.cmp(&other.int))
            .then_with(|| self.frac.cmp(&other.frac))
    }
}

impl Ord for Dec {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.neg, other.neg) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_magnitude(other),
            (true, true) => other.cmp_magnitude(self),
        }
    }
}

impl PartialOrd for Dec {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Parse canonical integer text: `0`, or an optional `-` and digits without a leading zero.
/// Canonical-only parsing keeps text → integer conversions injective (`"01"` and `"1"` do not
/// both become 1).
pub(crate) fn parse_canonical_int(s: &str) -> Option<i128> {
    let body = s.strip_prefix('-').unwrap_or(s);
    let canonical = !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_digit())
        && (body == "0" || !body.starts_with('0'))
        && s != "-0"
        && body.len() <= 38;
    if canonical {
        s.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_form_orders_and_renders() {
        let d = |s| Dec::parse(s).unwrap();
        assert_eq!(d("-0.000"), d("0"));
        assert_eq!(d("007.50"), d("7.5"));
        assert!(d("-1.5") < d("-1.25"));
        assert!(d("10") > d("9.99"));
        assert!(d("0.001") < d("0.01"));
        assert_eq!(d("1.5").render(2).as_deref(), Some("1.50"));
        assert_eq!(d("-0.5").render(0), None);
        assert_eq!(d("-12").render(0).as_deref(), Some("-12"));
        assert_eq!(d("0.25").render(3).as_deref(), Some("0.250"));
        assert_eq!(d("12.000").to_i128(), Some(12));
        assert_eq!(d("12.1").to_i128(), None);
        for bad in ["", "-", ".5", "5.", "1e5", "+1", " 1", "1.2.3", "0x10"] {
            assert!(Dec::parse(bad).is_none(), "{bad:?} must not parse");
        }
        assert_eq!(parse_canonical_int("-17"), Some(-17));
        for bad in ["01", "-0", "+1", "1.0", "", "-", " 1"] {
            assert!(
                parse_canonical_int(bad).is_none(),
                "{bad:?} is not canonical"
            );
        }
    }
}
