//! The source server: connecting, checking that it can be captured, reading its binlog
//! coordinates and describing its tables from `information_schema`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Row as MyRow};
use serde::Deserialize;
use tidemark_schemas::{
    BinlogPosition, ColumnName, SourceColumn, SourceSchema, SourceType, TableId,
};

use crate::{Error, Result};

/// `[source]`: which server to read and which of its tables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Connection URL, `mysql://user:password@host:port`. The user needs `REPLICATION SLAVE`,
    /// `REPLICATION CLIENT` and `SELECT` on the captured tables.
    pub url: String,
    /// The replica server id tidemark registers with; unique among the source's replicas.
    pub server_id: u32,
    /// Capture every base table of these databases.
    #[serde(default)]
    pub databases: Vec<String>,
    /// Capture these tables (`database.table`), in addition to `databases`.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Leave these tables (`database.table`) out, although `databases` includes them.
    #[serde(default)]
    pub exclude_tables: Vec<String>,
}

/// Which tables are captured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    databases: BTreeSet<String>,
    tables: BTreeSet<TableId>,
    excluded: BTreeSet<TableId>,
}

impl Scope {
    /// The scope a `[source]` section names; an error names the key at fault.
    pub fn from_config(cfg: &SourceConfig) -> Result<Scope> {
        let parse = |key: &str, names: &[String]| {
            names
                .iter()
                .map(|t| {
                    t.parse::<TableId>().map_err(|e: String| Error::Config {
                        key: key.into(),
                        message: e,
                    })
                })
                .collect::<Result<BTreeSet<_>>>()
        };
        let tables = parse("source.tables", &cfg.tables)?;
        let excluded = parse("source.exclude_tables", &cfg.exclude_tables)?;
        if let Some(both) = tables.intersection(&excluded).next() {
            return Err(Error::Config {
                key: "source.exclude_tables".into(),
                message: format!(
                    "{both} is also listed in source.tables; keep it in one of the two"
                ),
            });
        }
        if cfg.databases.is_empty() && tables.is_empty() {
            return Err(Error::Config {
                key: "source.databases".into(),
                message: "name at least one database (source.databases) or table (source.tables) to capture".into(),
            });
        }
        Ok(Scope {
            databases: cfg.databases.iter().cloned().collect(),
            tables,
            excluded,
        })
    }

    pub fn includes(&self, db: &str, table: &str) -> bool {
        let named =
            |set: &BTreeSet<TableId>| set.iter().any(|t| t.database == db && t.table == table);
        (self.databases.contains(db) && !named(&self.excluded)) || named(&self.tables)
    }

    /// Restrict the scope to the given tables (which must be inside it).
    pub fn restrict(&self, only: &[TableId]) -> Result<Scope> {
        for t in only {
            if !self.includes(&t.database, &t.table) {
                return Err(Error::Config {
                    key: "--table".into(),
                    message: format!("table {t} is not in the configured source scope"),
                });
            }
        }
        Ok(Scope {
            databases: BTreeSet::new(),
            tables: only.iter().cloned().collect(),
            excluded: BTreeSet::new(),
        })
    }
}

/// MariaDB and MySQL differ in binlog statements and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    MariaDb,
    MySql,
}

/// What tidemark learned about the source when it connected.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub flavor: Flavor,
    pub version: String,
    /// Stable identity of the server whose binlog this is: `@@server_uuid` on MySQL,
    /// `mariadb-<@@server_id>` on MariaDB (which has no server uuid).
    pub identity: tidemark_schemas::Ustr,
}

/// A connection to the source for metadata and reads (not the binlog stream).
pub struct Source {
    pub(crate) opts: Opts,
    pub(crate) conn: Conn,
    pub info: ServerInfo,
}

impl Source {
    /// Connect and run the preflight checks that capture needs.
    pub async fn connect(url: &str) -> Result<Source> {
        let opts = source_opts(url)?;
        let conn = connect_opts(&opts).await?;
        let mut src = Source {
            opts,
            conn,
            info: ServerInfo {
                flavor: Flavor::MySql,
                version: String::new(),
                identity: String::new().into(),
            },
        };
        src.info = src.read_server_info().await?;
        Ok(src)
    }

