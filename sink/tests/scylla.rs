//! The ScyllaDB sink against a real server: the conformance suite when `TIDEMARK_SCYLLA_URI` is
//! set (e.g. `127.0.0.1:9042`), and the connection errors, which need no server.
//!
//! ScyllaDB cannot be installed on this project's machines (DESIGN.md §8, §9); start one with
//! `docker run --rm -p 9042:9042 scylladb/scylla --smp 1` and run
//! `TIDEMARK_SCYLLA_URI=127.0.0.1:9042 cargo nextest run -p tidemark-sink`.

mod conformance;

use std::collections::BTreeMap;

use tidemark_sink::{Error, ScyllaConfig, ScyllaSink};

const URI_ENV: &str = "TIDEMARK_SCYLLA_URI";

/// Drops the test keyspace at the end, also when a check panics.
struct DropKeyspace {
    nodes: Vec<String>,
    keyspace: String,
}

impl Drop for DropKeyspace {
    fn drop(&mut self) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let result = rt.block_on(async {
            let mut builder =
                scylla::client::session_builder::SessionBuilder::new().known_nodes(&self.nodes);
            if let (Ok(u), Ok(p)) = (
                std::env::var("TIDEMARK_SCYLLA_USER"),
                std::env::var("TIDEMARK_SCYLLA_PASSWORD"),
            ) {
                builder = builder.user(u, p);
            }
            let session = builder.build().await.map_err(|e| e.to_string())?;
            session
                .query_unpaged(format!("DROP KEYSPACE IF EXISTS \"{}\"", self.keyspace), ())
                .await
                .map_err(|e| e.to_string())
        });
        if let Err(e) = result {
            eprintln!("could not drop test keyspace {}: {e}", self.keyspace);
        }
    }
}

#[test]
fn scylla_conformance() {
    let Ok(uri) = std::env::var(URI_ENV) else {
        eprintln!(
            "scylla_conformance NOT RUN: {URI_ENV} is not set, so no ScyllaDB server was tested. \
             Start one (docker run --rm -p 9042:9042 scylladb/scylla --smp 1) and run \
             {URI_ENV}=127.0.0.1:9042 cargo nextest run -p tidemark-sink"
        );
        return;
    };
    let nodes: Vec<String> = uri.split(',').map(|s| s.trim().to_string()).collect();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let keyspace = format!("tidemark_cf_{stamp}_{}", std::process::id());
    let mut config = ScyllaConfig::new(nodes.clone(), keyspace.clone());
    config.replication_factor = 1;
    config.consistency = tidemark_sink::scylladb::ConsistencyLevel::One;
    config.concurrency = 16;
    // Exercise clustering columns and multi-row partitions on two tables.
    config.partition_keys = BTreeMap::from([
        ("cf_scan".to_string(), vec!["a".to_string()]),
        ("cf_permutations".to_string(), vec!["case_id".to_string()]),
    ]);
    let _cleanup = DropKeyspace {
        nodes,
        keyspace: keyspace.clone(),
    };
    let mut first = ScyllaSink::connect(config.clone())
        .unwrap_or_else(|e| panic!("ScyllaDB at {uri} ({URI_ENV}) must accept a connection: {e}"));
    first
        .init(&[])
        .unwrap_or_else(|e| panic!("init must create keyspace {keyspace}: {e}"));
    drop(first);
    let make = || {
        ScyllaSink::connect(config.clone())
            .unwrap_or_else(|e| panic!("ScyllaDB at {uri} must accept a connection: {e}"))
    };
    conformance::run_all(
        &make,
        conformance::Options {
            proptest_cases: 32,
            concurrent_changes: 200,
        },
    );
}

#[test]
fn scylla_connection_failure_names_the_node() {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let mut config = ScyllaConfig::new(vec!["127.0.0.1:1".into()], "tidemark");
    config.connect_timeout_seconds = 2;
    let err = match ScyllaSink::connect(config) {
        Ok(_) => panic!("connecting to 127.0.0.1:1 must fail: nothing listens there"),
        Err(e) => e,
    };
    assert!(
        matches!(&err, Error::Connect { nodes, .. } if nodes == "127.0.0.1:1"),
        "the error must be a connection error naming the node: {err}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with("cannot reach ScyllaDB node(s) 127.0.0.1:1: "),
        "the message names the node: {text}"
    );
    assert!(err.is_transient(), "an unreachable cluster may come back");
}

#[test]
fn scylla_bad_config_fails_before_connecting() {
    let err = match ScyllaSink::connect(ScyllaConfig::new(vec!["no-port".into()], "k")) {
        Ok(_) => panic!("a node without port must be rejected"),
        Err(e) => e,
    };
    assert!(
        matches!(&err, Error::Config { setting, .. } if setting == "nodes"),
        "the error names the setting: {err}"
    );
}
