//! Splitting a table's keys into parts, against a real MariaDB: the parts cover every key exactly
//! once (counted by the server, with the backfill's own predicates) and hold about equal rows,
//! for an integer key, a composite key whose first column has few values, and a text key.

use tidemark_ingest::split::{keys_in_range, plan, KeySplit};
use tidemark_ingest::Source;
use tidemark_schemas::{Row, TableId, Value};
use tidemark_testkit::MariaDb;

/// Rows of `table` in each part of `split`, counted by the server with the part's predicates.
async fn rows_per_part(source: &mut Source, table: &TableId, split: &KeySplit) -> Vec<u64> {
    let schema = source.load_schema(table).await.unwrap();
    let mut conn = source.new_connection().await.unwrap();
    let mut out = Vec::new();
    for i in 0..split.parts {
        let n = match split.range(i) {
            None => 0,
            Some(range) => tidemark_ingest::backfill::count_range(&mut conn, &schema, &range)
                .await
                .unwrap(),
        };
        out.push(n);
    }
    out
}

/// Each of `existing` (every key of the table) and `absent` keys lies in exactly one part by
/// `keys_in_range`, and the existing ones where the parts' reads put them.
async fn check_membership(
    db: &MariaDb,
    table: &str,
    split: &KeySplit,
    existing: Vec<Row>,
    absent: Vec<Row>,
) {
    let table: TableId = table.parse().unwrap();
    let mut source = Source::connect(&db.url()).await.unwrap();
    let schema = source.load_schema(&table).await.unwrap();
    let mut conn = source.new_connection().await.unwrap();
    let n = existing.len();
    let keys: Vec<Row> = existing.into_iter().chain(absent).collect();
    let mut owners = vec![0u32; keys.len()];
    let counts = rows_per_part(&mut source, &table, split).await;
    for i in 0..split.parts {
        let range = split.range(i).unwrap();
        let inside = keys_in_range(&mut conn, &schema, &range, &keys)
            .await
            .unwrap();
        assert_eq!(
            inside[..n].iter().filter(|x| **x).count() as u64,
            counts[i as usize],
            "{table} part {i}"
        );
        for (o, x) in owners.iter_mut().zip(inside) {
            *o += u32::from(x);
        }
    }
    assert!(
        owners.iter().all(|o| *o == 1),
        "{table}: each key in exactly one part"
    );
}

