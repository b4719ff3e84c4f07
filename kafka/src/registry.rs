//! The Confluent schema registry client, and the framing of Avro values on the changes and
//! drift topics.
//!
//! # Wire formats
//! A value is one of two framings of the same Avro binary datum (`schemas/avro/*.avsc`):
//! - **Confluent wire format** when `[transport.schema_registry]` is set: byte `0`, the
//!   registry's schema id as 4 bytes big-endian, then the datum.
//! - **Avro single-object encoding** otherwise: `C3 01`, the 8-byte CRC-64-AVRO (Rabin)
//!   fingerprint of the writer schema, then the datum (see `tidemark_schemas::avro`).
//!
//! The first byte tells them apart (`0` or `C3`), so a reader accepts both on any topic, with or
//! without a registry configured: a topic written by single-object producers before a switch-over
//! keeps being read after it, and a mixed topic never stalls.
//!
//! # Which topics
//! The values of the changes topics (`ChangeEvent`) and of the drift topic (`DriftEvent`), the
//! topics other tools read. The checkpoints topic stays single-object in every case: it is
//! tidemark's own state, read only by tidemark, and must stay readable when the registry is down
//! (capture and backfill resume from it). Dead letters are copied raw (whatever framing they
//! had) or are JSON, position markers and control messages are JSON.
//!
//! # Producer side
//! Subjects follow the *TopicNameStrategy*: the value schema of topic `T` is registered under the
//! subject `T-value`. A producer registers the current schema text of its record
//! (`POST /subjects/T-value/versions`, `{"schema": "<avsc>"}`) once per topic when it starts (the
//! publisher: every changes topic in scope; a table first seen later registers then), keeps the
//! id the registry answers and writes every value with it. Registering is idempotent on the
//! registry's side: the same schema text gets the same id again. A subject whose compatibility
//! rules refuse the schema is a definite error naming the subject.
//!
//! # Consumer side
//! A value starting with byte `0` and at least 5 bytes long is Confluent: the reader fetches the
//! writer schema of its id (`GET /schemas/ids/<id>`) once and caches the outcome per id. The
//! writer schema is accepted only if it *is* tidemark's schema of the expected record: its
//! Parsing Canonical Form has the Rabin fingerprint of the current schema or of a committed
//! snapshot in `schemas/avro/compat/` (the same set single-object decoding accepts). Then the
//! datum is decoded (older snapshots resolved to the current schema). An id the registry does
//! not know (404), a schema that is not valid Avro, not Avro at all, or another record is a
//! property of the message: it is *undecodable* with a reason naming the schema id; the applier
//! counts it, logs it with topic/partition/offset, sends it raw to the dead-letter topic, and
//! goes on. Those outcomes are cached too (ids are immutable in a registry), so a flood of such
//! messages costs one request per id.
//!
//! A registry that does not answer is not a property of the message: the request is retried,
//! and then the applier stops with [`Error::Registry`] (transient) without committing the batch;
//! a restart reads it again. A 401/403 is a configuration error and stops it too.
//!
//! # Requests
//! Blocking HTTP (ureq, rustls TLS with the webpki roots) with `Content-Type:
//! application/vnd.schemaregistry.v1+json`, optional basic auth (`transport.schema_registry.user`
//! and the password from `TIDEMARK_SCHEMA_REGISTRY_PASSWORD`), each request bounded by
//! `request_timeout_seconds`. Connection failures, timeouts, 5xx, 408 and 429 are retried with
//! exponential backoff (250 ms doubling to 5 s) for `transport.connect_timeout_seconds` in all;
//! then [`Error::Registry`] names the URL, what was asked, the attempts and the last failure.
//! Any other 4xx fails at once, with the registry's `error_code` and `message`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apache_avro::rabin::Rabin;
use tidemark_schemas::avro::{self, AvroRecord, RecordKind, Schema};
use tracing::{debug, warn};

use crate::config::REGISTRY_PASSWORD_ENV;
use crate::{Error, KafkaConfig, Result};

/// Content type of the registry's REST API (version 1).
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
const ACCEPT: &str =
    "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json, application/json";

/// The subject of a topic's value schema (TopicNameStrategy).
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// A writer schema accepted for decoding, or why a schema id is not.
type Accepted = std::result::Result<Arc<Schema>, String>;

/// A client of one schema registry, with the ids it registered and the schemas it fetched.
/// Shared between threads (`Arc`); every call is blocking.
pub(crate) struct Registry {
    url: String,
    agent: ureq::Agent,
    authorization: Option<String>,
    retry_for: Duration,
    /// Subject → id of tidemark's schema under it.
    registered: Mutex<HashMap<String, u32>>,
    /// (id, expected record) → the writer schema, or why it is not accepted.
    fetched: Mutex<HashMap<(u32, RecordKind), Accepted>>,
}

/// What the registry answered when it answered.
enum Answer {
    /// 2xx, the body as JSON.
    Ok(serde_json::Value),
    /// 4xx other than 408/429: status, and the registry's `error_code: message` (or the body).
    Refused(u16, String),
}

