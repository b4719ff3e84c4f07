//! Mapping validation: every mistake is an error that names the mapping, the setting and the
//! column, and says what to do.

mod common;

use common::*;
use tidemark_schemas::{SourceSchema, TableId, TargetType};
use tidemark_transform::{ConfigError, MappingConfig, Transformer};

fn parse_err(toml_text: &str) -> String {
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct File {
        mapping: Vec<MappingConfig>,
    }
    match toml::from_str::<File>(toml_text) {
        Ok(_) => panic!("expected a parse error for\n{toml_text}"),
        Err(e) => e.to_string(),
    }
}

fn new_err(toml_text: &str) -> ConfigError {
    match Transformer::new(&mappings(toml_text)) {
        Ok(_) => panic!("expected Transformer::new to fail for\n{toml_text}"),
        Err(e) => e,
    }
}

fn plan_err(toml_text: &str, schema: &SourceSchema) -> ConfigError {
    match transformer(toml_text).plan(schema) {
        Ok(_) => panic!("expected plan to fail for\n{toml_text}"),
        Err(e) => e,
    }
}

fn assert_mentions(e: &impl std::fmt::Display, needles: &[&str]) {
    let text = e.to_string();
    for n in needles {
        assert!(text.contains(n), "`{text}` should mention `{n}`");
    }
}

#[test]
fn syntax_errors_are_reported_while_reading_the_config() {
    assert_mentions(
        &parse_err("[[mapping]]\nsource = \"sakila.customer\"\ncolums = {}\n"),
        &["colums"],
    );
    assert_mentions(
        &parse_err(
            "[[mapping]]\nsource = \"sakila.customer\"\ncolumns.email = { typ = \"text\" }\n",
        ),
        &["typ"],
    );
    assert_mentions(
        &parse_err(
            "[[mapping]]\nsource = \"sakila.customer\"\ncolumns.email = { type = \"varchar(50)\" }\n",
        ),
        &["varchar", "not a type"],
    );
    assert_mentions(
        &parse_err(
            "[[mapping]]\nsource = \"sakila.customer\"\ncomputed.x = { expr = \"lower(a, b)\" }\n",
        ),
        &["exactly one argument"],
    );
    assert_mentions(
        &parse_err("[[mapping]]\nsource = \"sakila.customer\"\nfilter = \"active = \"\n"),
        &["expected a column"],
    );
    assert_mentions(
        &parse_err("[[mapping]]\nsource = \"sakila.customer\"\nzero_dates = \"maybe\"\n"),
        &["maybe"],
    );
}

#[test]
fn mappings_are_checked_without_a_schema() {
    assert_mentions(
        &new_err("[[mapping]]\nsource = \"customer\"\n"),
        &["mapping[0]", "source", "database.table"],
    );
    assert_mentions(
        &new_err("[[mapping]]\nsource = \"sakila.customer\"\n[[mapping]]\nsource = \"sakila.customer\"\n"),
        &["sakila.customer", "second mapping"],
    );
    assert_mentions(
        &new_err("[[mapping]]\nsource = \"sakila.customer\"\ntarget = \"t\"\n[[mapping]]\nsource = \"sakila.film\"\ntarget = \"t\"\n"),
        &["sakila.film", "target", "share a target table"],
    );
    assert_mentions(
        &new_err("[[mapping]]\nsource = \"sakila.customer\"\ntarget = \"_tm_checkpoints\"\n"),
        &["reserved"],
    );
    assert_mentions(
        &new_err("[[mapping]]\nsource = \"sakila.customer\"\ndrop = [\"email\"]\ncolumns.email = { type = \"text\" }\n"),
        &["columns.email", "also in `drop`"],
    );
    assert_mentions(
        &new_err("[[mapping]]\nsource = \"sakila.customer\"\nkey = []\n"),
        &["key", "at least one"],
    );
}

#[test]
fn unknown_columns_name_mapping_table_and_column() {
    let s = customer();
    let e = plan_err(
        "[[mapping]]\nsource = \"sakila.customer\"\ncolumns.emial = { rename = \"mail\" }\n",
        &s,
    );
    assert_eq!(e.mapping, "sakila.customer");
    assert_eq!(e.setting, "columns.emial");
    assert_mentions(
        &e,
        &["no column `emial` in source table sakila.customer", "email"],
    );
    let e = plan_err(
        "[[mapping]]\nsource = \"sakila.customer\"\ncomputed.n = { expr = \"upper(First_Name)\" }\n",
        &s,
    );
    assert_eq!(e.setting, "computed.n.expr");
    assert_mentions(&e, &["First_Name", "did you mean `first_name`"]);
    let e = plan_err(
        "[[mapping]]\nsource = \"sakila.customer\"\nfilter = \"activ = 1\"\n",
        &s,
    );
    assert_eq!(e.setting, "filter");
    assert_mentions(&e, &["activ"]);
    let e = plan_err(
        "[[mapping]]\nsource = \"sakila.customer\"\ndrop = [\"nope\"]\n",
        &s,
    );
    assert_eq!(e.setting, "drop");
}

