//! Every contract record survives Avro encoding exactly, and bad input gives a clear error,
//! never a panic.

use proptest::prelude::*;
use tidemark_schemas::avro::{self, AvroError, RecordKind, HEADER_LEN};
use tidemark_schemas::{
    BinlogPosition, ChangeEvent, Checkpoint, DateTime, DriftColumn, DriftEvent, Lineage, Operation,
    Row, TableId, TargetRecord, Value,
};

// ---------------------------------------------------------------------------------------------
// Exact comparison: floats by their bits (NaN payloads, -0.0), everything else by `==`.

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        (Value::Double(x), Value::Double(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

fn same_row(a: &Row, b: &Row) -> bool {
    a.len() == b.len()
        && a.0
            .iter()
            .zip(&b.0)
            .all(|((na, va), (nb, vb))| na == nb && same_value(va, vb))
}

fn same_opt_row(a: &Option<Row>, b: &Option<Row>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => same_row(a, b),
        _ => false,
    }
}

fn assert_same_event(a: &ChangeEvent, b: &ChangeEvent) {
    let strip = |e: &ChangeEvent| ChangeEvent {
        key: Row::new(),
        after: None,
        ..e.clone()
    };
    assert_eq!(strip(a), strip(b));
    assert!(same_row(&a.key, &b.key), "key: {:?} != {:?}", a.key, b.key);
    assert!(
        same_opt_row(&a.after, &b.after),
        "after: {:?} != {:?}",
        a.after,
        b.after
    );
}

// ---------------------------------------------------------------------------------------------
// Fixtures at edge values.

/// year, month, day, hour, minute, second, micros, fsp.
type DateTimeParts = (u16, u8, u8, u8, u8, u8, u32, u8);

fn datetime_parts() -> [DateTimeParts; 3] {
    [
        (0, 0, 0, 0, 0, 0, 0, 0),               // the zero date
        (9999, 12, 31, 23, 59, 59, 999_999, 6), // the largest
        (
            u16::MAX,
            u8::MAX,
            u8::MAX,
            u8::MAX,
            u8::MAX,
            u8::MAX,
            u32::MAX,
            u8::MAX,
        ), // any Rust value
    ]
}

/// One column per `Value` variant, several per variant at its edges.
fn every_value() -> Row {
    let mut row = Row::new();
    row.push("null", Value::Null);
    for n in [i64::MIN, -1, 0, 1, i64::MAX] {
        row.push("int", Value::Int(n));
    }
    for n in [0, 1, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
        row.push("uint", Value::UInt(n));
    }
    for x in [
        0.0f32,
        -0.0,
        0.1,
        f32::MIN_POSITIVE,
        f32::from_bits(1), // smallest subnormal
        f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0x7f80_0001), // signalling NaN with a payload
    ] {
        row.push("float", Value::Float(x));
    }
    for x in [
        -0.0f64,
        0.1,
        f64::MIN,
        f64::from_bits(1),
        f64::NAN,
        f64::from_bits(0xfff0_0000_dead_beef),
    ] {
        row.push("double", Value::Double(x));
    }
    for d in ["0", "-12.500", "99999999999999999999999999999999999999999999999999999999999999999.000000000000000000000000000001", ""] {
        row.push("decimal", Value::Decimal(d.into()));
    }
    for (year, month, day) in [
        (0, 0, 0),
        (2024, 2, 29),
        (9999, 12, 31),
        (u16::MAX, u8::MAX, u8::MAX),
    ] {
        row.push("date", Value::Date { year, month, day });
    }
    for (year, month, day, hour, minute, second, micros, fsp) in datetime_parts() {
        row.push(
            "datetime",
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
        );
        row.push(
            "timestamp",
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
        );
    }
    for (negative, hours, micros, fsp) in [
        (true, 838, 999_999, 6),
        (true, 0, 500_000, 3), // -00:00:00.500
        (false, 0, 0, 0),
        (true, u16::MAX, u32::MAX, u8::MAX),
    ] {
        row.push(
            "time",
            Value::Time {
                negative,
                hours,
                minute: 59,
                second: 59,
                micros,
                fsp,
            },
        );
    }
    for y in [0, 1901, 2155, u16::MAX] {
        row.push("year", Value::Year(y));
    }
    for s in ["", "é日本\u{0}\u{10FFFF}", "NULL"] {
        row.push("text", Value::Text(s.into()));
        row.push("json", Value::Json(s.into()));
        row.push("enum", Value::Enum(s.into()));
    }
    row.push("bytes", Value::Bytes(vec![]));
    row.push("bytes", Value::Bytes((0..=255).collect()));
    row.push("set", Value::Set(vec![]));
    row.push("set", Value::Set(vec!["".into(), "a,b".into(), "c".into()]));
    for (width, value) in [
        (1, 0),
        (1, 1),
        (63, (1 << 63) - 1),
        (64, u64::MAX),
        (0, 0),
        (u8::MAX, u64::MAX),
    ] {
        row.push("bit", Value::Bit { width, value });
    }
    row.push("geometry", Value::Geometry(vec![]));
    // SRID 4326, WKB POINT(1 2), little-endian.
    let mut point = 4326u32.to_le_bytes().to_vec();
    point.extend_from_slice(&[1, 1, 0, 0, 0]);
    point.extend_from_slice(&1f64.to_le_bytes());
    point.extend_from_slice(&2f64.to_le_bytes());
    row.push("geometry", Value::Geometry(point));
    row
}

