//! Streams (transactional mode): what a commit may expect of its stream's revision, and how a
//! writer numbers the commits of one part against its shard's revision index.
//!
//! Every keyed commit is numbered, whichever endpoint wrote it; a commit carrying an
//! expectation is checked against the revision its stream has just before it (earlier commits
//! of the same request included). A part whose expectations do not all hold is not written,
//! unless the request says `on_conflict=record`: then each commit whose expectation failed is
//! written with the `CONFLICT` flag and what it expected in `aux` (its stream's revision before
//! it is its own minus one), for readers to judge.
//!
//! What it is not: HTTP (headers and bodies become an [`Expect`] in `api::streams` and `body`)
//! or the index (`storage::revisions`).

use crate::body::Batch;
use crate::error::ApiError;
use serde_json::{Value, json};
use std::collections::HashMap;
use storage::format::NO_REVISION;

/// What a commit expects of its stream's current (last) revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expect {
    /// Nothing (the commit is numbered all the same).
    #[default]
    Any,
    /// The stream does not exist (`If-None-Match: *`, `"no_stream"`).
    NoStream,
    /// The stream exists (`"stream_exists"`).
    StreamExists,
    /// The stream's last revision is this (`If-Match: "<n>"`, a number).
    Exactly(u64),
}

impl Expect {
    /// From the raw JSON of `expected_revision`.
    pub fn from_json(raw: &str) -> Result<Expect, String> {
        match serde_json::from_str::<Value>(raw) {
            Ok(Value::Number(n)) if n.is_u64() => Ok(Expect::Exactly(n.as_u64().unwrap_or(0))),
            Ok(Value::String(s)) if s == "no_stream" => Ok(Expect::NoStream),
            Ok(Value::String(s)) if s == "stream_exists" => Ok(Expect::StreamExists),
            Ok(Value::String(s)) if s == "any" => Ok(Expect::Any),
            _ => Err(format!(
                "\"expected_revision\" {raw} is not a revision (0 or more), \"no_stream\", \
                 \"stream_exists\" or \"any\""
            )),
        }
    }

    /// Whether a stream whose next revision is `next` (0: none) meets it.
    pub fn holds(self, next: u64) -> bool {
        match self {
            Expect::Any => true,
            Expect::NoStream => next == 0,
            Expect::StreamExists => next > 0,
            Expect::Exactly(r) => next == r + 1,
        }
    }

    /// As sent, for an answer.
    pub fn to_json(self) -> Value {
        match self {
            Expect::Any => json!("any"),
            Expect::NoStream => json!("no_stream"),
            Expect::StreamExists => json!("stream_exists"),
            Expect::Exactly(r) => json!(r),
        }
    }
}

/// A failed expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The commit's index in its request.
    pub index: u32,
    /// Its key.
    pub key: String,
    /// What it expected.
    pub expected: Expect,
    /// The stream's last revision then (`None`: it did not exist).
    pub actual: Option<u64>,
}

impl Conflict {
    /// As an entry of the answer's `conflicts`.
    pub fn to_json(&self) -> Value {
        json!({
            "index": self.index,
            "key": self.key,
            "expected": self.expected.to_json(),
            "actual": self.actual,
        })
    }
}

/// The last revision of a stream whose next one is `next`.
pub fn last_of(next: u64) -> Option<u64> {
    next.checked_sub(1)
}

/// Numbers the commits `commits` of `batch` (one part, on one shard) against `index`:
/// per commit its revision (`NO_REVISION` for an unkeyed one), and per stream the key hash,
/// its first revision and how many it got. `Err` lists every commit whose expectation failed.
/// Nothing is changed in `index`.
pub fn number(
    batch: &Batch,
    commits: &[u32],
    index: &storage::Revisions,
) -> Result<Numbered, Vec<Conflict>> {
    let mut revisions = Vec::new();
    let mut streams: Vec<(u128, u64, u64)> = Vec::new();
    // Stream hash → its entry in `streams` (requests of one stream, the common case, never
    // look beyond the first entry).
    let mut at: HashMap<u128, usize> = HashMap::new();
    let mut conflicts = Vec::new();
    let mut marks = Vec::new();
    if commits.iter().all(|&i| batch.key(&batch.commits[i as usize]).is_none()) {
        return Ok(Numbered { revisions, streams, marks });
    }
    revisions.reserve(commits.len());
    for &i in commits {
        let c = &batch.commits[i as usize];
        let Some(key) = batch.key(c) else {
            revisions.push(NO_REVISION);
            continue;
        };
        let h = storage::key_hash(key);
        let e = match streams.first() {
            Some(&(first, _, _)) if first == h => 0,
            _ => *at.entry(h).or_insert_with(|| {
                let next = index.next(h);
                streams.push((h, next, 0));
                streams.len() - 1
            }),
        };
        let (_, first, count) = streams[e];
        let next = first + count;
        if !c.expect.holds(next) && batch.record_conflicts {
            if marks.is_empty() {
                marks = vec![None; commits.len()];
            }
            marks[revisions.len()] = Some(c.expect);
        } else if !c.expect.holds(next) {
            conflicts.push(Conflict {
                index: i,
                key: String::from_utf8_lossy(key).into_owned(),
                expected: c.expect,
                actual: last_of(next),
            });
        }
        streams[e].2 += 1;
        revisions.push(next);
    }
    if conflicts.is_empty() { Ok(Numbered { revisions, streams, marks }) } else { Err(conflicts) }
}

