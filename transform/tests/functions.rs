//! Edge cases of every function: NULLs, Unicode (multi-byte, combining marks, case mapping that
//! changes length), grapheme-aware trim and substring, overflow and exactness in casts.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use sha2::{Digest, Sha256};
use tidemark_schemas::{DateTime, Operation, Row, SourceSchema, SourceType, Value};
use tidemark_transform::{Rejection, RejectionKind, Transformer};
use unicode_segmentation::UnicodeSegmentation;

/// A table with one nullable column of each kind the functions take.
fn lab() -> SourceSchema {
    schema(
        "lab",
        "f",
        vec![
            col("id", uint(32), false, "int(10) unsigned"),
            col(
                "s",
                SourceType::Text {
                    charset: "utf8mb4".into(),
                    max_chars: None,
                    fixed: false,
                },
                true,
                "longtext",
            ),
            col("t", varchar(100), true, "varchar(100)"),
            col("n", int(64), true, "bigint(20)"),
            col("u", uint(64), true, "bigint(20) unsigned"),
            col(
                "d",
                SourceType::Decimal {
                    precision: 30,
                    scale: 4,
                },
                true,
                "decimal(30,4)",
            ),
            col("dt", SourceType::DateTime { fsp: 6 }, true, "datetime(6)"),
            col("day", SourceType::Date, true, "date"),
            col(
                "b",
                SourceType::Binary {
                    max_len: None,
                    fixed: false,
                },
                true,
                "longblob",
            ),
            col("x", SourceType::Double, true, "double"),
        ],
        &["id"],
    )
}

#[derive(Clone, Default)]
struct Vals {
    s: Option<String>,
    t: Option<String>,
    n: Option<i64>,
    u: Option<u64>,
    d: Option<String>,
    dt: Option<Value>,
    day: Option<Value>,
    b: Option<Vec<u8>>,
    x: Option<f64>,
}

