//! A segment file's header and its seal footer (docs/FORMAT.md §§ 3.1, 3.4).
//!
//! What it is not: frames (`frame`), or the log's other files (`files`).

use super::*;

/// Where a segment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentState {
    /// Preallocated, maybe receiving frames; the end is found by scanning.
    Open = 1,
    /// Immutable; `footer_offset` points at the seal frame.
    Sealed = 2,
}

/// A segment file's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Open or sealed.
    pub state: SegmentState,
    /// Random per incarnation of the file; its low 32 bits tag every frame.
    pub nonce: u64,
    /// The shard the segment belongs to.
    pub shard: u32,
    /// Sequence number within the shard; also the file name.
    pub seq: u64,
    /// When the header was written (ms since epoch).
    pub created_ms: u64,
    /// Offset of the seal frame, 0 while open.
    pub footer_offset: u64,
}

impl SegmentHeader {
    /// The tag frames of this incarnation carry.
    pub fn tag(&self) -> u32 {
        self.nonce as u32
    }
}

/// Encodes a segment header.
pub fn encode_header(h: &SegmentHeader) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..8].copy_from_slice(&SEGMENT_MAGIC);
    put_u16(&mut b, 8, FORMAT_VERSION);
    put_u16(&mut b, 10, HEADER_LEN as u16);
    put_u32(&mut b, 12, h.state as u32);
    put_u64(&mut b, 16, h.nonce);
    put_u32(&mut b, 24, h.shard);
    put_u64(&mut b, 32, h.seq);
    put_u64(&mut b, 40, h.created_ms);
    put_u64(&mut b, 48, h.footer_offset);
    let crc = crc32c::crc32c(&b[..60]);
    put_u32(&mut b, 60, crc);
    b
}

/// Decodes and verifies a segment header.
pub fn decode_header(b: &[u8]) -> Result<SegmentHeader, FormatError> {
    if b.len() < HEADER_LEN {
        return Err(FormatError::BadLength { len: b.len() as u32, available: b.len() });
    }
    check_magic_version(b, SEGMENT_MAGIC)?;
    check_crc(&b[..60], get_u32(b, 60))?;
    let state = match get_u32(b, 12) {
        1 => SegmentState::Open,
        2 => SegmentState::Sealed,
        other => {
            return Err(FormatError::BadField { field: "segment state", value: other as u64 });
        }
    };
    if get_u32(b, 28) != 0 || get_u32(b, 56) != 0 {
        let value = (get_u32(b, 28) as u64) << 32 | get_u32(b, 56) as u64;
        return Err(FormatError::BadField { field: "header reserved bytes", value });
    }
    if get_u16(b, 10) as usize != HEADER_LEN {
        return Err(FormatError::BadField { field: "header length", value: get_u16(b, 10) as u64 });
    }
    Ok(SegmentHeader {
        state,
        nonce: get_u64(b, 16),
        shard: get_u32(b, 24),
        seq: get_u64(b, 32),
        created_ms: get_u64(b, 40),
        footer_offset: get_u64(b, 48),
    })
}

/// What the seal footer records about a segment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Footer {
    /// Commits in the segment.
    pub count: u64,
    /// First commit's ULID (0 when empty).
    pub first_id: u128,
    /// Last commit's ULID (0 when empty).
    pub last_id: u128,
    /// Where the data ends and the seal frame starts.
    pub data_end: u64,
    /// Sparse index: (ULID, frame offset), increasing.
    pub index: Vec<(u128, u64)>,
}

/// Payload bytes of the seal frame for `f`.
pub fn encode_footer(f: &Footer) -> Vec<u8> {
    let mut b = vec![0u8; FOOTER_FIXED_LEN + f.index.len() * INDEX_ENTRY_LEN];
    put_u64(&mut b, 0, f.count);
    b[8..24].copy_from_slice(&f.first_id.to_le_bytes());
    b[24..40].copy_from_slice(&f.last_id.to_le_bytes());
    put_u64(&mut b, 40, f.data_end);
    put_u32(&mut b, 48, f.index.len() as u32);
    for (i, (id, off)) in f.index.iter().enumerate() {
        let at = FOOTER_FIXED_LEN + i * INDEX_ENTRY_LEN;
        b[at..at + 16].copy_from_slice(&id.to_le_bytes());
        put_u64(&mut b, at + 16, *off);
    }
    b
}

/// Decodes a seal frame's payload.
pub fn decode_footer(b: &[u8]) -> Result<Footer, FormatError> {
    if b.len() < FOOTER_FIXED_LEN {
        return Err(FormatError::BadField { field: "footer length", value: b.len() as u64 });
    }
    let n = get_u32(b, 48) as usize;
    if get_u32(b, 52) != 0 {
        return Err(FormatError::BadField {
            field: "footer reserved bytes",
            value: get_u32(b, 52) as u64,
        });
    }
    if b.len() != FOOTER_FIXED_LEN + n * INDEX_ENTRY_LEN {
        return Err(FormatError::BadField { field: "footer index length", value: n as u64 });
    }
    let index = (0..n)
        .map(|i| {
            let at = FOOTER_FIXED_LEN + i * INDEX_ENTRY_LEN;
            (u128::from_le_bytes(b[at..at + 16].try_into().expect("16 bytes")), get_u64(b, at + 16))
        })
        .collect();
    Ok(Footer {
        count: get_u64(b, 0),
        first_id: u128::from_le_bytes(b[8..24].try_into().expect("16 bytes")),
        last_id: u128::from_le_bytes(b[24..40].try_into().expect("16 bytes")),
        data_end: get_u64(b, 40),
        index,
    })
}
