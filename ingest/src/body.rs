//! Request bodies of the ingest endpoints: decompression (`gzip`, `zstd`) under a size limit,
//! then the three formats — NDJSON (each non-empty line a payload, byte for byte), JSON
//! `{"commits": [{"key", "payload", "inverse", "expected_revision"}]}` (payloads kept as their JSON text) and
//! length-framed binary (`u32` LE length, bytes).
//!
//! Parsing never copies payloads: a [`Batch`] holds the body and byte ranges into it. Each bad
//! commit is reported with its index. What it is not: routing or writing.

use crate::budget::{Charge, Spent};
use crate::error::ApiError;
use crate::streams::Expect;
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
    /// `Retry-After` of a `503` when the in-flight budget is spent.
    pub retry_after_s: u64,
}

/// Bytes of the commits' index per commit (what [`Batch::commits`] holds beside the body).
pub const COMMIT_INDEX_BYTES: usize = std::mem::size_of::<Commit>();
/// The largest zstd window a body may use (8 MiB: what `zstd -19` and below use; a frame
/// asking for more is refused as `bad_encoding`).
const ZSTD_WINDOW_LOG_MAX: u32 = 23;
/// What a zstd decoder holds: its window and its buffers.
const ZSTD_WINDOW_BYTES_MAX: usize = (1 << ZSTD_WINDOW_LOG_MAX) + (256 << 10);
/// Decompressed bytes produced between two charges.
const DECODE_STEP_BYTES: usize = 256 * 1024;

/// One commit of a request: ranges into [`Batch::body`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The key, if any.
    pub key: CommitKey,
    /// The payload's bytes.
    pub payload: Range<usize>,
    /// The inverse payload's bytes (empty range: none).
    pub inverse: Range<usize>,
    /// What its stream's revision must be before it (JSON `expected_revision`, or the
    /// streams endpoint's `If-Match` on its first commit).
    pub expect: Expect,
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
    /// The key of every commit, when the request names one stream (the streams endpoint).
    pub stream: Option<Box<[u8]>>,
    /// `?on_conflict=record`: a failed expectation is written anyway, marked, not refused.
    pub record_conflicts: bool,
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
        if let Some(k) = &self.stream {
            return Some(k);
        }
        match &c.key {
            CommitKey::None => None,
            CommitKey::InBody(r) => Some(&self.body[r.clone()]),
            CommitKey::Owned(k) => Some(k),
        }
    }
}

/// Decompresses `body` according to `Content-Encoding`, refusing more than `limit` bytes,
/// charging the decompressed bytes to `charge` as they are produced.
pub fn decode(
    body: Bytes,
    encoding: Option<&str>,
    limits: Limits,
    charge: &mut Charge,
) -> Result<Bytes, ApiError> {
    let limit = limits.body_bytes_max;
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
            read_limited(flate2::read::MultiGzDecoder::new(&body[..]), limit, charge)
        }
        Some("zstd") => {
            // The decoder holds its window beside the output: charged before it is made.
            charge
                .add(ZSTD_WINDOW_BYTES_MAX)
                .map_err(|Spent| ApiError::Overloaded { retry_after_s: limits.retry_after_s })?;
            match zstd::stream::read::Decoder::new(&body[..]).and_then(|mut d| {
                d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
                Ok(d)
            }) {
                Ok(d) => read_limited(d, limit, charge),
                Err(e) => Err(Decode::Io(e)),
            }
        }
        Some(other) => {
            return Err(ApiError::UnsupportedMediaType {
                message: format!("content-encoding {other:?} is not supported (gzip, zstd)"),
            });
        }
    };
    match out {
        Ok(v) => Ok(Bytes::from(v)),
        Err(Decode::TooLarge) => Err(too_large()),
        Err(Decode::Spent) => Err(ApiError::Overloaded { retry_after_s: limits.retry_after_s }),
        Err(Decode::Io(e)) => {
            Err(ApiError::bad_request("bad_encoding", format!("cannot decompress the body: {e}")))
        }
    }
}

/// Why decompressing stopped.
enum Decode {
    TooLarge,
    Spent,
    Io(std::io::Error),
}

/// Reads at most `limit` bytes, charging what it holds (plus the next step) before each read.
fn read_limited(mut r: impl Read, limit: usize, charge: &mut Charge) -> Result<Vec<u8>, Decode> {
    let base = charge.bytes();
    let mut out: Vec<u8> = Vec::new();
    loop {
        let step = DECODE_STEP_BYTES.min(limit + 1 - out.len());
        charge.cover(base + out.len() + step).map_err(|Spent| Decode::Spent)?;
        let at = out.len();
        out.resize(at + step, 0);
        let n = loop {
            match r.read(&mut out[at..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Decode::Io(e)),
            }
        };
        out.truncate(at + n);
        if out.len() > limit {
            return Err(Decode::TooLarge);
        }
        if n == 0 {
            return Ok(out);
        }
    }
}

