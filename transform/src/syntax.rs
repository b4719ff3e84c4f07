//! The two small languages of a mapping: target types and expressions.
//!
//! Both are parsed once, when the configuration is read, into a syntax tree whose rendering is
//! canonical: lowercase keywords and function names, backquoted column names, single-quoted
//! strings, one space after each comma. `transform_version` hashes that rendering, so spacing,
//! letter case of keywords and `<>` versus `!=` do not change it.
//!
//! Types (case-insensitive):
//!
//! ```text
//! int8 int16 int24 int32 int64          signed integers of that width
//! uint8 uint16 uint24 uint32 uint64     unsigned integers
//! float double                          IEEE 754 binary32 / binary64
//! decimal(P,S)                          1 ≤ P ≤ 65, 0 ≤ S ≤ min(P, 30)
//! date  year
//! datetime[(F)] timestamp[(F)] time[(F)] F = fractional-second digits, 0..=6 (default 0)
//! text[(N)]                             at most N characters (Unicode scalar values)
//! bytes[(N)]                            at most N bytes
//! enum('a','b',…)  set('a','b',…)       members, in definition order
//! bit(W)                                1 ≤ W ≤ 64
//! json  geometry
//! ```
//!
//! Expressions (computed columns) and predicates (filters):
//!
//! ```text
//! value     := column | literal | func '(' value {',' value} ')' | 'cast' '(' value 'as' type ')'
//! column    := name | '`' any text, `` for a backquote '`'
//! literal   := '-'? digits ['.' digits] | '\'' text, '' for a quote '\''
//! func      := concat | lower | upper | trim | coalesce | substring | date_format | hash
//! predicate := disjunct {'or' disjunct}
//! disjunct  := negation {'and' negation}
//! negation  := 'not' negation | '(' predicate ')' | test
//! test      := value ('=' | '!=' | '<>' | '<' | '<=' | '>' | '>=') value
//!            | value 'is' ['not'] 'null'
//!            | value ['not'] 'in' '(' literal {',' literal} ')'
//! ```
//!
//! Invariants (the queries whose answers must be the same on both sides, see `invariant`):
//!
//! ```text
//! query     := figure ['where' predicate] ['group' 'by' value {',' value}]
//! figure    := term {('+' | '-') term}
//! term      := factor {('*' | '/') factor}
//! factor    := aggregate | number | '(' figure ')'
//! aggregate := 'count' '(' '*' ')' | 'count' '(' ['distinct'] value ')'
//!            | ('sum' | 'min' | 'max') '(' value ')'
//! ```
//!
//! Keywords and function names are case-insensitive; column names are exact. There is no NULL
//! literal (use `is null`, `coalesce`), no arithmetic within a row (an invariant's figure has
//! `+ - * /` between aggregates and numbers only) and no user functions: the language is small
//! enough that every expression terminates and every failure is one of a few kinds.

use std::fmt;

use tidemark_schemas::TargetType;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// One of the fixed set of pure functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    Concat,
    Lower,
    Upper,
    Trim,
    Coalesce,
    Substring,
    DateFormat,
    Hash,
}

impl Func {
    fn parse(name: &str) -> Option<Func> {
        Some(match name {
            "concat" => Func::Concat,
            "lower" => Func::Lower,
            "upper" => Func::Upper,
            "trim" => Func::Trim,
            "coalesce" => Func::Coalesce,
            "substring" => Func::Substring,
            "date_format" => Func::DateFormat,
            "hash" => Func::Hash,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Func::Concat => "concat",
            Func::Lower => "lower",
            Func::Upper => "upper",
            Func::Trim => "trim",
            Func::Coalesce => "coalesce",
            Func::Substring => "substring",
            Func::DateFormat => "date_format",
            Func::Hash => "hash",
        }
    }

    /// Whether the function's result depends on Unicode tables (case mapping, white space,
    /// grapheme clusters), whose version then becomes part of `transform_version`.
    pub(crate) fn uses_unicode_tables(self) -> bool {
        matches!(
            self,
            Func::Lower | Func::Upper | Func::Trim | Func::Substring
        )
    }
}

/// A literal in an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Literal {
    Str(String),
    Int(i128),
    /// A number with a fraction, as written (leading zeros of the integer part removed).
    Dec(String),
}

/// A value expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expr {
    Column(String),
    Literal(Literal),
    Call { func: Func, args: Vec<Expr> },
    Cast { arg: Box<Expr>, ty: TargetType },
}

/// A predicate (three-valued: true, false, unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pred {
    And(Vec<Pred>),
    Or(Vec<Pred>),
    Not(Box<Pred>),
    Cmp {
        op: CmpOp,
        left: Expr,
        right: Expr,
    },
    IsNull {
        arg: Expr,
        negated: bool,
    },
    In {
        arg: Expr,
        list: Vec<Literal>,
        negated: bool,
    },
}

/// An aggregate function of an invariant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggFunc {
    Count,
    Sum,
    Min,
    Max,
}