impl Registry {
    /// The client of `transport.schema_registry`, if set. Reads the password from
    /// [`REGISTRY_PASSWORD_ENV`] when a user is configured; makes no request.
    pub(crate) fn from_config(config: &KafkaConfig) -> Result<Option<Arc<Registry>>> {
        let Some(rc) = &config.schema_registry else {
            return Ok(None);
        };
        let authorization = match &rc.user {
            None => None,
            Some(user) => {
                let password = std::env::var(REGISTRY_PASSWORD_ENV)
                    .ok()
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| Error::Config {
                        setting: "transport.schema_registry.user".into(),
                        message: format!(
                            "a user is set but the environment variable {REGISTRY_PASSWORD_ENV} (its password; never written in the config file) is not"
                        ),
                    })?;
                Some(format!(
                    "Basic {}",
                    base64(format!("{user}:{password}").as_bytes())
                ))
            }
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(rc.request_timeout_seconds.max(1))))
            .user_agent(concat!("tidemark/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Some(Arc::new(Registry {
            url: rc.base_url().to_string(),
            agent,
            authorization,
            retry_for: config.connect_timeout(),
            registered: Mutex::new(HashMap::new()),
            fetched: Mutex::new(HashMap::new()),
        })))
    }

    /// The id of tidemark's current schema of `kind` under the value subject of `topic`,
    /// registering it on first use. Blocking.
    pub(crate) fn register(&self, topic: &str, kind: RecordKind) -> Result<u32> {
        let subject = value_subject(topic);
        if let Some(id) = self
            .registered
            .lock()
            .expect("registry cache")
            .get(&subject)
        {
            return Ok(*id);
        }
        let action = format!("registering the {kind} schema under subject `{subject}`");
        let body = serde_json::json!({ "schema": kind.schema_text() }).to_string();
        let path = format!("/subjects/{subject}/versions");
        let id = match self.request(&action, &path, Some(&body))? {
            Answer::Ok(v) => v
                .get("id")
                .and_then(serde_json::Value::as_u64)
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| self.error(&action, format!("the answer has no schema id: {v}")))?,
            Answer::Refused(status, detail) => {
                return Err(self.error(&action, format!("refused with HTTP {status}: {detail}")))
            }
        };
        debug!(registry = %self.url, %subject, id, "schema registered");
        self.registered
            .lock()
            .expect("registry cache")
            .insert(subject, id);
        Ok(id)
    }

    /// The writer schema of `id` if it is tidemark's schema of `kind` (current or a committed
    /// snapshot), else why not. Cached per id. Blocking; `Err` only when the registry did not
    /// answer or refused us (not the message's fault).
    pub(crate) fn writer_schema(&self, id: u32, kind: RecordKind) -> Result<Accepted> {
        if let Some(r) = self
            .fetched
            .lock()
            .expect("registry cache")
            .get(&(id, kind))
        {
            return Ok(r.clone());
        }
        let outcome = self.fetch(id, kind)?;
        if let Err(why) = &outcome {
            warn!(registry = %self.url, id, reason = %why, "schema id not accepted; its messages go to the dead-letter topic");
        }
        self.fetched
            .lock()
            .expect("registry cache")
            .insert((id, kind), outcome.clone());
        Ok(outcome)
    }

    fn fetch(&self, id: u32, kind: RecordKind) -> Result<Accepted> {
        let action = format!("fetching schema id {id}");
        let not_ours = |why: String| Ok(Err(format!("schema id {id} ({}): {why}", self.url)));
        let v = match self.request(&action, &format!("/schemas/ids/{id}"), None)? {
            Answer::Ok(v) => v,
            Answer::Refused(404, detail) => {
                return not_ours(format!("not in the schema registry ({detail})"))
            }
            Answer::Refused(status, detail) => {
                return Err(self.error(&action, format!("refused with HTTP {status}: {detail}")))
            }
        };
        if let Some(t) = v.get("schemaType").and_then(|t| t.as_str()) {
            if !t.eq_ignore_ascii_case("AVRO") {
                return not_ours(format!("a {t} schema, not Avro"));
            }
        }
        let Some(text) = v.get("schema").and_then(|s| s.as_str()) else {
            return not_ours(format!("the registry's answer has no schema: {v}"));
        };
        let schema = match Schema::parse_str(text) {
            Ok(s) => s,
            Err(e) => return not_ours(format!("not a valid Avro schema: {e}")),
        };
        let fp = schema.fingerprint::<Rabin>().bytes;
        let known = avro::known_fingerprints(kind);
        if fp.len() >= 8 && fp[..8] == avro::fingerprint(kind) {
            // The very schema this build writes: decode with the parsed original.
            return Ok(Ok(Arc::new(avro::schema(kind).clone())));
        }
        if known.iter().any(|k| fp.len() >= 8 && fp[..8] == k[..]) {
            return Ok(Ok(Arc::new(schema)));
        }
        let name = match &schema {
            Schema::Record(r) => r.name.fullname(None),
            other => format!("the schema {}", clip(&other.canonical_form())),
        };
        not_ours(format!(
            "{name} with fingerprint {}, not tidemark's io.tidemark.{kind} (this build reads {})",
            hex::encode(&fp[..fp.len().min(8)]),
            known.iter().map(hex::encode).collect::<Vec<_>>().join(", ")
        ))
    }

    fn error(&self, action: &str, message: String) -> Error {
        Error::Registry {
            url: self.url.clone(),
            action: action.to_string(),
            message,
            transient: false,
        }
    }

    /// One REST call, retried while the failure may pass.
    fn request(&self, action: &str, path: &str, body: Option<&str>) -> Result<Answer> {
        let url = format!("{}{path}", self.url);
        let started = Instant::now();
        let mut backoff = Duration::from_millis(250);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let failure = match self.once(&url, body) {
                Ok((status, text)) if (200..300).contains(&status) => {
                    return serde_json::from_str(&text).map(Answer::Ok).map_err(|e| {
                        self.error(
                            action,
                            format!("the answer is not JSON ({e}): {}", clip(&text)),
                        )
                    });
                }
                Ok((status, text)) if status >= 500 || status == 408 || status == 429 => {
                    format!("HTTP {status}: {}", detail(&text))
                }
                Ok((status, text)) => return Ok(Answer::Refused(status, detail(&text))),
                Err(e) if retryable(&e) => e.to_string(),
                Err(e) => return Err(self.error(action, format!("{url}: {e}"))),
            };
            if started.elapsed() + backoff >= self.retry_for {
                return Err(Error::Registry {
                    url: self.url.clone(),
                    action: action.to_string(),
                    message: format!(
                        "no usable answer after {attempts} attempt(s) over {}s, the last: {failure} (check transport.schema_registry.url and that the registry is up)",
                        started.elapsed().as_secs()
                    ),
                    transient: true,
                });
            }
            warn!(registry = %self.url, attempt = attempts, error = %failure, retry_in = ?backoff, "{action}: the schema registry did not answer; retrying");
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// One HTTP request: status and body text.
    fn once(
        &self,
        url: &str,
        body: Option<&str>,
    ) -> std::result::Result<(u16, String), ureq::Error> {
        let mut response = match body {
            Some(body) => {
                let mut r = self
                    .agent
                    .post(url)
                    .header("Content-Type", CONTENT_TYPE)
                    .header("Accept", ACCEPT);
                if let Some(a) = &self.authorization {
                    r = r.header("Authorization", a);
                }
                r.send(body)?
            }
            None => {
                let mut r = self.agent.get(url).header("Accept", ACCEPT);
                if let Some(a) = &self.authorization {
                    r = r.header("Authorization", a);
                }
                r.call()?
            }
        };
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string()?;
        Ok((status, text))
    }
}

