//! The JVM servers tests talk to: Apache Kafka (`dev/kafka`), Apicurio Registry
//! (`dev/registry`) and Apache Cassandra (`dev/cassandra`), each started through its `dev/`
//! script, the same way a newcomer starts one by hand.
//!
//! They take seconds to start (Cassandra about ten on two cores) and hundreds of MB each, so most
//! tests share one server of each kind per test run: [`shared`] starts it the first time a test
//! asks (under a file lock, so that test processes running in parallel start it once) in
//! `target/test-servers/<kind>/`, and leaves a watcher that stops it when the test runner
//! (`cargo nextest` or `cargo test`, the parent of the test process) exits. Tests keep out of
//! each other's way by name: their own topic prefix and consumer group ([`unique_name`]), their
//! own keyspace. A test that stops or restarts its server takes a [`dedicated`] one instead,
//! stopped when it is dropped.
//!
//! A server that cannot be started makes the test panic with the script's output: no test
//! passes because a server was missing.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::workspace_root;

/// A kind of server, by its `dev/` script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Kafka,
    Registry,
    Cassandra,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Kafka => "kafka",
            Kind::Registry => "registry",
            Kind::Cassandra => "cassandra",
        }
    }

    fn script(self) -> PathBuf {
        workspace_root().join("dev").join(self.name())
    }

    fn owner_env(self) -> &'static str {
        match self {
            Kind::Kafka => "TIDEMARK_KAFKA_OWNER_PID",
            Kind::Registry => "TIDEMARK_REGISTRY_OWNER_PID",
            Kind::Cassandra => "TIDEMARK_CASSANDRA_OWNER_PID",
        }
    }

    fn run(self, args: &[&std::ffi::OsStr], owner: Option<u32>) -> Result<String, String> {
        let script = self.script();
        let mut cmd = Command::new("bash");
        cmd.arg(&script).args(args).stdin(Stdio::null());
        if let Some(pid) = owner {
            cmd.env(self.owner_env(), pid.to_string());
        }
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!(
                "`dev/{} {}` failed ({}):\n{}{}",
                self.name(),
                args.iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// `dev/<kind> ensure`, once per process.
    fn ensure(self) {
        static ENSURED: [OnceLock<Result<(), String>>; 3] =
            [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        let slot = &ENSURED[self as usize];
        if let Err(message) = slot.get_or_init(|| self.run(&["ensure".as_ref()], None).map(drop)) {
            panic!("cannot fetch what dev/{} needs:\n{message}", self.name());
        }
    }
}

/// A running server: its address (`127.0.0.1:PORT`) and the directory it lives in.
#[derive(Debug)]
pub struct Server {
    kind: Kind,
    dir: PathBuf,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Set for a dedicated server: its directory, removed (and the server stopped) on drop.
    owned: Option<tempfile::TempDir>,
}

impl Server {
    /// The directory of the server's data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stop the server (its data stays). Only for a [`dedicated`] server.
    pub fn stop(&self) {
        assert!(
            self.owned.is_some(),
            "a shared server is not stopped by a test"
        );
        if let Err(m) = self
            .kind
            .run(&["stop".as_ref(), self.dir.as_os_str()], None)
        {
            panic!("{m}");
        }
    }

    /// Start the server again after [`Server::stop`]: same directory, same address.
    pub fn start_again(&self) {
        assert!(
            self.owned.is_some(),
            "a shared server is not restarted by a test"
        );
        let addr = self
            .kind
            .run(
                &["start".as_ref(), self.dir.as_os_str()],
                Some(std::process::id()),
            )
            .unwrap_or_else(|m| panic!("cannot start dev/{} again:\n{m}", self.kind.name()));
        assert_eq!(addr, self.addr, "a restarted server keeps its address");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.owned.is_some() {
            let _ = self
                .kind
                .run(&["stop".as_ref(), self.dir.as_os_str()], None);
        }
    }
}

/// A server of this test only, in a directory of its own; stopped when dropped (or, should the
/// test process die, by the script's watcher).
pub fn dedicated(kind: Kind) -> Server {
    kind.ensure();
    let owned = tempfile::Builder::new()
        .prefix(&format!("tidemark-{}-", kind.name()))
        .tempdir()
        .expect("temp dir");
    let dir = owned.path().to_path_buf();
    let addr = kind
        .run(
            &["start".as_ref(), dir.as_os_str()],
            Some(std::process::id()),
        )
        .unwrap_or_else(|m| panic!("cannot start a server through dev/{}:\n{m}", kind.name()));
    assert!(
        addr.starts_with("127.0.0.1:"),
        "unexpected address `{addr}`"
    );
    Server {
        kind,
        dir,
        addr,
        owned: Some(owned),
    }
}

/// The server of `kind` shared by every test of this test run (see the module docs).
pub fn shared(kind: Kind) -> Server {
    kind.ensure();
    let base = workspace_root().join("target").join("test-servers");
    std::fs::create_dir_all(&base).expect("create target/test-servers");
    let dir = base.join(kind.name());
    let lock = File::create(base.join(format!("{}.lock", kind.name()))).expect("lock file");
    lock.lock().expect("lock the shared server's directory");
    // A server of the run before this one may still be stopping (its watcher saw that run's
    // end a moment ago): it has an address but no longer answers. Wait until it is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut running = kind.run(&["addr".as_ref(), dir.as_os_str()], None);
    while let Ok(addr) = &running {
        let answers = addr
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .is_some_and(crate::port_accepts_connections);
        if answers || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        running = kind.run(&["addr".as_ref(), dir.as_os_str()], None);
    }
    let addr = match running {
        Ok(addr) => addr,
        Err(_) => {
            // Not running: what is left is a server of an earlier run; start afresh.
            let _ = std::fs::remove_dir_all(&dir);
            let owner = std::os::unix::process::parent_id();
            kind.run(&["start".as_ref(), dir.as_os_str()], Some(owner))
                .unwrap_or_else(|m| {
                    panic!(
                        "cannot start the shared server through dev/{}:\n{m}",
                        kind.name()
                    )
                })
        }
    };
    drop(lock);
    assert!(
        addr.starts_with("127.0.0.1:"),
        "unexpected address `{addr}`"
    );
    Server {
        kind,
        dir,
        addr,
        owned: None,
    }
}

/// A name no other test of any run uses: for topic prefixes, consumer groups and keyspaces
/// (lower-case letters, digits and `_`, starting with `prefix`).
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
