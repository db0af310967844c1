//! The wire protocol of SPEC §2 as pure functions: parse one line into a [`Command`], format
//! the replies. Nothing here touches a socket, a clock or the server's state, so every rule of
//! the protocol is unit-tested on plain bytes.
//!
//! Lines are bytes, not `str`: a client id may be any run of non-whitespace bytes, and the
//! reply copies the client's fields byte for byte, so nothing is decoded or re-encoded.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;

/// The whitespace that separates fields (SPEC §2): space, tab, CR, LF, FF, VT.
pub fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c)
}

/// Splits a line into its whitespace-separated fields.
pub fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| is_space(b)).filter(|f| !f.is_empty())
}

/// True when a line holds nothing but whitespace: such lines are ignored, not answered.
pub fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|&b| is_space(b))
}

/// A client's POSIX time, exactly as written: whole seconds and nanoseconds.
///
/// Times are compared as numbers, never as strings (`"99" > "100"` as strings), and
/// the derived ordering compares `secs` first, then `nanos`, which is numeric order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Whole seconds since the epoch.
    pub secs: u64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nanos: u32,
}

impl Timestamp {
    /// The time as signed nanoseconds since the epoch (cannot overflow an `i128`).
    pub fn as_nanos(self) -> i128 {
        i128::from(self.secs) * 1_000_000_000 + i128::from(self.nanos)
    }

    /// The current time of this machine.
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            secs: d.as_secs(),
            nanos: d.subsec_nanos(),
        }
    }
}

/// Parses a time field: digits with an optional fraction of 1 to 9 digits; no sign, no
/// exponent. Seconds that do not fit a `u64` are invalid, not wrapped.
pub fn parse_time(text: &[u8]) -> Option<Timestamp> {
    let (whole, frac) = split_decimal(text)?;
    if frac.len() > 9 {
        return None;
    }
    let secs = parse_u64(whole)?;
    let mut nanos: u32 = 0;
    for i in 0..9 {
        let digit = frac.get(i).map_or(0, |d| u32::from(d - b'0'));
        nanos = nanos * 10 + digit;
    }
    Some(Timestamp { secs, nanos })
}

/// Splits `digits[.digits]` into its whole and fraction parts, checking that both are digits
/// and that neither is empty when present (`5.`, `.5` and `` are rejected).
fn split_decimal(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let (whole, frac) = match text.iter().position(|&b| b == b'.') {
        Some(dot) => {
            let frac = &text[dot + 1..];
            if frac.is_empty() {
                return None;
            }
            (&text[..dot], frac)
        }
        None => (text, &text[text.len()..]),
    };
    let all_digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    if whole.is_empty() || !all_digits(whole) || !all_digits(frac) {
        return None;
    }
    Some((whole, frac))
}

/// Parses ASCII digits into a `u64`, refusing overflow.
fn parse_u64(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// True when the decimal `whole.frac` (digits only) is at most `limit`, compared exactly:
/// `90.0000000000000000001` is over 90 even though it rounds to 90 as a float.
fn decimal_at_most(whole: &[u8], frac: &[u8], limit: u64) -> bool {
    match parse_u64(whole) {
        Some(w) if w < limit => true,
        Some(w) if w == limit => frac.iter().all(|&d| d == b'0'),
        _ => false,
    }
}

/// A client's position, parsed from ISO 6709 text such as `+34.068930-118.445127`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coords {
    /// Latitude in degrees, within [-90, 90].
    pub lat: f64,
    /// Longitude in degrees, within [-180, 180].
    pub lng: f64,
    /// Where the longitude's sign starts in the text, so the text splits without re-parsing.
    pub split: usize,
}

/// Parses a location: latitude then longitude, each a mandatory sign, digits and an optional
/// fraction, with latitude in [-90, 90] and longitude in [-180, 180].
pub fn parse_location(text: &[u8]) -> Option<Coords> {
    let split = check_location(text)?;
    let lat = degrees(&text[..split])?;
    let lng = degrees(&text[split..])?;
    Some(Coords { lat, lng, split })
}

