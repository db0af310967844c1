//! The randomized wire test (issue 5, "any bytes, no crash"): well over 100,000 random and
//! mutated lines, pipelined at a live server on a few connections, every reply checked
//! against what `proxy_herd::protocol::parse` says the line is. The seed is fixed, so a
//! failure replays exactly (`PROXY_HERD_WIRE_SEED` picks another).

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::Instant;

use common::*;
use proxy_herd::protocol::{Command, is_blank, parse};

/// Lines per connection, and connections.
const LINES: usize = 26_000;
const CONNECTIONS: usize = 4;
/// The server's name, as its AT replies carry it.
const NAME: &str = "Wire";
/// Clients reported before the run, so WHATSATs about them get full replies. One sits in the
/// middle of the Pacific (no places: cheap lookups), one in Los Angeles.
const KNOWN: &[(&str, &str)] = &[
    ("known0", "+0.5-140.25"),
    ("known1", "+34.068930-118.445127"),
];

/// What a line must get back.
#[derive(Debug)]
enum Expect {
    /// Blank lines and AT lines: no reply at all.
    Nothing,
    /// An invalid line: exactly these bytes (`? ` + the line + `\n`).
    Exact(Vec<u8>),
    /// A valid IAMAT: `AT Wire <skew> ` + this tail (`client location time\n`).
    At(Vec<u8>),
    /// A WHATSAT about a known client: its AT line, places JSON, a blank line.
    Places(Vec<u8>),
    /// A WHATSAT about a client that some line of this run may or may not have reported
    /// (on another connection, in a race): either reply is right.
    PlacesOrInvalid(Vec<u8>, Vec<u8>),
}

/// Odd tokens that look numeric or signed to a careless parser.
const WEIRD: &[&str] = &[
    "+-",
    "-+",
    "++1",
    "--1",
    "+-5",
    "nan",
    "NaN",
    "-nan",
    "inf",
    "+inf",
    "-inf",
    "Infinity",
    "1e9",
    "1E9",
    "1e+9",
    "+1e2-3e1",
    "1.5e-3",
    "0x1F",
    "+34.5.6-118",
    "+.5-118",
    "+5.-118",
    "5.",
    ".5",
    "-0",
    "+0-0",
    "0",
    "00000000000000000000001",
    "1_000",
    "١٢٣",
    "+34,5-118",
    "+ 34-118",
    "\u{2212}34",
    "+34.068930−118.445127",
    "18446744073709551616",
    "99999999999999999999999999999999.999999999",
    "1621464827.9594985031",
    "-1621464827",
];

/// A decimal with `whole` below `limit`, sometimes with a fraction.
fn decimal(rng: &mut Rng, limit: u64) -> String {
    let whole = rng.below(limit);
    if rng.chance(50) {
        let digits = 1 + rng.below(9) as usize;
        let frac: String = (0..digits)
            .map(|_| char::from(b'0' + rng.below(10) as u8))
            .collect();
        format!("{whole}.{frac}")
    } else {
        whole.to_string()
    }
}

fn sign(rng: &mut Rng) -> &'static str {
    if rng.chance(50) { "+" } else { "-" }
}

fn location(rng: &mut Rng) -> String {
    format!(
        "{}{}{}{}",
        sign(rng),
        decimal(rng, 90),
        sign(rng),
        decimal(rng, 180)
    )
}

fn time(rng: &mut Rng) -> String {
    let secs = 1_000_000_000 + rng.below(1_000_000_000);
    if rng.chance(70) {
        format!("{secs}.{:09}", rng.below(1_000_000_000))
    } else {
        secs.to_string()
    }
}

