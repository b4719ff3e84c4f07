//! Test support for tidemark: throwaway MariaDB servers and the Sakila dataset.
//!
//! # How a test gets a MariaDB server
//!
//! Every server a test talks to is its own, started by [`MariaDb::start`] through the
//! workspace script `dev/mariadb` — the same script the README's demo uses — so tests
//! never depend on, nor touch, a system MariaDB (port 3306, `/etc/mysql`, `~/.my.cnf`):
//!
//! 1. `dev/mariadb ensure` installs `mariadbd`, `mariadb-install-db`, `mariadb` and
//!    `mariadb-binlog` with apt-get when one is missing (a fresh Debian 12 machine works);
//! 2. `dev/mariadb start <tempdir>` copies a cached pristine datadir (built once per
//!    MariaDB version with `mariadb-install-db` under `$TMPDIR`), starts `mariadbd
//!    --no-defaults` on a free port of 127.0.0.1 with row-based binary logging
//!    (`binlog/mysql-bin.000001`, …, `server_id=1`, `binlog_row_image=FULL`) and utf8mb4 as
//!    the server character set, and waits until it accepts connections.
//!
//! `root` has an empty password over TCP: the URL is `mysql://root@127.0.0.1:<port>`.
//! Starting takes well under a second once the template exists.
//!
//! A server that cannot be started makes [`MariaDb::start`] panic with the script's
//! output: a test needing MariaDB fails, it never passes because the server is missing.
//!
//! Dropping the [`MariaDb`] stops the server and removes its directory (set
//! `TIDEMARK_KEEP_TEST_DIRS=1` to keep it for inspection; its path is printed). Should the
//! test process die without unwinding (SIGKILL, abort), a watcher left by `dev/mariadb`
//! stops the server and removes the directory once the process is gone.
//!
//! ```no_run
//! let db = tidemark_testkit::MariaDb::start();
//! db.sql("CREATE DATABASE shop");
//! db.sql_db("shop", "CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1)");
//! assert_eq!(db.sql_db("shop", "SELECT COUNT(*) FROM t").trim(), "1");
//! // db.url() is what tidemark's source configuration takes.
//! ```

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

pub mod servers;

/// Environment variable that, set to `1`, keeps the directories of stopped servers.
pub const KEEP_DIRS_ENV: &str = "TIDEMARK_KEEP_TEST_DIRS";

/// Expected row counts of the Sakila tables after [`MariaDb::load_sakila`].
pub const SAKILA_ROW_COUNTS: &[(&str, u64)] = &[
    ("actor", 200),
    ("address", 603),
    ("category", 16),
    ("city", 600),
    ("country", 109),
    ("customer", 599),
    ("film", 1000),
    ("film_actor", 5462),
    ("film_category", 1000),
    ("film_text", 1000),
    ("inventory", 4581),
    ("language", 6),
    ("payment", 16049),
    ("rental", 16044),
    ("staff", 2),
    ("store", 2),
];

