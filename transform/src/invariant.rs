//! Invariants: the queries that matter, answered on both sides and compared exactly.
//!
//! Row-by-row reconciliation proves that the target holds what the mapping makes of the source;
//! it cannot tell a mapping that keeps the meaning from one that faithfully applies a mistake (a
//! computed column that buckets by the wrong date part, a filter one value too strict). An
//! invariant states what must come out the same: an aggregate query over the source table in
//! source column names, and the same question over its target table in target column names
//! (grammar in `syntax`):
//!
//! ```toml
//! [[invariant]]
//! name = "revenue per customer"
//! table = "sakila.payment"
//! source = "sum(amount) where amount > 0 group by customer_id"
//! target = "sum(amount_cents) / 100 where amount_cents > 0 group by customer"
//! ```
//!
//! ## Algorithm
//! 1. **Compile** each side against its table ([`Invariant::compile`]): columns are resolved and
//!    typed as mapping expressions are (`eval`), and what could fail for every row is refused
//!    with the invariant's and the column's name (an unknown column, `sum` of a text, arithmetic
//!    on a `min` of dates, group-by lists of different lengths).
//! 2. **Tally** rows one at a time ([`Invariant::add_source`], [`Invariant::add_target`]): the
//!    filter must be true (SQL `WHERE`), the group-by values make the group's key, and each
//!    aggregate of the group takes the row's value. The caller (the reconciler) feeds each side
//!    only the rows of keys that settled, so both sides cover the same keys; the keys it leaves
//!    out are counted. The source side is fed source rows as read, never the transform's output.
//! 3. **Answer** per group: the figure's arithmetic over its aggregates, and **compare** the two
//!    sides group by group ([`Invariant::verdict`]). Groups are matched by the values of their
//!    group-by expressions; a group present on one side only is a difference.
//!
//! ## Exactness
//! Numbers are exact rationals: integers, DECIMALs (as their decimal text) and floats (each
//! binary value converted exactly) are summed without rounding, and `/` divides exactly, so a
//! DECIMAL sum equals its twin whatever the order of the rows, and `sum(cents) / 100` equals
//! `sum(amount)` exactly when it should. A division by zero is NULL, as in SQL. `min` and `max`
//! of numbers compare as numbers; of dates, times and texts as the mapping's comparisons do
//! (binary text order), and such answers are compared between the sides by canonical text.
//! `count(x)` and `sum(x)` skip NULLs; `sum` of no value is NULL; without `group by` there is
//! always one group, even over no rows (`count(*)` is then 0).
//!
//! A row whose expression cannot be evaluated (a cast that is not exact, say) is not added; it
//! is counted, and an invariant with such rows on either side does not hold.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{Signed, Zero};
use serde::{Deserialize, Serialize};
use tidemark_schemas::{ColumnName, Row, SourceSchema, TableId, TargetRecord, TargetSchema, Value};

use crate::config::ZeroDates;
use crate::convert::Conv;
use crate::eval::{compare, domain_of, CExpr, CPred, Columns, Ctx, Domain, Input};
use crate::syntax::{parse_query, AggFunc, ArithOp, Figure, Literal, Query};

/// One `[[invariant]]` of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvariantConfig {
    /// Names the invariant in reports and errors; unique.
    pub name: String,
    /// The source table (`db.table`); the target table is the one its mapping writes.
    pub table: String,
    /// The query over the source table, in source column names.
    pub source: String,
    /// The same question over the target table, in target column names.
    pub target: String,
}

impl InvariantConfig {
    /// The checks that need no table: the name, the table's form and both queries' syntax.
    /// The message names the setting (`invariant "revenue".source: …`).
    pub fn check(&self) -> Result<TableId, String> {
        self.parse().map(|(table, _, _)| table)
    }

    /// The canonical text of both queries (what a verdict records), so that a verdict can be
    /// told apart from one of an invariant that was changed since.
    pub fn canonical(&self) -> Result<(String, String), String> {
        let (_, source, target) = self.parse()?;
        Ok((source.to_string(), target.to_string()))
    }

