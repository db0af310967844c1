//! `proxy-herd --ask HOST:PORT LINE...`: a client for people.
//!
//! It talks to a server the way the course's grading scripts do: one connection, every line
//! written at once (pipelined), a half-close after the last (`shutdown(SHUT_WR)`, so the
//! server knows no more is coming and closes once it has answered), then everything the
//! server sends is read until it closes, and printed as it comes. The word `now` in a line
//! becomes the current time in the form IAMAT wants (`1621464827.959498503`), so nobody types
//! a timestamp by hand.
//!
//! This runs outside any server, so it may block: plain `std::net`, with time limits on
//! connecting and reading so it never hangs.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::protocol::{self, Command, Timestamp};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the whole exchange may take after connecting: more than a Google lookup's own
/// default limit (10 s), so a slow WHATSAT still gets its answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// What `--ask` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// The server, as `host:port`.
    pub addr: String,
    /// The lines to send, as given (before `now` is replaced).
    pub lines: Vec<String>,
}

/// Replaces every whitespace-separated word `now` in `line` with `time`; everything else,
/// spacing included, stays as it was.
pub fn fill_in_now(line: &str, time: &str) -> String {
    let mut out = String::with_capacity(line.len() + time.len());
    let mut rest = line;
    while !rest.is_empty() {
        // Copy the whitespace, then handle one word.
        let word_start = rest
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(rest.len());
        out.push_str(&rest[..word_start]);
        rest = &rest[word_start..];
        let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..word_end];
        out.push_str(if word == "now" { time } else { word });
        rest = &rest[word_end..];
    }
    out
}

/// The current time as IAMAT wants it: seconds, a point, nine digits.
pub fn now_text() -> String {
    let now = Timestamp::now();
    format!("{}.{:09}", now.secs, now.nanos)
}

/// Whether the server answers `line`: every line does, except blank lines and valid AT lines
/// (SPEC §2). An invalid AT line is answered `? ` like any invalid line.
pub fn expects_reply(line: &str) -> bool {
    let bytes = line.as_bytes();
    !protocol::is_blank(bytes) && !matches!(protocol::parse(bytes), Some(Command::At { .. }))
}

/// How many whole replies `text` holds. An IAMAT reply is one line (`AT ...`); a WHATSAT
/// reply is an `AT ...` line, then JSON (its first line starts with `{`), ending with a blank
/// line; anything else (`? ...`) is one line. A reply cut off before its end is not counted.
pub fn count_replies(text: &str) -> usize {
    let mut lines = text.split_inclusive('\n').peekable();
    let mut replies = 0;
    while let Some(line) = lines.next() {
        if !line.ends_with('\n') {
            break; // the connection closed in the middle of a line
        }
        if line.starts_with("AT ") && lines.peek().is_some_and(|next| next.starts_with('{')) {
            // A WHATSAT reply: whole only once its blank line has come.
            if lines.by_ref().any(|json_line| json_line == "\n") {
                replies += 1;
            }
        } else {
            replies += 1;
        }
    }
    replies
}

