//! Which tables a statement-logged DML statement writes, and which table a schema change
//! (`ALTER TABLE`, `TRUNCATE`) changes.
//!
//! The source logs in ROW format, but a session can still `SET SESSION binlog_format =
//! 'STATEMENT'` (or `MIXED`): its INSERT, UPDATE, DELETE, REPLACE and LOAD DATA then reach the
//! binlog as the SQL text in a query event, with no row images. Capture cannot apply such a
//! change, and skipping it would lose it silently, so capture stops with an error naming the
//! table — but only for a statement that writes a table in scope, since statements on other
//! tables are none of its business.
//!
//! This is not an SQL parser: it tokenizes (identifiers, quoted names, strings, comments) and
//! reads the table names where the grammar puts the written tables:
//! - `INSERT|REPLACE [modifiers] [INTO] name …`
//! - `UPDATE [modifiers] refs SET …` (every name in `refs`, joins included: a multi-table
//!   update may write any of them)
//! - `DELETE [modifiers] FROM name …`, `DELETE names FROM …`, `DELETE FROM names USING …`
//! - `LOAD DATA … INTO TABLE name`
//!
//! Names are resolved against the statement's default database. Aliases in a multi-table
//! `UPDATE` are read as names too: a false alarm is possible there, a missed table is not.

use tidemark_schemas::TableId;

/// A token of SQL text: a word or quoted identifier (unquoted), a `.`, a `,`, or anything else.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Dot,
    Comma,
    Other,
}

fn tokenize(sql: &str) -> Vec<Token> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'#' => i = sql[i..].find('\n').map_or(b.len(), |n| i + n + 1),
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = sql[i..].find('\n').map_or(b.len(), |n| i + n + 1)
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..].find("*/").map_or(b.len(), |n| i + 2 + n + 2)
            }
            b'`' => {
                let mut name = String::new();
                let mut j = i + 1;
                while j < b.len() {
                    if b[j] == b'`' {
                        if b.get(j + 1) == Some(&b'`') {
                            name.push('`');
                            j += 2;
                            continue;
                        }
                        break;
                    }
                    let ch = sql[j..].chars().next().expect("in bounds");
                    name.push(ch);
                    j += ch.len_utf8();
                }
                out.push(Token::Quoted(name));
                i = j + 1;
            }
            b'\'' | b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != c {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                out.push(Token::Other);
                i = j + 1;
            }
            b'.' => {
                out.push(Token::Dot);
                i += 1;
            }
            b',' => {
                out.push(Token::Comma);
                i += 1;
            }
            _ if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 => {
                let start = i;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'_' | b'$') || b[i] >= 0x80)
                {
                    i += 1;
                }
                out.push(Token::Word(sql[start..i].to_string()));
            }
            _ => {
                out.push(Token::Other);
                i += 1;
            }
        }
    }
    out
}

fn is_kw(t: Option<&Token>, kw: &str) -> bool {
    matches!(t, Some(Token::Word(w)) if w.eq_ignore_ascii_case(kw))
}

/// Reads `[db.]name` at `i`; returns the table and the index after it.
fn name_at(tokens: &[Token], i: usize, default_db: &str) -> Option<(TableId, usize)> {
    let part = |t: Option<&Token>| match t {
        Some(Token::Word(w)) | Some(Token::Quoted(w)) => Some(w.clone()),
        _ => None,
    };
    let first = part(tokens.get(i))?;
    if tokens.get(i + 1) == Some(&Token::Dot) {
        let second = part(tokens.get(i + 2))?;
        Some((TableId::new(first, second), i + 3))
    } else {
        Some((TableId::new(default_db, first), i + 1))
    }
}