fn change_event() -> ChangeEvent {
    ChangeEvent {
        source_server: "3e11fa47-71ca-11e1-9e33-c80aa9429562".into(),
        table: TableId::new("shop", "orders"),
        op: Operation::Update,
        key: Row(vec![
            ("id".into(), Value::UInt(u64::MAX)),
            ("region".into(), Value::Text("eu".into())),
        ]),
        after: Some(every_value()),
        version: i64::MAX,
        position: BinlogPosition::new("mysql-bin.000007", i64::MAX as u64),
        gtid: Some("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5".into()),
        commit_time_us: i64::MIN,
        chunk: Some("orders:[1,1000)".into()),
    }
}

fn lineage() -> Lineage {
    Lineage {
        source_server: "1".into(),
        source_table: "shop.orders".into(),
        source_key: r#"{"id":42}"#.into(),
        position: "mysql-bin.000007:1234".into(),
        gtid: None,
        version: (7 << 32) + 1234,
        op: Operation::Backfill,
        commit_time_us: 1_700_000_000_000_000,
        transform_name: "orders".into(),
        transform_version: "9f86d081884c7d65".into(),
        source_digest: "".into(),
        chunk: Some("c1".into()),
    }
}

fn drift_event(lineage: Option<Lineage>) -> DriftEvent {
    DriftEvent {
        table: "orders".into(),
        key: r#"{"id":42}"#.into(),
        class: "value_mismatch".into(),
        columns: vec![
            DriftColumn {
                name: "total".into(),
                source: Some("12.50".into()),
                target: Some("12.5".into()),
            },
            DriftColumn {
                name: "note".into(),
                source: None,
                target: Some("x".into()),
            },
        ],
        target_version: lineage.as_ref().map(|l| l.version),
        target_lineage: lineage,
        observed_before: "mysql-bin.000007:100".into(),
        observed_after: "mysql-bin.000007:200".into(),
        reason: "target edited out of band".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips.

#[test]
fn change_event_with_every_value_variant_round_trips_exactly() {
    let ev = change_event();
    let bytes = avro::encode_change_event(&ev).unwrap();
    assert_eq!(&bytes[..2], &[0xC3, 0x01]);
    assert_eq!(
        &bytes[2..HEADER_LEN],
        &avro::fingerprint(RecordKind::ChangeEvent)
    );
    let back = avro::decode_change_event(&bytes).unwrap();
    assert_same_event(&back, &ev);
    // Same input, same bytes.
    assert_eq!(avro::encode_change_event(&back).unwrap(), bytes);
}

#[test]
fn every_variant_of_each_column_round_trips_alone() {
    for (name, value) in every_value().0 {
        let ev = ChangeEvent {
            key: Row(vec![(name, value.clone())]),
            after: None,
            op: Operation::Delete,
            gtid: None,
            chunk: None,
            ..change_event()
        };
        let back = avro::decode_change_event(&avro::encode_change_event(&ev).unwrap()).unwrap();
        assert!(
            same_value(&back.key.0[0].1, &value),
            "{name}: {value:?} came back as {:?}",
            back.key.0[0].1
        );
    }
}

#[test]
fn every_operation_round_trips() {
    for op in [
        Operation::Insert,
        Operation::Update,
        Operation::Delete,
        Operation::Backfill,
        Operation::Repair,
    ] {
        let ev = ChangeEvent {
            op,
            ..change_event()
        };
        let back = avro::decode_change_event(&avro::encode_change_event(&ev).unwrap()).unwrap();
        assert_eq!(back.op, op);
        let l = Lineage { op, ..lineage() };
        assert_eq!(
            avro::decode_lineage(&avro::encode_lineage(&l).unwrap()).unwrap(),
            l
        );
    }
}

#[test]
fn lineage_round_trips() {
    let l = lineage();
    assert_eq!(
        avro::decode_lineage(&avro::encode_lineage(&l).unwrap()).unwrap(),
        l
    );
    let l = Lineage {
        gtid: Some("0-1-42".into()),
        chunk: None,
        ..lineage()
    };
    assert_eq!(
        avro::decode_lineage(&avro::encode_lineage(&l).unwrap()).unwrap(),
        l
    );
}

#[test]
fn target_record_round_trips_with_columns_and_as_tombstone() {
    let rec = TargetRecord {
        table: "orders_by_id".into(),
        key: Row(vec![("id".into(), Value::Int(42))]),
        columns: Some(every_value()),
        lineage: lineage(),
    };
    let back = avro::decode_target_record(&avro::encode_target_record(&rec).unwrap()).unwrap();
    assert_eq!(back.table, rec.table);
    assert_eq!(back.lineage, rec.lineage);
    assert!(same_row(&back.key, &rec.key));
    assert!(same_opt_row(&back.columns, &rec.columns));

    let tombstone = TargetRecord {
        columns: None,
        ..rec
    };
    let back =
        avro::decode_target_record(&avro::encode_target_record(&tombstone).unwrap()).unwrap();
    assert!(back.is_tombstone());
    assert_eq!(back.key, tombstone.key);
}

#[test]
fn drift_event_round_trips_with_and_without_lineage() {
    for ev in [drift_event(Some(lineage())), drift_event(None)] {
        assert_eq!(
            avro::decode_drift_event(&avro::encode_drift_event(&ev).unwrap()).unwrap(),
            ev
        );
    }
    let empty = DriftEvent {
        columns: vec![],
        ..drift_event(None)
    };
    assert_eq!(
        avro::decode_drift_event(&avro::encode_drift_event(&empty).unwrap()).unwrap(),
        empty
    );
}

#[test]
fn checkpoint_round_trips() {
    let ck = Checkpoint {
        stage: "capture".into(),
        scope: "*".into(),
        value: "mysql-bin.000007:1234".into(),
    };
    assert_eq!(
        avro::decode_checkpoint(&avro::encode_checkpoint(&ck).unwrap()).unwrap(),
        ck
    );
}

#[test]
fn confluent_wire_format_round_trips() {
    let ev = change_event();
    let bytes = avro::encode_confluent(7, &ev).unwrap();
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, 7]);
    assert_eq!(avro::confluent_schema_id(&bytes), Some(7));
    let back: ChangeEvent =
        avro::decode_confluent(&bytes, avro::schema(RecordKind::ChangeEvent)).unwrap();
    assert_same_event(&back, &ev);
    assert_eq!(avro::confluent_schema_id(&[0xC3, 1, 2]), None);
    let err = avro::decode_confluent::<ChangeEvent>(&[1, 2], avro::schema(RecordKind::ChangeEvent))
        .unwrap_err();
    assert!(err.to_string().contains("Confluent"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Errors.

#[test]
fn unknown_fingerprint_is_named_in_hex() {
    let mut bytes = avro::encode_checkpoint(&Checkpoint {
        stage: "apply".into(),
        scope: "shop.orders".into(),
        value: "42".into(),
    })
    .unwrap();
    bytes[2..HEADER_LEN].copy_from_slice(&[0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
    let err = avro::decode_checkpoint(&bytes).unwrap_err();
    assert!(matches!(err, AvroError::UnknownFingerprint { .. }));
    let msg = err.to_string();
    assert!(
        msg.starts_with("cannot decode Checkpoint: unknown schema fingerprint 0123456789abcdef"),
        "{msg}"
    );
    assert!(
        msg.contains(&hex::encode(avro::fingerprint(RecordKind::Checkpoint))),
        "{msg}"
    );
}

#[test]
fn a_record_of_another_kind_is_an_unknown_fingerprint() {
    let bytes = avro::encode_lineage(&lineage()).unwrap();
    let err = avro::decode_change_event(&bytes).unwrap_err();
    assert!(
        err.to_string().contains("unknown schema fingerprint"),
        "{err}"
    );
}

#[test]
fn short_or_unmarked_input_is_refused() {
    let err = avro::decode_change_event(&[]).unwrap_err().to_string();
    assert!(err.contains("0 bytes long"), "{err}");
    let err = avro::decode_change_event(&[0xC3, 0x01, 0, 0])
        .unwrap_err()
        .to_string();
    assert!(err.contains("shorter than the 10-byte"), "{err}");
    let mut bytes = avro::encode_change_event(&change_event()).unwrap();
    bytes[0] = b'{';
    let err = avro::decode_change_event(&bytes).unwrap_err().to_string();
    assert!(
        err.contains("single-object marker c301 (found 7b01)"),
        "{err}"
    );
}

#[test]
fn trailing_bytes_are_refused() {
    let mut bytes = avro::encode_checkpoint(&Checkpoint {
        stage: "a".into(),
        scope: "b".into(),
        value: "c".into(),
    })
    .unwrap();
    bytes.push(0);
    let err = avro::decode_checkpoint(&bytes).unwrap_err().to_string();
    assert!(
        err.contains("1 bytes follow the end of the record"),
        "{err}"
    );
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = avro::encode_change_event(&change_event()).unwrap();
    for len in 0..bytes.len() {
        let err = avro::decode_change_event(&bytes[..len]);
        assert!(err.is_err(), "a message cut to {len} bytes decoded");
    }
}

#[test]
fn every_single_byte_corruption_decodes_or_errs_without_panicking() {
    let bytes = avro::encode_change_event(&change_event()).unwrap();
    for i in HEADER_LEN..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = bytes.clone();
            bad[i] ^= flip;
            let _ = avro::decode_change_event(&bad);
        }
    }
}

#[test]
fn out_of_range_values_name_the_field() {
    // A UInt whose text is not a number: rewrite "18446744073709551615" (the key's first
    // column) into "1844674407370955161x".
    let bytes = avro::encode_change_event(&change_event()).unwrap();
    let digits = b"18446744073709551615";
    let at = bytes
        .windows(digits.len())
        .position(|w| w == digits)
        .unwrap();
    let mut bad = bytes.clone();
    bad[at + digits.len() - 1] = b'x';
    let err = avro::decode_change_event(&bad).unwrap_err().to_string();
    assert_eq!(
        err,
        "cannot decode ChangeEvent: field `key[0].value.uint`: `1844674407370955161x` is not an unsigned decimal number"
    );
}

#[test]
fn an_offset_beyond_an_avro_long_is_an_encode_error() {
    let ev = ChangeEvent {
        position: BinlogPosition::new("mysql-bin.000001", u64::MAX),
        ..change_event()
    };
    let err = avro::encode_change_event(&ev).unwrap_err().to_string();
    assert_eq!(
        err,
        "cannot encode ChangeEvent: field `position.offset`: 18446744073709551615 exceeds the largest Avro long"
    );
}

// ---------------------------------------------------------------------------------------------
// Property tests.

fn small_string() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a-z_]{0,8}"]
}

fn datetime() -> impl Strategy<Value = DateTimeParts> {
    (
        any::<u16>(),
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        any::<u32>(),
        any::<u8>(),
    )
}

/// Any `Value`, over the whole range of every Rust field (not only what a server produces).
fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Int),
        any::<u64>().prop_map(Value::UInt),
        any::<u32>().prop_map(|b| Value::Float(f32::from_bits(b))),
        any::<u64>().prop_map(|b| Value::Double(f64::from_bits(b))),
        "-?[0-9]{1,40}(\\.[0-9]{1,30})?".prop_map(Value::Decimal),
        (any::<u16>(), any::<u8>(), any::<u8>()).prop_map(|(year, month, day)| Value::Date {
            year,
            month,
            day
        }),
        datetime().prop_map(|(year, month, day, hour, minute, second, micros, fsp)| {
            Value::DateTime(DateTime {
                year,
                month,
                day,
                hour,
                minute,
                second,
                micros,
                fsp,
            })
        }),
        datetime().prop_map(|(year, month, day, hour, minute, second, micros, fsp)| {
            Value::Timestamp(DateTime {
                year,
                month,
                day,
                hour,
                minute,
                second,
                micros,
                fsp,
            })
        }),
        (
            any::<bool>(),
            any::<u16>(),
            any::<u8>(),
            any::<u8>(),
            any::<u32>(),
            any::<u8>()
        )
            .prop_map(
                |(negative, hours, minute, second, micros, fsp)| Value::Time {
                    negative,
                    hours,
                    minute,
                    second,
                    micros,
                    fsp,
                }
            ),
        any::<u16>().prop_map(Value::Year),
        small_string().prop_map(Value::Text),
        prop::collection::vec(any::<u8>(), 0..32).prop_map(Value::Bytes),
        small_string().prop_map(Value::Enum),
        prop::collection::vec(small_string(), 0..5).prop_map(Value::Set),
        (any::<u8>(), any::<u64>()).prop_map(|(width, value)| Value::Bit { width, value }),
        small_string().prop_map(Value::Json),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Value::Geometry),
    ]
}

