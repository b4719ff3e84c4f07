//! Typing and evaluation of expressions and predicates against one source table.
//!
//! Compiling resolves every column to its position in the source table, infers each
//! subexpression's type (a [`TargetType`] describing the values it yields, plus nullability),
//! adapts literals to the type they meet, and rejects what could fail for every row (an unknown
//! column, `lower` of a number, comparing a date with a number). What remains to fail at run time
//! is data: a cast that is not exact, an invalid date given to `date_format`.
//!
//! Semantics, chosen to be total and the same everywhere:
//! - NULL in, NULL out for every function but `coalesce`; a comparison with NULL is unknown and
//!   a filter keeps a row only when its predicate is true (SQL `WHERE`).
//! - Text compares by Unicode code point (binary collation): no locale, no case folding.
//!   Numbers compare exactly (integers, decimals and years together); floats with floats.
//! - `lower`/`upper` use Unicode's default full case mapping (`ß` → `SS`, final sigma), never a
//!   locale's. `trim` removes leading and trailing grapheme clusters made only of white space,
//!   and `substring(s, start[, len])` counts extended grapheme clusters from 1, so neither ever
//!   separates a base character from its combining marks. Text lengths (`text(N)`) count
//!   Unicode scalar values, as MySQL counts characters.
//! - `concat` joins the canonical texts of its arguments; `hash` is the lowercase hex SHA-256 of
//!   the UTF-8 text (raw bytes for binary values); `date_format` formats in UTC with a `time`
//!   format description (`[year]-[month]-[day]`), whose names are English and fixed.

use std::cmp::Ordering;

use sha2::{Digest, Sha256};
use tidemark_schemas::{ColumnName, DateTime, SourceSchema, TargetSchema, TargetType, Value};
use time::format_description::OwnedFormatItem;
use unicode_segmentation::UnicodeSegmentation;

use crate::config::ZeroDates;
use crate::convert::{
    convert, convertible, date_time_of, instant_order, invalid_date_fail, temporal_parts, text_of,
    to_utc, valid_date, Conv, Fail,
};
use crate::error::RejectionKind;
use crate::syntax::{render_type, CmpOp, Expr, Func, Literal, Pred};
use crate::target_type_for;

/// A type and whether NULL is possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Typed {
    pub ty: TargetType,
    pub nullable: bool,
}

/// A compiled value expression.
#[derive(Debug, Clone)]
pub(crate) enum CExpr {
    Column {
        index: usize,
    },
    Const(Value),
    Concat(Vec<CExpr>),
    Lower(Box<CExpr>),
    Upper(Box<CExpr>),
    Trim(Box<CExpr>),
    Substring {
        arg: Box<CExpr>,
        start: usize,
        len: Option<usize>,
    },
    Coalesce(Vec<CExpr>),
    Cast {
        arg: Box<CExpr>,
        ty: TargetType,
        zero_dates: ZeroDates,
    },
    DateFormat {
        arg: Box<CExpr>,
        format: OwnedFormatItem,
        zero_dates: ZeroDates,
    },
    Hash(Box<CExpr>),
}

/// How two sides of a comparison are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Domain {
    Numeric,
    Float,
    Text,
    Bytes,
    Temporal,
    Time,
}

/// A compiled predicate.
#[derive(Debug, Clone)]
pub(crate) enum CPred {
    And(Vec<CPred>),
    Or(Vec<CPred>),
    Not(Box<CPred>),
    Cmp {
        op: CmpOp,
        left: CExpr,
        right: CExpr,
        domain: Domain,
    },
    IsNull {
        arg: CExpr,
        negated: bool,
    },
    In {
        arg: CExpr,
        list: Vec<Value>,
        domain: Domain,
        negated: bool,
    },
}

/// The source row as the plan sees it: values by source column position.
pub(crate) struct Input<'a> {
    names: &'a [ColumnName],
    values: Vec<Option<&'a Value>>,
}

impl<'a> Input<'a> {
    /// Values of `row` in the order of `names` (a fast path when the row is in table order).
    pub(crate) fn resolve(names: &'a [ColumnName], row: &'a tidemark_schemas::Row) -> Input<'a> {
        let values = names
            .iter()
            .enumerate()
            .map(|(i, name)| match row.0.get(i) {
                Some((n, v)) if n == name => Some(v),
                _ => row.get(name),
            })
            .collect();
        Input { names, values }
    }

    pub(crate) fn get(&self, index: usize) -> Conv<&'a Value> {
        self.values.get(index).copied().flatten().ok_or_else(|| {
            Fail::new(
                RejectionKind::SchemaMismatch,
                format!(
                    "column {} is missing from the row image; the source table changed without a new table description",
                    self.names.get(index).map_or("?", ColumnName::as_str)
                ),
            )
        })
    }
}