/// Whether a failed request may succeed when repeated: the network, not the request.
fn retryable(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_)
            | ureq::Error::BodyStalled
    )
}

/// The registry's error as `error_code <code>: <message>`, or the body.
fn detail(text: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) if v.get("error_code").is_some() || v.get("message").is_some() => format!(
            "error_code {}: {}",
            v.get("error_code")
                .map(|c| c.to_string())
                .unwrap_or_else(|| "?".into()),
            v.get("message")
                .and_then(|m| m.as_str())
                .unwrap_or_default()
        ),
        _ => clip(text),
    }
}

fn clip(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_string(),
    }
}

/// Standard base64 with padding (RFC 4648 §4), for the basic-auth header.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Encode a value: Confluent wire format with `schema_id` when a registry is in use, else
/// single-object encoding.
pub(crate) fn encode_value<T: AvroRecord>(schema_id: Option<u32>, value: &T) -> Result<Vec<u8>> {
    match schema_id {
        Some(id) => avro::encode_confluent(id, value),
        None => avro::encode(value),
    }
    .map_err(|e| Error::Encode(e.to_string()))
}

/// Decode a value in either framing (see the module documentation). The inner `Err` is why the
/// message is undecodable (it names the schema id of a Confluent message); the outer one that
/// the registry could not be asked.
pub(crate) fn decode_value<T: AvroRecord>(
    registry: Option<&Registry>,
    bytes: &[u8],
) -> Result<std::result::Result<T, String>> {
    let Some(id) = avro::confluent_schema_id(bytes) else {
        return Ok(avro::decode::<T>(bytes).map_err(|e| format!("Avro: {e}")));
    };
    let Some(registry) = registry else {
        return Ok(Err(format!(
            "Avro: a Confluent wire-format message (schema id {id}) but transport.schema_registry is not configured"
        )));
    };
    Ok(match registry.writer_schema(id, T::KIND)? {
        Ok(writer) => avro::decode_confluent::<T>(bytes, &writer)
            .map_err(|e| format!("Avro (schema id {id}): {e}")),
        Err(why) => Err(format!("Avro: {why}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("user:pä?ss>", "dXNlcjpww6Q/c3M+"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded, "{plain}");
        }
    }

    #[test]
    fn registry_errors_are_summarised() {
        assert_eq!(
            detail(r#"{"error_code":40403,"message":"Schema 7 not found"}"#),
            "error_code 40403: Schema 7 not found"
        );
        assert_eq!(
            detail("<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
        assert_eq!(value_subject("tidemark.drift"), "tidemark.drift-value");
    }
}
