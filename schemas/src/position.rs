//! Binlog coordinates: `file:offset`, ordered by the file's sequence number, then the offset.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A position in the source's binlog: the file name and a byte offset inside it.
///
/// The file name is interned ([`crate::Ustr`]): a source has one name per binlog file, and every
/// change read from a file carries its name, so a position is copied, never allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BinlogPosition {
    pub file: crate::Ustr,
    pub offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PositionError {
    #[error("`{0}` is not a binlog position of the form file:offset (e.g. mysql-bin.000003:1234)")]
    Malformed(String),
    #[error("binlog file `{0}` has no numeric extension (expected a name like mysql-bin.000003)")]
    NoSequence(String),
}

impl BinlogPosition {
    pub fn new(file: impl Into<crate::Ustr>, offset: u64) -> Self {
        BinlogPosition {
            file: file.into(),
            offset,
        }
    }

    /// `file:offset`, as [`fmt::Display`] writes it, in one allocation of the exact size
    /// (lineage carries this text for every record).
    pub fn text(&self) -> String {
        let mut digits = itoa::Buffer::new();
        let offset = digits.format(self.offset);
        let mut text = String::with_capacity(self.file.len() + 1 + offset.len());
        text.push_str(&self.file);
        text.push(':');
        text.push_str(offset);
        text
    }

    /// The sequence number of the binlog file: the numeric extension of `mysql-bin.000003`.
    pub fn file_seq(&self) -> Result<u64, PositionError> {
        file_seq(&self.file)
    }
}

/// The sequence number in a binlog file name (`mysql-bin.000003` → 3).
pub fn file_seq(file: &str) -> Result<u64, PositionError> {
    file.rsplit_once('.')
        .and_then(|(_, ext)| ext.parse::<u64>().ok())
        .ok_or_else(|| PositionError::NoSequence(file.to_string()))
}

impl Ord for BinlogPosition {
    fn cmp(&self, other: &Self) -> Ordering {
        let a = file_seq(&self.file).ok();
        let b = file_seq(&other.file).ok();
        a.cmp(&b)
            .then_with(|| self.file.cmp(&other.file))
            .then(self.offset.cmp(&other.offset))
    }
}

impl PartialOrd for BinlogPosition {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written piece by piece: lineage carries this text for every record.
        f.write_str(&self.file)?;
        f.write_str(":")?;
        f.write_str(itoa::Buffer::new().format(self.offset))
    }
}

impl FromStr for BinlogPosition {
    type Err = PositionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (file, offset) = s
            .rsplit_once(':')
            .ok_or_else(|| PositionError::Malformed(s.to_string()))?;
        let offset = offset
            .parse()
            .map_err(|_| PositionError::Malformed(s.to_string()))?;
        if file.is_empty() {
            return Err(PositionError::Malformed(s.to_string()));
        }
        Ok(BinlogPosition::new(file, offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn orders_by_sequence_then_offset() {
        let a: BinlogPosition = "bin.000009:900".parse().unwrap();
        let b: BinlogPosition = "bin.000010:4".parse().unwrap();
        assert!(a < b);
        assert_eq!(b.file_seq().unwrap(), 10);
        assert!("nocolon".parse::<BinlogPosition>().is_err());
        assert!(BinlogPosition::new("noext", 4).file_seq().is_err());
    }

    proptest! {
        #[test]
        fn text_round_trips(seq in 0u64..1_000_000, off in any::<u32>()) {
            let p = BinlogPosition::new(format!("mysql-bin.{seq:06}"), u64::from(off));
            let back: BinlogPosition = p.to_string().parse().unwrap();
            prop_assert_eq!(&back, &p);
            prop_assert_eq!(back.file_seq().unwrap(), seq);
        }
    }
}
