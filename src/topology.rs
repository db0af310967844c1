//! The herd's map (SPEC §1): which servers exist, where they listen, who neighbours whom.
//!
//! One line per server: `name host:port [neighbour…]`; `#` starts a comment. A link named on
//! either side counts both ways. Every error names the file and the line.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

/// One server of the herd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEntry {
    /// Its name, as used on the command line and in AT lines.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Indexes (into [`Topology::servers`]) of its neighbours, both directions merged, sorted.
    pub neighbours: Vec<usize>,
}

/// The whole herd, as read from a topology file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The servers in file order.
    pub servers: Vec<ServerEntry>,
}

/// The default herd (SPEC §1), built into the binary from the repository's `topology.txt`,
/// so a binary run where no topology file is at hand still has a herd.
pub const DEFAULT_HERD: &str = include_str!("../topology.txt");

/// What [`Topology::load_or_default`] names the built-in herd in messages and logs.
pub const DEFAULT_HERD_NAME: &str = "built-in default herd";

impl Topology {
    /// The topology the command line asks for: the file given, or else `./topology.txt` if
    /// there is one, or else the built-in [`DEFAULT_HERD`]. Also returns where it came from
    /// (the file's path, or [`DEFAULT_HERD_NAME`]), for messages and the log.
    pub fn load_or_default(given: Option<&Path>) -> Result<(Topology, String), String> {
        let local = Path::new("topology.txt");
        match given {
            Some(path) => Ok((Topology::load(path)?, path.display().to_string())),
            None if local.exists() => Ok((Topology::load(local)?, local.display().to_string())),
            None => Ok((
                Topology::parse(DEFAULT_HERD, DEFAULT_HERD_NAME)?,
                DEFAULT_HERD_NAME.to_string(),
            )),
        }
    }

    /// Reads and checks a topology file.
    pub fn load(path: &Path) -> Result<Topology, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read topology: {e}", path.display()))?;
        Topology::parse(&text, &path.display().to_string())
    }

    /// Parses topology text; `file` is only used in error messages (`file:line: problem`).
    pub fn parse(text: &str, file: &str) -> Result<Topology, String> {
        let mut servers: Vec<ServerEntry> = Vec::new();
        // (line number, server index, neighbour names) until every name is known.
        let mut named_links: Vec<(usize, usize, Vec<&str>)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let lineno = i + 1;
            let err = |msg: String| format!("{file}:{lineno}: {msg}");
            let line = raw.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let Some(name) = words.next() else { continue };
            let addr_text = words
                .next()
                .ok_or_else(|| err(format!("server {name} has no host:port")))?;
            let addr = parse_addr(addr_text).map_err(&err)?;
            if servers.iter().any(|s| s.name == name) {
                return Err(err(format!("duplicate server name {name}")));
            }
            if let Some(other) = servers.iter().find(|s| s.addr == addr) {
                return Err(err(format!(
                    "{name} has the same address as {}",
                    other.name
                )));
            }
            named_links.push((lineno, servers.len(), words.collect()));
            servers.push(ServerEntry {
                name: name.to_string(),
                addr,
                neighbours: Vec::new(),
            });
        }
        if servers.is_empty() {
            return Err(format!("{file}: no servers in the topology"));
        }
        for (lineno, from, names) in named_links {
            for name in names {
                let to = servers
                    .iter()
                    .position(|s| s.name == name)
                    .ok_or_else(|| format!("{file}:{lineno}: unknown neighbour {name}"))?;
                if to == from {
                    return Err(format!(
                        "{file}:{lineno}: {name} cannot be its own neighbour"
                    ));
                }
                for (a, b) in [(from, to), (to, from)] {
                    if !servers[a].neighbours.contains(&b) {
                        servers[a].neighbours.push(b);
                    }
                }
            }
        }
        for s in &mut servers {
            s.neighbours.sort_unstable();
        }
        Ok(Topology { servers })
    }

    /// The index of the server called `name`, or an error listing the names there are.
    pub fn find(&self, name: &str, file: &str) -> Result<usize, String> {
        self.servers
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.servers.iter().map(|s| s.name.as_str()).collect();
                format!(
                    "{file}: no server named {name} (servers: {})",
                    names.join(", ")
                )
            })
    }
}