/// The columns an expression may name: a source table's (a mapping, the source side of an
/// invariant) or a target table's (the target side of an invariant).
#[derive(Clone, Copy)]
pub(crate) enum Columns<'a> {
    Source(&'a SourceSchema),
    Target(&'a TargetSchema),
}

impl Columns<'_> {
    /// The column's position and type.
    fn find(&self, name: &str) -> Option<(usize, Typed)> {
        match self {
            Columns::Source(s) => s.columns.iter().position(|c| c.name == name).map(|i| {
                let c = &s.columns[i];
                (
                    i,
                    Typed {
                        ty: target_type_for(&c.ty),
                        nullable: c.nullable,
                    },
                )
            }),
            Columns::Target(t) => t.columns.iter().position(|c| c.name == name).map(|i| {
                let c = &t.columns[i];
                (
                    i,
                    Typed {
                        ty: c.ty.clone(),
                        nullable: c.nullable,
                    },
                )
            }),
        }
    }

    /// The column names in table order (the order [`Input::resolve`] takes them in).
    pub(crate) fn names(&self) -> Vec<ColumnName> {
        match self {
            Columns::Source(s) => s.columns.iter().map(|c| c.name).collect(),
            Columns::Target(t) => t.columns.iter().map(|c| c.name).collect(),
        }
    }

    fn unknown(&self, name: &str) -> String {
        match self {
            Columns::Source(s) => unknown_column(s, name),
            Columns::Target(t) => no_such_column(
                "target",
                &t.table,
                t.columns.iter().map(|c| c.name.as_str()),
                name,
            ),
        }
    }
}

/// Compile-time context: the columns expressions may name and the zero-date policy.
pub(crate) struct Ctx<'a> {
    pub columns: Columns<'a>,
    pub zero_dates: ZeroDates,
}

fn is_dateish(ty: &TargetType) -> bool {
    matches!(
        ty,
        TargetType::Date | TargetType::DateTime { .. } | TargetType::Timestamp { .. }
    )
}

/// Longest canonical text of a value of `ty`, in characters, when bounded.
fn max_text_len(ty: &TargetType) -> Option<u64> {
    let len = |s: String| s.chars().count() as u64;
    let fsp = |f: u8| if f > 0 { u64::from(f) + 1 } else { 0 };
    match ty {
        TargetType::Text { max_chars } => *max_chars,
        TargetType::Enum { members } => members.iter().map(|m| len(m.clone())).max(),
        TargetType::Set { members } => Some(
            members
                .iter()
                .map(|m| len(m.clone()) + 1)
                .sum::<u64>()
                .saturating_sub(1),
        ),
        TargetType::Int { bits } => Some(len((-(1i128 << (bits - 1))).to_string())),
        TargetType::UInt { bits } => Some(len(((1i128 << bits) - 1).to_string())),
        TargetType::Bit { width } => Some(len(((1i128 << width) - 1).to_string())),
        TargetType::Decimal { precision, .. } => Some(u64::from(*precision) + 3),
        TargetType::Year => Some(4),
        TargetType::Date => Some(10),
        TargetType::DateTime { fsp: f } | TargetType::Timestamp { fsp: f } => Some(19 + fsp(*f)),
        TargetType::Time { fsp: f } => Some(10 + fsp(*f)),
        TargetType::Float
        | TargetType::Double
        | TargetType::Json
        | TargetType::Bytes { .. }
        | TargetType::Geometry => None,
    }
}

/// The common type of `coalesce` arguments.
fn join(a: &TargetType, b: &TargetType) -> Option<TargetType> {
    use TargetType as T;
    match (a, b) {
        (T::Text { max_chars: x }, T::Text { max_chars: y }) => Some(T::Text {
            max_chars: x.zip(*y).map(|(x, y)| x.max(y)),
        }),
        (T::Bytes { max_len: x }, T::Bytes { max_len: y }) => Some(T::Bytes {
            max_len: x.zip(*y).map(|(x, y)| x.max(y)),
        }),
        (T::Int { bits: x }, T::Int { bits: y }) => Some(T::Int { bits: *x.max(y) }),
        (T::UInt { bits: x }, T::UInt { bits: y }) => Some(T::UInt { bits: *x.max(y) }),
        (a, b) if a == b => Some(a.clone()),
        _ => None,
    }
}