    fn parse(&self) -> Result<(TableId, Query, Query), String> {
        let at = |setting: &str, message: String| {
            format!("invariant \"{}\".{setting}: {message}", self.name)
        };
        if self.name.trim().is_empty() {
            return Err("invariant.name: must not be empty".into());
        }
        let table: TableId = self
            .table
            .parse()
            .map_err(|e| at("table", format!("{e} (write it as db.table)")))?;
        let source = parse_query(&self.source).map_err(|e| at("source", e))?;
        let target = parse_query(&self.target).map_err(|e| at("target", e))?;
        if source.group_by.len() != target.group_by.len() {
            return Err(at(
                "target",
                format!(
                    "groups by {} value(s) where the source side groups by {}; the groups are matched value by value, so both sides need the same number",
                    target.group_by.len(),
                    source.group_by.len()
                ),
            ));
        }
        Ok((table, source, target))
    }
}

/// A value of an answer or of a group key: numbers exact, other values by canonical text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Answer {
    Null,
    Number(BigRational),
    Text(String),
}

impl Answer {
    fn of(v: &Value) -> Answer {
        if v.is_null() {
            return Answer::Null;
        }
        match number(v) {
            Some(n) => Answer::Number(n),
            None => Answer::Text(v.to_string()),
        }
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Null => f.write_str("NULL"),
            Answer::Text(t) => f.write_str(t),
            Answer::Number(n) => f.write_str(&number_text(n)),
        }
    }
}

/// Exact decimal text when the number has one (its denominator divides a power of ten), else
/// the fraction with a 20-digit approximation.
fn number_text(n: &BigRational) -> String {
    let mut den = n.denom().clone();
    let mut digits = 0usize;
    let two = BigInt::from(2);
    let five = BigInt::from(5);
    let (mut twos, mut fives) = (0usize, 0usize);
    while (&den % &two).is_zero() {
        den /= &two;
        twos += 1;
    }
    while (&den % &five).is_zero() {
        den /= &five;
        fives += 1;
    }
    if den == BigInt::from(1) {
        digits = twos.max(fives);
    }
    let exact = den == BigInt::from(1);
    let scale = if exact { digits } else { 20 };
    let scaled = n * BigRational::from_integer(BigInt::from(10).pow(scale as u32));
    let int = scaled.to_integer();
    let sign = if n.is_negative() { "-" } else { "" };
    let abs = int.abs().to_string();
    let text = if scale == 0 {
        abs
    } else {
        let padded = format!("{abs:0>width$}", width = scale + 1);
        let (i, frac) = padded.split_at(padded.len() - scale);
        format!("{i}.{frac}")
    };
    if exact {
        format!("{sign}{text}")
    } else {
        format!("{sign}{text}… (exactly {n})")
    }
}

/// The exact number a value holds, if it is a number.
fn number(v: &Value) -> Option<BigRational> {
    let int = |i: BigInt| Some(BigRational::from_integer(i));
    match v {
        Value::Int(i) => int((*i).into()),
        Value::UInt(u) => int((*u).into()),
        Value::Year(y) => int((*y).into()),
        Value::Bit { value, .. } => int((*value).into()),
        Value::Float(x) => BigRational::from_float(*x),
        Value::Double(x) => BigRational::from_float(*x),
        Value::Decimal(text) => {
            let (neg, body) = match text.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, text.as_str()),
            };
            let (i, frac) = body.split_once('.').unwrap_or((body, ""));
            let mantissa: BigInt = format!("{i}{frac}").parse().ok()?;
            let r = BigRational::new(mantissa, BigInt::from(10).pow(frac.len() as u32));
            Some(if neg { -r } else { r })
        }
        _ => None,
    }
}

/// A compiled aggregate.
#[derive(Debug, Clone)]
struct CAggregate {
    func: AggFunc,
    arg: Option<CExpr>,
    distinct: bool,
    domain: Domain,
}

/// A compiled figure: arithmetic over the aggregates of [`Side::aggregates`].
#[derive(Debug, Clone)]
enum CFigure {
    Aggregate(usize),
    Number(BigRational),
    Arith {
        op: ArithOp,
        left: Box<CFigure>,
        right: Box<CFigure>,
    },
}

/// One side of an invariant, compiled against its table.
#[derive(Debug, Clone)]
struct Side {
    query: Query,
    /// Column names in table order: the positions compiled expressions read.
    names: Vec<ColumnName>,
    figure: CFigure,
    aggregates: Vec<CAggregate>,
    filter: Option<CPred>,
    group_by: Vec<CExpr>,
}

