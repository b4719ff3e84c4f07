//! [`Transformer`] (all mappings of a configuration) and [`TablePlan`] (one source table's
//! compiled mapping), and the canonical form that `transform_version` hashes.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;
use tidemark_schemas::{
    BinlogPosition, ChangeEvent, ColumnName, Lineage, Row, SourceSchema, TableId, TargetColumn,
    TargetRecord, TargetSchema, TargetType, Ustr, Value,
};

use crate::config::{MappingConfig, ZeroDates};
use crate::convert::{convert, convertible, injective, moves_unchanged, Fail};
use crate::error::{clip, ConfigError, Rejection, RejectionClass, RejectionKind};
use crate::eval::{unknown_column, CExpr, CPred, Columns, Ctx, Input};
use crate::syntax::render_type;
use crate::{source_digest, target_type_for, transform_version};

/// Prefix of the columns and tables sinks add (`_tm_version`, `_tm_checkpoints`, …).
pub const RESERVED_PREFIX: &str = "_tm_";

/// Name stamped in lineage for tables without a mapping.
pub const IDENTITY_NAME: &str = "identity";

/// One validated `[[mapping]]`, with its canonical form and version.
#[derive(Debug, Clone)]
struct Mapping {
    config: MappingConfig,
    source: TableId,
    target: String,
    name: String,
    canonical: String,
    version: String,
}

/// The mappings of a configuration: an explicit mapping per listed source table, the identity
/// mapping for every other table.
#[derive(Debug, Clone)]
pub struct Transformer {
    mappings: BTreeMap<TableId, Mapping>,
    identity_zero_dates: ZeroDates,
    identity_canonical: String,
    identity_version: String,
}

fn identity_canonical(zero_dates: ZeroDates) -> String {
    #[derive(Serialize)]
    struct Identity {
        identity: bool,
        zero_dates: &'static str,
    }
    serde_json::to_string(&Identity {
        identity: true,
        zero_dates: zero_dates.as_str(),
    })
    .expect("the identity form serializes")
}

/// Unicode versions of the tables behind `lower`, `upper`, `trim` and `substring`.
pub fn unicode_versions() -> String {
    let (a, b, c) = char::UNICODE_VERSION;
    let (x, y, z) = unicode_segmentation::UNICODE_VERSION;
    format!("case {a}.{b}.{c}, segmentation {x}.{y}.{z}")
}

/// The canonical form of a mapping: a normalized struct whose JSON is hashed.
///
/// Maps are `BTreeMap`s and sets `BTreeSet`s (sorted), defaults are filled in, empty settings
/// are left out, types and expressions are their canonical texts. Field order is the struct's.
#[derive(Serialize)]
struct Canonical<'a> {
    source: String,
    target: &'a str,
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    drop: BTreeSet<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    columns: BTreeMap<&'a str, CanonicalColumn>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    computed: BTreeMap<&'a str, CanonicalComputed>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filter: Option<String>,
    zero_dates: &'static str,
    /// Present only when an expression depends on Unicode tables, so a toolchain whose tables
    /// differ yields a different version for exactly the mappings it could affect.
    #[serde(skip_serializing_if = "Option::is_none")]
    unicode: Option<String>,
}

#[derive(Serialize)]
struct CanonicalColumn {
    #[serde(skip_serializing_if = "Option::is_none")]
    rename: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    ty: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nullable: Option<bool>,
}

#[derive(Serialize)]
struct CanonicalComputed {
    expr: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    ty: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nullable: Option<bool>,
}

/// The canonical JSON of a mapping (what its `transform_version` hashes).
///
/// Formatting never reaches it. An explicit setting equal to today's default (a `type` equal to
/// the source column's lossless type, a `nullable` equal to the source's, a `key` equal to the
/// source key) does: it pins the behaviour across future DDL, so it is part of the meaning.
/// Defaults that cannot change (`zero_dates = "reject"`, `target` = the source table's name, an
/// empty `drop`, a `rename` to the same name) are normalized away.
pub fn canonical_form(m: &MappingConfig) -> String {
    let source = m.source.trim().to_string();
    let target = m
        .target
        .as_deref()
        .unwrap_or_else(|| source.rsplit('.').next().unwrap_or(&source));
    let columns = m
        .columns
        .iter()
        .filter_map(|(name, c)| {
            let col = CanonicalColumn {
                rename: c.rename.clone().filter(|r| r != name),
                ty: c.ty.as_ref().map(ToString::to_string),
                nullable: c.nullable,
            };
            let empty = col.rename.is_none() && col.ty.is_none() && col.nullable.is_none();
            (!empty).then_some((name.as_str(), col))
        })
        .collect();
    let computed = m
        .computed
        .iter()
        .map(|(name, c)| {
            (
                name.as_str(),
                CanonicalComputed {
                    expr: c.expr.to_string(),
                    ty: c.ty.as_ref().map(ToString::to_string),
                    nullable: c.nullable,
                },
            )
        })
        .collect();
    let unicode = m.computed.values().any(|c| c.expr.0.uses_unicode_tables())
        || m.filter.as_ref().is_some_and(|f| f.0.uses_unicode_tables());
    let canonical = Canonical {
        source: source.clone(),
        target,
        drop: m.drop.iter().map(String::as_str).collect(),
        columns,
        computed,
        key: m.key.as_deref(),
        filter: m.filter.as_ref().map(ToString::to_string),
        zero_dates: m.zero_dates.as_str(),
        unicode: unicode.then(unicode_versions),
    };
    serde_json::to_string(&canonical).expect("the canonical form serializes")
}