/// Parses a decoded body of `content_type`. With `partial`, bad commits are collected in
/// [`Batch::rejected`] instead of failing the request (an unreadable envelope still fails).
/// The commits' index is charged to `charge` as it grows.
pub fn parse(
    body: Bytes,
    content_type: Option<&str>,
    limits: Limits,
    partial: bool,
    charge: &mut Charge,
) -> Result<Batch, ApiError> {
    let ct = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    let mut out = Parsed { batch: Batch { body, ..Batch::default() }, charge, base: 0, limits };
    out.base = out.charge.bytes();
    match ct.as_deref() {
        Some(NDJSON) => parse_ndjson(&mut out, partial)?,
        Some(JSON) => parse_json(&mut out, partial)?,
        Some(FRAMES) => parse_frames(&mut out, partial)?,
        other => {
            return Err(ApiError::UnsupportedMediaType {
                message: format!(
                    "content-type {:?} is not accepted ({NDJSON}, {JSON}, {FRAMES})",
                    other.unwrap_or("")
                ),
            });
        }
    }
    let batch = out.batch;
    let n = batch.commits.len() + batch.rejected.len();
    if n > limits.batch_commits_max {
        return Err(ApiError::TooManyCommits { commits: n, limit: limits.batch_commits_max });
    }
    if batch.commits.is_empty() && batch.rejected.is_empty() {
        return Err(ApiError::bad_request("empty_batch", "the request holds no commit"));
    }
    Ok(batch)
}

/// A batch being parsed, and what it is charged.
struct Parsed<'c> {
    batch: Batch,
    charge: &'c mut Charge,
    /// The charge before parsing (the body's bytes).
    base: usize,
    limits: Limits,
}

impl Parsed<'_> {
    /// Appends `c`, charging the index before it grows.
    fn push(&mut self, c: Commit) -> Result<(), ApiError> {
        let commits = &mut self.batch.commits;
        if commits.len() == commits.capacity() {
            let grown = (commits.capacity() * 2).max(64);
            let rejected = self.batch.rejected.len() * REJECT_BYTES;
            self.charge.cover(self.base + grown * COMMIT_INDEX_BYTES + rejected).map_err(
                |Spent| ApiError::Overloaded { retry_after_s: self.limits.retry_after_s },
            )?;
            commits.reserve_exact(grown - commits.len());
        }
        commits.push(c);
        Ok(())
    }

    /// Records a bad commit: fails the request, or (partial) remembers it.
    fn reject(&mut self, partial: bool, index: usize, reason: String) -> Result<(), ApiError> {
        if !partial {
            return Err(ApiError::InvalidCommit { index, reason });
        }
        self.charge
            .add(REJECT_BYTES + reason.len())
            .map_err(|Spent| ApiError::Overloaded { retry_after_s: self.limits.retry_after_s })?;
        self.batch.rejected.push((index, reason));
        Ok(())
    }
}

/// Bytes a rejected commit's entry holds beside its reason.
const REJECT_BYTES: usize = std::mem::size_of::<(usize, String)>();

fn check_payload(len: usize, limits: Limits) -> Result<(), String> {
    if len > limits.commit_bytes_max {
        return Err(format!(
            "payload of {len} bytes exceeds commit_bytes_max {}",
            limits.commit_bytes_max
        ));
    }
    Ok(())
}

fn parse_ndjson(out: &mut Parsed<'_>, partial: bool) -> Result<(), ApiError> {
    let (body, limits) = (out.batch.body.clone(), out.limits);
    let mut start = 0;
    let mut index = 0;
    while start < body.len() {
        let next = memchr_newline(&body[start..]).map_or(body.len(), |i| start + i);
        // A line ends at `\n` or `\r\n`: the `\r` of a CRLF belongs to the line end.
        let end = if next > start && body[next - 1] == b'\r' { next - 1 } else { next };
        if end > start {
            match check_payload(end - start, limits) {
                Ok(()) => out.push(Commit {
                    key: CommitKey::None,
                    payload: start..end,
                    inverse: 0..0,
                    expect: Expect::Any,
                })?,
                Err(reason) => out.reject(partial, index, reason)?,
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

fn parse_frames(out: &mut Parsed<'_>, partial: bool) -> Result<(), ApiError> {
    let (body, limits) = (out.batch.body.clone(), out.limits);
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
            Ok(()) => out.push(Commit {
                key: CommitKey::None,
                payload: start..start + len,
                inverse: 0..0,
                expect: Expect::Any,
            })?,
            Err(reason) => out.reject(partial, index, reason)?,
        }
        at = start + len;
        index += 1;
    }
    Ok(())
}

/// The envelope `{"commits": [...]}`, read with each commit handed to `each` as it is parsed
/// (no list of all commits is built beside [`Batch::commits`]). `each`'s error stops the read
/// and is kept in `failed`.
struct Envelope<'f, F> {
    each: &'f mut F,
    failed: &'f mut Option<ApiError>,
}

impl<'de, F: FnMut(usize, &'de RawValue) -> Result<(), ApiError>> serde::de::DeserializeSeed<'de>
    for Envelope<'_, F>
{
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, F: FnMut(usize, &'de RawValue) -> Result<(), ApiError>> serde::de::Visitor<'de>
    for Envelope<'_, F>
{
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object with one field, \"commits\"")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        use serde::de::Error;
        let mut seen = false;
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if name != "commits" {
                return Err(A::Error::unknown_field(&name, &["commits"]));
            }
            if seen {
                return Err(A::Error::duplicate_field("commits"));
            }
            seen = true;
            map.next_value_seed(Commits { each: &mut *self.each, failed: &mut *self.failed })?;
        }
        if !seen {
            return Err(A::Error::missing_field("commits"));
        }
        Ok(())
    }
}

