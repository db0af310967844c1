//! Only the herd may speak for the herd (`--herd-key`): AT lines signed with a shared secret.
//!
//! Any TCP client can send an AT line, and newest wins, so one forged line with a made-up
//! time far in the future would freeze a client's location for ever. With a key, every AT
//! line a server sends carries a `tag=` field after the six (SPEC §2 lets AT lines carry
//! extra fields): HMAC-SHA256 over the six fields as stored (single spaces), in hex, keyed
//! with the secret. A server with the key stores and floods only AT lines whose tag checks
//! out. The key protects the herd's state from strangers; it encrypts nothing, and clients
//! (IAMAT, WHATSAT) are not authenticated.
//!
//! HMAC comes from `ring`, which is already in the dependency tree through ureq's TLS; its
//! `hmac::verify` compares in constant time.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ring::hmac;

use crate::protocol::Timestamp;

/// Why an AT line was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The herd has a key and the line carries no tag, or a wrong one: a stranger's line,
    /// answered `? ` like any invalid line.
    NoValidTag,
    /// Its time is more than `--max-future` ahead: dropped (a neighbour's line gets no
    /// answer), and logged.
    FromTheFuture,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::NoValidTag => "no valid herd tag",
            Refusal::FromTheFuture => "its time is too far in the future",
        })
    }
}

/// What a server refuses to take: AT lines without the herd's tag (`--herd-key`), and
/// reports from too far in the future (`--max-future`). Both off by default, so herds mixed
/// with the course's servers (which sign nothing, and whose tests use times years ahead)
/// keep working.
#[derive(Debug, Default, Clone)]
pub struct Admission {
    /// The herd's secret.
    pub key: Option<Arc<HerdKey>>,
    /// How far ahead of our clock a client's time may be.
    pub max_future: Option<Duration>,
}

impl Admission {
    /// Why an AT line (its six fields, its `tag=` value, its time) must not be taken, if it
    /// must not: `None` means take it.
    pub fn refuse_at(&self, line: &[u8], tag: Option<&[u8]>, when: Timestamp) -> Option<Refusal> {
        if let Some(key) = &self.key
            && !tag.is_some_and(|tag| key.verify(line, tag))
        {
            return Some(Refusal::NoValidTag);
        }
        if self.too_far_ahead(when) {
            return Some(Refusal::FromTheFuture);
        }
        None
    }

    /// True when a `BUSY` notice (its four fields, its `tag=` value) must be ignored: with
    /// a herd key, one without the right tag.
    pub fn refuse_notice(&self, notice: &[u8], tag: Option<&[u8]>) -> bool {
        self.key
            .as_ref()
            .is_some_and(|key| !tag.is_some_and(|tag| key.verify(notice, tag)))
    }

    /// True when `when` is more than `--max-future` ahead of the server's clock.
    pub fn too_far_ahead(&self, when: Timestamp) -> bool {
        self.max_future.is_some_and(|ahead| {
            when.as_nanos() > Timestamp::now().as_nanos() + ahead.as_nanos() as i128
        })
    }
}

/// The extra AT field that carries the tag: `tag=` and 64 hex digits.
pub const TAG: &[u8] = b"tag=";

/// The herd's shared secret, ready to sign and check lines. Never printed: its `Debug`
/// shows nothing of it, and errors about it name the file, not the contents.
pub struct HerdKey {
    key: hmac::Key,
}

impl std::fmt::Debug for HerdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.write_str("HerdKey(..)")
    }
}

impl HerdKey {
    /// A key from the secret's bytes.
    pub fn new(secret: &[u8]) -> HerdKey {
        HerdKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// Reads the secret from `path`: the file's bytes, without a final newline. A missing,
    /// unreadable or empty file is an error naming the file.
    pub fn from_file(path: &Path) -> Result<HerdKey, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("--herd-key {}: cannot read: {e}", path.display()))?;
        let secret = bytes
            .strip_suffix(b"\n")
            .map(|b| b.strip_suffix(b"\r").unwrap_or(b))
            .unwrap_or(&bytes);
        if secret.is_empty() {
            return Err(format!("--herd-key {}: the file is empty", path.display()));
        }
        Ok(HerdKey::new(secret))
    }

    /// Appends ` tag=HEX` for `line` (the six fields) to `out`.
    pub fn put_tag(&self, line: &[u8], out: &mut Vec<u8>) {
        let tag = hmac::sign(&self.key, line);
        out.push(b' ');
        out.extend_from_slice(TAG);
        for byte in tag.as_ref() {
            out.extend_from_slice(&hex_byte(*byte));
        }
    }

    /// True when `tag` (the field's value, hex) is the right one for `line`.
    pub fn verify(&self, line: &[u8], tag: &[u8]) -> bool {
        match parse_hex(tag) {
            Some(bytes) => hmac::verify(&self.key, line, &bytes).is_ok(),
            None => false,
        }
    }
}

/// A byte as two lowercase hex digits.
fn hex_byte(b: u8) -> [u8; 2] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]]
}

/// Hex digits (either case) into bytes; `None` for anything that is not 64 of them.
fn parse_hex(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &[u8] = b"AT Alford +0.1 kiwi +34.068930-118.445127 1621464827.5";

    fn tag_of(key: &HerdKey, line: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        key.put_tag(line, &mut out);
        out[1 + TAG.len()..].to_vec()
    }

    #[test]
    fn a_tag_checks_out_only_for_its_key_and_line() {
        let key = HerdKey::new(b"secret");
        let tag = tag_of(&key, LINE);
        assert_eq!(tag.len(), 64);
        assert!(key.verify(LINE, &tag));
        assert!(key.verify(LINE, &tag.to_ascii_uppercase()));
        assert!(!HerdKey::new(b"other").verify(LINE, &tag), "another key");
        let changed = b"AT Alford +0.1 kiwi +34.068930-118.445127 1621464828.5";
        assert!(!key.verify(changed, &tag), "changed fields");
        assert!(!key.verify(LINE, &tag[..63]), "short tag");
        assert!(!key.verify(LINE, b""), "no tag");
        let mut bad = tag.clone();
        bad[0] = b'g';
        assert!(!key.verify(LINE, &bad), "not hex");
    }

    #[test]
    fn known_answer() {
        // RFC 4231, test case 2: key "Jefe".
        let key = HerdKey::new(b"Jefe");
        let tag = tag_of(&key, b"what do ya want for nothing?");
        assert_eq!(
            tag,
            b"5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