impl AggFunc {
    fn parse(name: &str) -> Option<AggFunc> {
        Some(match name {
            "count" => AggFunc::Count,
            "sum" => AggFunc::Sum,
            "min" => AggFunc::Min,
            "max" => AggFunc::Max,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            AggFunc::Count => "count",
            AggFunc::Sum => "sum",
            AggFunc::Min => "min",
            AggFunc::Max => "max",
        }
    }
}

/// One aggregate: `count(*)` has no argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Aggregate {
    pub func: AggFunc,
    pub arg: Option<Expr>,
    pub distinct: bool,
}

/// An arithmetic operator between figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl ArithOp {
    fn as_str(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
        }
    }
}

/// What an invariant computes per group: aggregates, numbers and arithmetic between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Figure {
    Aggregate(Aggregate),
    Number(Literal),
    Arith {
        op: ArithOp,
        left: Box<Figure>,
        right: Box<Figure>,
    },
}

/// One side of an invariant: `figure [where predicate] [group by values]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Query {
    pub figure: Figure,
    pub filter: Option<Pred>,
    pub group_by: Vec<Expr>,
}

impl Expr {
    /// Every column the expression reads.
    pub(crate) fn columns<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Expr::Column(c) => out.push(c),
            Expr::Literal(_) => {}
            Expr::Call { args, .. } => args.iter().for_each(|a| a.columns(out)),
            Expr::Cast { arg, .. } => arg.columns(out),
        }
    }

    pub(crate) fn uses_unicode_tables(&self) -> bool {
        match self {
            Expr::Column(_) | Expr::Literal(_) => false,
            Expr::Call { func, args } => {
                func.uses_unicode_tables() || args.iter().any(Expr::uses_unicode_tables)
            }
            Expr::Cast { arg, .. } => arg.uses_unicode_tables(),
        }
    }
}

impl Pred {
    pub(crate) fn uses_unicode_tables(&self) -> bool {
        match self {
            Pred::And(ps) | Pred::Or(ps) => ps.iter().any(Pred::uses_unicode_tables),
            Pred::Not(p) => p.uses_unicode_tables(),
            Pred::Cmp { left, right, .. } => {
                left.uses_unicode_tables() || right.uses_unicode_tables()
            }
            Pred::IsNull { arg, .. } | Pred::In { arg, .. } => arg.uses_unicode_tables(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering (canonical text)

fn write_quoted(f: &mut fmt::Formatter<'_>, quote: char, text: &str) -> fmt::Result {
    write!(f, "{quote}")?;
    for c in text.chars() {
        if c == quote {
            write!(f, "{quote}")?;
        }
        write!(f, "{c}")?;
    }
    write!(f, "{quote}")
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Str(s) => write_quoted(f, '\'', s),
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Dec(d) => f.write_str(d),
        }
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Column(c) => write_quoted(f, '`', c),
            Expr::Literal(l) => write!(f, "{l}"),
            Expr::Call { func, args } => {
                write!(f, "{}(", func.name())?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
            Expr::Cast { arg, ty } => write!(f, "cast({arg} as {})", render_type(ty)),
        }
    }
}

impl fmt::Display for Pred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pred::And(ps) => {
                for (i, p) in ps.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" and ")?;
                    }
                    if matches!(p, Pred::Or(_)) {
                        write!(f, "({p})")?;
                    } else {
                        write!(f, "{p}")?;
                    }
                }
                Ok(())
            }
            Pred::Or(ps) => {
                for (i, p) in ps.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" or ")?;
                    }
                    write!(f, "{p}")?;
                }
                Ok(())
            }
            Pred::Not(p) => match p.as_ref() {
                Pred::And(_) | Pred::Or(_) => write!(f, "not ({p})"),
                _ => write!(f, "not {p}"),
            },
            Pred::Cmp { op, left, right } => write!(f, "{left} {} {right}", op.as_str()),
            Pred::IsNull { arg, negated } => {
                write!(f, "{arg} is {}null", if *negated { "not " } else { "" })
            }
            Pred::In { arg, list, negated } => {
                write!(f, "{arg} {}in (", if *negated { "not " } else { "" })?;
                for (i, l) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{l}")?;
                }
                f.write_str(")")
            }
        }
    }
}

impl fmt::Display for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(", self.func.name())?;
        if self.distinct {
            f.write_str("distinct ")?;
        }
        match &self.arg {
            Some(a) => write!(f, "{a})"),
            None => f.write_str("*)"),
        }
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Figure::Aggregate(a) => write!(f, "{a}"),
            Figure::Number(n) => write!(f, "{n}"),
            Figure::Arith { op, left, right } => {
                // Parentheses around a sum on the left of a product, and around any operation
                // on the right (more than precedence needs, never fewer: the tree re-parses
                // the same).
                let tight = |x: &Figure| match x {
                    Figure::Arith { op, .. } => matches!(op, ArithOp::Mul | ArithOp::Div),
                    _ => true,
                };
                let mul = matches!(op, ArithOp::Mul | ArithOp::Div);
                if mul && !tight(left) {
                    write!(f, "({left})")?;
                } else {
                    write!(f, "{left}")?;
                }
                write!(f, " {} ", op.as_str())?;
                if !matches!(right.as_ref(), Figure::Arith { .. }) {
                    write!(f, "{right}")
                } else {
                    write!(f, "({right})")
                }
            }
        }
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.figure)?;
        if let Some(p) = &self.filter {
            write!(f, " where {p}")?;
        }
        if !self.group_by.is_empty() {
            f.write_str(" group by ")?;
            for (i, g) in self.group_by.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{g}")?;
            }
        }
        Ok(())
    }
}

