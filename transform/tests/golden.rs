//! Golden-file tests: the Sakila mappings in `tests/sakila-mapping.toml` applied to rows copied
//! from `sakila-data.sql` (plus a few marked synthetic ones for NULLs, Unicode and deletes).
//!
//! Each golden file holds the `explain` output for the table's first sample and the canonical
//! JSON of every change's outcome. Regenerate with `TIDEMARK_BLESS=1 cargo nextest run -p
//! tidemark-transform --test golden` and review the diff.

mod common;

use common::*;
use tidemark_schemas::{ChangeEvent, Operation, Row, SourceSchema, Value};
use tidemark_transform::{canonical_bytes, canonical_json, explain};

fn render(schema: &SourceSchema, samples: &[(&str, ChangeEvent)]) -> String {
    let t = transformer(SAKILA_MAPPINGS);
    let plan = t
        .plan(schema)
        .unwrap_or_else(|e| panic!("{} must plan: {e}", schema.table));
    let first = samples[0]
        .1
        .after
        .as_ref()
        .expect("the first sample is a row");
    let mut out = String::from("# explain\n");
    out.push_str(&explain(&t, schema, Some(first)).expect("explain"));
    out.push_str("\n# changes\n");
    for (label, change) in samples {
        out.push_str(&format!(
            "\n## {label} ({} at {})\n",
            change.op, change.position
        ));
        // Pretty-printed from the same `Serialize` as the canonical bytes: same field order.
        let pretty = match plan.apply(change) {
            Ok(record) => {
                assert_eq!(canonical_bytes(&record), canonical_json(&record));
                serde_json::to_string_pretty(&record)
            }
            Err(rejection) => serde_json::to_string_pretty(&rejection),
        };
        out.push_str(&pretty.expect("pretty JSON"));
        out.push('\n');
    }
    out
}

#[test]
fn sakila_customer_renames_computes_and_filters() {
    let s = customer();
    let mary = customer_row(
        1,
        1,
        "MARY",
        "SMITH",
        Some("MARY.SMITH@sakilacustomer.org"),
        5,
        1,
    );
    let sandra = customer_row(
        16,
        2,
        "SANDRA",
        "MARTIN",
        Some("SANDRA.MARTIN@sakilacustomer.org"),
        20,
        0,
    );
    // Synthetic: Unicode names with combining marks and no email.
    let zoe = customer_row(600, 2, "Zoe\u{308}", "Ünal  ", None, 605, 1);
    // Synthetic: a zero create_date, which the mapping does not admit (zero_dates = "reject").
    let mut zero = customer_row(601, 1, "ZERO", "DATE", None, 605, 1);
    zero.0[7].1 = datetime(0, 0, 0, 0, 0, 0);
    let key_only = Row(vec![("customer_id".into(), Value::UInt(1))]);
    let samples = [
        (
            "customer 1, active",
            change(&s, Operation::Insert, &mary, 1),
        ),
        (
            "customer 16, inactive: filtered",
            change(&s, Operation::Update, &sandra, 2),
        ),
        (
            "synthetic customer 600, NULL email, combining marks",
            change(&s, Operation::Backfill, &zoe, 3),
        ),
        (
            "synthetic customer 601, zero create_date: schema_rejection",
            change(&s, Operation::Insert, &zero, 4),
        ),
        (
            "customer 1 deleted",
            change(&s, Operation::Delete, &key_only, 5),
        ),
    ];
    check_golden("customer.txt", &render(&s, &samples));
}

