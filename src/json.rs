//! Printing places JSON in Google's layout (SPEC §2), and cutting `results` to a bound.
//!
//! Google prints Nearby Search replies with jsoncpp's `StyledWriter`: three-space indents,
//! `"key" : value`, `[]` and `{}` when empty, and an array of scalars on one line
//! (`[ "locality", "political" ]`) unless it holds 25 or more items or would be 74 characters
//! or longer. [`write_value`] is that printer, written out as a short recursive function.
//!
//! A lookup's answer may be shared by many WHATSATs with different bounds (coalescing), so a
//! body is [`prepare`]d once — each result printed once — and [`compose`]d per WHATSAT by
//! copying the first `bound` printed results.

use serde_json::Value;

const INDENT: &str = "   ";
/// jsoncpp's right margin: a one-line array must be shorter than this.
const RIGHT_MARGIN: usize = 74;

/// Prints `value` in Google's layout at nesting `depth`, the cursor being already placed.
pub fn write_value(out: &mut String, value: &Value, depth: usize) {
    match value {
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        Value::Object(map) => {
            out.push('{');
            for (i, (key, child)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                out.push_str(&quoted(key));
                out.push_str(" : ");
                write_value(out, child, depth + 1);
            }
            newline(out, depth);
            out.push('}');
        }
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Array(items) => match one_line(items) {
            Some(line) => out.push_str(&line),
            None => {
                out.push('[');
                for (i, child) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    newline(out, depth + 1);
                    write_value(out, child, depth + 1);
                }
                newline(out, depth);
                out.push(']');
            }
        },
        Value::String(s) => out.push_str(&quoted(s)),
        // null, booleans and numbers print as serde_json prints them; with the
        // `arbitrary_precision` feature a number keeps the provider's own digits.
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// A whole document in Google's layout, without a final newline.
pub fn to_google_string(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, 0);
    out
}

/// The array on one line (`[ a, b ]`), or `None` when jsoncpp would spread it over lines:
/// it holds a non-empty array or object, has 25 items or more, or reaches the margin.
fn one_line(items: &[Value]) -> Option<String> {
    if items.len() * 3 >= RIGHT_MARGIN {
        return None;
    }
    let mut parts = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::Array(a) if !a.is_empty() => return None,
            Value::Object(o) if !o.is_empty() => return None,
            _ => parts.push(to_google_string(item)),
        }
    }
    let length = 4 + (items.len() - 1) * 2 + parts.iter().map(String::len).sum::<usize>();
    (length < RIGHT_MARGIN).then(|| format!("[ {} ]", parts.join(", ")))
}

fn newline(out: &mut String, depth: usize) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str(INDENT);
    }
}

fn quoted(s: &str) -> String {
    // serde_json's escaping is JSON's: quotes, backslashes and control characters.
    Value::String(s.to_string()).to_string()
}

/// Replaces every run of two or more newlines by one and drops trailing newlines, as SPEC
/// §2 asks of the JSON in a WHATSAT reply (so the reply's only blank line is its last).
pub fn squeeze_newlines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

/// A places body printed once, ready to be cut to any bound by [`compose`].
#[derive(Debug, Clone, PartialEq)]
pub enum Prepared {
    /// The usual case: an object whose `results` is an array of objects. `head` ends with
    /// `"results" : `, each of `items` is one result printed at depth 2 (with its indent),
    /// and `tail` is everything after the array.
    Split {
        /// The text up to the `results` array.
        head: String,
        /// Each result, printed.
        items: Vec<String>,
        /// The text after the `results` array.
        tail: String,
    },
    /// Anything else (no `results`, or odd results): printed whole, never cut.
    Whole(String),
}

/// Prints a provider's body once. Returns [`Prepared::Whole`] when it has no `results`
/// array of objects.
pub fn prepare(body: &Value) -> Prepared {
    let results = body.get("results").and_then(Value::as_array);
    let splittable = results.is_some_and(|r| {
        r.iter()
            .all(|v| v.as_object().is_some_and(|o| !o.is_empty()))
    });
    let Some(map) = body.as_object().filter(|_| splittable) else {
        return Prepared::Whole(squeeze_newlines(&to_google_string(body)));
    };
    let mut head = String::from("{");
    let mut tail = String::new();
    let mut items = Vec::new();
    let mut seen_results = false;
    for (i, (key, child)) in map.iter().enumerate() {
        let out = if seen_results { &mut tail } else { &mut head };
        if i > 0 {
            out.push(',');
        }
        newline(out, 1);
        out.push_str(&quoted(key));
        out.push_str(" : ");
        if key == "results" && !seen_results {
            seen_results = true;
            for item in child.as_array().into_iter().flatten() {
                let mut text = String::new();
                newline(&mut text, 2);
                write_value(&mut text, item, 2);
                items.push(squeeze_newlines(&text[1..]));
            }
        } else {
            write_value(out, child, 1);
        }
    }
    newline(&mut tail, 0);
    tail.push('}');
    Prepared::Split {
        head: squeeze_newlines(&head),
        items,
        tail: squeeze_newlines(&tail),
    }
}