/// Every `[db.]name` between `from` and the first of `stops` (keywords), skipping join syntax.
fn names_until(tokens: &[Token], from: usize, stops: &[&str], default_db: &str) -> Vec<TableId> {
    const SKIP: &[&str] = &[
        "JOIN",
        "INNER",
        "LEFT",
        "RIGHT",
        "OUTER",
        "CROSS",
        "NATURAL",
        "STRAIGHT_JOIN",
        "AS",
        "ON",
        "USING",
        "LOW_PRIORITY",
        "IGNORE",
        "QUICK",
    ];
    let mut out = Vec::new();
    let mut i = from;
    while i < tokens.len() {
        if stops.iter().any(|s| is_kw(tokens.get(i), s)) {
            break;
        }
        match &tokens[i] {
            Token::Word(w) if SKIP.iter().any(|k| w.eq_ignore_ascii_case(k)) => i += 1,
            // `ON a.x = b.y`: conditions are not table names; skip to the next join or comma.
            Token::Word(_) | Token::Quoted(_) => match name_at(tokens, i, default_db) {
                Some((t, next)) => {
                    out.push(t);
                    i = next;
                }
                None => i += 1,
            },
            _ => i += 1,
        }
        // After `ON`, skip the condition up to the next join keyword or comma.
        if is_kw(tokens.get(i), "ON") {
            i += 1;
            while i < tokens.len()
                && !matches!(tokens[i], Token::Comma)
                && ![
                    "JOIN",
                    "INNER",
                    "LEFT",
                    "RIGHT",
                    "CROSS",
                    "NATURAL",
                    "STRAIGHT_JOIN",
                ]
                .iter()
                .chain(stops)
                .any(|k| is_kw(tokens.get(i), k))
            {
                i += 1;
            }
        }
    }
    out
}

/// The tables a DML statement writes, or `None` when `sql` is not INSERT, REPLACE, UPDATE,
/// DELETE or LOAD DATA. Unqualified names belong to `default_db`.
pub fn written_tables(sql: &str, default_db: &str) -> Option<Vec<TableId>> {
    let tokens = tokenize(sql);
    let verb = match tokens.first() {
        Some(Token::Word(w)) => w.to_ascii_uppercase(),
        _ => return None,
    };
    let mut i = 1;
    let skip = |i: &mut usize, words: &[&str]| {
        while words.iter().any(|w| is_kw(tokens.get(*i), w)) {
            *i += 1;
        }
    };
    match verb.as_str() {
        "INSERT" | "REPLACE" => {
            skip(
                &mut i,
                &["LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE", "INTO"],
            );
            Some(
                name_at(&tokens, i, default_db)
                    .map(|(t, _)| t)
                    .into_iter()
                    .collect(),
            )
        }
        "UPDATE" => {
            skip(&mut i, &["LOW_PRIORITY", "IGNORE"]);
            Some(names_until(&tokens, i, &["SET"], default_db))
        }
        "DELETE" => {
            skip(&mut i, &["LOW_PRIORITY", "QUICK", "IGNORE"]);
            if is_kw(tokens.get(i), "FROM") {
                // `DELETE FROM t …` or `DELETE FROM t1, t2 USING …`.
                let names = names_until(
                    &tokens,
                    i + 1,
                    &["USING", "WHERE", "ORDER", "LIMIT", "PARTITION", "RETURNING"],
                    default_db,
                );
                let multi = tokens[i + 1..].iter().any(|t| is_kw(Some(t), "USING"));
                Some(if multi {
                    names
                } else {
                    names.into_iter().take(1).collect()
                })
            } else {
                // `DELETE t1, t2 FROM …`: the names before FROM (aliases resolve to tables
                // there; read as names, see the module doc).
                Some(names_until(&tokens, i, &["FROM"], default_db))
            }
        }
        "LOAD" => {
            let at = tokens.iter().position(|t| is_kw(Some(t), "TABLE"))?;
            Some(
                name_at(&tokens, at + 1, default_db)
                    .map(|(t, _)| t)
                    .into_iter()
                    .collect(),
            )
        }
        _ => None,
    }
}

/// What a DDL statement does to a table whose rows capture follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableChange {
    /// The table's shape or contents changed in ways no row event carries (`ALTER TABLE`,
    /// `TRUNCATE`), or it is gone from under this name (`DROP TABLE`, the old name of a
    /// `RENAME`): the rows the target holds for it are re-read (tombstoned when the table is gone).
    Reshaped,
    /// The table arrived under this name with rows no row event of this name carried (the new
    /// name of a `RENAME`): it is backfilled.
    Arrived,
}

