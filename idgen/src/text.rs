//! ULID text: Crockford base32 encoding into a stack buffer (no allocation) and strict parsing.
//!
//! Parsing accepts exactly 26 characters, case-insensitive, and rejects values above the
//! 128-bit range (first character above '7'). It is not lenient about I/L/O aliases.

use ulid::Ulid;

/// Length of a ULID's text form.
pub const ULID_LEN: usize = 26;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Encodes `id` as 26 ASCII bytes (Crockford base32, upper case).
#[inline]
pub fn encode(id: Ulid) -> [u8; ULID_LEN] {
    let mut out = [0u8; ULID_LEN];
    let mut v = id.0;
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(v & 0x1f) as usize];
        v >>= 5;
    }
    out
}

/// Parses a 26-character ULID; `None` if it is not one.
pub fn parse(text: &str) -> Option<Ulid> {
    let bytes = text.as_bytes();
    if bytes.len() != ULID_LEN || bytes[0] > b'7' {
        return None;
    }
    let mut v: u128 = 0;
    for &b in bytes {
        let d = match b.to_ascii_uppercase() {
            c @ b'0'..=b'9' => c - b'0',
            c @ b'A'..=b'H' => c - b'A' + 10,
            b'J' => 18,
            b'K' => 19,
            b'M' => 20,
            b'N' => 21,
            c @ b'P'..=b'T' => c - b'P' + 22,
            c @ b'V'..=b'Z' => c - b'V' + 27,
            _ => return None,
        };
        v = (v << 5) | d as u128;
    }
    Some(Ulid(v))
}