/// The state of one aggregate in one group.
#[derive(Debug, Clone)]
enum State {
    Count(u64),
    Distinct(BTreeSet<Answer>),
    Sum(Option<BigRational>),
    Extreme(Option<Value>),
}

/// What one side has aggregated so far.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    groups: BTreeMap<Vec<Answer>, Vec<State>>,
    /// Rows offered (the filter may have left some out).
    pub rows: u64,
    /// Rows the query could not be evaluated on, with the first one's reason.
    pub failures: u64,
    pub first_failure: Option<String>,
}

/// A compiled invariant.
#[derive(Debug, Clone)]
pub struct Invariant {
    pub name: String,
    pub table: TableId,
    pub target_table: String,
    source: Side,
    target: Side,
}

/// One group whose answers differ; `None` where the side has no such group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The group, e.g. `customer_id=5` (the source side's group-by expressions).
    pub group: String,
    pub source: Option<Answer>,
    pub target: Option<Answer>,
}

/// How an invariant came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub name: String,
    pub table: TableId,
    /// The canonical text of both queries.
    pub source_query: String,
    pub target_query: String,
    pub source_rows: u64,
    pub target_rows: u64,
    /// Keys left out of both sides because they did not settle.
    pub left_out: u64,
    /// Groups on either side.
    pub groups: usize,
    /// The differing groups, most different first.
    pub differences: Vec<Difference>,
    /// Why rows could not be evaluated, per side that had such rows.
    pub failures: Vec<String>,
    /// Why the invariant was not evaluated at all (the comparison did not cover the table).
    pub not_evaluated: Option<String>,
}

impl Verdict {
    /// A verdict for an invariant the run could not evaluate.
    pub fn not_evaluated(inv: &Invariant, reason: String) -> Verdict {
        Verdict {
            name: inv.name.clone(),
            table: inv.table,
            source_query: inv.source.query.to_string(),
            target_query: inv.target.query.to_string(),
            source_rows: 0,
            target_rows: 0,
            left_out: 0,
            groups: 0,
            differences: Vec::new(),
            failures: Vec::new(),
            not_evaluated: Some(reason),
        }
    }

    pub fn held(&self) -> bool {
        self.not_evaluated.is_none() && self.differences.is_empty() && self.failures.is_empty()
    }

    /// One line, then one per difference (at most `limit`).
    pub fn render(&self, limit: usize) -> String {
        let head = format!("invariant \"{}\" on {}", self.name, self.table);
        if let Some(why) = &self.not_evaluated {
            return format!("{head}: not evaluated: {why}\n");
        }
        let counts = format!(
            "{} source rows, {} target rows aggregated; {} unsettled keys left out of both",
            self.source_rows, self.target_rows, self.left_out
        );
        let groups = if self.groups == 1 { "group" } else { "groups" };
        if self.held() {
            return format!("{head}: held in {} {groups} ({counts})\n", self.groups);
        }
        let mut out = if self.differences.is_empty() {
            format!("{head}: NOT HELD: some rows could not be evaluated ({counts})\n")
        } else {
            format!(
                "{head}: VIOLATED in {} of {} {groups} ({counts})\n",
                self.differences.len(),
                self.groups
            )
        };
        for f in &self.failures {
            out.push_str(&format!("  {f}\n"));
        }
        for d in self.differences.iter().take(limit) {
            out.push_str(&format!(
                "  {}: source {}, target {}\n",
                d.group,
                shown(&d.source),
                shown(&d.target)
            ));
        }
        if self.differences.len() > limit {
            out.push_str(&format!(
                "  … and {} more groups\n",
                self.differences.len() - limit
            ));
        }
        out
    }
}

/// An answer as a report shows it; a missing group says so.
pub fn shown(a: &Option<Answer>) -> String {
    match a {
        Some(a) => a.to_string(),
        None => "(no such group)".into(),
    }
}

