//! The service's configuration: one typed struct, read from an optional TOML file
//! (`--config`, unknown keys rejected), overridden by flags, validated once at startup and
//! printed.
//!
//! Every limit has a name with its unit last. What it is not: live-reloadable.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Durability a write reaches before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// On disk (fdatasync, group commit).
    Sync,
    /// In the mapped segment (survives a crash of the process); flushed every
    /// `flush_interval_ms`.
    Async,
}

impl Durability {
    /// The contract's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Async => "async",
        }
    }
}

/// Everything the server can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory of all logs.
    pub data_dir: PathBuf,
    /// Default durability of writes.
    pub durability: Durability,
    /// Create logs on first write.
    pub auto_create: bool,
    /// Bearer-token file (not supported yet: refused at startup).
    pub auth: Option<PathBuf>,
    /// Allow listening on a non-loopback address without `auth`.
    pub insecure: bool,
    /// Origins whose web pages may call the API (CORS); `*` for any. Empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Names a `Host` header may give besides loopback names and addresses and the listen
    /// address; any other host is answered `421`.
    pub allowed_hosts: Vec<String>,
    /// Cold archive (not supported yet: refused at startup).
    pub archive: Option<String>,
    /// Writer threads (0: one per core).
    pub writers: usize,
    /// Shards of a log created without a shard count (0: two per core).
    pub default_shards: u32,
    /// Jobs a writer's queue holds before requests are answered `503`.
    pub writer_queue_depth: usize,
    /// Jobs a writer takes from its queue at once (one group commit covers them).
    pub writer_burst_max: usize,
    /// Request body, after decompression.
    pub body_bytes_max: usize,
    /// Bytes of ingest bodies held at once across all requests, charged as they arrive (the
    /// received bytes, the decompressed bytes and the parsed commits' index); a request that
    /// would go beyond it is answered `503`, so memory stays bounded under any load and an
    /// idle upload holds nothing.
    pub inflight_body_bytes_max: usize,
    /// A request refused (`503`, `4xx`) before its body was read has up to this many bytes of
    /// its body read and dropped first, so that a client that sends its whole body before
    /// reading the answer gets the answer instead of a broken pipe. Larger bodies are not
    /// read: the connection is closed after the answer.
    pub reject_drain_bytes_max: usize,
    /// A connection that has begun a request head must complete it within this time.
    pub header_read_timeout_ms: u64,
    /// A keep-alive connection with no request for this long is closed.
    pub keepalive_idle_ms: u64,
    /// A request body that sends nothing for this long while it is being read fails with
    /// `408 body_read_timeout` (a write's `timeout` also bounds the whole body).
    pub body_read_timeout_ms: u64,
    /// Connections held at once; beyond it a new connection is answered `503` and closed.
    pub connections_max: usize,
    /// One commit's payload.
    pub commit_bytes_max: usize,
    /// Commits in one request.
    pub batch_commits_max: usize,
    /// Key length.
    pub key_bytes_max: usize,
    /// Segment file size.
    pub segment_bytes: usize,
    /// Background flush period for `async` writes.
    pub flush_interval_ms: u64,
    /// Deadline of a write without `?timeout=`.
    pub write_timeout_ms: u64,
    /// Deadline of a strong read without `?timeout=`.
    pub read_timeout_ms: u64,
    /// `Retry-After` sent with `503` when writers are saturated.
    pub retry_after_s: u64,
    /// How often idle writers advance their shards' high-water marks (the merged timeline's
    /// watermark lags the clock by about this much when nothing is written).
    pub idle_advance_ms: u64,
    /// How long the first response to an `Idempotency-Key` is kept.
    pub idempotency_ttl_ms: u64,
    /// Most idempotency keys kept (oldest evicted early beyond it).
    pub idempotency_keys_max: usize,
    /// Most bytes of kept responses (oldest evicted early beyond it).
    pub idempotency_bytes_max: usize,
    /// Logs with their own `log` label in `/metrics`; later ones share `log="other"`.
    pub metrics_logs_max: usize,
    /// Bytes of one timeline or shard page (payloads and keys): a page ends early, with a
    /// `next` cursor, once it holds this much (it always holds at least one commit), so a
    /// read's memory is bounded whatever the commits' sizes.
    pub read_page_bytes_max: usize,
    /// A streamed answer (a tail, a timeline page) whose client takes nothing for this long is
    /// cut off, so a stalled client holds neither memory nor retired segments for long.
    pub send_stall_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7070".parse().expect("literal address"),
            data_dir: PathBuf::from("./data"),
            durability: Durability::Sync,
            auto_create: true,
            auth: None,
            insecure: false,
            cors_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            archive: None,
            writers: 0,
            default_shards: 0,
            writer_queue_depth: 1024,
            writer_burst_max: 256,
            body_bytes_max: 64 << 20,
            inflight_body_bytes_max: 1 << 30,
            reject_drain_bytes_max: 16 << 20,
            header_read_timeout_ms: 10_000,
            keepalive_idle_ms: 60_000,
            body_read_timeout_ms: 10_000,
            connections_max: 10_000,
            commit_bytes_max: 1 << 20,
            batch_commits_max: 100_000,
            key_bytes_max: 1024,
            segment_bytes: 64 << 20,
            flush_interval_ms: 100,
            write_timeout_ms: 10_000,
            read_timeout_ms: 5_000,
            retry_after_s: 1,
            idle_advance_ms: 50,
            idempotency_ttl_ms: 600_000,
            idempotency_keys_max: 100_000,
            idempotency_bytes_max: 256 << 20,
            metrics_logs_max: 100,
            read_page_bytes_max: 16 << 20,
            send_stall_ms: 30_000,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`Config`] (unknown keys included).
    #[error("invalid config {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range or a combination is refused.
    #[error("invalid setting {name}: {reason}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

