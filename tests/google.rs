//! The Google providers end to end (issue 3): a real server process, `--places google` or
//! `--places google-new`, pointed by `--places-url` at a stub HTTP server on 127.0.0.1 that
//! records what it receives.
//!
//! Replies are compared byte for byte: the stored AT line, a newline, the JSON in Google's
//! layout (jsoncpp's `StyledWriter`: three-space indents, `"key" : value`, short scalar
//! arrays on one line), then a blank line. The expected JSON is written out literally here,
//! not computed by the crate, so a bug in the printer cannot hide itself.

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::http_stub::{HttpStub, Reply, Request, refused_url};
use common::{BIN, Client, Herd, PATIENCE, now_text, scratch_dir};

/// The test key: distinctive, so a leak is easy to find in logs and replies.
const KEY: &str = "AIzaSyTEST-not-a-real-key_0123456789";

/// The SPEC's example client and where it is.
const CLIENT: &str = "kiwi.cs.ucla.edu";
const LOCATION: &str = "+34.068930-118.445127";

/// The legacy Nearby Search path, as the herd must request it.
const LEGACY_PATH: &str = "/maps/api/place/nearbysearch/json";

/// The New API's field mask: exactly the fields the conversion reads.
const FIELD_MASK: &str = "places.id,places.displayName,places.location,places.types,\
places.shortFormattedAddress,places.formattedAddress,places.rating,places.userRatingCount,\
places.businessStatus";

/// The body limit of the Google providers (4 MiB).
const MAX_BODY: usize = 4 * 1024 * 1024;

// ----- Google's layout, written out -----

/// A legacy result, printed as Google prints it inside `results`.
const UCLA: &str = r#"      {
         "geometry" : {
            "location" : {
               "lat" : 34.068921,
               "lng" : -118.4451811
            }
         },
         "name" : "University of California, Los Angeles",
         "place_id" : "ChIJZQ9c8IW8woARN0gTXFiTqSU",
         "rating" : 4.6,
         "types" : [ "university", "point_of_interest", "establishment" ],
         "user_ratings_total" : 5234,
         "vicinity" : "Los Angeles"
      }"#;

/// A second legacy result.
const WESTWOOD: &str = r#"      {
         "geometry" : {
            "location" : {
               "lat" : 34.0635016,
               "lng" : -118.4455164
            }
         },
         "name" : "Westwood",
         "place_id" : "ChIJ5xMSyIS8woARkQYYYsYu6tE",
         "types" : [ "neighborhood", "political" ],
         "vicinity" : "Los Angeles"
      }"#;

/// A Nearby Search body in Google's layout with these printed results and status.
fn layout(results: &[&str], status: &str) -> String {
    let results = if results.is_empty() {
        "[]".to_string()
    } else {
        format!("[\n{}\n   ]", results.join(",\n"))
    };
    format!(
        "{{\n   \"html_attributions\" : [],\n   \"results\" : {results},\n   \"status\" : \"{status}\"\n}}"
    )
}

/// An error body in Google's layout (keys in alphabetical order, `error_message` first).
/// `message` must need no JSON escaping.
fn error_layout(status: &str, message: &str) -> String {
    format!(
        "{{\n   \"error_message\" : \"{message}\",\n   \"html_attributions\" : [],\n   \
         \"results\" : [],\n   \"status\" : \"{status}\"\n}}"
    )
}

/// What Places API (New) sends for three places (compact, fields in Google's own order).
const NEW_BODY: &str = r#"{"places":[{"id":"ChIJZQ9c8IW8woARN0gTXFiTqSU","types":["university","point_of_interest","establishment"],"formattedAddress":"Los Angeles, CA 90095, USA","location":{"latitude":34.068921,"longitude":-118.4451811},"rating":4.6,"userRatingCount":5234,"businessStatus":"OPERATIONAL","displayName":{"text":"University of California, Los Angeles","languageCode":"en"},"shortFormattedAddress":"Los Angeles"},{"id":"ChIJ5xMSyIS8woARkQYYYsYu6tE","types":["neighborhood","political"],"formattedAddress":"Westwood, Los Angeles, CA, USA","location":{"latitude":34.0635016,"longitude":-118.4455164},"displayName":{"text":"Westwood","languageCode":"en"}},{"id":"ChIJ3","types":["cafe"],"location":{"latitude":34.07,"longitude":-118.44},"displayName":{"text":"Kerckhoff Coffee House"},"shortFormattedAddress":"308 Westwood Plaza"}]}"#;

