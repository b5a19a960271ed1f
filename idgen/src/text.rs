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
    // 26 digits of 5 bits: the low 12 from the low 60 bits, the next 12 from the 60 above,
    // the first 2 from the top 8; each digit a shift of a u64 (no carried u128 shifts).
    let v = id.0;
    let low = (v as u64) & ((1 << 60) - 1);
    let mid = ((v >> 60) as u64) & ((1 << 60) - 1);
    let top = (v >> 120) as u64;
    let mut out = [0u8; ULID_LEN];
    for k in 0..12 {
        out[ULID_LEN - 1 - k] = ALPHABET[((low >> (5 * k)) & 0x1f) as usize];
        out[ULID_LEN - 13 - k] = ALPHABET[((mid >> (5 * k)) & 0x1f) as usize];
    }
    out[1] = ALPHABET[(top & 0x1f) as usize];
    out[0] = ALPHABET[(top >> 5) as usize];
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
