//! `transform_version` is stable under reformatting of the configuration (key order, inline
//! tables versus sections versus dotted keys, whitespace, comments, keyword case, `<>` versus
//! `!=`, redundant parentheses, order of `drop`) and changes with every semantic change, for the
//! changed table only.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tidemark_schemas::TableId;
use tidemark_transform::{canonical_form, MappingConfig, Transformer};

// ---------------------------------------------------------------------------------------------
// A model of a mapping, rendered to TOML in many equivalent ways.

#[derive(Debug, Clone, PartialEq)]
enum E {
    Col(String),
    Str(String),
    Int(i64),
    Call(&'static str, Vec<E>),
    Substring(Box<E>, u32, Option<u32>),
    DateFormat(Box<E>, &'static str),
    Cast(Box<E>, &'static str),
}

#[derive(Debug, Clone, PartialEq)]
enum F {
    Cmp(String, &'static str, E),
    IsNull(String, bool),
    In(String, Vec<i64>, bool),
    And(Vec<F>),
    Or(Vec<F>),
    Not(Box<F>),
}

#[derive(Debug, Clone, PartialEq, Default)]
struct C {
    rename: Option<String>,
    ty: Option<&'static str>,
    nullable: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
struct K {
    expr: E,
    ty: Option<&'static str>,
    nullable: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
struct M {
    source: String,
    target: Option<String>,
    drop: Vec<String>,
    columns: BTreeMap<String, C>,
    computed: BTreeMap<String, K>,
    key: Option<Vec<String>>,
    filter: Option<F>,
    zero_dates: Option<&'static str>,
}

const TYPES: &[&str] = &[
    "int8",
    "uint32",
    "int64",
    "decimal(10,2)",
    "decimal(5,0)",
    "text",
    "text(45)",
    "bytes(16)",
    "datetime(3)",
    "timestamp",
    "date",
    "year",
    "enum('a','B')",
    "set('x','y')",
    "bit(3)",
    "json",
    "double",
];

const FORMATS: &[&str] = &["[year]-[month]-[day]", "[hour]:[minute]", "[weekday]"];

fn name(prefix: &'static str, n: usize) -> impl Strategy<Value = String> {
    (0..n).prop_map(move |i| format!("{prefix}{i}"))
}

fn expr() -> impl Strategy<Value = E> {
    let leaf = prop_oneof![
        name("s", 6).prop_map(E::Col),
        prop::sample::select(vec!["", "x", "it's", "ü", " a b ", "\\"])
            .prop_map(|s| E::Str(s.to_string())),
        (-1000i64..1000).prop_map(E::Int),
    ];
    leaf.prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(|a| E::Call("concat", a)),
            prop::collection::vec(inner.clone(), 2..4).prop_map(|a| E::Call("coalesce", a)),
            (
                prop::sample::select(vec!["lower", "upper", "trim", "hash"]),
                inner.clone()
            )
                .prop_map(|(f, a)| E::Call(f, vec![a])),
            (inner.clone(), 1u32..5, prop::option::of(0u32..4)).prop_map(|(a, s, l)| E::Substring(
                Box::new(a),
                s,
                l
            )),
            (inner.clone(), prop::sample::select(FORMATS))
                .prop_map(|(a, f)| E::DateFormat(Box::new(a), f)),
            (inner, prop::sample::select(TYPES)).prop_map(|(a, t)| E::Cast(Box::new(a), t)),
        ]
    })
}

fn filter() -> impl Strategy<Value = F> {
    let leaf = prop_oneof![
        (
            name("s", 6),
            prop::sample::select(vec!["=", "!=", "<", "<=", ">", ">="]),
            prop_oneof![
                (-50i64..50).prop_map(E::Int),
                prop::sample::select(vec!["a", "b'c", "2006-02-15"])
                    .prop_map(|s| E::Str(s.to_string())),
                name("s", 6).prop_map(E::Col),
            ]
        )
            .prop_map(|(c, op, e)| F::Cmp(c, op, e)),
        (name("s", 6), any::<bool>()).prop_map(|(c, n)| F::IsNull(c, n)),
        (
            name("s", 6),
            prop::collection::vec(-9i64..9, 1..4),
            any::<bool>()
        )
            .prop_map(|(c, l, n)| F::In(c, l, n)),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(F::And),
            prop::collection::vec(inner.clone(), 2..4).prop_map(F::Or),
            inner.prop_map(|f| F::Not(Box::new(f))),
        ]
    })
    .prop_map(normalize_filter)
}

/// And/Or are n-ary and associative in the parsed form: flatten the model the same way.
fn normalize_filter(f: F) -> F {
    match f {
        F::And(ps) => {
            let mut out = Vec::new();
            for p in ps.into_iter().map(normalize_filter) {
                match p {
                    F::And(inner) => out.extend(inner),
                    other => out.push(other),
                }
            }
            F::And(out)
        }
        F::Or(ps) => {
            let mut out = Vec::new();
            for p in ps.into_iter().map(normalize_filter) {
                match p {
                    F::Or(inner) => out.extend(inner),
                    other => out.push(other),
                }
            }
            F::Or(out)
        }
        F::Not(p) => F::Not(Box::new(normalize_filter(*p))),
        other => other,
    }
}

fn column_settings() -> impl Strategy<Value = C> {
    (
        prop::option::of(name("r", 4)),
        prop::option::of(prop::sample::select(TYPES)),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(rename, ty, nullable)| C {
            rename,
            ty,
            nullable,
        })
}

fn mapping(table: &'static str) -> impl Strategy<Value = M> {
    (
        prop::option::of(name("t", 3)),
        prop::collection::btree_set(name("d", 4), 0..3),
        prop::collection::btree_map(name("c", 5), column_settings(), 0..4),
        prop::collection::btree_map(
            name("x", 4),
            (
                expr(),
                prop::option::of(prop::sample::select(TYPES)),
                prop::option::of(any::<bool>()),
            )
                .prop_map(|(expr, ty, nullable)| K { expr, ty, nullable }),
            0..3,
        ),
        prop::option::of(prop::collection::btree_set(name("k", 4), 1..3)),
        prop::option::of(filter()),
        prop::option::of(prop::sample::select(vec!["reject", "keep", "null"])),
    )
        .prop_map(
            move |(target, drop, columns, computed, key, filter, zero_dates)| M {
                source: format!("db.{table}"),
                target: target.map(|t| format!("{table}_{t}")),
                drop: drop.into_iter().collect(),
                columns,
                computed,
                key: key.map(|k| k.into_iter().collect()),
                filter,
                zero_dates,
            },
        )
}

/// A tiny deterministic generator for formatting choices.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
    fn pick(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn ws(&mut self) -> &'static str {
        ["", " ", "  ", "\t"][self.pick(4)]
    }
    fn case(&mut self, word: &str) -> String {
        match self.pick(3) {
            0 => word.to_string(),
            1 => word.to_uppercase(),
            _ => word
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if i % 2 == 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect(),
        }
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.pick(i + 1);
            v.swap(i, j);
        }
    }
}