#[test]
fn sakila_film_changes_types() {
    let s = film();
    let set = |m: &[&str]| Value::Set(m.iter().map(|x| x.to_string()).collect());
    let academy = row(
        &s,
        vec![
            Value::UInt(1),
            text("ACADEMY DINOSAUR"),
            text("A Epic Drama of a Feminist And a Mad Scientist who must Battle a Teacher in The Canadian Rockies"),
            Value::Year(2006),
            Value::UInt(1),
            Value::Null,
            Value::UInt(6),
            dec("0.99"),
            Value::UInt(86),
            dec("20.99"),
            Value::Enum("PG".into()),
            set(&["Deleted Scenes", "Behind the Scenes"]),
            timestamp(2006, 2, 15, 5, 3, 42),
        ],
    );
    let ace = row(
        &s,
        vec![
            Value::UInt(2),
            text("ACE GOLDFINGER"),
            text("A Astounding Epistle of a Database Administrator And a Explorer who must Find a Car in Ancient China"),
            Value::Year(2006),
            Value::UInt(1),
            Value::Null,
            Value::UInt(3),
            dec("4.99"),
            Value::UInt(48),
            dec("12.99"),
            Value::Enum("G".into()),
            set(&["Trailers", "Deleted Scenes"]),
            timestamp(2006, 2, 15, 5, 3, 42),
        ],
    );
    // Synthetic: NULLs where the schema allows them, a zero timestamp (zero_dates = "null"),
    // a title that starts with a multi-code-point grapheme.
    let odd = row(
        &s,
        vec![
            Value::UInt(1001),
            text("e\u{301}TE\u{301} SANS FIN"),
            Value::Null,
            Value::Null,
            Value::UInt(1),
            Value::Null,
            Value::UInt(3),
            dec("0.00"),
            Value::Null,
            dec("999.99"),
            Value::Null,
            Value::Set(Vec::new()),
            timestamp(0, 0, 0, 0, 0, 0),
        ],
    );
    let samples = [
        ("film 1", change(&s, Operation::Insert, &academy, 10)),
        ("film 2", change(&s, Operation::Update, &ace, 11)),
        (
            "synthetic film 1001",
            change(&s, Operation::Insert, &odd, 12),
        ),
    ];
    check_golden("film.txt", &render(&s, &samples));
}

#[test]
fn sakila_film_actor_is_rekeyed_by_film() {
    let s = film_actor();
    let r = |a: u64, f: u64| {
        row(
            &s,
            vec![
                Value::UInt(a),
                Value::UInt(f),
                timestamp(2006, 2, 15, 5, 5, 3),
            ],
        )
    };
    let key_only = Row(vec![
        ("actor_id".into(), Value::UInt(1)),
        ("film_id".into(), Value::UInt(23)),
    ]);
    let samples = [
        (
            "actor 1 in film 1",
            change(&s, Operation::Insert, &r(1, 1), 20),
        ),
        (
            "actor 1 in film 23",
            change(&s, Operation::Backfill, &r(1, 23), 21),
        ),
        (
            "actor 1 leaves film 23",
            change(&s, Operation::Delete, &key_only, 22),
        ),
    ];
    check_golden("film_actor.txt", &render(&s, &samples));
}

#[test]
fn sakila_payment_has_a_computed_key_and_a_filter() {
    let s = payment();
    let p = |id: u64, rental: Option<i64>, amount: &str, date: Value| {
        row(
            &s,
            vec![
                Value::UInt(id),
                Value::UInt(1),
                Value::UInt(1),
                rental.map_or(Value::Null, Value::Int),
                dec(amount),
                date,
                timestamp(2006, 2, 15, 22, 12, 30),
            ],
        )
    };
    let key_only = Row(vec![("payment_id".into(), Value::UInt(3))]);
    let samples = [
        (
            "payment 3, 5.99",
            change(
                &s,
                Operation::Insert,
                &p(3, Some(1185), "5.99", datetime(2005, 6, 15, 0, 54, 12)),
                30,
            ),
        ),
        (
            "payment 1, 2.99: filtered",
            change(
                &s,
                Operation::Insert,
                &p(1, Some(76), "2.99", datetime(2005, 5, 25, 11, 30, 37)),
                31,
            ),
        ),
        (
            "synthetic payment 5, NULL rental: filtered (NULL > 0 is unknown, not true)",
            change(
                &s,
                Operation::Insert,
                &p(5, None, "9.99", datetime(2005, 6, 15, 21, 8, 46)),
                32,
            ),
        ),
        (
            "payment 3 deleted: the tombstone finds the bucket from the source key",
            change(&s, Operation::Delete, &key_only, 33),
        ),
    ];
    check_golden("payment.txt", &render(&s, &samples));
}
