use super::conv::ToFromAvro;
use super::*;
use apache_avro::{GenericSingleObjectReader, GenericSingleObjectWriter};

fn all_values() -> Row {
    let dt = |micros, fsp| (2024, 2, 29, 23, 59, 58, micros, fsp);
    let (year, month, day, hour, minute, second, micros, fsp) = dt(123_456, 6);
    Row(vec![
        ("null".into(), Value::Null),
        ("int".into(), Value::Int(i64::MIN)),
        ("uint".into(), Value::UInt(u64::MAX)),
        ("float".into(), Value::Float(-0.1)),
        ("double".into(), Value::Double(f64::MAX)),
        ("decimal".into(), Value::Decimal("-12.500".into())),
        (
            "date".into(),
            Value::Date {
                year: 0,
                month: 0,
                day: 0,
            },
        ),
        (
            "datetime".into(),
            Value::DateTime(DateTime {
                year,
                month,
                day,
                hour,
                minute,
                second,
                micros,
                fsp,
            }),
        ),
        (
            "timestamp".into(),
            Value::Timestamp(DateTime {
                year,
                month,
                day,
                hour,
                minute,
                second,
                micros,
                fsp,
            }),
        ),
        (
            "time".into(),
            Value::Time {
                negative: true,
                hours: 838,
                minute: 59,
                second: 59,
                micros: 999_999,
                fsp: 6,
            },
        ),
        ("year".into(), Value::Year(2155)),
        ("text".into(), Value::Text("é\u{0}".into())),
        ("bytes".into(), Value::Bytes(vec![0, 255])),
        ("enum".into(), Value::Enum("".into())),
        ("set".into(), Value::Set(vec!["a".into(), "b".into()])),
        (
            "bit".into(),
            Value::Bit {
                width: 64,
                value: u64::MAX,
            },
        ),
        ("json".into(), Value::Json("{\"a\":[1]}".into())),
        (
            "geometry".into(),
            Value::Geometry(vec![0, 0, 0, 0, 1, 1, 0, 0, 0]),
        ),
    ])
}

fn event() -> ChangeEvent {
    ChangeEvent {
        source_server: "3e11fa47-71ca-11e1-9e33-c80aa9429562".into(),
        table: TableId::new("shop", "orders"),
        op: Operation::Update,
        key: Row(vec![("id".into(), Value::UInt(u64::MAX))]),
        after: Some(all_values()),
        version: (7 << 32) + 1234,
        position: BinlogPosition::new("mysql-bin.000007", 1234),
        gtid: Some("0-1-42".into()),
        commit_time_us: 1_700_000_000_123_456,
        chunk: Some("chunk-3".into()),
    }
}

/// The `io.tidemark.Column.value` union of a schema.
fn value_union(kind: RecordKind) -> Vec<Schema> {
    let names = &compiled(kind).current.names;
    let Some(Schema::Record(column)) = names.get("io.tidemark.Column") else {
        panic!("{kind} has no io.tidemark.Column");
    };
    let value = column.fields.iter().find(|f| f.name == "value").unwrap();
    let Schema::Union(u) = &value.schema else {
        panic!("Column.value is not a union");
    };
    u.variants().to_vec()
}

#[test]
fn value_branch_table_matches_the_schemas() {
    for kind in [RecordKind::ChangeEvent, RecordKind::TargetRecord] {
        let variants = value_union(kind);
        assert_eq!(variants.len(), VALUE_BRANCHES.len(), "{kind}");
        assert_eq!(variants[0], Schema::Null, "{kind}: branch 0 must be null");
        for (i, v) in variants.iter().enumerate().skip(1) {
            let Schema::Record(r) = v else {
                panic!("{kind}: branch {i} is not a record");
            };
            assert_eq!(
                r.fields.len(),
                1,
                "{kind}: {} must have one field",
                r.name.name
            );
            assert_eq!(r.fields[0].name, VALUE_BRANCHES[i], "{kind}: branch {i}");
            assert!(
                r.fields[0].default.is_none(),
                "{kind}: the field must be required"
            );
        }
    }
}