/// Checks a location as [`parse_location`] does, without turning it into floats (only a
/// WHATSAT needs those; every IAMAT and AT line needs the check). Returns where the
/// longitude starts.
pub fn check_location(text: &[u8]) -> Option<usize> {
    // The longitude starts at the first sign after the latitude's own sign.
    let split = 1 + text
        .get(1..)?
        .iter()
        .position(|&b| b == b'+' || b == b'-')?;
    (check_degrees(&text[..split], 90) && check_degrees(&text[split..], 180)).then_some(split)
}

/// True for `[+-]digits[.digits]` whose magnitude is at most `limit`.
fn check_degrees(text: &[u8], limit: u64) -> bool {
    let Some((&sign, number)) = text.split_first() else {
        return false;
    };
    (sign == b'+' || sign == b'-')
        && split_decimal(number).is_some_and(|(whole, frac)| decimal_at_most(whole, frac, limit))
}

/// A checked `[+-]digits[.digits]` as a float. The text is known to be a short, valid
/// decimal, so the parse cannot fail; `ok()?` keeps the no-panic rule all the same.
fn degrees(text: &[u8]) -> Option<f64> {
    std::str::from_utf8(text).ok()?.parse::<f64>().ok()
}

/// A WHATSAT radius: kilometres as the client wrote them, from 0 to 50.
#[derive(Debug, Clone, PartialEq)]
pub struct Radius {
    /// Kilometres, as a float (for the offline provider's arithmetic).
    pub km: f64,
    /// Metres as exact decimal text, which is what Google is asked for.
    pub metres_text: String,
}

/// Parses a radius: digits with an optional fraction, at most 50 (kilometres).
pub fn parse_radius(text: &[u8]) -> Option<Radius> {
    let (whole, frac) = split_decimal(text)?;
    if !decimal_at_most(whole, frac, 50) {
        return None;
    }
    let km = std::str::from_utf8(text).ok()?.parse::<f64>().ok()?;
    Some(Radius {
        km,
        metres_text: km_to_metres_text(whole, frac),
    })
}

/// Moves the decimal point three places right, exactly: `10.5871263` km → `10587.1263` m.
fn km_to_metres_text(whole: &[u8], frac: &[u8]) -> String {
    let mut digits: Vec<u8> = whole.to_vec();
    for i in 0..3 {
        digits.push(*frac.get(i).unwrap_or(&b'0'));
    }
    let rest = frac.get(3..).unwrap_or(&[]);
    let rest_len = rest.iter().rposition(|&d| d != b'0').map_or(0, |i| i + 1);
    let first_nonzero = digits.iter().position(|&d| d != b'0');
    let mut out: String = match first_nonzero {
        Some(i) => digits[i..].iter().map(|&d| d as char).collect(),
        None => "0".to_string(),
    };
    if rest_len > 0 {
        out.push('.');
        out.extend(rest[..rest_len].iter().map(|&d| d as char));
    }
    out
}

/// Parses a WHATSAT bound: an integer from 0 to 20.
pub fn parse_bound(text: &[u8]) -> Option<usize> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = parse_u64(text)?;
    (n <= crate::places::MAX_BOUND as u64).then_some(n as usize)
}

/// Checks the time-difference field of an AT line: any decimal number, with an optional
/// sign, digits, an optional fraction and an optional exponent (SPEC §2). The field is only
/// ever copied, and other servers print it their own way: Python's `str(float)` gives
/// `-6.532669067382812e-05` or `0.25`. Our own AT lines keep the exact form of [`Skew`].
fn valid_skew(text: &[u8]) -> bool {
    let unsigned = match text.split_first() {
        Some((b'+' | b'-', rest)) => rest,
        _ => text,
    };
    let (number, exponent) = match unsigned.iter().position(|&b| b == b'e' || b == b'E') {
        Some(e) => (&unsigned[..e], Some(&unsigned[e + 1..])),
        None => (unsigned, None),
    };
    let exponent_ok = exponent.is_none_or(|x| {
        let digits = match x.split_first() {
            Some((b'+' | b'-', rest)) => rest,
            _ => x,
        };
        !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
    });
    exponent_ok && split_decimal(number).is_some()
}

/// The fields of a location report, shared by IAMAT (from a client) and AT (from a server).
#[derive(Debug, Clone, PartialEq)]
pub struct Report<'a> {
    /// The client id, any non-whitespace bytes.
    pub client: &'a [u8],
    /// The location field exactly as received.
    pub location: &'a [u8],
    /// The time field exactly as received.
    pub time: &'a [u8],
    /// The time, parsed. (The location is checked; its floats are computed only when a
    /// WHATSAT needs them, see [`parse_location`].)
    pub when: Timestamp,
}

