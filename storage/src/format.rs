//! The on-disk format, version 1: the only module that encodes or decodes bytes.
//!
//! Byte tables live in `docs/FORMAT.md`; this module is their executable form. All integers
//! are fixed-width little-endian, frames are 8-byte aligned, every frame and header carries a
//! CRC32C. Decoders are pure functions over `&[u8]` so fuzzers and Miri can run them; they never
//! panic on any input.
//!
//! What it is not: I/O. Callers hand it slices of mapped segments or files.

use crate::error::FormatError;
use idgen::Ulid;

/// Format version written by this build and the only one it reads.
pub const FORMAT_VERSION: u16 = 1;
/// Magic bytes opening every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SHLGSEG\0";
/// Magic bytes opening a log's metadata file.
pub const META_MAGIC: [u8; 8] = *b"SHLGMETA";
/// Size of the segment header; frames start here.
pub const HEADER_LEN: usize = 64;
/// Size of a frame's fixed header; key, payload and inverse follow.
pub const FRAME_HEADER_LEN: usize = 56;
/// Frames start at multiples of this.
pub const ALIGN: usize = 8;
/// `revision` value meaning "no stream revision".
pub const NO_REVISION: u64 = u64::MAX;
/// Fixed part of the seal footer's payload.
pub const FOOTER_FIXED_LEN: usize = 56;
/// Size of one sparse-index entry in the footer.
pub const INDEX_ENTRY_LEN: usize = 24;
/// Size of the log metadata file.
pub const META_LEN: usize = 48;

const _: () = assert!(HEADER_LEN.is_multiple_of(ALIGN));
const _: () = assert!(FRAME_HEADER_LEN.is_multiple_of(ALIGN));

/// Frame flag bits.
pub mod flags {
    /// Last frame of an append batch: recovery keeps a batch only if this frame is whole.
    pub const BATCH_END: u16 = 1 << 0;
    /// The seal footer frame (not a commit).
    pub const SEAL: u16 = 1 << 1;
    /// A transactional write that did not match: `aux` holds the expected revision.
    pub const CONFLICT: u16 = 1 << 2;
    /// Part of a cross-shard transaction: `aux` holds its id; visible only once the
    /// transaction committed (see `txn`).
    pub const TXN_PART: u16 = 1 << 3;
    /// Reserved (version 1 never writes it).
    pub const TXN_COMMIT: u16 = 1 << 4;
    /// Reverts the commit whose ULID is in the payload (reserved for the service).
    pub const REVERTS: u16 = 1 << 5;
    /// Bits this version knows; any other bit makes a frame unreadable.
    pub const KNOWN: u16 = BATCH_END | SEAL | CONFLICT | TXN_PART | TXN_COMMIT | REVERTS;
}

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

/// A log's persistent settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogMeta {
    /// Number of shards (fixed for the life of the log).
    pub shards: u32,
    /// When the log was created (ms since epoch).
    pub created_ms: u64,
    /// Retention by age, 0 = none.
    pub max_age_ms: u64,
    /// Retention by size, 0 = none.
    pub max_bytes: u64,
}

/// Encodes the metadata file.
pub fn encode_meta(m: &LogMeta) -> [u8; META_LEN] {
    let mut b = [0u8; META_LEN];
    b[0..8].copy_from_slice(&META_MAGIC);
    put_u16(&mut b, 8, FORMAT_VERSION);
    put_u32(&mut b, 12, m.shards);
    put_u64(&mut b, 16, m.created_ms);
    put_u64(&mut b, 24, m.max_age_ms);
    put_u64(&mut b, 32, m.max_bytes);
    let crc = crc32c::crc32c(&b[..44]);
    put_u32(&mut b, 44, crc);
    b
}

/// Decodes and verifies the metadata file.
pub fn decode_meta(b: &[u8]) -> Result<LogMeta, FormatError> {
    if b.len() != META_LEN {
        return Err(FormatError::BadLength { len: b.len() as u32, available: b.len() });
    }
    check_magic_version(b, META_MAGIC)?;
    check_crc(&b[..44], get_u32(b, 44))?;
    if get_u16(b, 10) != 0 || get_u32(b, 40) != 0 {
        let value = (get_u16(b, 10) as u64) << 32 | get_u32(b, 40) as u64;
        return Err(FormatError::BadField { field: "metadata reserved bytes", value });
    }
    let shards = get_u32(b, 12);
    if shards == 0 {
        return Err(FormatError::BadField { field: "shard count", value: 0 });
    }
    Ok(LogMeta {
        shards,
        created_ms: get_u64(b, 16),
        max_age_ms: get_u64(b, 24),
        max_bytes: get_u64(b, 32),
    })
}

