//! Request bodies of the ingest endpoints: decompression (`gzip`, `zstd`) under a size limit,
//! then the three formats — NDJSON (each non-empty line a payload, byte for byte), JSON
//! `{"commits": [{"key", "payload", "inverse"}]}` (payloads kept as their JSON text) and
//! length-framed binary (`u32` LE length, bytes).
//!
//! Parsing never copies payloads: a [`Batch`] holds the body and byte ranges into it. Each bad
//! commit is reported with its index. What it is not: routing or writing.

use crate::error::ApiError;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::io::Read;
use std::ops::Range;

/// Content type of NDJSON bodies.
pub const NDJSON: &str = "application/x-ndjson";
/// Content type of JSON bodies.
pub const JSON: &str = "application/json";
/// Content type of length-framed bodies.
pub const FRAMES: &str = "application/vnd.shardlog.frames";

/// Limits that apply to one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Body after decompression.
    pub body_bytes_max: usize,
    /// One payload.
    pub commit_bytes_max: usize,
    /// Commits in the request.
    pub batch_commits_max: usize,
    /// One key.
    pub key_bytes_max: usize,
}

/// One commit of a request: ranges into [`Batch::body`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The key, if any.
    pub key: CommitKey,
    /// The payload's bytes.
    pub payload: Range<usize>,
    /// The inverse payload's bytes (empty range: none).
    pub inverse: Range<usize>,
}

/// Where a commit's key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitKey {
    /// It has none.
    None,
    /// These bytes of [`Batch::body`] (a JSON key without escapes, as almost all are).
    InBody(Range<usize>),
    /// Unescaped from the JSON text, so held apart.
    Owned(Box<[u8]>),
}

impl CommitKey {
    /// The key's length, if there is one.
    fn len(&self) -> Option<usize> {
        match self {
            CommitKey::None => None,
            CommitKey::InBody(r) => Some(r.len()),
            CommitKey::Owned(k) => Some(k.len()),
        }
    }
}

impl Commit {
    /// Whether it has a key.
    pub fn has_key(&self) -> bool {
        self.key != CommitKey::None
    }
}

/// A parsed request body.
#[derive(Debug, Default)]
pub struct Batch {
    /// The (decompressed) body.
    pub body: Bytes,
    /// The commits, in request order.
    pub commits: Vec<Commit>,
    /// Commits refused (only with `partial`): (index, reason).
    pub rejected: Vec<(usize, String)>,
}

impl Batch {
    /// A commit's payload.
    pub fn payload(&self, c: &Commit) -> &[u8] {
        &self.body[c.payload.clone()]
    }
    /// A commit's inverse payload.
    pub fn inverse(&self, c: &Commit) -> &[u8] {
        &self.body[c.inverse.clone()]
    }
    /// A commit's key, if it has one.
    pub fn key<'a>(&'a self, c: &'a Commit) -> Option<&'a [u8]> {
        match &c.key {
            CommitKey::None => None,
            CommitKey::InBody(r) => Some(&self.body[r.clone()]),
            CommitKey::Owned(k) => Some(k),
        }
    }
}

/// Decompresses `body` according to `Content-Encoding`, refusing more than `limit` bytes.
pub fn decode(body: Bytes, encoding: Option<&str>, limit: usize) -> Result<Bytes, ApiError> {
    let enc = encoding.map(|e| e.trim().to_ascii_lowercase());
    let too_large =
        || ApiError::TooLarge { what: "the decompressed body".into(), limit_bytes: limit };
    let out = match enc.as_deref() {
        None | Some("") | Some("identity") => {
            if body.len() > limit {
                return Err(ApiError::TooLarge { what: "the body".into(), limit_bytes: limit });
            }
            return Ok(body);
        }
        Some("gzip") | Some("x-gzip") => {
            read_limited(flate2::read::MultiGzDecoder::new(&body[..]), limit)
        }
        Some("zstd") => match zstd::stream::read::Decoder::new(&body[..]) {
            Ok(d) => read_limited(d, limit),
            Err(e) => Err(Some(e)),
        },
        Some(other) => {
            return Err(ApiError::UnsupportedMediaType {
                message: format!("content-encoding {other:?} is not supported (gzip, zstd)"),
            });
        }
    };
    match out {
        Ok(v) => Ok(Bytes::from(v)),
        Err(None) => Err(too_large()),
        Err(Some(e)) => {
            Err(ApiError::bad_request("bad_encoding", format!("cannot decompress the body: {e}")))
        }
    }
}