/// The canonical text of a target type in the type syntax, e.g. `decimal(10,2)`, `text(45)`.
pub fn render_type(ty: &TargetType) -> String {
    fn fsp(name: &str, fsp: u8) -> String {
        if fsp == 0 {
            name.to_string()
        } else {
            format!("{name}({fsp})")
        }
    }
    fn members(name: &str, members: &[String]) -> String {
        let quoted: Vec<String> = members
            .iter()
            .map(|m| format!("'{}'", m.replace('\'', "''")))
            .collect();
        format!("{name}({})", quoted.join(","))
    }
    match ty {
        TargetType::Int { bits } => format!("int{bits}"),
        TargetType::UInt { bits } => format!("uint{bits}"),
        TargetType::Float => "float".into(),
        TargetType::Double => "double".into(),
        TargetType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
        TargetType::Date => "date".into(),
        TargetType::DateTime { fsp: f } => fsp("datetime", *f),
        TargetType::Timestamp { fsp: f } => fsp("timestamp", *f),
        TargetType::Time { fsp: f } => fsp("time", *f),
        TargetType::Year => "year".into(),
        TargetType::Text { max_chars: None } => "text".into(),
        TargetType::Text { max_chars: Some(n) } => format!("text({n})"),
        TargetType::Bytes { max_len: None } => "bytes".into(),
        TargetType::Bytes { max_len: Some(n) } => format!("bytes({n})"),
        TargetType::Enum { members: m } => members("enum", m),
        TargetType::Set { members: m } => members("set", m),
        TargetType::Bit { width } => format!("bit({width})"),
        TargetType::Json => "json".into(),
        TargetType::Geometry => "geometry".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A bare word: keyword, function name, type name or column name.
    Word(String),
    /// A backquoted column name.
    Quoted(String),
    Str(String),
    Num(String),
    Minus,
    Plus,
    Star,
    Slash,
    LParen,
    RParen,
    Comma,
    Op(CmpOp),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Word(w) => write!(f, "`{w}`"),
            Tok::Quoted(q) => write!(f, "column `{q}`"),
            Tok::Str(s) => write!(f, "string '{s}'"),
            Tok::Num(n) => write!(f, "number {n}"),
            Tok::Minus => f.write_str("`-`"),
            Tok::Plus => f.write_str("`+`"),
            Tok::Star => f.write_str("`*`"),
            Tok::Slash => f.write_str("`/`"),
            Tok::LParen => f.write_str("`(`"),
            Tok::RParen => f.write_str("`)`"),
            Tok::Comma => f.write_str("`,`"),
            Tok::Op(op) => write!(f, "`{}`", op.as_str()),
        }
    }
}

fn lex(text: &str) -> Result<Vec<(Tok, usize)>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        let at = start + 1;
        match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => {
                out.push((Tok::LParen, at));
                i += 1;
            }
            ')' => {
                out.push((Tok::RParen, at));
                i += 1;
            }
            ',' => {
                out.push((Tok::Comma, at));
                i += 1;
            }
            '-' => {
                out.push((Tok::Minus, at));
                i += 1;
            }
            '+' => {
                out.push((Tok::Plus, at));
                i += 1;
            }
            '*' => {
                out.push((Tok::Star, at));
                i += 1;
            }
            '/' => {
                out.push((Tok::Slash, at));
                i += 1;
            }
            '=' => {
                out.push((Tok::Op(CmpOp::Eq), at));
                i += 1;
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push((Tok::Op(CmpOp::Ne), at));
                i += 2;
            }
            '<' => match chars.get(i + 1) {
                Some('=') => {
                    out.push((Tok::Op(CmpOp::Le), at));
                    i += 2;
                }
                Some('>') => {
                    out.push((Tok::Op(CmpOp::Ne), at));
                    i += 2;
                }
                _ => {
                    out.push((Tok::Op(CmpOp::Lt), at));
                    i += 1;
                }
            },
            '>' => {
                if chars.get(i + 1) == Some(&'=') {
                    out.push((Tok::Op(CmpOp::Ge), at));
                    i += 2;
                } else {
                    out.push((Tok::Op(CmpOp::Gt), at));
                    i += 1;
                }
            }
            '\'' | '`' => {
                let quote = c;
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(format!(
                                "at character {at}: the {} opened here is never closed",
                                if quote == '`' { "backquote" } else { "quote" }
                            ))
                        }
                        Some(&q) if q == quote => {
                            if chars.get(i + 1) == Some(&quote) {
                                s.push(quote);
                                i += 2;
                            } else {
                                i += 1;
                                break;
                            }
                        }
                        Some(&other) => {
                            s.push(other);
                            i += 1;
                        }
                    }
                }
                out.push((
                    if quote == '`' {
                        Tok::Quoted(s)
                    } else {
                        Tok::Str(s)
                    },
                    at,
                ));
            }
            c if c.is_ascii_digit() => {
                let mut s = String::new();
                while let Some(&d) = chars.get(i) {
                    if d.is_ascii_digit() {
                        s.push(d);
                        i += 1;
                    } else {
                        break;
                    }
                }
                if chars.get(i) == Some(&'.') {
                    s.push('.');
                    i += 1;
                    let before = s.len();
                    while let Some(&d) = chars.get(i) {
                        if d.is_ascii_digit() {
                            s.push(d);
                            i += 1;
                        } else {
                            break;
                        }
                    }
                    if s.len() == before {
                        return Err(format!(
                            "at character {at}: a number needs digits after its decimal point"
                        ));
                    }
                }
                if chars
                    .get(i)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_')
                {
                    return Err(format!(
                        "at character {at}: `{s}{}` is neither a number nor a name (backquote names that start with a digit)",
                        chars[i]
                    ));
                }
                out.push((Tok::Num(s), at));
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut s = String::new();
                while let Some(&d) = chars.get(i) {
                    if d.is_alphanumeric() || d == '_' || d == '$' {
                        s.push(d);
                        i += 1;
                    } else {
                        break;
                    }
                }
                out.push((Tok::Word(s), at));
            }
            other => return Err(format!("at character {at}: unexpected character `{other}`")),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Parser

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    len: usize,
}