/// Parses `host:port`: an IPv4 address, an IPv6 address in brackets (`[::1]:12000`), or a
/// host name resolved once at start-up.
fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad = || format!("bad address {text} (want host:port, like 127.0.0.1:12000)");
    match text.rsplit_once(':') {
        // `::1:12000` would resolve, but `fd31::1:12000` cannot say where the port starts.
        Some((host, _)) if host.contains(':') && !host.starts_with('[') => Err(format!(
            "bad address {text} (an IPv6 address goes in brackets, like [::1]:12000)"
        )),
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => text
            .to_socket_addrs()
            .map_err(|_| bad())?
            .next()
            .ok_or_else(bad),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = "# name    address          neighbours
Alford    127.0.0.1:12000  Parker Powell
Bolden    127.0.0.1:12001  Parker Powell
Hamilton  127.0.0.1:12002  Parker   # a comment
Parker    127.0.0.1:12003

Powell    127.0.0.1:12004
";

    #[test]
    fn default_herd() {
        let t = Topology::parse(DEFAULT, "t").unwrap();
        let names: Vec<&str> = t.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Alford", "Bolden", "Hamilton", "Parker", "Powell"]);
        // Links count both ways: Parker neighbours Alford, Bolden and Hamilton.
        assert_eq!(t.servers[3].neighbours, vec![0, 1, 2]);
        assert_eq!(t.servers[0].neighbours, vec![3, 4]);
        assert_eq!(t.servers[2].addr, "127.0.0.1:12002".parse().unwrap());
        assert_eq!(t.find("Powell", "t"), Ok(4));
        assert_eq!(
            t.find("Welsh", "t"),
            Err(
                "t: no server named Welsh (servers: Alford, Bolden, Hamilton, Parker, Powell)"
                    .into()
            )
        );
    }

    #[test]
    fn the_built_in_herd_is_the_default_one() {
        assert_eq!(
            Topology::parse(DEFAULT_HERD, DEFAULT_HERD_NAME),
            Topology::parse(DEFAULT, "t")
        );
    }

    #[test]
    fn a_link_named_twice_is_one_link() {
        let t = Topology::parse("A 127.0.0.1:1 B\nB 127.0.0.1:2 A\n", "t").unwrap();
        assert_eq!(t.servers[0].neighbours, vec![1]);
        assert_eq!(t.servers[1].neighbours, vec![0]);
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases = [
            ("A 127.0.0.1:1 B\n", "t:1: unknown neighbour B"),
            (
                "A 127.0.0.1:1\nA 127.0.0.1:2\n",
                "t:2: duplicate server name A",
            ),
            (
                "A 127.0.0.1:1\n\nB 127.0.0.1:2 B\n",
                "t:3: B cannot be its own neighbour",
            ),
            (
                "A 127.0.0.1:99999\n",
                "t:1: bad address 127.0.0.1:99999 (want host:port, like 127.0.0.1:12000)",
            ),
            (
                "A nowhere\n",
                "t:1: bad address nowhere (want host:port, like 127.0.0.1:12000)",
            ),
            ("A\n", "t:1: server A has no host:port"),
            (
                "A 127.0.0.1:1\nB 127.0.0.1:1\n",
                "t:2: B has the same address as A",
            ),
            ("# nothing\n\n", "t: no servers in the topology"),
        ];
        for (text, want) in cases {
            assert_eq!(
                Topology::parse(text, "t"),
                Err(want.to_string()),
                "{text:?}"
            );
        }
    }

    #[test]
    fn ipv6_addresses_in_brackets() {
        let text = "A [::1]:12000 B\nB [fd31:131::5]:12004\nC 10.131.0.3:12002 A\n";
        let t = Topology::parse(text, "t").unwrap();
        assert_eq!(t.servers[0].addr, "[::1]:12000".parse().unwrap());
        assert!(t.servers[0].addr.is_ipv6() && t.servers[0].addr.ip().is_loopback());
        assert_eq!(
            t.servers[1].addr,
            SocketAddr::new("fd31:131::5".parse().unwrap(), 12004)
        );
        assert_eq!(t.servers[0].neighbours, vec![1, 2]);
        // Printed back the way a topology file writes it.
        assert_eq!(t.servers[1].addr.to_string(), "[fd31:131::5]:12004");
        let cases = [
            (
                "A ::1:12000\n",
                "t:1: bad address ::1:12000 (an IPv6 address goes in brackets, like [::1]:12000)",
            ),
            (
                "A fd31:131::5:12004\n",
                "t:1: bad address fd31:131::5:12004 (an IPv6 address goes in brackets, like \
                 [::1]:12000)",
            ),
            (
                "A [::1]\n",
                "t:1: bad address [::1] (want host:port, like 127.0.0.1:12000)",
            ),
            (
                "A [::1]:70000\n",
                "t:1: bad address [::1]:70000 (want host:port, like 127.0.0.1:12000)",
            ),
            (
                "A [fd31::zz]:1\n",
                "t:1: bad address [fd31::zz]:1 (want host:port, like 127.0.0.1:12000)",
            ),
            // One address written two ways is still one address.
            (
                "A [::1]:1\nB [0:0:0:0:0:0:0:1]:1\n",
                "t:2: B has the same address as A",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                Topology::parse(text, "t"),
                Err(want.to_string()),
                "{text:?}"
            );
        }
    }

    #[test]
    fn unreadable_file() {
        let err = Topology::load(Path::new("/nonexistent/topology.txt")).unwrap_err();
        assert!(
            err.starts_with("/nonexistent/topology.txt: cannot read topology"),
            "{err}"
        );
    }
}