fn check_name(mapping: &str, setting: &str, name: &str, what: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::new(
            mapping,
            setting,
            format!("the {what} must not be empty"),
        ));
    }
    if name.starts_with(RESERVED_PREFIX) {
        return Err(ConfigError::new(
            mapping,
            setting,
            format!(
                "`{name}`: names starting with `{RESERVED_PREFIX}` are reserved for tidemark's lineage columns and tables"
            ),
        ));
    }
    Ok(())
}

impl Mapping {
    fn new(index: usize, config: &MappingConfig) -> Result<Mapping, ConfigError> {
        let source: TableId = config
            .source
            .trim()
            .parse()
            .map_err(|e: String| ConfigError::new(format!("mapping[{index}]"), "source", e))?;
        let m = source.to_string();
        let target = config
            .target
            .clone()
            .unwrap_or_else(|| source.table.to_string());
        check_name(&m, "target", &target, "target table name")?;
        let mut dropped = BTreeSet::new();
        for d in &config.drop {
            if !dropped.insert(d) {
                return Err(ConfigError::new(
                    &m,
                    "drop",
                    format!("`{d}` is listed twice"),
                ));
            }
            if config.columns.contains_key(d) {
                return Err(ConfigError::new(
                    &m,
                    format!("columns.{d}"),
                    format!("`{d}` is also in `drop`; a dropped column has no target settings"),
                ));
            }
        }
        for (name, c) in &config.columns {
            if let Some(r) = &c.rename {
                check_name(&m, &format!("columns.{name}.rename"), r, "new name")?;
            }
        }
        for name in config.computed.keys() {
            check_name(
                &m,
                &format!("computed.{name}"),
                name,
                "computed column name",
            )?;
        }
        if let Some(key) = &config.key {
            if key.is_empty() {
                return Err(ConfigError::new(
                    &m,
                    "key",
                    "the key must name at least one column (leave `key` out to keep the source key)",
                ));
            }
            for (i, k) in key.iter().enumerate() {
                if key[..i].contains(k) {
                    return Err(ConfigError::new(
                        &m,
                        "key",
                        format!("`{k}` is listed twice"),
                    ));
                }
            }
        }
        let canonical = canonical_form(config);
        Ok(Mapping {
            version: transform_version(&canonical),
            name: format!("mapping:{source}"),
            canonical,
            target,
            source,
            config: config.clone(),
        })
    }
}

impl Default for Transformer {
    fn default() -> Self {
        Transformer::identity()
    }
}

impl Transformer {
    /// The identity mapping for every table: same names, same columns, lossless types, zero
    /// dates kept (the embedded SQLite target stores dates as their canonical text).
    pub fn identity() -> Self {
        Transformer::with_identity(BTreeMap::new(), ZeroDates::Keep)
    }

    fn with_identity(mappings: BTreeMap<TableId, Mapping>, zero_dates: ZeroDates) -> Self {
        let identity_canonical = identity_canonical(zero_dates);
        Transformer {
            mappings,
            identity_zero_dates: zero_dates,
            identity_version: transform_version(&identity_canonical),
            identity_canonical,
        }
    }

    /// The mappings of a configuration (`[[mapping]]` entries); other tables use the identity.
    /// Checks everything that needs no source table: source names, duplicates, reserved names,
    /// two mappings into one target table.
    pub fn new(configs: &[MappingConfig]) -> Result<Self, ConfigError> {
        let mut mappings: BTreeMap<TableId, Mapping> = BTreeMap::new();
        let mut targets: BTreeMap<String, TableId> = BTreeMap::new();
        for (i, config) in configs.iter().enumerate() {
            let m = Mapping::new(i, config)?;
            if mappings.contains_key(&m.source) {
                return Err(ConfigError::new(
                    m.source.to_string(),
                    "source",
                    format!(
                        "mapping[{i}] is a second mapping for this table; keep one mapping per source table"
                    ),
                ));
            }
            if let Some(other) = targets.insert(m.target.clone(), m.source) {
                return Err(ConfigError::new(
                    m.source.to_string(),
                    "target",
                    format!(
                        "`{}` is also the target of the mapping for {other}; two source tables cannot share a target table",
                        m.target
                    ),
                ));
            }
            mappings.insert(m.source, m);
        }
        Ok(Transformer::with_identity(mappings, ZeroDates::Keep))
    }

