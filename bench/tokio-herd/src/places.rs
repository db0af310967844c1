//! WHATSAT lookups through Google's legacy Nearby Search: the request to send and what to
//! make of the response, for a tiny HTTP/1.1 client (plain `http://` only: the benchmarks
//! point it at the local stub; a TLS client would be the one real dependency these herds
//! lack for the real Google). The I/O is each herd's own (tokio-herd: a tokio `TcpStream`;
//! threads-herd, which includes this file by path: a blocking one).

use crate::proto;
use serde_json::{Map, Value, json};
use std::time::Duration;
use tracing::info;

/// Google answers with at most this much for a Nearby Search; more is an error.
pub const MAX_BODY: usize = 4 << 20;

pub struct Places {
    /// `host:port` of the base URL.
    host: String,
    /// The base URL's path prefix (usually empty).
    prefix: String,
    key: Option<String>,
    timeout: Duration,
    /// Why lookups cannot work at all (e.g. an `https://` base URL), if so.
    unusable: Option<String>,
}

impl Places {
    pub fn new(base: &str, key: Option<String>, timeout: Duration) -> Places {
        let (host, prefix, unusable) = match base.strip_prefix("http://") {
            Some(rest) => {
                let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
                let host = if host.contains(':') {
                    host.to_string()
                } else {
                    format!("{host}:80")
                };
                let prefix = path.trim_end_matches('/');
                let prefix = if prefix.is_empty() {
                    String::new()
                } else {
                    format!("/{prefix}")
                };
                (host, prefix, None)
            }
            None => (
                String::new(),
                String::new(),
                Some(format!("only http:// base URLs are supported, not {base}")),
            ),
        };
        Places {
            host,
            prefix,
            key,
            timeout,
            unusable,
        }
    }

    /// How long a lookup may take, all told.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `host:port` to connect to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The HTTP/1.1 request for a lookup at `location` (ISO 6709), or why none can be made.
    pub fn request(&self, location: &str, radius_km: f64) -> Result<String, String> {
        if let Some(why) = &self.unusable {
            return Err(why.clone());
        }
        let Some(key) = &self.key else {
            return Err("no API key (GOOGLE_PLACES_API_KEY or --places-key-file)".into());
        };
        let (lat, lng) = proto::parse_location(location).ok_or("bad stored location")?;
        let path = format!(
            "{}/maps/api/place/nearbysearch/json?location={lat},{lng}&radius={}&key={}",
            self.prefix,
            (radius_km * 1000.0).round(),
            percent_encode(key)
        );
        // The key is in the path: log the lookup without it.
        info!("place lookup at {lat},{lng} radius {radius_km} km");
        Ok(format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
            self.host
        ))
    }
}

/// The JSON part of a WHATSAT reply from what the provider sent (the whole HTTP response,
/// read to close) or what went wrong on the way: cut to `bound` results and laid out like
/// Google's. Never fails: errors become Google-shaped JSON.
pub fn shape(response: Result<Vec<u8>, String>, bound: usize) -> String {
    let body = match response.and_then(|r| parse_response(&r)) {
        Ok(body) => body,
        Err(e) => return error_json(&e),
    };
    let mut value: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return error_json("the place provider did not send JSON"),
    };
    if let Some(Value::Array(results)) = value.get_mut("results") {
        results.truncate(bound);
    }
    proto::squeeze_newlines(&proto::google_json(&value))
}

/// Splits an HTTP/1.1 response into its body (Content-Length or read-to-close framing; we
/// asked for `Connection: close`, so no chunked encoding from the stub). A non-200 status
/// still yields the body when it is JSON, as Google sends its errors that way.
fn parse_response(response: &[u8]) -> Result<Vec<u8>, String> {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the place provider sent no HTTP header")?;
    let head = String::from_utf8_lossy(&response[..split]);
    let mut body = response[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("bad HTTP status line")?;
    for line in head.lines().skip(1) {
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
            && let Ok(n) = value.trim().parse::<usize>()
        {
            body.truncate(n);
        }
    }
    if status != 200 && !body.starts_with(b"{") {
        return Err(format!("the place provider answered HTTP {status}"));
    }
    Ok(body)
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Google's shape for a failed lookup: no results, `UNKNOWN_ERROR`, and why.
fn error_json(why: &str) -> String {
    let mut m = Map::new();
    m.insert("error_message".into(), json!(why));
    m.insert("html_attributions".into(), json!([]));
    m.insert("results".into(), json!([]));
    m.insert("status".into(), json!("UNKNOWN_ERROR"));
    proto::google_json(&Value::Object(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_response() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}junk";
        assert_eq!(parse_response(r).unwrap(), b"{}");
        assert!(parse_response(b"HTTP/1.1 500 Oops\r\n\r\nno").is_err());
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
        assert!(error_json("x").contains("\"status\" : \"UNKNOWN_ERROR\""));
    }
}
