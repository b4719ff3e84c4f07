//! The schema registry of these tests: Apicurio Registry (its Confluent-compatible API, started
//! through `dev/registry` by the test kit), reached directly or through a [`RegistryProxy`].
//!
//! The proxy, on tiny_http, forwards every request to the real registry and hands its answer
//! back unchanged. It records what was asked (so a test can check what tidemark caches) and can
//! inject the two faults the real registry cannot be made to produce here:
//! - [`RegistryProxy::fail_next`]: the next n requests answer 503 (error_code 50003), as a
//!   Confluent registry does while it has no leader. Apicurio never answers 5xx on purpose;
//!   stopped, it refuses connections instead (the Sakila test of the root package stops it).
//! - [`RegistryProxy::require_auth`]: HTTP basic auth, else 401 (error_code 40101). Apicurio's
//!   authentication needs an OpenID Connect server (Keycloak), which the tests do not run.
//!
//! [`subject_ids`], [`register`] and [`lookup`] ask the real registry directly.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tiny_http::{Header, Response, Server};

#[derive(Default)]
struct State {
    /// every request: (method, path)
    requests: Vec<(String, String)>,
    fail_next: u32,
    /// expected `Authorization` header value
    auth: Option<String>,
}

/// A proxy in front of a real registry; stopped on drop.
pub struct RegistryProxy {
    /// The proxy's base URL (the upstream's path included), for `transport.schema_registry`.
    pub url: String,
    state: Arc<Mutex<State>>,
    server: Arc<Server>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RegistryProxy {
    /// A proxy of the registry at `upstream` (`http://host:port/apis/ccompat/v7`).
    pub fn start(upstream: &str) -> RegistryProxy {
        let server = Arc::new(Server::http("127.0.0.1:0").expect("bind the registry proxy"));
        let addr = server.server_addr().to_ip().expect("an IP address");
        // The upstream's path prefix is kept: the proxy's URL has the same path.
        let after_scheme = upstream
            .strip_prefix("http://")
            .expect("an http:// upstream");
        let (authority, prefix) = after_scheme
            .split_once('/')
            .map(|(a, p)| (a.to_string(), format!("/{p}")))
            .unwrap_or((after_scheme.to_string(), String::new()));
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let thread = {
            let (server, state, stop) = (server.clone(), state.clone(), stop.clone());
            let upstream = format!("http://{authority}");
            let prefix = prefix.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match server.recv_timeout(Duration::from_millis(100)) {
                        Ok(Some(request)) => serve(&state, &agent, &upstream, &prefix, request),
                        Ok(None) => {}
                        Err(_) => break,
                    }
                }
            })
        };
        RegistryProxy {
            url: format!("http://{addr}{prefix}"),
            state,
            server,
            stop,
            thread: Some(thread),
        }
    }

    /// Every request so far, as (method, path below the registry's base URL).
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

    /// Answer the next `n` requests with 503 (error_code 50003) instead of forwarding them.
    pub fn fail_next(&self, n: u32) {
        self.state.lock().unwrap().fail_next = n;
    }

    /// Require HTTP basic auth with these credentials from now on (else 401, error_code 40101).
    pub fn require_auth(&self, user: &str, password: &str) {
        self.state.lock().unwrap().auth = Some(basic_auth(user, password));
    }

    /// Forward everyone's requests again (after [`RegistryProxy::require_auth`]).
    pub fn allow_anyone(&self) {
        self.state.lock().unwrap().auth = None;
    }
}

impl Drop for RegistryProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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

fn error(status: u16, code: u32, message: &str) -> (u16, String, String) {
    (
        status,
        "application/vnd.schemaregistry.v1+json".to_string(),
        serde_json::json!({ "error_code": code, "message": message }).to_string(),
    )
}

