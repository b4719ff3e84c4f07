//! A live OLTP workload for end-to-end tests: hot keys updated, deleted, re-inserted, moved to
//! other keys, and multi-row transactions, on `shop.accounts` and `shop.links`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use tidemark_schemas::TableId;
use tidemark_testkit::MariaDb;

/// The two tables [`hot_keys`] writes.
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

/// Statements run on the source one after another, in the background, until
/// [`Workload::finish`].
///
/// A test says how much writing it needs (a minimum count of statements, or a condition on
/// [`Workload::ran`]) and when the writing may stop (after what it races), never how fast the
/// source must be: on a busy machine a workload takes longer, it does not make a test fail.
pub struct Workload {
    /// The workload stops once this many statements have run (`u64::MAX` until `finish`).
    stop_after: Arc<AtomicU64>,
    ran: Arc<AtomicU64>,
    /// The statement running now.
    running: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<u64>,
}

/// How a [`Workload`] runs its statements.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pace {
    /// A pause after each statement: a steady stream rather than a flood, where a test's
    /// pipeline has to keep up (e.g. through Kafka).
    pub pause: Duration,
    /// Go on when a statement fails (a table being rebuilt or truncated by the test) instead of
    /// failing the test.
    pub tolerate_errors: bool,
}

impl Workload {
    /// Run `statement(n)` for n = 1, 2, … on `url`, as fast as the source takes them; a
    /// statement that fails fails the test.
    pub fn start(url: String, statement: impl FnMut(u64) -> String + Send + 'static) -> Workload {
        Self::start_paced(url, Pace::default(), statement)
    }

    /// [`Workload::start`] at `pace`.
    pub fn start_paced(
        url: String,
        pace: Pace,
        mut statement: impl FnMut(u64) -> String + Send + 'static,
    ) -> Workload {
        let stop_after = Arc::new(AtomicU64::new(u64::MAX));
        let ran = Arc::new(AtomicU64::new(0));
        let running = Arc::new(Mutex::new(String::new()));
        let task = tokio::spawn({
            let (stop_after, ran, running) = (stop_after.clone(), ran.clone(), running.clone());
            async move {
                let mut conn = mysql_async::Conn::from_url(url)
                    .await
                    .expect("workload connection");
                let mut n = 0;
                while n < stop_after.load(Ordering::SeqCst) {
                    n += 1;
                    let sql = statement(n);
                    running.lock().unwrap().clone_from(&sql);
                    if let Err(e) = conn.query_drop(&sql).await {
                        assert!(pace.tolerate_errors, "workload statement `{sql}`: {e}");
                    }
                    ran.store(n, Ordering::SeqCst);
                    if !pace.pause.is_zero() {
                        tokio::time::sleep(pace.pause).await;
                    }
                }
                n
            }
        });
        Workload {
            stop_after,
            ran,
            running,
            task,
        }
    }

    /// The statements run so far.
    pub fn ran(&self) -> u64 {
        self.ran.load(Ordering::SeqCst)
    }

    /// Stop once at least `at_least` statements have run (at once when they have); returns
    /// the number run. A statement that has not returned after two minutes fails the test,
    /// named: a write the source keeps waiting on is a finding, not a slow machine.
    pub async fn finish(self, at_least: u64) -> u64 {
        self.stop_after.store(at_least, Ordering::SeqCst);
        let Workload {
            ran: counter,
            running,
            mut task,
            ..
        } = self;
        let mut ran = counter.load(Ordering::SeqCst);
        loop {
            match tokio::time::timeout(Duration::from_secs(120), &mut task).await {
                Ok(done) => return done.expect("the workload"),
                Err(_) if counter.load(Ordering::SeqCst) > ran => {
                    ran = counter.load(Ordering::SeqCst)
                }
                Err(_) => panic!(
                    "statement {} of the workload has not returned for 120 s: `{}`",
                    ran + 1,
                    running.lock().unwrap()
                ),
            }
        }
    }
}

/// Hot keys of `shop` among the first and last 50 of `1..=keys`: updates, deletes, re-inserts
/// of the same key, key moves, multi-row transactions (statement `n` of a [`Workload`]).
pub fn hot_keys(keys: i64) -> impl FnMut(u64) -> String + Send + 'static {
    move |n| {
        let n = n as i64;
        // Hot keys cluster at the start of the key space, where backfill chunks are read first
        // and last (after restarts), and at the end, which the backfill reaches last.
        let k = if n % 2 == 0 {
            n % 50 + 1
        } else {
            keys - n % 50
        };
        match n % 7 {
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
        }
    }
}