/// A TCP port on 127.0.0.1 that was free a moment ago (for a server a test starts, e.g.
/// `[metrics] listen`, or for an address where nothing listens).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Wait until `ready` returns true, checking every 50 ms; panic naming `what` after `timeout`.
///
/// Tests wait for the condition they rely on, never for a fixed time: on a loaded 2-core CI
/// machine a fixed sleep is either too short (a flaky test) or too long (a slow suite).
pub fn wait_for(what: &str, timeout: Duration, ready: impl FnMut() -> bool) {
    if !became_true(timeout, ready) {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

/// [`wait_for`], and on a timeout the panic message also holds the text of `log` (the log of
/// the process the test waits on), so that a failure says what that process was doing.
pub fn wait_for_or_show(what: &str, timeout: Duration, log: &Path, ready: impl FnMut() -> bool) {
    if !became_true(timeout, ready) {
        panic!(
            "timed out after {timeout:?} waiting for {what}; {}:\n{}",
            log.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

/// Whether `ready` returned true, checked every 50 ms, before `timeout` passed.
fn became_true(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The workspace root (the directory holding the top-level `Cargo.toml` and `dev/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives one level below the workspace root")
        .to_path_buf()
}

/// The path of the `dev/mariadb` script.
pub fn mariadb_script() -> PathBuf {
    workspace_root().join("dev").join("mariadb")
}

/// The directory holding the Sakila sample database: `<workspace root>/../shared/datasets/sakila`.
///
/// # Panics
///
/// When `sakila-schema.sql` is not there, so that tests needing it fail loudly.
pub fn sakila_dir() -> PathBuf {
    let dir = workspace_root()
        .join("..")
        .join("shared")
        .join("datasets")
        .join("sakila");
    let schema = dir.join("sakila-schema.sql");
    if !schema.is_file() {
        panic!(
            "the Sakila dataset is missing at {} (no {}); clone the project with shared/ beside it",
            dir.display(),
            schema.display()
        );
    }
    dir.canonicalize().unwrap_or(dir)
}

fn describe_output(output: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout).trim_end(),
        String::from_utf8_lossy(&output.stderr).trim_end()
    )
}

/// Runs `dev/mariadb ARGS...` and returns its stdout, or a description of the failure.
fn run_script(args: &[&OsStr], envs: &[(&str, String)]) -> Result<String, String> {
    let script = mariadb_script();
    let mut cmd = Command::new("bash");
    cmd.arg(&script).args(args).stdin(Stdio::null());
    for (key, value) in envs {
        cmd.env(key, value);
    }
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run bash {}: {e}", script.display()))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`{} {}` failed\n{}",
            script.display(),
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            describe_output(&output)
        ))
    }
}

/// Runs `dev/mariadb ensure` once per process.
fn ensure_tools() {
    static ENSURED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = ENSURED.get_or_init(|| run_script(&["ensure".as_ref()], &[]).map(drop));
    if let Err(message) = result {
        panic!("cannot provide the MariaDB binaries the tests need:\n{message}");
    }
}

/// A throwaway MariaDB server, listening on 127.0.0.1 only, with its own directory.
///
/// Stopped, and its directory removed, when dropped.
#[derive(Debug)]
pub struct MariaDb {
    /// Owns the directory; `None` once it was kept (see [`KEEP_DIRS_ENV`]).
    tempdir: Option<tempfile::TempDir>,
    dir: PathBuf,
    datadir: PathBuf,
    port: u16,
    running: bool,
    /// The extra `mariadbd` options it was started with (a restart uses them again).
    args: Vec<String>,
}

impl MariaDb {
    /// Starts a new server in a fresh temporary directory (installing MariaDB first if
    /// needed, see the module docs).
    ///
    /// # Panics
    ///
    /// When the server cannot be started; the message includes `dev/mariadb`'s output.
    pub fn start() -> MariaDb {
        Self::start_with_args(&[])
    }

    /// Like [`MariaDb::start`], with extra `mariadbd` options appended to the standard ones
    /// (later options win), e.g. `&["--binlog-row-image=MINIMAL"]`.
    ///
    /// # Panics
    ///
    /// When the server cannot be started; the message includes `dev/mariadb`'s output.
    pub fn start_with_args(mariadbd_args: &[&str]) -> MariaDb {
        ensure_tools();
        let tempdir = tempfile::Builder::new()
            .prefix("tidemark-mariadb-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory for MariaDB: {e}"));
        let dir = tempdir.path().to_path_buf();

        let mut args: Vec<&OsStr> = vec!["start".as_ref(), dir.as_os_str()];
        if !mariadbd_args.is_empty() {
            args.push("--".as_ref());
            args.extend(mariadbd_args.iter().map(OsStr::new));
        }
        let keep = keep_dirs();
        let envs = [
            ("TIDEMARK_MARIADB_OWNER_PID", std::process::id().to_string()),
            (
                "TIDEMARK_MARIADB_OWNER_CLEANUP",
                if keep { "0" } else { "1" }.to_string(),
            ),
        ];
        let stdout = match run_script(&args, &envs) {
            Ok(stdout) => stdout,
            Err(message) => {
                // Leave the datadir for inspection when asked; otherwise the TempDir goes.
                if keep {
                    let kept = tempdir.keep();
                    eprintln!("tidemark-testkit: kept {}", kept.display());
                }
                panic!("cannot start a throwaway MariaDB server:\n{message}");
            }
        };
        let url = stdout.trim();
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| {
                panic!("dev/mariadb start printed {stdout:?}, not mysql://root@127.0.0.1:PORT")
            });
        MariaDb {
            tempdir: Some(tempdir),
            datadir: dir.join("data"),
            dir,
            port,
            running: true,
            args: mariadbd_args.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// Starts the server again after [`MariaDb::stop`]: same directory (data and binlogs kept),
    /// same port, same options — a source restart as clients see it.
    ///
    /// # Panics
    ///
    /// When the server cannot be started.
    pub fn start_again(&mut self) {
        assert!(
            !self.running,
            "start_again: the server of {} runs",
            self.url()
        );
        let port = self.port.to_string();
        let mut args: Vec<&OsStr> = vec!["start".as_ref(), self.dir.as_os_str(), port.as_ref()];
        if !self.args.is_empty() {
            args.push("--".as_ref());
            args.extend(self.args.iter().map(OsStr::new));
        }
        let envs = [("TIDEMARK_MARIADB_OWNER_PID", std::process::id().to_string())];
        if let Err(message) = run_script(&args, &envs) {
            panic!(
                "cannot start the MariaDB server of {} again:\n{message}",
                self.dir.display()
            );
        }
        self.running = true;
    }

    /// The connection URL, `mysql://root@127.0.0.1:<port>` (root has no password).
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// The TCP port the server listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding everything of this server (datadir, binlogs, error.log, …).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's datadir.
    pub fn datadir(&self) -> &Path {
        &self.datadir
    }

    /// The directory of the binary logs, `mysql-bin.000001` and on.
    pub fn binlog_dir(&self) -> PathBuf {
        self.dir.join("binlog")
    }

    /// The server's error log.
    pub fn error_log(&self) -> PathBuf {
        self.dir.join("error.log")
    }

    /// The `mariadb` client invocation for this server (no database selected).
    fn client(&self) -> Command {
        let mut cmd = Command::new("mariadb");
        cmd.args([
            "--no-defaults",
            "--protocol=TCP",
            "-h127.0.0.1",
            &format!("-P{}", self.port),
            "-uroot",
            "--batch",
            "--skip-column-names",
            "--default-character-set=utf8mb4",
        ]);
        cmd
    }

    fn assert_running(&self, what: &str) {
        assert!(
            self.running,
            "{what} on the MariaDB server in {}, which was stopped",
            self.dir.display()
        );
    }

    /// Runs SQL statements (`;`-separated) with the `mariadb` client and returns its stdout:
    /// tab-separated rows without a header, one per line, each ending with a newline
    /// (`.trim()` it for a single value). `NULL` comes out as `NULL`; tabs, newlines and
    /// backslashes inside values come out escaped (`\t`, `\n`, `\\`), as `--batch` does.
    ///
    /// # Panics
    ///
    /// When a statement fails; the message includes the SQL and the client's stderr.
    pub fn sql(&self, sql: &str) -> String {
        self.run_sql(None, sql)
    }

    /// Like [`MariaDb::sql`], with `db` as the current database.
    pub fn sql_db(&self, db: &str, sql: &str) -> String {
        self.run_sql(Some(db), sql)
    }

    fn run_sql(&self, db: Option<&str>, sql: &str) -> String {
        self.assert_running("cannot run SQL");
        let mut cmd = self.client();
        if let Some(db) = db {
            cmd.arg(format!("--database={db}"));
        }
        cmd.arg("-e").arg(sql).stdin(Stdio::null());
        let output = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run the mariadb client: {e}"));
        if !output.status.success() {
            panic!(
                "SQL failed on {}{}:\n{sql}\n{}",
                self.url(),
                db.map(|d| format!(" (database {d})")).unwrap_or_default(),
                describe_output(&output)
            );
        }
        String::from_utf8(output.stdout)
            .unwrap_or_else(|e| panic!("the mariadb client printed invalid UTF-8 for:\n{sql}\n{e}"))
    }

    /// `PURGE BINARY LOGS TO 'file'`, repeated until `SHOW BINARY LOGS` starts at `file`.
    ///
    /// MariaDB does not purge a binlog whose transactions InnoDB has not yet made durable (its
    /// binlog checkpoint): under load the statement succeeds and keeps the older files. Repeating
    /// it once the checkpoint has moved purges them.
    pub fn purge_binary_logs_to(&self, file: &str) {
        wait_for(
            &format!("the binlogs before {file} to be purged on {}", self.url()),
            Duration::from_secs(60),
            || {
                self.sql(&format!("PURGE BINARY LOGS TO '{file}'"));
                let logs = self.sql("SHOW BINARY LOGS");
                logs.lines().next().and_then(|l| l.split('\t').next()) == Some(file)
            },
        );
    }

    /// Pipes a `.sql` file into the `mariadb` client, with `db` as the current database
    /// when given.
    ///
    /// # Panics
    ///
    /// When the file cannot be read or a statement fails.
    pub fn load_file(&self, db: Option<&str>, path: &Path) {
        self.assert_running("cannot load a file");
        let file = File::open(path)
            .unwrap_or_else(|e| panic!("cannot open the SQL file {}: {e}", path.display()));
        let mut cmd = self.client();
        if let Some(db) = db {
            cmd.arg(format!("--database={db}"));
        }
        let output = cmd
            .stdin(file)
            .output()
            .unwrap_or_else(|e| panic!("cannot run the mariadb client: {e}"));
        if !output.status.success() {
            panic!(
                "loading {} into {}{} failed:\n{}",
                path.display(),
                self.url(),
                db.map(|d| format!(" (database {d})")).unwrap_or_default(),
                describe_output(&output)
            );
        }
    }

    /// Loads the Sakila sample database (database `sakila`, about 47,000 rows, with
    /// triggers and views) from [`sakila_dir`], then checks every table's row count against
    /// [`SAKILA_ROW_COUNTS`].
    ///
    /// # Panics
    ///
    /// When the dataset is missing, loading fails or a count differs.
    pub fn load_sakila(&self) {
        let dir = sakila_dir();
        // sakila-schema.sql drops and creates database `sakila` and `USE`s it; the data
        // file `USE`s it too.
        self.load_file(None, &dir.join("sakila-schema.sql"));
        self.load_file(Some("sakila"), &dir.join("sakila-data.sql"));

        let query = SAKILA_ROW_COUNTS
            .iter()
            .map(|(table, _)| format!("SELECT '{table}', COUNT(*) FROM sakila.`{table}`"))
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let out = self.sql(&query);
        let mut mismatches = Vec::new();
        for (table, expected) in SAKILA_ROW_COUNTS {
            let actual = out
                .lines()
                .filter_map(|line| line.split_once('\t'))
                .find(|(name, _)| name == table)
                .and_then(|(_, count)| count.parse::<u64>().ok());
            if actual != Some(*expected) {
                mismatches.push(format!("{table}: expected {expected}, got {actual:?}"));
            }
        }
        assert!(
            mismatches.is_empty(),
            "Sakila did not load completely into {}:\n{}",
            self.url(),
            mismatches.join("\n")
        );
    }

    /// Whether something accepts TCP connections on the server's port.
    pub fn accepts_connections(&self) -> bool {
        port_accepts_connections(self.port)
    }

    /// Stops the server (SIGTERM, then SIGKILL after 20 s). The directory stays until drop.
    /// Does nothing when already stopped.
    ///
    /// # Panics
    ///
    /// When the server could not be stopped.
    pub fn stop(&mut self) {
        if let Err(message) = self.try_stop() {
            panic!("{message}");
        }
    }

    fn try_stop(&mut self) -> Result<(), String> {
        if !self.running {
            return Ok(());
        }
        run_script(&["stop".as_ref(), self.dir.as_os_str()], &[])?;
        self.running = false;
        Ok(())
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Err(message) = self.try_stop() {
            // Never panic in drop (it may run while unwinding from a failed assertion).
            let _ = writeln!(std::io::stderr(), "tidemark-testkit: {message}");
        }
        if let Some(tempdir) = self.tempdir.take() {
            if keep_dirs() {
                let kept = tempdir.keep();
                let _ = writeln!(
                    std::io::stderr(),
                    "tidemark-testkit: kept the MariaDB directory {} ({KEEP_DIRS_ENV}=1)",
                    kept.display()
                );
            } else if let Err(e) = tempdir.close() {
                let _ = writeln!(
                    std::io::stderr(),
                    "tidemark-testkit: cannot remove {}: {e}",
                    self.dir.display()
                );
            }
        }
    }
}

fn keep_dirs() -> bool {
    std::env::var(KEEP_DIRS_ENV).is_ok_and(|v| v == "1")
}

/// Whether something accepts TCP connections on `127.0.0.1:port` (1 s timeout).
pub fn port_accepts_connections(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// A table with every column type tidemark decodes (database `tm`, table `types`).
pub const TYPE_MATRIX_DDL: &str = r#"
CREATE DATABASE tm CHARACTER SET utf8mb4;
CREATE TABLE tm.types (
  id INT PRIMARY KEY,
  ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
  mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED,
  bi BIGINT, biu BIGINT UNSIGNED,
  d DECIMAL(65,30), d2 DECIMAL(10,2), d0 DECIMAL(5,0),
  f FLOAT, db DOUBLE,
  dt DATE, dtm DATETIME, dtm6 DATETIME(6), ts TIMESTAMP(6) NULL DEFAULT NULL,
  t TIME, t3 TIME(3), y YEAR,
  c CHAR(5), vc VARCHAR(100), tx TEXT, lat VARCHAR(20) CHARACTER SET latin1,
  bn BINARY(4), vb VARBINARY(10), bl BLOB,
  e ENUM('small','medium','large'), st SET('a','b','c','d'),
  b1 BIT(1), b64 BIT(64),
  j JSON, g GEOMETRY
);
"#;

/// Edge values for [`TYPE_MATRIX_DDL`]: maxima (row 1), minima and zero dates (row 2), NULLs
/// (row 3), then an update, a primary-key change (2 → 20) and a delete (3).
pub const TYPE_MATRIX_DML: &str = r#"
SET SESSION sql_mode = '', time_zone = '+00:00';
INSERT INTO tm.types VALUES (1,
  127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295,
  9223372036854775807, 18446744073709551615,
  '99999999999999999999999999999999999.999999999999999999999999999999', -12345678.90, 99999,
  0.1, 1.7976931348623157e308,
  '9999-12-31', '9999-12-31 23:59:59', '2024-02-29 12:34:56.789012', '2038-01-19 03:14:07.999999',
  '838:59:59', '-01:02:03.456', 2155,
  'abc', 'héllo wörld €😀', REPEAT('x', 1000), 'café€',
  'ab', 0x00FF00, 0xDEADBEEF00,
  'large', 'a,d', b'1', 0xFFFFFFFFFFFFFFFF,
  '{"k": [1, 2.5, "s", null, true]}', ST_GeomFromText('POINT(1 2)'));
INSERT INTO tm.types VALUES (2,
  -128, 0, -32768, 0, -8388608, 0, -2147483648, 0,
  -9223372036854775808, 0,
  '-99999999999999999999999999999999999.999999999999999999999999999999', 0, -99999,
  -1.5, -2.2250738585072014e-308,
  '0000-00-00', '0000-00-00 00:00:00', '1000-01-01 00:00:00.000001', '0000-00-00 00:00:00',
  '-838:59:59', '00:00:00.001', 0,
  '', '', '', '',
  '', '', '',
  'nonexistent', '', b'0', 0,
  '[]', NULL);
INSERT INTO tm.types (id) VALUES (3);
UPDATE tm.types SET vc = 'updated', y = 1901 WHERE id = 1;
UPDATE tm.types SET id = 20 WHERE id = 2;
DELETE FROM tm.types WHERE id = 3;
"#;

/// Apache Kafka for one test: a broker ([`servers::shared`] unless the test stops it), and a
/// topic prefix and consumer group of the test's own.
pub struct Kafka {
    pub server: servers::Server,
    /// `<prefix>.changes.…`, `<prefix>.checkpoints`, … of this test only.
    pub prefix: String,
    /// The consumer group of this test's apply members.
    pub group: String,
}

impl Kafka {
    /// The broker shared by the test run, with names of this test's own.
    pub fn shared() -> Kafka {
        Self::on(servers::shared(servers::Kind::Kafka))
    }

    /// A broker of this test only (one it may stop and start again).
    pub fn dedicated() -> Kafka {
        Self::on(servers::dedicated(servers::Kind::Kafka))
    }

    fn on(server: servers::Server) -> Kafka {
        Kafka {
            server,
            prefix: servers::unique_name("tm"),
            group: servers::unique_name("apply"),
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.server.addr
    }

    /// `[transport]` of a tidemark configuration for this broker and this test's names. The
    /// consumer settings only make a killed member's partitions move in seconds rather than
    /// librdkafka's default 45 (its session timeout); everything else is librdkafka's default.
    pub fn transport_toml(&self) -> String {
        format!(
            "[transport]\nkind = \"kafka\"\nbrokers = [\"{}\"]\ntopic_prefix = \"{}\"\ngroup_id = \"{}\"\npartitions = 2\nconnect_timeout_seconds = 20\ncheckpoint_interval_ms = 100\n[transport.consumer]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n",
            self.addr(),
            self.prefix,
            self.group
        )
    }
}

/// Apicurio Registry (its Confluent-compatible API) for one test, shared by the test run.
pub struct Registry {
    pub server: servers::Server,
}

impl Registry {
    pub fn shared() -> Registry {
        Registry {
            server: servers::shared(servers::Kind::Registry),
        }
    }

    /// A registry of this test only (one it may stop and start again; it keeps its schemas).
    pub fn dedicated() -> Registry {
        Registry {
            server: servers::dedicated(servers::Kind::Registry),
        }
    }

    /// The URL `[transport.schema_registry] url` takes.
    pub fn url(&self) -> String {
        format!("http://{}/apis/ccompat/v7", self.server.addr)
    }
}

/// Apache Cassandra (a CQL server with ScyllaDB's last-write-wins by write timestamp) for one
/// test: the node shared by the test run, and a keyspace name of the test's own.
pub struct Cassandra {
    pub server: servers::Server,
    pub keyspace: String,
}

impl Cassandra {
    pub fn shared() -> Cassandra {
        Self::on(servers::shared(servers::Kind::Cassandra))
    }

    /// A node of this test only (one it may stop and start again).
    pub fn dedicated() -> Cassandra {
        Self::on(servers::dedicated(servers::Kind::Cassandra))
    }

    fn on(server: servers::Server) -> Cassandra {
        Cassandra {
            server,
            keyspace: servers::unique_name("ks"),
        }
    }

    /// `127.0.0.1:PORT` of the CQL port.
    pub fn node(&self) -> &str {
        &self.server.addr
    }

    /// `[target]` of a tidemark configuration writing to this node and keyspace.
    pub fn target_toml(&self) -> String {
        format!(
            "[target]\nkind = \"cassandra\"\ndead_letter_path = \"dead-letters.jsonl\"\n[target.scylla]\nnodes = [\"{}\"]\nkeyspace = \"{}\"\nconsistency = \"one\"\nreplication_factor = 1\n",
            self.node(),
            self.keyspace
        )
    }
}
