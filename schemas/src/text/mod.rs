//! The canonical text of values, both ways: one module owns how every value is written as text
//! and how that text is read back.
//!
//! The canonical text is the form MySQL itself prints for a value (binary data in `0x…` hex),
//! deterministic: no locale, the shortest round-trip digits of a float, exactly `fsp` fraction
//! digits of a date-time or time. Digests, keys and lossless text storage in the targets are all
//! made from it, so it never changes for a value, and a text that is not in this form is never
//! read as a value.
//!
//! - `write`: `Display` of a [`crate::Value`], dates and times built on the stack
//!   ([`TemporalText`]), a row's canonical text (keys) and the bytes its digest hashes.
//! - `parse`: the one strict parse of a value's text in a column of a given type (what the sinks
//!   read back, the decoder's text-protocol values, the transform's text-to-temporal
//!   conversions).

mod parse;
mod write;

pub use parse::{check_decimal, parse_date, parse_time, value_from_text};
pub use write::{is_canonical_decimal, TemporalText};