    /// A fresh connection with the same options (for a binlog stream or a parallel reader).
    pub async fn new_connection(&self) -> Result<Conn> {
        connect_opts(&self.opts).await
    }

    /// A second `Source` on a fresh connection to the same server (for a reader on its own task).
    pub async fn another(&self) -> Result<Source> {
        Ok(Source {
            opts: self.opts.clone(),
            conn: self.new_connection().await?,
            info: self.info.clone(),
        })
    }

    /// Replace the connection with a fresh one (after the old one was lost, e.g. the server
    /// restarted). The server must still be the same one: binlog positions of another server
    /// mean nothing here.
    pub async fn reconnect(&mut self) -> Result<()> {
        self.conn = self.new_connection().await?;
        let info = self.read_server_info().await?;
        if info.identity != self.info.identity {
            return Err(Error::ServerChanged {
                checkpoint_server: self.info.identity.to_string(),
                current_server: info.identity.to_string(),
            });
        }
        self.info = info;
        Ok(())
    }

    /// The connection itself, for reads such as [`crate::backfill::read_chunk`].
    pub fn conn_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }

    pub fn display_addr(&self) -> String {
        format!("{}:{}", self.opts.ip_or_hostname(), self.opts.tcp_port())
    }

    async fn read_server_info(&mut self) -> Result<ServerInfo> {
        let version: String = self
            .conn
            .query_first("SELECT VERSION()")
            .await?
            .unwrap_or_default();
        let flavor = if version.to_ascii_lowercase().contains("mariadb") {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        };
        let identity = match flavor {
            Flavor::MySql => self
                .conn
                .query_first::<String, _>("SELECT @@server_uuid")
                .await?
                .unwrap_or_default(),
            Flavor::MariaDb => {
                let id: u64 = self
                    .conn
                    .query_first("SELECT @@server_id")
                    .await?
                    .unwrap_or_default();
                format!("mariadb-{id}")
            }
        };
        Ok(ServerInfo {
            flavor,
            version,
            identity: identity.into(),
        })
    }

    /// Check the settings capture depends on; the error names the setting and the fix.
    pub async fn check_binlog_settings(&mut self) -> Result<()> {
        let row: Option<(String, String, String)> = self
            .conn
            .query_first(
                "SELECT CAST(@@log_bin AS CHAR), CAST(@@binlog_format AS CHAR), CAST(@@binlog_row_image AS CHAR)",
            )
            .await?;
        let (log_bin, format, image) = row.unwrap_or_default();
        let addr = self.display_addr();
        let fix = |setting: &str, want: &str, have: &str| {
            Error::Config {
            key: format!("source server setting {setting}"),
            message: format!(
                "the server at {} has {setting}={have}; tidemark needs {setting}={want} (set it in the server's configuration, e.g. `{}={want}` under [mysqld], and restart)",
                addr,
                setting.replace('_', "-")
            ),
        }
        };
        if log_bin != "1" && !log_bin.eq_ignore_ascii_case("on") {
            return Err(fix("log_bin", "ON", &log_bin));
        }
        if !format.eq_ignore_ascii_case("ROW") {
            return Err(fix("binlog_format", "ROW", &format));
        }
        if !image.eq_ignore_ascii_case("FULL") {
            return Err(fix("binlog_row_image", "FULL", &image));
        }
        // Column names in table maps (MariaDB 10.5+, MySQL 8.0.1+): what lets capture decode a
        // row written before a schema change into the right columns. A server without the
        // setting cannot say which column a value of such a row belongs to: refused, never a
        // guess.
        let metadata: Option<String> = self
            .conn
            .query_first("SELECT CAST(@@binlog_row_metadata AS CHAR)")
            .await
            .unwrap_or(None);
        match metadata {
            Some(m) if m.eq_ignore_ascii_case("FULL") => {}
            Some(m) => return Err(fix("binlog_row_metadata", "FULL", &m)),
            None => {
                return Err(Error::Config {
                    key: "source server setting binlog_row_metadata".into(),
                    message: format!(
                        "the server at {addr} ({}) has no binlog_row_metadata setting, so its binlog does not name the columns of a row; tidemark decodes each row by those names (a row written before a column was added, moved or renamed would otherwise land in the wrong columns): use MariaDB 10.5+ or MySQL 8.0.1+ with binlog_row_metadata=FULL",
                        self.info.version
                    ),
                })
            }
        }
        if self.info.flavor == Flavor::MariaDb {
            let compress: Option<String> = self
                .conn
                .query_first("SELECT CAST(@@log_bin_compress AS CHAR)")
                .await
                .unwrap_or(None);
            if let Some(c) = compress {
                if c == "1" || c.eq_ignore_ascii_case("on") {
                    return Err(fix("log_bin_compress", "OFF", &c));
                }
            }
        }
        Ok(())
    }

    /// The current end of the binlog (`SHOW MASTER STATUS`, or `SHOW BINARY LOG STATUS` on
    /// MySQL 8.4+ where the old statement is gone).
    pub async fn end_of_log(&mut self) -> Result<BinlogPosition> {
        let rows: Vec<MyRow> = match self.info.flavor {
            Flavor::MariaDb => self.conn.query("SHOW MASTER STATUS").await?,
            Flavor::MySql => match self.conn.query("SHOW BINARY LOG STATUS").await {
                Ok(rows) => rows,
                Err(_) => self.conn.query("SHOW MASTER STATUS").await?,
            },
        };
        let row = rows.into_iter().next().ok_or_else(|| Error::Config {
            key: "source server setting log_bin".into(),
            message: format!(
                "the server at {} reports no binlog status; is binary logging enabled?",
                self.display_addr()
            ),
        })?;
        let file: String = row.get(0).unwrap_or_default();
        let pos: u64 = row.get(1).unwrap_or_default();
        Ok(BinlogPosition::new(file, pos))
    }

    /// The binlog files the server still has, oldest first.
    pub async fn binlog_files(&mut self) -> Result<Vec<String>> {
        let rows: Vec<MyRow> = self.conn.query("SHOW BINARY LOGS").await?;
        Ok(rows
            .into_iter()
            .map(|r| r.get::<String, _>(0).unwrap_or_default())
            .collect())
    }

    /// The binlog files the server still has with their sizes in bytes, oldest first.
    pub async fn binlog_sizes(&mut self) -> Result<Vec<(String, u64)>> {
        let rows: Vec<MyRow> = self.conn.query("SHOW BINARY LOGS").await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.get::<String, _>(0).unwrap_or_default(),
                    r.get::<u64, _>(1).unwrap_or_default(),
                )
            })
            .collect())
    }

    /// The base tables in scope, sorted. A database of `source.databases`, or a table of
    /// `source.tables` or `source.exclude_tables`, that the server does not have is an error
    /// naming it: a typo must not capture nothing and succeed.
    pub async fn tables_in_scope(&mut self, scope: &Scope) -> Result<Vec<TableId>> {
        let rows: Vec<(String, String)> = self
            .conn
            .query(
                "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
                 WHERE TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_SCHEMA, TABLE_NAME",
            )
            .await?;
        let schemas: BTreeSet<String> = self
            .conn
            .query::<String, _>("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")
            .await?
            .into_iter()
            .collect();
        let existing: BTreeSet<TableId> = rows.iter().map(|(d, t)| TableId::new(d, t)).collect();
        let addr = self.display_addr();
        if let Some(db) = scope.databases.iter().find(|d| !schemas.contains(*d)) {
            return Err(Error::Config {
                key: "source.databases".into(),
                message: format!(
                    "database `{db}` does not exist on the source at {addr} (it has: {}); if it was dropped, remove it from source.databases (a running capture tombstones its rows in the target when it passes the DROP DATABASE)",
                    schemas
                        .iter()
                        .filter(|d| !SYSTEM_SCHEMAS.contains(&d.as_str()))
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        for (key, set) in [
            ("source.tables", &scope.tables),
            ("source.exclude_tables", &scope.excluded),
        ] {
            let missing: Vec<String> = set
                .iter()
                .filter(|t| !existing.contains(*t))
                .map(|t| t.to_string())
                .collect();
            if !missing.is_empty() {
                return Err(Error::Config {
                    key: key.into(),
                    message: format!(
                        "no base table {} on the source at {addr}",
                        missing.join(", ")
                    ),
                });
            }
        }
        Ok(existing
            .into_iter()
            .filter(|t| scope.includes(&t.database, &t.table))
            .collect())
    }

    /// Describe every table of `tables`, or fail with one error listing each table that cannot
    /// be captured (no key, a column type tidemark cannot decode) and the way out: checked
    /// before anything starts, so a run never stops midway on the tenth table.
    pub async fn describe_all(&mut self, tables: &[TableId]) -> Result<Vec<SourceSchema>> {
        let mut schemas = Vec::with_capacity(tables.len());
        let mut problems = Vec::new();
        for table in tables {
            match self.load_schema(table).await {
                Ok(schema) => schemas.push(schema),
                Err(e @ (Error::NoKey { .. } | Error::UnsupportedType { .. })) => {
                    problems.push(e.to_string())
                }
                Err(e) => return Err(e),
            }
        }
        if problems.is_empty() {
            Ok(schemas)
        } else {
            Err(Error::NotCapturable { problems })
        }
    }

    /// Describe one table from `information_schema`.
    pub async fn load_schema(&mut self, table: &TableId) -> Result<SourceSchema> {
        load_schema(&mut self.conn, self.info.flavor, table).await
    }

    /// Whether `table` exists on the source now (dropped or renamed away: no).
    pub async fn table_exists(&mut self, table: &TableId) -> Result<bool> {
        table_exists(&mut self.conn, table).await
    }
}

/// Databases every server has, left out of the list a missing-database error shows.
const SYSTEM_SCHEMAS: &[&str] = &["information_schema", "mysql", "performance_schema", "sys"];

/// Quote an identifier for MySQL.
pub fn quote_ident(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// `SELECT` all columns of `schema` with `tail` (e.g. `WHERE … ORDER BY …`) appended, decoded
/// exactly. Uses the binary protocol: FLOAT arrives as its 4 bytes, not as rounded text.
pub async fn select_rows(
    conn: &mut Conn,
    schema: &SourceSchema,
    tail: &str,
    params: mysql_async::Params,
) -> Result<Vec<tidemark_schemas::Row>> {
    let rows: Vec<MyRow> = conn.exec(select_sql(schema, tail), params).await?;
    rows.into_iter()
        .map(|row| decode_row(schema, row))
        .collect()
}

/// The statement [`select_rows`] runs: every column of `schema`, in schema order, then `tail`.
pub fn select_sql(schema: &SourceSchema, tail: &str) -> String {
    let columns: Vec<String> = schema
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect();
    format!(
        "SELECT {} FROM {}.{} {tail}",
        columns.join(", "),
        quote_ident(&schema.table.database),
        quote_ident(&schema.table.table)
    )
}

/// Decode one result-set row of [`select_sql`] into a row of `schema`; the error names the
/// table and the column.
pub fn decode_row(schema: &SourceSchema, row: MyRow) -> Result<tidemark_schemas::Row> {
    let values = row.unwrap();
    let mut decoded = tidemark_schemas::Row(Vec::with_capacity(values.len()));
    for (col, value) in schema.columns.iter().zip(values) {
        let v = crate::decode::from_mysql(col, value, crate::decode::Origin::ResultSet).map_err(
            |detail| Error::Decode {
                table: schema.table,
                position: BinlogPosition::new("-", 0),
                detail: format!("column {}: {detail}", col.name),
            },
        )?;
        decoded.0.push((col.name, v));
    }
    Ok(decoded)
}

/// Environment variable holding the source password when `source.url` has none (so a password
/// need not be written into a config file or a ConfigMap).
pub const PASSWORD_ENV: &str = "TIDEMARK_SOURCE_PASSWORD";

/// Connection options from the URL, with the password from [`PASSWORD_ENV`] when the URL has none.
pub fn source_opts(url: &str) -> Result<Opts> {
    let opts = Opts::from_url(url).map_err(|e| Error::Config {
        key: "source.url".into(),
        message: format!("{e}"),
    })?;
    match std::env::var(PASSWORD_ENV) {
        Ok(password) if opts.pass().is_none() && !password.is_empty() => {
            Ok(mysql_async::OptsBuilder::from_opts(opts)
                .pass(Some(password))
                .into())
        }
        _ => Ok(opts),
    }
}

/// How long a connection may take from the TCP connect to the end of the MySQL handshake. A
/// peer that accepts the connection but never speaks MySQL (a wrong port: a Kafka broker, a
/// proxy whose backend is down) would otherwise hold tidemark forever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) async fn connect_opts(opts: &Opts) -> Result<Conn> {
    connect_within(opts, HANDSHAKE_TIMEOUT).await
}

async fn connect_within(opts: &Opts, limit: Duration) -> Result<Conn> {
    let addr = format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port());
    let mut conn = match tokio::time::timeout(limit, Conn::new(opts.clone())).await {
        Ok(conn) => conn.map_err(|e| Error::Connect {
            addr,
            message: e.to_string(),
        })?,
        Err(_) => {
            return Err(Error::Connect {
                addr,
                message: format!(
                    "no MySQL handshake within {} s; check that source.url names a MySQL or MariaDB server",
                    limit.as_secs_f64()
                ),
            })
        }
    };
    // Text arrives as UTF-8 and TIMESTAMP columns read as UTC, whatever the server's defaults.
    conn.query_drop("SET NAMES utf8mb4, time_zone = '+00:00'")
        .await?;
    Ok(conn)
}

fn text(row: &MyRow, i: usize) -> Option<String> {
    row.get::<Option<String>, _>(i).flatten()
}

fn number(row: &MyRow, i: usize) -> Option<u64> {
    text(row, i).and_then(|s| s.parse().ok())
}

/// Describe `table` from `information_schema` (columns, key, MariaDB JSON checks).
/// Whether `schema` still describes its table's columns (names, types, nullability, in order):
/// one query, cheaper than [`load_schema`], for a backfill to ask before every chunk.
pub(crate) async fn columns_unchanged(conn: &mut Conn, schema: &SourceSchema) -> Result<bool> {
    let rows: Vec<(String, String, String)> = conn
        .exec(
            "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (schema.table.database.as_str(), schema.table.table.as_str()),
        )
        .await?;
    Ok(rows.len() == schema.columns.len()
        && rows
            .iter()
            .zip(&schema.columns)
            .all(|((name, ty, nullable), c)| {
                c.name == name.as_str() && c.column_type == *ty && c.nullable == (nullable == "YES")
            }))
}

/// Whether `table` exists on the source now.
pub(crate) async fn table_exists(conn: &mut Conn, table: &TableId) -> Result<bool> {
    let found: Option<u8> = conn
        .exec_first(
            "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (table.database.as_str(), table.table.as_str()),
        )
        .await?;
    Ok(found.is_some())
}

pub(crate) async fn load_schema(
    conn: &mut Conn,
    flavor: Flavor,
    table: &TableId,
) -> Result<SourceSchema> {
    let rows: Vec<MyRow> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, CHARACTER_SET_NAME, \
             CAST(CHARACTER_MAXIMUM_LENGTH AS CHAR), CAST(CHARACTER_OCTET_LENGTH AS CHAR), \
             CAST(NUMERIC_PRECISION AS CHAR), CAST(NUMERIC_SCALE AS CHAR), \
             CAST(DATETIME_PRECISION AS CHAR) \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
             ORDER BY ORDINAL_POSITION",
            (table.database.as_str(), table.table.as_str()),
        )
        .await?;
    if rows.is_empty() {
        return Err(Error::TableNotFound { table: *table });
    }
    let json_columns = if flavor == Flavor::MariaDb {
        mariadb_json_columns(conn, table).await?
    } else {
        BTreeSet::new()
    };
    let mut columns = Vec::with_capacity(rows.len());
    for row in &rows {
        let name = text(row, 0).unwrap_or_default();
        let data_type = text(row, 1).unwrap_or_default().to_ascii_lowercase();
        let column_type = text(row, 2).unwrap_or_default();
        let nullable = text(row, 3).as_deref() == Some("YES");
        let charset = text(row, 4);
        let max_chars = number(row, 5);
        let octets = number(row, 6);
        let precision = number(row, 7);
        let scale = number(row, 8);
        let fsp = number(row, 9).unwrap_or(0).min(6) as u8;
        let unsigned = column_type.to_ascii_lowercase().contains("unsigned");
        let unsupported = || Error::UnsupportedType {
            table: *table,
            column: name.clone(),
            column_type: column_type.clone(),
        };
        let ty = match data_type.as_str() {
            "tinyint" => SourceType::Integer { bits: 8, unsigned },
            "smallint" => SourceType::Integer { bits: 16, unsigned },
            "mediumint" => SourceType::Integer { bits: 24, unsigned },
            "int" | "integer" => SourceType::Integer { bits: 32, unsigned },
            "bigint" => SourceType::Integer { bits: 64, unsigned },
            "decimal" | "numeric" => SourceType::Decimal {
                precision: precision.unwrap_or(10) as u8,
                scale: scale.unwrap_or(0) as u8,
            },
            "float" => SourceType::Float,
            "double" | "real" | "double precision" => SourceType::Double,
            "bit" => SourceType::Bit {
                width: precision.unwrap_or(1) as u8,
            },
            "date" => SourceType::Date,
            "datetime" => SourceType::DateTime { fsp },
            "timestamp" => SourceType::Timestamp { fsp },
            "time" => SourceType::Time { fsp },
            "year" => SourceType::Year,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => {
                if json_columns.contains(&name) {
                    SourceType::Json
                } else {
                    SourceType::Text {
                        charset: charset.clone().unwrap_or_else(|| "utf8mb4".into()),
                        max_chars,
                        fixed: data_type == "char",
                    }
                }
            }
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                SourceType::Binary {
                    max_len: octets,
                    fixed: data_type == "binary",
                }
            }
            "enum" => SourceType::Enum {
                members: parse_members(&column_type).ok_or_else(unsupported)?,
            },
            "set" => SourceType::Set {
                members: parse_members(&column_type).ok_or_else(unsupported)?,
            },
            "json" => SourceType::Json,
            "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
            | "multipolygon" | "geometrycollection" | "geomcollection" => SourceType::Geometry,
            _ => return Err(unsupported()),
        };
        columns.push(SourceColumn {
            name: ColumnName::from(&name),
            ty,
            nullable,
            column_type,
        });
    }
    let (key_name, key) = match choose_key(conn, table, &columns).await {
        // The columns and the keys are read by two queries: a table dropped between them has
        // columns and no key. That is a table that does not exist, not one without a key.
        Err(Error::NoKey { .. }) if !table_exists(conn, table).await? => {
            return Err(Error::TableNotFound { table: *table })
        }
        chosen => chosen?,
    };
    Ok(SourceSchema {
        table: *table,
        columns,
        key,
        key_name,
    })
}

