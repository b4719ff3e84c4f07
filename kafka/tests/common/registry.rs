//! A Confluent schema registry for tests, on tiny_http: the two REST endpoints tidemark uses,
//! answered as Confluent's registry answers them.
//!
//! - `POST /subjects/{subject}/versions`, body `{"schema": "<avro json>"}` (optional
//!   `"schemaType": "AVRO"`): `{"id": N}`. Ids are global and per distinct schema (compared by
//!   Parsing Canonical Form, as the registry normalises them): the same schema under any subject
//!   gets the same id; the first id is 1. A body that is not JSON with a `schema` string is
//!   422/42206, a schema that does not parse as Avro 422/42201.
//! - `GET /schemas/ids/{id}`: `{"schema": "<the text first registered>"}`, or 404/40403.
//! - anything else: 404/404 (or 405/405 for a known path with another method).
//!
//! Every answer has `Content-Type: application/vnd.schemaregistry.v1+json`. Test controls:
//! [`FakeRegistry::fail_next`] (the next n requests answer 503/50003), [`FakeRegistry::require_auth`]
//! (basic auth, else 401/40101), [`FakeRegistry::requests`] (what was asked, for caching checks).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tiny_http::{Header, Method, Response, Server};

#[derive(Default)]
struct State {
    /// id - 1 → (text as first registered, canonical form)
    schemas: Vec<(String, String)>,
    /// subject → ids registered under it, in order (versions)
    subjects: BTreeMap<String, Vec<u32>>,
    /// every request: (method, path)
    requests: Vec<(String, String)>,
    fail_next: u32,
    /// expected `Authorization` header value
    auth: Option<String>,
}

/// A running fake registry; stopped on drop.
pub struct FakeRegistry {
    pub url: String,
    state: Arc<Mutex<State>>,
    server: Arc<Server>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeRegistry {
    pub fn start() -> FakeRegistry {
        let server = Arc::new(Server::http("127.0.0.1:0").expect("bind the fake registry"));
        let addr = server.server_addr().to_ip().expect("an IP address");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (server, state, stop) = (server.clone(), state.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match server.recv_timeout(Duration::from_millis(100)) {
                        Ok(Some(request)) => serve(&state, request),
                        Ok(None) => {}
                        Err(_) => break,
                    }
                }
            })
        };
        FakeRegistry {
            url: format!("http://{addr}"),
            state,
            server,
            stop,
            thread: Some(thread),
        }
    }

    /// Register `schema` under `subject` as a client would; its id.
    pub fn register(&self, subject: &str, schema: &str) -> u32 {
        let mut s = self.state.lock().unwrap();
        register(&mut s, subject, schema).expect("a valid Avro schema")
    }

    /// The id of a registered schema (same canonical form), if any.
    pub fn id_of(&self, schema: &str) -> Option<u32> {
        let canonical = apache_avro::Schema::parse_str(schema)
            .expect("valid")
            .canonical_form();
        let s = self.state.lock().unwrap();
        s.schemas
            .iter()
            .position(|(_, c)| *c == canonical)
            .map(|i| i as u32 + 1)
    }

    /// The ids registered under `subject`, oldest first.
    pub fn versions(&self, subject: &str) -> Vec<u32> {
        let s = self.state.lock().unwrap();
        s.subjects.get(subject).cloned().unwrap_or_default()
    }

    /// Every request so far, as (method, path).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().requests.clone()
    }

    /// How many requests had this method and path.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|(m, p)| m == method && p == path)
            .count()
    }

    /// Answer the next `n` requests with 503 (error_code 50003).
    pub fn fail_next(&self, n: u32) {
        self.state.lock().unwrap().fail_next = n;
    }

    /// Require HTTP basic auth with these credentials from now on.
    pub fn require_auth(&self, user: &str, password: &str) {
        self.state.lock().unwrap().auth = Some(basic_auth(user, password));
    }

    /// Answer everyone again (after [`FakeRegistry::require_auth`]).
    pub fn allow_anyone(&self) {
        self.state.lock().unwrap().auth = None;
    }
}