/// Reads at most `limit` bytes; `Err(None)` when there is more.
fn read_limited(r: impl Read, limit: usize) -> Result<Vec<u8>, Option<std::io::Error>> {
    let mut out = Vec::new();
    let n = r.take(limit as u64 + 1).read_to_end(&mut out).map_err(Some)?;
    if n > limit {
        return Err(None);
    }
    Ok(out)
}

/// Parses a decoded body of `content_type`. With `partial`, bad commits are collected in
/// [`Batch::rejected`] instead of failing the request (an unreadable envelope still fails).
pub fn parse(
    body: Bytes,
    content_type: Option<&str>,
    limits: Limits,
    partial: bool,
) -> Result<Batch, ApiError> {
    let ct = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    let mut batch = Batch { body, ..Batch::default() };
    match ct.as_deref() {
        Some(NDJSON) => parse_ndjson(&mut batch, limits, partial)?,
        Some(JSON) => parse_json(&mut batch, limits, partial)?,
        Some(FRAMES) => parse_frames(&mut batch, limits, partial)?,
        other => {
            return Err(ApiError::UnsupportedMediaType {
                message: format!(
                    "content-type {:?} is not accepted ({NDJSON}, {JSON}, {FRAMES})",
                    other.unwrap_or("")
                ),
            });
        }
    }
    let n = batch.commits.len() + batch.rejected.len();
    if n > limits.batch_commits_max {
        return Err(ApiError::TooManyCommits { commits: n, limit: limits.batch_commits_max });
    }
    if batch.commits.is_empty() && batch.rejected.is_empty() {
        return Err(ApiError::bad_request("empty_batch", "the request holds no commit"));
    }
    Ok(batch)
}

/// Records a bad commit: fails the request, or (partial) remembers it.
fn reject(batch: &mut Batch, partial: bool, index: usize, reason: String) -> Result<(), ApiError> {
    if partial {
        batch.rejected.push((index, reason));
        Ok(())
    } else {
        Err(ApiError::InvalidCommit { index, reason })
    }
}

fn check_payload(len: usize, limits: Limits) -> Result<(), String> {
    if len > limits.commit_bytes_max {
        return Err(format!(
            "payload of {len} bytes exceeds commit_bytes_max {}",
            limits.commit_bytes_max
        ));
    }
    Ok(())
}

fn parse_ndjson(batch: &mut Batch, limits: Limits, partial: bool) -> Result<(), ApiError> {
    let body = batch.body.clone();
    let mut start = 0;
    let mut index = 0;
    while start < body.len() {
        let next = memchr_newline(&body[start..]).map_or(body.len(), |i| start + i);
        // A line ends at `\n` or `\r\n`: the `\r` of a CRLF belongs to the line end.
        let end = if next > start && body[next - 1] == b'\r' { next - 1 } else { next };
        if end > start {
            match check_payload(end - start, limits) {
                Ok(()) => batch.commits.push(Commit {
                    key: CommitKey::None,
                    payload: start..end,
                    inverse: 0..0,
                }),
                Err(reason) => reject(batch, partial, index, reason)?,
            }
            index += 1;
        }
        start = next + 1;
    }
    Ok(())
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', b)
}

fn parse_frames(batch: &mut Batch, limits: Limits, partial: bool) -> Result<(), ApiError> {
    let body = batch.body.clone();
    let mut at = 0;
    let mut index = 0;
    while at < body.len() {
        let Some(word) = body.get(at..at + 4) else {
            // An incomplete frame ends the body: nothing after it can be read.
            return Err(ApiError::InvalidCommit { index, reason: "truncated length word".into() });
        };
        let len = u32::from_le_bytes(word.try_into().expect("4 bytes")) as usize;
        let start = at + 4;
        if start + len > body.len() {
            return Err(ApiError::InvalidCommit {
                index,
                reason: format!("frame of {len} bytes runs past the end of the body"),
            });
        }
        match check_payload(len, limits) {
            Ok(()) => batch.commits.push(Commit {
                key: CommitKey::None,
                payload: start..start + len,
                inverse: 0..0,
            }),
            Err(reason) => reject(batch, partial, index, reason)?,
        }
        at = start + len;
        index += 1;
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(borrow)]
    commits: Vec<&'a RawValue>,
}