/// One valid command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Command<'a> {
    /// `IAMAT client location time`: a client reports where it is.
    IAmAt(Report<'a>),
    /// `AT server skew client location time [extra…]`: a server floods a location.
    /// `line` is the six fields joined by single spaces (extra fields dropped).
    At {
        /// The report the AT carries.
        report: Report<'a>,
        /// The server that received the IAMAT.
        server: &'a [u8],
        /// The six-field AT line, as stored and flooded on: a slice of the input when its
        /// first six fields are already separated by single spaces (as every server writes
        /// them), else a copy joined that way.
        line: Cow<'a, [u8]>,
        /// The server that forwarded the line to us, when it said so with a `via=NAME`
        /// extra field (see [`VIA`]).
        via: Option<&'a [u8]>,
        /// The herd's authentication tag, from a `tag=HEX` extra field (see `auth`).
        tag: Option<&'a [u8]>,
        /// Part of a catch-up (a `sync=N` extra field, see [`SYNC`]): `Some(N)`, where `N` is
        /// the size of the catch-up on its first line and 1 on the others.
        sync: Option<u64>,
        /// The key of the sender's store hash, on the first line of a catch-up (a
        /// `seed=HEX` extra field, see [`SEED`]), as written.
        seed: Option<&'a [u8]>,
    },
    /// `BUSY server seq 1|2|0 [tag=HEX]`: a proxy-herd server is behind, or its floods come
    /// late, or neither any more (see `pressure`). Only neighbours send it.
    Busy {
        /// The server the notice is about.
        server: &'a [u8],
        /// The notice's number: a newer one replaces an older one.
        seq: u64,
        /// 1: behind (a link's queue is long); 2: its floods come late; 0: neither.
        level: u8,
        /// The herd's authentication tag, from a `tag=HEX` extra field (see `auth`).
        tag: Option<&'a [u8]>,
    },
    /// `WHATSAT client radius bound`: what is near a client.
    WhatsAt {
        /// The client id.
        client: &'a [u8],
        /// The radius.
        radius: Radius,
        /// How many places at most.
        bound: usize,
    },
}

/// Fields of a line that [`parse`] looks at: the six of an AT line and a few extras.
const MAX_FIELDS: usize = 10;

/// The extra AT field by which a proxy-herd server names itself when it forwards a line:
/// `AT Alford +0.1 kiwi +34-118 1621464827.5 via=Parker`. The receiver does not send the
/// line back to Parker (no echoes). Only sent to neighbours that have shown they read it
/// (see `peer`), since some course servers count fields.
pub const VIA: &[u8] = b"via=";

/// The extra AT field that marks a line of a catch-up, after `via=` (and only where `via=`
/// goes): `... via=Parker sync=1`. A line that came in a catch-up and is passed on keeps it.
/// A server reading a catch-up is behind by design, and does not hold the herd for it (see
/// `pressure`). The first line of a catch-up says how many lines it has (`sync=1000000`),
/// so the receiver makes room for them at once (see `catchup`).
pub const SYNC: &[u8] = b"sync=";

/// The extra AT field by which the first line of a catch-up gives the key of the sender's
/// store hash, after `sync=N`: `... via=Parker sync=1000000 seed=<32 hex digits>`. The
/// catch-up comes in the order of the sender's table; a receiver that has nothing stored
/// takes the key, and stores the catch-up in the order it comes (see `store::Seed`).
pub const SEED: &[u8] = b"seed=";

/// True when a line's first field is `AT` or `BUSY`: from a neighbour, and handled even
/// while clients are held back (flow control never stops the herd's own traffic).
pub fn is_flood(line: &[u8]) -> bool {
    matches!(fields(line).next(), Some(b"AT" | b"BUSY"))
}