/// Sends the lines, prints the replies on stdout, and returns `Ok` when every line that
/// should be answered was; otherwise one line saying what went wrong.
pub fn run(ask: &Ask) -> Result<(), String> {
    let addr = ask
        .addr
        .to_socket_addrs()
        .map_err(|e| format!("--ask {}: {e}", ask.addr))?
        .next()
        .ok_or_else(|| format!("--ask {}: no address", ask.addr))?;
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let time = now_text();
    // An argument holding newlines is several lines, each of which may need a reply.
    let lines: Vec<String> = ask
        .lines
        .iter()
        .flat_map(|arg| arg.split('\n'))
        .map(|line| fill_in_now(line, &time))
        .collect();
    let expected = lines.iter().filter(|l| expects_reply(l)).count();
    let mut request = lines.join("\n");
    request.push('\n');
    // Written from a thread of its own while this one reads: a server stops reading a client
    // that does not read its replies, so with many lines, writing everything before reading
    // anything could wait forever.
    let mut writer = stream
        .try_clone()
        .map_err(|e| format!("cannot send to {addr}: {e}"))?;
    let sender = std::thread::spawn(move || {
        writer
            .write_all(request.as_bytes())
            .and_then(|()| writer.shutdown(Shutdown::Write))
    });

    let deadline = Instant::now() + REPLY_TIMEOUT;
    let mut received = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let mut stdout = std::io::stdout().lock();
    let problem = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Some(format!(
                "{addr} did not close the connection within {} s",
                REPLY_TIMEOUT.as_secs()
            ));
        }
        // Cannot fail: the duration is not zero.
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut chunk) {
            Ok(0) => break None,
            Ok(n) => {
                received.extend_from_slice(&chunk[..n]);
                // Printing is best effort: a closed stdout must not hide the exit code.
                let _ = stdout.write_all(&chunk[..n]).and_then(|()| stdout.flush());
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Some(format!("reading from {addr}: {e}")),
        }
    };
    let got = count_replies(&String::from_utf8_lossy(&received));
    // The reading is over, so the writer cannot be blocked any more: close the socket under
    // it in case it still is (a server that stopped reading), then collect its verdict.
    let _ = stream.shutdown(Shutdown::Both);
    let sent = sender.join().unwrap_or(Ok(()));
    let problem = problem.or_else(|| {
        sent.err()
            .map(|e| format!("cannot send everything to {addr}: {e}"))
    });
    match problem {
        Some(problem) => Err(format!("{problem}; got {got} of {expected} replies")),
        None if got < expected => Err(format!(
            "{addr} closed the connection after {got} of {expected} replies"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_replaced_as_a_word_only() {
        let t = "1621464827.959498503";
        assert_eq!(
            fill_in_now("IAMAT kiwi +34-118 now", t),
            format!("IAMAT kiwi +34-118 {t}")
        );
        assert_eq!(fill_in_now("  now\tnow ", t), format!("  {t}\t{t} "));
        assert_eq!(
            fill_in_now("IAMAT nowhere +1+1 known", t),
            "IAMAT nowhere +1+1 known"
        );
        assert_eq!(fill_in_now("", t), "");
    }

    #[test]
    fn now_text_is_an_iamat_time() {
        let text = now_text();
        let (secs, nanos) = text.split_once('.').unwrap();
        assert_eq!(nanos.len(), 9);
        assert!(secs.parse::<u64>().unwrap() > 1_600_000_000);
        assert!(protocol::parse_time(text.as_bytes()).is_some());
    }

    #[test]
    fn which_lines_are_answered() {
        assert!(expects_reply("IAMAT kiwi +34-118 1"));
        assert!(expects_reply("WHATSAT kiwi 10 2"));
        assert!(expects_reply("hello"));
        assert!(expects_reply("AT bad line"));
        assert!(!expects_reply("AT Alford +0.1 kiwi +34-118 1"));
        assert!(!expects_reply(" \t"));
    }

    #[test]
    fn replies_are_counted_by_their_shape() {
        let iamat = "AT Alford +0.1 kiwi +34-118 1\n";
        let whatsat = "AT Alford +0.1 kiwi +34-118 1\n{\n   \"results\" : [],\n}\n\n";
        assert_eq!(count_replies(""), 0);
        assert_eq!(count_replies(iamat), 1);
        assert_eq!(count_replies("? hello\n? \n"), 2);
        assert_eq!(count_replies(&format!("{iamat}{whatsat}? x\n{iamat}")), 4);
        assert_eq!(count_replies(&format!("{whatsat}{whatsat}")), 2);
        // Cut off: half a line, or JSON without its blank line.
        assert_eq!(count_replies(&format!("{iamat}AT Alf")), 1);
        assert_eq!(count_replies("AT Alford +0.1 kiwi +34-118 1\n{\n}\n"), 0);
    }
}