impl Config {
    /// Reads a TOML file.
    pub fn from_file(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.to_owned(), source: Box::new(e) })
    }

    /// Fills the automatic values (0 = per core) and checks every setting.
    pub fn resolve(mut self) -> Result<Config, ConfigError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if self.writers == 0 {
            self.writers = cores;
        }
        if self.default_shards == 0 {
            self.default_shards = (cores * 2) as u32;
        }
        let bad = |name, reason: String| Err(ConfigError::Invalid { name, reason });
        if self.auth.is_some() {
            return bad(
                "auth",
                "bearer-token authentication is not available in this build".into(),
            );
        }
        if self.archive.is_some() {
            return bad("archive", "the cold archive is not available in this build".into());
        }
        if !self.listen.ip().is_loopback() && !self.insecure {
            return bad(
                "listen",
                format!("{} is not a loopback address: pass --auth, or --insecure", self.listen),
            );
        }
        for o in &self.cors_origins {
            let scheme = o.split_once("://");
            let plain = scheme.is_some_and(|(s, rest)| {
                matches!(s, "http" | "https") && !rest.is_empty() && !rest.contains(['/', ' '])
            });
            if o != "*" && !plain {
                return bad(
                    "cors_origins",
                    format!("{o:?} is not * nor an origin like https://app.example:8443"),
                );
            }
        }
        for h in &self.allowed_hosts {
            if h.is_empty() || h.contains(['/', ' ', ':']) {
                return bad("allowed_hosts", format!("{h:?} is not a host name (no port)"));
            }
        }
        if self.writers > 256 {
            return bad("writers", format!("{} is above 256", self.writers));
        }
        if self.default_shards == 0 || self.default_shards > storage::SHARDS_MAX {
            return bad("default_shards", format!("must be in 1..={}", storage::SHARDS_MAX));
        }
        if self.writer_queue_depth == 0 || self.writer_burst_max == 0 {
            return bad(
                "writer_queue_depth",
                "queues and bursts must hold at least one job".into(),
            );
        }
        if self.segment_bytes < storage::SEGMENT_BYTES_MIN || !self.segment_bytes.is_multiple_of(8)
        {
            return bad(
                "segment_bytes",
                format!("below {} or not a multiple of 8", storage::SEGMENT_BYTES_MIN),
            );
        }
        if self.commit_bytes_max > self.segment_bytes / 2 {
            return bad("commit_bytes_max", "must fit twice into a segment".into());
        }
        if self.inflight_body_bytes_max < self.body_bytes_max {
            return bad(
                "inflight_body_bytes_max",
                "must hold at least one body of body_bytes_max".into(),
            );
        }
        if self.key_bytes_max > u16::MAX as usize {
            return bad("key_bytes_max", format!("above {}", u16::MAX));
        }
        if self.read_page_bytes_max == 0 {
            return bad("read_page_bytes_max", "must be at least 1".into());
        }
        for (name, ms) in [
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("keepalive_idle_ms", self.keepalive_idle_ms),
            ("body_read_timeout_ms", self.body_read_timeout_ms),
        ] {
            if ms == 0 {
                return bad(name, "must be at least 1".into());
            }
        }
        if self.connections_max == 0 {
            return bad("connections_max", "must be at least 1".into());
        }
        if self.send_stall_ms == 0 {
            return bad("send_stall_ms", "must be at least 1".into());
        }
        Ok(self)
    }
}