/// Appends the body cut to at most `bound` results to `out`.
pub fn compose(prepared: &Prepared, bound: usize, out: &mut Vec<u8>) {
    match prepared {
        Prepared::Whole(text) => out.extend_from_slice(text.as_bytes()),
        Prepared::Split { head, items, tail } => {
            out.extend_from_slice(head.as_bytes());
            let n = bound.min(items.len());
            if n == 0 {
                out.extend_from_slice(b"[]");
            } else {
                out.push(b'[');
                for (i, item) in items[..n].iter().enumerate() {
                    out.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
                    out.extend_from_slice(item.as_bytes());
                }
                out.extend_from_slice(b"\n   ]");
            }
            out.extend_from_slice(tail.as_bytes());
        }
    }
}

/// The body a WHATSAT gets when no provider answered (SPEC §2): empty results, a status, and
/// a message saying why. Keys in alphabetical order, as Google's own error replies are.
pub fn error_body(status: &str, message: &str) -> Value {
    serde_json::json!({
        "error_message": message,
        "html_attributions": [],
        "results": [],
        "status": status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn google_sample() -> Value {
        serde_json::from_str(
            r#"{"html_attributions":[],"results":[
              {"geometry":{"location":{"lat":34.0689254,"lng":-118.4451871}},"name":"UCLA",
               "place_id":"ChIJZQ9c8IW8woARN0gTXFiTqSU","types":["university","establishment"],
               "vicinity":"Los Angeles","empty":{},"photos":[{"height":2268,"html_attributions":["<a href=\"https://maps.google.com/maps/contrib/1\">A Google User</a>"]}]},
              {"name":"Second","types":["a"]}],
              "status":"OK"}"#,
        )
        .unwrap()
    }

    const PRINTED: &str = r#"{
   "html_attributions" : [],
   "results" : [
      {
         "geometry" : {
            "location" : {
               "lat" : 34.0689254,
               "lng" : -118.4451871
            }
         },
         "name" : "UCLA",
         "place_id" : "ChIJZQ9c8IW8woARN0gTXFiTqSU",
         "types" : [ "university", "establishment" ],
         "vicinity" : "Los Angeles",
         "empty" : {},
         "photos" : [
            {
               "height" : 2268,
               "html_attributions" : [
                  "<a href=\"https://maps.google.com/maps/contrib/1\">A Google User</a>"
               ]
            }
         ]
      },
      {
         "name" : "Second",
         "types" : [ "a" ]
      }
   ],
   "status" : "OK"
}"#;

    #[test]
    fn google_layout() {
        assert_eq!(to_google_string(&google_sample()), PRINTED);
    }

    #[test]
    fn numbers_keep_their_digits() {
        let v: Value =
            serde_json::from_str(r#"{"a":1.50,"b":-0.0000001,"c":12345678901234567890123}"#)
                .unwrap();
        assert_eq!(
            to_google_string(&v),
            "{\n   \"a\" : 1.50,\n   \"b\" : -0.0000001,\n   \"c\" : 12345678901234567890123\n}"
        );
    }

    #[test]
    fn one_line_arrays_follow_jsoncpp() {
        assert_eq!(to_google_string(&json!([1, 2, [], {}])), "[ 1, 2, [], {} ]");
        // 25 items: spread over lines even though short.
        let many = to_google_string(&json!(vec![0; 25]));
        assert_eq!(many.lines().count(), 27);
        // 74 characters or more: spread.
        // `[ "x…", "y…" ]` is 4 + 2 + 2 × (n + 2) characters: 74 at n = 32.
        let long = json!(["x".repeat(32), "y".repeat(32)]);
        assert_eq!(to_google_string(&long).lines().count(), 4);
        let short = json!(["x".repeat(31), "y".repeat(31)]);
        assert_eq!(to_google_string(&short).lines().count(), 1);
        assert_eq!(to_google_string(&json!([[1]])), "[\n   [ 1 ]\n]");
    }

    #[test]
    fn cut_to_bound_matches_printing_the_cut() {
        let body = google_sample();
        let prepared = prepare(&body);
        assert!(matches!(prepared, Prepared::Split { .. }));
        for bound in 0..4 {
            let mut cut = body.clone();
            let results = cut["results"].as_array_mut().unwrap();
            results.truncate(bound);
            let mut got = Vec::new();
            compose(&prepared, bound, &mut got);
            assert_eq!(
                String::from_utf8(got).unwrap(),
                to_google_string(&cut),
                "bound {bound}"
            );
        }
    }

    #[test]
    fn bodies_without_results_are_whole() {
        let body = json!({"status": "REQUEST_DENIED", "error_message": "no"});
        let prepared = prepare(&body);
        let mut got = Vec::new();
        compose(&prepared, 5, &mut got);
        assert_eq!(
            got,
            b"{\n   \"status\" : \"REQUEST_DENIED\",\n   \"error_message\" : \"no\"\n}"
        );
        let mut got = Vec::new();
        compose(
            &prepare(&error_body("UNKNOWN_ERROR", "timed out")),
            5,
            &mut got,
        );
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "{\n   \"error_message\" : \"timed out\",\n   \"html_attributions\" : [],\n   \"results\" : [],\n   \"status\" : \"UNKNOWN_ERROR\"\n}"
        );
    }

    #[test]
    fn squeeze() {
        assert_eq!(squeeze_newlines("a\n\n\nb\n\n"), "a\nb");
        assert_eq!(squeeze_newlines("a\nb"), "a\nb");
        // Escaped newlines inside strings are two characters, not a newline: untouched.
        assert_eq!(to_google_string(&json!("a\n\nb")), r#""a\n\nb""#);
    }
}
