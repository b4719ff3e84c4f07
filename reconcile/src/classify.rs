//! Classification of one settled key (DESIGN.md §6), and the clustered summary.
//!
//! The comparison is in the target's terms: the source row is first transformed with the
//! current mapping, then compared with the record the target holds. The order of the checks
//! matters: a key whose latest change sits in the dead-letter output is `schema_rejection`
//! whatever else differs; a target row made from another source image is `stale` before it can be
//! a `value_mismatch`; a row made by another mapping is `transform_skew`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tidemark_schemas::{DriftColumn, Row, TargetRecord, Value};

/// The drift taxonomy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftClass {
    Missing,
    Extra,
    Stale,
    ValueMismatch,
    TransformSkew,
    SchemaRejection,
    InFlight,
    Unsettled,
    /// An invariant's answers differ between the sides in a group (the "key" is the group).
    InvariantViolation,
}

impl DriftClass {
    /// Every class.
    pub const ALL: [DriftClass; 9] = [
        DriftClass::Missing,
        DriftClass::Extra,
        DriftClass::Stale,
        DriftClass::ValueMismatch,
        DriftClass::TransformSkew,
        DriftClass::SchemaRejection,
        DriftClass::InFlight,
        DriftClass::Unsettled,
        DriftClass::InvariantViolation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DriftClass::Missing => "missing",
            DriftClass::Extra => "extra",
            DriftClass::Stale => "stale",
            DriftClass::ValueMismatch => "value_mismatch",
            DriftClass::TransformSkew => "transform_skew",
            DriftClass::SchemaRejection => "schema_rejection",
            DriftClass::InFlight => "in_flight",
            DriftClass::Unsettled => "unsettled",
            DriftClass::InvariantViolation => "invariant_violation",
        }
    }

    /// Whether an operator must act on it.
    pub fn actionable(self) -> bool {
        !matches!(self, DriftClass::InFlight)
    }

    /// Whether re-reading the key from the source through the pipeline can fix it.
    pub fn repairable(self) -> bool {
        !matches!(
            self,
            DriftClass::InFlight | DriftClass::SchemaRejection | DriftClass::InvariantViolation
        )
    }
}

/// The finding for one settled key: its class, the differing columns and a one-line reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub class: DriftClass,
    pub columns: Vec<DriftColumn>,
    pub reason: String,
}

fn text(v: Option<&Value>) -> Option<String> {
    v.filter(|v| !v.is_null()).map(|v| v.to_string())
}

/// Columns whose values differ between the expected and the stored row, by name.
pub fn differing_columns(expected: &Row, stored: &Row) -> Vec<DriftColumn> {
    // Fast path: both rows in the target schema's column order (the usual case) compare
    // position by position, without a map.
    if expected.len() == stored.len()
        && expected
            .iter()
            .zip(stored.iter())
            .all(|((a, _), (b, _))| a == b)
    {
        return expected
            .iter()
            .zip(stored.iter())
            .filter(|((_, want), (_, have))| !values_equal(want, have))
            .map(|((name, want), (_, have))| DriftColumn {
                name: name.to_string(),
                source: text(Some(want)),
                target: text(Some(have)),
            })
            .collect();
    }
    let stored_by_name: BTreeMap<&str, &Value> = stored.iter().collect();
    let mut out = Vec::new();
    for (name, want) in expected.iter() {
        let have = stored_by_name.get(name).copied();
        let same = match have {
            Some(h) => values_equal(want, h),
            None => want.is_null(),
        };
        if !same {
            out.push(DriftColumn {
                name: name.to_string(),
                source: text(Some(want)),
                target: text(have),
            });
        }
    }
    let expected_names: Vec<&str> = expected.iter().map(|(n, _)| n).collect();
    for (name, have) in stored.iter() {
        if !expected_names.contains(&name) && !have.is_null() {
            out.push(DriftColumn {
                name: name.to_string(),
                source: None,
                target: text(Some(have)),
            });
        }
    }
    out
}