fn literal_value(l: &Literal) -> Result<(Value, TargetType), String> {
    Ok(match l {
        Literal::Str(s) => (
            Value::Text(s.clone()),
            TargetType::Text {
                max_chars: Some(s.chars().count() as u64),
            },
        ),
        Literal::Int(i) => {
            if let Ok(v) = i64::try_from(*i) {
                (Value::Int(v), TargetType::Int { bits: 64 })
            } else if let Ok(v) = u64::try_from(*i) {
                (Value::UInt(v), TargetType::UInt { bits: 64 })
            } else {
                return Err(format!("the integer {i} is beyond 64 bits"));
            }
        }
        Literal::Dec(d) => {
            let (int, frac) = d.trim_start_matches('-').split_once('.').unwrap_or((d, ""));
            let int_digits = int.trim_start_matches('0').len();
            let precision = (int_digits + frac.len()).max(1);
            if precision > 65 || frac.len() > 30 {
                return Err(format!(
                    "the number {d} has more digits than a decimal holds (65, 30 after the point)"
                ));
            }
            (
                Value::Decimal(d.clone()),
                TargetType::Decimal {
                    precision: precision as u8,
                    scale: frac.len() as u8,
                },
            )
        }
    })
}

fn text_arg(func: Func, t: &Typed) -> Result<(), String> {
    match t.ty {
        TargetType::Text { .. } | TargetType::Enum { .. } => Ok(()),
        _ => Err(format!(
            "{}(…) takes text, not {}; write cast(… as text) to use its canonical text",
            func.name(),
            render_type(&t.ty)
        )),
    }
}