/// The fields of a valid command: IAMAT, AT or WHATSAT.
fn valid_fields(rng: &mut Rng) -> Vec<Vec<u8>> {
    let f = |s: String| s.into_bytes();
    match rng.below(10) {
        0..=4 => vec![
            f("IAMAT".into()),
            f(format!("c{}", rng.below(5000))),
            f(location(rng)),
            f(time(rng)),
        ],
        5..=6 => vec![
            f("AT".into()),
            f((*rng.pick(&["Alford", "Bolden", "Other"])).into()),
            f(format!("{}{}", sign(rng), decimal(rng, 100))),
            f(format!("a{}", rng.below(5000))),
            f(location(rng)),
            f(time(rng)),
        ],
        _ => {
            let client = match rng.below(4) {
                0 => KNOWN[0].0.to_string(),
                1 => KNOWN[1].0.to_string(),
                2 => format!("c{}", rng.below(5000)),
                _ => format!("nobody{}", rng.below(100)),
            };
            // Mostly small radii and bounds: the Los Angeles client has many places.
            let bound = if rng.chance(90) {
                rng.below(3)
            } else {
                rng.below(21)
            };
            vec![
                f("WHATSAT".into()),
                f(client),
                f(decimal(rng, 51)),
                f(bound.to_string()),
            ]
        }
    }
}

/// Breaks a valid command in one of the ways the issue lists.
fn mutate(rng: &mut Rng, fields: &mut Vec<Vec<u8>>) {
    let n = fields.len();
    match rng.below(12) {
        // A field dropped.
        0 => {
            fields.remove(rng.index(n));
        }
        // A field doubled.
        1 => {
            let i = rng.index(n);
            let copy = fields[i].clone();
            fields.insert(i, copy);
        }
        // Two fields swapped.
        2 => {
            let (i, j) = (rng.index(n), rng.index(n));
            fields.swap(i, j);
        }
        // A field replaced by a weird number or sign.
        3 | 4 => {
            let i = 1 + rng.index(n - 1);
            fields[i] = rng.pick(WEIRD).as_bytes().to_vec();
        }
        // A field with a weird token glued on.
        5 => {
            let i = rng.index(n);
            fields[i].extend_from_slice(rng.pick(WEIRD).as_bytes());
        }
        // A non-UTF-8 byte somewhere in a field.
        6 => {
            let i = rng.index(n);
            let at = rng.index(fields[i].len() + 1);
            let byte = *rng.pick(&[0x80u8, 0xff, 0xc3, 0xfe, 0xed, 0xa0]);
            fields[i].insert(at, byte);
        }
        // A NUL somewhere in a field.
        7 => {
            let i = rng.index(n);
            let at = rng.index(fields[i].len() + 1);
            fields[i].insert(at, 0);
        }
        // A huge number in a numeric field.
        8 => {
            let i = 1 + rng.index(n - 1);
            let digits = 20 + rng.index(200);
            let big: String = (0..digits)
                .map(|_| char::from(b'1' + rng.below(9) as u8))
                .collect();
            fields[i] = if rng.chance(50) {
                format!("+{big}-{big}").into_bytes()
            } else {
                big.into_bytes()
            };
        }
        // The command word in another case, or another word.
        9 => {
            fields[0] = rng
                .pick(&[
                    "iamat", "Iamat", "WHATS", "AT?", "IAM", "ATAT", "WHATSAT:", "",
                ])
                .as_bytes()
                .to_vec();
        }
        // Extra fields appended (AT accepts them; nothing else does).
        10 => {
            for _ in 0..=rng.below(3) {
                fields.push(b"extra".to_vec());
            }
        }
        // Two fields run together.
        _ => {
            if n > 1 {
                let i = rng.index(n - 1);
                let next = fields.remove(i + 1);
                fields[i].extend_from_slice(&next);
            }
        }
    }
}

