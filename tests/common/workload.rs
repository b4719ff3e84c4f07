//! A live OLTP workload for end-to-end tests: hot keys updated, deleted, re-inserted, moved to
//! other keys, and multi-row transactions, on `shop.accounts` and `shop.links`.

use std::time::Instant;

use mysql_async::prelude::Queryable;
use tidemark_schemas::TableId;
use tidemark_testkit::MariaDb;

/// The two tables [`hammer`] writes.
pub const SHOP: &str = "CREATE DATABASE shop CHARACTER SET utf8mb4;
CREATE TABLE shop.accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL, note VARCHAR(40));
CREATE TABLE shop.links (a INT NOT NULL, b VARCHAR(10) NOT NULL, w INT, PRIMARY KEY (a, b));";

/// Preload `rows` accounts and links, in one statement each.
pub fn preload(db: &MariaDb, rows: u32) {
    db.sql_db(
        "shop",
        &format!(
            "INSERT INTO shop.accounts (id, balance, note)
           SELECT seq, seq * 10, CONCAT('n', seq) FROM seq_1_to_{rows};
         INSERT INTO shop.links (a, b, w)
           SELECT seq DIV 10, CONCAT('k', seq MOD 10), seq FROM seq_1_to_{rows};"
        ),
    );
}

/// `shop.accounts` and `shop.links`.
pub fn tables() -> Vec<TableId> {
    vec![
        TableId::new("shop", "accounts"),
        TableId::new("shop", "links"),
    ]
}

/// Hot keys: updates, deletes, re-inserts of the same key, key moves, multi-row transactions,
/// until `until`; returns the statements run.
pub async fn hammer(url: String, until: Instant, keys: i64) -> u64 {
    let mut conn = mysql_async::Conn::from_url(url)
        .await
        .expect("workload connection");
    let mut n: i64 = 0;
    while Instant::now() < until {
        n += 1;
        // Hot keys cluster at the start of the key space, where backfill chunks are read first
        // and last (after restarts), and at the end, which the backfill reaches last.
        let k = if n % 2 == 0 {
            n % 50 + 1
        } else {
            keys - n % 50
        };
        let sql = match n % 7 {
            0 => format!("UPDATE shop.accounts SET balance = balance + 1 WHERE id = {k}"),
            1 => format!("DELETE FROM shop.accounts WHERE id = {k}"),
            2 => format!("INSERT INTO shop.accounts VALUES ({k}, {n}, 're') ON DUPLICATE KEY UPDATE note = 'dup {n}'"),
            3 => format!("UPDATE IGNORE shop.accounts SET id = id + 1000000 WHERE id = {k}"),
            4 => format!(
                "START TRANSACTION; UPDATE shop.links SET w = {n} WHERE a = {a}; DELETE FROM shop.links WHERE a = {a} AND b = 'k3'; INSERT IGNORE INTO shop.links VALUES ({a}, 'new{n}', 1); COMMIT",
                a = k / 10
            ),
            5 => format!("UPDATE IGNORE shop.links SET b = CONCAT(b, 'x') WHERE a = {} AND b = 'k1'", k / 10),
            _ => format!("REPLACE INTO shop.accounts VALUES ({k}, -{n}, NULL)"),
        };
        conn.query_drop(sql).await.expect("workload statement");
    }
    n as u64
}
