//! places-stub: a local stand-in for Google Places, fast enough never to be the bottleneck.
//!
//! Serves, over plain HTTP/1.1 with keep-alive:
//! - `GET /maps/api/place/nearbysearch/json?location=LAT,LNG&radius=M&key=K` (legacy Nearby
//!   Search): `{"html_attributions" : [], "results" : [...], "status" : "OK"}` in Google's
//!   layout (three-space indents, `"key" : value`);
//! - `POST /v1/places:searchNearby` (Places API New, key in `X-Goog-Api-Key`):
//!   `{"places": [...]}`, as many as the body's `maxResultCount` (default 20);
//! - `GET /stats`: `{"requests": N, "legacy": N, "new": N}` — how many place lookups were
//!   served, so a benchmark can tell how many WHATSATs were coalesced into one lookup.
//!
//! A request without a key gets Google's `REQUEST_DENIED` shape. `--delay-ms` makes every
//! lookup take that long (a sleep in the connection's thread), to stand in for the real
//! service's latency. One thread per connection: clients keep few connections (a worker pool)
//! and the delay is a sleep, so threads are the simplest thing that is fast enough.
//!
//! Usage: `places-stub [--listen 127.0.0.1:PORT] [--delay-ms MS] [--results N]`; prints
//! `listening ADDR`. It runs until stopped by a signal: read `/stats` before stopping it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// At most this many connections are served at once; more are closed at once, so a runaway
/// client cannot make the stub spawn threads without bound.
const MAX_CONNS: usize = 2048;
/// Request heads and bodies above this are refused.
const MAX_REQUEST: usize = 64 * 1024;

#[derive(Default)]
struct Counters {
    legacy: AtomicU64,
    new: AtomicU64,
    conns: AtomicUsize,
}

struct Config {
    delay: Duration,
    results: usize,
}

fn main() {
    let mut listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut delay_ms = 0u64;
    let mut results = 20usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next().unwrap_or_else(|| {
                eprintln!("places-stub: {a} needs a value");
                std::process::exit(2)
            })
        };
        let bad = |what: &str| -> ! {
            eprintln!("places-stub: bad {what}");
            std::process::exit(2)
        };
        match a.as_str() {
            "--listen" => listen = value().parse().unwrap_or_else(|_| bad("--listen")),
            "--delay-ms" => delay_ms = value().parse().unwrap_or_else(|_| bad("--delay-ms")),
            "--results" => results = value().parse().unwrap_or_else(|_| bad("--results")),
            _ => {
                eprintln!("usage: places-stub [--listen ADDR] [--delay-ms MS] [--results N]");
                std::process::exit(2);
            }
        }
    }
    let listener = TcpListener::bind(listen).unwrap_or_else(|e| {
        eprintln!("places-stub: bind {listen}: {e}");
        std::process::exit(1)
    });
    // std listens with a backlog of 128: a herd opening hundreds of lookup connections at
    // once would overflow it and wait a second for each SYN retry, making the stub the
    // bottleneck. Listening again with a larger backlog raises it (Linux).
    // SAFETY: listen on a socket we own; on failure the old backlog stays.
    unsafe {
        libc::listen(listener.as_raw_fd(), 4096);
    }
    println!("listening {}", listener.local_addr().expect("bound"));
    let counters = Arc::new(Counters::default());
    let config = Arc::new(Config {
        delay: Duration::from_millis(delay_ms),
        results: results.min(60),
    });
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if counters.conns.load(Ordering::Relaxed) >= MAX_CONNS {
            continue;
        }
        counters.conns.fetch_add(1, Ordering::Relaxed);
        let counters = Arc::clone(&counters);
        let config = Arc::clone(&config);
        std::thread::spawn(move || {
            let _ = serve(stream, &counters, &config);
            counters.conns.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Serves requests on one connection until the client closes it or asks to.
fn serve(stream: TcpStream, counters: &Counters, config: &Config) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    // An idle keep-alive connection is dropped after a minute.
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut content_length = 0usize;
        let mut api_key = None;
        let mut close = false;
        let mut head_size = request_line.len();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            head_size += header.len();
            if head_size > MAX_REQUEST {
                return respond(&mut writer, 431, "{}", true);
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => content_length = value.parse().unwrap_or(0),
                "x-goog-api-key" => api_key = Some(value.to_string()),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        if content_length > MAX_REQUEST {
            return respond(&mut writer, 413, "{}", true);
        }
        let mut body = vec![0u8; content_length];
        reader.read_exact(&mut body)?;

        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("");
        let target = parts.next().unwrap_or("");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let (status, reply) = match (method, path) {
            ("GET", "/maps/api/place/nearbysearch/json") => {
                counters.legacy.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(config.delay);
                (200, legacy_reply(query, config.results))
            }
            ("POST", "/v1/places:searchNearby") => {
                counters.new.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(config.delay);
                new_reply(api_key.as_deref(), &body, config.results)
            }
            ("GET", "/stats") => {
                let legacy = counters.legacy.load(Ordering::Relaxed);
                let new = counters.new.load(Ordering::Relaxed);
                (
                    200,
                    format!(
                        "{{\"requests\": {}, \"legacy\": {legacy}, \"new\": {new}}}\n",
                        legacy + new
                    ),
                )
            }
            _ => (404, "{\"error\": \"not found\"}\n".to_string()),
        };
        respond(&mut writer, status, &reply, close)?;
        if close {
            return Ok(());
        }
    }
}

fn respond(w: &mut TcpStream, status: u16, body: &str, close: bool) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Payload Too Large",
        _ => "Request Header Fields Too Large",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=UTF-8\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        body.len(),
        if close { "close" } else { "keep-alive" }
    );
    let mut msg = Vec::with_capacity(head.len() + body.len());
    msg.extend_from_slice(head.as_bytes());
    msg.extend_from_slice(body.as_bytes());
    w.write_all(&msg)
}