/// Joins fields with whitespace: mostly one space, sometimes runs of any SPEC whitespace.
fn join(rng: &mut Rng, fields: &[Vec<u8>]) -> Vec<u8> {
    let mut line = Vec::new();
    if rng.chance(5) {
        line.extend_from_slice(b" \t");
    }
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            if rng.chance(90) {
                line.push(b' ');
            } else {
                for _ in 0..=rng.below(3) {
                    line.push(*rng.pick(b" \t\r\x0b\x0c"));
                }
            }
        }
        line.extend_from_slice(f);
    }
    if rng.chance(5) {
        line.extend_from_slice(b" \x0b");
    }
    line
}

/// One random line, without its line ending (it never holds a `\n`).
fn random_line(rng: &mut Rng) -> Vec<u8> {
    match rng.below(100) {
        // Valid commands.
        0..=29 => {
            let fields = valid_fields(rng);
            join(rng, &fields)
        }
        // Valid commands, broken once or twice.
        30..=64 => {
            let mut fields = valid_fields(rng);
            for _ in 0..=rng.below(2) {
                if !fields.is_empty() {
                    mutate(rng, &mut fields);
                }
            }
            join(rng, &fields)
        }
        // Random bytes.
        65..=79 => {
            let len = rng.index(120);
            (0..len)
                .map(|_| {
                    let b = rng.next_u64() as u8;
                    if b == b'\n' { b'N' } else { b }
                })
                .collect()
        }
        // Blank: empty, or only whitespace.
        80..=87 => {
            let len = rng.index(6);
            (0..len).map(|_| *rng.pick(b" \t\r\x0b\x0c")).collect()
        }
        // A soup of protocol words and weird tokens.
        88..=98 => {
            let mut fields = Vec::new();
            for _ in 0..rng.below(9) {
                let token = match rng.below(4) {
                    0 => rng.pick(&["IAMAT", "AT", "WHATSAT"]).to_string(),
                    1 => rng.pick(WEIRD).to_string(),
                    2 => location(rng),
                    _ => time(rng),
                };
                fields.push(token.into_bytes());
            }
            join(rng, &fields)
        }
        // Rarely: 10,000 fields (well under the 64 KiB line cap).
        _ => {
            let mut fields = valid_fields(rng);
            while fields.len() < 10_000 {
                let f = fields[rng.index(fields.len().min(6))].clone();
                fields.push(f);
            }
            fields.truncate(10_000);
            let mut line = join(rng, &fields);
            line.truncate(60_000);
            line
        }
    }
}

/// The line as the server sees it once framed: without `\n`, and without one `\r` before it.
fn as_received(content: &[u8], ending: &[u8]) -> Vec<u8> {
    let mut raw = [content, ending].concat();
    if raw.last() == Some(&b'\n') {
        raw.pop();
    }
    if raw.last() == Some(&b'\r') {
        raw.pop();
    }
    raw
}

/// What the server must answer to `line`, given the clients known before the run and the ids
/// that some line of the run may report.
fn expect(line: &[u8], maybe_known: &HashSet<Vec<u8>>) -> Expect {
    if is_blank(line) {
        return Expect::Nothing;
    }
    let invalid = [b"? ".as_slice(), line, b"\n"].concat();
    match parse(line) {
        Some(Command::IAmAt(r)) => Expect::At(
            [
                b" ".as_slice(),
                r.client,
                b" ",
                r.location,
                b" ",
                r.time,
                b"\n",
            ]
            .concat(),
        ),
        Some(Command::At { .. }) | Some(Command::Busy { .. }) => Expect::Nothing,
        Some(Command::WhatsAt { client, .. }) => {
            if KNOWN.iter().any(|(k, _)| k.as_bytes() == client) {
                Expect::Places(client.to_vec())
            } else if maybe_known.contains(client) {
                Expect::PlacesOrInvalid(client.to_vec(), invalid)
            } else {
                Expect::Exact(invalid)
            }
        }
        None => Expect::Exact(invalid),
    }
}

/// Reads one `\n`-terminated line; empty at end of input.
fn read_line(reader: &mut impl BufRead) -> Vec<u8> {
    let mut line = Vec::new();
    reader
        .read_until(b'\n', &mut line)
        .expect("no reply in time");
    line
}

