//! Schema changes mid-migration, followed exactly (issue 25): each DDL — ADD COLUMN with and
//! without a default, DROP COLUMN, a type change, a column moved, a column renamed, TRUNCATE,
//! CREATE TABLE, RENAME TABLE, DROP TABLE (and a table dropped and created again) — while `tidemark run` captures, while it is stopped with writes before and after
//! the DDL, and during a backfill under a hot-key workload. Each ends with the target equal to the
//! source row by row and `reconcile` reporting no actionable drift, with no manual step.

mod common;

use std::time::Duration;

use common::workload::{Pace, Workload};
use common::{
    assert_cql_target_equals_source, assert_target_equals_source, run_ok, spawn, tidemark,
    write_config, CqlTarget,
};
use tidemark_schemas::TableId;
use tidemark_testkit::{wait_for, wait_for_or_show, MariaDb};

const ITEMS: &str = "CREATE DATABASE shop CHARACTER SET utf8mb4;
CREATE TABLE shop.items (id INT PRIMARY KEY, a INT, b INT, note VARCHAR(20));";

/// Writes in the table's shape before the DDL.
const BEFORE: &str = "UPDATE shop.items SET a = a + 1 WHERE id <= 20;
DELETE FROM shop.items WHERE id = 30;
INSERT INTO shop.items VALUES (9000, 1, 2, 'pre');";

/// One schema change: the DDL, and writes in the new shape after it.
struct Change {
    ddl: &'static str,
    after: &'static str,
    /// Tables of `shop` compared row by row at the end.
    compare: &'static [&'static str],
    /// The table the writes after the DDL put row 9001 in.
    landed: &'static str,
    /// Tables the source no longer has: the target must hold no live row of them.
    gone: &'static [&'static str],
    /// What the CQL target answers where it cannot follow the change (CQL cannot retype a
    /// column, README "Schema changes are followed"): `tidemark run` must stop with this error,
    /// naming the column, instead of writing anything.
    cql_refuses: Option<&'static str>,
}

