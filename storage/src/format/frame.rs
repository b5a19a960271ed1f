//! Frames: a commit as stored, its encoding, and the checks a reader runs before it trusts one
//! (docs/FORMAT.md §§ 3.2, 3.3).
//!
//! What it is not: the segment around frames (`segment`).

use super::*;

/// A commit as a writer hands it to the storage.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewRecord<'a> {
    /// Optional key (empty: none); at most `u16::MAX` bytes.
    pub key: &'a [u8],
    /// The payload, stored byte for byte.
    pub payload: &'a [u8],
    /// Optional inverse payload (empty: none).
    pub inverse: &'a [u8],
    /// Stream revision, or [`NO_REVISION`].
    pub revision: u64,
    /// Meaning given by the flags (expected revision, transaction id).
    pub aux: u64,
    /// Flags other than `BATCH_END` and `SEAL`, which the storage sets itself.
    pub flags: u16,
}

impl<'a> NewRecord<'a> {
    /// A plain record: payload only.
    pub fn payload(payload: &'a [u8]) -> Self {
        NewRecord { payload, revision: NO_REVISION, ..Default::default() }
    }
    /// A keyed record.
    pub fn keyed(key: &'a [u8], payload: &'a [u8]) -> Self {
        NewRecord { key, payload, revision: NO_REVISION, ..Default::default() }
    }
}

/// A decoded frame borrowing the segment's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef<'a> {
    /// The commit's ULID.
    pub id: Ulid,
    /// Flag bits.
    pub flags: u16,
    /// Stream revision or [`NO_REVISION`].
    pub revision: u64,
    /// Flag-dependent value.
    pub aux: u64,
    /// Key (empty: none).
    pub key: &'a [u8],
    /// Payload.
    pub payload: &'a [u8],
    /// Inverse payload (empty: none).
    pub inverse: &'a [u8],
}

/// Bytes a record occupies on disk, padding included.
pub fn frame_len_padded(key_len: usize, payload_len: usize, inverse_len: usize) -> usize {
    align_up(FRAME_HEADER_LEN + key_len + payload_len + inverse_len)
}

/// Rounds up to [`ALIGN`].
pub const fn align_up(n: usize) -> usize {
    (n + ALIGN - 1) & !(ALIGN - 1)
}

/// Encodes one frame into `out`, which must be at least `frame_len_padded(..)` long; returns
/// the padded length. Padding bytes are zeroed.
pub fn encode_frame(out: &mut [u8], tag: u32, id: Ulid, flags: u16, rec: &NewRecord<'_>) -> usize {
    let (k, p, v) = (rec.key.len(), rec.payload.len(), rec.inverse.len());
    let len = FRAME_HEADER_LEN + k + p + v;
    let padded = align_up(len);
    let out = &mut out[..padded];
    put_u32(out, 0, len as u32);
    put_u32(out, 8, tag);
    put_u16(out, 12, flags);
    put_u16(out, 14, k as u16);
    out[16..32].copy_from_slice(&id.0.to_le_bytes());
    put_u64(out, 32, rec.revision);
    put_u64(out, 40, rec.aux);
    put_u32(out, 48, v as u32);
    put_u32(out, 52, 0);
    let mut at = FRAME_HEADER_LEN;
    for part in [rec.key, rec.payload, rec.inverse] {
        out[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    out[len..].fill(0);
    let crc = crc32c::crc32c(&out[8..len]);
    put_u32(out, 4, crc);
    padded
}

/// Decodes the frame at the start of `buf`; returns it and its padded length. `tag` is the
/// segment's frame tag.
pub fn decode_frame(buf: &[u8], tag: u32) -> Result<(FrameRef<'_>, usize), FormatError> {
    let layout = check_frame(buf, tag)?;
    Ok((layout.view(buf), layout.padded))
}

/// A verified frame's fields and where its parts lie, without borrowing the bytes: lets a
/// reader verify once, move on, and borrow the parts later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLayout {
    /// The commit's ULID.
    pub id: Ulid,
    /// Flag bits.
    pub flags: u16,
    /// Stream revision or [`NO_REVISION`].
    pub revision: u64,
    /// Flag-dependent value.
    pub aux: u64,
    /// Bytes the frame occupies, padding included.
    pub padded: usize,
    key_end: usize,
    payload_end: usize,
    len: usize,
}

impl FrameLayout {
    /// Bytes of the key and payload.
    pub fn data_len(&self) -> usize {
        self.payload_end - FRAME_HEADER_LEN
    }

    /// The frame's parts in `buf`, which must start with the frame this layout was checked on.
    pub fn view<'a>(&self, buf: &'a [u8]) -> FrameRef<'a> {
        FrameRef {
            id: self.id,
            flags: self.flags,
            revision: self.revision,
            aux: self.aux,
            key: &buf[FRAME_HEADER_LEN..self.key_end],
            payload: &buf[self.key_end..self.payload_end],
            inverse: &buf[self.payload_end..self.len],
        }
    }
}

/// Verifies the frame at the start of `buf` (length, tag, checksum, reserved bits, inner
/// lengths) and returns its layout.
pub fn check_frame(buf: &[u8], tag: u32) -> Result<FrameLayout, FormatError> {
    if buf.len() < FRAME_HEADER_LEN {
        let len = if buf.len() >= 4 { get_u32(buf, 0) } else { 0 };
        if len == 0 {
            return Err(FormatError::Empty);
        }
        return Err(FormatError::BadLength { len, available: buf.len() });
    }
    let len = get_u32(buf, 0);
    if len == 0 {
        return Err(FormatError::Empty);
    }
    if (len as usize) < FRAME_HEADER_LEN || len as usize > buf.len() {
        return Err(FormatError::BadLength { len, available: buf.len() });
    }
    let got_tag = get_u32(buf, 8);
    if got_tag != tag {
        return Err(FormatError::ForeignTag { expected: tag, got: got_tag });
    }
    let frame = &buf[..len as usize];
    check_crc(&frame[8..], get_u32(frame, 4))?;
    let flags = get_u16(frame, 12);
    if flags & !flags::KNOWN != 0 || get_u32(frame, 52) != 0 {
        return Err(FormatError::Reserved { flags });
    }
    let key_len = get_u16(frame, 14);
    let inverse_len = get_u32(frame, 48);
    let body = len as usize - FRAME_HEADER_LEN;
    if key_len as usize + inverse_len as usize > body {
        return Err(FormatError::BadInnerLength { key_len, inverse_len, frame_len: len });
    }
    Ok(FrameLayout {
        id: Ulid(u128::from_le_bytes(frame[16..32].try_into().expect("16 bytes"))),
        flags,
        revision: get_u64(frame, 32),
        aux: get_u64(frame, 40),
        padded: align_up(len as usize).min(buf.len()),
        key_end: FRAME_HEADER_LEN + key_len as usize,
        payload_end: len as usize - inverse_len as usize,
        len: len as usize,
    })
}