/// Magic bytes opening each slot of a log's checkpoint file.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"SHLGCKPT";
/// Fixed bytes of a checkpoint slot before its entries.
pub const CHECKPOINT_FIXED_LEN: usize = 24;
/// Bytes of one checkpoint entry.
pub const CHECKPOINT_ENTRY_LEN: usize = 16;

/// What a checkpoint says about one shard: its segment `seq` had at least `durable_len` bytes
/// on disk, and every segment before it was entirely on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckpointEntry {
    /// The shard's newest segment when the checkpoint was taken (0: none).
    pub seq: u64,
    /// Bytes of that segment known durable (header included).
    pub durable_len: u64,
}

/// A checkpoint: one entry per shard, numbered by `generation`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Increases with every checkpoint written; the newer valid slot wins.
    pub generation: u64,
    /// One entry per shard, in shard order.
    pub shards: Vec<CheckpointEntry>,
}

/// Size of one checkpoint slot for `shards` shards (the file holds two).
pub fn checkpoint_slot_len(shards: usize) -> usize {
    align_up(CHECKPOINT_FIXED_LEN + shards * CHECKPOINT_ENTRY_LEN + 4)
}

/// Encodes one checkpoint slot.
pub fn encode_checkpoint(c: &Checkpoint) -> Vec<u8> {
    let n = c.shards.len();
    let mut b = vec![0u8; checkpoint_slot_len(n)];
    b[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
    put_u16(&mut b, 8, FORMAT_VERSION);
    put_u32(&mut b, 12, n as u32);
    put_u64(&mut b, 16, c.generation);
    for (i, e) in c.shards.iter().enumerate() {
        let at = CHECKPOINT_FIXED_LEN + i * CHECKPOINT_ENTRY_LEN;
        put_u64(&mut b, at, e.seq);
        put_u64(&mut b, at + 8, e.durable_len);
    }
    let end = CHECKPOINT_FIXED_LEN + n * CHECKPOINT_ENTRY_LEN;
    let crc = crc32c::crc32c(&b[..end]);
    put_u32(&mut b, end, crc);
    b
}

/// Decodes and verifies one checkpoint slot for a log of `shards` shards.
pub fn decode_checkpoint(b: &[u8], shards: usize) -> Result<Checkpoint, FormatError> {
    let end = CHECKPOINT_FIXED_LEN + shards * CHECKPOINT_ENTRY_LEN;
    if b.len() < end + 4 {
        return Err(FormatError::BadLength { len: b.len() as u32, available: b.len() });
    }
    check_magic_version(b, CHECKPOINT_MAGIC)?;
    check_crc(&b[..end], get_u32(b, end))?;
    if get_u16(b, 10) != 0 {
        let value = get_u16(b, 10) as u64;
        return Err(FormatError::BadField { field: "checkpoint reserved bytes", value });
    }
    if get_u32(b, 12) as usize != shards {
        let value = get_u32(b, 12) as u64;
        return Err(FormatError::BadField { field: "checkpoint shard count", value });
    }
    let entries = (0..shards)
        .map(|i| {
            let at = CHECKPOINT_FIXED_LEN + i * CHECKPOINT_ENTRY_LEN;
            CheckpointEntry { seq: get_u64(b, at), durable_len: get_u64(b, at + 8) }
        })
        .collect();
    Ok(Checkpoint { generation: get_u64(b, 16), shards: entries })
}

/// Magic bytes opening a log's transaction journal.
pub const TXN_JOURNAL_MAGIC: [u8; 8] = *b"SHLGTXNJ";
/// Size of the journal's header: magic, version, 6 reserved bytes.
pub const TXN_JOURNAL_HEADER_LEN: usize = 16;

/// One part of a committed transaction: (shard, first ULID, commits).
pub type TxnPart = (u32, u128, u32);

/// One record of the transaction journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnRecord {
    /// A transaction of `parts` shard parts is about to be written.
    Begin {
        /// Its id.
        id: u64,
        /// How many parts (shards) it has.
        parts: u16,
    },
    /// Every part was appended: (shard, first ULID, commits) of each.
    Commit {
        /// Its id.
        id: u64,
        /// The parts.
        parts: Vec<TxnPart>,
    },
    /// The transaction is aborted: its parts are never visible.
    Abort {
        /// Its id.
        id: u64,
    },
}