/// The tables a DDL statement changes, each with what happened to it:
/// - `ALTER [ONLINE] [IGNORE] TABLE [IF EXISTS] t …`: `t` reshaped; with a `RENAME [TO|AS] u`
///   clause, `u` arrived too;
/// - `TRUNCATE [TABLE] t`: `t` reshaped;
/// - `RENAME TABLE[S] t TO u [, v TO w …]`: every old name reshaped (gone), every new name
///   arrived; a name renamed twice, as in a swap, ends as its last rename left it;
/// - `DROP TABLE [IF EXISTS] t [, u …]`: each reshaped (gone); `DROP TEMPORARY TABLE` nothing
///   (temporary tables never reach the binlog as rows).
///
/// Any other statement: nothing.
pub fn changed_tables(sql: &str, default_db: &str) -> Vec<(TableId, TableChange)> {
    let tokens = tokenize(sql);
    let mut out: Vec<(TableId, TableChange)> = Vec::new();
    // A name changed twice in one statement ends as its last change says.
    let mut note =
        |table: TableId, change: TableChange| match out.iter_mut().find(|(t, _)| *t == table) {
            Some(seen) => seen.1 = change,
            None => out.push((table, change)),
        };
    let mut i = 1;
    let skip_if_exists = |i: &mut usize| {
        if is_kw(tokens.get(*i), "IF") && is_kw(tokens.get(*i + 1), "EXISTS") {
            *i += 2;
        }
    };
    if is_kw(tokens.first(), "TRUNCATE") {
        if is_kw(tokens.get(i), "TABLE") {
            i += 1;
        }
        if let Some((t, _)) = name_at(&tokens, i, default_db) {
            note(t, TableChange::Reshaped);
        }
    } else if is_kw(tokens.first(), "ALTER") {
        while ["ONLINE", "OFFLINE", "IGNORE"]
            .iter()
            .any(|w| is_kw(tokens.get(i), w))
        {
            i += 1;
        }
        if !is_kw(tokens.get(i), "TABLE") {
            return out;
        }
        i += 1;
        skip_if_exists(&mut i);
        let Some((t, mut j)) = name_at(&tokens, i, default_db) else {
            return out;
        };
        note(t, TableChange::Reshaped);
        // `RENAME [TO|AS] u`, not `RENAME COLUMN|INDEX|KEY …`.
        while j < tokens.len() {
            if is_kw(tokens.get(j), "RENAME")
                && !["COLUMN", "INDEX", "KEY", "CONSTRAINT"]
                    .iter()
                    .any(|w| is_kw(tokens.get(j + 1), w))
            {
                let mut k = j + 1;
                if is_kw(tokens.get(k), "TO") || is_kw(tokens.get(k), "AS") {
                    k += 1;
                }
                if let Some((u, _)) = name_at(&tokens, k, default_db) {
                    note(u, TableChange::Arrived);
                }
                break;
            }
            j += 1;
        }
    } else if is_kw(tokens.first(), "RENAME") {
        if !is_kw(tokens.get(i), "TABLE") && !is_kw(tokens.get(i), "TABLES") {
            return out;
        }
        i += 1;
        skip_if_exists(&mut i);
        while let Some((old, next)) = name_at(&tokens, i, default_db) {
            i = next;
            // MariaDB: `t [WAIT n | NOWAIT] TO u`.
            while i < tokens.len() && !is_kw(tokens.get(i), "TO") {
                i += 1;
            }
            let Some((new, next)) = name_at(&tokens, i + 1, default_db) else {
                break;
            };
            note(old, TableChange::Reshaped);
            note(new, TableChange::Arrived);
            i = next;
            if tokens.get(i) != Some(&Token::Comma) {
                break;
            }
            i += 1;
        }
    } else if is_kw(tokens.first(), "DROP") {
        if !is_kw(tokens.get(i), "TABLE") && !is_kw(tokens.get(i), "TABLES") {
            return out; // DROP TEMPORARY TABLE, DROP INDEX, DROP DATABASE, …
        }
        i += 1;
        skip_if_exists(&mut i);
        while let Some((t, next)) = name_at(&tokens, i, default_db) {
            note(t, TableChange::Reshaped);
            i = next;
            if tokens.get(i) != Some(&Token::Comma) {
                break;
            }
            i += 1;
        }
    }
    out
}

