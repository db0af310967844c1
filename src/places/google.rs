//! The two Google providers: legacy Nearby Search and Places API (New) (SPEC §5).
//!
//! Both run on a worker thread and block on one HTTP request through a shared [`ureq::Agent`].
//! Whatever happens, [`Provider::nearby`] returns a body in the shape of the legacy Nearby
//! Search response, because that is what clients of the herd expect:
//!
//! - **legacy** (`--places google`): Google already speaks that shape, so a reply that is
//!   Google's JSON (an object with a string `status`) is passed through as Google sent it, even
//!   `REQUEST_DENIED` with a non-200 HTTP status;
//! - **New** (`--places google-new`): `{"places": [...]}` is converted by [`places_to_legacy`],
//!   and Google's `{"error": {...}}` by [`new_error_to_legacy`];
//! - every other failure (refused connection, timeout, an HTTP error without a Google body,
//!   invalid JSON, a body over [`MAX_BODY_BYTES`]) becomes [`error_reply`] with
//!   `UNKNOWN_ERROR` and an `error_message` saying what went wrong.
//!
//! The API key is a secret that costs money: it is never on the command line ([`read_key`]
//! takes it from a file or the environment), never in a log line and never in a reply. Error
//! texts from `ureq` can hold the request URL (and so the key), so every message passes
//! through [`scrub`] first.
//!
//! Only the pure parts here are unit-tested without a network ([`legacy_url`],
//! [`new_request_body`], [`places_to_legacy`], …); the tests of `nearby` talk to a tiny stub
//! HTTP server on 127.0.0.1.

use std::ffi::OsString;

use crate::json;
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Map, Number, Value, json};
use ureq::http::{Response, StatusCode};

use super::{MAX_BOUND, Provider, Query};

/// The environment variable that holds the API key when no key file is given. The key is
/// never taken from the command line, where `ps` would show it to every user of the machine.
pub const KEY_ENV: &str = "GOOGLE_PLACES_API_KEY";

/// The largest reply body read from Google, in bytes. A real reply of 20 places is a few tens
/// of KiB; the limit only stops a broken or hostile server from filling the memory.
pub const MAX_BODY_BYTES: u64 = 4 * 1024 * 1024;

/// The longest wait for a TCP (and TLS) connection, so a host that drops SYNs fails fast
/// instead of using the whole request time; the request timeout still bounds the total.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Path of the legacy Nearby Search endpoint, appended to the base URL.
pub const LEGACY_PATH: &str = "/maps/api/place/nearbysearch/json";

/// Path of the Places API (New) Nearby Search endpoint, appended to the base URL.
pub const NEW_PATH: &str = "/v1/places:searchNearby";

/// The `X-Goog-FieldMask` of New-API requests: exactly the fields [`places_to_legacy`] reads.
/// Google prices each call by the most expensive field asked for, so asking for more would
/// cost money for data the herd throws away (`rating` and `userRatingCount` are what make the
/// call an "Enterprise" one; they are there because legacy replies always had them).
pub const FIELD_MASK: &str = "places.id,places.displayName,places.location,places.types,\
places.shortFormattedAddress,places.formattedAddress,places.rating,places.userRatingCount,\
places.businessStatus";

/// What replaces the key (or any `key=` URL parameter) in messages and logs.
const REDACTED: &str = "REDACTED";

/// Which of Google's two Nearby Search APIs a [`Google`] provider calls.
///
/// Older Google Cloud projects still have the legacy one; new projects only get the New one.
/// Both answer the herd's clients in the legacy shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `GET {base}/maps/api/place/nearbysearch/json?location=…&radius=…&key=…`.
    Legacy,
    /// `POST {base}/v1/places:searchNearby` with the key in `X-Goog-Api-Key`.
    New,
}

impl Api {
    /// The base URL of the real Google service for this API; `--places-url` overrides it so
    /// tests and benchmarks can point the herd at a stub on 127.0.0.1.
    pub fn default_base_url(&self) -> &'static str {
        match self {
            Api::Legacy => "https://maps.googleapis.com",
            Api::New => "https://places.googleapis.com",
        }
    }

    /// The provider name used on the command line and in logs.
    pub fn name(&self) -> &'static str {
        match self {
            Api::Legacy => "google",
            Api::New => "google-new",
        }
    }
}

/// A Google places provider: which API, where it is, the key, and one HTTP agent shared by
/// every worker thread (the agent keeps a pool of open connections, so a burst of lookups
/// does not pay a TLS handshake each).
///
/// `Debug` is written by hand so that printing a provider never prints the key.
pub struct Google {
    api: Api,
    base_url: String,
    key: String,
    timeout: Duration,
    agent: ureq::Agent,
}