const ADD_COLUMN: Change = Change {
    ddl: "ALTER TABLE shop.items ADD COLUMN c VARCHAR(10)",
    after: "INSERT INTO shop.items (id, a, b, note, c) VALUES (9001, 1, 2, 'n', 'x');
            UPDATE shop.items SET c = 'y' WHERE id = 5;",
    compare: &["items"],
    landed: "items",
    gone: &[],
    cql_refuses: None,
};
const ADD_COLUMN_DEFAULT: Change = Change {
    ddl: "ALTER TABLE shop.items ADD COLUMN status VARCHAR(10) NOT NULL DEFAULT 'new'",
    after: "INSERT INTO shop.items (id, a, b, note, status) VALUES (9001, 1, 2, 'n', 'z');
            UPDATE shop.items SET status = 'done' WHERE id = 6;",
    compare: &["items"],
    landed: "items",
    gone: &[],
    cql_refuses: None,
};
const DROP_COLUMN: Change = Change {
    ddl: "ALTER TABLE shop.items DROP COLUMN note",
    after: "INSERT INTO shop.items (id, a, b) VALUES (9001, 1, 2);
            UPDATE shop.items SET b = -1 WHERE id = 7;",
    compare: &["items"],
    landed: "items",
    gone: &[],
    cql_refuses: None,
};
const MODIFY_TYPE: Change = Change {
    ddl: "ALTER TABLE shop.items MODIFY b VARCHAR(20)",
    after: "INSERT INTO shop.items (id, a, b, note) VALUES (9001, 1, 'text', 'n');
            UPDATE shop.items SET b = 'x7' WHERE id = 7;",
    compare: &["items"],
    landed: "items",
    gone: &[],
    cql_refuses: Some(
        "column `b` has CQL type int, but tidemark stores text there (tidemark never retypes a column",
    ),
};
const MOVE_COLUMN: Change = Change {
    ddl: "ALTER TABLE shop.items MODIFY b INT AFTER id",
    after: "INSERT INTO shop.items (id, a, b, note) VALUES (9001, 11, 22, 'n');
            UPDATE shop.items SET a = -5 WHERE id = 8;",
    compare: &["items"],
    landed: "items",
    gone: &[],
    cql_refuses: None,
};
const RENAME_COLUMN: Change = Change {
    ddl: "ALTER TABLE shop.items CHANGE note remark VARCHAR(20)",
    after: "INSERT INTO shop.items (id, a, b, remark) VALUES (9001, 1, 2, 'r');
            UPDATE shop.items SET remark = 'again' WHERE id = 9;",
    compare: &["items"],
    landed: "items",
    gone: &[],
    cql_refuses: None,
};
const TRUNCATE: Change = Change {
    ddl: "TRUNCATE TABLE shop.items",
    after: "INSERT INTO shop.items VALUES (1, 1, 1, 'one'), (9001, 2, 2, 'two');",
    compare: &["items"],
    landed: "items",
    gone: &[],
    cql_refuses: None,
};
const CREATE_TABLE: Change = Change {
    ddl: "CREATE TABLE shop.fresh (id INT PRIMARY KEY, v VARCHAR(10));
          INSERT INTO shop.fresh VALUES (1, 'a'), (2, 'b');",
    after: "UPDATE shop.fresh SET v = 'c' WHERE id = 2; INSERT INTO shop.items VALUES (9001, 1, 2, 'n');",
    compare: &["items", "fresh"],
    landed: "items",
    gone: &[],
    cql_refuses: None,
};
const RENAME_TABLE: Change = Change {
    ddl: "RENAME TABLE shop.items TO shop.goods",
    after: "INSERT INTO shop.goods VALUES (9001, 1, 2, 'n');
            UPDATE shop.goods SET a = -3 WHERE id = 11;",
    compare: &["goods"],
    landed: "goods",
    gone: &["items"],
    cql_refuses: None,
};
const DROP_TABLE: Change = Change {
    ddl: "DROP TABLE shop.items",
    after: "CREATE TABLE shop.other (id INT PRIMARY KEY, a INT);
            INSERT INTO shop.other VALUES (9001, 1), (2, 2);",
    compare: &["other"],
    landed: "other",
    gone: &["items"],
    cql_refuses: None,
};
const DROP_AND_CREATE_TABLE: Change = Change {
    ddl: "DROP TABLE shop.items",
    after: "CREATE TABLE shop.items (id INT PRIMARY KEY, a INT, b INT, note VARCHAR(20));
            INSERT INTO shop.items VALUES (9001, 1, 2, 'n'), (5, 5, 5, 'again');",
    compare: &["items"],
    landed: "items",
    gone: &[],
    cql_refuses: None,
};

/// Where tidemark is when the DDL runs.
#[derive(Clone, Copy, Debug)]
enum When {
    /// `tidemark run` is capturing (its backfill is done).
    Capturing,
    /// tidemark is stopped; writes before and after the DDL.
    Stopped,
    /// A throttled backfill is running while a workload writes hot keys.
    DuringBackfill,
}

fn tables(change: &Change) -> Vec<TableId> {
    change
        .compare
        .iter()
        .map(|n| TableId::new("shop", *n))
        .collect()
}

/// A change the target cannot follow: the running `tidemark run` stops by itself with `refusal`
/// in its log (exit 1), and so does every later run (nothing is written past it).
fn assert_stops_with(child: &mut common::Spawned, log: &std::path::Path, refusal: &str, cfg: &str) {
    wait_for_or_show(
        "tidemark run to stop",
        Duration::from_secs(120),
        log,
        || matches!(child.try_wait(), Ok(Some(_))),
    );
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(log).unwrap();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains(refusal),
        "the error names the column:\n{text}"
    );
    assert_refused(cfg, refusal);
}

