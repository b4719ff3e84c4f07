//! Every constraint kind produces a `schema_rejection` with full context, and no record.

mod common;

use common::*;
use tidemark_schemas::{ChangeEvent, Operation, Row, SourceSchema, Value};
use tidemark_transform::{
    Rejection, RejectionClass, RejectionKind, Transformer, MAX_REJECTED_VALUE_CHARS,
};

fn mary() -> Row {
    customer_row(
        1,
        1,
        "MARY",
        "SMITH",
        Some("MARY.SMITH@sakilacustomer.org"),
        5,
        1,
    )
}

/// Apply and insist on a rejection: nothing may come back as a record.
fn rejected(t: &Transformer, schema: &SourceSchema, change: &ChangeEvent) -> Rejection {
    let plan = t
        .plan(schema)
        .unwrap_or_else(|e| panic!("the mapping must plan: {e}"));
    match plan.apply(change) {
        Ok(record) => panic!("expected a schema_rejection, got a record: {record:?}"),
        Err(r) => *r,
    }
}

struct Expect<'a> {
    kind: RejectionKind,
    column: &'a str,
    source_column: Option<&'a str>,
    target_type: &'a str,
    value: Option<&'a str>,
    reason: &'a str,
}

fn check(r: &Rejection, change: &ChangeEvent, target_table: &str, e: Expect<'_>) {
    assert_eq!(r.class, RejectionClass::SchemaRejection, "{r}");
    assert_eq!(r.kind, e.kind, "{r}");
    assert_eq!(r.source_table, change.table.to_string(), "{r}");
    assert_eq!(r.target_table, target_table, "{r}");
    assert_eq!(r.position, change.position.to_string(), "{r}");
    assert_eq!(r.key, change.key.canonical_text(), "{r}");
    assert_eq!(r.column, e.column, "{r}");
    assert_eq!(r.source_column.as_deref(), e.source_column, "{r}");
    assert_eq!(r.target_type, e.target_type, "{r}");
    assert_eq!(r.value.as_deref(), e.value, "{r}");
    assert!(
        r.reason.contains(e.reason),
        "reason `{}` should contain `{}`",
        r.reason,
        e.reason
    );
    // Lineage carries the rest of the context.
    assert_eq!(r.lineage.version, change.version);
    assert_eq!(r.lineage.op, change.op);
    assert_eq!(r.lineage.gtid, change.gtid);
    assert_eq!(r.lineage.commit_time_us, change.commit_time_us);
    assert_eq!(r.lineage.source_server, change.source_server);
    assert_eq!(r.lineage.transform_version.len(), 16);
    // The message says it all in one line, and the JSON round-trips for the dead-letter output.
    let msg = r.to_string();
    assert!(msg.starts_with("schema_rejection ("), "{msg}");
    assert!(msg.contains(e.column) && msg.contains(&r.position), "{msg}");
    let back: Rejection = serde_json::from_str(&r.to_json()).expect("rejection JSON parses");
    assert_eq!(&back, r);
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["class"], "schema_rejection");
    assert_eq!(json["kind"], e.kind.as_str());
}

#[test]
fn text_too_long() {
    let t = transformer(
        r#"
[[mapping]]
source = "sakila.customer"
columns.first_name = { rename = "given", type = "text(5)" }
"#,
    );
    let s = customer();
    let patricia = customer_row(2, 1, "PATRICIA", "JOHNSON", None, 6, 1);
    let c = change(&s, Operation::Insert, &patricia, 1);
    check(
        &rejected(&t, &s, &c),
        &c,
        "customer",
        Expect {
            kind: RejectionKind::TooLong,
            column: "given",
            source_column: Some("first_name"),
            target_type: "text(5) not null",
            value: Some("PATRICIA"),
            reason: "8 characters long; text(5) holds at most 5",
        },
    );
    // Characters, not bytes: five two-byte characters fit in text(5).
    let ok = customer_row(3, 1, "ÉÉÉÉÉ", "X", None, 7, 1);
    let plan = t.plan(&s).unwrap();
    plan.apply(&change(&s, Operation::Insert, &ok, 2))
        .expect("five characters fit text(5)");
}