impl fmt::Debug for Google {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Google")
            .field("api", &self.api)
            .field("base_url", &self.base_url)
            .field("key", &REDACTED)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Google {
    /// Builds a provider for `api` at `base_url` (a trailing `/` is ignored).
    ///
    /// `timeout` bounds the whole request, connect to last body byte: ureq has no timeout at
    /// all by default, and a worker stuck forever would be a WHATSAT never answered. The agent
    /// also treats 4xx/5xx as ordinary replies (Google puts its reasons in their bodies),
    /// ignores proxy variables from the environment (a stub on 127.0.0.1 must be reached
    /// directly) and follows no redirect (which could carry the key header elsewhere).
    pub fn new(api: Api, base_url: &str, key: String, timeout: Duration) -> Google {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout.min(MAX_CONNECT_TIMEOUT)))
            .user_agent(concat!("proxy-herd/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Google {
            api,
            base_url: base_url.trim_end_matches('/').to_string(),
            key,
            timeout,
            agent,
        }
    }

    /// Legacy lookup: one GET; Google's own JSON comes back untouched.
    fn legacy(&self, query: &Query) -> Result<Value, String> {
        let url = legacy_url(&self.base_url, query, &self.key);
        log::info!("{}: GET {}", self.api.name(), scrub(&url, &self.key));
        let response = self.agent.get(&url).call().map_err(|e| self.describe(&e))?;
        let (status, body) = self.read_body(response)?;
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) if map.get("status").is_some_and(Value::is_string) => {
                Ok(self.scrub_error_message(map))
            }
            _ if !status.is_success() => Err(http_error(status)),
            Ok(_) => Err("the reply is JSON but not a Nearby Search reply (no \"status\")".into()),
            Err(e) => Err(format!("the reply is not valid JSON: {e}")),
        }
    }

    /// New-API lookup: one POST, then conversion to the legacy shape.
    fn new_api(&self, query: &Query) -> Result<Value, String> {
        if query.max_results == 0 {
            // A WHATSAT with bound 0 wants no places: asking Google would cost a call for a
            // reply the loop cuts to nothing (and Google rejects maxResultCount 0 anyway).
            log::info!("{}: bound 0, no request sent", self.api.name());
            return Ok(legacy_reply(Vec::new()));
        }
        let url = format!("{}{NEW_PATH}", self.base_url);
        let body = new_request_body(query).to_string();
        log::info!(
            "{}: POST {} {}",
            self.api.name(),
            scrub(&url, &self.key),
            body
        );
        let response = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json")
            .header("X-Goog-Api-Key", &self.key)
            .header("X-Goog-FieldMask", FIELD_MASK)
            .send(body)
            .map_err(|e| self.describe(&e))?;
        let (status, body) = self.read_body(response)?;
        match serde_json::from_slice::<Value>(&body) {
            Ok(reply) if reply.get("error").is_some_and(Value::is_object) => {
                Ok(new_error_to_legacy(&reply["error"]))
            }
            _ if !status.is_success() => Err(http_error(status)),
            Ok(reply) => places_to_legacy(&reply),
            Err(e) => Err(format!("the reply is not valid JSON: {e}")),
        }
    }

    /// Reads the whole body, at most [`MAX_BODY_BYTES`] of it, within the request timeout.
    fn read_body(
        &self,
        mut response: Response<ureq::Body>,
    ) -> Result<(StatusCode, Vec<u8>), String> {
        let status = response.status();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES)
            .read_to_vec()
            .map_err(|e| self.describe(&e))?;
        Ok((status, body))
    }

    /// Says in words what a ureq error means for the client (the text is not scrubbed yet).
    fn describe(&self, err: &ureq::Error) -> String {
        let timed_out = match err {
            ureq::Error::Timeout(_) => true,
            ureq::Error::Io(e) => e.kind() == std::io::ErrorKind::TimedOut,
            _ => false,
        };
        if timed_out {
            format!(
                "no reply from {} within {} ({err})",
                self.base_url,
                seconds(self.timeout)
            )
        } else if let ureq::Error::BodyExceedsLimit(_) = err {
            format!("the reply body was too large (over {MAX_BODY_BYTES} bytes)")
        } else {
            format!("request to {} failed: {err}", self.base_url)
        }
    }

    /// A legacy body is passed through, but Google's `error_message` is checked for the key
    /// all the same: the key must never reach a client, whoever wrote it into a message.
    fn scrub_error_message(&self, mut map: Map<String, Value>) -> Value {
        if let Some(Value::String(message)) = map.get_mut("error_message") {
            *message = scrub(message, &self.key);
        }
        Value::Object(map)
    }
}

