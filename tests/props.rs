//! Property tests of the pure parts (issue 5, "any bytes, no crash"): the protocol parsers
//! and formatters, the line splitter, and the line handler with no socket in sight.
//!
//! Three kinds of property:
//! - arbitrary bytes never panic anything;
//! - every valid IAMAT, AT and WHATSAT built from generated values parses back to exactly
//!   those values (and what `format_at` writes parses back as an AT);
//! - every line that `parse` rejects is answered `? ` + the line, byte for byte.

use std::sync::Arc;

use mio::{Poll, Token, Waker};
use proptest::prelude::*;
use proxy_herd::client::Replies;
use proxy_herd::herd::{Herd, Origin};
use proxy_herd::lines::{LineBuffer, Next};
use proxy_herd::places::{Provider, Query};
use proxy_herd::protocol::{
    self, Command, Skew, Timestamp, format_at, format_invalid, is_blank, is_space, parse,
    parse_bound, parse_location, parse_radius, parse_time,
};
use proxy_herd::workers::Pool;

const SPACES: &[u8] = b" \t\r\n\x0b\x0c";

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1000,
        // Failures are reported with their minimal input; no regression files in the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---- generators ----

/// A client id: 1..24 bytes of anything but whitespace (so non-UTF-8 and NUL too).
fn client_id() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        any::<u8>().prop_map(|b| if is_space(b) { b'_' } else { b }),
        1..24,
    )
}

/// Up to `n` decimal digits.
fn digits(min: usize, max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(0u8..10, min..=max)
        .prop_map(|d| d.iter().map(|x| char::from(b'0' + x)).collect())
}

/// `[+-]whole[.frac]` with |value| <= limit (checked on the text, exactly), and the value.
fn degrees(limit: u32) -> impl Strategy<Value = String> {
    (any::<bool>(), 0..=limit, 0usize..4, digits(0, 12)).prop_map(
        move |(neg, whole, zeros, frac)| {
            let sign = if neg { '-' } else { '+' };
            // At the limit only a zero fraction is in range.
            let frac = if whole == limit {
                "0".repeat(frac.len())
            } else {
                frac
            };
            let lead = "0".repeat(zeros);
            if frac.is_empty() {
                format!("{sign}{lead}{whole}")
            } else {
                format!("{sign}{lead}{whole}.{frac}")
            }
        },
    )
}

/// A time as text (`secs[.1-9 digits]`) and the timestamp it means.
fn time() -> impl Strategy<Value = (String, Timestamp)> {
    (any::<u64>(), digits(0, 9)).prop_map(|(secs, frac)| {
        let nanos = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<9}").parse::<u32>().unwrap()
        };
        let text = if frac.is_empty() {
            secs.to_string()
        } else {
            format!("{secs}.{frac}")
        };
        (text, Timestamp { secs, nanos })
    })
}

/// One or more whitespace bytes.
fn gap() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(proptest::sample::select(SPACES), 1..4)
}

/// Optional whitespace (leading or trailing); never a `\n` at the very end, which the line
/// splitter would already have removed.
fn edge() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(proptest::sample::select(b" \t\x0b\x0c".as_slice()), 0..3)
}

/// Joins fields with the generated gaps, between optional leading and trailing whitespace.
fn join(fields: &[&[u8]], gaps: &[Vec<u8>], lead: &[u8], trail: &[u8]) -> Vec<u8> {
    let mut line = lead.to_vec();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            line.extend_from_slice(&gaps[(i - 1) % gaps.len()]);
        }
        line.extend_from_slice(f);
    }
    line.extend_from_slice(trail);
    line
}

/// A line of mostly protocol-ish tokens: commands, numbers, signs, junk, glued or spaced.
fn protocolish_line() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"IAMAT".to_vec()),
        Just(b"AT".to_vec()),
        Just(b"WHATSAT".to_vec()),
        Just(b"+".to_vec()),
        Just(b"-".to_vec()),
        Just(b"+-".to_vec()),
        Just(b".".to_vec()),
        Just(b"nan".to_vec()),
        Just(b"inf".to_vec()),
        Just(b"e".to_vec()),
        Just(b"1e9".to_vec()),
        Just(b"\0".to_vec()),
        Just(b"\xff".to_vec()),
        digits(1, 25).prop_map(String::into_bytes),
        gap(),
        client_id(),
    ];
    proptest::collection::vec(token, 0..12).prop_map(|t| t.concat())
}