/// One commit object's fields, each kept as raw JSON (so `"payload": null` is a payload).
type JsonCommit<'a> = std::collections::BTreeMap<std::borrow::Cow<'a, str>, &'a RawValue>;

/// A commit object as it almost always comes, a key without escapes and a payload, parsed
/// without building a map or copying the key (a map and a key copy per commit took a third of
/// the CPU of parsing keyed commits). Anything else — an inverse, an escaped key, an unknown
/// or repeated field, a key that is not a string — goes through [`JsonCommit`], which
/// unescapes and says what is wrong.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainCommit<'a> {
    /// A key with escapes fails here (it cannot be borrowed) and takes the other path.
    #[serde(borrow, default)]
    key: Option<&'a str>,
    #[serde(borrow)]
    payload: &'a RawValue,
}

/// A commit's key, payload and inverse (raw JSON).
type CommitFields<'a> = (Option<std::borrow::Cow<'a, str>>, &'a RawValue, Option<&'a RawValue>);

/// A commit's key, payload and inverse (raw JSON), or why the object is not a commit.
fn commit_fields(raw: &RawValue) -> Result<CommitFields<'_>, String> {
    if let Ok(c) = serde_json::from_str::<PlainCommit<'_>>(raw.get()) {
        return Ok((c.key.map(std::borrow::Cow::Borrowed), c.payload, None));
    }
    let c: JsonCommit<'_> =
        serde_json::from_str(raw.get()).map_err(|e| format!("not a commit object: {e}"))?;
    if let Some(unknown) = c.keys().find(|k| !matches!(k.as_ref(), "key" | "payload" | "inverse")) {
        return Err(format!("unknown field {unknown:?} (key, payload, inverse)"));
    }
    let Some(&payload) = c.get("payload") else {
        return Err("missing \"payload\"".into());
    };
    let key = match c.get("key").map(|raw| serde_json::from_str::<Option<String>>(raw.get())) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(k))) => Some(std::borrow::Cow::Owned(k)),
        Some(Err(_)) => return Err("\"key\" must be a string".into()),
    };
    Ok((key, payload, c.get("inverse").copied()))
}

fn parse_json(batch: &mut Batch, limits: Limits, partial: bool) -> Result<(), ApiError> {
    let body = batch.body.clone();
    let env: Envelope<'_> = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("expected {{\"commits\": [...]}}: {e}"))
    })?;
    let base = body.as_ptr() as usize;
    // Every borrowed text here is a slice of `body`.
    let range_of_str = |s: &str| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let range_of = |raw: &RawValue| range_of_str(raw.get());
    for (index, raw) in env.commits.into_iter().enumerate() {
        let (key, payload, inverse) = match commit_fields(raw) {
            Ok(fields) => fields,
            Err(reason) => {
                reject(batch, partial, index, reason)?;
                continue;
            }
        };
        let key = match key {
            None => CommitKey::None,
            Some(std::borrow::Cow::Borrowed(k)) => CommitKey::InBody(range_of_str(k)),
            Some(std::borrow::Cow::Owned(k)) => CommitKey::Owned(k.into_bytes().into_boxed_slice()),
        };
        if let Some(k) = key.len()
            && (k == 0 || k > limits.key_bytes_max)
        {
            let reason = format!("key of {k} bytes is not in 1..={}", limits.key_bytes_max);
            reject(batch, partial, index, reason)?;
            continue;
        }
        let payload = range_of(payload);
        if let Err(reason) = check_payload(payload.len(), limits) {
            reject(batch, partial, index, reason)?;
            continue;
        }
        let inverse = inverse.map_or(0..0, range_of);
        batch.commits.push(Commit { key, payload, inverse });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