/// Parses one line (without its line ending). `None` means the line is invalid and gets
/// the `? ` answer; whether a WHATSAT's client is known is the caller's business.
pub fn parse(line: &[u8]) -> Option<Command<'_>> {
    // At most MAX_FIELDS fields are looked at, so a 10,000-field line is rejected without
    // being collected (only an AT line may have more than four, and its extras are optional).
    // One pass finds them, and whether the leading ones are one space apart (as every
    // server writes an AT line: then the stored line borrows them, see `six_fields`).
    let mut f: [&[u8]; MAX_FIELDS] = [&[]; MAX_FIELDS];
    let (mut n, mut single_spaced, mut i) = (0, 0, 0);
    while n < MAX_FIELDS {
        let gap = i;
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i == line.len() {
            break;
        }
        if n == 0 || (single_spaced == n && i - gap == 1 && line[gap] == b' ') {
            single_spaced = n + 1;
        }
        let start = i;
        while i < line.len() && !is_space(line[i]) {
            i += 1;
        }
        f[n] = &line[start..i];
        n += 1;
    }
    match (f[0], n) {
        (b"IAMAT", 4) => Some(Command::IAmAt(report(f[1], f[2], f[3])?)),
        (b"AT", 6..) => {
            if !valid_skew(f[2]) {
                return None;
            }
            let report = report(f[3], f[4], f[5])?;
            Some(Command::At {
                line: six_fields(line, &f[..6], single_spaced >= 6),
                server: f[1],
                report,
                via: extra_field(&f[6..n], VIA),
                tag: extra_field(&f[6..n], crate::auth::TAG),
                sync: extra_field(&f[6..n], SYNC).map(|n| {
                    std::str::from_utf8(n)
                        .ok()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(1)
                }),
                seed: extra_field(&f[6..n], SEED),
            })
        }
        (b"BUSY", 4 | 5) => {
            let seq = std::str::from_utf8(f[2]).ok()?;
            if !seq.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let level = match f[3] {
                [d @ b'0'..=b'2'] => d - b'0',
                _ => return None,
            };
            Some(Command::Busy {
                server: f[1],
                seq: seq.parse().ok()?,
                level,
                tag: extra_field(&f[4..n], crate::auth::TAG),
            })
        }
        (b"WHATSAT", 4) => Some(Command::WhatsAt {
            client: f[1],
            radius: parse_radius(f[2])?,
            bound: parse_bound(f[3])?,
        }),
        _ => None,
    }
}

/// The value of the first extra field that starts with `prefix` (`via=`, `tag=`).
fn extra_field<'a>(extras: &[&'a [u8]], prefix: &[u8]) -> Option<&'a [u8]> {
    extras.iter().find_map(|x| x.strip_prefix(prefix))
}

/// `fields` (subslices of `line`) joined by single spaces. A flooded line already is, up to
/// its extras (`single_spaced`: the fields are one space apart): then it is borrowed, not
/// copied (one allocation less per AT line, at every server, for every line of a flood).
fn six_fields<'a>(line: &'a [u8], fields: &[&'a [u8]], single_spaced: bool) -> Cow<'a, [u8]> {
    let (Some(first), Some(last)) = (fields.first(), fields.last()) else {
        return Cow::Borrowed(&[]);
    };
    if !single_spaced {
        return Cow::Owned(fields.join(&b' '));
    }
    // Where the fields sit in `line`: from the first one's start to the last one's end.
    let start = first.as_ptr().addr() - line.as_ptr().addr();
    let end = last.as_ptr().addr() - line.as_ptr().addr() + last.len();
    Cow::Borrowed(&line[start..end])
}

/// Validates the three client fields shared by IAMAT and AT.
fn report<'a>(client: &'a [u8], location: &'a [u8], time: &'a [u8]) -> Option<Report<'a>> {
    Some(Report {
        client,
        location,
        time,
        when: check_location(location).and(parse_time(time))?,
    })
}

/// The time difference of an AT reply: `received - sent`, signed, with nine decimals.
///
/// Computed in integer nanoseconds, so `+0.263873386` is exact, not a float's guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skew(pub i128);

impl Skew {
    /// The difference between the server's receive time and the client's time.
    pub fn between(received: Timestamp, sent: Timestamp) -> Skew {
        Skew(received.as_nanos() - sent.as_nanos())
    }

