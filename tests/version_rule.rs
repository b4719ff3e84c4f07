//! The version rule of DESIGN.md §2, as a property: for any interleaving of a backfill chunk read
//! with live changes, and any order of delivery, the target converges to the source.
//!
//! Model: live changes on a few hot keys, each a rows event in the binlog with
//! `row_version`. A chunk read observes the end of log `P` before change `p`, and reads the
//! source as it stands after change `r ≥ p` (the read may see changes committed after P).
//! Its rows carry `backfill_version(P)`. A repair re-read of every key (observed at Q ≥ P, read
//! after change `s ≥ q`, tombstones for keys gone) carries `repair_version(Q)`. Every record goes through the real transform and the
//! real SQLite sink in a random order.

use std::collections::BTreeMap;

use proptest::prelude::*;
use tidemark_schemas::{
    backfill_version, repair_version, row_version, BinlogPosition, ChangeEvent, Operation, Row,
    SourceColumn, SourceSchema, SourceType, TableId, Value,
};
use tidemark_sink::{Sink, SqliteSink};
use tidemark_transform::Transformer;

#[derive(Debug, Clone)]
enum Op {
    Upsert(i64, i64),
    Delete(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0i64..4, any::<i64>()).prop_map(|(k, v)| Op::Upsert(k, v)),
        (0i64..4).prop_map(Op::Delete),
    ]
}

fn schema() -> SourceSchema {
    let int = |name: &str, nullable| SourceColumn {
        name: name.into(),
        ty: SourceType::Integer {
            bits: 64,
            unsigned: false,
        },
        nullable,
        column_type: "bigint".into(),
    };
    SourceSchema {
        table: TableId::new("shop", "t"),
        columns: vec![int("id", false), int("v", true)],
        key: vec![0],
        key_name: "PRIMARY".into(),
    }
}

fn row(k: i64, v: i64) -> Row {
    Row(vec![
        ("id".into(), Value::Int(k)),
        ("v".into(), Value::Int(v)),
    ])
}

fn key(k: i64) -> Row {
    Row(vec![("id".into(), Value::Int(k))])
}

fn change(op: Operation, k: i64, after: Option<Row>, version: i64, offset: u64) -> ChangeEvent {
    ChangeEvent {
        source_server: "s".into(),
        table: TableId::new("shop", "t"),
        op,
        key: key(k),
        after,
        version,
        position: BinlogPosition::new("mysql-bin.000001", offset),
        gtid: None,
        commit_time_us: 0,
        chunk: None,
    }
}

fn state_after(ops: &[Op]) -> BTreeMap<i64, i64> {
    let mut s = BTreeMap::new();
    for op in ops {
        match op {
            Op::Upsert(k, v) => {
                s.insert(*k, *v);
            }
            Op::Delete(k) => {
                s.remove(k);
            }
        }
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_chunk_read_interleaved_with_live_changes_converges(
        ops in prop::collection::vec(op(), 1..25),
        p_frac in 0.0f64..=1.0,
        r_frac in 0.0f64..=1.0,
        q_frac in 0.0f64..=1.0,
        s_frac in 0.0f64..=1.0,
        order_seed in any::<u64>(),
    ) {
        let n = ops.len();
        let p = (p_frac * n as f64) as usize;
        let r = p + ((r_frac * (n - p) as f64) as usize);
        // Binlog layout: change i is a 40-byte rows event at offset 4 + 40 i.
        let offset = |i: usize| 4 + 40 * i as u64;
        let mut changes = Vec::new();
        for (i, o) in ops.iter().enumerate() {
            let v = row_version(1, offset(i), 40, 0).unwrap();
            changes.push(match o {
                Op::Upsert(k, val) => change(Operation::Update, *k, Some(row(*k, *val)), v, offset(i)),
                Op::Delete(k) => change(Operation::Delete, *k, None, v, offset(i)),
            });
        }
        // The chunk: everything the read saw, labelled with the position observed before it.
        let vp = backfill_version(1, offset(p)).unwrap();
        for (k, val) in state_after(&ops[..r]) {
            changes.push(change(Operation::Backfill, k, Some(row(k, val)), vp, offset(p)));
        }
        // A repair re-read of every key, observed at q ≥ p and read at s ≥ q: a key gone from
        // the source at s becomes a tombstone.
        let q = p + ((q_frac * (n - p) as f64) as usize);
        let s_at = q + ((s_frac * (n - q) as f64) as usize);
        let vq = repair_version(1, offset(q)).unwrap();
        let seen = state_after(&ops[..s_at]);
        for k in 0..4 {
            let after = seen.get(&k).map(|v| row(k, *v));
            changes.push(change(Operation::Repair, k, after, vq, offset(q)));
        }
        // Deliver in a pseudo-random order.
        let mut order: Vec<usize> = (0..changes.len()).collect();
        let mut seed = order_seed | 1;
        for i in (1..order.len()).rev() {
            seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
            order.swap(i, (seed % (i as u64 + 1)) as usize);
        }

        let plan = Transformer::identity().plan(&schema()).unwrap();
        let mut sink = SqliteSink::open(":memory:").unwrap();
        sink.ensure_table(plan.target_schema()).unwrap();
        let records: Vec<_> = order.iter().map(|&i| plan.apply(&changes[i]).unwrap()).collect();
        for chunk in records.chunks(3) {
            sink.write(chunk, &[]).unwrap();
        }

        let mut target = BTreeMap::new();
        let conn = sink.connection();
        let mut stmt = conn.prepare("SELECT id, v FROM t WHERE _tm_deleted = 0").unwrap();
        for r in stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))).unwrap() {
            let (k, v) = r.unwrap();
            target.insert(k, v);
        }
        prop_assert_eq!(target, state_after(&ops), "p = {}, r = {}, q = {}, s = {}, order = {:?}", p, r, q, s_at, order);
    }
}