impl Provider for Google {
    fn name(&self) -> &'static str {
        self.api.name()
    }

    /// Legacy Nearby Search always returns up to 20 places whatever the bound, so every
    /// WHATSAT shares one request; the New API is asked for `maxResultCount` = bound, so only
    /// WHATSATs with the same bound can share one.
    fn fetch_bound(&self, bound: usize) -> usize {
        match self.api {
            Api::Legacy => MAX_BOUND,
            Api::New => bound.min(MAX_BOUND),
        }
    }

    fn nearby(&self, query: &Query) -> Value {
        let started = Instant::now();
        let result = match self.api {
            Api::Legacy => self.legacy(query),
            Api::New => self.new_api(query),
        };
        let ms = started.elapsed().as_millis();
        match result {
            Ok(reply) => {
                let status = reply.get("status").and_then(Value::as_str).unwrap_or("");
                let count = reply
                    .get("results")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                match reply.get("error_message").and_then(Value::as_str) {
                    Some(message) if status != "OK" => log::warn!(
                        "{}: {status} after {ms} ms: {}",
                        self.api.name(),
                        scrub(message, &self.key)
                    ),
                    _ => log::info!("{}: {status}, {count} results in {ms} ms", self.api.name()),
                }
                reply
            }
            Err(message) => {
                let message = scrub(&message, &self.key);
                log::warn!(
                    "{}: lookup failed after {ms} ms: {message}",
                    self.api.name()
                );
                error_reply("UNKNOWN_ERROR", &message)
            }
        }
    }
}

/// Reads the API key: from `key_file` (trimmed) when given, else from [`KEY_ENV`].
///
/// The `Err` is one line for the start-up error, naming both ways to give a key; it never
/// contains the key itself. A key must be one word of printable ASCII: it goes into an HTTP
/// header and a URL, and a stray newline from an editor is trimmed away.
pub fn read_key(key_file: Option<&Path>) -> Result<String, String> {
    let from_file = match key_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            format!(
                "cannot read the Google Places API key file {}: {e} ({HOW_TO_GIVE_KEY})",
                path.display()
            )
        })?),
        None => None,
    };
    key_from(key_file, from_file, std::env::var_os(KEY_ENV))
}

/// How to give a key, for the start-up error messages.
const HOW_TO_GIVE_KEY: &str = "give the key in a file with --places-key-file FILE \
or in the environment variable GOOGLE_PLACES_API_KEY";

/// The checks of [`read_key`] on what was read, kept apart so tests need not change the
/// process environment (which other threads may be reading).
fn key_from(
    key_file: Option<&Path>,
    file_bytes: Option<Vec<u8>>,
    env: Option<OsString>,
) -> Result<String, String> {
    let (raw, source) = match (key_file, file_bytes) {
        (Some(path), Some(bytes)) => (
            String::from_utf8(bytes).ok(),
            format!("the key file {}", path.display()),
        ),
        _ => match env {
            Some(value) => (value.into_string().ok(), format!("${KEY_ENV}")),
            None => return Err(format!("no Google Places API key: {HOW_TO_GIVE_KEY}")),
        },
    };
    let key = raw.as_deref().map(str::trim).unwrap_or_default();
    if key.is_empty() {
        return Err(format!(
            "no Google Places API key in {source}: {HOW_TO_GIVE_KEY}"
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "the Google Places API key in {source} is not one word of printable ASCII \
             characters: {HOW_TO_GIVE_KEY}"
        ));
    }
    Ok(key.to_string())
}

/// The legacy request URL: `{base}/maps/api/place/nearbysearch/json?location=LAT,LNG&radius=M&key=KEY`.
///
/// Built by hand rather than with ureq's `.query()`, which would encode the comma of
/// `location` as `%2C`; the coordinates are the client's own text, so Google sees exactly
/// what the client sent. Each value is still percent-encoded (a `+` must not become a space).
pub fn legacy_url(base_url: &str, query: &Query, key: &str) -> String {
    format!(
        "{}{LEGACY_PATH}?location={},{}&radius={}&key={}",
        base_url.trim_end_matches('/'),
        percent_encode(&query.lat_text),
        percent_encode(&query.lng_text),
        percent_encode(&query.radius_m_text),
        percent_encode(key)
    )
}

/// The JSON body of a New-API request: a circle around the client, radius in metres, and
/// `maxResultCount` (Google accepts 1 to 20). Numbers keep the client's text, so the request
/// says `34.068930`, not a float's rendering of it.
pub fn new_request_body(query: &Query) -> Value {
    json!({
        "locationRestriction": {
            "circle": {
                "center": {
                    "latitude": number(&query.lat_text, query.lat),
                    "longitude": number(&query.lng_text, query.lng),
                },
                "radius": number(&query.radius_m_text, query.radius_m),
            }
        },
        "maxResultCount": query.max_results.clamp(1, MAX_BOUND),
    })
}

/// A JSON number with the exact text `text`, or `fallback` when the text is not JSON.
fn number(text: &str, fallback: f64) -> Value {
    match serde_json::from_str::<Number>(text) {
        Ok(n) => Value::Number(n),
        Err(_) => Number::from_f64(fallback).map_or(Value::Null, Value::Number),
    }
}

