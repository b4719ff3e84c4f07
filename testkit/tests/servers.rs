//! The shared servers: started once per test run, reused by the next test that asks, and
//! answering on their address.

use tidemark_testkit::servers::{self, Kind};

fn answers(addr: &str) -> bool {
    std::net::TcpStream::connect(addr).is_ok()
}

#[test]
fn the_shared_kafka_broker_is_started_once_and_answers() {
    let first = servers::shared(Kind::Kafka);
    let second = servers::shared(Kind::Kafka);
    assert_eq!(first.addr, second.addr);
    assert!(answers(&first.addr), "{} does not answer", first.addr);
}

#[test]
fn the_shared_registry_answers_its_confluent_api() {
    let registry = tidemark_testkit::Registry::shared();
    let addr = &registry.server.addr;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    use std::io::{Read, Write};
    write!(
        stream,
        "GET /apis/ccompat/v7/subjects HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn the_shared_cassandra_node_answers() {
    let node = servers::shared(Kind::Cassandra);
    assert!(answers(&node.addr), "{} does not answer", node.addr);
}