fn quote(s: &str, q: char) -> String {
    let doubled: String = s
        .chars()
        .flat_map(|c| if c == q { vec![c, c] } else { vec![c] })
        .collect();
    format!("{q}{doubled}{q}")
}

/// A type string with noise: name case, spaces inside the parentheses.
fn render_type(ty: &str, n: &mut Noise) -> String {
    let (head, rest) = ty.split_once('(').unwrap_or((ty, ""));
    let mut out = n.case(head);
    if !rest.is_empty() {
        out.push('(');
        out.push_str(n.ws());
        let inner = rest.trim_end_matches(')');
        let sep = format!("{},{}", n.ws(), n.ws());
        out.push_str(&inner.split(',').collect::<Vec<_>>().join(&sep));
        out.push_str(n.ws());
        out.push(')');
    }
    out
}

fn render_col(c: &str, n: &mut Noise) -> String {
    if n.coin() {
        quote(c, '`')
    } else {
        c.to_string()
    }
}

fn render_expr(e: &E, n: &mut Noise) -> String {
    match e {
        E::Col(c) => render_col(c, n),
        E::Str(s) => quote(s, '\''),
        E::Int(i) => {
            if *i >= 0 && n.coin() {
                format!("{}{i}", "0".repeat(n.pick(3)))
            } else {
                i.to_string()
            }
        }
        E::Call(f, args) => {
            let sep = format!("{},{}", n.ws(), n.ws());
            let args: Vec<String> = args.iter().map(|a| render_expr(a, n)).collect();
            format!(
                "{}{}({}{}{})",
                n.case(f),
                n.ws(),
                n.ws(),
                args.join(&sep),
                n.ws()
            )
        }
        E::Substring(a, s, l) => {
            let a = render_expr(a, n);
            match l {
                Some(l) => format!("{}({a}, {s},{}{l})", n.case("substring"), n.ws()),
                None => format!("{}({a},{s})", n.case("substring")),
            }
        }
        E::DateFormat(a, f) => {
            format!("{}({}, '{f}')", n.case("date_format"), render_expr(a, n))
        }
        E::Cast(a, t) => format!(
            "{}({} {} {})",
            n.case("cast"),
            render_expr(a, n),
            n.case("as"),
            render_type(t, n)
        ),
    }
}