impl Ctx<'_> {
    fn column(&self, name: &str) -> Result<(usize, Typed), String> {
        self.columns
            .find(name)
            .ok_or_else(|| self.columns.unknown(name))
    }

    /// Compile a value expression.
    pub(crate) fn expr(&self, e: &Expr) -> Result<(CExpr, Typed), String> {
        match e {
            Expr::Column(name) => {
                let (index, t) = self.column(name)?;
                Ok((CExpr::Column { index }, t))
            }
            Expr::Literal(l) => {
                let (v, ty) = literal_value(l)?;
                Ok((
                    CExpr::Const(v),
                    Typed {
                        ty,
                        nullable: false,
                    },
                ))
            }
            Expr::Cast { arg, ty } => {
                let (a, t) = self.expr(arg)?;
                convertible(&t.ty, ty).map_err(|m| format!("cast: {m}"))?;
                let nullable = t.nullable || (self.zero_dates == ZeroDates::Null && is_dateish(ty));
                Ok((
                    CExpr::Cast {
                        arg: Box::new(a),
                        ty: ty.clone(),
                        zero_dates: self.zero_dates,
                    },
                    Typed {
                        ty: ty.clone(),
                        nullable,
                    },
                ))
            }
            Expr::Call { func, args } => self.call(*func, args),
        }
    }

    fn call(&self, func: Func, args: &[Expr]) -> Result<(CExpr, Typed), String> {
        let compiled = args
            .iter()
            .map(|a| self.expr(a))
            .collect::<Result<Vec<_>, _>>()?;
        let any_nullable = compiled.iter().any(|(_, t)| t.nullable);
        let unary = |compiled: Vec<(CExpr, Typed)>| {
            let mut it = compiled.into_iter();
            it.next()
                .ok_or_else(|| format!("{}(…) needs an argument", func.name()))
        };
        match func {
            Func::Concat => {
                let mut max = Some(0u64);
                for (i, (_, t)) in compiled.iter().enumerate() {
                    if matches!(t.ty, TargetType::Bytes { .. } | TargetType::Geometry) {
                        return Err(format!(
                            "concat: argument {} is {}; binary data has no text (hash(…) it, or cast text columns stored as bytes)",
                            i + 1,
                            render_type(&t.ty)
                        ));
                    }
                    max = max.zip(max_text_len(&t.ty)).map(|(a, b)| a + b);
                }
                Ok((
                    CExpr::Concat(compiled.into_iter().map(|(c, _)| c).collect()),
                    Typed {
                        ty: TargetType::Text { max_chars: max },
                        nullable: any_nullable,
                    },
                ))
            }
            Func::Lower | Func::Upper => {
                let (a, t) = unary(compiled)?;
                text_arg(func, &t)?;
                let node = if func == Func::Lower {
                    CExpr::Lower(Box::new(a))
                } else {
                    CExpr::Upper(Box::new(a))
                };
                // Full case mapping can lengthen text (ß → SS), so no bound is inferred.
                Ok((
                    node,
                    Typed {
                        ty: TargetType::Text { max_chars: None },
                        nullable: t.nullable,
                    },
                ))
            }
            Func::Trim => {
                let (a, t) = unary(compiled)?;
                text_arg(func, &t)?;
                Ok((
                    CExpr::Trim(Box::new(a)),
                    Typed {
                        ty: TargetType::Text {
                            max_chars: max_text_len(&t.ty),
                        },
                        nullable: t.nullable,
                    },
                ))
            }
            Func::Substring => {
                let mut it = compiled.into_iter();
                let (a, t) = it.next().ok_or("substring(…) needs a text")?;
                text_arg(func, &t)?;
                let int_at = |i: usize| match args.get(i) {
                    Some(Expr::Literal(Literal::Int(n))) => usize::try_from(*n).ok(),
                    _ => None,
                };
                let start = int_at(1)
                    .filter(|s| *s >= 1)
                    .ok_or("substring: the start must be an integer literal from 1")?;
                let len =
                    match args.len() {
                        3 => Some(int_at(2).ok_or(
                            "substring: the length must be a non-negative integer literal",
                        )?),
                        _ => None,
                    };
                Ok((
                    CExpr::Substring {
                        arg: Box::new(a),
                        start,
                        len,
                    },
                    Typed {
                        ty: TargetType::Text {
                            max_chars: max_text_len(&t.ty),
                        },
                        nullable: t.nullable,
                    },
                ))
            }
            Func::Coalesce => self.coalesce(compiled),
            Func::DateFormat => {
                let (a, t) = compiled
                    .into_iter()
                    .next()
                    .ok_or("date_format(…) needs a date")?;
                if !is_dateish(&t.ty) {
                    return Err(format!(
                        "date_format: the first argument is {}, not a date, datetime or timestamp; cast(… as datetime) text first",
                        render_type(&t.ty)
                    ));
                }
                let text = match args.get(1) {
                    Some(Expr::Literal(Literal::Str(s))) => s,
                    _ => return Err("date_format: the format must be a string literal".into()),
                };
                let format = time::format_description::parse_owned::<1>(text)
                    .map_err(|e| format!("date_format: `{text}`: {e}"))?;
                Ok((
                    CExpr::DateFormat {
                        arg: Box::new(a),
                        format,
                        zero_dates: self.zero_dates,
                    },
                    Typed {
                        ty: TargetType::Text { max_chars: None },
                        nullable: t.nullable || self.zero_dates == ZeroDates::Null,
                    },
                ))
            }
            Func::Hash => {
                let (a, t) = unary(compiled)?;
                Ok((
                    CExpr::Hash(Box::new(a)),
                    Typed {
                        ty: TargetType::Text {
                            max_chars: Some(64),
                        },
                        nullable: t.nullable,
                    },
                ))
            }
        }
    }

    fn coalesce(&self, compiled: Vec<(CExpr, Typed)>) -> Result<(CExpr, Typed), String> {
        let base = compiled
            .iter()
            .find(|(c, _)| !matches!(c, CExpr::Const(_)))
            .or(compiled.first())
            .map(|(_, t)| t.ty.clone())
            .ok_or("coalesce(…) needs arguments")?;
        let mut joined: Option<TargetType> = None;
        let mut nodes = Vec::with_capacity(compiled.len());
        let mut nullable = true;
        for (i, (c, t)) in compiled.into_iter().enumerate() {
            let (node, ty) = match c {
                CExpr::Const(v)
                    if !matches!((&base, &v), (TargetType::Text { .. }, Value::Text(_))) =>
                {
                    let adapted = convert(&v, &base, ZeroDates::Reject).map_err(|f| {
                        format!(
                            "coalesce: the literal {v} does not fit {}, the type of the other arguments: it {}",
                            render_type(&base),
                            f.reason
                        )
                    })?;
                    (CExpr::Const(adapted), base.clone())
                }
                other => (other, t.ty),
            };
            joined = match joined {
                None => Some(ty),
                Some(j) => Some(join(&j, &ty).ok_or_else(|| {
                    format!(
                        "coalesce: argument {} is {} but an earlier one is {}; cast them to one type",
                        i + 1,
                        render_type(&ty),
                        render_type(&j)
                    )
                })?),
            };
            nullable &= t.nullable;
            nodes.push(node);
        }
        Ok((
            CExpr::Coalesce(nodes),
            Typed {
                ty: joined.unwrap_or(base),
                nullable,
            },
        ))
    }

    /// Compile a predicate.
    pub(crate) fn pred(&self, p: &Pred) -> Result<CPred, String> {
        Ok(match p {
            Pred::And(ps) => CPred::And(ps.iter().map(|p| self.pred(p)).collect::<Result<_, _>>()?),
            Pred::Or(ps) => CPred::Or(ps.iter().map(|p| self.pred(p)).collect::<Result<_, _>>()?),
            Pred::Not(p) => CPred::Not(Box::new(self.pred(p)?)),
            Pred::IsNull { arg, negated } => CPred::IsNull {
                arg: self.expr(arg)?.0,
                negated: *negated,
            },
            Pred::Cmp { op, left, right } => {
                let l_lit = matches!(left, Expr::Literal(_));
                let r_lit = matches!(right, Expr::Literal(_));
                if l_lit && r_lit {
                    return Err(format!("`{p}` compares two literals"));
                }
                let (lc, lt) = self.expr(left)?;
                let (rc, rt) = self.expr(right)?;
                let (domain, lc, rc) = if let (Expr::Literal(l), false) = (left, r_lit) {
                    let d = domain_of(&rt.ty);
                    (d, CExpr::Const(adapt_literal(l, &rt.ty)?), rc)
                } else if let Expr::Literal(r) = right {
                    let d = domain_of(&lt.ty);
                    (d, lc, CExpr::Const(adapt_literal(r, &lt.ty)?))
                } else {
                    let (dl, dr) = (domain_of(&lt.ty), domain_of(&rt.ty));
                    let mixed_instants = matches!(
                        (&lt.ty, &rt.ty),
                        (TargetType::Timestamp { .. }, TargetType::DateTime { .. })
                            | (TargetType::DateTime { .. }, TargetType::Timestamp { .. })
                    );
                    if dl != dr || mixed_instants {
                        return Err(format!(
                            "`{p}` compares {} with {}; cast one side to the other's type",
                            render_type(&lt.ty),
                            render_type(&rt.ty)
                        ));
                    }
                    (dl, lc, rc)
                };
                CPred::Cmp {
                    op: *op,
                    left: lc,
                    right: rc,
                    domain,
                }
            }
            Pred::In { arg, list, negated } => {
                let (a, t) = self.expr(arg)?;
                let list = list
                    .iter()
                    .map(|l| adapt_literal(l, &t.ty))
                    .collect::<Result<_, _>>()?;
                CPred::In {
                    arg: a,
                    list,
                    domain: domain_of(&t.ty),
                    negated: *negated,
                }
            }
        })
    }
}