/// Converts a New-API reply `{"places": [...]}` to the legacy Nearby Search shape.
///
/// Each place keeps only the fields that a legacy reply has, renamed, with keys in the
/// alphabetical order Google prints them in. No `places` (Google omits an empty list) means
/// `ZERO_RESULTS`. Anything but an object with an optional array is not a reply at all.
pub fn places_to_legacy(reply: &Value) -> Result<Value, String> {
    let Some(object) = reply.as_object() else {
        return Err("the reply is JSON but not a searchNearby reply (not an object)".into());
    };
    let places = match object.get("places") {
        None => Vec::new(),
        Some(Value::Array(places)) => places.iter().filter_map(place_to_legacy).collect(),
        Some(_) => return Err("the reply's \"places\" is not an array".into()),
    };
    Ok(legacy_reply(places))
}

/// Wraps converted places in `html_attributions`, `results` and `status`.
fn legacy_reply(results: Vec<Value>) -> Value {
    let status = if results.is_empty() {
        "ZERO_RESULTS"
    } else {
        "OK"
    };
    json!({
        "html_attributions": [],
        "results": results,
        "status": status,
    })
}

/// One New-API place as a legacy result, or `None` if it is not an object. Fields Google did
/// not send are left out rather than invented.
fn place_to_legacy(place: &Value) -> Option<Value> {
    let place = place.as_object()?;
    let mut out = Map::new();
    if let Some(v) = place.get("businessStatus") {
        out.insert("business_status".into(), v.clone());
    }
    if let Some(location) = place.get("location") {
        let mut latlng = Map::new();
        if let Some(lat) = location.get("latitude") {
            latlng.insert("lat".into(), lat.clone());
        }
        if let Some(lng) = location.get("longitude") {
            latlng.insert("lng".into(), lng.clone());
        }
        out.insert("geometry".into(), json!({ "location": latlng }));
    }
    if let Some(name) = place.get("displayName").and_then(|d| d.get("text")) {
        out.insert("name".into(), name.clone());
    }
    if let Some(id) = place.get("id") {
        out.insert("place_id".into(), id.clone());
    }
    if let Some(v) = place.get("rating") {
        out.insert("rating".into(), v.clone());
    }
    if let Some(v) = place.get("types") {
        out.insert("types".into(), v.clone());
    }
    if let Some(v) = place.get("userRatingCount") {
        out.insert("user_ratings_total".into(), v.clone());
    }
    let vicinity = place
        .get("shortFormattedAddress")
        .or_else(|| place.get("formattedAddress"));
    if let Some(v) = vicinity {
        out.insert("vicinity".into(), v.clone());
    }
    Some(Value::Object(out))
}

/// Maps a New-API error object `{"code", "message", "status"}` to a legacy error reply.
///
/// The gRPC-style status decides (`PERMISSION_DENIED`/`UNAUTHENTICATED` → `REQUEST_DENIED`,
/// `RESOURCE_EXHAUSTED` → `OVER_QUERY_LIMIT`, `INVALID_ARGUMENT` → `INVALID_REQUEST`); without
/// one, the HTTP-style `code` does (403/401, 429, 400); anything else is `UNKNOWN_ERROR`.
/// Google's message becomes `error_message`, as the legacy API would have said it.
pub fn new_error_to_legacy(error: &Value) -> Value {
    let message = error.get("message").and_then(Value::as_str).unwrap_or("");
    let grpc = error.get("status").and_then(Value::as_str);
    let code = error.get("code").and_then(Value::as_u64);
    let status = match (grpc, code) {
        (Some("PERMISSION_DENIED" | "UNAUTHENTICATED"), _) => "REQUEST_DENIED",
        (Some("RESOURCE_EXHAUSTED"), _) => "OVER_QUERY_LIMIT",
        (Some("INVALID_ARGUMENT"), _) => "INVALID_REQUEST",
        (Some(_), _) => "UNKNOWN_ERROR",
        (None, Some(401 | 403)) => "REQUEST_DENIED",
        (None, Some(429)) => "OVER_QUERY_LIMIT",
        (None, Some(400)) => "INVALID_REQUEST",
        (None, _) => "UNKNOWN_ERROR",
    };
    let message = if message.is_empty() {
        format!(
            "Google replied with error {} (code {})",
            grpc.unwrap_or("without a status"),
            code.map_or_else(|| "none".to_string(), |c| c.to_string())
        )
    } else {
        message.to_string()
    };
    error_reply(status, &message)
}

/// A Google-shaped error reply (see [`json::error_body`], its one home).
fn error_reply(status: &str, message: &str) -> Value {
    json::error_body(status, message)
}

