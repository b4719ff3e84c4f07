//! Checks that `dev/mariadb` + `MariaDb` give each test its own, correctly configured
//! server.

use std::time::Instant;

use tidemark_testkit::{port_accepts_connections, sakila_dir, MariaDb, SAKILA_ROW_COUNTS};

#[test]
fn two_servers_at_once_are_configured_for_row_based_cdc() {
    let started = Instant::now();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(MariaDb::start);
        let b = s.spawn(MariaDb::start);
        (a.join().unwrap(), b.join().unwrap())
    });
    eprintln!("two servers started in {:?}", started.elapsed());

    assert_ne!(a.port(), b.port());
    assert_ne!(a.port(), 3306, "must never be the system MariaDB");
    assert_ne!(a.dir(), b.dir());
    assert_eq!(a.url(), format!("mysql://root@127.0.0.1:{}", a.port()));

    for db in [&a, &b] {
        assert_eq!(
            db.sql("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@server_id"),
            "1\tROW\tFULL\t1\n"
        );
        assert_eq!(
            db.sql("SELECT @@character_set_server, @@collation_server, @@port, @@datadir")
                .trim_end(),
            format!(
                "utf8mb4\tutf8mb4_unicode_ci\t{}\t{}/",
                db.port(),
                db.datadir().display()
            )
        );
        let logs = db.sql("SHOW BINARY LOGS");
        assert!(
            logs.lines().any(|l| l.starts_with("mysql-bin.000001\t")),
            "{logs}"
        );
        assert!(db.binlog_dir().join("mysql-bin.000001").is_file());
        assert!(db.datadir().join("mysql").is_dir());
    }

    // The servers are independent.
    a.sql("CREATE DATABASE only_a");
    assert_eq!(a.sql("SHOW DATABASES LIKE 'only_a'"), "only_a\n");
    assert_eq!(b.sql("SHOW DATABASES LIKE 'only_a'"), "");
}

#[test]
fn utf8mb4_round_trips() {
    let db = MariaDb::start();
    assert_eq!(db.sql("SELECT '€😀'"), "€😀\n");
    assert_eq!(db.sql("SELECT HEX('€😀')"), "E282ACF09F9880\n");

    db.sql("CREATE DATABASE t");
    // No explicit charset: the server default (utf8mb4) must hold 4-byte characters.
    db.sql_db(
        "t",
        "CREATE TABLE s (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO s VALUES (1, 'ä€😀')",
    );
    assert_eq!(
        db.sql_db("t", "SELECT v, CHAR_LENGTH(v) FROM s"),
        "ä€😀\t3\n"
    );
}

#[test]
fn load_file_uses_the_given_database() {
    let db = MariaDb::start();
    db.sql("CREATE DATABASE f");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.sql");
    std::fs::write(
        &path,
        "CREATE TABLE x (id INT PRIMARY KEY);\nINSERT INTO x VALUES (1), (2);\n",
    )
    .unwrap();
    db.load_file(Some("f"), &path);
    assert_eq!(db.sql("SELECT COUNT(*) FROM f.x"), "2\n");
}

#[test]
#[should_panic(expected = "SQL failed")]
fn failing_sql_panics() {
    let db = MariaDb::start();
    db.sql("SELECT * FROM no_such_db.no_such_table");
}

#[test]
fn stop_and_drop_stop_the_server_and_remove_its_directory() {
    let mut db = MariaDb::start();
    let port = db.port();
    let dir = db.dir().to_path_buf();
    assert!(port_accepts_connections(port));
    db.stop();
    assert!(
        !port_accepts_connections(port),
        "port {port} still open after stop"
    );
    db.stop(); // idempotent
    assert!(dir.is_dir(), "stop keeps the directory until drop");
    drop(db);
    assert!(!dir.exists(), "{} still exists after drop", dir.display());

    let db = MariaDb::start();
    let port = db.port();
    let dir = db.dir().to_path_buf();
    assert!(db.accepts_connections());
    drop(db);
    assert!(
        !port_accepts_connections(port),
        "port {port} still open after drop"
    );
    assert!(!dir.exists(), "{} still exists after drop", dir.display());
}

