//! Backward compatibility of the Avro schemas (see `schemas/avro/README.md`).
//!
//! Every wire version of every schema is committed in `schemas/avro/compat/<name>.v<N>.avsc`.
//! The current schema must be able to read data written with each of them, because that data
//! may still sit in Kafka (retention, compacted checkpoint and drift topics) when a new build
//! starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use serde_json::Value as Json;
use tidemark_schemas::avro::{self, RecordKind, SNAPSHOTS};

fn avro_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("avro")
}

/// The committed snapshots on disk: (kind, version, file name, text), oldest first per kind.
fn snapshots_on_disk() -> Vec<(RecordKind, u32, String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(avro_dir().join("compat")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(stem) = name.strip_suffix(".avsc") else {
            continue;
        };
        let (base, version) = stem
            .rsplit_once(".v")
            .unwrap_or_else(|| panic!("compat/{name}: snapshots are named <schema>.v<N>.avsc"));
        let version: u32 = version
            .parse()
            .unwrap_or_else(|_| panic!("compat/{name}: `{version}` is not a version number"));
        let kind = RecordKind::ALL
            .into_iter()
            .find(|k| k.file_name() == format!("{base}.avsc"))
            .unwrap_or_else(|| panic!("compat/{name}: there is no schemas/avro/{base}.avsc"));
        let text = std::fs::read_to_string(avro_dir().join("compat").join(&name)).unwrap();
        out.push((kind, version, name, text));
    }
    out.sort_by_key(|(k, v, _, _)| (*k, *v));
    out
}

/// The JSON of a schema with every `aliases` removed. apache-avro 0.21's compatibility check
/// honours field aliases but its reader (schema resolution) does not, so a rename "covered" by
/// an alias would pass the check and still fail to read old data in tidemark.
fn without_aliases(json: &mut Json) {
    match json {
        Json::Object(map) => {
            map.remove("aliases");
            map.values_mut().for_each(without_aliases);
        }
        Json::Array(items) => items.iter_mut().for_each(without_aliases),
        _ => {}
    }
}

fn reader_schema(text: &str) -> Schema {
    let mut json: Json = serde_json::from_str(text).unwrap();
    without_aliases(&mut json);
    Schema::parse_str(&json.to_string()).unwrap()
}

/// Whether `reader` can read everything `writer` wrote, in tidemark's terms.
fn can_read(writer: &Schema, reader_text: &str) -> Result<(), String> {
    SchemaCompatibility::can_read(writer, &reader_schema(reader_text)).map_err(|e| e.to_string())
}

#[test]
fn current_schemas_read_data_written_with_every_committed_snapshot() {
    let mut broken = Vec::new();
    for (kind, _, file, text) in snapshots_on_disk() {
        let old = Schema::parse_str(&text)
            .unwrap_or_else(|e| panic!("compat/{file} is not a valid Avro schema: {e}"));
        if let Err(e) = can_read(&old, kind.schema_text()) {
            broken.push(format!(
                "schemas/avro/{} can no longer read data written with compat/{file}: {e}",
                kind.file_name()
            ));
        }
    }
    assert!(
        broken.is_empty(),
        "{}\n\nData written with these versions may still be in Kafka. Revert the incompatible \
         change: add fields only with a default, never remove or rename a field or type, never \
         remove a union branch or enum symbol, never change a type (see schemas/avro/README.md). \
         Add a new snapshot compat/<name>.v<N+1>.avsc only for a change that passes this test.",
        broken.join("\n")
    );
}

#[test]
fn every_schema_version_is_snapshotted() {
    let disk = snapshots_on_disk();
    for kind in RecordKind::ALL {
        let mine: Vec<_> = disk.iter().filter(|(k, ..)| *k == kind).collect();
        let Some((_, newest, file, text)) = mine.last() else {
            panic!(
                "schemas/avro/compat/ has no snapshot of {}; copy it to compat/{}",
                kind.file_name(),
                kind.file_name().replace(".avsc", ".v1.avsc")
            );
        };
        let versions: Vec<u32> = mine.iter().map(|(_, v, ..)| *v).collect();
        let expected: Vec<u32> = (1..=versions.len() as u32).collect();
        assert_eq!(
            versions,
            expected,
            "snapshots of {} must be numbered v1, v2, … without gaps",
            kind.file_name()
        );
        let snapshot_fp = Schema::parse_str(text)
            .unwrap()
            .fingerprint::<apache_avro::rabin::Rabin>();
        assert_eq!(
            hex::encode(&snapshot_fp.bytes),
            hex::encode(avro::fingerprint(kind)),
            "schemas/avro/{} differs on the wire from its newest snapshot compat/{file}. If the \
             change is compatible (current_schemas_read_data_written_with_every_committed_snapshot \
             passes), copy the schema to compat/{} and add it to SNAPSHOTS in \
             schemas/src/avro.rs; if not, revert it.",
            kind.file_name(),
            kind.file_name()
                .replace(".avsc", &format!(".v{}.avsc", newest + 1)),
        );
    }
}