#[test]
fn bytes_too_long() {
    let t = transformer(
        r#"
[[mapping]]
source = "sakila.customer"
columns.email = { type = "bytes(10)" }
"#,
    );
    let s = customer();
    let c = change(&s, Operation::Insert, &mary(), 1);
    check(
        &rejected(&t, &s, &c),
        &c,
        "customer",
        Expect {
            kind: RejectionKind::TooLong,
            column: "email",
            source_column: Some("email"),
            target_type: "bytes(10)",
            value: Some("MARY.SMITH@sakilacustomer.org"),
            reason: "29 bytes long",
        },
    );
}

#[test]
fn integer_out_of_range() {
    let t = transformer(
        r#"
[[mapping]]
source = "sakila.customer"
[mapping.columns.address_id]
type = "int8"
"#,
    );
    let s = customer();
    let row = customer_row(599, 2, "AUSTIN", "CINTRON", None, 605, 1);
    let c = change(&s, Operation::Update, &row, 7);
    check(
        &rejected(&t, &s, &c),
        &c,
        "customer",
        Expect {
            kind: RejectionKind::OutOfRange,
            column: "address_id",
            source_column: Some("address_id"),
            target_type: "int8 not null",
            value: Some("605"),
            reason: "outside int8's range -128..=127",
        },
    );
}

#[test]
fn decimal_out_of_range_and_inexact() {
    let t = transformer(
        r#"
[[mapping]]
source = "sakila.payment"
columns.amount = { type = "decimal(3,1)" }
"#,
    );
    let s = payment();
    let p = |amount: &str| {
        row(
            &s,
            vec![
                Value::UInt(1),
                Value::UInt(1),
                Value::UInt(1),
                Value::Int(76),
                dec(amount),
                datetime(2005, 5, 25, 11, 30, 37),
                Value::Null,
            ],
        )
    };
    let c = change(&s, Operation::Insert, &p("2.99"), 1);
    check(
        &rejected(&t, &s, &c),
        &c,
        "payment",
        Expect {
            kind: RejectionKind::Inexact,
            column: "amount",
            source_column: Some("amount"),
            target_type: "decimal(3,1) not null",
            value: Some("2.99"),
            reason: "has 2 fraction digits; decimal(3,1) keeps 1",
        },
    );
    let c = change(&s, Operation::Insert, &p("100.00"), 2);
    check(
        &rejected(&t, &s, &c),
        &c,
        "payment",
        Expect {
            kind: RejectionKind::OutOfRange,
            column: "amount",
            source_column: Some("amount"),
            target_type: "decimal(3,1) not null",
            value: Some("100.00"),
            reason: "has 3 integer digits; decimal(3,1) holds at most 2",
        },
    );
    // 2.00 → 2.0 is exact.
    let plan = t.plan(&s).unwrap();
    let rec = plan
        .apply(&change(&s, Operation::Insert, &p("2.00"), 3))
        .unwrap();
    assert_eq!(
        rec.columns.unwrap().get("amount"),
        Some(&Value::Decimal("2.0".into()))
    );
}