fn render_filter(f: &F, n: &mut Noise) -> String {
    let atom = |s: String, n: &mut Noise| {
        if n.pick(4) == 0 {
            format!("({}{s}{})", n.ws(), n.ws())
        } else {
            s
        }
    };
    match f {
        F::Cmp(c, op, e) => {
            let op = if *op == "!=" && n.coin() { "<>" } else { op };
            let s = format!(
                "{}{} {op} {}{}",
                n.ws(),
                render_col(c, n),
                render_expr(e, n),
                n.ws()
            );
            atom(s, n)
        }
        F::IsNull(c, negated) => {
            let not = if *negated {
                format!("{} ", n.case("not"))
            } else {
                String::new()
            };
            let s = format!(
                "{} {} {not}{}",
                render_col(c, n),
                n.case("is"),
                n.case("null")
            );
            atom(s, n)
        }
        F::In(c, list, negated) => {
            let not = if *negated {
                format!("{} ", n.case("not"))
            } else {
                String::new()
            };
            let items: Vec<String> = list.iter().map(|i| i.to_string()).collect();
            let s = format!(
                "{} {not}{} ({})",
                render_col(c, n),
                n.case("in"),
                items.join(", ")
            );
            atom(s, n)
        }
        F::And(ps) => {
            // Regroup associatively at random: a and (b and c) parses like a and b and c.
            let parts: Vec<String> = ps
                .iter()
                .map(|p| match p {
                    F::Or(_) => format!("({})", render_filter(p, n)),
                    _ => render_filter(p, n),
                })
                .collect();
            let and = format!(" {} ", n.case("and"));
            if parts.len() >= 3 && n.coin() {
                format!(
                    "{}{and}({}{and}{})",
                    parts[0],
                    parts[1],
                    parts[2..].join(&and)
                )
            } else {
                atom(parts.join(&and), n)
            }
        }
        F::Or(ps) => {
            let parts: Vec<String> = ps.iter().map(|p| render_filter(p, n)).collect();
            let or = format!(" {} ", n.case("or"));
            atom(parts.join(&or), n)
        }
        F::Not(p) => {
            let inner = render_filter(p, n);
            match p.as_ref() {
                F::And(_) | F::Or(_) => format!("{} ({inner})", n.case("not")),
                _ => format!("{} {inner}", n.case("not")),
            }
        }
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_array(items: &[String], n: &mut Noise) -> String {
    let rendered: Vec<String> = items.iter().map(|s| toml_str(s)).collect();
    if n.coin() {
        let mut out = String::from("[\n");
        for r in &rendered {
            out.push_str(&format!(
                "  {r},{}\n",
                if n.coin() { " # item" } else { "" }
            ));
        }
        out.push(']');
        out
    } else {
        format!("[{}]", rendered.join(&format!(",{}", n.ws())))
    }
}

fn kv(key: &str, value: String, n: &mut Noise) -> String {
    let comment = if n.pick(4) == 0 { "   # a comment" } else { "" };
    format!("{key}{}={}{value}{comment}\n", n.ws(), n.ws())
}

/// The fields of a column setting or computed column, as `(key, TOML value)` pairs.
fn column_fields(c: &C, n: &mut Noise) -> Vec<(String, String)> {
    let mut f = Vec::new();
    if let Some(r) = &c.rename {
        f.push(("rename".to_string(), toml_str(r)));
    }
    if let Some(t) = c.ty {
        f.push(("type".to_string(), toml_str(&render_type(t, n))));
    }
    if let Some(b) = c.nullable {
        f.push(("nullable".to_string(), b.to_string()));
    }
    n.shuffle(&mut f);
    f
}

fn computed_fields(k: &K, n: &mut Noise) -> Vec<(String, String)> {
    let mut f = vec![("expr".to_string(), toml_str(&render_expr(&k.expr, n)))];
    if let Some(t) = k.ty {
        f.push(("type".to_string(), toml_str(&render_type(t, n))));
    }
    if let Some(b) = k.nullable {
        f.push(("nullable".to_string(), b.to_string()));
    }
    n.shuffle(&mut f);
    f
}

fn inline(fields: &[(String, String)], n: &mut Noise) -> String {
    let parts: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{k}{}={}{v}", n.ws(), n.ws()))
        .collect();
    format!("{{{}{}{}}}", n.ws(), parts.join(", "), n.ws())
}

/// One rendering of the mappings; `seed` picks every formatting choice.
fn render(ms: &[M], seed: u64) -> String {
    let n = &mut Noise(seed);
    let mut out = String::new();
    if n.coin() {
        out.push_str("# tidemark mappings\n\n");
    }
    for m in ms {
        out.push_str("[[mapping]]\n");
        let mut simple: Vec<String> = vec![kv("source", toml_str(&m.source), n)];
        if let Some(t) = &m.target {
            simple.push(kv("target", toml_str(t), n));
        }
        if !m.drop.is_empty() || n.pick(4) == 0 {
            let mut d = m.drop.clone();
            n.shuffle(&mut d);
            simple.push(kv("drop", toml_array(&d, n), n));
        }
        if let Some(k) = &m.key {
            simple.push(kv("key", toml_array(k, n), n));
        }
        if let Some(f) = &m.filter {
            simple.push(kv("filter", toml_str(&render_filter(f, n)), n));
        }
        if let Some(z) = m.zero_dates {
            simple.push(kv("zero_dates", toml_str(z), n));
        }
        let mut sections = Vec::new();
        // Columns: an inline table, dotted keys, or sections.
        match n.pick(3) {
            0 if !m.columns.is_empty() => {
                let mut entries: Vec<String> = Vec::new();
                for (name, c) in &m.columns {
                    let f = column_fields(c, n);
                    entries.push(format!("{name} = {}", inline(&f, n)));
                }
                n.shuffle(&mut entries);
                simple.push(kv("columns", format!("{{ {} }}", entries.join(", ")), n));
            }
            1 => {
                for (name, c) in &m.columns {
                    let f = column_fields(c, n);
                    if f.is_empty() {
                        simple.push(kv(&format!("columns.{name}"), "{}".into(), n));
                    }
                    for (k, v) in f {
                        simple.push(kv(&format!("columns.{name}.{k}"), v, n));
                    }
                }
            }
            _ => {
                for (name, c) in &m.columns {
                    let mut s = format!("\n[mapping.columns.{name}]\n");
                    for (k, v) in column_fields(c, n) {
                        s.push_str(&kv(&k, v, n));
                    }
                    sections.push(s);
                }
            }
        }
        match n.pick(3) {
            0 => {
                for (name, k) in &m.computed {
                    let f = computed_fields(k, n);
                    simple.push(kv(&format!("computed.{name}"), inline(&f, n), n));
                }
            }
            1 if !m.computed.is_empty() => {
                let mut s = String::from("\n[mapping.computed]\n");
                let mut entries: Vec<String> = Vec::new();
                for (name, k) in &m.computed {
                    let f = computed_fields(k, n);
                    entries.push(kv(name, inline(&f, n), n));
                }
                n.shuffle(&mut entries);
                s.push_str(&entries.concat());
                sections.push(s);
            }
            _ => {
                for (name, k) in &m.computed {
                    let mut s = format!("\n[mapping.computed.{name}]\n");
                    for (k, v) in computed_fields(k, n) {
                        s.push_str(&kv(&k, v, n));
                    }
                    sections.push(s);
                }
            }
        }
        n.shuffle(&mut simple);
        n.shuffle(&mut sections);
        for s in simple {
            if n.pick(5) == 0 {
                out.push_str("# note\n\n");
            }
            out.push_str(&s);
        }
        out.push_str(&sections.concat());
        out.push('\n');
    }
    out
}

fn parse(text: &str) -> Vec<MappingConfig> {
    mappings(text)
}

fn versions(text: &str) -> (Transformer, Vec<String>) {
    let configs = parse(text);
    let t = Transformer::new(&configs).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let v = configs
        .iter()
        .map(|c| {
            let id: TableId = c.source.parse().expect("db.table");
            t.transform_version(&id).to_string()
        })
        .collect();
    (t, v)
}

// ---------------------------------------------------------------------------------------------
// Semantic mutations

#[derive(Debug, Clone)]
enum Mutation {
    Target,
    AddDrop,
    RemoveDrop,
    Rename,
    ChangeType,
    FlipNullable,
    NewColumnSetting,
    ComputedExpr(E),
    AddComputed(E),
    RemoveComputed,
    ComputedType,
    KeySet,
    KeySwap,
    KeyRemove,
    FilterChange(F),
    FilterRemove,
    ZeroDates,
    Source,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        Just(Mutation::Target),
        Just(Mutation::AddDrop),
        Just(Mutation::RemoveDrop),
        Just(Mutation::Rename),
        Just(Mutation::ChangeType),
        Just(Mutation::FlipNullable),
        Just(Mutation::NewColumnSetting),
        expr().prop_map(Mutation::ComputedExpr),
        expr().prop_map(Mutation::AddComputed),
        Just(Mutation::RemoveComputed),
        Just(Mutation::ComputedType),
        Just(Mutation::KeySet),
        Just(Mutation::KeySwap),
        Just(Mutation::KeyRemove),
        filter().prop_map(Mutation::FilterChange),
        Just(Mutation::FilterRemove),
        Just(Mutation::ZeroDates),
        Just(Mutation::Source),
    ]
}

fn other_type(t: Option<&'static str>) -> &'static str {
    TYPES
        .iter()
        .copied()
        .find(|x| Some(*x) != t)
        .expect("more than one type")
}

/// Apply a semantic change; `None` when the mutation does not apply to this model.
fn mutate(m: &M, mutation: &Mutation) -> Option<M> {
    let mut m = m.clone();
    match mutation {
        Mutation::Target => {
            let current = m.target.clone().unwrap_or_else(|| "a".into());
            m.target = Some(format!("{current}_renamed"));
        }
        Mutation::AddDrop => m.drop.push("d_new".into()),
        Mutation::RemoveDrop => {
            m.drop.pop()?;
        }
        Mutation::Rename => {
            let (name, c) = m.columns.iter_mut().next()?;
            let new = format!("{name}_r");
            if c.rename.as_deref() == Some(new.as_str()) {
                return None;
            }
            c.rename = Some(new);
        }
        Mutation::ChangeType => {
            let c = m.columns.values_mut().next()?;
            c.ty = Some(other_type(c.ty));
        }
        Mutation::FlipNullable => {
            let c = m.columns.values_mut().next()?;
            c.nullable = match c.nullable {
                None => Some(true),
                Some(b) => Some(!b),
            };
        }
        Mutation::NewColumnSetting => {
            m.columns.insert(
                "c_new".into(),
                C {
                    ty: Some("int8"),
                    ..C::default()
                },
            );
        }
        Mutation::ComputedExpr(e) => {
            let k = m.computed.values_mut().next()?;
            if &k.expr == e {
                return None;
            }
            k.expr = e.clone();
        }
        Mutation::AddComputed(e) => {
            m.computed.insert(
                "x_new".into(),
                K {
                    expr: e.clone(),
                    ty: None,
                    nullable: None,
                },
            );
        }
        Mutation::RemoveComputed => {
            let first = m.computed.keys().next()?.clone();
            m.computed.remove(&first);
        }
        Mutation::ComputedType => {
            let k = m.computed.values_mut().next()?;
            k.ty = Some(other_type(k.ty));
        }
        Mutation::KeySet => {
            if m.key.as_deref() == Some(&["k_new".to_string()][..]) {
                return None;
            }
            m.key = Some(vec!["k_new".into()]);
        }
        Mutation::KeySwap => {
            let k = m.key.as_mut().filter(|k| k.len() >= 2)?;
            k.swap(0, 1);
        }
        Mutation::KeyRemove => {
            m.key.take()?;
        }
        Mutation::FilterChange(f) => {
            if m.filter.as_ref() == Some(f) {
                return None;
            }
            m.filter = Some(f.clone());
        }
        Mutation::FilterRemove => {
            m.filter.take()?;
        }
        Mutation::ZeroDates => {
            m.zero_dates = Some(match m.zero_dates.unwrap_or("reject") {
                "reject" => "keep",
                "keep" => "null",
                _ => "reject",
            });
        }
        Mutation::Source => m.source = format!("{}_v2", m.source),
    }
    Some(m)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    /// Reformatting never changes the canonical form or the version.
    #[test]
    fn reformatting_keeps_the_version(a in mapping("a"), b in mapping("b"), s1 in any::<u64>(), s2 in any::<u64>()) {
        let ms = [a, b];
        let one = render(&ms, s1);
        let two = render(&ms, s2);
        let c1 = parse(&one);
        let c2 = parse(&two);
        for (x, y) in c1.iter().zip(&c2) {
            prop_assert_eq!(canonical_form(x), canonical_form(y), "\n{}\n----\n{}", one, two);
        }
        prop_assert_eq!(versions(&one).1, versions(&two).1);
    }

    /// Every semantic change changes the version of the changed table, and only that one.
    #[test]
    fn semantic_changes_change_the_version(
        a in mapping("a"),
        b in mapping("b"),
        m in mutation(),
        s1 in any::<u64>(),
        s2 in any::<u64>(),
    ) {
        let changed = mutate(&a, &m);
        prop_assume!(changed.is_some());
        let changed = changed.unwrap_or_else(|| a.clone());
        let before = render(&[a.clone(), b.clone()], s1);
        let after = render(&[changed, b], s2);
        let (_, v1) = versions(&before);
        let (_, v2) = versions(&after);
        prop_assert_ne!(&v1[0], &v2[0], "{:?} kept the version\n{}\n----\n{}", m, before, after);
        prop_assert_eq!(&v1[1], &v2[1], "{:?} changed another table's version", m);
    }
}

#[test]
fn canonical_form_is_explicit_and_complete() {
    let a = r#"
[[mapping]]
source = "sakila.customer"
columns.email = { type = "TEXT( 50 )", nullable = false }
columns.store_id = {}
computed.full = { expr = "CONCAT( first_name,' ', `last_name`)" }
filter = "active <> 1 AND (store_id = 1 AND store_id = 2)"
"#;
    let b = r#"
# the same, written differently
[[mapping]]
filter = "(active != 1) and store_id = 1 and store_id = 2"
zero_dates = "reject"            # the default, spelled out
target = "customer"              # the default, spelled out
drop = []
source = "sakila.customer"

[mapping.computed.full]
expr = "concat(`first_name`, ' ', last_name)"

[mapping.columns.email]
nullable = false
type = "text(50)"
"#;
    let (ca, cb) = (&mappings(a)[0], &mappings(b)[0]);
    assert_eq!(canonical_form(ca), canonical_form(cb));
    assert_eq!(
        canonical_form(ca),
        r#"{"source":"sakila.customer","target":"customer","columns":{"email":{"type":"text(50)","nullable":false}},"computed":{"full":{"expr":"concat(`first_name`, ' ', `last_name`)"}},"filter":"`active` != 1 and `store_id` = 1 and `store_id` = 2","zero_dates":"reject"}"#
    );
    // The version is the canonical form's hash together with the code version.
    let t = Transformer::new(&mappings(a)).unwrap();
    let id = TableId::new("sakila", "customer");
    assert_eq!(
        t.transform_version(&id),
        tidemark_transform::transform_version(&canonical_form(ca))
    );
    assert_eq!(t.canonical_form(&id), canonical_form(ca));
    // Functions that depend on Unicode tables add their versions to the canonical form.
    let c = mappings(
        "[[mapping]]\nsource = \"sakila.customer\"\ncomputed.l = { expr = \"lower(email)\" }\n",
    );
    assert!(canonical_form(&c[0]).contains(&format!(
        "\"unicode\":\"{}\"",
        tidemark_transform::unicode_versions()
    )));
}
