//! Bounds check of untrusted data, before apache-avro allocates anything: a datum is walked
//! against its schema and must be exactly one datum of it; a length or a count larger than the
//! bytes left is refused as corrupt.

use super::*;

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn fail(&self, problem: impl fmt::Display) -> FieldError {
        FieldError::new(format!("at byte {} of the datum, {problem}", self.pos))
    }

    fn bytes(&mut self, n: usize) -> Result<&[u8], FieldError> {
        if n > self.remaining() {
            return Err(self.fail(format_args!(
                "needs {n} bytes but only {} remain",
                self.remaining()
            )));
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// A zig-zag varint long, at most 10 bytes.
    fn long(&mut self) -> Result<i64, FieldError> {
        let mut n: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.data.get(self.pos) else {
                return Err(self.fail("the data ends inside a number"));
            };
            self.pos += 1;
            n |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((n >> 1) as i64) ^ -((n & 1) as i64));
            }
        }
        Err(self.fail("a number is longer than 10 bytes"))
    }

    /// A length or count: not negative and not beyond the remaining bytes.
    fn len(&mut self, what: &str) -> Result<usize, FieldError> {
        let n = self.long()?;
        match usize::try_from(n) {
            Ok(n) if n <= self.remaining() => Ok(n),
            Err(_) => Err(self.fail(format_args!("{what} {n} is negative"))),
            _ => Err(self.fail(format_args!(
                "{what} {n} exceeds the {} bytes that remain",
                self.remaining()
            ))),
        }
    }

    fn index(&mut self, count: usize, what: &str) -> Result<usize, FieldError> {
        let n = self.long()?;
        match usize::try_from(n) {
            Ok(i) if i < count => Ok(i),
            _ => Err(self.fail(format_args!(
                "{what} index {n} does not exist ({count} known)"
            ))),
        }
    }
}

/// Check that `data` is exactly one datum of `schema`.
pub(super) fn datum(
    schema: &Schema,
    names: &HashMap<String, Schema>,
    data: &[u8],
) -> Result<(), FieldError> {
    let mut cur = Cursor { data, pos: 0 };
    walk(schema, names, &mut cur)?;
    if cur.remaining() > 0 {
        return Err(cur.fail(format_args!(
            "{} bytes follow the end of the record",
            cur.remaining()
        )));
    }
    Ok(())
}

fn walk(
    schema: &Schema,
    names: &HashMap<String, Schema>,
    cur: &mut Cursor<'_>,
) -> Result<(), FieldError> {
    match schema {
        Schema::Null => Ok(()),
        Schema::Boolean => {
            let b = cur.bytes(1)?[0];
            if b > 1 {
                cur.pos -= 1;
                return Err(cur.fail(format_args!("{b} is not a boolean (0 or 1)")));
            }
            Ok(())
        }
        Schema::Int | Schema::Date | Schema::TimeMillis => {
            let n = cur.long()?;
            if i32::try_from(n).is_err() {
                return Err(cur.fail(format_args!("{n} does not fit an Avro int")));
            }
            Ok(())
        }
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => cur.long().map(|_| ()),
        Schema::Float => cur.bytes(4).map(|_| ()),
        Schema::Double => cur.bytes(8).map(|_| ()),
        Schema::Bytes | Schema::BigDecimal => {
            let n = cur.len("byte length")?;
            cur.bytes(n).map(|_| ())
        }
        Schema::String | Schema::Uuid => {
            let n = cur.len("string length")?;
            let start = cur.pos;
            let s = cur.bytes(n)?;
            if std::str::from_utf8(s).is_err() {
                cur.pos = start;
                return Err(cur.fail("the string is not valid UTF-8"));
            }
            Ok(())
        }
        Schema::Fixed(f) => cur.bytes(f.size).map(|_| ()),
        Schema::Duration => cur.bytes(12).map(|_| ()),
        Schema::Decimal(d) => walk(&d.inner, names, cur),
        Schema::Enum(e) => cur.index(e.symbols.len(), "enum symbol").map(|_| ()),
        Schema::Union(u) => {
            let i = cur.index(u.variants().len(), "union branch")?;
            walk(&u.variants()[i], names, cur)
        }
        Schema::Record(r) => {
            for f in &r.fields {
                walk(&f.schema, names, cur).map_err(|e| e.at(&f.name))?;
            }
            Ok(())
        }
        Schema::Array(a) => {
            let mut i = 0usize;
            blocks(cur, |cur| {
                let r = walk(&a.items, names, cur).map_err(|e| e.at(&format!("[{i}]")));
                i += 1;
                r
            })
        }
        Schema::Map(m) => blocks(cur, |cur| {
            walk(&Schema::String, names, cur)?;
            walk(&m.types, names, cur)
        }),
        Schema::Ref { name } => match names.get(&name.fullname(None)) {
            Some(s) => walk(s, names, cur),
            None => Err(cur.fail(format_args!(
                "the schema refers to unknown type {}",
                name.fullname(None)
            ))),
        },
    }
}

/// Array and map blocks: a count (negative: followed by the block's byte size), items, and
/// a zero count at the end. Every item of our schemas takes at least one byte, so a count
/// larger than the remaining bytes is corrupt.
fn blocks(
    cur: &mut Cursor<'_>,
    mut item: impl FnMut(&mut Cursor<'_>) -> Result<(), FieldError>,
) -> Result<(), FieldError> {
    loop {
        let n = cur.long()?;
        if n == 0 {
            return Ok(());
        }
        if n < 0 {
            cur.len("block size")?;
        }
        let count = n.unsigned_abs();
        if count > cur.remaining() as u64 {
            return Err(cur.fail(format_args!(
                "a block of {count} items exceeds the {} bytes that remain",
                cur.remaining()
            )));
        }
        for _ in 0..count {
            item(cur)?;
        }
    }
}