#[test]
fn operation_symbols_match_the_schemas() {
    for kind in [RecordKind::ChangeEvent, RecordKind::Lineage] {
        let Some(Schema::Enum(e)) = compiled(kind).current.names.get("io.tidemark.Operation")
        else {
            panic!("{kind} has no io.tidemark.Operation");
        };
        let ours: Vec<&str> = OPERATIONS.iter().map(|o| o.as_str()).collect();
        assert_eq!(e.symbols, ours, "{kind}");
    }
}

#[test]
fn header_is_marker_and_little_endian_rabin_fingerprint() {
    for kind in RecordKind::ALL {
        let c = compiled(kind);
        assert_eq!(&c.header[..2], &SINGLE_OBJECT_MARKER);
        assert_eq!(&c.header[2..], &fingerprint(kind));
        // CRC-64-AVRO of the canonical form, little-endian (Avro specification).
        let canonical = schema(kind).canonical_form();
        let mut fp: u64 = 0xc15d_213a_a4d7_a795;
        for b in canonical.bytes() {
            fp = (fp >> 8) ^ rabin_table()[((fp ^ u64::from(b)) & 0xff) as usize];
        }
        assert_eq!(fp.to_le_bytes(), fingerprint(kind), "{kind}");
    }
}

fn rabin_table() -> [u64; 256] {
    let mut t = [0u64; 256];
    for (i, e) in t.iter_mut().enumerate() {
        let mut fp = i as u64;
        for _ in 0..8 {
            fp = (fp >> 1) ^ (0xc15d_213a_a4d7_a795 & (!(fp & 1)).wrapping_add(1));
        }
        *e = fp;
    }
    t
}

#[test]
fn bytes_match_apache_avro_single_object_writer_and_reader() {
    let ev = event();
    let ours = encode(&ev).unwrap();
    let schema = schema(RecordKind::ChangeEvent);
    let mut writer = GenericSingleObjectWriter::new_with_capacity(schema, 1024).unwrap();
    let mut theirs = Vec::new();
    writer
        .write_value(ev.to_avro().unwrap(), &mut theirs)
        .unwrap();
    assert_eq!(ours, theirs);
    let reader = GenericSingleObjectReader::new(schema.clone()).unwrap();
    let value = reader.read_value(&mut ours.as_slice()).unwrap();
    assert_eq!(ChangeEvent::from_avro(value).unwrap(), ev);
}

/// apache-avro resolves union branches by structure; with one uniquely named field per
/// branch, every branch resolves to itself.
#[test]
fn every_value_branch_resolves_to_itself() {
    let ev = event();
    let bytes = encode(&ev).unwrap();
    let schema = schema(RecordKind::ChangeEvent);
    let resolved =
        apache_avro::from_avro_datum(schema, &mut &bytes[HEADER_LEN..], Some(schema)).unwrap();
    assert_eq!(ChangeEvent::from_avro(resolved).unwrap(), ev);
}

/// The reason for the one-unique-field rule: apache-avro 0.21 picks the first branch a
/// record resolves to, so two branches of the same shape are confused.
#[test]
fn structural_twins_would_be_confused_by_resolution() {
    let twins = Schema::parse_str(
        r#"["null",
            {"type":"record","name":"A","fields":[{"name":"x","type":"string"}]},
            {"type":"record","name":"B","fields":[{"name":"x","type":"string"}]}]"#,
    )
    .unwrap();
    let b = Avro::Union(
        2,
        Box::new(Avro::Record(vec![("x".into(), Avro::String("v".into()))])),
    );
    let datum = apache_avro::to_avro_datum(&twins, b).unwrap();
    let resolved = apache_avro::from_avro_datum(&twins, &mut datum.as_slice(), Some(&twins));
    assert!(matches!(resolved, Ok(Avro::Union(1, _))), "{resolved:?}");
}