#[test]
fn every_snapshot_on_disk_is_readable_by_this_build() {
    let registered: Vec<(RecordKind, &str)> = SNAPSHOTS.iter().map(|(k, f, _)| (*k, *f)).collect();
    let disk = snapshots_on_disk();
    for (kind, _, file, text) in &disk {
        assert!(
            registered.contains(&(*kind, file.as_str())),
            "compat/{file} is committed but not listed in SNAPSHOTS in schemas/src/avro.rs, so \
             data written with it cannot be decoded"
        );
        let fp = Schema::parse_str(text)
            .unwrap()
            .fingerprint::<apache_avro::rabin::Rabin>();
        assert!(
            avro::known_fingerprints(*kind)
                .iter()
                .any(|k| k.as_slice() == fp.bytes.as_slice()),
            "compat/{file}: its fingerprint is not accepted by the decoder"
        );
    }
    for (kind, file, text) in SNAPSHOTS {
        let (_, _, _, on_disk) = disk
            .iter()
            .find(|(k, _, f, _)| k == kind && f == file)
            .unwrap_or_else(|| panic!("SNAPSHOTS lists compat/{file}, which is not on disk"));
        assert_eq!(on_disk, text, "compat/{file}");
    }
}

/// Named types that appear in several files (Column and the Value branches, Lineage,
/// Operation, …) must be defined identically everywhere, docs included.
#[test]
fn shared_named_types_are_defined_identically_in_every_file() {
    fn collect(
        json: &Json,
        namespace: &str,
        file: &str,
        out: &mut BTreeMap<String, Vec<(String, Json)>>,
    ) {
        match json {
            Json::Object(map) => {
                let is_named = matches!(
                    map.get("type").and_then(Json::as_str),
                    Some("record" | "enum" | "fixed")
                );
                let mut ns = namespace.to_string();
                if is_named {
                    let name = map["name"].as_str().unwrap();
                    if let Some(n) = map.get("namespace").and_then(Json::as_str) {
                        ns = n.to_string();
                    }
                    let full = if name.contains('.') || ns.is_empty() {
                        name.to_string()
                    } else {
                        format!("{ns}.{name}")
                    };
                    // Compare with the namespace made explicit.
                    let mut def = json.clone();
                    def["namespace"] = Json::String(ns.clone());
                    out.entry(full).or_default().push((file.to_string(), def));
                }
                for (k, v) in map {
                    if k != "namespace" {
                        collect(v, &ns, file, out);
                    }
                }
            }
            Json::Array(items) => items.iter().for_each(|i| collect(i, namespace, file, out)),
            _ => {}
        }
    }
    let mut defs = BTreeMap::new();
    for kind in RecordKind::ALL {
        let json: Json = serde_json::from_str(kind.schema_text()).unwrap();
        collect(&json, "", kind.file_name(), &mut defs);
    }
    assert!(defs.contains_key("io.tidemark.Column"));
    assert!(defs.contains_key("io.tidemark.value.CalendarDateTime"));
    for (name, found) in &defs {
        let (first_file, first) = &found[0];
        for (file, def) in &found[1..] {
            assert_eq!(
                def, first,
                "{name} is defined differently in {file} and {first_file}; shared types must be \
                 copied verbatim"
            );
        }
    }
    // Everything is in tidemark's namespace.
    for name in defs.keys() {
        assert!(
            name.starts_with("io.tidemark."),
            "{name} is outside io.tidemark"
        );
    }
}

