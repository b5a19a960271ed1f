//! shardlog's storage: logs of shards of memory-mapped, append-only segment files.
//!
//! Entry point: [`Log::open`] recovers a log directory and returns one [`ShardWriter`] per
//! shard. A writer appends batches ([`ShardWriter::append`]), each visible to readers at once
//! and whole, and makes them durable with [`ShardWriter::sync`] (group commit) or leaves that to
//! the background flush. Readers take a [`Cursor`] from a [`Shard`] and read without locks.
//!
//! What it is not: async (no tokio, no axum — the service reaches shards through its own
//! writer threads) or a network protocol. [`Merger`] merges shards by ULID under a watermark. Only [`format`] encodes or
//! decodes bytes; only `mmap` contains `unsafe`.

mod checkpoint;
mod create;
mod dirs;
pub mod error;
pub mod fio;
pub mod format;
mod index;
mod inner;
mod log;
mod logdir;
mod maintenance;
pub mod merge;
pub mod metrics;
mod mmap;
mod options;
pub mod publish;
pub mod recovery;
mod retention;
pub mod revisions;
mod segment;
mod shard;
pub mod txn;
mod watermark;
mod writer;

pub use dirs::{create_dir_durable, fsync_dir};
pub use error::{FormatError, Result, StorageError};
pub use format::{FrameRef, NewRecord};
pub use log::{Log, LogStats, RecoveryReport};
pub use merge::{Merger, Picks};
pub use options::{LogOptions, Retention, SEGMENT_BYTES_MIN, SHARDS_MAX};
pub use revisions::{Revisions, key_hash};
pub use shard::{Cursor, Peek, Placed, Record, Shard, ShardStats, Start};
pub use txn::{External, NoExternal, Txns, Visibility};
pub use writer::ShardWriter;