/// MariaDB stores JSON as LONGTEXT with a `json_valid(`col`)` check constraint.
async fn mariadb_json_columns(conn: &mut Conn, table: &TableId) -> Result<BTreeSet<String>> {
    let clauses: Vec<String> = conn
        .exec(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?",
            (table.database.as_str(), table.table.as_str()),
        )
        .await?;
    Ok(clauses
        .iter()
        .filter_map(|c| {
            let c = c.trim();
            let inner = c.strip_prefix("json_valid(`")?.strip_suffix("`)")?;
            Some(inner.replace("``", "`"))
        })
        .collect())
}

/// The primary key, or else the first unique index whose columns are all NOT NULL and whole.
async fn choose_key(
    conn: &mut Conn,
    table: &TableId,
    columns: &[SourceColumn],
) -> Result<(String, Vec<usize>)> {
    let rows: Vec<MyRow> = conn
        .exec(
            "SELECT INDEX_NAME, COLUMN_NAME, CAST(NON_UNIQUE AS CHAR), CAST(SUB_PART AS CHAR) \
             FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
             ORDER BY INDEX_NAME, SEQ_IN_INDEX",
            (table.database.as_str(), table.table.as_str()),
        )
        .await?;
    let mut indexes: BTreeMap<String, (bool, Vec<Option<usize>>, bool)> = BTreeMap::new();
    for row in &rows {
        let index = text(row, 0).unwrap_or_default();
        let column = text(row, 1).unwrap_or_default();
        let unique = text(row, 2).as_deref() == Some("0");
        let prefix = text(row, 3).is_some();
        let entry = indexes.entry(index).or_insert((unique, Vec::new(), false));
        entry.1.push(columns.iter().position(|c| c.name == column));
        entry.2 |= prefix;
    }
    let usable = |(unique, cols, prefix): &(bool, Vec<Option<usize>>, bool)| {
        *unique && !*prefix && cols.iter().all(|c| c.is_some_and(|i| !columns[i].nullable))
    };
    if let Some(pk) = indexes.get("PRIMARY") {
        if usable(pk) {
            return Ok(("PRIMARY".into(), pk.1.iter().flatten().copied().collect()));
        }
    }
    for (name, index) in &indexes {
        if usable(index) {
            return Ok((name.clone(), index.1.iter().flatten().copied().collect()));
        }
    }
    Err(Error::NoKey { table: *table })
}