async fn check(db: &MariaDb, table: &str, parts: u32, total: u64) -> KeySplit {
    let table: TableId = table.parse().unwrap();
    let mut source = Source::connect(&db.url()).await.unwrap();
    db.sql(&format!("ANALYZE TABLE {table}"));
    let schema = source.load_schema(&table).await.unwrap();
    let mut conn = source.new_connection().await.unwrap();
    let split = plan(&mut conn, &schema, parts).await.unwrap();
    let counts = rows_per_part(&mut source, &table, &split).await;
    assert_eq!(
        counts.iter().sum::<u64>(),
        total,
        "{table}: the parts {counts:?} cover every row exactly once (split {split:?})"
    );
    let ideal = total as f64 / f64::from(parts);
    for (i, n) in counts.iter().enumerate() {
        assert!(
            (*n as f64) > ideal * 0.75 && (*n as f64) < ideal * 1.25,
            "{table}: part {i} holds {n} rows, far from {ideal} (parts: {counts:?}, bounds: {:?})",
            split.bounds
        );
    }
    split
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_cover_every_key_once_and_are_balanced() {
    let db = MariaDb::start();
    db.sql("CREATE DATABASE s");
    db.sql_db(
        "s",
        "CREATE TABLE s.ints (id BIGINT PRIMARY KEY, v INT);
         INSERT INTO s.ints SELECT seq * seq, seq FROM seq_1_to_60000;
         CREATE TABLE s.tenants (tenant INT NOT NULL, id INT NOT NULL, v INT, PRIMARY KEY (tenant, id));
         INSERT INTO s.tenants SELECT IF(seq <= 15000, 1, 2), seq, seq FROM seq_1_to_60000;
         CREATE TABLE s.names (name VARCHAR(40) PRIMARY KEY, v INT) CHARACTER SET utf8mb4;
         INSERT INTO s.names SELECT CONCAT(SUBSTRING(MD5(seq), 1, 12), '-', seq), seq FROM seq_1_to_60000;",
    );
    // Keys spread quadratically: equal value ranges would hold very unequal rows.
    check(&db, "s.ints", 4, 60_000).await;
    // Two tenants, one holding three quarters of the rows: boundaries inside a tenant.
    let split = check(&db, "s.tenants", 4, 60_000).await;
    // An integer first column decides most keys without the server; ties go to the server.
    let tenants: Vec<Row> = db
        .sql("SELECT tenant, id FROM s.tenants")
        .lines()
        .map(|l| {
            let (t, i) = l.split_once('\t').unwrap();
            Row(vec![
                ("tenant".into(), Value::Int(t.parse().unwrap())),
                ("id".into(), Value::Int(i.parse().unwrap())),
            ])
        })
        .collect();
    let absent: Vec<Row> = [(0, 5), (1, 0), (1, 99_999_999), (2, -1), (3, 1)]
        .iter()
        .map(|(t, i)| {
            Row(vec![
                ("tenant".into(), Value::Int(*t)),
                ("id".into(), Value::Int(*i)),
            ])
        })
        .collect();
    check_membership(&db, "s.tenants", &split, tenants, absent).await;
    assert!(
        split
            .bounds
            .iter()
            .filter(|b| b.get("tenant") == Some(&Value::Int(2)))
            .count()
            >= 2,
        "the big tenant is split by id: {:?}",
        split.bounds
    );
    let split = check(&db, "s.names", 3, 60_000).await;
    // Membership of keys that need not exist, decided in the column's collation: every key of
    // the table, and some that are not in it (upper case, in a case-insensitive collation).
    let names: Vec<Row> = db
        .sql("SELECT name FROM s.names")
        .lines()
        .map(|n| Row(vec![("name".into(), Value::Text(n.to_string()))]))
        .collect();
    let absent: Vec<Row> = ["", "A", "ZZZZ", "8F", "~"]
        .iter()
        .map(|n| Row(vec![("name".into(), Value::Text(n.to_string()))]))
        .collect();
    check_membership(&db, "s.names", &split, names, absent).await;
    // A time series: one row a minute for six weeks, keyed by (day, time of day).
    db.sql_db(
        "s",
        "CREATE TABLE s.events (day DATE NOT NULL, at DATETIME NOT NULL, v INT, PRIMARY KEY (day, at));
         INSERT INTO s.events SELECT DATE('2026-01-01' + INTERVAL seq MINUTE), '2026-01-01' + INTERVAL seq MINUTE, seq FROM seq_1_to_60000;",
    );
    check(&db, "s.events", 4, 60_000).await;
    // Texts that all begin alike (URLs): searched after what they share.
    db.sql_db(
        "s",
        "CREATE TABLE s.urls (url VARCHAR(100) PRIMARY KEY, v INT) CHARACTER SET utf8mb4;
         INSERT INTO s.urls SELECT CONCAT('https://shop.example.com/items/', LPAD(seq * 7 MOD 60000, 6, '0')), seq FROM seq_1_to_60000;",
    );
    check(&db, "s.urls", 4, 60_000).await;
    // An unsigned first column whose smallest value holds 40% of the rows.
    db.sql_db(
        "s",
        "CREATE TABLE s.buckets (bucket TINYINT UNSIGNED NOT NULL, id INT NOT NULL, PRIMARY KEY (bucket, id));
         INSERT INTO s.buckets SELECT IF(seq <= 24000, 0, 1 + seq MOD 5), seq FROM seq_1_to_60000;",
    );
    check(&db, "s.buckets", 4, 60_000).await;
    // Money as the key: DECIMAL values, negative ones included.
    db.sql_db(
        "s",
        "CREATE TABLE s.amounts (amount DECIMAL(12, 2) PRIMARY KEY, v INT);
         INSERT INTO s.amounts SELECT (CAST(seq AS SIGNED) - 20000) * 1.25, seq FROM seq_1_to_60000;",
    );
    check(&db, "s.amounts", 4, 60_000).await;
    // More parts than rows: the parts past the last boundary are empty, the rest cover all.
    db.sql("CREATE TABLE s.tiny (id INT PRIMARY KEY); INSERT INTO s.tiny VALUES (1), (2);");
    let table: TableId = "s.tiny".parse().unwrap();
    let mut source = Source::connect(&db.url()).await.unwrap();
    let schema = source.load_schema(&table).await.unwrap();
    let mut conn = source.new_connection().await.unwrap();
    let split = plan(&mut conn, &schema, 8).await.unwrap();
    let counts = rows_per_part(&mut source, &table, &split).await;
    assert_eq!(counts.iter().sum::<u64>(), 2, "{counts:?}");
    assert!(split.bounds.len() <= 2, "{split:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_begins_with_a_float_is_refused_by_name() {
    let db = MariaDb::start();
    db.sql(
        "CREATE DATABASE s;
         CREATE TABLE s.prices (price DOUBLE NOT NULL, id INT NOT NULL, PRIMARY KEY (price, id));
         INSERT INTO s.prices VALUES (1.5, 1);",
    );
    let table: TableId = "s.prices".parse().unwrap();
    let mut source = Source::connect(&db.url()).await.unwrap();
    let schema = source.load_schema(&table).await.unwrap();
    let mut conn = source.new_connection().await.unwrap();
    let err = plan(&mut conn, &schema, 2).await.unwrap_err().to_string();
    assert!(
        err.contains("s.prices") && err.contains("`price`") && err.contains("without --part"),
        "{err}"
    );
}