fn lab_row(v: &Vals) -> Row {
    row(
        &lab(),
        vec![
            Value::UInt(1),
            v.s.clone().map_or(Value::Null, Value::Text),
            v.t.clone().map_or(Value::Null, Value::Text),
            v.n.map_or(Value::Null, Value::Int),
            v.u.map_or(Value::Null, Value::UInt),
            v.d.clone().map_or(Value::Null, Value::Decimal),
            v.dt.clone().unwrap_or(Value::Null),
            v.day.clone().unwrap_or(Value::Null),
            v.b.clone().map_or(Value::Null, Value::Bytes),
            v.x.map_or(Value::Null, Value::Double),
        ],
    )
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Evaluate `expr` (optionally declared as `ty`) as a computed column over `vals`.
fn eval_with(
    expr: &str,
    ty: Option<&str>,
    zero_dates: &str,
    vals: &Vals,
) -> Result<Value, Box<Rejection>> {
    let ty = ty.map_or(String::new(), |t| format!(", type = {}", toml_str(t)));
    let text = format!(
        "[[mapping]]\nsource = \"lab.f\"\nzero_dates = \"{zero_dates}\"\ncomputed.out = {{ expr = {}{ty}, nullable = true }}\n",
        toml_str(expr)
    );
    let t = transformer(&text);
    let s = lab();
    let plan = t.plan(&s).unwrap_or_else(|e| panic!("{expr}: {e}"));
    let record = plan.apply(&change(&s, Operation::Insert, &lab_row(vals), 1))?;
    Ok(record
        .columns
        .expect("an upsert has columns")
        .get("out")
        .expect("the computed column")
        .clone())
}

fn eval(expr: &str, vals: &Vals) -> Result<Value, Box<Rejection>> {
    eval_with(expr, None, "reject", vals)
}

fn ok(expr: &str, vals: &Vals) -> Value {
    eval(expr, vals).unwrap_or_else(|r| panic!("{expr} was rejected: {r}"))
}

fn s(text: &str) -> Vals {
    Vals {
        s: Some(text.into()),
        ..Vals::default()
    }
}

fn t(text: &str) -> Value {
    Value::Text(text.into())
}

#[test]
fn every_function_passes_null_through_except_coalesce() {
    let nothing = Vals::default();
    for expr in [
        "concat(s)",
        "concat('a', s, 'b')",
        "lower(s)",
        "upper(s)",
        "trim(s)",
        "substring(s, 1, 2)",
        "substring(s, 2)",
        "hash(s)",
        "hash(b)",
        "cast(n as text)",
        "cast(s as int64)",
        "date_format(dt, '[year]')",
        "coalesce(s, t)",
    ] {
        assert_eq!(ok(expr, &nothing), Value::Null, "{expr}");
    }
    assert_eq!(ok("coalesce(s, t, 'z')", &nothing), t("z"));
    let only_t = Vals {
        t: Some("second".into()),
        ..Vals::default()
    };
    assert_eq!(ok("coalesce(s, t, 'z')", &only_t), t("second"));
}

#[test]
fn case_mapping_is_unicode_and_locale_free() {
    assert_eq!(ok("lower(s)", &s("ÀÉÎÕÜ")), t("àéîõü"));
    assert_eq!(ok("upper(s)", &s("straße")), t("STRASSE"));
    assert_eq!(ok("lower(s)", &s("ΟΔΟΣ ΟΔΟΣ")), t("οδος οδος"));
    // Combining marks stay attached and unchanged.
    assert_eq!(ok("lower(s)", &s("E\u{301}COLE")), t("e\u{301}cole"));
    // No Turkish (or any) locale: I lowers to i, İ to i + combining dot.
    assert_eq!(ok("lower(s)", &s("Iİ")), t("ii\u{307}"));
    assert_eq!(ok("upper(s)", &s("ﬁ")), t("FI"));
    // Upper-casing can lengthen text: a declared text(5) rejects what no longer fits.
    let r = eval_with("upper(s)", Some("text(5)"), "reject", &s("straße")).unwrap_err();
    assert_eq!(r.kind, RejectionKind::TooLong);
    assert_eq!(r.column, "out");
}

#[test]
fn trim_and_substring_never_split_a_grapheme() {
    assert_eq!(ok("trim(s)", &s(" \t\u{3000}a b\u{a0}\n")), t("a b"));
    assert_eq!(ok("trim(s)", &s(" \u{301}x ")), t(" \u{301}x"));
    assert_eq!(ok("trim(s)", &s("   ")), t(""));
    assert_eq!(
        ok("substring(s, 2, 2)", &s("ae\u{301}i\u{308}o")),
        t("e\u{301}i\u{308}")
    );
    assert_eq!(ok("substring(s, 1, 1)", &s("👩‍👩‍👧 family")), t("👩‍👩‍👧"));
    assert_eq!(ok("substring(s, 1, 1)", &s("🇫🇷🇩🇪")), t("🇫🇷"));
    assert_eq!(ok("substring(s, 9)", &s("short")), t(""));
    assert_eq!(ok("substring(s, 1, 0)", &s("short")), t(""));
    // Lengths of text(N) count characters (code points), as MySQL does: a 1-grapheme substring
    // of two code points does not fit text(1).
    let r = eval_with(
        "substring(s, 1, 1)",
        Some("text(1)"),
        "reject",
        &s("e\u{301}"),
    )
    .unwrap_err();
    assert_eq!(r.kind, RejectionKind::TooLong);
}

#[test]
fn concat_hash_and_casts_use_canonical_text() {
    let v = Vals {
        s: Some("ü".into()),
        n: Some(-7),
        d: Some("12.5000".into()),
        x: Some(0.1),
        dt: Some(Value::DateTime(DateTime {
            year: 2006,
            month: 2,
            day: 15,
            hour: 5,
            minute: 3,
            second: 42,
            micros: 120_000,
            fsp: 6,
        })),
        ..Vals::default()
    };
    assert_eq!(
        ok("concat(s, '|', n, '|', d, '|', x, '|', dt)", &v),
        t("ü|-7|12.5000|0.1|2006-02-15 05:03:42.120000")
    );
    let sha = |b: &[u8]| hex::encode(Sha256::digest(b));
    assert_eq!(ok("hash(s)", &v), t(&sha("ü".as_bytes())));
    assert_eq!(ok("hash(n)", &v), t(&sha(b"-7")));
    let bytes = Vals {
        b: Some(vec![0, 255, 1]),
        ..Vals::default()
    };
    assert_eq!(ok("hash(b)", &bytes), t(&sha(&[0, 255, 1])));
    assert_eq!(
        ok("date_format(dt, '[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3] [weekday] [month repr:short]')", &v),
        t("2006-02-15 05:03:42.120 Wednesday Feb")
    );
    assert_eq!(
        ok("cast(d as decimal(6,1))", &v),
        Value::Decimal("12.5".into())
    );
    let r = eval("cast(d as decimal(2,1))", &v).unwrap_err();
    assert_eq!(r.kind, RejectionKind::OutOfRange);
    assert_eq!(r.value.as_deref(), Some("12.5000"));
    assert_eq!(
        eval("cast(d as int8)", &v).unwrap_err().kind,
        RejectionKind::Inexact
    );
    assert_eq!(
        eval("cast(x as int8)", &v).unwrap_err().kind,
        RejectionKind::Inexact
    );
    assert_eq!(
        ok("cast(dt as datetime(2))", &v),
        Value::DateTime(DateTime {
            year: 2006,
            month: 2,
            day: 15,
            hour: 5,
            minute: 3,
            second: 42,
            micros: 120_000,
            fsp: 2,
        })
    );
    assert_eq!(
        eval("cast(dt as datetime(1))", &v).unwrap_err().kind,
        RejectionKind::Inexact
    );
    assert_eq!(
        eval("cast(dt as date)", &v).unwrap_err().kind,
        RejectionKind::Inexact
    );
}

#[test]
fn date_format_and_invalid_dates() {
    let zero = Vals {
        day: Some(Value::Date {
            year: 0,
            month: 0,
            day: 0,
        }),
        ..Vals::default()
    };
    let r = eval("date_format(day, '[year]')", &zero).unwrap_err();
    assert_eq!(r.kind, RejectionKind::InvalidDate);
    assert_eq!(r.value.as_deref(), Some("0000-00-00"));
    assert_eq!(
        eval_with("date_format(day, '[year]')", None, "null", &zero).unwrap(),
        Value::Null
    );
    let leap = Vals {
        day: Some(Value::Date {
            year: 2024,
            month: 2,
            day: 29,
        }),
        ..Vals::default()
    };
    assert_eq!(
        ok("date_format(day, '[day]/[month]/[year]')", &leap),
        t("29/02/2024")
    );
    let not_leap = Vals {
        day: Some(Value::Date {
            year: 2023,
            month: 2,
            day: 29,
        }),
        ..Vals::default()
    };
    assert_eq!(
        eval("date_format(day, '[year]')", &not_leap)
            .unwrap_err()
            .kind,
        RejectionKind::InvalidDate
    );
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(any::<char>(), 0..24).prop_map(|c| c.into_iter().collect()),
        prop::collection::vec(
            prop::sample::select(vec![
                " ",
                "\t",
                "\u{3000}",
                "\u{a0}",
                "\n",
                "\r\n",
                "e\u{301}",
                "\u{308}",
                "a",
                "Σ",
                "ß",
                "İ",
                "👩‍👩‍👧",
                "🇫",
                "🇷",
                "\u{200d}",
                "x"
            ]),
            0..12
        )
        .prop_map(|p| p.concat()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn case_mapping_matches_unicode_default_case_mapping(text in any_text()) {
        prop_assert_eq!(ok("lower(s)", &s(&text)), t(&text.to_lowercase()));
        prop_assert_eq!(ok("upper(s)", &s(&text)), t(&text.to_uppercase()));
    }

    /// trim removes whole white-space grapheme clusters from both ends, and nothing else.
    #[test]
    fn trim_removes_whole_white_space_clusters(text in any_text()) {
        let Value::Text(out) = ok("trim(s)", &s(&text)) else {
            panic!("trim gives text");
        };
        let all: Vec<&str> = text.graphemes(true).collect();
        let kept: Vec<&str> = out.graphemes(true).collect();
        let start = all.iter().position(|g| !g.chars().all(char::is_whitespace)).unwrap_or(all.len());
        let end = all.iter().rposition(|g| !g.chars().all(char::is_whitespace)).map_or(start, |e| e + 1);
        prop_assert_eq!(kept, all[start..end].to_vec());
        prop_assert_eq!(ok("trim(trim(s))", &s(&text)), t(&out));
    }

    /// substring splits at grapheme boundaries: the two halves rebuild the text.
    #[test]
    fn substring_halves_rebuild_the_text(text in any_text(), k in 0u32..30) {
        let head = ok(&format!("substring(s, 1, {k})"), &s(&text));
        let tail = ok(&format!("substring(s, {})", k + 1), &s(&text));
        let (Value::Text(head), Value::Text(tail)) = (head, tail) else {
            panic!("substring gives text");
        };
        prop_assert_eq!(format!("{head}{tail}"), text.clone());
        let n = text.graphemes(true).count();
        prop_assert_eq!(head.graphemes(true).count(), n.min(k as usize));
    }

    #[test]
    fn concat_and_coalesce(a in prop::option::of(any_text()), b in prop::option::of(any_text())) {
        let v = Vals { s: a.clone(), t: b.clone(), ..Vals::default() };
        let expected = match (&a, &b) {
            (Some(a), Some(b)) => t(&format!("{a}{b}")),
            _ => Value::Null,
        };
        prop_assert_eq!(ok("concat(s, t)", &v), expected);
        let first = a.clone().or(b.clone()).map_or(Value::Null, Value::Text);
        prop_assert_eq!(ok("coalesce(s, t)", &v), first);
        let hashed = a.map_or(Value::Null, |a| t(&hex::encode(Sha256::digest(a.as_bytes()))));
        prop_assert_eq!(ok("hash(s)", &v), hashed);
    }

    /// Integer casts are exact: in range they convert, out of range they are rejected.
    #[test]
    fn integer_casts_reject_overflow(n in any::<i64>(), u in any::<u64>(), small in -300i64..300) {
        for (bits, lo, hi) in [(8, i64::from(i8::MIN), i64::from(i8::MAX)), (16, i64::from(i16::MIN), i64::from(i16::MAX)), (32, i64::from(i32::MIN), i64::from(i32::MAX))] {
            for value in [n, small] {
                let v = Vals { n: Some(value), ..Vals::default() };
                let got = eval(&format!("cast(n as int{bits})"), &v);
                if (lo..=hi).contains(&value) {
                    prop_assert_eq!(got.unwrap(), Value::Int(value));
                } else {
                    let r = got.unwrap_err();
                    prop_assert_eq!(r.kind, RejectionKind::OutOfRange);
                    prop_assert_eq!(r.value, Some(value.to_string()));
                }
            }
        }
        let v = Vals { u: Some(u), n: Some(n), ..Vals::default() };
        let got = eval("cast(u as int64)", &v);
        if u <= i64::MAX as u64 {
            prop_assert_eq!(got.unwrap(), Value::Int(u as i64));
        } else {
            prop_assert_eq!(got.unwrap_err().kind, RejectionKind::OutOfRange);
        }
        let got = eval("cast(n as uint64)", &v);
        if n >= 0 {
            prop_assert_eq!(got.unwrap(), Value::UInt(n as u64));
        } else {
            prop_assert_eq!(got.unwrap_err().kind, RejectionKind::OutOfRange);
        }
        // Doubles hold integers exactly up to 2^53.
        let got = eval("cast(n as double)", &v);
        if (n as f64) as i128 == i128::from(n) {
            prop_assert_eq!(got.unwrap(), Value::Double(n as f64));
        } else {
            prop_assert_eq!(got.unwrap_err().kind, RejectionKind::Inexact);
        }
    }

    /// Text ↔ integer round-trips through canonical text; anything else is a bad cast.
    #[test]
    fn text_integer_casts_are_exact(n in any::<i64>(), junk in "[ +0-9a-z.-]{0,6}") {
        let v = Vals { s: Some(n.to_string()), n: Some(n), ..Vals::default() };
        prop_assert_eq!(ok("cast(s as int64)", &v), Value::Int(n));
        prop_assert_eq!(ok("cast(n as text)", &v), t(&n.to_string()));
        let v = Vals { s: Some(junk.clone()), ..Vals::default() };
        match eval("cast(s as int64)", &v) {
            Ok(Value::Int(i)) => prop_assert_eq!(i.to_string(), junk),
            Ok(other) => panic!("{other:?}"),
            Err(r) => prop_assert!(
                matches!(r.kind, RejectionKind::BadCast | RejectionKind::OutOfRange),
                "{r}"
            ),
        }
    }

    /// Decimal casts keep every digit or reject.
    #[test]
    fn decimal_casts_keep_every_digit(int in 0u64..100_000_000, frac in 0u32..10_000, neg in any::<bool>()) {
        let text = format!("{}{int}.{frac:04}", if neg && (int, frac) != (0, 0) { "-" } else { "" });
        let v = Vals { d: Some(text.clone()), ..Vals::default() };
        match eval("cast(d as decimal(10,2))", &v) {
            Ok(Value::Decimal(out)) => {
                prop_assert!(frac % 100 == 0, "{text} → {out} dropped digits");
                prop_assert!(int < 100_000_000);
                prop_assert_eq!(out, format!("{}{int}.{:02}", if neg && (int, frac) != (0, 0) { "-" } else { "" }, frac / 100));
            }
            Ok(other) => panic!("{other:?}"),
            Err(r) => {
                let expected = if frac % 100 != 0 { RejectionKind::Inexact } else { RejectionKind::OutOfRange };
                prop_assert_eq!(r.kind, expected);
            }
        }
        match eval("cast(d as int64)", &v) {
            Ok(Value::Int(i)) => {
                prop_assert_eq!(frac, 0);
                prop_assert_eq!(i, if neg { -(int as i64) } else { int as i64 });
            }
            Ok(other) => panic!("{other:?}"),
            Err(r) => {
                prop_assert!(frac != 0);
                prop_assert_eq!(r.kind, RejectionKind::Inexact);
            }
        }
    }
}

#[test]
fn identity_transformer_is_the_default() {
    // A smoke check that the helpers build plans the same way the identity does.
    let plan = Transformer::identity().plan(&lab()).unwrap();
    let rec = plan
        .apply(&change(&lab(), Operation::Insert, &lab_row(&s("x")), 1))
        .unwrap();
    assert_eq!(rec.columns.unwrap().get("s"), Some(&t("x")));
}