/// Parse the member list of `enum('a','b''c')` / `set(...)` as MySQL prints it in COLUMN_TYPE.
pub fn parse_members(column_type: &str) -> Option<Vec<String>> {
    let open = column_type.find('(')?;
    let body = column_type[open + 1..].strip_suffix(')')?;
    let mut members = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        match chars.next() {
            None => break,
            Some(',') | Some(' ') => continue,
            Some('\'') => {
                let mut member = String::new();
                loop {
                    match chars.next()? {
                        '\'' if chars.peek() == Some(&'\'') => {
                            chars.next();
                            member.push('\'');
                        }
                        '\'' => break,
                        '\\' => member.push(chars.next()?),
                        c => member.push(c),
                    }
                }
                members.push(member);
            }
            Some(_) => return None,
        }
    }
    Some(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port that accepts connections and never says a word (as a Kafka broker or a stuck proxy
    /// would to a MySQL client) gives an error naming the address, not a hang.
    #[tokio::test]
    async fn a_peer_that_never_greets_is_a_clear_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                held.push(socket);
            }
        });
        let opts = source_opts(&format!("mysql://root@{addr}/")).unwrap();
        let started = std::time::Instant::now();
        let err = connect_within(&opts, Duration::from_millis(300))
            .await
            .expect_err("connecting to a silent peer must fail");
        silent.abort();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
        let text = err.to_string();
        assert!(text.contains(&addr.to_string()), "{text}");
        assert!(text.contains("no MySQL handshake within 0.3 s"), "{text}");
        assert!(text.contains("source.url"), "{text}");
    }

    #[test]
    fn parses_enum_and_set_members() {
        assert_eq!(
            parse_members("enum('a','b''c','d,e')").unwrap(),
            vec!["a", "b'c", "d,e"]
        );
        assert_eq!(parse_members("set('x')").unwrap(), vec!["x"]);
        assert_eq!(parse_members("set()").unwrap(), Vec::<String>::new());
        assert!(parse_members("enum('a'").is_none());
    }

    #[test]
    fn scope_requires_something_and_names_the_key() {
        let cfg = SourceConfig {
            url: "mysql://x".into(),
            server_id: 1,
            databases: vec![],
            tables: vec![],
            exclude_tables: vec![],
        };
        let err = Scope::from_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("source.databases"), "{err}");
        let cfg = SourceConfig {
            tables: vec!["nodot".into()],
            ..cfg
        };
        let err = Scope::from_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("source.tables"), "{err}");
    }
}
