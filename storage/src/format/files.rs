//! The log's files beside its segments: the meta file, the checkpoint and the transaction
//! journal (docs/FORMAT.md §§ 3.5–3.7).
//!
//! What it is not: segments (`segment`, `frame`).

use super::*;

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

/// One record of the transaction journal. This build writes `Aborted` and `Cut`; it still
/// reads `Begin`, `Commit` and `Abort`, which earlier builds wrote, and decides what they left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnRecord {
    /// (Earlier builds.) A transaction of `parts` shard parts is about to be written.
    Begin {
        /// Its id.
        id: u64,
        /// How many parts (shards) it has.
        parts: u16,
    },
    /// (Earlier builds.) Every part was appended: (shard, first ULID, commits) of each.
    Commit {
        /// Its id.
        id: u64,
        /// The parts.
        parts: Vec<TxnPart>,
    },
    /// (Earlier builds.) The transaction is aborted: its parts are never visible.
    Abort {
        /// Its id.
        id: u64,
    },
    /// The transaction is aborted: its parts are never visible. None of them has a ULID above
    /// `last` (`u128::MAX` when unknown), so the record can go once retention removed every
    /// shard's commits up to `last`.
    Aborted {
        /// Its id.
        id: u64,
        /// The highest ULID any of its parts may hold.
        last: u128,
    },
    /// Per shard, the (segment sequence, offset) from which recovery must look for parts of
    /// undecided transactions: every transaction part before it is decided for good
    /// (committed, with all its parts on disk, or aborted by an `Aborted` record before it).
    /// The transactions in `committed` may have parts on both sides of it; they are committed
    /// and on disk, so recovery takes them as they are.
    Cut {
        /// One (segment sequence, byte offset) per shard, in shard order.
        positions: Vec<(u64, u64)>,
        /// Settled, committed transactions that may straddle the positions.
        committed: Vec<u64>,
    },
}

/// Version of the journal this build writes: 2 adds the `Aborted` and `Cut` records, and
/// ids that name an outside participant. An earlier build, which reads only version 1, must
/// refuse the file rather than skip the records it does not know (it would show aborted
/// parts). This build reads versions 1 and 2.
pub const TXN_JOURNAL_VERSION: u16 = 2;

/// The journal file's header.
pub fn encode_txn_journal_header() -> [u8; TXN_JOURNAL_HEADER_LEN] {
    let mut b = [0u8; TXN_JOURNAL_HEADER_LEN];
    b[0..8].copy_from_slice(&TXN_JOURNAL_MAGIC);
    put_u16(&mut b, 8, TXN_JOURNAL_VERSION);
    b
}

/// Checks the journal file's header (versions 1 and 2).
pub fn decode_txn_journal_header(b: &[u8]) -> Result<(), FormatError> {
    if b.len() < TXN_JOURNAL_HEADER_LEN {
        return Err(FormatError::BadLength { len: b.len() as u32, available: b.len() });
    }
    match check_magic_version(b, TXN_JOURNAL_MAGIC) {
        Err(FormatError::UnsupportedVersion { got: 2, .. }) => Ok(()),
        Err(FormatError::UnsupportedVersion { got, .. }) => {
            Err(FormatError::UnsupportedVersion { got, supported: TXN_JOURNAL_VERSION })
        }
        other => other,
    }
}

/// Encodes a journal record: `u32` body length, `u32` CRC32C of the body, body = `u8` kind
/// (1 begin, 2 commit, 3 abort, 4 aborted, 5 cut), then for kinds 1–4 `u64` id and for begin
/// `u16` parts, for commit `u16` count and per part `u32` shard, `u128` first ULID, `u32`
/// commits, for aborted `u128` last ULID; for cut `u32` count and per shard `u64` segment
/// sequence, `u64` offset, then `u32` count and per committed transaction its `u64` id.
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
        TxnRecord::Aborted { id, last } => {
            body.push(4);
            body.extend_from_slice(&id.to_le_bytes());
            body.extend_from_slice(&last.to_le_bytes());
        }
        TxnRecord::Cut { positions, committed } => {
            body.push(5);
            body.extend_from_slice(&(positions.len() as u32).to_le_bytes());
            for (seq, off) in positions {
                body.extend_from_slice(&seq.to_le_bytes());
                body.extend_from_slice(&off.to_le_bytes());
            }
            body.extend_from_slice(&(committed.len() as u32).to_le_bytes());
            for id in committed {
                body.extend_from_slice(&id.to_le_bytes());
            }
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
    if body.first() == Some(&5) {
        let n = u32::from_le_bytes(body.get(1..5)?.try_into().ok()?) as usize;
        let at = 5usize.checked_add(n.checked_mul(16)?)?;
        let m = u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?) as usize;
        if body.len() != (at + 4).checked_add(m.checked_mul(8)?)? {
            return None;
        }
        let positions =
            (0..n).map(|i| (get_u64(body, 5 + i * 16), get_u64(body, 13 + i * 16))).collect();
        let committed = (0..m).map(|i| get_u64(body, at + 4 + i * 8)).collect();
        return Some((TxnRecord::Cut { positions, committed }, 8 + len));
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
        4 if body.len() == 25 => TxnRecord::Aborted {
            id,
            last: u128::from_le_bytes(body[9..25].try_into().expect("16 bytes")),
        },
        _ => return None,
    };
    Some((rec, 8 + len))
}