/// The `Authorization` header value of HTTP basic auth, written out here (base64, RFC 4648) so
/// the tests do not share tidemark's code.
pub fn basic_auth(user: &str, password: &str) -> String {
    let plain = format!("{user}:{password}");
    let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut coded = String::new();
    for chunk in plain.as_bytes().chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            coded.push(if i <= chunk.len() {
                table[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    format!("Basic {coded}")
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn register(state: &mut State, subject: &str, schema: &str) -> Result<u32, String> {
    let canonical = apache_avro::Schema::parse_str(schema)
        .map_err(|e| e.to_string())?
        .canonical_form();
    let id = match state.schemas.iter().position(|(_, c)| *c == canonical) {
        Some(i) => i as u32 + 1,
        None => {
            state.schemas.push((schema.to_string(), canonical));
            state.schemas.len() as u32
        }
    };
    let versions = state.subjects.entry(subject.to_string()).or_default();
    if !versions.contains(&id) {
        versions.push(id);
    }
    Ok(id)
}

fn error(status: u16, code: u32, message: &str) -> (u16, String) {
    (
        status,
        serde_json::json!({ "error_code": code, "message": message }).to_string(),
    )
}

fn serve(state: &Mutex<State>, mut request: tiny_http::Request) {
    let method = request.method().clone();
    let path = request
        .url()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    let auth = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str().to_string());
    let mut body = String::new();
    let _ = request.as_reader().read_to_string(&mut body);
    let (status, text) = {
        let mut s = state.lock().unwrap();
        s.requests.push((method.to_string(), path.clone()));
        answer(&mut s, &method, &path, auth.as_deref(), &body)
    };
    let response = Response::from_string(text)
        .with_status_code(status)
        .with_header(
            Header::from_bytes("Content-Type", "application/vnd.schemaregistry.v1+json")
                .expect("header"),
        );
    let _ = request.respond(response);
}

fn answer(
    s: &mut State,
    method: &Method,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, String) {
    if s.fail_next > 0 {
        s.fail_next -= 1;
        return error(
            503,
            50003,
            "Error while forwarding the request to the leader",
        );
    }
    if let Some(want) = &s.auth {
        if auth != Some(want.as_str()) {
            return error(401, 40101, "Unauthorized");
        }
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["subjects", subject, "versions"] => {
            if *method != Method::Post {
                return error(405, 405, "HTTP 405 Method Not Allowed");
            }
            let request: serde_json::Value = match serde_json::from_str(body) {
                Ok(v) => v,
                Err(e) => return error(422, 42206, &format!("Unrecognized body: {e}")),
            };
            if request
                .get("schemaType")
                .and_then(|t| t.as_str())
                .is_some_and(|t| t != "AVRO")
            {
                return error(422, 42201, "Only AVRO is supported by this registry");
            }
            let Some(schema) = request.get("schema").and_then(|v| v.as_str()) else {
                return error(422, 42206, "The request has no `schema` string");
            };
            match register(s, subject, schema) {
                Ok(id) => (200, serde_json::json!({ "id": id }).to_string()),
                Err(e) => error(422, 42201, &format!("Invalid schema {schema}: {e}")),
            }
        }
        ["schemas", "ids", id] => {
            if *method != Method::Get {
                return error(405, 405, "HTTP 405 Method Not Allowed");
            }
            let found = id
                .parse::<usize>()
                .ok()
                .filter(|i| *i >= 1)
                .and_then(|i| s.schemas.get(i - 1));
            match found {
                Some((text, _)) => (200, serde_json::json!({ "schema": text }).to_string()),
                None => error(404, 40403, &format!("Schema {id} not found")),
            }
        }
        _ => error(404, 404, "HTTP 404 Not Found"),
    }
}