    /// Reads a skew in the form this server writes (a sign, digits, up to nine decimals);
    /// `None` for the other forms SPEC §2 allows (an exponent, more decimals), which only
    /// other kinds of server write.
    pub fn parse(text: &[u8]) -> Option<Skew> {
        let (negative, unsigned) = match text.split_first() {
            Some((b'-', rest)) => (true, rest),
            Some((b'+', rest)) => (false, rest),
            _ => (false, text),
        };
        let t = parse_time(unsigned)?;
        let nanos = t.as_nanos();
        Some(Skew(if negative { -nanos } else { nanos }))
    }
}

/// Where and when a flood began: the server named in an AT line and the time (nanoseconds
/// since the epoch, by its clock) it received the IAMAT, which is the client's time plus
/// the skew. `None` when the skew is not in this server's own form.
pub fn flood_began(at: &[u8], when: Timestamp) -> Option<(&[u8], i128)> {
    let mut f = fields(at).skip(1);
    let server = f.next()?;
    let skew = Skew::parse(f.next()?)?;
    Some((server, when.as_nanos() + skew.0))
}

impl fmt::Display for Skew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { '-' } else { '+' };
        let abs = self.0.unsigned_abs();
        write!(
            f,
            "{sign}{}.{:09}",
            abs / 1_000_000_000,
            abs % 1_000_000_000
        )
    }
}

/// Formats the AT line a server sends for an IAMAT it received (no line ending):
/// `AT <server> <skew> <client> <location> <time>`.
pub fn format_at(server: &str, skew: Skew, report: &Report<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + report.client.len() + report.location.len());
    out.extend_from_slice(b"AT ");
    out.extend_from_slice(server.as_bytes());
    // Formatted straight into the line: no temporary string per IAMAT.
    let _ = write!(out, " {skew} ");
    for (i, field) in [report.client, report.location, report.time]
        .iter()
        .enumerate()
    {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(field);
    }
    out
}

/// Formats the answer to an invalid line: `? ` and the line as received (no line ending).
pub fn format_invalid(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len() + 3);
    out.extend_from_slice(b"? ");
    out.extend_from_slice(line);
    out.push(b'\n');
    out
}