/// Equality that treats floats by their bits (NaN equals itself; -0.0 differs from 0.0).
fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        (Value::Double(x), Value::Double(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

/// Classify a settled key.
///
/// `expected`: the current transform of the source row (`None` when the source has no row, or
/// the mapping filters it out). `stored`: what the target holds (`None`, or a tombstone).
/// `rejected`: the source row cannot be held by the target schema (the current mapping rejects
/// it), or the key's latest change is in the dead-letter output.
pub fn classify(
    expected: Option<&TargetRecord>,
    stored: Option<&TargetRecord>,
    rejected: bool,
) -> Option<Finding> {
    let live = stored.filter(|s| !s.is_tombstone());
    if rejected {
        return Some(Finding {
            class: DriftClass::SchemaRejection,
            columns: Vec::new(),
            reason: "the key's latest change was rejected by the target schema (see the dead-letter output)".into(),
        });
    }
    match (expected, live) {
        (None, None) => None,
        (Some(e), None) => Some(Finding {
            class: DriftClass::Missing,
            columns: Vec::new(),
            reason: match stored {
                Some(t) => format!(
                    "the source has the row; the target holds a tombstone at version {} ({} at {})",
                    t.lineage.version, t.lineage.op, t.lineage.position
                ),
                None => format!(
                    "the source has the row (digest {}); the target has no record of the key",
                    e.lineage.source_digest
                ),
            },
        }),
        (None, Some(t)) => Some(Finding {
            class: DriftClass::Extra,
            columns: Vec::new(),
            reason: format!(
                "the target has a live row ({} at {}, version {}); the source has none",
                t.lineage.op, t.lineage.position, t.lineage.version
            ),
        }),
        (Some(e), Some(t)) => {
            let columns = match (&e.columns, &t.columns) {
                (Some(a), Some(b)) => differing_columns(a, b),
                _ => Vec::new(),
            };
            if t.lineage.source_digest != e.lineage.source_digest {
                return Some(Finding {
                    class: DriftClass::Stale,
                    columns,
                    reason: format!(
                        "the target row was made from another source image ({} at {}): a source change never reached the target",
                        t.lineage.op, t.lineage.position
                    ),
                });
            }
            if t.lineage.transform_version != e.lineage.transform_version {
                return Some(Finding {
                    class: DriftClass::TransformSkew,
                    columns,
                    reason: format!(
                        "written by transform version {}, the current mapping is {}",
                        t.lineage.transform_version, e.lineage.transform_version
                    ),
                });
            }
            if !columns.is_empty() {
                return Some(Finding {
                    class: DriftClass::ValueMismatch,
                    columns,
                    reason: "same source row and mapping, yet the target content differs: edited out of band, or the transform is not deterministic".into(),
                });
            }
            None
        }
    }
}

/// One cluster of the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cluster {
    pub count: u64,
    pub examples: Vec<String>,
}

/// Drift clustered by (table, class, columns): 50,000 mismatches read as a few lines.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub clusters: BTreeMap<(String, DriftClass, String), Cluster>,
    pub compared: BTreeMap<String, u64>,
    /// How each invariant came out, in the order evaluated.
    pub invariants: Vec<tidemark_transform::Verdict>,
}

impl Summary {
    pub const EXAMPLES: usize = 3;

    pub fn add(&mut self, table: &str, class: DriftClass, columns: &[DriftColumn], key: &str) {
        let cols: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        let c = self
            .clusters
            .entry((table.to_string(), class, cols.join(",")))
            .or_default();
        c.count += 1;
        if c.examples.len() < Self::EXAMPLES {
            c.examples.push(key.to_string());
        }
    }

    pub fn count_compared(&mut self, table: &str, n: u64) {
        *self.compared.entry(table.to_string()).or_default() += n;
    }