/// The numbering of one part.
#[derive(Debug, Default)]
pub struct Numbered {
    /// Per commit of the part, in order (empty when none has a key).
    pub revisions: Vec<u64>,
    /// (stream hash, first revision, count).
    pub streams: Vec<(u128, u64, u64)>,
    /// With `on_conflict=record`: per commit, the expectation it failed (empty when none did).
    pub marks: Vec<Option<Expect>>,
}

/// `aux` of a commit marked `CONFLICT`: the expectation it failed (`no_stream` and
/// `stream_exists` take the two highest values, which no revision reaches).
pub fn encode_expected(e: Expect) -> u64 {
    match e {
        Expect::Exactly(r) => r,
        Expect::NoStream => u64::MAX,
        Expect::StreamExists | Expect::Any => u64::MAX - 1,
    }
}

/// The `"conflict"` of a stored commit marked `CONFLICT` with `aux` at `revision`: what it
/// expected, and its stream's revision just before it.
pub fn conflict_json(aux: u64, revision: u64) -> Value {
    let expected = match aux {
        u64::MAX => Expect::NoStream,
        a if a == u64::MAX - 1 => Expect::StreamExists,
        r => Expect::Exactly(r),
    };
    let actual = if revision == NO_REVISION { None } else { last_of(revision) };
    json!({"expected": expected.to_json(), "actual": actual})
}

impl Numbered {
    /// Whether the part's `k`-th commit failed its expectation (and is written marked).
    pub fn mark(&self, k: usize) -> Option<Expect> {
        self.marks.get(k).copied().flatten()
    }

    /// The revision of the part's `k`-th commit.
    pub fn of(&self, k: usize) -> u64 {
        self.revisions.get(k).copied().unwrap_or(NO_REVISION)
    }
}

/// Makes `batch` a write to the one stream `key`: a commit naming another key is refused, and
/// `expect` (from `If-Match` / `If-None-Match`) applies to the first commit, which must not
/// carry an `expected_revision` of its own as well.
pub fn bind(batch: &mut Batch, key: Box<[u8]>, expect: Expect) -> Result<(), ApiError> {
    for (index, c) in batch.commits.iter().enumerate() {
        if let Some(k) = batch.key(c)
            && *k != *key
        {
            let reason = format!(
                "key {:?} is not the stream's ({:?})",
                String::from_utf8_lossy(k),
                String::from_utf8_lossy(&key)
            );
            return Err(ApiError::InvalidCommit { index, reason });
        }
    }
    if let Some(first) = batch.commits.first_mut()
        && expect != Expect::Any
    {
        if first.expect != Expect::Any {
            let reason = "carries \"expected_revision\" beside the request's If-Match or \
                          If-None-Match"
                .to_owned();
            return Err(ApiError::InvalidCommit { index: 0, reason });
        }
        first.expect = expect;
    }
    batch.stream = Some(key);
    Ok(())
}

/// Refuses a commit that expects a revision but has no stream: on the plain ingest endpoint,
/// one without a key (on the streams endpoint every commit has the path's key).
pub fn check_expectations_have_streams(batch: &Batch) -> Result<(), ApiError> {
    match batch.commits.iter().position(|c| c.expect != Expect::Any && batch.key(c).is_none()) {
        None => Ok(()),
        Some(index) => Err(ApiError::InvalidCommit {
            index,
            reason: "\"expected_revision\" needs a \"key\"".into(),
        }),
    }
}

/// The stream's last revision before a request, from a conflict of that request's commits
/// (all of one stream, numbered one after the other).
pub fn current_from(c: &Conflict) -> Option<u64> {
    c.actual.and_then(|a| a.checked_sub(u64::from(c.index)))
}