/// The journal file's header.
pub fn encode_txn_journal_header() -> [u8; TXN_JOURNAL_HEADER_LEN] {
    let mut b = [0u8; TXN_JOURNAL_HEADER_LEN];
    b[0..8].copy_from_slice(&TXN_JOURNAL_MAGIC);
    put_u16(&mut b, 8, FORMAT_VERSION);
    b
}

/// Checks the journal file's header.
pub fn decode_txn_journal_header(b: &[u8]) -> Result<(), FormatError> {
    if b.len() < TXN_JOURNAL_HEADER_LEN {
        return Err(FormatError::BadLength { len: b.len() as u32, available: b.len() });
    }
    check_magic_version(b, TXN_JOURNAL_MAGIC)
}

/// Encodes a journal record: `u32` body length, `u32` CRC32C of the body, body = `u8` kind
/// (1 begin, 2 commit, 3 abort), `u64` id, then for begin `u16` parts, for commit `u16` count
/// and per part `u32` shard, `u128` first ULID, `u32` commits.
pub fn encode_txn_record(r: &TxnRecord) -> Vec<u8> {
    let mut body = Vec::with_capacity(32);
    match r {
        TxnRecord::Begin { id, parts } => {
            body.push(1);
            body.extend_from_slice(&id.to_le_bytes());
            body.extend_from_slice(&parts.to_le_bytes());
        }
        TxnRecord::Commit { id, parts } => {
            body.push(2);
            body.extend_from_slice(&id.to_le_bytes());
            body.extend_from_slice(&(parts.len() as u16).to_le_bytes());
            for (shard, first, n) in parts {
                body.extend_from_slice(&shard.to_le_bytes());
                body.extend_from_slice(&first.to_le_bytes());
                body.extend_from_slice(&n.to_le_bytes());
            }
        }
        TxnRecord::Abort { id } => {
            body.push(3);
            body.extend_from_slice(&id.to_le_bytes());
        }
    }
    let mut out = Vec::with_capacity(8 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes the journal record at the start of `b`: the record and its length. `None` at the
/// end or at a torn or damaged record (the journal is cut there).
pub fn decode_txn_record(b: &[u8]) -> Option<(TxnRecord, usize)> {
    let len = u32::from_le_bytes(b.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(b.get(4..8)?.try_into().ok()?);
    let body = b.get(8..8usize.checked_add(len)?)?;
    if crc32c::crc32c(body) != crc {
        return None;
    }
    let id = u64::from_le_bytes(body.get(1..9)?.try_into().ok()?);
    let rec = match body.first()? {
        1 if body.len() == 11 => TxnRecord::Begin { id, parts: get_u16(body, 9) },
        2 => {
            let n = u16::from_le_bytes(body.get(9..11)?.try_into().ok()?) as usize;
            if body.len() != 11 + n * 24 {
                return None;
            }
            let parts = (0..n)
                .map(|i| {
                    let at = 11 + i * 24;
                    let first =
                        u128::from_le_bytes(body[at + 4..at + 20].try_into().expect("16 bytes"));
                    (get_u32(body, at), first, get_u32(body, at + 20))
                })
                .collect();
            TxnRecord::Commit { id, parts }
        }
        3 if body.len() == 9 => TxnRecord::Abort { id },
        _ => return None,
    };
    Some((rec, 8 + len))
}

fn check_magic_version(b: &[u8], magic: [u8; 8]) -> Result<(), FormatError> {
    let got: [u8; 8] = b[0..8].try_into().expect("8 bytes");
    if got != magic {
        return Err(FormatError::BadMagic { got });
    }
    let version = get_u16(b, 8);
    if version != FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion { got: version, supported: FORMAT_VERSION });
    }
    Ok(())
}

fn check_crc(bytes: &[u8], expected: u32) -> Result<(), FormatError> {
    let got = crc32c::crc32c(bytes);
    if got != expected {
        return Err(FormatError::ChecksumMismatch { expected, got });
    }
    Ok(())
}

/// Reads the frame tag of a frame starting at `at` without decoding it (the look-ahead
/// scan uses it as a cheap filter before a full check).
pub fn peek_tag(buf: &[u8], at: usize) -> Option<u32> {
    buf.get(at + 8..at + 12).map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
}

fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests;