/// Shows bytes in a log line: valid UTF-8 as is, anything else escaped, so a client's
/// garbage can neither break a log line nor be hidden.
pub struct Shown<'a>(pub &'a [u8]);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // This runs for every line logged: the usual line, printable ASCII, is written in
        // one piece; otherwise clean runs of text are, and only control characters and
        // invalid bytes are written one at a time.
        // (A fold with no early exit: the compiler turns it into a vector loop.)
        let printable = (self.0.iter()).fold(true, |ok, &b| ok & (b.wrapping_sub(0x20) < 0x5f));
        if printable {
            // SAFETY: printable ASCII is valid UTF-8 (checking it again cost 2% of a busy
            // server's time).
            return f.write_str(unsafe { std::str::from_utf8_unchecked(self.0) });
        }
        for chunk in self.0.utf8_chunks() {
            let text = chunk.valid();
            let mut clean_from = 0;
            for (i, c) in text.char_indices() {
                if c.is_control() {
                    f.write_str(&text[clean_from..i])?;
                    write!(f, "{}", c.escape_default())?;
                    clean_from = i + c.len_utf8();
                }
            }
            f.write_str(&text[clean_from..])?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: u64, nanos: u32) -> Timestamp {
        Timestamp { secs, nanos }
    }

    #[test]
    fn busy_notices() {
        match parse(b"BUSY Powell 1764662400123456 1") {
            Some(Command::Busy {
                server,
                seq,
                level,
                tag,
            }) => {
                assert_eq!(
                    (server, seq, level, tag),
                    (&b"Powell"[..], 1764662400123456, 1, None)
                );
            }
            _ => panic!("not a notice"),
        }
        assert!(matches!(
            parse(b"BUSY Powell 7 0 tag=ab"),
            Some(Command::Busy {
                level: 0,
                tag: Some(b"ab"),
                ..
            })
        ));
        assert!(matches!(
            parse(b"BUSY Powell 7 2"),
            Some(Command::Busy { level: 2, .. })
        ));
        for bad in [
            &b"BUSY Powell 7 3"[..],
            b"BUSY Powell 7 11",
            b"BUSY Powell -7 1",
            b"BUSY Powell 7",
            b"BUSY Powell x 1",
        ] {
            assert!(parse(bad).is_none(), "{}", Shown(bad));
        }
        assert!(is_flood(b"BUSY Powell 7 1"));
    }

    #[test]
    fn times_parse_exactly() {
        assert_eq!(
            parse_time(b"1621464827.959498503"),
            Some(ts(1621464827, 959498503))
        );
        assert_eq!(parse_time(b"1621464827.5"), Some(ts(1621464827, 500000000)));
        assert_eq!(parse_time(b"160000"), Some(ts(160000, 0)));
        assert_eq!(parse_time(b"0.000000001"), Some(ts(0, 1)));
        assert_eq!(parse_time(b"18446744073709551615"), Some(ts(u64::MAX, 0)));
        for bad in [
            &b""[..],
            b".5",
            b"5.",
            b"+5",
            b"-5",
            b"1e9",
            b"1.0000000001",
            b"18446744073709551616",
            b"nan",
            b"inf",
            b"1.2.3",
            b"12a",
        ] {
            assert_eq!(parse_time(bad), None, "{}", Shown(bad));
        }
    }

    #[test]
    fn times_compare_as_numbers() {
        let a = parse_time(b"99.9").unwrap();
        let b = parse_time(b"100").unwrap();
        let c = parse_time(b"100.000000001").unwrap();
        assert!(a < b && b < c);
        assert_eq!(parse_time(b"100.5"), parse_time(b"100.500000000"));
    }

    #[test]
    fn locations() {
        let c = parse_location(b"+34.068930-118.445127").unwrap();
        assert_eq!((c.lat, c.lng, c.split), (34.06893, -118.445127, 10));
        let c = parse_location(b"+34-118").unwrap();
        assert_eq!((c.lat, c.lng), (34.0, -118.0));
        assert!(parse_location(b"-90+180").is_some());
        assert!(parse_location(b"+90.000-180.0").is_some());
        for bad in [
            &b"+91.0-118.0"[..],
            b"+90.0000000000000000001+0",
            b"+0+180.5",
            b"34.1-118.2",
            b"+34.1118.2",
            b"+34.1-118.2-1",
            b"+34.-118",
            b"+.5-118",
            b"++34-118",
            b"+34-",
            b"+",
            b"",
            b"+1e3-118",
            b"+nan-118",
            b"+34-118x",
        ] {
            assert_eq!(parse_location(bad), None, "{}", Shown(bad));
        }
    }

    #[test]
    fn radius_and_bound() {
        let r = parse_radius(b"10.5871263").unwrap();
        assert_eq!(r.metres_text, "10587.1263");
        assert_eq!(parse_radius(b"10").unwrap().metres_text, "10000");
        assert_eq!(parse_radius(b"0").unwrap().metres_text, "0");
        assert_eq!(parse_radius(b"0.0001").unwrap().metres_text, "0.1");
        assert_eq!(parse_radius(b"0.5").unwrap().metres_text, "500");
        assert_eq!(parse_radius(b"50.000").unwrap().metres_text, "50000");
        assert_eq!(parse_radius(b"007.25").unwrap().metres_text, "7250");
        for bad in [
            &b"51"[..],
            b"50.1",
            b"-1",
            b"+5",
            b"1e1",
            b"",
            b"5.",
            b"inf",
        ] {
            assert_eq!(parse_radius(bad), None, "{}", Shown(bad));
        }
        assert_eq!(parse_bound(b"0"), Some(0));
        assert_eq!(parse_bound(b"20"), Some(20));
        assert_eq!(parse_bound(b"007"), Some(7));
        for bad in [
            &b"21"[..],
            b"-1",
            b"+1",
            b"1.0",
            b"",
            b"99999999999999999999999",
        ] {
            assert_eq!(parse_bound(bad), None, "{}", Shown(bad));
        }
    }

    #[test]
    fn valid_commands() {
        let Some(Command::IAmAt(r)) =
            parse(b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503")
        else {
            panic!("IAMAT did not parse")
        };
        assert_eq!(r.client, b"kiwi.cs.ucla.edu");
        assert_eq!(r.location, b"+34.068930-118.445127");
        assert_eq!(r.time, b"1621464827.959498503");
        // Any whitespace separates fields; leading and trailing whitespace is ignored.
        assert!(matches!(
            parse(b" \tIAMAT\x0bk\x0c+1+2   3\r"),
            Some(Command::IAmAt(_))
        ));
        let Some(Command::At {
            line,
            server,
            report,
            via,
            tag,
            sync,
            seed,
        }) =
            parse(b"AT  Alford +0.263873386 kiwi +34.068930-118.445127 1621464827.5 Parker Bolden")
        else {
            panic!("AT did not parse")
        };
        assert_eq!(
            via, None,
            "extra fields that are not via= name no forwarder"
        );
        assert_eq!(tag, None);
        assert_eq!(sync, None);
        assert_eq!(seed, None);
        assert!(matches!(
            parse(b"AT A +0.1 kiwi +1+2 3 via=P sync=9 seed=00ff tag=ab"),
            Some(Command::At {
                sync: Some(9),
                seed: Some(b"00ff"),
                tag: Some(b"ab"),
                ..
            })
        ));
        assert!(matches!(
            parse(b"AT A +0.1 kiwi +1+2 3 via=Parker sync=1"),
            Some(Command::At {
                sync: Some(1),
                via: Some(b"Parker"),
                ..
            })
        ));
        // The first line of a catch-up gives its size; a value that is not one counts as 1.
        let sync_of = |line: &[u8]| match parse(line) {
            Some(Command::At { sync, .. }) => sync,
            _ => panic!("not an AT line"),
        };
        assert_eq!(
            sync_of(b"AT A +0.1 k +1+2 3 via=P sync=1000000"),
            Some(1_000_000)
        );
        assert_eq!(sync_of(b"AT A +0.1 k +1+2 3 via=P sync=many"), Some(1));
        assert_eq!(sync_of(b"AT A +0.1 k +1+2 3 via=P sync=-5"), Some(1));
        assert_eq!(
            &line[..],
            b"AT Alford +0.263873386 kiwi +34.068930-118.445127 1621464827.5"
        );
        assert_eq!(server, b"Alford");
        assert_eq!(report.when, ts(1621464827, 500000000));
        // The time difference is any decimal number: other servers print it their own way.
        for skew in [
            "-5",
            "+0.263873386",
            "0.25",
            "-6.532669067382812e-05",
            "1E+3",
            "2e7",
            "-0.0",
        ] {
            let line = format!("AT A {skew} k +1+2 3");
            let Some(Command::At { line: stored, .. }) = parse(line.as_bytes()) else {
                panic!("{line} did not parse")
            };
            assert_eq!(stored, line.as_bytes(), "copied as it came");
        }
        // Single spaces: the stored line is the input's first six fields, borrowed; any
        // other whitespace, and it is joined anew.
        for (input, borrowed) in [
            (&b"AT A -5 k +1+2 3 via=P sync=1"[..], true),
            (b"AT A -5 k +1+2 3", true),
            (b"  AT A -5 k +1+2 3\r", true),
            (b"AT A  -5 k +1+2 3", false),
            (b"AT\tA -5 k +1+2 3 via=P", false),
        ] {
            let Some(Command::At { line, .. }) = parse(input) else {
                panic!("{input:?} did not parse")
            };
            assert_eq!(&line[..], b"AT A -5 k +1+2 3");
            assert_eq!(matches!(line, Cow::Borrowed(_)), borrowed, "{input:?}");
        }
        // The forwarder's via= field and a tag, among other extras; the stored line has six
        // fields.
        let Some(Command::At { line, via, tag, .. }) =
            parse(b"AT A -5 k +1+2 3 route via=Parker tag=ab12")
        else {
            panic!("AT with via did not parse")
        };
        assert_eq!(
            (&line[..], via),
            (&b"AT A -5 k +1+2 3"[..], Some(&b"Parker"[..]))
        );
        assert_eq!(tag, Some(&b"ab12"[..]));
        assert!(is_flood(b" AT A -5 k +1+2 3") && !is_flood(b"ATX") && !is_flood(b"IAMAT"));
        let Some(Command::WhatsAt {
            client,
            radius,
            bound,
        }) = parse(b"WHATSAT kiwi 10 5")
        else {
            panic!("WHATSAT did not parse")
        };
        assert_eq!((client, radius.km, bound), (&b"kiwi"[..], 10.0, 5));
        // Non-UTF-8 client ids are just bytes.
        assert!(matches!(
            parse(b"IAMAT \xff\xfe +1+2 3"),
            Some(Command::IAmAt(_))
        ));
    }

    #[test]
    fn invalid_commands() {
        for bad in [
            &b"IAMAT Clark +12-118"[..],
            b"IAMAT Clark +12-118 160000 123",
            b"AS Clark +0.25 testuser +12-118 1234",
            b"WHATSAT kiwi 51 5",
            b"WHATSAT kiwi 10 21",
            b"IAMAT kiwi +91.0-118.0 1621464827.5",
            b"iamat kiwi +1+2 3",
            b"IAMAT",
            b"WHATSAT kiwi 10",
            b"WHATSAT kiwi 10 5 6",
            b"AT Alford +x kiwi +1+2 3",
            b"AT Alford 1e kiwi +1+2 3",
            b"AT Alford 1e+ kiwi +1+2 3",
            b"AT Alford e5 kiwi +1+2 3",
            b"AT Alford .5 kiwi +1+2 3",
            b"AT Alford 5. kiwi +1+2 3",
            b"AT Alford +-5 kiwi +1+2 3",
            b"AT Alford 1e5.5 kiwi +1+2 3",
            b"AT Alford nan kiwi +1+2 3",
            b"AT Alford inf kiwi +1+2 3",
            b"AT Alford 0x10 kiwi +1+2 3",
            b"AT Alford +0.2 kiwi +1+2",
            b"AT Alford +0.2 kiwi +1+2 -3",
            b"IAMAT kiwi +1+2 nan",
            b"IAMAT kiwi +1+2 1e9",
            b"IAMAT kiwi +1+2 +-5",
            b"",
        ] {
            assert_eq!(parse(bad), None, "{}", Shown(bad));
        }
        let huge = [b"IAMAT".as_slice(), &b" x".repeat(10_000)].concat();
        assert_eq!(parse(&huge), None);
        assert_eq!(format_invalid(b" WHAT  x"), b"?  WHAT  x\n");
    }

    #[test]
    fn skew_positive_negative_zero() {
        let sent = ts(1621464827, 959498503);
        assert_eq!(
            Skew::between(ts(1621464828, 223371889), sent).to_string(),
            "+0.263873386"
        );
        assert_eq!(
            Skew::between(ts(1621464827, 0), sent).to_string(),
            "-0.959498503"
        );
        assert_eq!(Skew::between(sent, sent).to_string(), "+0.000000000");
        assert_eq!(
            Skew::between(ts(10, 0), ts(0, 1)).to_string(),
            "+9.999999999"
        );
        assert_eq!(
            Skew::between(ts(0, 0), ts(u64::MAX, 0)).to_string(),
            "-18446744073709551615.000000000"
        );
    }

    #[test]
    fn a_flood_began_when_its_origin_received_the_iamat() {
        for skew in [
            Skew::between(ts(1621464828, 223371889), ts(1621464827, 959498503)),
            Skew(-959498503),
            Skew(0),
        ] {
            assert_eq!(Skew::parse(skew.to_string().as_bytes()), Some(skew));
        }
        assert_eq!(Skew::parse(b"0.5"), Some(Skew(500_000_000)));
        // Other servers' forms parse, but are not read.
        assert_eq!(Skew::parse(b"-6.532669067382812e-05"), None);
        let sent = ts(1621464827, 959498503);
        let at =
            b"AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503";
        assert_eq!(
            flood_began(at, sent),
            Some((&b"Alford"[..], ts(1621464828, 223371889).as_nanos()))
        );
        assert_eq!(flood_began(b"AT Alford 2.5e-3 k +1+2 3", ts(3, 0)), None);
    }

    #[test]
    fn at_reply_copies_fields() {
        let Some(Command::IAmAt(r)) =
            parse(b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503")
        else {
            panic!()
        };
        let line = format_at("Alford", Skew(263873386), &r);
        assert_eq!(
            line,
            b"AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503"
        );
        // What a server produces, another parses back to the same fields.
        let Some(Command::At {
            report,
            line: stored,
            ..
        }) = parse(&line)
        else {
            panic!()
        };
        assert_eq!(report, r);
        assert_eq!(stored, line);
    }

    #[test]
    fn shown_escapes() {
        assert_eq!(Shown(b"a\tb\xffc").to_string(), "a\\tb\\xffc");
    }
}
