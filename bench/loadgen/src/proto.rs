//! The protocol as a client sees it: formatting requests and framing/validating replies.
//! Pure functions, so they are tested without sockets.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where every generated client says it is (UCLA, from the course's examples).
pub const LOCATION: &str = "+34.068930-118.445127";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReqKind {
    Iamat,
    Whatsat,
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// One client's clock: IAMAT times are the real time, but strictly increasing per client, so
/// every IAMAT is newer than the last one and gets flooded through the whole herd.
#[derive(Default)]
pub struct ClientClock {
    last: u64,
}

impl ClientClock {
    pub fn next(&mut self) -> u64 {
        self.last = now_ns().max(self.last + 1);
        self.last
    }
}

/// Appends `IAMAT id LOCATION secs.nanos` (and a newline when `newline`).
pub fn push_iamat(out: &mut Vec<u8>, id: &str, time_ns: u64, newline: bool) {
    let _ = write!(
        out,
        "IAMAT {id} {LOCATION} {}.{:09}",
        time_ns / 1_000_000_000,
        time_ns % 1_000_000_000
    );
    if newline {
        out.push(b'\n');
    }
}

/// Appends `WHATSAT id radius bound` (and a newline when `newline`).
pub fn push_whatsat(out: &mut Vec<u8>, id: &str, radius: &str, bound: u32, newline: bool) {
    let _ = write!(out, "WHATSAT {id} {radius} {bound}");
    if newline {
        out.push(b'\n');
    }
}

/// What one complete reply turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Good,
    Bad,
}

/// Frames the replies on one pipelined connection. Replies come back in request order, so
/// the kind of the oldest request in flight says what the next reply must look like:
/// an IAMAT reply is one line starting `AT `; a WHATSAT reply is that AT line, a JSON object,
/// and a blank line; anything else (`? ...`) is one line and an error.
#[derive(Default)]
pub struct ReplyFramer {
    /// Lines seen so far of a WHATSAT reply in progress (0: at a reply boundary).
    whatsat_lines: u32,
    json_started: bool,
}

impl ReplyFramer {
    /// Feeds one line (without its `\n`) of a reply to a request of `kind`. Returns the verdict
    /// when the line completes the reply, `None` when more lines belong to it.
    /// `echo`: the server is the echo floor, where any one line is a good reply.
    pub fn line(&mut self, kind: ReqKind, line: &[u8], echo: bool) -> Option<Verdict> {
        if echo {
            return Some(Verdict::Good);
        }
        match kind {
            ReqKind::Iamat => Some(if line.starts_with(b"AT ") {
                Verdict::Good
            } else {
                Verdict::Bad
            }),
            ReqKind::Whatsat => {
                if self.whatsat_lines == 0 {
                    if line.starts_with(b"AT ") {
                        self.whatsat_lines = 1;
                        self.json_started = false;
                        return None;
                    }
                    return Some(Verdict::Bad);
                }
                if self.whatsat_lines == 1 {
                    self.json_started = line.starts_with(b"{");
                }
                self.whatsat_lines += 1;
                if line.is_empty() {
                    let good = self.json_started && self.whatsat_lines > 2;
                    self.whatsat_lines = 0;
                    return Some(if good { Verdict::Good } else { Verdict::Bad });
                }
                None
            }
        }
    }
}

/// Validates the whole reply of a one-shot connection (everything read until EOF).
pub fn check_oneshot(kind: ReqKind, request: &[u8], reply: &[u8], echo: bool) -> Verdict {
    let good = if echo {
        reply.strip_suffix(b"\n") == Some(request)
    } else {
        match kind {
            ReqKind::Iamat => {
                reply.starts_with(b"AT ")
                    && reply.ends_with(b"\n")
                    && reply.iter().filter(|&&b| b == b'\n').count() == 1
            }
            ReqKind::Whatsat => {
                reply.starts_with(b"AT ")
                    && reply.ends_with(b"\n\n")
                    && reply
                        .split(|&b| b == b'\n')
                        .nth(1)
                        .is_some_and(|l| l.starts_with(b"{"))
            }
        }
    };
    if good { Verdict::Good } else { Verdict::Bad }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_requests() {
        let mut out = Vec::new();
        push_iamat(&mut out, "kiwi", 1_621_464_827_959_498_503, true);
        assert_eq!(
            out,
            b"IAMAT kiwi +34.068930-118.445127 1621464827.959498503\n"
        );
        out.clear();
        push_whatsat(&mut out, "kiwi", "10", 5, false);
        assert_eq!(out, b"WHATSAT kiwi 10 5");
    }

    #[test]
    fn clock_is_strictly_increasing() {
        let mut c = ClientClock::default();
        let a = c.next();
        let b = c.next();
        assert!(b > a);
    }

    #[test]
    fn frames_whatsat_and_errors() {
        let mut f = ReplyFramer::default();
        let k = ReqKind::Whatsat;
        assert_eq!(f.line(k, b"AT Alford +0.1 kiwi +1+2 3", false), None);
        assert_eq!(f.line(k, b"{", false), None);
        assert_eq!(f.line(k, b"   \"results\" : []", false), None);
        assert_eq!(f.line(k, b"}", false), None);
        assert_eq!(f.line(k, b"", false), Some(Verdict::Good));
        assert_eq!(f.line(k, b"? WHATSAT x 10 5", false), Some(Verdict::Bad));
        assert_eq!(
            f.line(ReqKind::Iamat, b"AT Alford +0.1 kiwi +1+2 3", false),
            Some(Verdict::Good)
        );
        assert_eq!(
            f.line(ReqKind::Iamat, b"? IAMAT", false),
            Some(Verdict::Bad)
        );
        // An AT line straight followed by a blank line has no JSON: bad.
        assert_eq!(f.line(k, b"AT x", false), None);
        assert_eq!(f.line(k, b"", false), Some(Verdict::Bad));
    }

    #[test]
    fn checks_oneshot_replies() {
        assert_eq!(
            check_oneshot(ReqKind::Iamat, b"IAMAT", b"AT A +0.1 k +1+2 3\n", false),
            Verdict::Good
        );
        assert_eq!(
            check_oneshot(ReqKind::Whatsat, b"W", b"AT A\n{\n}\n\n", false),
            Verdict::Good
        );
        assert_eq!(
            check_oneshot(ReqKind::Whatsat, b"W", b"AT A\n{\n}\n", false),
            Verdict::Bad
        );
        assert_eq!(
            check_oneshot(ReqKind::Iamat, b"X", b"X\n", true),
            Verdict::Good
        );
        assert_eq!(
            check_oneshot(ReqKind::Iamat, b"X", b"", false),
            Verdict::Bad
        );
    }
}
