//! A mixed herd: proxy-herd, tokio and asyncio servers as neighbours of each other. Because
//! they speak one wire protocol, a location reported to any of them must reach all five.
//!
//! The check: an IAMAT at Hamilton (asyncio) and one at Powell (the far end), then a WHATSAT
//! for each client at every server, until the reply's first line is the AT line the origin
//! gave (bounded: five seconds per server and client). No timing is asserted, only arrival.

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

pub fn run(paths: &Paths) -> Result<(), String> {
    let imp = |name: &str, kind: ImplKind| Impl {
        name: name.into(),
        kind,
    };
    let native = if paths.proxy_herd.is_file() {
        imp("proxy-herd", ImplKind::ProxyHerd)
    } else {
        eprintln!("note: proxy-herd is not built; the mixed herd uses tokio in its place");
        imp("tokio", ImplKind::Tokio)
    };
    let tokio = imp("tokio", ImplKind::Tokio);
    let asyncio = imp("asyncio", ImplKind::Asyncio);
    // In SERVERS order: Alford, Bolden, Hamilton, Parker, Powell. Every flood from Hamilton
    // to Powell crosses all three implementations.
    let members = vec![
        native.clone(),
        tokio.clone(),
        asyncio,
        tokio,
        native.clone(),
    ];
    let (stub, url) = herd::start_stub(paths, 0, "mixed-stub")?;
    let opts = HerdOpts {
        places_url: url,
        mixed: Some(members.clone()),
        ..HerdOpts::default()
    };
    let ports = herd::free_ports(herd::SERVERS.len())?;
    let h = herd::start(&native, paths, &opts, "mixed", &ports)?;
    let pid = std::process::id();
    let mut expected = Vec::new();
    for (origin, client) in [
        ("Hamilton", format!("mixedh{pid}")),
        ("Powell", format!("mixedp{pid}")),
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
        "mixed herd ({}): both locations reached all five servers",
        members
            .iter()
            .zip(herd::SERVERS)
            .map(|(m, s)| format!("{s}={}", m.name))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}
