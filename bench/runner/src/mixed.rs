//! Mixed herds: every implementation as neighbours of the others. Because they speak one
//! wire protocol, a location reported to any of them must reach all five servers.
//!
//! The implementations are laid out over as many five-server herds as it takes for each to
//! have a place (in order, wrapping around), so every flood from Hamilton to Powell crosses
//! several of them. The check, per herd: an IAMAT at Hamilton and one at Powell (the far
//! end), then a WHATSAT for each client at every server, until the reply's first line is the
//! AT line the origin gave (bounded: five seconds per server and client). No timing is
//! asserted, only arrival.

use crate::herd::{self, HerdOpts, Impl, ImplKind, Paths};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Sends one command the grading scripts' way and returns everything the server said.
fn one_shot(addr: SocketAddr, line: &str) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)
        .map_err(|e| format!("read {addr}: {e}"))?;
    Ok(reply)
}

/// The herds to check: `impls` (the echo floor aside) dealt over five-server herds in
/// order, wrapping around, so each appears at least once and no herd is all one kind.
fn lineups(impls: &[Impl]) -> Vec<Vec<Impl>> {
    let herds: Vec<Impl> = impls
        .iter()
        .filter(|i| i.kind != ImplKind::Echo)
        .cloned()
        .collect();
    let slots = herd::SERVERS.len();
    if herds.len() < 2 {
        return Vec::new();
    }
    let count = herds.len().div_ceil(slots);
    (0..count)
        .map(|h| {
            (0..slots)
                .map(|s| herds[(h * slots + s) % herds.len()].clone())
                .collect()
        })
        .collect()
}

/// Checks a mixed herd for every lineup of `impls`.
pub fn run(paths: &Paths, impls: &[Impl]) -> Result<(), String> {
    let mut impls = impls.to_vec();
    if !paths.proxy_herd.is_file() {
        eprintln!("note: proxy-herd is not built; the mixed herds go without it");
        impls.retain(|i| i.kind != ImplKind::ProxyHerd);
    }
    let lineups = lineups(&impls);
    if lineups.is_empty() {
        return Err("a mixed herd needs at least two implementations".into());
    }
    for (n, members) in lineups.iter().enumerate() {
        check(paths, members, n)?;
    }
    Ok(())
}

/// One mixed herd: `members` in `SERVERS` order (Alford, Bolden, Hamilton, Parker, Powell).
fn check(paths: &Paths, members: &[Impl], n: usize) -> Result<(), String> {
    let (stub, url) = herd::start_stub(paths, 0, &format!("mixed{n}-stub"))?;
    let opts = HerdOpts {
        places_url: url,
        mixed: Some(members.to_vec()),
        ..HerdOpts::default()
    };
    let ports = herd::free_ports(herd::SERVERS.len())?;
    let h = herd::start(&members[0], paths, &opts, &format!("mixed{n}"), &ports)?;
    let pid = std::process::id();
    let mut expected = Vec::new();
    for (origin, client) in [
        ("Hamilton", format!("mixed{n}h{pid}")),
        ("Powell", format!("mixed{n}p{pid}")),
    ] {
        let reply = one_shot(
            h.addr(origin),
            &format!("IAMAT {client} +34.068930-118.445127 1700000000.5"),
        )?;
        let at = reply.lines().next().unwrap_or("").to_string();
        if !at.starts_with(&format!("AT {origin} ")) {
            return Err(format!("{origin} answered {reply:?} to an IAMAT"));
        }
        expected.push((client, at));
    }
    for (i, name) in herd::SERVERS.iter().enumerate() {
        for (client, at) in &expected {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let reply = one_shot(h.addr(name), &format!("WHATSAT {client} 10 1"))?;
                if reply.lines().next() == Some(at.as_str()) && reply.ends_with("\n\n") {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "{name} ({}) never learned {client}: it answers {:?}",
                        members[i].name,
                        reply.lines().next().unwrap_or("")
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    drop(h);
    drop(stub);
    eprintln!(
        "mixed herd {n} ({}): both locations reached all five servers",
        members
            .iter()
            .zip(herd::SERVERS)
            .map(|(m, s)| format!("{s}={}", m.name))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_implementation_gets_a_place() {
        let imp = |n: &str| Impl {
            name: n.into(),
            kind: ImplKind::Custom(n.into()),
        };
        let all: Vec<Impl> = ["a", "b", "c", "d", "e", "f", "g"].map(imp).to_vec();
        let herds = lineups(&all);
        assert_eq!(herds.len(), 2);
        assert!(herds.iter().all(|h| h.len() == herd::SERVERS.len()));
        for i in &all {
            assert!(
                herds.iter().flatten().any(|m| m.name == i.name),
                "{}",
                i.name
            );
        }
        assert!(lineups(&all[..1]).is_empty());
    }
}