fn serve(
    state: &Mutex<State>,
    agent: &ureq::Agent,
    upstream: &str,
    prefix: &str,
    mut request: tiny_http::Request,
) {
    let method = request.method().to_string();
    let full = request.url().to_string();
    let path = full.split('?').next().unwrap_or_default();
    let path = path.strip_prefix(prefix).unwrap_or(path).to_string();
    let header = |name: &'static str| {
        request
            .headers()
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.as_str().to_string())
    };
    let auth = header("Authorization");
    let content_type = header("Content-Type");
    let mut body = Vec::new();
    let _ = request.as_reader().read_to_end(&mut body);
    let injected = {
        let mut s = state.lock().unwrap();
        s.requests.push((method.clone(), path));
        if s.fail_next > 0 {
            s.fail_next -= 1;
            Some(error(
                503,
                50003,
                "Error while forwarding the request to the leader",
            ))
        } else {
            match &s.auth {
                Some(want) if auth.as_deref() != Some(want.as_str()) => {
                    Some(error(401, 40101, "Unauthorized"))
                }
                _ => None,
            }
        }
    };
    let (status, content_type, text) =
        injected.unwrap_or_else(|| forward(agent, upstream, &method, &full, content_type, body));
    let response = Response::from_string(text)
        .with_status_code(status)
        .with_header(Header::from_bytes("Content-Type", content_type).expect("header"));
    let _ = request.respond(response);
}

/// The real registry's answer to the same request: status, content type, body.
fn forward(
    agent: &ureq::Agent,
    upstream: &str,
    method: &str,
    path_and_query: &str,
    content_type: Option<String>,
    body: Vec<u8>,
) -> (u16, String, String) {
    let mut builder = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{upstream}{path_and_query}"));
    if let Some(ct) = content_type {
        builder = builder.header("Content-Type", ct);
    }
    let request = builder.body(body).expect("a request");
    match agent.run(request) {
        Ok(mut response) => {
            let ct = response
                .headers()
                .get("Content-Type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_string();
            let text = response.body_mut().read_to_string().unwrap_or_default();
            (response.status().as_u16(), ct, text)
        }
        // The registry is down: a proxy answers 502, as a load balancer would.
        Err(e) => error(502, 50201, &format!("the registry behind the proxy: {e}")),
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn call(method: &str, url: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
    let builder = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("Content-Type", "application/vnd.schemaregistry.v1+json");
    let request = builder
        .body(body.map(|b| b.to_string()).unwrap_or_default())
        .expect("a request");
    let mut response = agent()
        .run(request)
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let text = response.body_mut().read_to_string().expect("a body");
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (response.status().as_u16(), json)
}

/// The schema ids of the versions of `subject` in the registry at `url`, oldest first (empty
/// when the subject does not exist).
pub fn subject_ids(url: &str, subject: &str) -> Vec<u32> {
    let (status, versions) = call("GET", &format!("{url}/subjects/{subject}/versions"), None);
    if status == 404 {
        return Vec::new();
    }
    assert_eq!(status, 200, "versions of {subject}: {versions}");
    let mut out = Vec::new();
    for v in versions.as_array().expect("a list of versions") {
        let (status, version) = call(
            "GET",
            &format!("{url}/subjects/{subject}/versions/{v}"),
            None,
        );
        assert_eq!(status, 200, "version {v} of {subject}: {version}");
        out.push(version["id"].as_u64().expect("an id") as u32);
    }
    out
}

/// Register `schema` under `subject` as a client would; its id.
pub fn register(url: &str, subject: &str, schema: &str) -> u32 {
    let (status, answer) = call(
        "POST",
        &format!("{url}/subjects/{subject}/versions"),
        Some(serde_json::json!({ "schema": schema })),
    );
    assert_eq!(status, 200, "registering under {subject}: {answer}");
    answer["id"].as_u64().expect("an id") as u32
}

/// The id of `schema` under `subject`, if it was registered there.
pub fn lookup(url: &str, subject: &str, schema: &str) -> Option<u32> {
    let (status, answer) = call(
        "POST",
        &format!("{url}/subjects/{subject}"),
        Some(serde_json::json!({ "schema": schema })),
    );
    (status == 200).then(|| answer["id"].as_u64().expect("an id") as u32)
}

/// The schema text the registry holds for `id`.
pub fn schema_text(url: &str, id: u32) -> String {
    let (status, answer) = call("GET", &format!("{url}/schemas/ids/{id}"), None);
    assert_eq!(status, 200, "schema {id}: {answer}");
    answer["schema"].as_str().expect("a schema").to_string()
}

/// Set the compatibility rule of `subject`.
pub fn set_compatibility(url: &str, subject: &str, level: &str) {
    let (status, answer) = call(
        "PUT",
        &format!("{url}/config/{subject}"),
        Some(serde_json::json!({ "compatibility": level })),
    );
    assert_eq!(status, 200, "compatibility of {subject}: {answer}");
}