// ---- a Herd with no sockets, to see the reply a line gets ----

/// A provider that finds nothing; the replies checked here never need places.
struct Nowhere;

impl Provider for Nowhere {
    fn name(&self) -> &'static str {
        "nowhere"
    }
    fn nearby(&self, _query: &Query) -> serde_json::Value {
        serde_json::json!({"html_attributions": [], "results": [], "status": "ZERO_RESULTS"})
    }
}

/// A herd member with no neighbours; the poll and waker only exist for the worker pool.
fn lone_herd() -> (Herd, Poll) {
    let poll = Poll::new().unwrap();
    let waker = Arc::new(Waker::new(poll.registry(), Token(1)).unwrap());
    let provider: Arc<dyn Provider> = Arc::new(Nowhere);
    let pool = Pool::start(Arc::clone(&provider), 1, 8, waker);
    (
        Herd::new(
            "Props".into(),
            Vec::new(),
            provider,
            pool,
            Default::default(),
            false,
        ),
        poll,
    )
}

/// What the handler writes at once for one line on a client connection, and how many
/// replies wait for a places lookup.
fn reply_to(herd: &mut Herd, line: &[u8]) -> (Vec<u8>, usize) {
    let mut replies = Replies::default();
    let mut out = Vec::new();
    herd.handle_line(Token(7), Origin::Accepted, line, &mut replies, &mut out);
    (out, replies.waiting())
}

/// Checks that a line gets the reply `parse` says it must.
fn check_reply(herd: &mut Herd, line: &[u8]) -> Result<(), TestCaseError> {
    let (out, waiting) = reply_to(herd, line);
    if let Some(Command::WhatsAt { .. }) = parse(line) {
        // A valid WHATSAT is never answered at once: its place in line is held for a lookup
        // (known client) or for a location that may be on its way (unknown client; answered
        // `? ` later, which tests/wire.rs checks on a live server).
        prop_assert!(out.is_empty() && waiting == 1, "{:?} {}", out, waiting);
        return Ok(());
    }
    prop_assert_eq!(waiting, 0);
    if is_blank(line) {
        prop_assert!(out.is_empty(), "blank line answered: {:?}", out);
        return Ok(());
    }
    match parse(line) {
        Some(Command::IAmAt(r)) => {
            prop_assert!(out.starts_with(b"AT Props "), "{:?}", out);
            let tail = [
                b" ".as_slice(),
                r.client,
                b" ",
                r.location,
                b" ",
                r.time,
                b"\n",
            ]
            .concat();
            prop_assert!(out.ends_with(&tail), "{:?}", out);
        }
        Some(Command::At { .. }) => prop_assert!(out.is_empty(), "AT answered: {:?}", out),
        _ => prop_assert_eq!(out, [b"? ".as_slice(), line, b"\n"].concat()),
    }
    Ok(())
}

// ---- the reference line splitter ----

/// What the lines of `input` must be, computed the slow, obvious way: split at `\n`, drop one
/// `\r` before it, cut the first line over `max` and stop there; the unterminated tail is a
/// line at end of input.
fn reference_lines(input: &[u8], max: usize) -> Vec<Result<Vec<u8>, Vec<u8>>> {
    let mut out = Vec::new();
    let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let tail = parts.pop().unwrap_or(&[]);
    for p in parts {
        let p = p.strip_suffix(b"\r").unwrap_or(p);
        if p.len() > max {
            out.push(Err(p[..max].to_vec()));
            return out;
        }
        out.push(Ok(p.to_vec()));
    }
    // An unterminated tail over the cap (plus one byte of grace for a `\r`) is cut too.
    if tail.len() > max + 1 {
        out.push(Err(tail[..max].to_vec()));
    } else if !tail.is_empty() {
        let t = tail.strip_suffix(b"\r").unwrap_or(tail);
        if t.len() > max {
            out.push(Err(t[..max].to_vec()));
        } else {
            out.push(Ok(t.to_vec()));
        }
    }
    out
}