#[test]
fn invalid_dates_are_rejected_unless_the_mapping_admits_them() {
    let s = customer();
    let with_date = |d: Value| {
        let mut r = mary();
        r.0[7].1 = d;
        r
    };
    let zero = datetime(0, 0, 0, 0, 0, 0);
    let day0 = datetime(2006, 2, 0, 22, 4, 36);
    let reject = transformer(
        r#"
[[mapping]]
source = "sakila.customer"
"#,
    );
    for (v, text) in [
        (zero.clone(), "0000-00-00 00:00:00"),
        (day0.clone(), "2006-02-00 22:04:36"),
    ] {
        let c = change(&s, Operation::Insert, &with_date(v), 1);
        check(
            &rejected(&reject, &s, &c),
            &c,
            "customer",
            Expect {
                kind: RejectionKind::InvalidDate,
                column: "create_date",
                source_column: Some("create_date"),
                target_type: "datetime not null",
                value: Some(text),
                reason: "is not a calendar date; set zero_dates",
            },
        );
    }
    // "keep" stores it as it is; "null" stores NULL (and the column becomes nullable).
    let keep = transformer("[[mapping]]\nsource = \"sakila.customer\"\nzero_dates = \"keep\"\n");
    let rec = keep
        .plan(&s)
        .unwrap()
        .apply(&change(&s, Operation::Insert, &with_date(zero.clone()), 2))
        .unwrap();
    assert_eq!(rec.columns.unwrap().get("create_date"), Some(&zero));
    let null = transformer("[[mapping]]\nsource = \"sakila.customer\"\nzero_dates = \"null\"\n");
    let plan = null.plan(&s).unwrap();
    assert!(plan.target_schema().column("create_date").unwrap().nullable);
    let rec = plan
        .apply(&change(&s, Operation::Insert, &with_date(day0.clone()), 3))
        .unwrap();
    assert_eq!(rec.columns.unwrap().get("create_date"), Some(&Value::Null));
    // "null" with an explicit NOT NULL column: the NULL is rejected, naming the original value.
    let strict = transformer(
        r#"
[[mapping]]
source = "sakila.customer"
zero_dates = "null"
columns.create_date = { nullable = false }
"#,
    );
    let c = change(&s, Operation::Insert, &with_date(day0), 4);
    check(
        &rejected(&strict, &s, &c),
        &c,
        "customer",
        Expect {
            kind: RejectionKind::NullIntoNotNull,
            column: "create_date",
            source_column: Some("create_date"),
            target_type: "datetime not null",
            value: Some("2006-02-00 22:04:36"),
            reason: "became NULL",
        },
    );
    // The identity mapping keeps zero dates (the embedded target stores canonical text)...
    let rec = Transformer::identity()
        .plan(&s)
        .unwrap()
        .apply(&change(&s, Operation::Insert, &with_date(zero.clone()), 5))
        .unwrap();
    assert_eq!(rec.columns.unwrap().get("create_date"), Some(&zero));
    // ...unless told otherwise for a target with a native date type.
    let native =
        Transformer::identity().with_identity_zero_dates(tidemark_transform::ZeroDates::Reject);
    let c = change(&s, Operation::Insert, &with_date(zero), 6);
    assert_eq!(rejected(&native, &s, &c).kind, RejectionKind::InvalidDate);
}

#[test]
fn null_into_not_null() {
    let t = transformer(
        r#"
[[mapping]]
source = "sakila.customer"
[mapping.columns.email]
nullable = false
"#,
    );
    let s = customer();
    let row = customer_row(600, 2, "NO", "EMAIL", None, 605, 1);
    let c = change(&s, Operation::Backfill, &row, 3);
    let r = rejected(&t, &s, &c);
    check(
        &r,
        &c,
        "customer",
        Expect {
            kind: RejectionKind::NullIntoNotNull,
            column: "email",
            source_column: Some("email"),
            target_type: "text(50) not null",
            value: None,
            reason: "NULL into a NOT NULL column",
        },
    );
    assert_eq!(r.lineage.chunk.as_deref(), Some("sakila.customer:0"));
    // The identity mapping checks NOT NULL too (a row image that breaks its own schema).
    let mut bad = mary();
    bad.0[2].1 = Value::Null;
    let c = change(&s, Operation::Insert, &bad, 4);
    let r = rejected(&Transformer::identity(), &s, &c);
    assert_eq!(r.kind, RejectionKind::NullIntoNotNull);
    assert_eq!(r.column, "first_name");
    assert_eq!(r.lineage.transform_name, "identity");
}