/// Data from an older writer whose union lists the branches in another order and which
/// lacks a field that now has a default decodes to the same values.
#[test]
fn older_writer_with_other_branch_order_and_fewer_fields_resolves() {
    let mut json: serde_json::Value =
        serde_json::from_str(RecordKind::ChangeEvent.schema_text()).unwrap();
    let fields = json["fields"].as_array_mut().unwrap();
    fields.retain(|f| f["name"] != "chunk");
    let union = fields.iter_mut().find(|f| f["name"] == "key").unwrap()["type"]["items"]["fields"]
        [1]["type"]
        .as_array_mut()
        .unwrap();
    // Move simple branches to the front: geometry, json, enum, text, uint.
    let order = ["null", "geometry", "json", "enum", "text", "uint"];
    union.sort_by_key(|b| {
        let field = b["fields"][0]["name"].as_str().unwrap_or("null");
        order
            .iter()
            .position(|o| *o == field)
            .unwrap_or(order.len())
    });
    let new_order: Vec<String> = union
        .iter()
        .map(|b| {
            b["fields"][0]["name"]
                .as_str()
                .unwrap_or("null")
                .to_string()
        })
        .collect();
    let old = Schema::parse_str(&json.to_string()).unwrap();
    let writer = WriterSchema::new("synthetic old change_event", old.clone());
    assert_ne!(writer.fingerprint, fingerprint(RecordKind::ChangeEvent));

    fn remap(v: &mut Avro, new_order: &[String]) {
        match v {
            Avro::Record(fields) => {
                let is_column = fields.len() == 2 && fields[0].0 == "name";
                for (name, f) in fields.iter_mut() {
                    if is_column && name == "value" {
                        if let Avro::Union(i, _) = f {
                            let branch = VALUE_BRANCHES[*i as usize];
                            *i = new_order.iter().position(|b| b == branch).unwrap() as u32;
                        }
                    } else {
                        remap(f, new_order);
                    }
                }
            }
            Avro::Array(items) => items.iter_mut().for_each(|i| remap(i, new_order)),
            Avro::Union(_, inner) => remap(inner, new_order),
            _ => {}
        }
    }
    let mut ev = event();
    let mut value = ev.to_avro().unwrap();
    if let Avro::Record(fields) = &mut value {
        fields.retain(|(n, _)| n != "chunk");
    }
    remap(&mut value, &new_order);
    let datum = apache_avro::to_avro_datum(&old, value).unwrap();
    let back: ChangeEvent = decode_datum(&writer, &datum).unwrap();
    ev.chunk = None;
    assert_eq!(back, ev);
}

#[test]
fn corrupt_counts_and_strings_are_refused_with_the_field() {
    let ev = ChangeEvent {
        after: None,
        ..event()
    };
    let bytes = encode(&ev).unwrap();
    let mut datum = bytes[HEADER_LEN..].to_vec();
    // source_server: its length is the first varint; claim a huge string.
    let mut huge = bytes[..HEADER_LEN].to_vec();
    huge.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]);
    huge.extend_from_slice(&datum[1..]);
    let err = decode::<ChangeEvent>(&huge).unwrap_err().to_string();
    assert!(err.contains("field `source_server`"), "{err}");
    assert!(err.contains("exceeds"), "{err}");

    // Invalid UTF-8 inside source_server.
    datum[1] = 0xff;
    let mut bad = bytes[..HEADER_LEN].to_vec();
    bad.extend_from_slice(&datum);
    let err = decode::<ChangeEvent>(&bad).unwrap_err().to_string();
    assert!(
        err.contains("UTF-8") && err.contains("source_server"),
        "{err}"
    );
}

#[test]
fn a_huge_item_count_is_refused_before_anything_is_allocated() {
    let ck = DriftEvent {
        table: "t".into(),
        key: "k".into(),
        class: "stale".into(),
        columns: vec![],
        target_version: None,
        target_lineage: None,
        observed_before: "b.1:4".into(),
        observed_after: "b.1:5".into(),
        reason: "r".into(),
    };
    let bytes = encode(&ck).unwrap();
    // table "t", key "k", class "stale", then the columns array count: 0 → 2^29. Handed
    // to apache-avro 0.21 unchecked, these 5 bytes make it reserve 2^29 values and abort
    // the process (SIGABRT, measured).
    let pos = HEADER_LEN + 2 + 2 + 6;
    assert_eq!(bytes[pos], 0);
    let mut bad = bytes[..pos].to_vec();
    bad.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x04]);
    bad.extend_from_slice(&bytes[pos + 1..]);
    let err = decode::<DriftEvent>(&bad).unwrap_err();
    assert!(matches!(err, AvroError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("field `columns`"), "{err}");
}
