//! Storage errors: one `thiserror` enum whose variants carry the data an operator needs
//! (which file, which offset, what was expected). Corruption is data, never a string.

use std::path::PathBuf;

/// Why a frame, header or footer could not be decoded. Produced only by `format`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// A zero length word: the unwritten area after the last frame.
    #[error("no frame here (zero length)")]
    Empty,
    /// The length word is below the frame header size or runs past the buffer.
    #[error("frame length {len} is impossible here ({available} bytes available)")]
    BadLength {
        /// The length read.
        len: u32,
        /// Bytes left in the buffer from the frame start.
        available: usize,
    },
    /// The frame belongs to another incarnation of this file (a recycled segment).
    #[error("frame tag {got:#010x} does not match the segment's {expected:#010x}")]
    ForeignTag {
        /// The segment's tag.
        expected: u32,
        /// The tag in the frame.
        got: u32,
    },
    /// The stored CRC32C does not match the bytes.
    #[error("checksum mismatch: stored {expected:#010x}, computed {got:#010x}")]
    ChecksumMismatch {
        /// The stored checksum.
        expected: u32,
        /// The checksum of the bytes read.
        got: u32,
    },
    /// Lengths inside the frame do not add up.
    #[error("inner lengths (key {key_len}, inverse {inverse_len}) exceed the frame ({frame_len})")]
    BadInnerLength {
        /// Key length.
        key_len: u16,
        /// Inverse payload length.
        inverse_len: u32,
        /// Frame length.
        frame_len: u32,
    },
    /// Reserved bits or fields are set: written by a newer format version.
    #[error("reserved bits set ({flags:#06x})")]
    Reserved {
        /// The flags word.
        flags: u16,
    },
    /// Wrong magic bytes.
    #[error("bad magic {got:?}")]
    BadMagic {
        /// The bytes found.
        got: [u8; 8],
    },
    /// A format version this build cannot read.
    #[error("unsupported format version {got} (this build reads {supported})")]
    UnsupportedVersion {
        /// The version found.
        got: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// A frame's ULID is not above the one before it.
    #[error("ULID {id:#034x} does not increase over the previous frame's {previous:#034x}")]
    IdNotIncreasing {
        /// The frame's ULID.
        id: u128,
        /// The previous frame's ULID.
        previous: u128,
    },
    /// A header or footer field has an impossible value.
    #[error("bad {field}: {value}")]
    BadField {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
}

/// Everything the storage can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// An operating-system error.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The disk (or a quota) has no room: a segment could not be preallocated (`bytes` its
    /// size), or a write or sync of `path` failed with `ENOSPC` (`bytes` 0).
    #[error("disk full: no room for {bytes} bytes in {path}")]
    DiskFull {
        /// The file.
        path: PathBuf,
        /// Bytes asked for, when known.
        bytes: u64,
    },
    /// Stored bytes failed verification where they must be whole.
    #[error("corrupt segment {segment} at offset {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the bad frame or field.
        offset: u64,
        /// What was wrong.
        reason: FormatError,
    },
    /// Another process holds the directory's lock file.
    #[error("{path} is locked by another process")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The log exists with another shard count.
    #[error("log has {stored} shards, {requested} requested")]
    ShardCountMismatch {
        /// The stored count.
        stored: u32,
        /// The requested count.
        requested: u32,
    },
    /// A batch does not fit into one segment.
    #[error("batch of {bytes} bytes exceeds the segment's usable {max_bytes} bytes")]
    BatchTooLarge {
        /// Encoded size of the batch.
        bytes: u64,
        /// What a segment can take.
        max_bytes: u64,
    },
    /// A key or inverse payload is longer than its field can express.
    #[error("{field} of {len} bytes exceeds {max_bytes} bytes")]
    FieldTooLarge {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: u64,
        /// The maximum.
        max_bytes: u64,
    },
    /// A record carries flags the caller may not set (unknown, or set only by the storage).
    #[error("flags {flags:#06x} are not allowed on a record")]
    InvalidFlags {
        /// The flags given.
        flags: u16,
    },
    /// An empty batch was appended.
    #[error("empty batch")]
    EmptyBatch,
    /// An earlier I/O error poisoned the shard; it refuses writes until reopened.
    #[error("shard {shard} is poisoned by an earlier I/O error; reopen the log")]
    Poisoned {
        /// The shard.
        shard: u32,
    },
    /// The ULID space is exhausted (year 10889).
    #[error("ULID space exhausted")]
    IdsExhausted,
    /// The log was opened read-only (`Log::open_read_only`) and this would write.
    #[error("the log is open read-only: cannot {op}")]
    ReadOnly {
        /// What would have written.
        op: &'static str,
    },
    /// The directory holds no log (no `log.meta`).
    #[error("{dir} holds no log")]
    NotALog {
        /// The directory.
        dir: PathBuf,
    },
    /// Invalid options.
    #[error("invalid option {name}: {reason}")]
    InvalidOption {
        /// The option.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

impl StorageError {
    /// Wraps an I/O error with what was done and where; ENOSPC becomes [`StorageError::DiskFull`]
    /// with `bytes` when known.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        if crate::fio::is_disk_full(&source) {
            return StorageError::DiskFull { path: path.into(), bytes: 0 };
        }
        StorageError::Io { op, path: path.into(), source }
    }
}

/// Result alias for the storage crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