/// Feeds `input` to a `LineBuffer` in the given chunk sizes (cycled), the way the reactor
/// does, and collects the lines.
fn split(input: &[u8], chunks: &[usize], max: usize) -> Vec<Result<Vec<u8>, Vec<u8>>> {
    let mut lb = LineBuffer::new(max);
    let mut out = Vec::new();
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() {
        let n = chunks[i % chunks.len()].clamp(1, rest.len());
        i += 1;
        lb.extend(&rest[..n]);
        rest = &rest[n..];
        loop {
            match lb.next_line() {
                Next::Line(r) => out.push(Ok(lb.get(r).to_vec())),
                Next::TooLong(r) => {
                    out.push(Err(lb.get(r).to_vec()));
                    return out;
                }
                Next::Incomplete => break,
            }
        }
    }
    if let Some(r) = lb.finish() {
        let line = lb.get(r).to_vec();
        // `finish` hands out what is left; a tail over the cap would have been cut by
        // `next_line` already, so this is always within it.
        out.push(Ok(line));
    }
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse(&bytes);
        let _ = parse_time(&bytes);
        let _ = parse_location(&bytes);
        let _ = parse_radius(&bytes);
        let _ = parse_bound(&bytes);
        let _ = protocol::Shown(&bytes).to_string();
        prop_assert_eq!(format_invalid(&bytes), [b"? ".as_slice(), &bytes, b"\n"].concat());
    }

    #[test]
    fn protocolish_lines_never_panic(line in protocolish_line()) {
        // Lines made of the protocol's own tokens reach deeper than random bytes do.
        let _ = parse(&line);
        for field in protocol::fields(&line) {
            let _ = parse_time(field);
            let _ = parse_location(field);
            let _ = parse_radius(field);
            let _ = parse_bound(field);
        }
    }

    #[test]
    fn times_parse_back((text, want) in time()) {
        prop_assert_eq!(parse_time(text.as_bytes()), Some(want));
        // Ten fraction digits, a sign or an exponent are never a time.
        prop_assert_eq!(parse_time(format!("{}.0000000000", want.secs).as_bytes()), None);
        prop_assert_eq!(parse_time(format!("+{text}").as_bytes()), None);
        prop_assert_eq!(parse_time(format!("{text}e1").as_bytes()), None);
    }

    #[test]
    fn seconds_past_u64_are_invalid(extra in 1u64..1000) {
        let big = u128::from(u64::MAX) + u128::from(extra);
        prop_assert_eq!(parse_time(big.to_string().as_bytes()), None);
    }

    #[test]
    fn locations_parse_back(lat in degrees(90), lng in degrees(180)) {
        let text = format!("{lat}{lng}");
        let c = parse_location(text.as_bytes());
        prop_assert!(c.is_some(), "{}", text);
        let c = c.unwrap();
        prop_assert_eq!(c.split, lat.len());
        prop_assert_eq!(c.lat, lat.parse::<f64>().unwrap());
        prop_assert_eq!(c.lng, lng.parse::<f64>().unwrap());
    }

    #[test]
    fn locations_out_of_range_are_invalid(
        lat in degrees(90),
        over in 91u32..100_000,
        frac in digits(0, 5),
        bump in 1u32..10,
    ) {
        let out = if frac.is_empty() { format!("+{over}") } else { format!("-{over}.{frac}") };
        prop_assert_eq!(parse_location(format!("{out}+0").as_bytes()), None);
        let lng_over = 180 + over;
        prop_assert_eq!(parse_location(format!("{lat}+{lng_over}").as_bytes()), None);
        // Just past the limit in the last decimal place is still past it.
        prop_assert_eq!(
            parse_location(format!("{lat}-180.{}{bump}", "0".repeat(frac.len())).as_bytes()),
            None
        );
    }

    #[test]
    fn iamat_parses_back(
        client in client_id(),
        lat in degrees(90),
        lng in degrees(180),
        (time_text, when) in time(),
        gaps in proptest::collection::vec(gap(), 3),
        lead in edge(),
        trail in edge(),
    ) {
        let location = format!("{lat}{lng}");
        let line = join(
            &[b"IAMAT", &client, location.as_bytes(), time_text.as_bytes()],
            &gaps,
            &lead,
            &trail,
        );
        match parse(&line) {
            Some(Command::IAmAt(r)) => {
                prop_assert_eq!(r.client, &client[..]);
                prop_assert_eq!(r.location, location.as_bytes());
                prop_assert_eq!(r.time, time_text.as_bytes());
                prop_assert_eq!(r.when, when);
                let coords = parse_location(r.location).unwrap();
                prop_assert_eq!(coords.lat, lat.parse::<f64>().unwrap());
                prop_assert_eq!(coords.lng, lng.parse::<f64>().unwrap());
            }
            other => prop_assert!(false, "{:?} parsed as {:?}", line, other),
        }
    }

    #[test]
    fn formatted_at_parses_back(
        server in "[A-Za-z][A-Za-z0-9]{0,11}",
        client in client_id(),
        lat in degrees(90),
        lng in degrees(180),
        (time_text, when) in time(),
        skew in any::<i64>(),
        extra in proptest::collection::vec("[A-Za-z]{1,8}", 0..4),
    ) {
        let location = format!("{lat}{lng}");
        let iamat = [b"IAMAT ".as_slice(), &client, b" ", location.as_bytes(), b" ",
            time_text.as_bytes()].concat();
        let Some(Command::IAmAt(report)) = parse(&iamat) else {
            return Err(TestCaseError::fail("IAMAT did not parse"));
        };
        let at = format_at(&server, Skew(i128::from(skew)), &report);
        // Some implementations append the route: extra fields are accepted and dropped.
        let mut sent = at.clone();
        for e in &extra {
            sent.push(b' ');
            sent.extend_from_slice(e.as_bytes());
        }
        match parse(&sent) {
            Some(Command::At { report: back, server: name, line, .. }) => {
                prop_assert_eq!(name, server.as_bytes());
                prop_assert_eq!(&line, &at);
                prop_assert_eq!(back.client, &client[..]);
                prop_assert_eq!(back.location, location.as_bytes());
                prop_assert_eq!(back.when, when);
            }
            other => prop_assert!(false, "{:?} parsed as {:?}", sent, other),
        }
        // The skew field is the exact difference, nine decimals, signed.
        let field = at.split(|&b| b == b' ').nth(2).unwrap().to_vec();
        let text = String::from_utf8(field).unwrap();
        let (whole, frac) = text[1..].split_once('.').unwrap();
        prop_assert_eq!(frac.len(), 9);
        let magnitude = whole.parse::<i128>().unwrap() * 1_000_000_000
            + frac.parse::<i128>().unwrap();
        let signed = if text.starts_with('-') { -magnitude } else { magnitude };
        prop_assert_eq!(signed, i128::from(skew));
        prop_assert_eq!(text.starts_with('-'), skew < 0);
    }

    #[test]
    fn whatsat_parses_back(
        client in client_id(),
        whole in 0u32..=50,
        zeros in 0usize..3,
        frac in digits(0, 8),
        bound in 0usize..=20,
        bound_zeros in 0usize..3,
        gaps in proptest::collection::vec(gap(), 3),
        lead in edge(),
        trail in edge(),
    ) {
        let frac = if whole == 50 { "0".repeat(frac.len()) } else { frac };
        let radius = if frac.is_empty() {
            format!("{}{whole}", "0".repeat(zeros))
        } else {
            format!("{}{whole}.{frac}", "0".repeat(zeros))
        };
        let bound_text = format!("{}{bound}", "0".repeat(bound_zeros));
        let line = join(
            &[b"WHATSAT", &client, radius.as_bytes(), bound_text.as_bytes()],
            &gaps,
            &lead,
            &trail,
        );
        match parse(&line) {
            Some(Command::WhatsAt { client: c, radius: r, bound: b }) => {
                prop_assert_eq!(c, &client[..]);
                prop_assert_eq!(b, bound);
                prop_assert_eq!(r.km, radius.parse::<f64>().unwrap());
                // Metres are the kilometres with the point moved three places, exactly.
                let metres: f64 = r.metres_text.parse().unwrap();
                prop_assert!((metres - r.km * 1000.0).abs() <= 1e-6 * metres.max(1.0));
                prop_assert!(!r.metres_text.starts_with('0') || r.metres_text.starts_with("0.")
                    || r.metres_text == "0", "{}", r.metres_text);
            }
            other => prop_assert!(false, "{:?} parsed as {:?}", line, other),
        }
        // Out of range: radius over 50 or bound over 20.
        let over = format!("WHATSAT x 50.{}1 1", "0".repeat(frac.len()));
        prop_assert!(parse(over.as_bytes()).is_none());
        let over = format!("WHATSAT x 1 {}", 21 + bound);
        prop_assert!(parse(over.as_bytes()).is_none());
    }

    #[test]
    fn splitter_matches_the_reference(
        input in proptest::collection::vec(
            prop_oneof![any::<u8>(), Just(b'\n'), Just(b'\r'), Just(b'a')], 0..400),
        chunks in proptest::collection::vec(1usize..64, 1..8),
        max in 1usize..40,
    ) {
        prop_assert_eq!(split(&input, &chunks, max), reference_lines(&input, max));
    }

    #[test]
    fn splitter_cuts_lines_near_the_cap(
        lines in proptest::collection::vec(
            proptest::collection::vec(prop_oneof![Just(b'x'), Just(b'\r')], 0..12), 1..4),
        ends in proptest::collection::vec(
            prop_oneof![Just(&b"\n"[..]), Just(&b"\r\n"[..]), Just(&b""[..])], 4),
        chunks in proptest::collection::vec(1usize..8, 1..4),
        max in 1usize..10,
    ) {
        // Lines a byte or two either side of the cap, ended by `\n`, `\r\n` or nothing
        // (end of input), are where an off-by-one in the cap would show.
        let mut input = Vec::new();
        for (line, end) in lines.iter().zip(&ends) {
            input.extend_from_slice(line);
            input.extend_from_slice(end);
        }
        prop_assert_eq!(split(&input, &chunks, max), reference_lines(&input, max));
    }

    #[test]
    fn splitter_same_lines_at_every_chunk_size(
        input in proptest::collection::vec(
            prop_oneof![any::<u8>(), Just(b'\n'), Just(b'\r')], 0..120),
        max in 1usize..30,
    ) {
        let whole = split(&input, &[input.len().max(1)], max);
        for chunk in 1..=input.len() {
            prop_assert_eq!(&split(&input, &[chunk], max), &whole, "chunk {}", chunk);
        }
    }
}

