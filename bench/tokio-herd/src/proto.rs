//! The wire protocol (SPEC §2): parsing commands and formatting replies. Pure functions.

/// A client time or server time as exact integer nanoseconds since the epoch.
pub type Nanos = i128;

/// A parsed, valid command.
#[derive(Debug, PartialEq)]
pub enum Command<'a> {
    Iamat {
        id: &'a str,
        location: &'a str,
        time: &'a str,
        time_ns: Nanos,
    },
    /// An AT line from another server: `line` is the six fields, re-joined by single spaces.
    At {
        id: &'a str,
        time_ns: Nanos,
        line: String,
    },
    Whatsat {
        id: &'a str,
        radius_km: f64,
        bound: usize,
    },
}

/// The fields of a line, split on any run of ASCII whitespace (space, tab, CR, LF, FF, VT).
fn fields(line: &str) -> Vec<&str> {
    line.split([' ', '\t', '\r', '\n', '\x0c', '\x0b'])
        .filter(|f| !f.is_empty())
        .collect()
}

/// Parses one line; `None` means "invalid command" (answered with `? line`).
pub fn parse(line: &str) -> Option<Command<'_>> {
    let f = fields(line);
    match f.first().copied()? {
        "IAMAT" if f.len() == 4 => {
            parse_location(f[2])?;
            Some(Command::Iamat {
                id: f[1],
                location: f[2],
                time: f[3],
                time_ns: parse_time(f[3])?,
            })
        }
        "AT" if f.len() >= 6 => {
            parse_diff(f[2])?;
            parse_location(f[4])?;
            Some(Command::At {
                id: f[3],
                time_ns: parse_time(f[5])?,
                line: f[..6].join(" "),
            })
        }
        "WHATSAT" if f.len() == 4 => {
            let radius_km = parse_decimal(f[2])?;
            if !(0.0..=50.0).contains(&radius_km) {
                return None;
            }
            if !f[3].bytes().all(|b| b.is_ascii_digit()) || f[3].len() > 3 {
                return None;
            }
            let bound: usize = f[3].parse().ok()?;
            if bound > 20 {
                return None;
            }
            Some(Command::Whatsat {
                id: f[1],
                radius_km,
                bound,
            })
        }
        _ => None,
    }
}

/// Digits with an optional fraction, no sign, no exponent.
fn parse_decimal(s: &str) -> Option<f64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || (s.contains('.') && frac.is_empty()) {
        return None;
    }
    s.parse().ok()
}

/// A POSIX time: digits and an optional fraction of up to nine digits, in exact nanoseconds.
pub fn parse_time(s: &str) -> Option<Nanos> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || int.len() > 20
        || frac.len() > 9
        || (s.contains('.') && frac.is_empty())
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: i128 = int.parse().ok()?;
    let mut nanos: i128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    for _ in frac.len()..9 {
        nanos *= 10;
    }
    Some(secs * 1_000_000_000 + nanos)
}

/// `+34.068930-118.445127`: each part a mandatory sign, digits, an optional fraction.
/// Returns (latitude, longitude) when both are in range.
pub fn parse_location(s: &str) -> Option<(f64, f64)> {
    let split = s.get(1..)?.find(['+', '-'])? + 1;
    let (lat, lng) = (&s[..split], &s[split..]);
    let signed = |p: &str| -> Option<f64> {
        let rest = p.strip_prefix(['+', '-'])?;
        let v = parse_decimal(rest)?;
        Some(if p.starts_with('-') { -v } else { v })
    };
    let (lat, lng) = (signed(lat)?, signed(lng)?);
    ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lng)).then_some((lat, lng))
}

/// The time difference field of an AT line: a sign, digits, a fraction.
fn parse_diff(s: &str) -> Option<()> {
    let rest = s.strip_prefix(['+', '-'])?;
    parse_decimal(rest).map(|_| ())
}

/// `+0.263873386`: an explicit sign and nine digits after the point, exactly.
pub fn format_diff(diff_ns: Nanos) -> String {
    let sign = if diff_ns < 0 { '-' } else { '+' };
    let a = diff_ns.unsigned_abs();
    format!("{sign}{}.{:09}", a / 1_000_000_000, a % 1_000_000_000)
}

/// Renders JSON the way Google prints it: three-space indents, `"key" : value`, short arrays
/// of scalars on one line, `[]` and `{}` when empty.
pub fn google_json(v: &serde_json::Value) -> String {
    let mut out = String::new();
    write_json(v, 0, &mut out);
    out
}

fn write_json(v: &serde_json::Value, indent: usize, out: &mut String) {
    use serde_json::Value;
    let pad = |n: usize, out: &mut String| out.extend(std::iter::repeat_n(' ', n));
    match v {
        Value::Object(map) if !map.is_empty() => {
            out.push_str("{\n");
            for (i, (k, v)) in map.iter().enumerate() {
                pad(indent + 3, out);
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push_str(" : ");
                write_json(v, indent + 3, out);
                out.push_str(if i + 1 < map.len() { ",\n" } else { "\n" });
            }
            pad(indent, out);
            out.push('}');
        }
        Value::Array(items) if !items.is_empty() => {
            let scalars = items.iter().all(|i| !i.is_object() && !i.is_array());
            if scalars {
                let inner: Vec<String> = items.iter().map(|i| i.to_string()).collect();
                out.push_str("[ ");
                out.push_str(&inner.join(", "));
                out.push_str(" ]");
                return;
            }
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                pad(indent + 3, out);
                write_json(item, indent + 3, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            pad(indent, out);
            out.push(']');
        }
        Value::Object(_) => out.push_str("{}"),
        Value::Array(_) => out.push_str("[]"),
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Every run of newlines becomes one, trailing newlines go (SPEC §2, WHATSAT).
pub fn squeeze_newlines(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\n' && out.ends_with('\n') {
            continue;
        }
        out.push(c);
    }
    while out.ends_with('\n') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_examples() {
        let c = parse("IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503");
        assert!(matches!(
            c,
            Some(Command::Iamat {
                time_ns: 1_621_464_827_959_498_503,
                ..
            })
        ));
        for bad in [
            "IAMAT Clark +12-118",
            "IAMAT Clark +12-118 160000 123",
            "AS Clark +0.25 testuser +12-118 1234",
            "WHATSAT kiwi 51 5",
            "WHATSAT kiwi 10 21",
            "IAMAT kiwi +91.0-118.0 1621464827.5",
            "",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert!(matches!(
            parse("AT Alford +0.263873386 kiwi +34-118 160000 Parker"),
            Some(Command::At { .. })
        ));
        assert!(matches!(
            parse("WHATSAT kiwi 10.5 20"),
            Some(Command::Whatsat { bound: 20, .. })
        ));
    }

    #[test]
    fn formats_differences_exactly() {
        assert_eq!(format_diff(263_873_386), "+0.263873386");
        assert_eq!(format_diff(-1_500_000_000), "-1.500000000");
    }

    #[test]
    fn prints_like_google() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"b": [], "a": {"t": ["x", "y"]}, "c": [{"d": 1}]}"#).unwrap();
        assert_eq!(
            google_json(&v),
            "{\n   \"b\" : [],\n   \"a\" : {\n      \"t\" : [ \"x\", \"y\" ]\n   },\n   \"c\" : [\n      {\n         \"d\" : 1\n      }\n   ]\n}"
        );
        assert_eq!(squeeze_newlines("a\n\n\nb\n\n"), "a\nb");
    }
}