/// The value of `name` in a query string (no percent-decoding needed for what we read).
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then_some(v)
    })
}

/// `lat,lng` (the comma possibly percent-encoded), or UCLA when absent or unreadable.
fn parse_location(loc: Option<&str>) -> (f64, f64) {
    let loc = loc.unwrap_or("").replace("%2C", ",").replace("%2c", ",");
    let mut it = loc.split(',').map(|s| s.trim().parse::<f64>());
    match (it.next(), it.next()) {
        (Some(Ok(lat)), Some(Ok(lng))) => (lat, lng),
        _ => (34.068930, -118.445127),
    }
}

/// A legacy Nearby Search reply in Google's own layout.
fn legacy_reply(query: &str, count: usize) -> String {
    if query_param(query, "key").is_none_or(str::is_empty) {
        return "{\n   \"error_message\" : \"You must use an API key to authenticate each request to Google Maps Platform APIs.\",\n   \"html_attributions\" : [],\n   \"results\" : [],\n   \"status\" : \"REQUEST_DENIED\"\n}\n".to_string();
    }
    let (lat, lng) = parse_location(query_param(query, "location"));
    let mut s = String::with_capacity(400 * count + 100);
    s.push_str("{\n   \"html_attributions\" : [],\n   \"results\" : [\n");
    for i in 0..count {
        let (plat, plng) = (lat + 0.001 * i as f64, lng - 0.001 * i as f64);
        s.push_str(&format!(
            "      {{\n         \"geometry\" : {{\n            \"location\" : {{\n               \"lat\" : {plat:.7},\n               \"lng\" : {plng:.7}\n            }}\n         }},\n         \"name\" : \"Stub Place {i}\",\n         \"place_id\" : \"stub-place-{i}\",\n         \"types\" : [ \"point_of_interest\", \"establishment\" ],\n         \"vicinity\" : \"{i} Stub Street, Los Angeles\"\n      }}{}\n",
            if i + 1 < count { "," } else { "" }
        ));
    }
    s.push_str("   ],\n   \"status\" : \"OK\"\n}\n");
    s
}

/// A Places API (New) reply: `{"places": [...]}`, or Google's error shape without a key.
fn new_reply(key: Option<&str>, body: &[u8], max: usize) -> (u16, String) {
    if key.is_none_or(str::is_empty) {
        return (
            403,
            "{\n  \"error\": {\n    \"code\": 403,\n    \"message\": \"The request is missing a valid API key.\",\n    \"status\": \"PERMISSION_DENIED\"\n  }\n}\n".to_string(),
        );
    }
    let body = String::from_utf8_lossy(body);
    let count = number_after(&body, "\"maxResultCount\"")
        .map(|n| n as usize)
        .unwrap_or(max)
        .min(max);
    let lat = number_after(&body, "\"latitude\"").unwrap_or(34.068930);
    let lng = number_after(&body, "\"longitude\"").unwrap_or(-118.445127);
    let places: Vec<String> = (0..count)
        .map(|i| {
            format!(
                "{{\"id\": \"stub-place-{i}\", \"types\": [\"point_of_interest\", \"establishment\"], \"formattedAddress\": \"{i} Stub Street, Los Angeles\", \"location\": {{\"latitude\": {:.7}, \"longitude\": {:.7}}}, \"displayName\": {{\"text\": \"Stub Place {i}\", \"languageCode\": \"en\"}}}}",
                lat + 0.001 * i as f64,
                lng - 0.001 * i as f64
            )
        })
        .collect();
    (200, format!("{{\"places\": [{}]}}\n", places.join(", ")))
}

/// The number that follows `"key"` and a colon in a JSON text, without a JSON parser: the
/// stub only needs a rough reading of the request body.
fn number_after(text: &str, key: &str) -> Option<f64> {
    let rest = &text[text.find(key)? + key.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_reply_has_the_asked_location_and_count() {
        let r = legacy_reply("location=34.5,-118.25&radius=10000&key=k", 2);
        assert!(r.contains("\"lat\" : 34.5000000"));
        assert!(r.contains("\"status\" : \"OK\""));
        assert_eq!(r.matches("\"place_id\"").count(), 2);
        assert!(legacy_reply("location=1,2", 2).contains("REQUEST_DENIED"));
    }

    #[test]
    fn new_reply_reads_the_body() {
        let body = br#"{"maxResultCount": 3, "locationRestriction": {"circle": {"center": {"latitude": 34.0, "longitude": -118.0}, "radius": 10000.0}}}"#;
        let (status, r) = new_reply(Some("k"), body, 20);
        assert_eq!(status, 200);
        assert_eq!(r.matches("\"id\"").count(), 3);
        assert!(r.contains("\"latitude\": 34.0000000"));
        assert_eq!(new_reply(None, body, 20).0, 403);
    }
}