fn is_keyword(word: &str, kw: &str) -> bool {
    word.eq_ignore_ascii_case(kw)
}

const RESERVED: &[&str] = &["and", "or", "not", "is", "null", "in", "as"];

impl Parser {
    fn new(text: &str) -> Result<Parser, String> {
        Ok(Parser {
            toks: lex(text)?,
            pos: 0,
            len: text.chars().count(),
        })
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }

    fn peek_at(&self, ahead: usize) -> Option<&Tok> {
        self.toks.get(self.pos + ahead).map(|(t, _)| t)
    }

    fn here(&self) -> String {
        match self.toks.get(self.pos) {
            Some((t, at)) => format!("at character {at} ({t})"),
            None => format!("at the end (character {})", self.len + 1),
        }
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|(t, _)| t.clone());
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn expect(&mut self, want: &Tok, what: &str) -> Result<(), String> {
        if self.peek() == Some(want) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("{}: expected {what}", self.here()))
        }
    }

    fn peek_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if is_keyword(w, kw))
    }

    fn eat_keyword(&mut self, kw: &str) -> bool {
        if self.peek_keyword(kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn finish(&self) -> Result<(), String> {
        if self.pos < self.toks.len() {
            Err(format!("{}: unexpected text after the end", self.here()))
        } else {
            Ok(())
        }
    }

    // -- types --

    fn type_args(&mut self) -> Result<Vec<Tok>, String> {
        let mut args = Vec::new();
        if self.peek() != Some(&Tok::LParen) {
            return Ok(args);
        }
        self.pos += 1;
        loop {
            match self.next() {
                Some(t @ (Tok::Num(_) | Tok::Str(_))) => args.push(t),
                _ => {
                    self.pos = self.pos.saturating_sub(1);
                    return Err(format!(
                        "{}: expected a number or a quoted member",
                        self.here()
                    ));
                }
            }
            match self.next() {
                Some(Tok::Comma) => continue,
                Some(Tok::RParen) => return Ok(args),
                _ => {
                    self.pos = self.pos.saturating_sub(1);
                    return Err(format!("{}: expected `,` or `)`", self.here()));
                }
            }
        }
    }

    fn target_type(&mut self) -> Result<TargetType, String> {
        let name = match self.next() {
            Some(Tok::Word(w)) => w.to_ascii_lowercase(),
            _ => {
                self.pos = self.pos.saturating_sub(1);
                return Err(format!("{}: expected a type name", self.here()));
            }
        };
        let args = self.type_args()?;
        type_from_parts(&name, &args)
    }

    // -- value expressions --

    fn literal(&mut self) -> Result<Literal, String> {
        let negative = if self.peek() == Some(&Tok::Minus) {
            self.pos += 1;
            true
        } else {
            false
        };
        match self.next() {
            Some(Tok::Str(s)) if !negative => Ok(Literal::Str(s)),
            Some(Tok::Num(n)) => number_literal(&n, negative)
                .ok_or_else(|| format!("the number {n} is too large (at most 38 digits)")),
            _ => {
                self.pos = self.pos.saturating_sub(1);
                Err(format!("{}: expected a literal", self.here()))
            }
        }
    }

    fn value(&mut self) -> Result<Expr, String> {
        match self.peek().cloned() {
            Some(Tok::Minus | Tok::Num(_) | Tok::Str(_)) => Ok(Expr::Literal(self.literal()?)),
            Some(Tok::Quoted(name)) => {
                self.pos += 1;
                Ok(Expr::Column(name))
            }
            Some(Tok::Word(word)) => {
                let lower = word.to_ascii_lowercase();
                if self.peek_at(1) == Some(&Tok::LParen) {
                    self.pos += 2;
                    if lower == "cast" {
                        let arg = self.value()?;
                        if !self.eat_keyword("as") {
                            return Err(format!("{}: expected `as` and a type", self.here()));
                        }
                        let ty = self.target_type()?;
                        self.expect(&Tok::RParen, "`)` closing cast(…)")?;
                        return Ok(Expr::Cast {
                            arg: Box::new(arg),
                            ty,
                        });
                    }
                    let func = Func::parse(&lower).ok_or_else(|| {
                        format!(
                            "`{word}` is not a function; the functions are concat, lower, upper, trim, coalesce, substring, date_format, hash and cast"
                        )
                    })?;
                    let mut args = vec![self.value()?];
                    while self.peek() == Some(&Tok::Comma) {
                        self.pos += 1;
                        args.push(self.value()?);
                    }
                    self.expect(&Tok::RParen, "`,` or `)`")?;
                    check_call(func, &args)?;
                    return Ok(Expr::Call { func, args });
                }
                if lower == "null" {
                    return Err(format!(
                        "{}: there is no NULL literal; test with `is null`, replace with coalesce(…)",
                        self.here()
                    ));
                }
                if RESERVED.contains(&lower.as_str()) {
                    return Err(format!(
                        "{}: `{word}` is a keyword; backquote a column of that name (`{word}`)",
                        self.here()
                    ));
                }
                self.pos += 1;
                Ok(Expr::Column(word))
            }
            _ => Err(format!(
                "{}: expected a column, a literal or a function",
                self.here()
            )),
        }
    }

    // -- invariant queries --

    fn query(&mut self) -> Result<Query, String> {
        let figure = self.figure()?;
        let filter = if self.eat_keyword("where") {
            Some(self.predicate()?)
        } else {
            None
        };
        let mut group_by = Vec::new();
        if self.eat_keyword("group") {
            if !self.eat_keyword("by") {
                return Err(format!("{}: expected `by` after `group`", self.here()));
            }
            group_by.push(self.value()?);
            while self.peek() == Some(&Tok::Comma) {
                self.pos += 1;
                group_by.push(self.value()?);
            }
        }
        Ok(Query {
            figure,
            filter,
            group_by,
        })
    }

    fn figure(&mut self) -> Result<Figure, String> {
        let mut left = self.term()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Plus) => ArithOp::Add,
                Some(Tok::Minus) => ArithOp::Sub,
                _ => return Ok(left),
            };
            self.pos += 1;
            let right = self.term()?;
            left = Figure::Arith {
                op,
                left: Box::new(left),
                right: Box::new(right),
            };
        }
    }

    fn term(&mut self) -> Result<Figure, String> {
        let mut left = self.factor()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Star) => ArithOp::Mul,
                Some(Tok::Slash) => ArithOp::Div,
                _ => return Ok(left),
            };
            self.pos += 1;
            let right = self.factor()?;
            left = Figure::Arith {
                op,
                left: Box::new(left),
                right: Box::new(right),
            };
        }
    }

    fn factor(&mut self) -> Result<Figure, String> {
        match self.peek().cloned() {
            Some(Tok::LParen) => {
                self.pos += 1;
                let inner = self.figure()?;
                self.expect(&Tok::RParen, "`)`")?;
                Ok(inner)
            }
            Some(Tok::Num(_)) => match self.literal()? {
                l @ (Literal::Int(_) | Literal::Dec(_)) => Ok(Figure::Number(l)),
                Literal::Str(_) => unreachable!("a number token is a number literal"),
            },
            Some(Tok::Word(word)) if self.peek_at(1) == Some(&Tok::LParen) => {
                let func = AggFunc::parse(&word.to_ascii_lowercase()).ok_or_else(|| {
                    format!(
                        "{}: `{word}` is not an aggregate; an invariant computes count, sum, min or max (of any expression), and arithmetic between them",
                        self.here()
                    )
                })?;
                self.pos += 2;
                if func == AggFunc::Count && self.peek() == Some(&Tok::Star) {
                    self.pos += 1;
                    self.expect(&Tok::RParen, "`)` closing count(*)")?;
                    return Ok(Figure::Aggregate(Aggregate {
                        func,
                        arg: None,
                        distinct: false,
                    }));
                }
                let distinct = self.eat_keyword("distinct");
                if distinct && func != AggFunc::Count {
                    return Err(format!(
                        "{}: `distinct` goes with count only (min, max and sum of distinct values are not offered)",
                        self.here()
                    ));
                }
                let arg = self.value()?;
                self.expect(&Tok::RParen, &format!("`)` closing {}(…)", func.name()))?;
                Ok(Figure::Aggregate(Aggregate {
                    func,
                    arg: Some(arg),
                    distinct,
                }))
            }
            _ => Err(format!(
                "{}: expected an aggregate (count, sum, min, max), a number or `(`",
                self.here()
            )),
        }
    }

    // -- predicates --

    fn predicate(&mut self) -> Result<Pred, String> {
        let mut parts = vec![self.disjunct()?];
        while self.eat_keyword("or") {
            parts.push(self.disjunct()?);
        }
        Ok(flatten(parts, true))
    }

    fn disjunct(&mut self) -> Result<Pred, String> {
        let mut parts = vec![self.negation()?];
        while self.eat_keyword("and") {
            parts.push(self.negation()?);
        }
        Ok(flatten(parts, false))
    }

    fn negation(&mut self) -> Result<Pred, String> {
        if self.eat_keyword("not") {
            return Ok(Pred::Not(Box::new(self.negation()?)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let p = self.predicate()?;
            self.expect(&Tok::RParen, "`)`")?;
            return Ok(p);
        }
        self.test()
    }

    fn test(&mut self) -> Result<Pred, String> {
        let left = self.value()?;
        if let Some(Tok::Op(op)) = self.peek().cloned() {
            self.pos += 1;
            let right = self.value()?;
            return Ok(Pred::Cmp { op, left, right });
        }
        if self.eat_keyword("is") {
            let negated = self.eat_keyword("not");
            if !self.eat_keyword("null") {
                return Err(format!("{}: expected `null` after `is`", self.here()));
            }
            return Ok(Pred::IsNull { arg: left, negated });
        }
        let negated = self.eat_keyword("not");
        if self.eat_keyword("in") {
            self.expect(&Tok::LParen, "`(` and a list of literals")?;
            let mut list = vec![self.literal()?];
            while self.peek() == Some(&Tok::Comma) {
                self.pos += 1;
                list.push(self.literal()?);
            }
            self.expect(&Tok::RParen, "`,` or `)`")?;
            return Ok(Pred::In {
                arg: left,
                list,
                negated,
            });
        }
        Err(format!(
            "{}: expected a comparison (=, !=, <, <=, >, >=), `is [not] null` or `[not] in (…)`",
            self.here()
        ))
    }
}

fn flatten(parts: Vec<Pred>, or: bool) -> Pred {
    if parts.len() == 1 {
        return parts.into_iter().next().unwrap_or(Pred::And(Vec::new()));
    }
    let mut flat = Vec::new();
    for p in parts {
        match (p, or) {
            (Pred::Or(inner), true) | (Pred::And(inner), false) => flat.extend(inner),
            (other, _) => flat.push(other),
        }
    }
    if or {
        Pred::Or(flat)
    } else {
        Pred::And(flat)
    }
}

fn number_literal(digits: &str, negative: bool) -> Option<Literal> {
    let sign = if negative { "-" } else { "" };
    match digits.split_once('.') {
        None => format!("{sign}{digits}")
            .parse::<i128>()
            .ok()
            .map(Literal::Int),
        Some((int, frac)) => {
            if int.len() + frac.len() > 65 {
                return None;
            }
            let int = int.trim_start_matches('0');
            let int = if int.is_empty() { "0" } else { int };
            let zero = int == "0" && frac.bytes().all(|b| b == b'0');
            let sign = if zero { "" } else { sign };
            Some(Literal::Dec(format!("{sign}{int}.{frac}")))
        }
    }
}

/// Arity and literal-argument checks that need no schema.
fn check_call(func: Func, args: &[Expr]) -> Result<(), String> {
    let n = args.len();
    let arity_ok = match func {
        Func::Concat => n >= 1,
        Func::Coalesce => n >= 2,
        Func::Lower | Func::Upper | Func::Trim | Func::Hash => n == 1,
        Func::Substring => n == 2 || n == 3,
        Func::DateFormat => n == 2,
    };
    if !arity_ok {
        let want = match func {
            Func::Concat => "one or more arguments",
            Func::Coalesce => "two or more arguments",
            Func::Lower | Func::Upper | Func::Trim | Func::Hash => "exactly one argument",
            Func::Substring => "substring(text, start) or substring(text, start, length)",
            Func::DateFormat => "date_format(date, 'format')",
        };
        return Err(format!("{}(…) takes {want}, not {n}", func.name()));
    }
    match func {
        Func::Substring => {
            match &args[1] {
                Expr::Literal(Literal::Int(s)) if *s >= 1 && *s <= i128::from(u32::MAX) => {}
                other => {
                    return Err(format!(
                        "substring: the start must be an integer literal from 1 (the first character), not {other}"
                    ))
                }
            }
            if let Some(len) = args.get(2) {
                match len {
                    Expr::Literal(Literal::Int(l)) if *l >= 0 && *l <= i128::from(u32::MAX) => {}
                    other => {
                        return Err(format!(
                            "substring: the length must be a non-negative integer literal, not {other}"
                        ))
                    }
                }
            }
        }
        Func::DateFormat => match &args[1] {
            Expr::Literal(Literal::Str(format)) => {
                time::format_description::parse_owned::<1>(format)
                    .map_err(|e| format!("date_format: `{format}` is not a valid format description ({e}); e.g. '[year]-[month]-[day]'"))?;
            }
            other => {
                return Err(format!(
                    "date_format: the format must be a string literal such as '[year]-[month]-[day] [hour]:[minute]', not {other}"
                ))
            }
        },
        _ => {}
    }
    Ok(())
}

fn num_arg(args: &[Tok], i: usize, what: &str, name: &str) -> Result<u64, String> {
    match args.get(i) {
        Some(Tok::Num(n)) if !n.contains('.') => n
            .parse()
            .map_err(|_| format!("{name}: {what} `{n}` is too large")),
        Some(other) => Err(format!(
            "{name}: {what} must be a whole number, not {other}"
        )),
        None => Err(format!("{name}: {what} is missing")),
    }
}

fn type_from_parts(name: &str, args: &[Tok]) -> Result<TargetType, String> {
    let no_args = |ty: TargetType| {
        if args.is_empty() {
            Ok(ty)
        } else {
            Err(format!("`{name}` takes no arguments"))
        }
    };
    let at_most = |n: usize| {
        if args.len() > n {
            Err(format!("`{name}` takes at most {n} argument(s)"))
        } else {
            Ok(())
        }
    };
    let fsp = |args: &[Tok]| -> Result<u8, String> {
        if args.is_empty() {
            return Ok(0);
        }
        let f = num_arg(args, 0, "the fractional-second precision", name)?;
        if f > 6 {
            return Err(format!(
                "{name}: fractional-second precision {f} is above 6"
            ));
        }
        Ok(f as u8)
    };
    let int_bits = |s: &str| -> Option<u8> {
        match s {
            "8" => Some(8),
            "16" => Some(16),
            "24" => Some(24),
            "32" => Some(32),
            "64" => Some(64),
            _ => None,
        }
    };
    if let Some(bits) = name.strip_prefix("uint").and_then(int_bits) {
        return no_args(TargetType::UInt { bits });
    }
    if let Some(bits) = name.strip_prefix("int").and_then(int_bits) {
        return no_args(TargetType::Int { bits });
    }
    match name {
        "float" => no_args(TargetType::Float),
        "double" => no_args(TargetType::Double),
        "date" => no_args(TargetType::Date),
        "year" => no_args(TargetType::Year),
        "json" => no_args(TargetType::Json),
        "geometry" => no_args(TargetType::Geometry),
        "decimal" => {
            at_most(2)?;
            let p = num_arg(args, 0, "the precision", name)?;
            let s = num_arg(args, 1, "the scale", name)?;
            if !(1..=65).contains(&p) {
                return Err(format!("decimal: precision {p} is outside 1..=65"));
            }
            if s > 30 || s > p {
                return Err(format!(
                    "decimal: scale {s} must be at most 30 and at most the precision {p}"
                ));
            }
            Ok(TargetType::Decimal {
                precision: p as u8,
                scale: s as u8,
            })
        }
        "datetime" | "timestamp" | "time" => {
            at_most(1)?;
            let fsp = fsp(args)?;
            Ok(match name {
                "datetime" => TargetType::DateTime { fsp },
                "timestamp" => TargetType::Timestamp { fsp },
                _ => TargetType::Time { fsp },
            })
        }
        "text" | "bytes" => {
            at_most(1)?;
            let max = if args.is_empty() {
                None
            } else {
                Some(num_arg(args, 0, "the maximum length", name)?)
            };
            Ok(if name == "text" {
                TargetType::Text { max_chars: max }
            } else {
                TargetType::Bytes { max_len: max }
            })
        }
        "bit" => {
            at_most(1)?;
            let w = num_arg(args, 0, "the width", name)?;
            if !(1..=64).contains(&w) {
                return Err(format!("bit: width {w} is outside 1..=64"));
            }
            Ok(TargetType::Bit { width: w as u8 })
        }
        "enum" | "set" => {
            let mut members: Vec<String> = Vec::new();
            for a in args {
                match a {
                    Tok::Str(m) => {
                        if members.contains(m) {
                            return Err(format!("{name}: member '{m}' is listed twice"));
                        }
                        if name == "set" && m.contains(',') {
                            return Err(format!("set: member '{m}' contains a comma"));
                        }
                        members.push(m.clone());
                    }
                    other => {
                        return Err(format!(
                            "{name}: members are quoted strings, not {other}"
                        ))
                    }
                }
            }
            if members.is_empty() {
                return Err(format!("{name}: list at least one member, e.g. {name}('a','b')"));
            }
            Ok(if name == "enum" {
                TargetType::Enum { members }
            } else {
                TargetType::Set { members }
            })
        }
        other => Err(format!(
            "`{other}` is not a type; the types are int8…int64, uint8…uint64, float, double, decimal(P,S), date, datetime[(F)], timestamp[(F)], time[(F)], year, text[(N)], bytes[(N)], enum('a',…), set('a',…), bit(W), json, geometry"
        )),
    }
}

/// Parse a target type in the type syntax (see the module docs), e.g. `decimal(10, 2)`.
pub fn parse_type(text: &str) -> Result<TargetType, String> {
    let mut p = Parser::new(text)?;
    let ty = p.target_type()?;
    p.finish()?;
    Ok(ty)
}

pub(crate) fn parse_expr(text: &str) -> Result<Expr, String> {
    let mut p = Parser::new(text)?;
    let e = p.value()?;
    p.finish()?;
    Ok(e)
}

pub(crate) fn parse_pred(text: &str) -> Result<Pred, String> {
    let mut p = Parser::new(text)?;
    let e = p.predicate()?;
    p.finish()?;
    Ok(e)
}

/// Parse one side of an invariant (see the module doc for its grammar).
pub(crate) fn parse_query(text: &str) -> Result<Query, String> {
    let mut p = Parser::new(text)?;
    let q = p.query()?;
    p.finish()?;
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_round_trip_through_their_canonical_text() {
        for (text, canonical) in [
            ("INT32", "int32"),
            ("uint64", "uint64"),
            ("decimal( 10 , 2 )", "decimal(10,2)"),
            ("datetime(0)", "datetime"),
            ("Timestamp(6)", "timestamp(6)"),
            ("text", "text"),
            ("text(45)", "text(45)"),
            ("bytes(16)", "bytes(16)"),
            ("enum('G', 'PG-13', 'it''s')", "enum('G','PG-13','it''s')"),
            ("set('a','b')", "set('a','b')"),
            ("bit(1)", "bit(1)"),
            ("json", "json"),
            ("year", "year"),
        ] {
            let ty = parse_type(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(render_type(&ty), canonical);
            assert_eq!(parse_type(canonical).unwrap(), ty);
        }
        for bad in [
            "int",
            "int12",
            "decimal(66,2)",
            "decimal(5,6)",
            "decimal",
            "datetime(7)",
            "bit(0)",
            "enum()",
            "enum('a','a')",
            "varchar(10)",
            "text(1.5)",
            "text 10",
            "set('a,b')",
        ] {
            assert!(parse_type(bad).is_err(), "{bad} must not parse");
        }
    }

    #[test]
    fn expressions_render_canonically() {
        let e = parse_expr("CONCAT( first_name ,' ',`last name`, 'it''s' )").unwrap();
        assert_eq!(
            e.to_string(),
            "concat(`first_name`, ' ', `last name`, 'it''s')"
        );
        assert_eq!(parse_expr(&e.to_string()).unwrap(), e);
        let c = parse_expr("cast(substring(code, 1, 3) AS Decimal(5,1))").unwrap();
        assert_eq!(
            c.to_string(),
            "cast(substring(`code`, 1, 3) as decimal(5,1))"
        );
        let p =
            parse_pred("a = 1 AND (b <> 'x' OR NOT c IS NULL) and d not in (1, -2.50)").unwrap();
        assert_eq!(
            p.to_string(),
            "`a` = 1 and (`b` != 'x' or not `c` is null) and `d` not in (1, -2.50)"
        );
        assert_eq!(parse_pred(&p.to_string()).unwrap(), p);
        // Associativity is normalized; precedence is kept.
        assert_eq!(
            parse_pred("a = 1 and (b = 2 and c = 3)").unwrap(),
            parse_pred("(a = 1 and b = 2) and c = 3").unwrap()
        );
        assert_ne!(
            parse_pred("a = 1 and b = 2 or c = 3").unwrap(),
            parse_pred("a = 1 and (b = 2 or c = 3)").unwrap()
        );
    }

    #[test]
    fn invariant_queries_render_canonically() {
        for (text, canonical) in [
            (
                "SUM(amount) WHERE amount > 0 GROUP BY customer_id",
                "sum(`amount`) where `amount` > 0 group by `customer_id`",
            ),
            ("count(*)", "count(*)"),
            ("count( distinct x )", "count(distinct `x`)"),
            ("sum(a_cents) / 100", "sum(`a_cents`) / 100"),
            ("(sum(a) + sum(b)) * 2", "(sum(`a`) + sum(`b`)) * 2"),
            (
                "sum(a) - (sum(b) - sum(c))",
                "sum(`a`) - (sum(`b`) - sum(`c`))",
            ),
            ("sum(a) - sum(b) - sum(c)", "sum(`a`) - sum(`b`) - sum(`c`)"),
            (
                "max(d) group by a, lower(b)",
                "max(`d`) group by `a`, lower(`b`)",
            ),
        ] {
            let q = parse_query(text).unwrap();
            assert_eq!(q.to_string(), canonical, "{text}");
            assert_eq!(parse_query(canonical).unwrap(), q, "{canonical}");
        }
        for (bad, needle) in [
            ("avg(x)", "not an aggregate"),
            ("sum(distinct x)", "count only"),
            ("amount", "expected an aggregate"),
            ("sum(x) group customer_id", "expected `by`"),
            ("sum(x) where", "expected a column"),
            ("count(*", "`)`"),
        ] {
            let e = parse_query(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_expressions_say_where() {
        for (bad, needle) in [
            ("concat(a", "expected `,` or `)`"),
            ("lower(a, b)", "exactly one argument"),
            ("frobnicate(a)", "not a function"),
            ("substring(a, 0)", "start"),
            ("substring(a, 1, b)", "length"),
            ("date_format(d, '[nope]')", "format description"),
            ("coalesce(a)", "two or more"),
            ("null", "no NULL literal"),
            ("'unterminated", "never closed"),
            ("a b", "unexpected text"),
            ("3abc", "neither a number nor a name"),
            ("cast(a int32)", "expected `as`"),
        ] {
            let e = parse_expr(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        for (bad, needle) in [
            ("a", "expected a comparison"),
            ("a = ", "expected a column"),
            ("a is 1", "expected `null`"),
            ("a in ()", "expected a literal"),
            ("(a = 1", "`)`"),
            ("and = 1", "keyword"),
        ] {
            let e = parse_pred(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }
}