/// The "no such column" message, with the table's columns and a case-insensitive suggestion.
pub(crate) fn unknown_column(schema: &SourceSchema, name: &str) -> String {
    no_such_column(
        "source",
        &schema.table,
        schema.columns.iter().map(|c| c.name.as_str()),
        name,
    )
}

/// "no column `name` in {side} table {table} (did you mean …?); its columns are …".
fn no_such_column<'a>(
    side: &str,
    table: &dyn std::fmt::Display,
    columns: impl Iterator<Item = &'a str>,
    name: &str,
) -> String {
    let all: Vec<&str> = columns.collect();
    let suggestion = all
        .iter()
        .find(|c| c.eq_ignore_ascii_case(name))
        .map(|c| format!(" (did you mean `{c}`? column names are exact)"))
        .unwrap_or_default();
    format!(
        "no column `{name}` in {side} table {table}{suggestion}; its columns are {}",
        all.join(", ")
    )
}

pub(crate) fn domain_of(ty: &TargetType) -> Domain {
    use TargetType as T;
    match ty {
        T::Int { .. } | T::UInt { .. } | T::Decimal { .. } | T::Year | T::Bit { .. } => {
            Domain::Numeric
        }
        T::Float | T::Double => Domain::Float,
        T::Text { .. } | T::Enum { .. } | T::Set { .. } | T::Json => Domain::Text,
        T::Bytes { .. } | T::Geometry => Domain::Bytes,
        T::Date | T::DateTime { .. } | T::Timestamp { .. } => Domain::Temporal,
        T::Time { .. } => Domain::Time,
    }
}