    /// The zero-date policy of the identity mapping (default `keep`, right for targets that
    /// store dates as text; a target with a native date type wants `reject` or `null`).
    pub fn with_identity_zero_dates(self, zero_dates: ZeroDates) -> Self {
        Transformer::with_identity(self.mappings, zero_dates)
    }

    /// Source tables that have an explicit mapping.
    pub fn mapped_tables(&self) -> impl Iterator<Item = &TableId> {
        self.mappings.keys()
    }

    /// The target table `table` is written to: its mapping's `target`, or its own name.
    pub fn target_table(&self, table: &TableId) -> String {
        self.mappings
            .get(table)
            .map_or_else(|| table.table.to_string(), |m| m.target.clone())
    }

    /// Refuse a scope in which two source tables would be written to one target table (e.g.
    /// `shop_eu.orders` and `shop_us.orders` under the identity mapping): their rows would
    /// replace and delete each other's by key. The error names both tables and the mapping that
    /// separates them.
    pub fn check_distinct_targets(&self, tables: &[TableId]) -> Result<(), ConfigError> {
        let mut seen: BTreeMap<String, TableId> = BTreeMap::new();
        for table in tables {
            let target = self.target_table(table);
            if let Some(first) = seen.insert(target.clone(), *table) {
                // Name the table without an explicit mapping (the one to give its own target).
                let (keep, separate) = if self.mappings.contains_key(table) {
                    (*table, first)
                } else {
                    (first, *table)
                };
                return Err(ConfigError::new(
                    separate.to_string(),
                    "target",
                    format!(
                        "{keep} and {separate} would both be written to the target table `{target}`, where rows of one would replace and delete rows of the other with the same key; give one its own target table:\n[[mapping]]\nsource = \"{separate}\"\ntarget = \"{}_{}\"",
                        separate.database, separate.table
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The explicit mapping of a table, if any.
    pub fn mapping(&self, table: &TableId) -> Option<&MappingConfig> {
        self.mappings.get(table).map(|m| &m.config)
    }

    /// The transform name stamped in the lineage of `table`'s records.
    pub fn transform_name(&self, table: &TableId) -> &str {
        self.mappings
            .get(table)
            .map_or(IDENTITY_NAME, |m| m.name.as_str())
    }

    /// The current `transform_version` of `table` (no source schema needed), e.g. for the
    /// reconciler's `transform_skew` check.
    pub fn transform_version(&self, table: &TableId) -> &str {
        self.mappings
            .get(table)
            .map_or(self.identity_version.as_str(), |m| m.version.as_str())
    }

    /// The canonical form `transform_version` hashes, for `table`.
    pub fn canonical_form(&self, table: &TableId) -> &str {
        self.mappings
            .get(table)
            .map_or(self.identity_canonical.as_str(), |m| m.canonical.as_str())
    }

    /// Compile the mapping of `schema.table` against the table's description. Call it when a
    /// table is first seen and again after each change of its description.
    pub fn plan(&self, schema: &SourceSchema) -> Result<TablePlan, ConfigError> {
        match self.mappings.get(&schema.table) {
            Some(m) => compile(m, schema),
            None => identity_plan(
                schema,
                self.identity_zero_dates,
                &self.identity_canonical,
                &self.identity_version,
            ),
        }
    }

    /// The target table of a source table (a convenience over [`Transformer::plan`]).
    pub fn target_schema(&self, schema: &SourceSchema) -> Result<TargetSchema, ConfigError> {
        Ok(self.plan(schema)?.target_schema().clone())
    }
}

/// Where a target column's value comes from.
#[derive(Debug, Clone)]
enum ColumnSource {
    /// A source column, by position.
    Column { index: usize },
    /// A computed expression, with its canonical text.
    Computed { expr: CExpr, text: String },
}

#[derive(Debug, Clone)]
struct PlanColumn {
    name: ColumnName,
    ty: TargetType,
    nullable: bool,
    source: ColumnSource,
}

impl PlanColumn {
    fn type_text(&self) -> String {
        format!(
            "{}{}",
            render_type(&self.ty),
            if self.nullable { "" } else { " not null" }
        )
    }
}

/// One source table's compiled mapping: its target schema, and how each change becomes a
/// target record or a rejection.
#[derive(Debug, Clone)]
pub struct TablePlan {
    source: SourceSchema,
    source_names: Vec<ColumnName>,
    target: TargetSchema,
    /// `target.table`, interned for the records.
    target_table: Ustr,
    transform_name: Ustr,
    transform_version: Ustr,
    canonical: String,
    zero_dates: ZeroDates,
    columns: Vec<PlanColumn>,
    /// Positions in `columns` of the target key, in key order.
    key: Vec<usize>,
    filter: Option<(CPred, String)>,
    dropped: Vec<String>,
    identity: bool,
    /// Every target column is a source column, each source column used once, and no filter
    /// reads the row: [`TablePlan::apply_owned`] may move values out of the source row.
    moves_values: bool,
    /// Also, the target's columns are the source's, in the source's order (the identity mapping,
    /// renames, type changes): [`TablePlan::apply_owned`] converts the row where it is, and it
    /// becomes the record's row, instead of moving each value into a new one.
    in_place: bool,
    /// `source.table` as lineage spells it (`db.table`), made once rather than for every record.
    source_table_text: Ustr,
}

/// The plans of every shape a table's rows have arrived in, newest first, and the one for a
/// given change: rows keep the shape they were written in (capture decodes each row image as its
/// table map describes it), and a backfill reading today's shape runs beside a capture still
/// reading rows written before a schema change. Each change is transformed by the plan of its own
/// shape, told by its row's column names; a delete (only a key) by the newest.
#[derive(Debug, Default)]
pub struct ShapePlans {
    by_table: BTreeMap<TableId, Vec<TablePlan>>,
}

/// Shapes kept per table: the newest few (a schema change rarely overlaps more than two).
const SHAPES_KEPT: usize = 4;

impl ShapePlans {
    /// Add (or move to the front) the plan of a table's shape.
    pub fn insert(&mut self, plan: TablePlan) {
        let plans = self.by_table.entry(plan.source.table).or_default();
        plans.retain(|p| p.source_names != plan.source_names);
        plans.insert(0, plan);
        plans.truncate(SHAPES_KEPT);
    }

    /// The plan for `change`: the one of its row's shape, else the table's newest.
    pub fn for_change(&self, change: &ChangeEvent) -> Option<&TablePlan> {
        let plans = self.by_table.get(&change.table)?;
        match &change.after {
            Some(row) => plans
                .iter()
                .find(|p| {
                    p.source_names.len() == row.len()
                        && p.source_names
                            .iter()
                            .zip(row.iter())
                            .all(|(a, (b, _))| a == b)
                })
                .or_else(|| plans.first()),
            None => plans.first(),
        }
    }
}

/// The lineage text of `position`, made once for a run of changes at one position (a rows
/// event's rows, a backfill chunk's) and shared by their records.
fn position_text(position: &BinlogPosition) -> Arc<str> {
    thread_local! {
        static LAST: RefCell<Option<(BinlogPosition, Arc<str>)>> = const { RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((at, text)) if at == position => Arc::clone(text),
        _ => {
            let text: Arc<str> = position.text().into();
            *last = Some((*position, Arc::clone(&text)));
            text
        }
    })
}

fn identity_plan(
    schema: &SourceSchema,
    zero_dates: ZeroDates,
    canonical: &str,
    version: &str,
) -> Result<TablePlan, ConfigError> {
    let mapping = format!("{} (identity)", schema.table);
    if schema.key.is_empty() {
        return Err(ConfigError::new(
            mapping,
            "key",
            "the source table has no primary key or unique NOT NULL key; add one, or map the table with an explicit key",
        ));
    }
    let columns = schema
        .columns
        .iter()
        .enumerate()
        .map(|(index, c)| {
            let ty = target_type_for(&c.ty);
            let is_key = schema.key.contains(&index);
            PlanColumn {
                nullable: c.nullable
                    || (!is_key && zero_dates == ZeroDates::Null && is_dateish(&ty)),
                name: c.name,
                ty,
                source: ColumnSource::Column { index },
            }
        })
        .collect();
    Ok(TablePlan::assemble(
        schema,
        schema.table.table.to_string(),
        IDENTITY_NAME.to_string(),
        version.to_string(),
        canonical.to_string(),
        zero_dates,
        columns,
        schema.key.clone(),
        None,
        Vec::new(),
        true,
    ))
}

/// Whether `row` holds exactly the columns `names`, in that order (the row image of the table
/// description the plan was compiled for).
fn in_table_order(row: &Row, names: &[ColumnName]) -> bool {
    row.len() == names.len() && row.0.iter().zip(names).all(|((n, _), name)| n == name)
}

fn is_dateish(ty: &TargetType) -> bool {
    matches!(
        ty,
        TargetType::Date | TargetType::DateTime { .. } | TargetType::Timestamp { .. }
    )
}

fn compile(m: &Mapping, schema: &SourceSchema) -> Result<TablePlan, ConfigError> {
    let cfg = &m.config;
    let name = m.source.to_string();
    let err = |setting: String, message: String| ConfigError::new(&name, setting, message);
    let ctx = Ctx {
        columns: Columns::Source(schema),
        zero_dates: cfg.zero_dates,
    };
    if schema.key.is_empty() {
        return Err(err(
            "key".into(),
            "the source table has no primary key or unique NOT NULL key, so deletes cannot be mapped".into(),
        ));
    }
    for col in cfg.columns.keys() {
        if schema.column(col).is_none() {
            return Err(err(format!("columns.{col}"), unknown_column(schema, col)));
        }
    }
    for col in &cfg.drop {
        if schema.column(col).is_none() {
            return Err(err("drop".into(), unknown_column(schema, col)));
        }
    }

    let mut columns: Vec<PlanColumn> = Vec::new();
    for (index, sc) in schema.columns.iter().enumerate() {
        if cfg.drop.iter().any(|d| *d == sc.name) {
            continue;
        }
        let settings = cfg
            .columns
            .get(sc.name.as_str())
            .cloned()
            .unwrap_or_default();
        let from = target_type_for(&sc.ty);
        let ty = match &settings.ty {
            Some(spec) => {
                convertible(&from, &spec.0).map_err(|e| {
                    err(
                        format!("columns.{}.type", sc.name),
                        format!("{e} (source column {} is {})", sc.name, sc.column_type),
                    )
                })?;
                spec.0.clone()
            }
            None => from,
        };
        let nullable = settings
            .nullable
            .unwrap_or(sc.nullable || (cfg.zero_dates == ZeroDates::Null && is_dateish(&ty)));
        columns.push(PlanColumn {
            name: settings.rename.as_deref().map_or(sc.name, ColumnName::from),
            ty,
            nullable,
            source: ColumnSource::Column { index },
        });
    }
    for (cname, c) in &cfg.computed {
        let setting = format!("computed.{cname}.expr");
        let (expr, typed) = ctx.expr(&c.expr.0).map_err(|e| err(setting, e))?;
        let ty = match &c.ty {
            Some(spec) => {
                convertible(&typed.ty, &spec.0).map_err(|e| {
                    err(
                        format!("computed.{cname}.type"),
                        format!("{e} (the expression yields {})", render_type(&typed.ty)),
                    )
                })?;
                spec.0.clone()
            }
            None => typed.ty,
        };
        let nullable = c
            .nullable
            .unwrap_or(typed.nullable || (cfg.zero_dates == ZeroDates::Null && is_dateish(&ty)));
        columns.push(PlanColumn {
            name: ColumnName::from(cname),
            ty,
            nullable,
            source: ColumnSource::Computed {
                expr,
                text: c.expr.to_string(),
            },
        });
    }
    for (i, c) in columns.iter().enumerate() {
        if let Some(prev) = columns[..i].iter().find(|p| p.name == c.name) {
            let origin = |p: &PlanColumn| match &p.source {
                ColumnSource::Column { index } => {
                    format!("source column {}", schema.columns[*index].name)
                }
                ColumnSource::Computed { .. } => format!("computed column {}", p.name),
            };
            return Err(err(
                "columns".into(),
                format!(
                    "two target columns are named `{}`: {} and {}; rename one",
                    c.name,
                    origin(prev),
                    origin(c)
                ),
            ));
        }
    }

    let key = plan_key(cfg, schema, &columns, &name)?;
    let filter = match &cfg.filter {
        Some(f) => Some((
            ctx.pred(&f.0).map_err(|e| err("filter".into(), e))?,
            f.to_string(),
        )),
        None => None,
    };
    Ok(TablePlan::assemble(
        schema,
        m.target.clone(),
        m.name.clone(),
        m.version.clone(),
        m.canonical.clone(),
        cfg.zero_dates,
        columns,
        key,
        filter,
        cfg.drop.clone(),
        false,
    ))
}

/// Resolve and check the target key (see [`MappingConfig::key`]).
fn plan_key(
    cfg: &MappingConfig,
    schema: &SourceSchema,
    columns: &[PlanColumn],
    mapping: &str,
) -> Result<Vec<usize>, ConfigError> {
    let err = |message: String| ConfigError::new(mapping, "key", message);
    let key_names: Vec<String> = match &cfg.key {
        Some(k) => k.clone(),
        None => {
            let mut names = Vec::new();
            for &i in &schema.key {
                let sc = &schema.columns[i];
                let target = columns
                    .iter()
                    .find(|c| matches!(c.source, ColumnSource::Column { index } if index == i));
                match target {
                    Some(c) => names.push(c.name.to_string()),
                    None => {
                        return Err(ConfigError::new(
                            mapping,
                            "drop",
                            format!(
                                "`{}` belongs to the source key ({}); it cannot be dropped unless `key` names a target key built from the source key",
                                sc.name, schema.key_name
                            ),
                        ))
                    }
                }
            }
            names
        }
    };
    let source_key_names: Vec<&str> = schema
        .key
        .iter()
        .map(|&i| schema.columns[i].name.as_str())
        .collect();
    let mut key = Vec::new();
    let mut covered = BTreeSet::new();
    for k in &key_names {
        let pos = columns.iter().position(|c| c.name == k).ok_or_else(|| {
            let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            err(format!(
                "`{k}` is not a target column; the target columns are {}",
                names.join(", ")
            ))
        })?;
        let c = &columns[pos];
        if c.nullable {
            return Err(err(format!(
                "key column `{k}` is nullable; a key column must be NOT NULL (set nullable = false, or pick another column)"
            )));
        }
        match &c.source {
            ColumnSource::Column { index } => {
                let sc = &schema.columns[*index];
                if !schema.key.contains(index) {
                    return Err(err(format!(
                        "key column `{k}` comes from `{}`, which is not in the source key ({}: {}); a delete carries only the source key, so the target row could not be found",
                        sc.name,
                        schema.key_name,
                        source_key_names.join(", ")
                    )));
                }
                if !injective(&target_type_for(&sc.ty), &c.ty) {
                    return Err(err(format!(
                        "key column `{k}`: converting {} to {} can map different source keys to one target key",
                        sc.column_type,
                        render_type(&c.ty)
                    )));
                }
                covered.insert(*index);
            }
            ColumnSource::Computed { .. } => {
                let cfg_expr = &cfg.computed[k].expr.0;
                let mut used = Vec::new();
                cfg_expr.columns(&mut used);
                if let Some(bad) = used.iter().find(|u| !source_key_names.contains(u)) {
                    return Err(err(format!(
                        "key column `{k}` reads `{bad}`, which is not in the source key ({}: {}); a delete carries only the source key",
                        schema.key_name,
                        source_key_names.join(", ")
                    )));
                }
            }
        }
        key.push(pos);
    }
    if let Some(missing) = schema.key.iter().find(|i| !covered.contains(*i)) {
        return Err(err(format!(
            "the target key must contain every source key column ({}), unchanged or converted, so that two source rows never share a target key; `{}` is missing",
            source_key_names.join(", "),
            schema.columns[*missing].name
        )));
    }
    Ok(key)
}

/// Which record a change became, for counters and explanations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A row for the target.
    Row,
    /// A tombstone for a deleted source row.
    Deleted,
    /// A tombstone because the row does not pass the mapping's filter.
    Filtered,
}

impl TablePlan {
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        schema: &SourceSchema,
        target_table: String,
        transform_name: String,
        transform_version: String,
        canonical: String,
        zero_dates: ZeroDates,
        columns: Vec<PlanColumn>,
        key: Vec<usize>,
        filter: Option<(CPred, String)>,
        dropped: Vec<String>,
        identity: bool,
    ) -> TablePlan {
        let target = TargetSchema {
            table: target_table,
            columns: columns
                .iter()
                .map(|c| TargetColumn {
                    name: c.name,
                    ty: c.ty.clone(),
                    nullable: c.nullable,
                })
                .collect(),
            key: key.iter().map(|&i| columns[i].name).collect(),
        };
        let mut used = BTreeSet::new();
        let moves_values = filter.is_none()
            && columns.iter().all(|c| match c.source {
                ColumnSource::Column { index } => used.insert(index),
                ColumnSource::Computed { .. } => false,
            });
        let in_place = moves_values
            && columns.len() == schema.columns.len()
            && columns
                .iter()
                .enumerate()
                .all(|(i, c)| matches!(c.source, ColumnSource::Column { index } if index == i));
        TablePlan {
            moves_values,
            in_place,
            source_table_text: Ustr::from(&schema.table.to_string()),
            source_names: schema.columns.iter().map(|c| c.name).collect(),
            source: schema.clone(),
            target_table: Ustr::from(&target.table),
            target,
            transform_name: Ustr::from(&transform_name),
            transform_version: Ustr::from(&transform_version),
            canonical,
            zero_dates,
            columns,
            key,
            filter,
            dropped,
            identity,
        }
    }

    /// The source table this plan was compiled for.
    pub fn source(&self) -> &SourceSchema {
        &self.source
    }

    /// For each source key column, the target key column that holds it (unchanged or converted
    /// one to one, as the mapping rules require), in source key order: how a target key is
    /// traced back to the source key it must come from.
    pub fn source_key_in_target(&self) -> Vec<(ColumnName, ColumnName)> {
        self.source
            .key
            .iter()
            .filter_map(|&i| {
                self.key.iter().find_map(|&k| match self.columns[k].source {
                    ColumnSource::Column { index } if index == i => {
                        Some((self.source.columns[i].name, self.columns[k].name))
                    }
                    _ => None,
                })
            })
            .collect()
    }

    /// The target table: columns with types and nullability, and the key.
    pub fn target_schema(&self) -> &TargetSchema {
        &self.target
    }

    pub fn transform_name(&self) -> &str {
        &self.transform_name
    }

    pub fn transform_version(&self) -> &str {
        &self.transform_version
    }

    /// The canonical form of the mapping that `transform_version` hashes.
    pub fn canonical_form(&self) -> &str {
        &self.canonical
    }

    pub fn is_identity(&self) -> bool {
        self.identity
    }

    pub fn zero_dates(&self) -> ZeroDates {
        self.zero_dates
    }

    /// Transform one change into a target record with lineage, or a rejection.
    ///
    /// A delete becomes a tombstone keyed by the target key derived from the source key; a row
    /// that does not pass the filter becomes a tombstone too (so a row updated out of the filter
    /// leaves the target), recognizable as a tombstone whose `lineage.op` is not `delete` and
    /// whose `lineage.source_digest` is the digest of the filtered row image.
    ///
    /// The rejection is boxed: it carries the full context and is rare, the record is not.
    pub fn apply(&self, change: &ChangeEvent) -> Result<TargetRecord, Box<Rejection>> {
        self.apply_with_outcome(change).map(|(record, _)| record)
    }

    /// [`TablePlan::apply`] of a change the caller gives away. Where the plan copies a source
    /// column unchanged (the identity mapping, a rename), its text moves into the record instead
    /// of being copied and the original freed. The record or rejection is the same as
    /// [`TablePlan::apply`]'s: a value that fails is still in the row when it is reported.
    pub fn apply_owned(&self, mut change: ChangeEvent) -> Result<TargetRecord, Box<Rejection>> {
        let movable = self.moves_values
            && change.table == self.source.table
            && change
                .after
                .as_ref()
                .is_some_and(|row| in_table_order(row, &self.source_names));
        if !movable {
            return self.apply(&change);
        }
        let lineage = self.lineage_owned(&mut change);
        let mut values = change.after.take().expect("checked above").0;
        if self.in_place {
            for (col, (name, slot)) in self.columns.iter().zip(values.iter_mut()) {
                if !moves_unchanged(slot, &col.ty) {
                    // A value that fails is still in its slot when the rejection reports it.
                    *slot = self.converted(col, slot, &lineage)?;
                }
                *name = col.name;
            }
            return Ok(self.row_record(Row(values), lineage));
        }
        let mut out = Row(Vec::with_capacity(self.columns.len()));
        for col in &self.columns {
            let ColumnSource::Column { index } = col.source else {
                unreachable!("a plan that moves values has only source columns")
            };
            let slot = &mut values[index].1;
            let value = if moves_unchanged(slot, &col.ty) {
                std::mem::replace(slot, Value::Null)
            } else {
                self.converted(col, slot, &lineage)?
            };
            out.0.push((col.name, value));
        }
        Ok(self.row_record(out, lineage))
    }

    /// The record of the target row `out`, keyed by its key columns.
    fn row_record(&self, out: Row, lineage: Lineage) -> TargetRecord {
        TargetRecord {
            table: self.target_table,
            key: Row(self.key.iter().map(|&i| out.0[i].clone()).collect()),
            columns: Some(out),
            lineage,
        }
    }

    /// The lineage of the record made from `change`.
    fn lineage(&self, change: &ChangeEvent) -> Lineage {
        Lineage {
            gtid: change.gtid.clone(),
            chunk: change.chunk.clone(),
            ..self.lineage_of_image(change)
        }
    }

    /// [`TablePlan::lineage`], moving the texts it shares with `change` out of it.
    fn lineage_owned(&self, change: &mut ChangeEvent) -> Lineage {
        Lineage {
            gtid: change.gtid.take(),
            chunk: change.chunk.take(),
            ..self.lineage_of_image(change)
        }
    }

    /// The lineage of `change` but for the texts it carries as they are (GTID, chunk), which
    /// are left empty.
    fn lineage_of_image(&self, change: &ChangeEvent) -> Lineage {
        Lineage {
            source_server: change.source_server,
            source_table: if change.table == self.source.table {
                self.source_table_text
            } else {
                change.table.to_string().into()
            },
            source_key: change.key.canonical_text(),
            position: position_text(&change.position),
            gtid: None,
            version: change.version,
            op: change.op,
            commit_time_us: change.commit_time_us,
            transform_name: self.transform_name,
            transform_version: self.transform_version,
            source_digest: change.after.as_ref().map(source_digest).unwrap_or_default(),
            chunk: None,
        }
    }

    /// [`TablePlan::apply`], also saying which kind of record the change became.
    pub fn apply_with_outcome(
        &self,
        change: &ChangeEvent,
    ) -> Result<(TargetRecord, Outcome), Box<Rejection>> {
        let lineage = self.lineage(change);
        if change.table != self.source.table {
            let fail = Fail::new(
                RejectionKind::SchemaMismatch,
                format!(
                    "the change is for {}, but this plan maps {}",
                    change.table, self.source.table
                ),
            );
            return Err(self.reject(&lineage, None, fail, None));
        }
        let tombstone = |key: Row, lineage: Lineage| TargetRecord {
            table: self.target_table,
            key,
            columns: None,
            lineage,
        };
        let row = match &change.after {
            None => {
                let input = Input::resolve(&self.source_names, &change.key);
                let key = self.key_row(&input, &lineage)?;
                return Ok((tombstone(key, lineage), Outcome::Deleted));
            }
            Some(row) => row,
        };
        if row.len() != self.source_names.len() {
            let fail = Fail::new(
                RejectionKind::SchemaMismatch,
                format!(
                    "the row image has {} columns but the table description of {} has {}; the source table changed without a new description",
                    row.len(),
                    self.source.table,
                    self.source_names.len()
                ),
            );
            return Err(self.reject(&lineage, None, fail, None));
        }
        let input = Input::resolve(&self.source_names, row);
        if let Some((filter, _)) = &self.filter {
            let pass = filter
                .eval(&input)
                .map_err(|f| self.reject(&lineage, None, f, None))?;
            if pass != Some(true) {
                let key = self.key_row(&input, &lineage)?;
                return Ok((tombstone(key, lineage), Outcome::Filtered));
            }
        }
        let mut out = Row(Vec::with_capacity(self.columns.len()));
        for col in &self.columns {
            let v = self.column_value(col, &input, &lineage)?;
            out.0.push((col.name, v));
        }
        Ok((self.row_record(out, lineage), Outcome::Row))
    }

    fn key_row(&self, input: &Input<'_>, lineage: &Lineage) -> Result<Row, Box<Rejection>> {
        let mut key = Row(Vec::with_capacity(self.key.len()));
        for &i in &self.key {
            let col = &self.columns[i];
            key.0
                .push((col.name, self.column_value(col, input, lineage)?));
        }
        Ok(key)
    }

    /// One target column's value: read or compute, convert exactly, check nullability.
    fn column_value(
        &self,
        col: &PlanColumn,
        input: &Input<'_>,
        lineage: &Lineage,
    ) -> Result<Value, Box<Rejection>> {
        let computed: Value;
        let raw: &Value = match &col.source {
            ColumnSource::Column { index } => input.get(*index),
            ColumnSource::Computed { expr, .. } => match expr.eval(input) {
                Ok(v) => {
                    computed = v;
                    Ok(&computed)
                }
                Err(f) => Err(f),
            },
        }
        .map_err(|f| self.reject(lineage, Some(col), f, None))?;
        self.converted(col, raw, lineage)
    }

    /// `raw` converted into `col`'s type, or the rejection (a failed conversion, or NULL into a
    /// NOT NULL column).
    fn converted(
        &self,
        col: &PlanColumn,
        raw: &Value,
        lineage: &Lineage,
    ) -> Result<Value, Box<Rejection>> {
        let value = convert(raw, &col.ty, self.zero_dates)
            .map_err(|f| self.reject(lineage, Some(col), f, Some(raw)))?;
        if value.is_null() && !col.nullable {
            let reason = if raw.is_null() {
                "NULL into a NOT NULL column".to_string()
            } else {
                "the invalid date became NULL (zero_dates = \"null\"), but the column is NOT NULL"
                    .to_string()
            };
            let fail = Fail::new(RejectionKind::NullIntoNotNull, reason);
            return Err(self.reject(lineage, Some(col), fail, Some(raw)));
        }
        Ok(value)
    }

    fn reject(
        &self,
        lineage: &Lineage,
        col: Option<&PlanColumn>,
        fail: Fail,
        value: Option<&Value>,
    ) -> Box<Rejection> {
        let value_text = fail
            .value
            .or_else(|| value.filter(|v| !v.is_null()).map(ToString::to_string));
        Box::new(Rejection {
            class: RejectionClass::SchemaRejection,
            kind: fail.kind,
            source_table: self.source.table.to_string(),
            target_table: self.target.table.clone(),
            position: lineage.position.to_string(),
            key: lineage.source_key.clone(),
            column: col.map(|c| c.name.to_string()).unwrap_or_default(),
            source_column: col.and_then(|c| match c.source {
                ColumnSource::Column { index } => Some(self.source_names[index].to_string()),
                ColumnSource::Computed { .. } => None,
            }),
            target_type: col.map(PlanColumn::type_text).unwrap_or_default(),
            value: value_text.map(clip),
            reason: fail.reason,
            lineage: lineage.clone(),
        })
    }

    /// Lines describing each target column: name, type, nullability and origin.
    pub(crate) fn column_lines(&self) -> Vec<[String; 4]> {
        self.columns
            .iter()
            .map(|c| {
                let from = match &c.source {
                    ColumnSource::Column { index } => self.source_names[*index].to_string(),
                    ColumnSource::Computed { text, .. } => format!("= {text}"),
                };
                [
                    c.name.to_string(),
                    render_type(&c.ty),
                    if c.nullable { "null" } else { "not null" }.to_string(),
                    from,
                ]
            })
            .collect()
    }

    pub(crate) fn filter_text(&self) -> Option<&str> {
        self.filter.as_ref().map(|(_, t)| t.as_str())
    }

    pub(crate) fn dropped(&self) -> &[String] {
        &self.dropped
    }
}