/// Reads the rest of a WHATSAT reply after its first line, and checks its shape.
fn check_places(reader: &mut impl BufRead, first: &[u8], client: &[u8]) -> Result<(), String> {
    let fields: Vec<&[u8]> = first.trim_ascii_end().split(|&b| b == b' ').collect();
    if fields.len() != 6 || fields[0] != b"AT" || fields[3] != client {
        return Err(format!(
            "WHATSAT reply starts {:?}",
            String::from_utf8_lossy(first)
        ));
    }
    let mut json = Vec::new();
    loop {
        let line = read_line(reader);
        if line.is_empty() {
            return Err("connection closed inside a WHATSAT reply".into());
        }
        if line == b"\n" {
            break;
        }
        json.extend_from_slice(&line);
    }
    let value: serde_json::Value =
        serde_json::from_slice(&json).map_err(|e| format!("WHATSAT JSON does not parse: {e}"))?;
    if value.get("results").is_none_or(|r| !r.is_array()) {
        return Err(format!("WHATSAT JSON without results: {value}"));
    }
    Ok(())
}

/// Checks one reply against what was expected.
fn check(reader: &mut impl BufRead, want: &Expect) -> Result<(), String> {
    let got = read_line(reader);
    let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match want {
        Expect::Nothing => unreachable!("no reply is read for these"),
        Expect::Exact(bytes) if got == *bytes => Ok(()),
        Expect::Exact(bytes) => Err(format!("want {:?}, got {:?}", show(bytes), show(&got))),
        Expect::At(tail) => {
            let prefix = format!("AT {NAME} ");
            let skew = got
                .strip_prefix(prefix.as_bytes())
                .and_then(|rest| rest.strip_suffix(tail.as_slice()));
            let skew_ok = skew.is_some_and(|s| {
                let (sign, rest) = s.split_first().unwrap_or((&b'x', &[]));
                let text = String::from_utf8_lossy(rest);
                matches!(sign, b'+' | b'-')
                    && text.split_once('.').is_some_and(|(w, f)| {
                        !w.is_empty()
                            && w.bytes().all(|b| b.is_ascii_digit())
                            && f.len() == 9
                            && f.bytes().all(|b| b.is_ascii_digit())
                    })
            });
            if skew_ok {
                Ok(())
            } else {
                Err(format!(
                    "want AT ... {:?}, got {:?}",
                    show(tail),
                    show(&got)
                ))
            }
        }
        Expect::Places(client) => check_places(reader, &got, client),
        Expect::PlacesOrInvalid(_, invalid) if got == *invalid => Ok(()),
        Expect::PlacesOrInvalid(client, _) => check_places(reader, &got, client),
    }
}