impl Invariant {
    /// Compile `config` against the source table and the target table its mapping writes.
    pub fn compile(
        config: &InvariantConfig,
        source: &SourceSchema,
        target: &TargetSchema,
        zero_dates: ZeroDates,
    ) -> Result<Invariant, String> {
        let (table, source_query, target_query) = config.parse()?;
        let side = |setting: &str, query: Query, columns: Columns<'_>| {
            Side::compile(query, columns, zero_dates)
                .map_err(|e| format!("invariant \"{}\".{setting}: {e}", config.name))
        };
        Ok(Invariant {
            name: config.name.clone(),
            table,
            target_table: target.table.clone(),
            source: side("source", source_query, Columns::Source(source))?,
            target: side("target", target_query, Columns::Target(target))?,
        })
    }

    /// The canonical text of the source side's query.
    pub fn source_query(&self) -> String {
        self.source.query.to_string()
    }

    /// The canonical text of the target side's query.
    pub fn target_query(&self) -> String {
        self.target.query.to_string()
    }

    /// Add a source row (as read from the source).
    pub fn add_source(&self, tally: &mut Tally, row: &Row) {
        self.source.add(tally, row);
    }

    /// Add a live target record (a tombstone holds no row and is not added).
    pub fn add_target(&self, tally: &mut Tally, record: &TargetRecord) {
        let Some(columns) = &record.columns else {
            return;
        };
        let mut row = record.key.clone();
        row.0.extend(columns.0.iter().cloned());
        self.target.add(tally, &row);
    }

    /// Count a target row that could not be read at all.
    pub fn target_unreadable(&self, tally: &mut Tally, reason: &str) {
        tally.rows += 1;
        tally.failures += 1;
        tally
            .first_failure
            .get_or_insert_with(|| format!("the target row cannot be read: {reason}"));
    }

    /// Compare the two sides' answers.
    pub fn verdict(&self, source: &Tally, target: &Tally, left_out: u64) -> Verdict {
        let a = self.source.answers(source);
        let b = self.target.answers(target);
        let groups: BTreeSet<&Vec<Answer>> = a.keys().chain(b.keys()).collect();
        let mut differences: Vec<(Option<BigRational>, Difference)> = Vec::new();
        for g in &groups {
            let (x, y) = (a.get(*g), b.get(*g));
            if x == y {
                continue;
            }
            let distance = match (x, y) {
                (Some(Answer::Number(x)), Some(Answer::Number(y))) => Some((x - y).abs()),
                _ => None,
            };
            differences.push((
                distance,
                Difference {
                    group: self.group_text(g),
                    source: x.cloned(),
                    target: y.cloned(),
                },
            ));
        }
        // Most different first: groups missing on a side or not comparable as numbers, then
        // by the size of the numeric difference.
        differences.sort_by(|(dx, x), (dy, y)| match (dx, dy) {
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(p), Some(q)) => q.cmp(p).then_with(|| x.group.cmp(&y.group)),
            (None, None) => x.group.cmp(&y.group),
        });
        let mut failures = Vec::new();
        for (side, t) in [("source", source), ("target", target)] {
            if t.failures > 0 {
                failures.push(format!(
                    "{} {side} rows could not be evaluated, e.g. {}",
                    t.failures,
                    t.first_failure.as_deref().unwrap_or("?")
                ));
            }
        }
        Verdict {
            name: self.name.clone(),
            table: self.table,
            source_query: self.source_query(),
            target_query: self.target_query(),
            source_rows: source.rows,
            target_rows: target.rows,
            left_out,
            groups: groups.len(),
            differences: differences.into_iter().map(|(_, d)| d).collect(),
            failures,
            not_evaluated: None,
        }
    }

    /// `customer_id=5, month=2005-07`, in the source side's terms; `(all rows)` without groups.
    fn group_text(&self, key: &[Answer]) -> String {
        if key.is_empty() {
            return "(all rows)".into();
        }
        self.source
            .query
            .group_by
            .iter()
            .zip(key)
            .map(|(e, v)| {
                let name = e.to_string();
                let name = name
                    .strip_prefix('`')
                    .and_then(|n| n.strip_suffix('`'))
                    .filter(|n| !n.contains('`'))
                    .map(str::to_string)
                    .unwrap_or(name);
                format!("{name}={v}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// What `tidemark invariants explain` shows.
    pub fn explain(&self) -> String {
        format!(
            "invariant \"{}\": {} → {}\n  source: {}\n  target: {}\n",
            self.name, self.table, self.target_table, self.source.query, self.target.query
        )
    }
}

impl Side {
    fn compile(query: Query, columns: Columns<'_>, zero_dates: ZeroDates) -> Result<Side, String> {
        let ctx = Ctx {
            columns,
            zero_dates,
        };
        let mut aggregates = Vec::new();
        let figure = compile_figure(&ctx, &query.figure, &mut aggregates, false)?;
        let filter = query.filter.as_ref().map(|p| ctx.pred(p)).transpose()?;
        let group_by = query
            .group_by
            .iter()
            .map(|e| ctx.expr(e).map(|(c, _)| c))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Side {
            names: columns.names(),
            query,
            figure,
            aggregates,
            filter,
            group_by,
        })
    }

    fn add(&self, tally: &mut Tally, row: &Row) {
        tally.rows += 1;
        if let Err(fail) = self.try_add(tally, row) {
            tally.failures += 1;
            tally
                .first_failure
                .get_or_insert_with(|| match &fail.value {
                    Some(v) => format!("{} ({v})", fail.reason),
                    None => fail.reason.clone(),
                });
        }
    }

    fn try_add(&self, tally: &mut Tally, row: &Row) -> Conv<()> {
        let input = Input::resolve(&self.names, row);
        if let Some(filter) = &self.filter {
            if filter.eval(&input)? != Some(true) {
                return Ok(());
            }
        }
        let key = self
            .group_by
            .iter()
            .map(|g| g.eval(&input).map(|v| Answer::of(&v)))
            .collect::<Conv<Vec<Answer>>>()?;
        // Every value first, so that a failure leaves the group untouched.
        let values = self
            .aggregates
            .iter()
            .map(|a| a.arg.as_ref().map(|e| e.eval(&input)).transpose())
            .collect::<Conv<Vec<Option<Value>>>>()?;
        let mut sums = Vec::with_capacity(values.len());
        for (a, v) in self.aggregates.iter().zip(&values) {
            sums.push(match (a.func, v) {
                (AggFunc::Sum, Some(v)) if !v.is_null() => Some(number(v).ok_or_else(|| {
                    crate::convert::Fail::new(
                        crate::error::RejectionKind::BadCast,
                        "is not a finite number",
                    )
                    .with_value(v)
                })?),
                _ => None,
            });
        }
        // And every comparison of min and max, for the same reason.
        let mut replaces = Vec::with_capacity(values.len());
        for (i, (a, v)) in self.aggregates.iter().zip(&values).enumerate() {
            replaces.push(match (tally.groups.get(&key), v) {
                (Some(states), Some(v)) => states[i].replaces(a, v)?,
                _ => true,
            });
        }
        let states = tally
            .groups
            .entry(key)
            .or_insert_with(|| self.aggregates.iter().map(State::new).collect());
        for (((state, v), n), replace) in states.iter_mut().zip(values).zip(sums).zip(replaces) {
            state.add(v, n, replace);
        }
        Ok(())
    }

    /// The answer of every group; without `group by`, the one group even over no rows.
    fn answers(&self, tally: &Tally) -> BTreeMap<Vec<Answer>, Answer> {
        let mut out: BTreeMap<Vec<Answer>, Answer> = tally
            .groups
            .iter()
            .map(|(k, states)| (k.clone(), answer(&self.figure, states)))
            .collect();
        if self.group_by.is_empty() && out.is_empty() {
            let empty: Vec<State> = self.aggregates.iter().map(State::new).collect();
            out.insert(Vec::new(), answer(&self.figure, &empty));
        }
        out
    }
}

fn compile_figure(
    ctx: &Ctx<'_>,
    f: &Figure,
    out: &mut Vec<CAggregate>,
    in_arithmetic: bool,
) -> Result<CFigure, String> {
    Ok(match f {
        Figure::Number(l) => CFigure::Number(match l {
            Literal::Int(i) => BigRational::from_integer((*i).into()),
            Literal::Dec(d) => number(&Value::Decimal(d.clone())).ok_or("a bad number")?,
            Literal::Str(_) => return Err("a figure's numbers cannot be text".into()),
        }),
        Figure::Arith { op, left, right } => CFigure::Arith {
            op: *op,
            left: Box::new(compile_figure(ctx, left, out, true)?),
            right: Box::new(compile_figure(ctx, right, out, true)?),
        },
        Figure::Aggregate(a) => {
            let (arg, domain) = match &a.arg {
                Some(e) => {
                    let (c, t) = ctx.expr(e)?;
                    (Some(c), domain_of(&t.ty))
                }
                None => (None, Domain::Numeric),
            };
            let numbers = matches!(domain, Domain::Numeric | Domain::Float);
            if a.func == AggFunc::Sum && !numbers {
                return Err(format!(
                    "{a}: sum needs numbers, and {} is not a number; count it, or take its min or max",
                    a.arg.as_ref().map(|e| e.to_string()).unwrap_or_default()
                ));
            }
            if in_arithmetic && matches!(a.func, AggFunc::Min | AggFunc::Max) && !numbers {
                return Err(format!(
                    "{a}: arithmetic needs numbers, and this {} is not one",
                    a.func.name()
                ));
            }
            out.push(CAggregate {
                func: a.func,
                arg,
                distinct: a.distinct,
                domain,
            });
            CFigure::Aggregate(out.len() - 1)
        }
    })
}

impl State {
    fn new(a: &CAggregate) -> State {
        match a.func {
            AggFunc::Count if a.distinct => State::Distinct(BTreeSet::new()),
            AggFunc::Count => State::Count(0),
            AggFunc::Sum => State::Sum(None),
            AggFunc::Min | AggFunc::Max => State::Extreme(None),
        }
    }

    /// For `min` and `max`: whether `v` takes the place of the value held (a value that cannot
    /// be ordered against it is a failure, so that the answer never depends on row order).
    fn replaces(&self, a: &CAggregate, v: &Value) -> Conv<bool> {
        let State::Extreme(Some(best)) = self else {
            return Ok(true);
        };
        if v.is_null() {
            return Ok(false);
        }
        let order = match (number_of(v, a.domain), number_of(best, a.domain)) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => compare(v, best, a.domain)?,
        };
        let Some(order) = order else {
            return Err(crate::convert::Fail::new(
                crate::error::RejectionKind::BadCast,
                format!("cannot be ordered against {best} for {}", a.func.name()),
            )
            .with_value(v));
        };
        Ok(matches!(
            (a.func, order),
            (AggFunc::Min, Ordering::Less) | (AggFunc::Max, Ordering::Greater)
        ))
    }

    /// Take one row's value (`None` for `count(*)`); `number` is the value as a number, for
    /// sums; `replace`, for min and max, what [`State::replaces`] said.
    fn add(&mut self, v: Option<Value>, number: Option<BigRational>, replace: bool) {
        let null = v.as_ref().is_some_and(Value::is_null);
        match self {
            State::Count(n) => {
                if !null {
                    *n += 1;
                }
            }
            State::Distinct(seen) => {
                if let Some(v) = v.filter(|v| !v.is_null()) {
                    seen.insert(Answer::of(&v));
                }
            }
            State::Sum(total) => {
                if let Some(n) = number {
                    *total = Some(match total.take() {
                        Some(t) => t + n,
                        None => n,
                    });
                }
            }
            State::Extreme(best) => {
                if let Some(v) = v.filter(|v| !v.is_null() && replace) {
                    *best = Some(v);
                }
            }
        }
    }

    fn answer(&self) -> Answer {
        match self {
            State::Count(n) => Answer::Number(BigRational::from_integer((*n).into())),
            State::Distinct(seen) => Answer::Number(BigRational::from_integer(seen.len().into())),
            State::Sum(total) => total.clone().map_or(Answer::Null, Answer::Number),
            State::Extreme(v) => v.as_ref().map_or(Answer::Null, Answer::of),
        }
    }
}

/// A value as a number when its domain is numeric (so `min`/`max` of numbers compare exactly,
/// integers, decimals and floats alike).
fn number_of(v: &Value, domain: Domain) -> Option<BigRational> {
    matches!(domain, Domain::Numeric | Domain::Float)
        .then(|| number(v))
        .flatten()
}

fn answer(f: &CFigure, states: &[State]) -> Answer {
    match f {
        CFigure::Aggregate(i) => states[*i].answer(),
        CFigure::Number(n) => Answer::Number(n.clone()),
        CFigure::Arith { op, left, right } => {
            let (Answer::Number(x), Answer::Number(y)) =
                (answer(left, states), answer(right, states))
            else {
                // NULL in, NULL out (text never reaches arithmetic: refused when compiled).
                return Answer::Null;
            };
            Answer::Number(match op {
                ArithOp::Add => x + y,
                ArithOp::Sub => x - y,
                ArithOp::Mul => x * y,
                ArithOp::Div if y.is_zero() => return Answer::Null,
                ArithOp::Div => x / y,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_schemas::{
        Lineage, Operation, SourceColumn, SourceType, TargetColumn, TargetType,
    };

    fn num(text: &str) -> Answer {
        Answer::of(&Value::Decimal(text.into()))
    }

    #[test]
    fn numbers_print_exactly() {
        for (text, shown) in [
            ("12.500", "12.5"),
            ("-0.05", "-0.05"),
            ("7", "7"),
            ("0.000", "0"),
        ] {
            assert_eq!(num(text).to_string(), shown, "{text}");
        }
        let third = Answer::Number(BigRational::new(1.into(), 3.into()));
        assert_eq!(third.to_string(), "0.33333333333333333333… (exactly 1/3)");
        let f = Answer::of(&Value::Double(0.1));
        assert_ne!(f, num("0.1"), "a float is its exact binary value");
        assert_eq!(num("1.50"), Answer::of(&Value::Int(3)).halved());
    }

    impl Answer {
        fn halved(&self) -> Answer {
            match self {
                Answer::Number(n) => Answer::Number(n / BigRational::from_integer(2.into())),
                other => other.clone(),
            }
        }
    }

    fn payment_schemas() -> (SourceSchema, TargetSchema) {
        let col = |name: &str, ty: SourceType, nullable: bool| SourceColumn {
            name: name.into(),
            ty,
            nullable,
            column_type: String::new(),
        };
        let int = |bits, unsigned| SourceType::Integer { bits, unsigned };
        let source = SourceSchema {
            table: "shop.payment".parse().unwrap(),
            columns: vec![
                col("id", int(32, false), false),
                col("customer_id", int(16, true), false),
                col(
                    "amount",
                    SourceType::Decimal {
                        precision: 5,
                        scale: 2,
                    },
                    false,
                ),
                col(
                    "note",
                    SourceType::Text {
                        charset: "utf8mb4".into(),
                        max_chars: Some(10),
                        fixed: false,
                    },
                    true,
                ),
            ],
            key: vec![0],
            key_name: "PRIMARY".into(),
        };
        let target = TargetSchema {
            table: "payment".into(),
            columns: vec![
                TargetColumn {
                    name: "id".into(),
                    ty: TargetType::Int { bits: 32 },
                    nullable: false,
                },
                TargetColumn {
                    name: "customer".into(),
                    ty: TargetType::UInt { bits: 16 },
                    nullable: false,
                },
                TargetColumn {
                    name: "amount_cents".into(),
                    ty: TargetType::Int { bits: 64 },
                    nullable: false,
                },
            ],
            key: vec!["id".into()],
        };
        (source, target)
    }

    fn config(source: &str, target: &str) -> InvariantConfig {
        InvariantConfig {
            name: "revenue".into(),
            table: "shop.payment".into(),
            source: source.into(),
            target: target.into(),
        }
    }

    fn source_row(id: i64, customer: u64, amount: &str) -> Row {
        Row(vec![
            ("id".into(), Value::Int(id)),
            ("customer_id".into(), Value::UInt(customer)),
            ("amount".into(), Value::Decimal(amount.into())),
            ("note".into(), Value::Null),
        ])
    }

    fn target_record(id: i64, customer: u64, cents: i64) -> TargetRecord {
        TargetRecord {
            table: "payment".into(),
            key: Row(vec![("id".into(), Value::Int(id))]),
            columns: Some(Row(vec![
                ("customer".into(), Value::UInt(customer)),
                ("amount_cents".into(), Value::Int(cents)),
            ])),
            lineage: Lineage {
                source_server: "s".into(),
                source_table: "shop.payment".into(),
                source_key: String::new(),
                position: "mysql-bin.000001:4".into(),
                gtid: None,
                version: 1,
                op: Operation::Insert,
                commit_time_us: 0,
                transform_name: "t".into(),
                transform_version: "v".into(),
                source_digest: String::new(),
                chunk: None,
            },
        }
    }

    #[test]
    fn sums_in_cents_equal_sums_in_units_exactly() {
        let (s, t) = payment_schemas();
        let inv = Invariant::compile(
            &config(
                "sum(amount) where amount > 0 group by customer_id",
                "sum(amount_cents) / 100 where amount_cents > 0 group by customer",
            ),
            &s,
            &t,
            ZeroDates::default(),
        )
        .unwrap();
        let (mut a, mut b) = (Tally::default(), Tally::default());
        for (id, c, amount, cents) in [
            (1, 1, "0.10", 10),
            (2, 1, "0.20", 20),
            (3, 2, "4.99", 499),
            (4, 2, "-1.00", -100),
        ] {
            inv.add_source(&mut a, &source_row(id, c, amount));
            inv.add_target(&mut b, &target_record(id, c, cents));
        }
        let v = inv.verdict(&a, &b, 0);
        assert!(v.held(), "{}", v.render(5));
        assert_eq!(v.groups, 2);

        // One row off by a cent in group 2, one group missing on the target side.
        inv.add_source(&mut a, &source_row(5, 3, "1.00"));
        inv.add_target(&mut b, &target_record(6, 2, 1));
        let v = inv.verdict(&a, &b, 2);
        assert!(!v.held());
        assert_eq!(v.differences.len(), 2, "{}", v.render(5));
        assert_eq!(
            v.differences[0].group, "customer_id=3",
            "a missing group first"
        );
        assert_eq!(v.differences[0].target, None);
        assert_eq!(v.differences[1].source, Some(num("4.99")));
        assert_eq!(v.differences[1].target, Some(num("5")));
        assert!(v.render(5).contains("2 unsettled keys left out"));
    }

    #[test]
    fn counts_min_max_and_empty_tables() {
        let (s, t) = payment_schemas();
        let inv = Invariant::compile(
            &config(
                "count(*) + count(distinct customer_id) * 1000",
                "count(*) + count(distinct customer) * 1000",
            ),
            &s,
            &t,
            ZeroDates::default(),
        )
        .unwrap();
        let v = inv.verdict(&Tally::default(), &Tally::default(), 0);
        assert!(v.held());
        assert_eq!(v.groups, 1, "one group over no rows");
        let mut a = Tally::default();
        inv.add_source(&mut a, &source_row(1, 7, "1"));
        inv.add_source(&mut a, &source_row(2, 7, "1"));
        let v = inv.verdict(&a, &Tally::default(), 0);
        assert_eq!(v.differences[0].source, Some(num("1002")));
        assert_eq!(v.differences[0].target, Some(num("0")));

        let inv = Invariant::compile(
            &config(
                "max(amount) - min(amount)",
                "(max(amount_cents) - min(amount_cents)) / 100",
            ),
            &s,
            &t,
            ZeroDates::default(),
        )
        .unwrap();
        let (mut a, mut b) = (Tally::default(), Tally::default());
        for (id, amount, cents) in [(1, "9.50", 950), (2, "10.25", 1025), (3, "-3.00", -300)] {
            inv.add_source(&mut a, &source_row(id, 1, amount));
            inv.add_target(&mut b, &target_record(id, 1, cents));
        }
        let v = inv.verdict(&a, &b, 0);
        assert!(v.held(), "{}", v.render(5));
    }

    #[test]
    fn misconfigured_invariants_name_the_setting_and_the_column() {
        let (s, t) = payment_schemas();
        for (src, tgt, needle) in [
            (
                "sum(amout)",
                "sum(amount_cents)",
                "invariant \"revenue\".source: no column `amout`",
            ),
            ("sum(note)", "sum(amount_cents)", "sum needs numbers"),
            (
                "sum(amount) group by customer_id",
                "sum(amount_cents) group by nope",
                "no column `nope` in target table payment",
            ),
            (
                "sum(amount) group by customer_id",
                "sum(amount_cents)",
                "groups by 0 value(s)",
            ),
            ("min(note) * 2", "count(*)", "arithmetic needs numbers"),
            ("avg(amount)", "count(*)", "not an aggregate"),
        ] {
            let e =
                Invariant::compile(&config(src, tgt), &s, &t, ZeroDates::default()).unwrap_err();
            assert!(e.contains(needle), "{src} / {tgt}: {e}");
        }
    }
}
