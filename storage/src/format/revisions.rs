//! The revision snapshot of a shard (`revisions.snap`, docs/FORMAT.md §12): each stream's next
//! revision as of a ULID, and the streams a transaction still undecided then had moved on
//! (with where they were before), so that recovery can take them back if it aborted.
//!
//! What it is not: the index itself (`crate::revisions`) or its file handling.

use super::*;

/// Magic bytes opening a revision snapshot.
pub const REVISIONS_MAGIC: [u8; 8] = *b"SHLGREVS";
/// Version of the revision snapshot layout.
pub const REVISIONS_VERSION: u16 = 1;
/// Fixed bytes before the entries.
pub const REVISIONS_HEADER_LEN: usize = 40;
/// Bytes of one stream entry (key hash, next revision).
pub const REVISION_ENTRY_LEN: usize = 24;
/// Bytes of one undecided transaction's header (id, stream count, reserved).
pub const REVISION_TXN_LEN: usize = 16;

/// What a snapshot holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevisionSnapshot {
    /// Every frame of the shard with a ULID at or below this is counted.
    pub covers_to: Ulid,
    /// (key hash, next revision), next ≥ 1.
    pub streams: Vec<(u128, u64)>,
    /// Transactions undecided when it was taken: (id, [(key hash, next revision before it)]).
    pub undecided: Vec<(u64, Vec<(u128, u64)>)>,
}

/// Encodes a snapshot, CRC last.
pub fn encode_revisions(s: &RevisionSnapshot) -> Vec<u8> {
    let entries = s.streams.len() + s.undecided.iter().map(|(_, k)| k.len()).sum::<usize>();
    let len = REVISIONS_HEADER_LEN
        + entries * REVISION_ENTRY_LEN
        + s.undecided.len() * REVISION_TXN_LEN
        + 4;
    let mut b = vec![0u8; len];
    b[0..8].copy_from_slice(&REVISIONS_MAGIC);
    put_u16(&mut b, 8, REVISIONS_VERSION);
    put_u128(&mut b, 16, s.covers_to.0);
    put_u64(&mut b, 32, s.streams.len() as u64);
    put_u32(&mut b, 12, s.undecided.len() as u32);
    let mut at = REVISIONS_HEADER_LEN;
    let entry = |b: &mut [u8], at: &mut usize, (h, n): (u128, u64)| {
        put_u128(b, *at, h);
        put_u64(b, *at + 16, n);
        *at += REVISION_ENTRY_LEN;
    };
    for &e in &s.streams {
        entry(&mut b, &mut at, e);
    }
    for (id, keys) in &s.undecided {
        put_u64(&mut b, at, *id);
        put_u32(&mut b, at + 8, keys.len() as u32);
        at += REVISION_TXN_LEN;
        for &e in keys {
            entry(&mut b, &mut at, e);
        }
    }
    let crc = crc32c::crc32c(&b[..at]);
    put_u32(&mut b, at, crc);
    b
}

/// Decodes and verifies a snapshot; any damage is an error (the caller then counts from the
/// segments instead).
pub fn decode_revisions(b: &[u8]) -> Result<RevisionSnapshot, FormatError> {
    let short = || FormatError::BadLength { len: b.len() as u32, available: b.len() };
    if b.len() < REVISIONS_HEADER_LEN + 4 {
        return Err(short());
    }
    let got: [u8; 8] = b[0..8].try_into().expect("8 bytes");
    if got != REVISIONS_MAGIC {
        return Err(FormatError::BadMagic { got });
    }
    let version = get_u16(b, 8);
    if version != REVISIONS_VERSION {
        return Err(FormatError::UnsupportedVersion { got: version, supported: REVISIONS_VERSION });
    }
    let body = b.len() - 4;
    check_crc(&b[..body], get_u32(b, body))?;
    if get_u16(b, 10) != 0 {
        return Err(FormatError::BadField {
            field: "revision snapshot reserved bytes",
            value: get_u16(b, 10).into(),
        });
    }
    let covers_to = Ulid(get_u128(b, 16));
    let count = get_u64(b, 32);
    let txns = get_u32(b, 12);
    let mut at = REVISIONS_HEADER_LEN;
    let entries = |n: u64, at: &mut usize| -> Result<Vec<(u128, u64)>, FormatError> {
        let need = (n as usize).checked_mul(REVISION_ENTRY_LEN).ok_or_else(short)?;
        if body - *at < need {
            return Err(short());
        }
        let out = (0..n as usize)
            .map(|i| {
                let e = *at + i * REVISION_ENTRY_LEN;
                (get_u128(b, e), get_u64(b, e + 16))
            })
            .collect();
        *at += need;
        Ok(out)
    };
    let streams = entries(count, &mut at)?;
    let mut undecided = Vec::new();
    for _ in 0..txns {
        if body - at < REVISION_TXN_LEN {
            return Err(short());
        }
        let (id, n) = (get_u64(b, at), get_u32(b, at + 8));
        at += REVISION_TXN_LEN;
        undecided.push((id, entries(n.into(), &mut at)?));
    }
    if at != body {
        return Err(short());
    }
    Ok(RevisionSnapshot { covers_to, streams, undecided })
}