/// The message for an HTTP error whose body is not Google's JSON (a proxy's HTML page, say).
fn http_error(status: StatusCode) -> String {
    format!("the places provider answered HTTP {status} without a Google reply")
}

/// `1 s` or `1500 ms`: how long the request timeout was, for messages.
fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// Removes the key from `text`: the key itself, its percent-encoded form, and the value of any
/// `key=` URL parameter (whatever it holds), each replaced by `REDACTED`. Every message that
/// may reach a log or a client goes through here, because ureq's error texts can quote the
/// request URL.
pub fn scrub(text: &str, key: &str) -> String {
    let mut out = text.to_string();
    if !key.is_empty() {
        out = out.replace(key, REDACTED);
        let encoded = percent_encode(key);
        if encoded != key {
            out = out.replace(&encoded, REDACTED);
        }
    }
    redact_key_params(&out)
}

/// Replaces the value of every `key=` parameter that follows `?` or `&` by `REDACTED`.
fn redact_key_params(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("key=") {
        let after = at + "key=".len();
        let is_param = at > 0 && matches!(rest.as_bytes()[at - 1], b'?' | b'&');
        out.push_str(&rest[..after]);
        rest = &rest[after..];
        if is_param {
            let end = rest
                .find(|c: char| c == '&' || c == '#' || c == '"' || c == '\'' || c.is_whitespace())
                .unwrap_or(rest.len());
            out.push_str(REDACTED);
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread;

    const KEY: &str = "AIzaTestKey_123-xyz";

    /// The query of the SPEC's example client, asking for `max` results.
    fn query(max: usize) -> Query {
        Query {
            lat: 34.06893,
            lng: -118.445127,
            lat_text: "34.068930".into(),
            lng_text: "-118.445127".into(),
            radius_m: 10000.0,
            radius_m_text: "10000".into(),
            max_results: max,
        }
    }

    /// Parses JSON text (keeping its key order and number text) for comparisons.
    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    /// What the stub does once it has read the request.
    enum Answer {
        /// Writes these bytes and closes.
        Reply(Vec<u8>),
        /// Says nothing and waits for the client to give up (at most 5 s).
        Hang,
    }

    /// A whole HTTP/1.1 response with a body.
    fn http(status_line: &str, content_type: &str, body: &[u8]) -> Answer {
        let mut out = format!(
            "HTTP/1.1 {status_line}\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        Answer::Reply(out)
    }

    /// Starts a stub HTTP server for one connection on 127.0.0.1; returns its base URL and a
    /// channel that receives the raw request it read.
    fn stub(answer: Answer) -> (String, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = tx.send(read_request(&mut conn));
            match answer {
                // The client may hang up early (body too large): write errors are fine.
                Answer::Reply(bytes) => drop(conn.write_all(&bytes)),
                Answer::Hang => {
                    let mut sink = [0u8; 1024];
                    while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
                }
            }
        });
        (base, rx)
    }

    /// Reads one request: the head up to the blank line, then `Content-Length` bytes of body.
    fn read_request(conn: &mut impl Read) -> String {
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => return String::from_utf8_lossy(&data).into_owned(),
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
        };
        let head = String::from_utf8_lossy(&data[..head_end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        while data.len() < head_end + length {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&data).into_owned()
    }

    /// The request as the stub saw it.
    fn recorded(rx: &mpsc::Receiver<String>) -> String {
        rx.recv_timeout(Duration::from_secs(5)).unwrap()
    }

    /// A header's value in a recorded request (names compared without case).
    fn header<'a>(request: &'a str, name: &str) -> Option<&'a str> {
        request
            .split("\r\n\r\n")
            .next()
            .unwrap()
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim())
            })
    }

    fn legacy(base: &str, timeout: Duration) -> Google {
        Google::new(Api::Legacy, base, KEY.into(), timeout)
    }

    fn new_api(base: &str) -> Google {
        Google::new(Api::New, base, KEY.into(), Duration::from_secs(5))
    }

    /// A base URL where nothing listens: bind a port, then free it.
    fn refused_base() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    /// Asserts a reply is UNKNOWN_ERROR whose message contains `words`, without the key.
    fn assert_failure(reply: &Value, words: &str) {
        let text = reply.to_string();
        assert!(!text.contains(KEY), "key leaked: {text}");
        let keys: Vec<&String> = reply.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["error_message", "html_attributions", "results", "status"]
        );
        assert_eq!(reply["status"], "UNKNOWN_ERROR", "{text}");
        assert_eq!(reply["results"], json!([]));
        let message = reply["error_message"].as_str().unwrap();
        assert!(message.contains(words), "{message:?} lacks {words:?}");
    }

    const LEGACY_OK: &str = r#"{"html_attributions":[],"results":[{"geometry":{"location":{"lat":34.0689254,"lng":-118.4451858}},"name":"UCLA","place_id":"ChIJZQ9c8IW8woARN0gTXFiTqSU","rating":4.6,"types":["university","establishment"],"vicinity":"Los Angeles"}],"status":"OK"}"#;

    #[test]
    fn legacy_url_is_exact() {
        assert_eq!(
            legacy_url("http://127.0.0.1:9/", &query(20), KEY),
            "http://127.0.0.1:9/maps/api/place/nearbysearch/json\
             ?location=34.068930,-118.445127&radius=10000&key=AIzaTestKey_123-xyz"
        );
    }

    #[test]
    fn legacy_url_encodes_what_a_url_cannot_hold() {
        let mut q = query(20);
        q.lat_text = "+1".into();
        q.radius_m_text = "10587.1263".into();
        let url = legacy_url("https://h", &q, "a b&c");
        assert!(url.ends_with("?location=%2B1,-118.445127&radius=10587.1263&key=a%20b%26c"));
    }

    #[test]
    fn new_request_body_keeps_the_client_text() {
        assert_eq!(
            new_request_body(&query(5)).to_string(),
            r#"{"locationRestriction":{"circle":{"center":{"latitude":34.068930,"longitude":-118.445127},"radius":10000}},"maxResultCount":5}"#
        );
        assert_eq!(new_request_body(&query(25))["maxResultCount"], 20);
        assert_eq!(new_request_body(&query(0))["maxResultCount"], 1);
    }

    #[test]
    fn numbers_fall_back_to_the_float_when_the_text_is_not_json() {
        assert_eq!(number("+34", 34.5).to_string(), "34.5");
        assert_eq!(number("10587.1263", 0.0).to_string(), "10587.1263");
    }

    #[test]
    fn field_mask_asks_for_exactly_the_converted_fields() {
        let mut fields: Vec<&str> = FIELD_MASK.split(',').collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "places.businessStatus",
                "places.displayName",
                "places.formattedAddress",
                "places.id",
                "places.location",
                "places.rating",
                "places.shortFormattedAddress",
                "places.types",
                "places.userRatingCount",
            ]
        );
    }

    #[test]
    fn a_new_place_becomes_a_legacy_result_with_sorted_keys() {
        let reply = parse(
            r#"{"places":[{"id":"ChIJ1","types":["university","point_of_interest"],
                "formattedAddress":"Los Angeles, CA 90095, USA",
                "location":{"latitude":34.0689254,"longitude":-118.4451858},
                "rating":4.6,"userRatingCount":5234,"businessStatus":"OPERATIONAL",
                "displayName":{"text":"UCLA","languageCode":"en"},
                "shortFormattedAddress":"Los Angeles"}]}"#,
        );
        assert_eq!(
            places_to_legacy(&reply).unwrap().to_string(),
            r#"{"html_attributions":[],"results":[{"business_status":"OPERATIONAL","geometry":{"location":{"lat":34.0689254,"lng":-118.4451858}},"name":"UCLA","place_id":"ChIJ1","rating":4.6,"types":["university","point_of_interest"],"user_ratings_total":5234,"vicinity":"Los Angeles"}],"status":"OK"}"#
        );
    }

    #[test]
    fn missing_fields_are_left_out_and_formatted_address_stands_in() {
        let reply = parse(r#"{"places":[{"id":"x","formattedAddress":"1 Main St"}, 7]}"#);
        assert_eq!(
            places_to_legacy(&reply).unwrap()["results"].to_string(),
            r#"[{"place_id":"x","vicinity":"1 Main St"}]"#
        );
    }

    #[test]
    fn no_places_is_zero_results() {
        let expected = r#"{"html_attributions":[],"results":[],"status":"ZERO_RESULTS"}"#;
        assert_eq!(
            places_to_legacy(&parse("{}")).unwrap().to_string(),
            expected
        );
        assert_eq!(
            places_to_legacy(&parse(r#"{"places":[]}"#))
                .unwrap()
                .to_string(),
            expected
        );
    }

    #[test]
    fn a_reply_of_another_shape_is_an_error() {
        assert!(places_to_legacy(&parse("[]")).is_err());
        assert!(places_to_legacy(&parse(r#"{"places":{}}"#)).is_err());
    }

    #[test]
    fn new_errors_map_to_legacy_statuses() {
        let cases = [
            ("PERMISSION_DENIED", 403, "REQUEST_DENIED"),
            ("UNAUTHENTICATED", 401, "REQUEST_DENIED"),
            ("RESOURCE_EXHAUSTED", 429, "OVER_QUERY_LIMIT"),
            ("INVALID_ARGUMENT", 400, "INVALID_REQUEST"),
            ("INTERNAL", 500, "UNKNOWN_ERROR"),
            ("NOT_FOUND", 404, "UNKNOWN_ERROR"),
        ];
        for (grpc, code, legacy) in cases {
            let error = json!({"code": code, "message": "why", "status": grpc});
            assert_eq!(
                new_error_to_legacy(&error).to_string(),
                format!(
                    r#"{{"error_message":"why","html_attributions":[],"results":[],"status":"{legacy}"}}"#
                )
            );
        }
    }

    #[test]
    fn without_a_status_the_code_decides_and_a_message_is_made_up() {
        let reply = new_error_to_legacy(&json!({"code": 429}));
        assert_eq!(reply["status"], "OVER_QUERY_LIMIT");
        assert_eq!(
            reply["error_message"],
            "Google replied with error without a status (code 429)"
        );
        assert_eq!(new_error_to_legacy(&json!({}))["status"], "UNKNOWN_ERROR");
    }

    #[test]
    fn scrub_removes_the_key_in_every_form() {
        assert_eq!(
            scrub(&format!("bad uri: x?key={KEY}"), KEY),
            "bad uri: x?key=REDACTED"
        );
        assert_eq!(scrub("say a%20b%26c!", "a b&c"), "say REDACTED!");
        assert_eq!(
            scrub("GET /p?radius=1&key=other-key&x=1 and /p?key=y", KEY),
            "GET /p?radius=1&key=REDACTED&x=1 and /p?key=REDACTED"
        );
        assert_eq!(scrub("monkey=banana", ""), "monkey=banana");
    }

    #[test]
    fn the_key_comes_from_the_file_first_then_the_environment() {
        let file = Path::new("/k");
        let env = Some(OsString::from("  from-env\n"));
        assert_eq!(
            key_from(Some(file), Some(b"from-file\n".to_vec()), env.clone()).unwrap(),
            "from-file"
        );
        assert_eq!(key_from(None, None, env).unwrap(), "from-env");
    }

    #[test]
    fn a_missing_or_bad_key_says_both_ways_to_give_one_without_the_key() {
        let file = Path::new("/k");
        for result in [
            key_from(None, None, None),
            key_from(None, None, Some(OsString::from("  "))),
            key_from(Some(file), Some(b"\n".to_vec()), None),
            key_from(Some(file), Some(b"sec ret".to_vec()), None),
            key_from(Some(file), Some(vec![0xff, b'a']), None),
            read_key(Some(Path::new("/nonexistent/dir/key"))),
        ] {
            let message = result.unwrap_err();
            assert!(message.contains("--places-key-file"), "{message}");
            assert!(message.contains(KEY_ENV), "{message}");
            assert!(
                !message.contains('\n') && !message.contains("sec"),
                "{message}"
            );
        }
    }

    #[test]
    fn names_and_fetch_bounds() {
        let legacy = legacy("http://h", Duration::from_secs(1));
        let new = new_api("http://h");
        assert_eq!((legacy.name(), new.name()), ("google", "google-new"));
        assert_eq!((legacy.fetch_bound(3), new.fetch_bound(3)), (MAX_BOUND, 3));
        assert_eq!(
            Api::Legacy.default_base_url(),
            "https://maps.googleapis.com"
        );
        assert_eq!(Api::New.default_base_url(), "https://places.googleapis.com");
        assert!(!format!("{new:?}").contains(KEY));
    }

    #[test]
    fn legacy_sends_one_get_and_passes_the_reply_through() {
        let (base, rx) = stub(http("200 OK", "application/json", LEGACY_OK.as_bytes()));
        let reply = legacy(&format!("{base}/"), Duration::from_secs(5)).nearby(&query(20));
        assert_eq!(reply.to_string(), LEGACY_OK);
        let request = recorded(&rx);
        assert!(
            request.starts_with(
                "GET /maps/api/place/nearbysearch/json\
                 ?location=34.068930,-118.445127&radius=10000&key=AIzaTestKey_123-xyz HTTP/1.1\r\n"
            ),
            "{request}"
        );
    }

    #[test]
    fn a_legacy_error_body_passes_through_whatever_the_http_status() {
        let body = r#"{"error_message":"The provided API key is invalid.","html_attributions":[],"results":[],"status":"REQUEST_DENIED"}"#;
        let (base, _rx) = stub(http("403 Forbidden", "application/json", body.as_bytes()));
        let reply = legacy(&base, Duration::from_secs(5)).nearby(&query(20));
        assert_eq!(reply.to_string(), body);
    }

    #[test]
    fn a_key_in_a_google_message_is_scrubbed() {
        let body = format!(r#"{{"error_message":"key {KEY} is bad","status":"REQUEST_DENIED"}}"#);
        let (base, _rx) = stub(http("200 OK", "application/json", body.as_bytes()));
        let reply = legacy(&base, Duration::from_secs(5)).nearby(&query(20));
        assert_eq!(
            reply.to_string(),
            r#"{"error_message":"key REDACTED is bad","status":"REQUEST_DENIED"}"#
        );
    }

    #[test]
    fn an_html_error_page_is_an_unknown_error() {
        let page = b"<html><body>Internal error</body></html>";
        let (base, _rx) = stub(http("500 Internal Server Error", "text/html", page));
        let reply = legacy(&base, Duration::from_secs(5)).nearby(&query(20));
        assert_failure(&reply, "HTTP 500 Internal Server Error");
    }

    #[test]
    fn invalid_json_is_an_unknown_error() {
        let (base, _rx) = stub(http("200 OK", "application/json", b"{\"status\": \"OK\""));
        let reply = legacy(&base, Duration::from_secs(5)).nearby(&query(20));
        assert_failure(&reply, "not valid JSON");
    }

    #[test]
    fn json_without_a_status_is_an_unknown_error() {
        let (base, _rx) = stub(http("200 OK", "application/json", b"[1, 2]"));
        let reply = legacy(&base, Duration::from_secs(5)).nearby(&query(20));
        assert_failure(&reply, "not a Nearby Search reply");
    }

    #[test]
    fn an_oversized_body_is_an_unknown_error() {
        let big = vec![b' '; MAX_BODY_BYTES as usize + 1];
        let (base, _rx) = stub(http("200 OK", "application/json", &big));
        let reply = legacy(&base, Duration::from_secs(5)).nearby(&query(20));
        assert_failure(&reply, "too large");
    }

    #[test]
    fn a_silent_server_times_out() {
        let (base, _rx) = stub(Answer::Hang);
        let started = Instant::now();
        let reply = legacy(&base, Duration::from_millis(300)).nearby(&query(20));
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_failure(&reply, "no reply from");
        assert_failure(&reply, "within 300 ms");
    }

    #[test]
    fn a_refused_connection_is_an_unknown_error() {
        let reply = legacy(&refused_base(), Duration::from_secs(5)).nearby(&query(20));
        assert_failure(&reply, "failed");
    }

    #[test]
    fn a_ureq_error_quoting_the_url_loses_the_key() {
        // A URL without a scheme makes ureq quote it, key and all, in its error.
        let reply = legacy("/relative", Duration::from_secs(1)).nearby(&query(20));
        assert_failure(&reply, "&key=REDACTED is missing scheme");
    }

    #[test]
    fn new_sends_one_post_with_key_mask_and_body() {
        let body = br#"{"places":[{"id":"ChIJ1","displayName":{"text":"UCLA"}}]}"#;
        let (base, rx) = stub(http("200 OK", "application/json", body));
        let reply = new_api(&base).nearby(&query(5));
        assert_eq!(
            reply.to_string(),
            r#"{"html_attributions":[],"results":[{"name":"UCLA","place_id":"ChIJ1"}],"status":"OK"}"#
        );
        let request = recorded(&rx);
        assert!(
            request.starts_with("POST /v1/places:searchNearby HTTP/1.1\r\n"),
            "{request}"
        );
        assert_eq!(header(&request, "x-goog-api-key"), Some(KEY));
        assert_eq!(header(&request, "x-goog-fieldmask"), Some(FIELD_MASK));
        assert_eq!(header(&request, "content-type"), Some("application/json"));
        assert_eq!(
            request.split("\r\n\r\n").nth(1),
            Some(new_request_body(&query(5)).to_string().as_str())
        );
        assert!(
            !request.contains("key="),
            "the key must not be in the URL: {request}"
        );
    }

    #[test]
    fn a_new_error_body_becomes_a_legacy_error() {
        let body = br#"{"error":{"code":403,"message":"API key not valid.","status":"PERMISSION_DENIED"}}"#;
        let (base, _rx) = stub(http("403 Forbidden", "application/json", body));
        assert_eq!(
            new_api(&base).nearby(&query(5)).to_string(),
            r#"{"error_message":"API key not valid.","html_attributions":[],"results":[],"status":"REQUEST_DENIED"}"#
        );
    }

    #[test]
    fn new_api_failures_are_unknown_errors() {
        let (base, _rx) = stub(http("502 Bad Gateway", "text/html", b"<html></html>"));
        assert_failure(&new_api(&base).nearby(&query(5)), "HTTP 502 Bad Gateway");
        let (base, _rx) = stub(http("200 OK", "application/json", b"nope"));
        assert_failure(&new_api(&base).nearby(&query(5)), "not valid JSON");
        assert_failure(&new_api(&refused_base()).nearby(&query(5)), "failed");
    }

    #[test]
    fn bound_zero_asks_google_nothing() {
        // Nothing listens there: a request would fail.
        let reply = new_api(&refused_base()).nearby(&query(0));
        assert_eq!(
            reply.to_string(),
            r#"{"html_attributions":[],"results":[],"status":"ZERO_RESULTS"}"#
        );
    }
}