/// `tidemark run --until-caught-up` stops with `refusal` (exit 1).
fn assert_refused(cfg: &str, refusal: &str) {
    let out = tidemark()
        .args(["run", "--config", cfg, "--until-caught-up"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(refusal), "the error names the column:\n{err}");
}

/// `tidemark run` follows the change without stopping: it is still running.
fn assert_still_running(child: &mut std::process::Child, log: &std::path::Path) {
    if let Some(status) = child.try_wait().unwrap() {
        panic!(
            "tidemark run stopped by itself ({status}):\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

/// Where the scenario writes: the embedded SQLite target, or a keyspace of the Cassandra node
/// the test run shares.
enum Target {
    Sqlite(std::path::PathBuf),
    Cql(CqlTarget),
}

impl Target {
    /// Live rows the target holds in `table` (0 when it has no such table); with `id`, only
    /// that key's.
    fn live_rows(&self, table: &str, id: Option<i64>) -> i64 {
        match self {
            Target::Sqlite(path) => {
                let only = id.map(|id| format!(" AND id = {id}")).unwrap_or_default();
                rusqlite::Connection::open(path)
                    .and_then(|c| {
                        c.query_row(
                            &format!(
                                "SELECT COUNT(*) FROM \"{table}\" WHERE _tm_deleted = 0{only}"
                            ),
                            [],
                            |r| r.get::<_, i64>(0),
                        )
                    })
                    .unwrap_or(0)
            }
            // A row deleted in CQL is gone from reads: every row read is live.
            Target::Cql(cql) => {
                let only = id.map(|id| format!(" WHERE id = {id}")).unwrap_or_default();
                cql.count(&format!(
                    "SELECT COUNT(*) FROM \"{}\".\"{table}\"{only}",
                    cql.keyspace
                ))
                .unwrap_or(0)
            }
        }
    }

    /// Dead letters written: rows of `_tm_dlq` (SQLite), lines of `dead-letters.jsonl` in `dir`
    /// (CQL).
    fn dead_letters(&self, dir: &std::path::Path) -> usize {
        match self {
            Target::Sqlite(path) => rusqlite::Connection::open(path)
                .and_then(|c| {
                    c.query_row("SELECT COUNT(*) FROM _tm_dlq", [], |r| r.get::<_, i64>(0))
                })
                .unwrap_or(0) as usize,
            Target::Cql(_) => std::fs::read_to_string(dir.join("dead-letters.jsonl"))
                .map(|t| t.lines().count())
                .unwrap_or(0),
        }
    }

    async fn assert_equals_source(&self, url: &str, tables: &[TableId]) {
        match self {
            Target::Sqlite(path) => {
                assert_target_equals_source(url, path, tables).await;
            }
            Target::Cql(cql) => {
                assert_cql_target_equals_source(url, cql, tables).await;
            }
        }
    }
}

/// Hot keys of shop.items updated (in whichever shape the table has: only `a`, which every
/// change keeps): statement `n` of a [`Workload`].
fn hot_items(n: u64) -> String {
    let k = n % 40 + 1;
    match n % 3 {
        0 => format!("UPDATE shop.items SET a = a + 1 WHERE id = {k}"),
        1 => format!("UPDATE shop.items SET a = {n} WHERE id = {}", 3000 - k),
        _ => format!("DELETE FROM shop.items WHERE id = {}", 2000 + n % 500),
    }
}

/// A TRUNCATE or a table rebuild may make a statement of [`hot_items`] wait or fail: the
/// workload goes on.
const THROUGH_CHANGES: Pace = Pace {
    pause: Duration::ZERO,
    tolerate_errors: true,
};

/// Reconcile: no actionable drift.
fn assert_no_drift(cfg: &str) {
    let out = tidemark()
        .args(["reconcile", "--config", cfg])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "reconcile found drift:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn scenario(change: Change, when: When, cql: bool) {
    let db = MariaDb::start();
    db.sql(ITEMS);
    db.sql_db(
        "shop",
        "INSERT INTO shop.items SELECT seq, seq, seq * 2, CONCAT('n', seq) FROM seq_1_to_3000",
    );
    let dir = tempfile::tempdir().unwrap();
    let throttle = match when {
        When::DuringBackfill => {
            "[backfill]\nchunk_rows = 200\nmin_chunk_rows = 100\nrows_per_second = 1000\n"
        }
        _ => "",
    };
    let (config, target) = if cql {
        let cql = CqlTarget::shared();
        let path = dir.path().join("tidemark.toml");
        std::fs::write(
            &path,
            format!(
                "[source]\nurl = \"{}\"\nserver_id = 4711\ndatabases = [\"shop\"]\n\n{}\n{throttle}\n",
                db.url(),
                cql.target_toml()
            ),
        )
        .unwrap();
        (path, Target::Cql(cql))
    } else {
        let path = write_config(dir.path(), &db.url(), &["shop"], throttle);
        (path, Target::Sqlite(dir.path().join("target.db")))
    };
    let cfg = config.to_str().unwrap().to_string();
    run_ok(&["target", "init", "--config", &cfg]);
    let refusal = change.cql_refuses.filter(|_| cql);
    match when {
        When::Stopped => {
            run_ok(&["run", "--config", &cfg, "--until-caught-up"]);
            db.sql(BEFORE);
            db.sql(change.ddl);
            db.sql(change.after);
        }
        When::Capturing => {
            let log = dir.path().join("run.log");
            let mut child = spawn(&["run", "--config", &cfg], &log);
            wait_for("the backfill to finish", Duration::from_secs(120), || {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("backfill of table complete")
            });
            db.sql(BEFORE);
            db.sql(change.ddl);
            db.sql(change.after);
            if let Some(refusal) = refusal {
                return assert_stops_with(&mut child, &log, refusal, &cfg);
            }
            // The running pipeline follows the change: wait until it wrote the write after it.
            wait_for_or_show(
                "the change to be applied",
                Duration::from_secs(120),
                &log,
                || target.live_rows(change.landed, Some(9001)) == 1,
            );
            assert_still_running(&mut child, &log);
            // SIGTERM: it drains and stops; what it did not finish, the next run resumes.
            let _ = std::process::Command::new("kill")
                .arg(child.id().to_string())
                .status();
            child.wait().unwrap();
        }
        When::DuringBackfill => {
            let log = dir.path().join("run.log");
            let load = Workload::start_paced(db.url(), THROUGH_CHANGES, hot_items);
            let mut child = spawn(&["run", "--config", &cfg], &log);
            wait_for(
                "the backfill to be under way",
                Duration::from_secs(60),
                || target.live_rows("items", None) >= 500,
            );
            db.sql(BEFORE);
            db.sql(change.ddl);
            db.sql(change.after);
            // Writes go on after the change too.
            let after = load.ran() + 100;
            load.finish(after).await;
            if let Some(refusal) = refusal {
                return assert_stops_with(&mut child, &log, refusal, &cfg);
            }
            assert_still_running(&mut child, &log);
            let _ = std::process::Command::new("kill")
                .arg(child.id().to_string())
                .status();
            child.wait().unwrap();
            // A rejection is logged as one (progress lines count them: `rejected=0`).
            let log = std::fs::read_to_string(&log).unwrap();
            assert!(
                !log.lines()
                    .any(|l| l.contains("rejected") && !l.contains("rejected=0")),
                "no dead letter for a shape change:\n{log}"
            );
        }
    }
    if let Some(refusal) = refusal {
        return assert_refused(&cfg, refusal);
    }
    let out = run_ok(&["run", "--config", &cfg, "--until-caught-up"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!report.contains("rejected"), "{report}");
    assert_eq!(
        target.dead_letters(dir.path()),
        0,
        "no dead letter for a shape change"
    );
    target
        .assert_equals_source(&db.url(), &tables(&change))
        .await;
    for gone in change.gone {
        assert_eq!(
            target.live_rows(gone, None),
            0,
            "shop.{gone} is gone from the source, yet the target holds live rows of it"
        );
    }
    assert_no_drift(&cfg);
}

macro_rules! scenarios {
    ($($name:ident: $change:expr,)*) => {
        $(
            mod $name {
                use super::*;
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn while_capturing() {
                    scenario($change, When::Capturing, false).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn while_stopped() {
                    scenario($change, When::Stopped, false).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn during_a_backfill() {
                    scenario($change, When::DuringBackfill, false).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn cql_while_capturing() {
                    scenario($change, When::Capturing, true).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn cql_while_stopped() {
                    scenario($change, When::Stopped, true).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn cql_during_a_backfill() {
                    scenario($change, When::DuringBackfill, true).await;
                }
            }
        )*
    };
}

scenarios! {
    add_column: ADD_COLUMN,
    add_column_with_default: ADD_COLUMN_DEFAULT,
    drop_column: DROP_COLUMN,
    modify_type: MODIFY_TYPE,
    move_column: MOVE_COLUMN,
    rename_column: RENAME_COLUMN,
    truncate: TRUNCATE,
    create_table: CREATE_TABLE,
    rename_table: RENAME_TABLE,
    drop_table: DROP_TABLE,
    drop_and_create_table: DROP_AND_CREATE_TABLE,
}

/// `DROP DATABASE` of a database in scope while capturing: the statement names none of its
/// tables; the rows the target holds of each are tombstoned (one table had changes captured,
/// one only a backfill), the other database is untouched and the run goes on. A restart whose
/// configuration still names the database is refused with an error saying what to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_database_while_capturing() {
    let db = MariaDb::start();
    db.sql(ITEMS);
    db.sql(
        "CREATE DATABASE crm;
         CREATE TABLE crm.accounts (id INT PRIMARY KEY, name VARCHAR(20));
         CREATE TABLE crm.contacts (id INT PRIMARY KEY, email VARCHAR(40));",
    );
    db.sql_db(
        "shop",
        "INSERT INTO shop.items SELECT seq, seq, seq, 'n' FROM seq_1_to_500;
         INSERT INTO crm.accounts SELECT seq, CONCAT('a', seq) FROM seq_1_to_300;
         INSERT INTO crm.contacts SELECT seq, CONCAT('c', seq) FROM seq_1_to_200;",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.url(), &["shop", "crm"], "");
    let cfg = config.to_str().unwrap().to_string();
    let target = Target::Sqlite(dir.path().join("target.db"));
    let log = dir.path().join("run.log");
    let mut child = spawn(&["run", "--config", &cfg], &log);
    wait_for_or_show("the backfill", Duration::from_secs(120), &log, || {
        target.live_rows("contacts", None) == 200 && target.live_rows("items", None) == 500
    });
    db.sql("UPDATE crm.accounts SET name = 'changed' WHERE id <= 5");
    wait_for_or_show("the update captured", Duration::from_secs(60), &log, || {
        rusqlite::Connection::open(dir.path().join("target.db"))
            .and_then(|c| {
                c.query_row(
                    "SELECT COUNT(*) FROM accounts WHERE name = 'changed'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
            })
            .unwrap_or(0)
            == 5
    });
    db.sql(
        "DROP DATABASE crm;
         INSERT INTO shop.items VALUES (9001, 1, 2, 'after');",
    );
    wait_for_or_show(
        "the dropped database's rows tombstoned",
        Duration::from_secs(120),
        &log,
        || {
            target.live_rows("accounts", None) == 0
                && target.live_rows("contacts", None) == 0
                && target.live_rows("items", Some(9001)) == 1
        },
    );
    assert_still_running(&mut child, &log);
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    child.wait().unwrap();
    let out = tidemark()
        .args(["run", "--config", &cfg, "--until-caught-up"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("crm"), "the error names the database:\n{err}");
    let config = write_config(dir.path(), &db.url(), &["shop"], "");
    let cfg = config.to_str().unwrap().to_string();
    run_ok(&["run", "--config", &cfg, "--until-caught-up"]);
    target
        .assert_equals_source(&db.url(), &[TableId::new("shop", "items")])
        .await;
    assert_no_drift(&cfg);
}