#[test]
fn extra_mariadbd_args_are_applied() {
    let db = MariaDb::start_with_args(&["--binlog-row-image=MINIMAL"]);
    assert_eq!(db.sql("SELECT @@binlog_row_image"), "MINIMAL\n");
}

#[test]
fn sakila_loads_with_the_documented_row_counts() {
    assert!(sakila_dir().join("sakila-data.sql").is_file());
    let db = MariaDb::start();
    let started = Instant::now();
    db.load_sakila();
    eprintln!("Sakila loaded in {:?}", started.elapsed());
    assert_eq!(db.sql("SELECT COUNT(*) FROM sakila.rental"), "16044\n");
    assert_eq!(db.sql("SELECT COUNT(*) FROM sakila.payment"), "16049\n");
    assert_eq!(SAKILA_ROW_COUNTS.len(), 16);
    // Triggers and views came along.
    let triggers =
        db.sql("SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'sakila'");
    assert_ne!(triggers.trim(), "0");
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM sakila.customer_list").trim(),
        "599"
    );
    // And the load went into the binlog, as row events.
    let size: u64 = db
        .binlog_dir()
        .read_dir()
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("mysql-bin.0"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(size > 1_000_000, "binlogs hold only {size} bytes");
}

/// The watcher `dev/mariadb start` leaves for an owner stops only the server it was started
/// for. Once that owner is gone, another owner may already run a new server in the same
/// directory (one bench run right after another), and that server keeps running.
#[test]
fn a_watcher_leaves_a_newer_server_in_its_directory_alone() {
    use std::process::{Command, Stdio};
    use std::time::Duration;

    let script = tidemark_testkit::workspace_root().join("dev/mariadb");
    let dir = tempfile::tempdir().expect("a directory");
    let server = dir.path().join("server");
    let start = |owner: u32| {
        let out = Command::new(&script)
            .arg("start")
            .arg(&server)
            .env("TIDEMARK_MARIADB_OWNER_PID", owner.to_string())
            .stderr(Stdio::inherit())
            .output()
            .expect("dev/mariadb runs");
        assert!(out.status.success(), "dev/mariadb start failed");
        String::from_utf8(out.stdout).expect("a URL")
    };
    let port_of = |url: &str| -> u16 {
        url.trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("mysql://root@127.0.0.1:<port>")
    };
    let owner = |_: ()| {
        Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("an owner process")
    };
    // Its watcher's process, found by its command line.
    let watcher_of = |owner: u32| -> Option<String> {
        std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|e| e.ok())
            .find(|e| {
                std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(&format!(" __watch {owner} "))
                })
            })
            .map(|e| e.file_name().to_string_lossy().into_owned())
    };
    let signal = |pid: &str, which: &str| {
        let sent = Command::new("kill")
            .args([which, pid])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {which} {pid}");
    };

    let mut first = owner(());
    start(first.id());
    let watcher = watcher_of(first.id()).expect("a watcher for the first owner");
    // Held still while its server stops, its owner goes and a new owner starts a server in the
    // same directory: what it then finds is that new server, and an owner that is gone.
    signal(&watcher, "-STOP");
    let stopped = Command::new(&script)
        .arg("stop")
        .arg(&server)
        .status()
        .expect("dev/mariadb stop");
    assert!(stopped.success());
    first.kill().expect("the first owner ends");
    first.wait().expect("reaped");
    let mut second = owner(());
    let url = start(second.id());
    signal(&watcher, "-CONT");
    tidemark_testkit::wait_for(
        "the first owner's watcher to end",
        Duration::from_secs(30),
        || watcher_of(first.id()).is_none(),
    );
    assert!(
        port_accepts_connections(port_of(&url)),
        "the second owner's server in the same directory is still running"
    );
    second.kill().expect("the second owner ends");
    second.wait().expect("reaped");
    let _ = Command::new(&script).arg("stop").arg(&server).status();
}