#[test]
fn every_field_and_type_has_a_doc() {
    fn walk(json: &Json, path: &str, missing: &mut Vec<String>) {
        match json {
            Json::Object(map) => {
                let named = matches!(
                    map.get("type").and_then(Json::as_str),
                    Some("record" | "enum" | "fixed")
                );
                let is_field = map.contains_key("name") && !named;
                let here = match map.get("name").and_then(Json::as_str) {
                    Some(n) => format!("{path}/{n}"),
                    None => path.to_string(),
                };
                if (named || is_field) && !map.contains_key("doc") {
                    missing.push(here.clone());
                }
                map.values().for_each(|v| walk(v, &here, missing));
            }
            Json::Array(items) => items.iter().for_each(|i| walk(i, path, missing)),
            _ => {}
        }
    }
    for kind in RecordKind::ALL {
        let mut missing = Vec::new();
        walk(
            &serde_json::from_str(kind.schema_text()).unwrap(),
            "",
            &mut missing,
        );
        assert!(
            missing.is_empty(),
            "{}: no doc for {missing:?}",
            kind.file_name()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The check itself catches what the README forbids (so a green test means something).

fn change_event_json() -> Json {
    serde_json::from_str(RecordKind::ChangeEvent.schema_text()).unwrap()
}

fn value_union(json: &mut Json) -> &mut Vec<Json> {
    let fields = json["fields"].as_array_mut().unwrap();
    let key = fields.iter_mut().find(|f| f["name"] == "key").unwrap();
    key["type"]["items"]["fields"][1]["type"]
        .as_array_mut()
        .unwrap()
}

fn check_change(change: impl FnOnce(&mut Json)) -> Result<(), String> {
    let current = avro::schema(RecordKind::ChangeEvent);
    let mut json = change_event_json();
    change(&mut json);
    can_read(current, &json.to_string())
}

#[test]
fn adding_a_field_with_a_default_is_compatible() {
    check_change(|j| {
        j["fields"].as_array_mut().unwrap().push(serde_json::json!({
            "name": "tenant", "doc": "d", "type": ["null", "string"], "default": null
        }));
    })
    .unwrap();
}

#[test]
fn adding_a_value_branch_is_compatible() {
    check_change(|j| {
        value_union(j).push(serde_json::json!({
            "type": "record", "name": "Vector", "namespace": "io.tidemark.value", "doc": "d",
            "fields": [{"name": "vector", "doc": "d", "type": {"type": "array", "items": "float"}}]
        }));
    })
    .unwrap();
}

#[test]
fn incompatible_changes_are_caught() {
    type Change = Box<dyn FnOnce(&mut Json)>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "a field without a default",
            Box::new(|j| {
                j["fields"].as_array_mut().unwrap().push(serde_json::json!({
                    "name": "tenant", "doc": "d", "type": "string"
                }));
            }),
        ),
        (
            "a removed value branch",
            Box::new(|j| {
                value_union(j).retain(|b| b["name"] != "Geometry");
            }),
        ),
        (
            "a changed type inside a value branch",
            Box::new(|j| {
                let int = value_union(j)
                    .iter_mut()
                    .find(|b| b["name"] == "Int")
                    .unwrap();
                int["fields"][0]["type"] = Json::String("string".into());
            }),
        ),
        (
            "a renamed value branch",
            Box::new(|j| {
                let b = value_union(j)
                    .iter_mut()
                    .find(|b| b["name"] == "Json")
                    .unwrap();
                b["name"] = Json::String("JsonText".into());
            }),
        ),
        (
            "a removed operation",
            Box::new(|j| {
                let op = j["fields"]
                    .as_array_mut()
                    .unwrap()
                    .iter_mut()
                    .find(|f| f["name"] == "op")
                    .unwrap();
                op["type"]["symbols"].as_array_mut().unwrap().pop();
            }),
        ),
        (
            "a field renamed with an alias (apache-avro's reader ignores aliases)",
            Box::new(|j| {
                let f = j["fields"]
                    .as_array_mut()
                    .unwrap()
                    .iter_mut()
                    .find(|f| f["name"] == "source_server")
                    .unwrap();
                f["name"] = Json::String("server".into());
                f["aliases"] = serde_json::json!(["source_server"]);
            }),
        ),
    ];
    for (what, change) in cases {
        assert!(check_change(change).is_err(), "{what} was not caught");
    }
}