#[test]
fn bad_casts_name_the_intermediate_value() {
    let t = transformer(
        r#"
[[mapping]]
source = "sakila.customer"
[mapping.computed.first_as_number]
expr = "cast(first_name as int32)"
"#,
    );
    let s = customer();
    let c = change(&s, Operation::Insert, &mary(), 1);
    check(
        &rejected(&t, &s, &c),
        &c,
        "customer",
        Expect {
            kind: RejectionKind::BadCast,
            column: "first_as_number",
            source_column: None,
            target_type: "int32 not null",
            value: Some("MARY"),
            reason: "is not an integer in canonical form",
        },
    );
    // Declared conversions are exact: a text that is a number converts, "007" does not.
    let t = transformer(
        r#"
[[mapping]]
source = "sakila.customer"
columns.last_name = { type = "int32" }
"#,
    );
    let plan = t.plan(&s).unwrap();
    let number = customer_row(4, 1, "A", "-42", None, 1, 1);
    let rec = plan
        .apply(&change(&s, Operation::Insert, &number, 2))
        .unwrap();
    assert_eq!(
        rec.columns.unwrap().get("last_name"),
        Some(&Value::Int(-42))
    );
    let padded = customer_row(5, 1, "A", "007", None, 1, 1);
    let c = change(&s, Operation::Insert, &padded, 3);
    assert_eq!(rejected(&t, &s, &c).kind, RejectionKind::BadCast);
    // An enum value that is not a member of the target enum.
    let t = transformer(
        r#"
[[mapping]]
source = "sakila.film"
columns.rating = { type = "enum('G','PG')" }
"#,
    );
    let f = film();
    let mut r = row(
        &f,
        vec![
            Value::UInt(7),
            text("AIRPLANE SIERRA"),
            Value::Null,
            Value::Year(2006),
            Value::UInt(1),
            Value::Null,
            Value::UInt(6),
            dec("4.99"),
            Value::UInt(62),
            dec("28.99"),
            Value::Enum("PG-13".into()),
            Value::Null,
            timestamp(2006, 2, 15, 5, 3, 42),
        ],
    );
    let c = change(&f, Operation::Insert, &r, 4);
    check(
        &rejected(&t, &f, &c),
        &c,
        "film",
        Expect {
            kind: RejectionKind::BadCast,
            column: "rating",
            source_column: Some("rating"),
            target_type: "enum('G','PG')",
            value: Some("PG-13"),
            reason: "is not a member of enum('G','PG')",
        },
    );
    r.0[10].1 = Value::Enum("PG".into());
    t.plan(&f)
        .unwrap()
        .apply(&change(&f, Operation::Insert, &r, 5))
        .expect("a member converts");
}

#[test]
fn rejected_keys_reject_deletes_too() {
    // The target key is converted like any column: a delete whose key does not fit is rejected.
    let t = transformer(
        r#"
[[mapping]]
source = "sakila.customer"
columns.customer_id = { type = "uint8" }
"#,
    );
    let s = customer();
    let key = Row(vec![("customer_id".into(), Value::UInt(599))]);
    let c = change(&s, Operation::Delete, &key, 9);
    check(
        &rejected(&t, &s, &c),
        &c,
        "customer",
        Expect {
            kind: RejectionKind::OutOfRange,
            column: "customer_id",
            source_column: Some("customer_id"),
            target_type: "uint8 not null",
            value: Some("599"),
            reason: "outside uint8's range 0..=255",
        },
    );
}

#[test]
fn rows_that_do_not_match_the_schema_are_rejected() {
    let s = customer();
    let mut short = mary();
    short.0.pop();
    let c = change(&s, Operation::Insert, &short, 1);
    let r = rejected(&Transformer::identity(), &s, &c);
    assert_eq!(r.kind, RejectionKind::SchemaMismatch);
    assert!(r.reason.contains("9"), "{}", r.reason);
    let mut renamed = mary();
    renamed.0[3].0 = "surname".into();
    let c = change(&s, Operation::Insert, &renamed, 2);
    let r = rejected(&Transformer::identity(), &s, &c);
    assert_eq!(r.kind, RejectionKind::SchemaMismatch);
    assert!(r.reason.contains("last_name"), "{}", r.reason);
    let mut other = change(&s, Operation::Insert, &mary(), 3);
    other.table = film().table;
    let r = rejected(&Transformer::identity(), &s, &other);
    assert_eq!(r.kind, RejectionKind::SchemaMismatch);
}

#[test]
fn long_values_are_clipped_in_the_rejection() {
    let t = transformer(
        r#"
[[mapping]]
source = "sakila.film"
columns.description = { type = "text(10)" }
"#,
    );
    let f = film();
    let long = "ü".repeat(5000);
    let r = row(
        &f,
        vec![
            Value::UInt(7),
            text("T"),
            text(&long),
            Value::Null,
            Value::UInt(1),
            Value::Null,
            Value::UInt(6),
            dec("4.99"),
            Value::Null,
            dec("28.99"),
            Value::Null,
            Value::Null,
            timestamp(2006, 2, 15, 5, 3, 42),
        ],
    );
    let c = change(&f, Operation::Insert, &r, 1);
    let rej = rejected(&t, &f, &c);
    assert_eq!(rej.kind, RejectionKind::TooLong);
    let v = rej.value.expect("a value");
    assert!(v.starts_with(&"ü".repeat(MAX_REJECTED_VALUE_CHARS)), "{v}");
    assert!(v.ends_with("…(4000 more characters)"), "{v}");
}