/// The `commits` array of an [`Envelope`].
struct Commits<'f, F> {
    each: &'f mut F,
    failed: &'f mut Option<ApiError>,
}

impl<'de, F: FnMut(usize, &'de RawValue) -> Result<(), ApiError>> serde::de::DeserializeSeed<'de>
    for Commits<'_, F>
{
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(usize, &'de RawValue) -> Result<(), ApiError>> serde::de::Visitor<'de>
    for Commits<'_, F>
{
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of commits")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            if let Err(e) = (self.each)(index, raw) {
                *self.failed = Some(e);
                return Err(serde::de::Error::custom("stopped"));
            }
            index += 1;
        }
        Ok(())
    }
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

/// A commit's key, payload, inverse (raw JSON) and expected revision.
type CommitFields<'a> =
    (Option<std::borrow::Cow<'a, str>>, &'a RawValue, Option<&'a RawValue>, Expect);

/// The fields a JSON commit may have.
const COMMIT_FIELDS: [&str; 4] = ["key", "payload", "inverse", "expected_revision"];

/// A commit's key, payload, inverse (raw JSON) and expected revision, or why the object is
/// not a commit.
fn commit_fields(raw: &RawValue) -> Result<CommitFields<'_>, String> {
    if let Ok(c) = serde_json::from_str::<PlainCommit<'_>>(raw.get()) {
        return Ok((c.key.map(std::borrow::Cow::Borrowed), c.payload, None, Expect::Any));
    }
    let c: JsonCommit<'_> =
        serde_json::from_str(raw.get()).map_err(|e| format!("not a commit object: {e}"))?;
    if let Some(unknown) = c.keys().find(|k| !COMMIT_FIELDS.contains(&k.as_ref())) {
        return Err(format!("unknown field {unknown:?} ({})", COMMIT_FIELDS.join(", ")));
    }
    let expect = match c.get("expected_revision") {
        None => Expect::Any,
        Some(raw) => Expect::from_json(raw.get())?,
    };
    let Some(&payload) = c.get("payload") else {
        return Err("missing \"payload\"".into());
    };
    let key = match c.get("key").map(|raw| serde_json::from_str::<Option<String>>(raw.get())) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(k))) => Some(std::borrow::Cow::Owned(k)),
        Some(Err(_)) => return Err("\"key\" must be a string".into()),
    };
    Ok((key, payload, c.get("inverse").copied(), expect))
}

fn parse_json(out: &mut Parsed<'_>, partial: bool) -> Result<(), ApiError> {
    let (body, limits) = (out.batch.body.clone(), out.limits);
    let base = body.as_ptr() as usize;
    // Every borrowed text here is a slice of `body`.
    let range_of_str = |s: &str| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let range_of = |raw: &RawValue| range_of_str(raw.get());
    let mut each = |index: usize, raw: &RawValue| -> Result<(), ApiError> {
        let (key, payload, inverse, expect) = match commit_fields(raw) {
            Ok(fields) => fields,
            Err(reason) => return out.reject(partial, index, reason),
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
            return out.reject(partial, index, reason);
        }
        let payload = range_of(payload);
        if let Err(reason) = check_payload(payload.len(), limits) {
            return out.reject(partial, index, reason);
        }
        let inverse = inverse.map_or(0..0, range_of);
        out.push(Commit { key, payload, inverse, expect })
    };
    let mut failed = None;
    let mut de = serde_json::Deserializer::from_slice(&body);
    let read = serde::de::DeserializeSeed::deserialize(
        Envelope { each: &mut each, failed: &mut failed },
        &mut de,
    )
    .and_then(|()| de.end());
    if let Some(e) = failed {
        return Err(e);
    }
    read.map_err(|e| {
        ApiError::bad_request("invalid_json", format!("expected {{\"commits\": [...]}}: {e}"))
    })
}

#[cfg(test)]
mod tests;