/// The database a `DROP {DATABASE|SCHEMA} [IF EXISTS] db` removes; `None` for any other statement.
/// Its tables are not named in the statement: capture tells them from the tables it knows of.
pub fn dropped_database(sql: &str) -> Option<String> {
    let tokens = tokenize(sql);
    if !is_kw(tokens.first(), "DROP")
        || !(is_kw(tokens.get(1), "DATABASE") || is_kw(tokens.get(1), "SCHEMA"))
    {
        return None;
    }
    let mut i = 2;
    if is_kw(tokens.get(i), "IF") && is_kw(tokens.get(i + 1), "EXISTS") {
        i += 2;
    }
    match tokens.get(i) {
        Some(Token::Word(w)) | Some(Token::Quoted(w)) => Some(w.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_database_a_drop_database_removes() {
        assert_eq!(
            dropped_database("DROP DATABASE shop").as_deref(),
            Some("shop")
        );
        assert_eq!(
            dropped_database("drop schema if exists `my db`").as_deref(),
            Some("my db")
        );
        assert_eq!(dropped_database("DROP TABLE shop.items"), None);
        assert_eq!(dropped_database("DROP DATABASE"), None);
        assert_eq!(dropped_database("CREATE DATABASE shop"), None);
    }

    fn t(db: &str, name: &str) -> TableId {
        TableId::new(db, name)
    }

    #[test]
    fn reads_the_written_tables_of_each_dml_form() {
        let w = |sql| written_tables(sql, "shop").unwrap();
        assert_eq!(w("INSERT INTO items VALUES (1)"), vec![t("shop", "items")]);
        assert_eq!(
            w("insert low_priority ignore into `my db`.`it``ems` (id) select 1"),
            vec![t("my db", "it`ems")]
        );
        assert_eq!(
            w("REPLACE crm.accounts SET id = 1"),
            vec![t("crm", "accounts")]
        );
        assert_eq!(
            w("UPDATE items SET v = 'FROM x' WHERE id = 1"),
            vec![t("shop", "items")]
        );
        assert_eq!(
            w("UPDATE shop.items i JOIN crm.a ON i.id = a.id SET i.v = a.v"),
            vec![t("shop", "items"), t("shop", "i"), t("crm", "a")]
        );
        assert_eq!(
            w("/* c */ DELETE FROM items WHERE id IN (SELECT id FROM other.t)"),
            vec![t("shop", "items")]
        );
        assert_eq!(
            w("DELETE i FROM items AS i JOIN x ON i.id = x.id"),
            vec![t("shop", "i")]
        );
        assert_eq!(
            w("DELETE FROM items, crm.a USING items JOIN crm.a"),
            vec![t("shop", "items"), t("crm", "a")]
        );
        assert_eq!(
            w("LOAD DATA INFILE '/tmp/x' INTO TABLE shop.items"),
            vec![t("shop", "items")]
        );
    }

    #[test]
    fn reads_the_tables_a_ddl_changes() {
        use TableChange::{Arrived, Reshaped};
        let c = |sql| changed_tables(sql, "shop");
        assert_eq!(
            c("ALTER TABLE items ADD COLUMN x INT"),
            vec![(t("shop", "items"), Reshaped)]
        );
        assert_eq!(
            c("alter online ignore table if exists `crm`.`a` drop column b"),
            vec![(t("crm", "a"), Reshaped)]
        );
        assert_eq!(
            c("TRUNCATE TABLE shop.orders"),
            vec![(t("shop", "orders"), Reshaped)]
        );
        assert_eq!(c("truncate items"), vec![(t("shop", "items"), Reshaped)]);
        assert_eq!(c("ALTER DATABASE shop CHARACTER SET utf8mb4"), vec![]);
        assert_eq!(
            c("ALTER TABLE items RENAME COLUMN a TO b, RENAME INDEX i TO j"),
            vec![(t("shop", "items"), Reshaped)]
        );
        assert_eq!(
            c("ALTER TABLE items ADD COLUMN z INT, RENAME TO crm.goods"),
            vec![(t("shop", "items"), Reshaped), (t("crm", "goods"), Arrived)]
        );
        assert_eq!(
            c("RENAME TABLE items TO goods, `crm`.a NOWAIT TO shop.b"),
            vec![
                (t("shop", "items"), Reshaped),
                (t("shop", "goods"), Arrived),
                (t("crm", "a"), Reshaped),
                (t("shop", "b"), Arrived)
            ]
        );
        // A swap: both names arrive (each now holds rows this name never carried).
        assert_eq!(
            c("RENAME TABLE a TO tmp, b TO a, tmp TO b"),
            vec![
                (t("shop", "a"), Arrived),
                (t("shop", "tmp"), Reshaped),
                (t("shop", "b"), Arrived)
            ]
        );
        assert_eq!(
            c("DROP TABLE IF EXISTS items, crm.a /* generated by server */"),
            vec![(t("shop", "items"), Reshaped), (t("crm", "a"), Reshaped)]
        );
        assert_eq!(c("DROP TEMPORARY TABLE IF EXISTS items"), vec![]);
        assert_eq!(c("DROP INDEX i ON items"), vec![]);
        assert_eq!(c("CREATE TABLE items (id INT)"), vec![]);
    }

    #[test]
    fn other_statements_are_not_dml() {
        for sql in [
            "BEGIN",
            "COMMIT",
            "SELECT 1",
            "CREATE TABLE x (a INT)",
            "SET @a = 1",
        ] {
            assert_eq!(written_tables(sql, "shop"), None, "{sql}");
        }
    }
}
