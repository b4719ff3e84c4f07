//! The CQL sink against a real server: the conformance suite, one test per property, on the
//! Apache Cassandra node the test run shares (`dev/cassandra`: the same CQL protocol and the
//! same last-write-wins by write timestamp as ScyllaDB), or on the ScyllaDB cluster
//! `TIDEMARK_SCYLLA_URI` names (e.g. `127.0.0.1:9042`); and the connection errors, which need no
//! server.

#[macro_use]
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

/// The CQL server under test: `TIDEMARK_SCYLLA_URI` (an external ScyllaDB) when set, else the
/// Apache Cassandra node shared by the test run (started through `dev/cassandra`).
fn nodes() -> (Vec<String>, Option<tidemark_testkit::servers::Server>) {
    match std::env::var(URI_ENV) {
        Ok(uri) => (uri.split(',').map(|s| s.trim().to_string()).collect(), None),
        Err(_) => {
            let node =
                tidemark_testkit::servers::shared(tidemark_testkit::servers::Kind::Cassandra);
            (vec![node.addr.clone()], Some(node))
        }
    }
}

/// A keyspace of this test on the CQL server, and a factory of sinks writing to it; the guard
/// drops the keyspace at the end.
fn cql_sinks() -> (impl Fn() -> ScyllaSink + Sync, DropKeyspace) {
    let (nodes, _server) = nodes();
    let keyspace = tidemark_testkit::servers::unique_name("tidemark_cf");
    let mut config = ScyllaConfig::new(nodes.clone(), keyspace.clone());
    config.replication_factor = 1;
    config.consistency = tidemark_sink::scylladb::ConsistencyLevel::One;
    config.concurrency = 16;
    // Exercise clustering columns and multi-row partitions on two tables.
    config.partition_keys = BTreeMap::from([
        ("cf_scan".to_string(), vec!["a".to_string()]),
        ("cf_permutations".to_string(), vec!["case_id".to_string()]),
    ]);
    let guard = DropKeyspace {
        nodes: nodes.clone(),
        keyspace: keyspace.clone(),
    };
    let mut first = ScyllaSink::connect(config.clone())
        .unwrap_or_else(|e| panic!("the CQL server at {nodes:?} must accept a connection: {e}"));
    first
        .init(&[])
        .unwrap_or_else(|e| panic!("init must create keyspace {keyspace}: {e}"));
    drop(first);
    let make = move || {
        ScyllaSink::connect(config.clone())
            .unwrap_or_else(|e| panic!("the CQL server must accept a connection: {e}"))
    };
    (make, guard)
}

mod cql_conformance {
    use super::*;
    conformance_tests!(
        cql_sinks,
        conformance::Options {
            proptest_cases: 32,
            concurrent_changes: 200,
        }
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