/// The first New place, converted to a legacy result and printed.
const NEW_UCLA: &str = r#"      {
         "business_status" : "OPERATIONAL",
         "geometry" : {
            "location" : {
               "lat" : 34.068921,
               "lng" : -118.4451811
            }
         },
         "name" : "University of California, Los Angeles",
         "place_id" : "ChIJZQ9c8IW8woARN0gTXFiTqSU",
         "rating" : 4.6,
         "types" : [ "university", "point_of_interest", "establishment" ],
         "user_ratings_total" : 5234,
         "vicinity" : "Los Angeles"
      }"#;

/// The second New place converted: no short address, so the formatted one is the vicinity.
const NEW_WESTWOOD: &str = r#"      {
         "geometry" : {
            "location" : {
               "lat" : 34.0635016,
               "lng" : -118.4455164
            }
         },
         "name" : "Westwood",
         "place_id" : "ChIJ5xMSyIS8woARkQYYYsYu6tE",
         "types" : [ "neighborhood", "political" ],
         "vicinity" : "Westwood, Los Angeles, CA, USA"
      }"#;

/// The third New place converted.
const NEW_CAFE: &str = r#"      {
         "geometry" : {
            "location" : {
               "lat" : 34.07,
               "lng" : -118.44
            }
         },
         "name" : "Kerckhoff Coffee House",
         "place_id" : "ChIJ3",
         "types" : [ "cafe" ],
         "vicinity" : "308 Westwood Plaza"
      }"#;

/// A body that is not JSON (it stops in the middle).
const BAD_JSON: &str = r#"{"status" : "OK", "results" : ["#;

// ----- herds, clients and stubs -----