/// A literal as a value comparable with values of `ty`, or why it cannot be one.
fn adapt_literal(l: &Literal, ty: &TargetType) -> Result<Value, String> {
    let (v, _) = literal_value(l)?;
    let mismatch = || {
        format!(
            "the literal {l} cannot be compared with {}",
            render_type(ty)
        )
    };
    match (domain_of(ty), &v) {
        (Domain::Numeric, Value::Int(_) | Value::UInt(_) | Value::Decimal(_)) => Ok(v),
        (Domain::Float, Value::Int(_) | Value::UInt(_) | Value::Decimal(_)) => {
            // Floats compare exactly: the literal must be a value of the column's float type.
            let float_ty = if *ty == TargetType::Float {
                TargetType::Float
            } else {
                TargetType::Double
            };
            let text = Value::Text(v.to_string());
            convert(&text, &float_ty, ZeroDates::Reject).map_err(|f| {
                format!(
                    "the literal {l} is not exactly a value of {}: it {}",
                    render_type(&float_ty),
                    f.reason
                )
            })
        }
        (Domain::Text, Value::Text(_)) => Ok(v),
        (Domain::Bytes, Value::Text(s)) => Ok(Value::Bytes(s.as_bytes().to_vec())),
        (Domain::Temporal, Value::Text(_)) => {
            let p = temporal_parts(&v).map_err(|f| format!("the literal {l} {}", f.reason))?;
            let zero = (p.year, p.month, p.day) == (0, 0, 0);
            if !valid_date(&p) && !zero {
                return Err(format!(
                    "the literal {l} is not a date: not a calendar day (only '0000-00-00' may stand for the zero date)"
                ));
            }
            Ok(Value::DateTime(DateTime { fsp: 6, ..p }))
        }
        (Domain::Time, Value::Text(_)) => {
            convert(&v, &TargetType::Time { fsp: 6 }, ZeroDates::Reject)
                .map_err(|f| format!("the literal {l} {}", f.reason))
        }
        _ => Err(mismatch()),
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation

fn grapheme_is_space(g: &str) -> bool {
    g.chars().all(char::is_whitespace)
}

/// Remove leading and trailing grapheme clusters that are only white space.
pub(crate) fn trim_graphemes(s: &str) -> &str {
    let mut start = s.len();
    for (i, g) in s.grapheme_indices(true) {
        if !grapheme_is_space(g) {
            start = i;
            break;
        }
    }
    let mut end = start;
    for (i, g) in s[start..].grapheme_indices(true).rev() {
        if !grapheme_is_space(g) {
            end = start + i + g.len();
            break;
        }
    }
    &s[start..end]
}

/// `len` grapheme clusters from the `start`-th (1-based).
pub(crate) fn substring_graphemes(s: &str, start: usize, len: Option<usize>) -> String {
    let it = s.graphemes(true).skip(start.saturating_sub(1));
    match len {
        Some(n) => it.take(n).collect(),
        None => it.collect(),
    }
}

/// Bytes hashed by `hash(…)`: UTF-8 of text, raw binary, canonical text of anything else.
fn hash_input(v: &Value) -> Vec<u8> {
    match v {
        Value::Text(s) | Value::Enum(s) | Value::Json(s) => s.as_bytes().to_vec(),
        Value::Bytes(b) | Value::Geometry(b) => b.clone(),
        other => other.to_string().into_bytes(),
    }
}

fn text_value(v: &Value) -> Conv<String> {
    text_of(v).map_err(|f| f.with_value(v))
}

impl CExpr {
    pub(crate) fn eval(&self, input: &Input<'_>) -> Conv<Value> {
        Ok(match self {
            CExpr::Column { index } => input.get(*index)?.clone(),
            CExpr::Const(v) => v.clone(),
            CExpr::Concat(args) => {
                let mut out = String::new();
                for a in args {
                    let v = a.eval(input)?;
                    if v.is_null() {
                        return Ok(Value::Null);
                    }
                    out.push_str(&text_value(&v)?);
                }
                Value::Text(out)
            }
            CExpr::Lower(a) | CExpr::Upper(a) | CExpr::Trim(a) => {
                let v = a.eval(input)?;
                if v.is_null() {
                    return Ok(Value::Null);
                }
                let s = text_value(&v)?;
                Value::Text(match self {
                    CExpr::Lower(_) => s.to_lowercase(),
                    CExpr::Upper(_) => s.to_uppercase(),
                    _ => trim_graphemes(&s).to_string(),
                })
            }
            CExpr::Substring { arg, start, len } => {
                let v = arg.eval(input)?;
                if v.is_null() {
                    return Ok(Value::Null);
                }
                Value::Text(substring_graphemes(&text_value(&v)?, *start, *len))
            }
            CExpr::Coalesce(args) => {
                for a in args {
                    let v = a.eval(input)?;
                    if !v.is_null() {
                        return Ok(v);
                    }
                }
                Value::Null
            }
            CExpr::Cast {
                arg,
                ty,
                zero_dates,
            } => {
                let v = arg.eval(input)?;
                convert(&v, ty, *zero_dates).map_err(|f| f.with_value(&v))?
            }
            CExpr::DateFormat {
                arg,
                format,
                zero_dates,
            } => {
                let v = arg.eval(input)?;
                if v.is_null() {
                    return Ok(Value::Null);
                }
                let p = date_time_of(&v).ok_or_else(|| {
                    Fail::new(
                        RejectionKind::SchemaMismatch,
                        format!("date_format got a {} value", v.kind()),
                    )
                    .with_value(&v)
                })?;
                if !valid_date(&p) {
                    return match zero_dates {
                        ZeroDates::Null => Ok(Value::Null),
                        _ => Err(invalid_date_fail(&p).with_value(&v)),
                    };
                }
                let instant = to_utc(&p).ok_or_else(|| {
                    Fail::new(RejectionKind::BadCast, "is not a time of day").with_value(&v)
                })?;
                let text = instant.format(format).map_err(|e| {
                    Fail::new(RejectionKind::BadCast, format!("cannot be formatted: {e}"))
                        .with_value(&v)
                })?;
                Value::Text(text)
            }
            CExpr::Hash(a) => {
                let v = a.eval(input)?;
                if v.is_null() {
                    return Ok(Value::Null);
                }
                Value::Text(hex::encode(Sha256::digest(hash_input(&v))))
            }
        })
    }
}

fn mismatch(v: &Value, domain: Domain) -> Fail {
    Fail::new(
        RejectionKind::SchemaMismatch,
        format!(
            "a {} value where the filter expects {domain:?} values",
            v.kind()
        ),
    )
    .with_value(v)
}

fn numeric(v: &Value) -> Option<crate::decimal::Dec> {
    use crate::decimal::Dec;
    match v {
        Value::Int(i) => Some(Dec::from_i128(i128::from(*i))),
        Value::UInt(u) => Some(Dec::from_i128(i128::from(*u))),
        Value::Year(y) => Some(Dec::from_i128(i128::from(*y))),
        Value::Bit { value, .. } => Some(Dec::from_i128(i128::from(*value))),
        Value::Decimal(s) => Dec::parse(s),
        _ => None,
    }
}

fn time_micros(v: &Value) -> Option<i64> {
    match v {
        Value::Time {
            negative,
            hours,
            minute,
            second,
            micros,
            ..
        } => {
            let m = ((i64::from(*hours) * 60 + i64::from(*minute)) * 60 + i64::from(*second))
                * 1_000_000
                + i64::from(*micros);
            Some(if *negative { -m } else { m })
        }
        _ => None,
    }
}

/// Compare two non-NULL values in a domain; `None` when unordered (a NaN).
pub(crate) fn compare(a: &Value, b: &Value, domain: Domain) -> Conv<Option<Ordering>> {
    let pick = |v: &Value| mismatch(v, domain);
    Ok(match domain {
        Domain::Numeric => {
            let x = numeric(a).ok_or_else(|| pick(a))?;
            let y = numeric(b).ok_or_else(|| pick(b))?;
            Some(x.cmp(&y))
        }
        Domain::Float => {
            let f = |v: &Value| match v {
                Value::Float(x) => Some(f64::from(*x)),
                Value::Double(x) => Some(*x),
                _ => None,
            };
            let x = f(a).ok_or_else(|| pick(a))?;
            let y = f(b).ok_or_else(|| pick(b))?;
            x.partial_cmp(&y)
        }
        Domain::Text => {
            let t = |v: &Value| match v {
                Value::Text(_) | Value::Enum(_) | Value::Json(_) | Value::Set(_) => {
                    Some(v.to_string())
                }
                _ => None,
            };
            let x = t(a).ok_or_else(|| pick(a))?;
            let y = t(b).ok_or_else(|| pick(b))?;
            Some(x.cmp(&y))
        }
        Domain::Bytes => {
            let t = |v: &Value| match v {
                Value::Bytes(b) | Value::Geometry(b) => Some(b.clone()),
                Value::Text(s) => Some(s.as_bytes().to_vec()),
                _ => None,
            };
            let x = t(a).ok_or_else(|| pick(a))?;
            let y = t(b).ok_or_else(|| pick(b))?;
            Some(x.cmp(&y))
        }
        Domain::Temporal => {
            let x = date_time_of(a).ok_or_else(|| pick(a))?;
            let y = date_time_of(b).ok_or_else(|| pick(b))?;
            Some(instant_order(&x).cmp(&instant_order(&y)))
        }
        Domain::Time => {
            let x = time_micros(a).ok_or_else(|| pick(a))?;
            let y = time_micros(b).ok_or_else(|| pick(b))?;
            Some(x.cmp(&y))
        }
    })
}

fn kleene_not(x: Option<bool>) -> Option<bool> {
    x.map(|b| !b)
}

impl CPred {
    /// Three-valued evaluation: `Some(true)`, `Some(false)` or `None` (unknown).
    pub(crate) fn eval(&self, input: &Input<'_>) -> Conv<Option<bool>> {
        Ok(match self {
            CPred::And(ps) => {
                let mut acc = Some(true);
                for p in ps {
                    match p.eval(input)? {
                        Some(false) => return Ok(Some(false)),
                        None => acc = None,
                        Some(true) => {}
                    }
                }
                acc
            }
            CPred::Or(ps) => {
                let mut acc = Some(false);
                for p in ps {
                    match p.eval(input)? {
                        Some(true) => return Ok(Some(true)),
                        None => acc = None,
                        Some(false) => {}
                    }
                }
                acc
            }
            CPred::Not(p) => kleene_not(p.eval(input)?),
            CPred::IsNull { arg, negated } => Some(arg.eval(input)?.is_null() != *negated),
            CPred::Cmp {
                op,
                left,
                right,
                domain,
            } => {
                let a = left.eval(input)?;
                let b = right.eval(input)?;
                if a.is_null() || b.is_null() {
                    return Ok(None);
                }
                compare(&a, &b, *domain)?.map(|o| match op {
                    CmpOp::Eq => o == Ordering::Equal,
                    CmpOp::Ne => o != Ordering::Equal,
                    CmpOp::Lt => o == Ordering::Less,
                    CmpOp::Le => o != Ordering::Greater,
                    CmpOp::Gt => o == Ordering::Greater,
                    CmpOp::Ge => o != Ordering::Less,
                })
            }
            CPred::In {
                arg,
                list,
                domain,
                negated,
            } => {
                let a = arg.eval(input)?;
                if a.is_null() {
                    return Ok(None);
                }
                let mut found = Some(false);
                for l in list {
                    match compare(&a, l, *domain)? {
                        Some(Ordering::Equal) => {
                            found = Some(true);
                            break;
                        }
                        None => found = None,
                        Some(_) => {}
                    }
                }
                if *negated {
                    kleene_not(found)
                } else {
                    found
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_and_substring_respect_grapheme_clusters() {
        assert_eq!(trim_graphemes("  a b \t\n"), "a b");
        assert_eq!(trim_graphemes("\u{3000}全角\u{3000}"), "全角");
        // A space carrying a combining acute accent is not white space: nothing is orphaned.
        assert_eq!(trim_graphemes(" \u{301}x "), " \u{301}x");
        assert_eq!(trim_graphemes("   "), "");
        assert_eq!(trim_graphemes(""), "");
        assert_eq!(
            substring_graphemes("e\u{301}te\u{301}", 1, Some(1)),
            "e\u{301}"
        );
        assert_eq!(substring_graphemes("👩‍👩‍👧x", 2, None), "x");
        assert_eq!(substring_graphemes("abc", 5, Some(2)), "");
        assert_eq!(substring_graphemes("abc", 2, Some(0)), "");
    }
}
