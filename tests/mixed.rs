//! Herds that mix proxy-herd with course-style servers (issue 9): `tests/course_server.py`
//! reads one chunk per connection, handles its first line and closes, prints the time
//! difference with Python's `str(float)`, and floods one line per connection. In both link
//! modes, IAMATs pipelined at our servers and IAMATs sent at once to the course servers reach
//! every server, and the newest report of each client wins everywhere.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;

use common::*;

/// The course server, beside this file.
const COURSE_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/course_server.py");

/// A course-style server process, killed when dropped.
struct CourseServer(Child);

impl CourseServer {
    /// Starts `name` on `port`, flooding to `neighbours`, and waits until it listens.
    fn start(name: &str, port: u16, neighbours: &[u16]) -> CourseServer {
        let mut child = Command::new("python3")
            .arg(COURSE_SERVER)
            .arg(name)
            .arg(port.to_string())
            .args(neighbours.iter().map(u16::to_string))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 is needed for the mixed-herd tests (.ci/run installs it)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let server = CourseServer(child);
        let ready = rx.recv_timeout(PATIENCE).unwrap_or_default();
        assert_eq!(ready.trim(), "ready", "course server {name} did not start");
        server
    }
}

impl Drop for CourseServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Our servers and the course servers, on a ring: Alford – Quinn – Bolden – Reyes – Alford.
/// Every path between two servers of one kind goes through a server of the other kind.
const RING: &[(&str, &[&str])] = &[
    ("Alford", &["Quinn", "Reyes"]),
    ("Bolden", &["Quinn", "Reyes"]),
    ("Quinn", &[]),
    ("Reyes", &[]),
];
const OURS: [&str; 2] = ["Alford", "Bolden"];
const THEIRS: [&str; 2] = ["Quinn", "Reyes"];

/// The first line of what `server` answers to `WHATSAT id 0 0` (`? ...` when unknown).
fn held(herd: &Herd, server: &str, id: &str) -> String {
    first_line(&herd.ask(server, &format!("WHATSAT {id} 0 0"))).to_string()
}

fn mixed_herd_floods_both_ways(links: &str) {
    let mut herd = Herd::plan(&format!("mixed-{links}"), RING, &["--links", links]);
    let port = |name: &str| herd.addr(name).port();
    let ours_ports = [port("Alford"), port("Bolden")];
    let _course: Vec<CourseServer> = THEIRS
        .iter()
        .map(|name| CourseServer::start(name, port(name), &ours_ports))
        .collect();
    for name in OURS {
        herd.start_server(name);
    }
    let base = 1_700_000_000u64;
    // The line every server must end up holding for each client.
    let mut want: HashMap<String, String> = HashMap::new();

    // 1. Ten IAMATs pipelined on one connection to Alford (five clients, each reported
    //    twice, the later report newer): only the newer one may survive anywhere.
    let mut request = String::new();
    for round in 0..2 {
        for c in 0..5 {
            let lat = 10 + round;
            request.push_str(&format!(
                "IAMAT ours{c} +{lat}.5-{c}.25 {}.{round}\n",
                base + c
            ));
        }
    }
    let reply = herd.ask("Alford", &request);
    let lines: Vec<&str> = reply.lines().collect();
    assert_eq!(lines.len(), 10, "{reply}");
    for (c, line) in lines[5..].iter().enumerate() {
        assert!(line.starts_with("AT Alford "), "{line}");
        want.insert(format!("ours{c}"), line.to_string());
    }

    // 2. Five IAMATs at once at each course server (one per connection: a course server
    //    handles one line per connection), from threads, without waiting in between.
    let senders: Vec<_> = THEIRS
        .iter()
        .flat_map(|name| {
            let addr = herd.addr(name);
            (0..5).map(move |c| {
                let id = format!("{name}{c}");
                let request = format!("IAMAT {id} -{c}.5+{c}.75 {}.5\n", base + c);
                thread::spawn(move || {
                    let reply = one_shot(addr, request.as_bytes());
                    let reply = String::from_utf8_lossy(&reply);
                    (id, first_line(&reply).to_string())
                })
            })
        })
        .collect();
    for sender in senders {
        let (id, line) = sender.join().unwrap();
        assert!(line.starts_with("AT "), "{id}: {line}");
        want.insert(id, line);
    }

    // 3. A time difference in Python's exponent form: a client clock far in the future makes
    //    Quinn print something like `-9.99999998e+16`. Our servers take it and pass it on
    //    byte for byte.
    let reply = herd.ask("Quinn", "IAMAT future +1+2 100000000000000000.5\n");
    let future = first_line(&reply).to_string();
    let skew = future.split(' ').nth(2).unwrap_or("");
    assert!(skew.contains("e+"), "Python printed {skew:?}");
    want.insert("future".into(), future);

    // 4. Newest wins: older reports, sent afterwards to the other side, change nothing.
    for (server, id) in [
        ("Bolden", "ours0"),
        ("Reyes", "ours1"),
        ("Alford", "Quinn2"),
    ] {
        let reply = herd.ask(server, &format!("IAMAT {id} +1+1 1600000000\n"));
        assert!(reply.starts_with("AT "), "{reply}");
    }

    for server in OURS.iter().chain(&THEIRS) {
        for (id, line) in &want {
            eventually(&format!("{server} holds {line}"), || {
                held(&herd, server, id) == *line
            });
        }
    }
    println!(
        "mixed herd, {links} links: {} clients reached all 4 servers, newest report kept",
        want.len()
    );
    if links == "persistent" {
        // Alford's persistent links met neighbours that close after one read: it noticed,
        // said so once per neighbour, and sent one line per connection.
        let log = herd.log("Alford");
        for name in THEIRS {
            let needle = format!("{name} closes every connection after one read");
            assert_eq!(log.matches(&needle).count(), 1, "{needle}:\n{log}");
        }
    }
}

#[test]
fn mixed_herd_per_update() {
    mixed_herd_floods_both_ways("per-update");
}

#[test]
fn mixed_herd_persistent() {
    mixed_herd_floods_both_ways("persistent");
}