    pub fn actionable(&self) -> u64 {
        self.clusters
            .iter()
            .filter(|((_, class, _), _)| class.actionable())
            .map(|(_, c)| c.count)
            .sum()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let compared: u64 = self.compared.values().sum();
        out.push_str(&format!(
            "compared {compared} rows in {} tables\n",
            self.compared.len()
        ));
        for v in &self.invariants {
            out.push_str(&v.render(Self::EXAMPLES));
        }
        if self.clusters.is_empty() {
            out.push_str("no drift\n");
            return out;
        }
        for ((table, class, cols), c) in &self.clusters {
            let cols = if cols.is_empty() {
                String::new()
            } else {
                format!(" [{cols}]")
            };
            out.push_str(&format!(
                "{table} {}{cols}: {} {}{}, e.g. {}\n",
                class.as_str(),
                c.count,
                if *class == DriftClass::InvariantViolation {
                    "groups"
                } else {
                    "keys"
                },
                if class.actionable() {
                    ""
                } else {
                    " (not actionable)"
                },
                c.examples.join(" ")
            ));
        }
        out.push_str(&format!("actionable drift: {} keys\n", self.actionable()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_schemas::{Lineage, Operation};

    fn record(v: i64, digest: &str, tv: &str, cols: Option<Row>) -> TargetRecord {
        TargetRecord {
            table: "t".into(),
            key: Row(vec![("id".into(), Value::Int(1))]),
            columns: cols,
            lineage: Lineage {
                source_server: "s".into(),
                source_table: "d.t".into(),
                source_key: r#"{"id":1}"#.into(),
                position: "mysql-bin.000001:4".into(),
                gtid: None,
                version: v,
                op: Operation::Insert,
                commit_time_us: 0,
                transform_name: "identity".into(),
                transform_version: tv.into(),
                source_digest: digest.into(),
                chunk: None,
            },
        }
    }

    fn row(x: i64) -> Row {
        Row(vec![
            ("id".into(), Value::Int(1)),
            ("x".into(), Value::Int(x)),
        ])
    }

    #[test]
    fn every_class_has_its_case() {
        let e = record(0, "d1", "v1", Some(row(1)));
        assert_eq!(
            classify(Some(&e), None, false).unwrap().class,
            DriftClass::Missing
        );
        let tomb = record(5, "", "v1", None);
        assert_eq!(
            classify(Some(&e), Some(&tomb), false).unwrap().class,
            DriftClass::Missing
        );
        assert_eq!(
            classify(None, Some(&e), false).unwrap().class,
            DriftClass::Extra
        );
        assert!(
            classify(None, Some(&tomb), false).is_none(),
            "a tombstone for a gone row is fine"
        );
        let stale = record(5, "d0", "v1", Some(row(0)));
        let f = classify(Some(&e), Some(&stale), false).unwrap();
        assert_eq!(f.class, DriftClass::Stale);
        assert_eq!(f.columns[0].name, "x");
        let skew = record(5, "d1", "v0", Some(row(1)));
        assert_eq!(
            classify(Some(&e), Some(&skew), false).unwrap().class,
            DriftClass::TransformSkew
        );
        let edited = record(5, "d1", "v1", Some(row(9)));
        let f = classify(Some(&e), Some(&edited), false).unwrap();
        assert_eq!(f.class, DriftClass::ValueMismatch);
        assert_eq!(
            f.columns,
            vec![DriftColumn {
                name: "x".into(),
                source: Some("1".into()),
                target: Some("9".into())
            }]
        );
        assert_eq!(
            classify(Some(&e), None, true).unwrap().class,
            DriftClass::SchemaRejection
        );
        let same = record(5, "d1", "v1", Some(row(1)));
        assert!(classify(Some(&e), Some(&same), false).is_none());
    }

    #[test]
    fn summary_clusters_many_keys_into_few_lines() {
        let mut s = Summary::default();
        let cols = vec![DriftColumn {
            name: "x".into(),
            source: None,
            target: None,
        }];
        for i in 0..100_000 {
            s.add(
                "t",
                DriftClass::ValueMismatch,
                &cols,
                &format!("{{\"id\":{i}}}"),
            );
        }
        s.add("t", DriftClass::Missing, &[], "{\"id\":-1}");
        s.count_compared("t", 100_001);
        let text = s.render();
        assert!(text.lines().count() <= 5, "{text}");
        assert!(text.contains("t value_mismatch [x]: 100000 keys"), "{text}");
        assert_eq!(s.actionable(), 100_001);
    }
}