/// A client id for the handler test: often the same one, so some WHATSATs find it known.
fn some_client() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![client_id(), Just(b"kiwi".to_vec())]
}

#[test]
fn every_line_gets_the_reply_parse_says() {
    // One herd for every case, so earlier lines (IAMATs, ATs) make later WHATSATs known.
    let (herd, _poll) = lone_herd();
    // The runner wants a `Fn`, so the herd is borrowed mutably through a cell.
    let herd = std::cell::RefCell::new(herd);
    let mut runner = proptest::test_runner::TestRunner::new(config());
    let lines = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        protocolish_line(),
        (some_client(), degrees(90), degrees(180), time()).prop_map(|(c, lat, lng, (t, _))| {
            [
                b"IAMAT iamat-".as_slice(),
                &c,
                b" ",
                lat.as_bytes(),
                lng.as_bytes(),
                b" ",
                t.as_bytes(),
            ]
            .concat()
        }),
        (some_client(), 0u32..60, 0u32..25).prop_map(|(c, r, b)| {
            [
                b"WHATSAT iamat-".as_slice(),
                &c,
                format!(" {r} {b}").as_bytes(),
            ]
            .concat()
        }),
    ];
    runner
        .run(&lines, |line| {
            // The splitter never hands out a `\n`; a line always ends before one.
            let line: Vec<u8> = line.into_iter().filter(|&b| b != b'\n').collect();
            check_reply(&mut herd.borrow_mut(), &line)
        })
        .unwrap();
}

#[test]
fn huge_lines_are_rejected_without_panic() {
    let (mut herd, _poll) = lone_herd();
    let many = [b"IAMAT".as_slice(), &b" x".repeat(10_000)].concat();
    let numbers = [
        b"WHATSAT k ".as_slice(),
        &b"9".repeat(5000),
        b" ",
        &b"9".repeat(5000),
    ]
    .concat();
    let signs = [b"IAMAT k ".as_slice(), &b"+-".repeat(3000), b" 1"].concat();
    for line in [many, numbers, signs] {
        assert_eq!(parse(&line), None);
        let (out, _) = reply_to(&mut herd, &line);
        assert_eq!(out, [b"? ".as_slice(), &line, b"\n"].concat());
    }
}