fn row() -> impl Strategy<Value = Row> {
    prop::collection::vec((small_string(), value()), 0..12).prop_map(|columns| {
        Row(columns
            .into_iter()
            .map(|(name, v)| (tidemark_schemas::ColumnName::from(name.as_str()), v))
            .collect())
    })
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        Just(Operation::Insert),
        Just(Operation::Update),
        Just(Operation::Delete),
        Just(Operation::Backfill),
        Just(Operation::Repair),
    ]
}

prop_compose! {
    fn arb_change_event()(
        source_server in small_string(),
        database in small_string(),
        table in small_string(),
        op in operation(),
        key in row(),
        after in prop::option::of(row()),
        version in any::<i64>(),
        file in small_string(),
        offset in 0..=i64::MAX as u64,
        gtid in prop::option::of(small_string()),
        commit_time_us in any::<i64>(),
        chunk in prop::option::of(small_string()),
    ) -> ChangeEvent {
        ChangeEvent {
            source_server: source_server.into(),
            table: TableId { database: database.into(), table: table.into() },
            op,
            key,
            after,
            version,
            position: BinlogPosition { file: file.into(), offset },
            gtid,
            commit_time_us,
            chunk: chunk.map(Into::into),
        }
    }
}

proptest! {
    #[test]
    fn any_change_event_round_trips_exactly(ev in arb_change_event()) {
        let bytes = avro::encode_change_event(&ev).unwrap();
        let back = avro::decode_change_event(&bytes).unwrap();
        assert_same_event(&back, &ev);
    }

    #[test]
    fn any_bytes_after_a_valid_header_never_panic(tail in prop::collection::vec(any::<u8>(), 0..256)) {
        for kind in RecordKind::ALL {
            let mut bytes = vec![0xC3, 0x01];
            bytes.extend_from_slice(&avro::fingerprint(kind));
            bytes.extend_from_slice(&tail);
            let _ = avro::decode_change_event(&bytes);
            let _ = avro::decode_lineage(&bytes);
            let _ = avro::decode_target_record(&bytes);
            let _ = avro::decode_drift_event(&bytes);
            let _ = avro::decode_checkpoint(&bytes);
        }
    }

    #[test]
    fn corrupting_a_valid_change_event_never_panics(
        ev in arb_change_event(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..), 1..4),
    ) {
        let mut bytes = avro::encode_change_event(&ev).unwrap();
        let body = bytes.len() - HEADER_LEN;
        for (at, x) in flips {
            bytes[HEADER_LEN + at.index(body)] ^= x;
        }
        let _ = avro::decode_change_event(&bytes);
    }
}