#[test]
fn random_and_mutated_lines_get_the_replies_parse_says() {
    let seed = std::env::var("PROXY_HERD_WIRE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_u64);
    let mut rng = Rng::new(seed);
    // Build every connection's bytes first, so the ids any line reports are known up front.
    let mut corpora = Vec::new();
    let mut maybe_known: HashSet<Vec<u8>> = HashSet::new();
    for _ in 0..CONNECTIONS {
        let mut bytes = Vec::new();
        let mut lines = Vec::new();
        for _ in 0..LINES {
            let content = random_line(&mut rng);
            let ending: &[u8] = if rng.chance(20) { b"\r\n" } else { b"\n" };
            bytes.extend_from_slice(&content);
            bytes.extend_from_slice(ending);
            let line = as_received(&content, ending);
            match parse(&line) {
                Some(Command::IAmAt(r)) | Some(Command::At { report: r, .. }) => {
                    maybe_known.insert(r.client.to_vec());
                }
                _ => {}
            }
            lines.push(line);
        }
        corpora.push((bytes, lines));
    }
    for (k, _) in KNOWN {
        assert!(!maybe_known.contains(k.as_bytes()), "no line reports {k}");
    }

    let herd = Herd::start("wire", &[(NAME, &[])], &[]);
    let addr = herd.addr(NAME);
    for (client, place) in KNOWN {
        let reply = herd.ask(NAME, &format!("IAMAT {client} {place} {}\n", now_text()));
        assert!(reply.starts_with("AT "), "{reply}");
    }
    let pid = herd.pid(NAME);
    let rss_before = rss_kib(pid);

    let started = Instant::now();
    let mut total_lines = 0;
    // How many lines of each kind: blank or AT, invalid, IAMAT, WHATSAT, WHATSAT-or-invalid.
    let mut kinds = [0usize; 5];
    let mut workers = Vec::new();
    for (bytes, lines) in corpora {
        total_lines += lines.len();
        let expected: Vec<Expect> = lines.iter().map(|l| expect(l, &maybe_known)).collect();
        for e in &expected {
            kinds[match e {
                Expect::Nothing => 0,
                Expect::Exact(_) => 1,
                Expect::At(_) => 2,
                Expect::Places(_) => 3,
                Expect::PlacesOrInvalid(..) => 4,
            }] += 1;
        }
        workers.push(thread::spawn(move || {
            let stream = TcpStream::connect(addr).unwrap();
            stream.set_read_timeout(Some(PATIENCE)).unwrap();
            let mut writer = stream.try_clone().unwrap();
            // Write on one thread, read on another: the server stops reading a client whose
            // replies pile up, so a client that only wrote would stall.
            let sender = thread::spawn(move || {
                for chunk in bytes.chunks(64 << 10) {
                    writer.write_all(chunk).unwrap();
                }
                writer.shutdown(Shutdown::Write).unwrap();
            });
            let mut reader = BufReader::with_capacity(1 << 16, stream);
            let mut replies = 0;
            let mut errors = Vec::new();
            for (i, want) in expected.iter().enumerate() {
                if matches!(want, Expect::Nothing) {
                    continue;
                }
                replies += 1;
                if let Err(e) = check(&mut reader, want) {
                    errors.push(format!(
                        "line {i} {:?}: {e}",
                        String::from_utf8_lossy(&lines[i])
                    ));
                    // Replies are now out of step; the rest would only repeat the news.
                    break;
                }
            }
            if errors.is_empty() {
                let rest = read_line(&mut reader);
                if !rest.is_empty() {
                    errors.push(format!(
                        "reply after the last: {:?}",
                        String::from_utf8_lossy(&rest)
                    ));
                }
            }
            sender.join().unwrap();
            (replies, errors)
        }));
    }
    let mut replies = 0;
    let mut errors = Vec::new();
    for w in workers {
        let (r, e) = w.join().expect("a connection's checker panicked");
        replies += r;
        errors.extend(e);
    }
    let elapsed = started.elapsed();
    let rss_after = rss_kib(pid);
    println!(
        "wire: {total_lines} lines on {CONNECTIONS} connections ({} blank or AT, {} invalid, \
         {} IAMAT, {} WHATSAT, {} WHATSAT maybe known), {replies} replies checked, {} wrong, \
         in {:.1} s; server RSS {} -> {} KiB",
        kinds[0],
        kinds[1],
        kinds[2],
        kinds[3],
        kinds[4],
        errors.len(),
        elapsed.as_secs_f64(),
        rss_before,
        rss_after
    );
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(total_lines >= 100_000);

    // Still serving, on a fresh connection.
    let reply = herd.ask(NAME, &format!("IAMAT after +1+2 {}\n", now_text()));
    assert!(reply.starts_with(&format!("AT {NAME} ")), "{reply:?}");
    let reply = herd.ask(NAME, "WHATSAT known0 10 1");
    assert!(
        reply.starts_with("AT ") && reply.ends_with("}\n\n"),
        "{reply:?}"
    );
}