#[test]
fn types_and_expressions_are_checked_against_the_schema() {
    let s = customer();
    for (toml_text, setting, needles) in [
        (
            "columns.create_date = { type = \"int32\" }",
            "columns.create_date.type",
            &["cannot convert datetime to int32", "datetime"][..],
        ),
        (
            "computed.x = { expr = \"lower(customer_id)\" }",
            "computed.x.expr",
            &["lower(…) takes text, not uint32"][..],
        ),
        (
            "computed.x = { expr = \"date_format(email, '[year]')\" }",
            "computed.x.expr",
            &["not a date"][..],
        ),
        (
            "computed.x = { expr = \"coalesce(email, customer_id)\" }",
            "computed.x.expr",
            &["cast them to one type"][..],
        ),
        (
            "computed.x = { expr = \"coalesce(active, 300)\" }",
            "computed.x.expr",
            &["literal 300 does not fit int8"][..],
        ),
        (
            "filter = \"create_date > 5\"",
            "filter",
            &["cannot be compared with datetime"][..],
        ),
        (
            "filter = \"create_date = last_update\"",
            "filter",
            &["compares datetime with timestamp"][..],
        ),
        (
            "filter = \"create_date > '2006-13-01'\"",
            "filter",
            &["is not a date"][..],
        ),
        (
            "computed.x = { expr = \"concat(email, 1)\", type = \"int8\" }",
            "computed.x.type",
            &[][..],
        ),
    ] {
        let text = format!("[[mapping]]\nsource = \"sakila.customer\"\n{toml_text}\n");
        match Transformer::new(&mappings(&text)).map(|t| t.plan(&s)) {
            Ok(Err(e)) => {
                assert_eq!(e.setting, setting, "{e}");
                assert_mentions(&e, needles);
            }
            Ok(Ok(_)) if setting == "computed.x.type" => {
                // text → int8 is a conversion that exists (checked per value), so it plans.
            }
            other => panic!("{toml_text}: expected a plan error, got {other:?}"),
        }
    }
}

#[test]
fn target_keys_must_be_derived_from_the_whole_source_key() {
    let s = customer();
    let fa = film_actor();
    let e = plan_err(
        "[[mapping]]\nsource = \"sakila.customer\"\nkey = [\"store_id\", \"customer_id\"]\n",
        &s,
    );
    assert_eq!(e.setting, "key");
    assert_mentions(&e, &["store_id", "not in the source key", "delete"]);
    let e = plan_err(
        "[[mapping]]\nsource = \"sakila.film_actor\"\nkey = [\"film_id\"]\n",
        &fa,
    );
    assert_mentions(&e, &["every source key column", "actor_id"]);
    let e = plan_err(
        "[[mapping]]\nsource = \"sakila.customer\"\ndrop = [\"customer_id\"]\n",
        &s,
    );
    assert_eq!(e.setting, "drop");
    assert_mentions(&e, &["customer_id", "source key"]);
    let e = plan_err(
        "[[mapping]]\nsource = \"sakila.customer\"\nkey = [\"customer_id\", \"mail\"]\ncomputed.mail = { expr = \"lower(email)\" }\n",
        &s,
    );
    assert_mentions(&e, &["nullable"]);
    let e = plan_err(
        "[[mapping]]\nsource = \"sakila.customer\"\ncolumns.customer_id = { nullable = true }\n",
        &s,
    );
    assert_mentions(&e, &["key column `customer_id` is nullable"]);
    let e = plan_err(
        "[[mapping]]\nsource = \"sakila.customer\"\nkey = [\"id\"]\n",
        &s,
    );
    assert_mentions(&e, &["`id` is not a target column"]);
    // A computed key column over the key only is fine, as is renaming the key.
    let t = transformer(
        "[[mapping]]\nsource = \"sakila.film_actor\"\nkey = [\"b\", \"film\", \"actor_id\"]\ncolumns.film_id = { rename = \"film\", type = \"text(10)\" }\ncomputed.b = { expr = \"substring(hash(film_id), 1, 1)\" }\n",
    );
    let plan = t
        .plan(&fa)
        .expect("a key derived from the source key plans");
    assert_eq!(plan.target_schema().key, ["b", "film", "actor_id"]);
    assert_eq!(
        plan.target_schema().column("film").unwrap().ty,
        TargetType::Text {
            max_chars: Some(10)
        }
    );
    // A conversion that could merge two keys ('1.5' and '1.50') is refused for key columns.
    let codes = schema(
        "shop",
        "codes",
        vec![col("code", varchar(10), false, "varchar(10)")],
        &["code"],
    );
    let e = plan_err(
        "[[mapping]]\nsource = \"shop.codes\"\ncolumns.code = { type = \"decimal(5,2)\" }\n",
        &codes,
    );
    assert_mentions(&e, &["key column `code`", "different source keys"]);
}

#[test]
fn duplicate_target_names_are_refused() {
    let s = customer();
    let e = plan_err(
        "[[mapping]]\nsource = \"sakila.customer\"\ncolumns.first_name = { rename = \"last_name\" }\n",
        &s,
    );
    assert_mentions(
        &e,
        &["two target columns are named `last_name`", "first_name"],
    );
    let e = plan_err(
        "[[mapping]]\nsource = \"sakila.customer\"\ncomputed.email = { expr = \"lower(email)\" }\n",
        &s,
    );
    assert_mentions(&e, &["computed column email"]);
}

#[test]
fn tables_without_a_mapping_use_the_identity() {
    let t = transformer(SAKILA_MAPPINGS);
    let actor = schema(
        "sakila",
        "actor",
        vec![
            col("actor_id", uint(32), false, "int(10) unsigned"),
            col("first_name", varchar(45), false, "varchar(45)"),
        ],
        &["actor_id"],
    );
    let plan = t.plan(&actor).unwrap();
    assert!(plan.is_identity());
    assert_eq!(plan.transform_name(), "identity");
    assert_eq!(plan.target_schema().table, "actor");
    assert_eq!(
        t.transform_version(&actor.table),
        Transformer::identity().transform_version(&TableId::new("x", "y"))
    );
    assert_eq!(t.mapped_tables().count(), 4);
    let keyless = schema(
        "sakila",
        "log",
        vec![col("line", varchar(10), true, "varchar(10)")],
        &[],
    );
    assert_mentions(
        &t.plan(&keyless).unwrap_err(),
        &["sakila.log (identity)", "no primary key"],
    );
}