/// A one-server herd ("Alford") answering from `api` (`google` or `google-new`) at `url`,
/// with the key in a file (never on the command line) and `extra` options.
fn google_herd(tag: &str, api: &str, url: &str, extra: &[&str]) -> Herd {
    let mut herd = Herd::plan(tag, &[("Alford", &[])], &[]);
    let key_file = herd.dir.join("places.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let mut args = vec!["--places", api, "--places-url", url, "--places-key-file"];
    args.push(key_file.to_str().unwrap());
    args.extend_from_slice(extra);
    herd.args = args.iter().map(|s| s.to_string()).collect();
    herd.start_server("Alford");
    herd
}

/// A client connection that has reported [`CLIENT`]'s location, and the AT line it got.
struct Session {
    client: Client,
    /// The AT reply, with its `\n`: every WHATSAT reply starts with it.
    at: String,
}

impl Session {
    /// Connects to Alford and sends an IAMAT for [`CLIENT`].
    fn report(herd: &Herd) -> Session {
        let mut client = Client::connect(herd.addr("Alford"));
        client.send(format!("IAMAT {CLIENT} {LOCATION} {}\n", now_text()).as_bytes());
        let at = client.line();
        assert!(at.starts_with("AT Alford "), "{at:?}");
        Session { client, at }
    }

    /// Sends one WHATSAT about [`CLIENT`] and reads its whole reply.
    fn whatsat(&mut self, radius_km: &str, bound: usize) -> String {
        self.client
            .send(format!("WHATSAT {CLIENT} {radius_km} {bound}\n").as_bytes());
        self.client.whatsat_reply()
    }

    /// The whole reply a WHATSAT must get when the JSON part is `json`.
    fn expect(&self, json: &str) -> String {
        format!("{}{json}\n\n", self.at)
    }
}

/// The radius in metres a request asked for: the `radius` query parameter (legacy) or the
/// circle's radius in the JSON body (New). Tests use it to give each WHATSAT its own answer.
fn radius_of(request: &Request) -> String {
    if request.method == "GET" {
        let query = request.target.split_once('?').map_or("", |(_, q)| q);
        query
            .split('&')
            .find_map(|p| p.strip_prefix("radius="))
            .unwrap_or("")
            .to_string()
    } else {
        let body: serde_json::Value = serde_json::from_str(&request.body).unwrap_or_default();
        body["locationRestriction"]["circle"]["radius"].to_string()
    }
}

/// Stops the server (so its log is complete), then asserts the key reached the stub (so the
/// check means something) and is in no reply, no log line and nothing on stderr.
fn assert_key_kept_secret(herd: &mut Herd, stub: &HttpStub, replies: &[&str]) {
    assert!(
        stub.requests().iter().any(|r| r.raw.contains(KEY)),
        "the stub never saw the key"
    );
    for reply in replies {
        assert!(!reply.contains(KEY), "key in a reply: {reply}");
    }
    let stderr = herd.terminate("Alford");
    assert!(!stderr.contains(KEY), "key on stderr: {stderr}");
    let log = herd.log("Alford");
    assert!(
        log.contains("google: GET ") || log.contains("google-new: POST "),
        "no lookup in the log:\n{log}"
    );
    for line in log.lines() {
        assert!(!line.contains(KEY), "key in a log line: {line}");
    }
}

/// A server process started by hand (for the environment tests), killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A one-server topology file in a fresh directory, on a free port.
fn lone_topology(tag: &str) -> (std::path::PathBuf, std::net::SocketAddr) {
    let dir = scratch_dir(tag);
    let port = common::free_ports(1)[0];
    std::fs::write(
        dir.join("topology.txt"),
        format!("Alford 127.0.0.1:{port}\n"),
    )
    .unwrap();
    (dir, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Runs Alford alone with `args` and the key variable set to `env_key` (or unset).
fn spawn_alone(dir: &std::path::Path, args: &[&str], env_key: Option<&str>) -> Running {
    let mut cmd = Command::new(BIN);
    cmd.arg("Alford")
        .arg("--topology")
        .arg(dir.join("topology.txt"))
        .arg("--log-dir")
        .arg(dir.join("logs"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match env_key {
        Some(key) => cmd.env("GOOGLE_PLACES_API_KEY", key),
        None => cmd.env_remove("GOOGLE_PLACES_API_KEY"),
    };
    Running(cmd.spawn().expect("cannot start proxy-herd"))
}

/// Waits (bounded) for a process to exit; returns its exit code and stderr.
fn exit_of(mut running: Running) -> (Option<i32>, String) {
    let deadline = Instant::now() + PATIENCE;
    while matches!(running.0.try_wait(), Ok(None)) && Instant::now() < deadline {
        sleep(Duration::from_millis(10));
    }
    let _ = running.0.kill();
    let mut stderr = String::new();
    if let Some(mut pipe) = running.0.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    (running.0.wait().unwrap().code(), stderr)
}

// ----- legacy Nearby Search -----

#[test]
fn legacy_sends_the_exact_request_and_passes_googles_reply_through() {
    let stub = HttpStub::always(Reply::json("200 OK", &layout(&[UCLA, WESTWOOD], "OK")));
    let mut herd = google_herd("g-legacy-ok", "google", &stub.base_url(), &[]);
    let mut s = Session::report(&herd);

    let full = s.whatsat("10.5871263", 20);
    assert_eq!(full, s.expect(&layout(&[UCLA, WESTWOOD], "OK")));

    let requests = stub.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "GET");
    assert_eq!(
        request.target,
        format!("{LEGACY_PATH}?location=34.068930,-118.445127&radius=10587.1263&key={KEY}")
    );
    assert_eq!(request.body, "");
    assert_eq!(request.header("host"), Some(&stub.base_url()[7..]));

    let cut = s.whatsat("10.5871263", 1);
    assert_eq!(cut, s.expect(&layout(&[UCLA], "OK")));
    let none = s.whatsat("10.5871263", 0);
    assert_eq!(none, s.expect(&layout(&[], "OK")));
    assert_key_kept_secret(&mut herd, &stub, &[&full, &cut, &none]);
}

#[test]
fn legacy_zero_results_and_every_error_status_reach_the_client_as_google_sent_them() {
    // One stub, one answer per radius (in metres).
    let cases: Vec<(&str, &str, String)> = vec![
        ("1", "200 OK", layout(&[], "ZERO_RESULTS")),
        (
            "2",
            "200 OK",
            error_layout(
                "OVER_QUERY_LIMIT",
                "You have exceeded your daily request quota for this API.",
            ),
        ),
        (
            "3",
            "200 OK",
            error_layout("REQUEST_DENIED", "The provided API key is invalid."),
        ),
        (
            "4",
            "403 Forbidden",
            error_layout(
                "REQUEST_DENIED",
                "This API project is not authorized to use this API.",
            ),
        ),
        (
            "5",
            "200 OK",
            error_layout(
                "INVALID_REQUEST",
                "Invalid request. Invalid 'radius' parameter.",
            ),
        ),
        (
            "6",
            "500 Internal Server Error",
            error_layout("UNKNOWN_ERROR", "Try again."),
        ),
    ];
    let table = cases.clone();
    let stub = HttpStub::start(move |request| {
        let radius = radius_of(request);
        let km = radius.trim_end_matches("000");
        match table.iter().find(|(r, _, _)| *r == km) {
            Some((_, status, body)) => Reply::json(status, body),
            None => Reply::html("404 Not Found", "<html>no case</html>"),
        }
    });
    let mut herd = google_herd("g-legacy-status", "google", &stub.base_url(), &[]);
    let mut s = Session::report(&herd);
    let mut replies = Vec::new();
    for (km, _, body) in &cases {
        let reply = s.whatsat(km, 20);
        assert_eq!(reply, s.expect(body), "radius {km} km");
        replies.push(reply);
    }
    assert_eq!(stub.count(), cases.len());
    let replies: Vec<&str> = replies.iter().map(String::as_str).collect();
    assert_key_kept_secret(&mut herd, &stub, &replies);
}

/// The failures of one provider against a stub: an HTML 500, invalid JSON, an oversized
/// body, and a stub that never answers (with `--places-timeout 1`).
fn failures_are_unknown_errors(api: &str) {
    let big = format!(
        "{{\"results\" : [], \"padding\" : \"{}\"}}",
        "x".repeat(MAX_BODY)
    );
    let stub = HttpStub::start(move |request| match radius_of(request).as_str() {
        "1000" => Reply::html(
            "500 Internal Server Error",
            "<html><body><h1>500 Server Error</h1></body></html>",
        ),
        "2000" => Reply::json("200 OK", BAD_JSON),
        "3000" => Reply::json("200 OK", &big),
        _ => Reply::Hang,
    });
    let base = stub.base_url();
    let mut herd = google_herd(
        &format!("g-{api}-fail"),
        api,
        &base,
        &["--places-timeout", "1"],
    );
    let mut s = Session::report(&herd);

    let html = s.whatsat("1", 5);
    assert_eq!(
        html,
        s.expect(&error_layout(
            "UNKNOWN_ERROR",
            "the places provider answered HTTP 500 Internal Server Error without a Google reply"
        ))
    );

    let bad = s.whatsat("2", 5);
    let parse_error = serde_json::from_str::<serde_json::Value>(BAD_JSON).unwrap_err();
    assert_eq!(
        bad,
        s.expect(&error_layout(
            "UNKNOWN_ERROR",
            &format!("the reply is not valid JSON: {parse_error}")
        ))
    );

    let oversized = s.whatsat("3", 5);
    assert_eq!(
        oversized,
        s.expect(&error_layout(
            "UNKNOWN_ERROR",
            &format!("the reply body was too large (over {MAX_BODY} bytes)")
        ))
    );

    let started = Instant::now();
    let silent = s.whatsat("4", 5);
    let waited = started.elapsed();
    assert_eq!(
        silent,
        s.expect(&error_layout(
            "UNKNOWN_ERROR",
            &format!("no reply from {base} within 1 s (timeout: global)")
        ))
    );
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "answered after {waited:?}, not after the 1 s timeout"
    );

    assert_key_kept_secret(&mut herd, &stub, &[&html, &bad, &oversized, &silent]);
    let log = herd.log("Alford");
    for words in ["HTTP 500", "not valid JSON", "too large", "no reply from"] {
        assert!(
            log.lines()
                .any(|l| l.contains("lookup failed") && l.contains(words)),
            "failure {words:?} not logged:\n{log}"
        );
    }
}

#[test]
fn legacy_failures_are_unknown_errors() {
    failures_are_unknown_errors("google");
}

/// A refused connection, for one provider.
fn refused_is_an_unknown_error(api: &str) {
    let base = refused_url();
    let mut herd = google_herd(&format!("g-{api}-refused"), api, &base, &[]);
    let mut s = Session::report(&herd);
    let reply = s.whatsat("10", 5);
    assert_eq!(
        reply,
        s.expect(&error_layout(
            "UNKNOWN_ERROR",
            &format!("request to {base} failed: io: Connection refused (os error 111)")
        ))
    );
    assert!(!reply.contains(KEY));
    let stderr = herd.terminate("Alford");
    assert!(!stderr.contains(KEY), "key on stderr: {stderr}");
    let log = herd.log("Alford");
    assert!(log.contains("Connection refused"), "{log}");
    assert!(!log.contains(KEY), "key in the log:\n{log}");
}

#[test]
fn legacy_refused_connection_is_an_unknown_error() {
    refused_is_an_unknown_error("google");
}

// ----- Places API (New) -----

#[test]
fn new_api_sends_the_exact_request_and_converts_the_reply() {
    let stub = HttpStub::always(Reply::json("200 OK", NEW_BODY));
    let mut herd = google_herd("g-new-ok", "google-new", &stub.base_url(), &[]);
    let mut s = Session::report(&herd);

    let two = s.whatsat("10", 2);
    // Google was asked for 2, but this stub sends 3: the reply is still cut to the bound.
    assert_eq!(two, s.expect(&layout(&[NEW_UCLA, NEW_WESTWOOD], "OK")));
    let twenty = s.whatsat("0.5", 20);
    assert_eq!(
        twenty,
        s.expect(&layout(&[NEW_UCLA, NEW_WESTWOOD, NEW_CAFE], "OK"))
    );

    let requests = stub.requests();
    assert_eq!(requests.len(), 2);
    let first = &requests[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.target, "/v1/places:searchNearby");
    assert_eq!(first.header("x-goog-api-key"), Some(KEY));
    assert_eq!(first.header("x-goog-fieldmask"), Some(FIELD_MASK));
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert_eq!(
        first.body,
        r#"{"locationRestriction":{"circle":{"center":{"latitude":34.068930,"longitude":-118.445127},"radius":10000}},"maxResultCount":2}"#
    );
    assert_eq!(
        requests[1].body,
        r#"{"locationRestriction":{"circle":{"center":{"latitude":34.068930,"longitude":-118.445127},"radius":500}},"maxResultCount":20}"#
    );
    assert_key_kept_secret(&mut herd, &stub, &[&two, &twenty]);
}

#[test]
fn new_api_zero_results_and_bound_zero() {
    let stub = HttpStub::always(Reply::json("200 OK", "{}"));
    let herd = google_herd("g-new-zero", "google-new", &stub.base_url(), &[]);
    let mut s = Session::report(&herd);
    let zero = s.whatsat("10", 5);
    assert_eq!(zero, s.expect(&layout(&[], "ZERO_RESULTS")));
    assert_eq!(stub.count(), 1);
    // A bound of 0 asks Google nothing (a call would cost money for nothing).
    let nothing = s.whatsat("10", 0);
    assert_eq!(nothing, s.expect(&layout(&[], "ZERO_RESULTS")));
    assert_eq!(stub.count(), 1);
}

#[test]
fn new_api_errors_map_to_legacy_statuses() {
    let cases = [
        (
            "1",
            "403 Forbidden",
            403,
            "PERMISSION_DENIED",
            "REQUEST_DENIED",
        ),
        (
            "2",
            "401 Unauthorized",
            401,
            "UNAUTHENTICATED",
            "REQUEST_DENIED",
        ),
        (
            "3",
            "429 Too Many Requests",
            429,
            "RESOURCE_EXHAUSTED",
            "OVER_QUERY_LIMIT",
        ),
        (
            "4",
            "400 Bad Request",
            400,
            "INVALID_ARGUMENT",
            "INVALID_REQUEST",
        ),
        (
            "5",
            "500 Internal Server Error",
            500,
            "INTERNAL",
            "UNKNOWN_ERROR",
        ),
    ];
    let message = |grpc: &str| format!("Google says {grpc}.");
    let stub = HttpStub::start(move |request| {
        let radius = radius_of(request);
        match cases.iter().find(|c| format!("{}000", c.0) == radius) {
            Some((_, line, code, grpc, _)) => Reply::json(
                line,
                &format!(
                    r#"{{"error": {{"code": {code}, "message": "{}", "status": "{grpc}"}}}}"#,
                    message(grpc)
                ),
            ),
            None => Reply::html("404 Not Found", "<html>no case</html>"),
        }
    });
    let mut herd = google_herd("g-new-errors", "google-new", &stub.base_url(), &[]);
    let mut s = Session::report(&herd);
    let mut replies = Vec::new();
    for (km, _, _, grpc, legacy) in cases {
        let reply = s.whatsat(km, 5);
        assert_eq!(
            reply,
            s.expect(&error_layout(legacy, &message(grpc))),
            "{grpc}"
        );
        replies.push(reply);
    }
    let replies: Vec<&str> = replies.iter().map(String::as_str).collect();
    assert_key_kept_secret(&mut herd, &stub, &replies);
}

#[test]
fn new_api_failures_are_unknown_errors() {
    failures_are_unknown_errors("google-new");
}

#[test]
fn new_api_refused_connection_is_an_unknown_error() {
    refused_is_an_unknown_error("google-new");
}

// ----- bursts, busy workers, a hanging provider -----

/// Opens `n` connections, sends one WHATSAT on each (bound from `bound_of`), then reads
/// every reply: all of them are in flight together while the stub is slow.
fn burst(herd: &Herd, n: usize, bound_of: impl Fn(usize) -> usize) -> Vec<String> {
    let mut clients: Vec<Client> = (0..n)
        .map(|_| Client::connect(herd.addr("Alford")))
        .collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client.send(format!("WHATSAT {CLIENT} 10 {}\n", bound_of(i)).as_bytes());
    }
    clients.iter_mut().map(Client::whatsat_reply).collect()
}

#[test]
fn a_burst_of_100_legacy_whatsats_costs_one_request() {
    let stub = HttpStub::always(
        Reply::json("200 OK", &layout(&[UCLA, WESTWOOD], "OK")).after(Duration::from_secs(2)),
    );
    let mut herd = google_herd("g-legacy-burst", "google", &stub.base_url(), &[]);
    let s = Session::report(&herd);
    // Legacy requests do not depend on the bound: every bound shares the one request.
    let replies = burst(&herd, 100, |i| i % 21);
    for (i, reply) in replies.iter().enumerate() {
        let results: &[&str] = match i % 21 {
            0 => &[],
            1 => &[UCLA],
            _ => &[UCLA, WESTWOOD],
        };
        assert_eq!(*reply, s.expect(&layout(results, "OK")), "WHATSAT {i}");
    }
    assert_eq!(stub.count(), 1, "the burst cost more than one request");
    let replies: Vec<&str> = replies.iter().map(String::as_str).collect();
    assert_key_kept_secret(&mut herd, &stub, &replies);
}

#[test]
fn a_burst_of_100_new_api_whatsats_costs_one_request() {
    let stub = HttpStub::always(Reply::json("200 OK", NEW_BODY).after(Duration::from_secs(2)));
    let mut herd = google_herd("g-new-burst", "google-new", &stub.base_url(), &[]);
    let s = Session::report(&herd);
    let replies = burst(&herd, 100, |_| 2);
    for reply in &replies {
        assert_eq!(*reply, s.expect(&layout(&[NEW_UCLA, NEW_WESTWOOD], "OK")));
    }
    assert_eq!(stub.count(), 1, "the burst cost more than one request");
    let replies: Vec<&str> = replies.iter().map(String::as_str).collect();
    assert_key_kept_secret(&mut herd, &stub, &replies);
}

#[test]
fn a_full_lookup_queue_answers_busy_at_once() {
    let stub = HttpStub::always(
        Reply::json("200 OK", &layout(&[UCLA], "OK")).after(Duration::from_secs(3)),
    );
    let herd = google_herd(
        "g-busy",
        "google",
        &stub.base_url(),
        &["--workers", "1", "--lookup-queue", "1"],
    );
    let mut first = Session::report(&herd);
    first
        .client
        .send(format!("WHATSAT {CLIENT} 1 5\n").as_bytes());
    assert!(stub.wait_for(1, PATIENCE), "the first lookup never started");
    // The only worker is busy; this one takes the only place in the queue...
    let mut second = Session::report(&herd);
    second
        .client
        .send(format!("WHATSAT {CLIENT} 2 5\n").as_bytes());
    common::eventually("the second WHATSAT read", || {
        herd.log("Alford")
            .contains(&format!("< WHATSAT {CLIENT} 2 5"))
    });
    // ...so this one is answered at once, without waiting for Google.
    let mut third = Session::report(&herd);
    let started = Instant::now();
    let busy = third.whatsat("3", 5);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "busy reply was slow"
    );
    assert_eq!(
        busy,
        third.expect(&error_layout(
            "OVER_QUERY_LIMIT",
            "server busy: too many places lookups waiting; try again later"
        ))
    );
    let answer = first.expect(&layout(&[UCLA], "OK"));
    assert_eq!(first.client.whatsat_reply(), answer);
    let answer = second.expect(&layout(&[UCLA], "OK"));
    assert_eq!(second.client.whatsat_reply(), answer);
    assert_eq!(stub.count(), 2);
}

#[test]
fn iamats_keep_flowing_while_the_provider_hangs() {
    let stub = HttpStub::always(Reply::Hang);
    let base = stub.base_url();
    let mut herd = google_herd("g-hang", "google", &base, &["--places-timeout", "5"]);
    let mut waiting = Session::report(&herd);
    waiting
        .client
        .send(format!("WHATSAT {CLIENT} 10 5\n").as_bytes());
    assert!(
        stub.wait_for(1, PATIENCE),
        "the lookup never reached the stub"
    );

    // While the lookup hangs, other connections get IAMAT replies at once: on one
    // long-lived connection, and one command per connection.
    let mut other = Client::connect(herd.addr("Alford"));
    for i in 0..20 {
        let started = Instant::now();
        other.send(format!("IAMAT client{i} +34-118 {}\n", now_text()).as_bytes());
        let line = other.line();
        assert!(line.starts_with("AT Alford "), "{line:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "IAMAT {i} was slow"
        );
        let started = Instant::now();
        let reply = herd.ask(
            "Alford",
            &format!("IAMAT oneshot{i} +34-118 {}", now_text()),
        );
        assert!(reply.starts_with("AT Alford "), "{reply:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "one-shot IAMAT {i} was slow"
        );
    }
    // The waiting WHATSAT gets its reply when the request times out.
    let reply = waiting.client.whatsat_reply();
    assert_eq!(
        reply,
        waiting.expect(&error_layout(
            "UNKNOWN_ERROR",
            &format!("no reply from {base} within 5 s (timeout: global)")
        ))
    );
    assert_key_kept_secret(&mut herd, &stub, &[&reply]);
}

// ----- the key -----

#[test]
fn the_key_can_come_from_the_environment() {
    let stub = HttpStub::always(Reply::json("200 OK", &layout(&[], "ZERO_RESULTS")));
    let (dir, addr) = lone_topology("g-env-key");
    let url = stub.base_url();
    let _server = spawn_alone(
        &dir,
        &["--places", "google", "--places-url", &url],
        Some(KEY),
    );
    common::eventually("Alford accepting", || TcpStream::connect(addr).is_ok());
    let mut client = Client::connect(addr);
    client.send(
        format!(
            "IAMAT {CLIENT} {LOCATION} {}\nWHATSAT {CLIENT} 10 5\n",
            now_text()
        )
        .as_bytes(),
    );
    let at = client.line();
    assert!(at.starts_with("AT Alford "), "{at:?}");
    assert_eq!(
        client.whatsat_reply(),
        format!("{at}{}\n\n", layout(&[], "ZERO_RESULTS"))
    );
    let target = &stub.requests()[0].target;
    assert!(target.ends_with(&format!("&key={KEY}")), "{target}");
    let log = std::fs::read_to_string(dir.join("logs/Alford.log")).unwrap();
    assert!(!log.contains(KEY), "key in the log:\n{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_key_is_a_start_up_error_naming_both_ways_to_give_one() {
    for (tag, api, extra) in [
        ("g-nokey", "google", None),
        ("g-nokey-new", "google-new", None),
        ("g-badfile", "google", Some("/nonexistent/places.key")),
    ] {
        let (dir, _) = lone_topology(tag);
        let mut args = vec!["--places", api];
        if let Some(file) = extra {
            args.extend_from_slice(&["--places-key-file", file]);
        }
        let (code, stderr) = exit_of(spawn_alone(&dir, &args, None));
        assert!(matches!(code, Some(c) if c != 0), "{tag}: exit {code:?}");
        assert_eq!(stderr.lines().count(), 1, "{tag}: {stderr}");
        assert!(
            stderr.contains("--places-key-file") && stderr.contains("GOOGLE_PLACES_API_KEY"),
            "{tag}: {stderr}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
