//! Timeline readers, each a thread recording every page it gets: strong readers (reading after
//! their own acknowledged writes, from recent acknowledged commits, and from the start following
//! `next`) and an eventual reader following `next` from the beginning; and the parsing of pages
//! that keeps each commit's JSON exactly as served.
//!
//! What it is not: a judge (`check` is); a failed read is recorded as such, never asserted on.

use super::clients::{Shared, random_write};
use super::ops::{Commit, FinalRead, Kind, Op, Page, Read, ReadOutcome, Start, Tag};
use crate::process::request_raw;
use fastrand::Rng;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Requests one strong reader makes at most.
const ROUNDS_MAX: u32 = 200_000;
/// Pages one eventual reader requests at most.
const PAGES_MAX: u32 = 100_000;
/// Pages of the final read at most (10 000 commits each).
const FINAL_PAGES_MAX: usize = 10_000;
/// Pages of a strong read from the start.
const STRONG_SESSION_PAGES_MAX: u32 = 4;

#[derive(Deserialize)]
struct RawPage<'a> {
    #[serde(borrow)]
    commits: Vec<&'a serde_json::value::RawValue>,
    next: Option<String>,
    watermark: String,
    consistency: String,
}

#[derive(Deserialize)]
struct RawCommit {
    id: String,
    key: Option<String>,
    shard: u64,
    #[serde(default)]
    revision: Option<u64>,
    #[serde(default)]
    payload: Value,
}

/// A page's body, its commits kept as served; `Err` when it is not a whole page.
pub fn parse_page(text: &str) -> Result<Page, String> {
    let raw: RawPage<'_> =
        serde_json::from_str(text).map_err(|e| format!("not a page ({e}): {text:.200}"))?;
    let mut commits = Vec::with_capacity(raw.commits.len());
    for c in raw.commits {
        commits.push(parse_commit(c.get())?);
    }
    Ok(Page { commits, next: raw.next, watermark: raw.watermark, consistency: raw.consistency })
}

/// A commit's JSON (a page's element, an NDJSON line, an SSE event's data).
pub fn parse_commit(text: &str) -> Result<Commit, String> {
    let c: RawCommit =
        serde_json::from_str(text).map_err(|e| format!("not a commit ({e}): {text:.200}"))?;
    let tag = match (c.payload["t"].as_str(), c.payload["i"].as_u64()) {
        (Some(req), Some(i)) => Some(Tag { req: req.to_owned(), index: i as u32 }),
        _ => None,
    };
    let (id, key, shard, revision) = (c.id, c.key, c.shard, c.revision);
    Ok(Commit { id, key, shard, tag, revision, raw: text.to_owned() })
}

/// The path of a timeline request.
pub fn timeline_path(log: &str, strong: bool, start: &Start, limit: usize) -> String {
    let c = if strong { "strong" } else { "eventual" };
    format!("/v1/logs/{log}/timeline?{}limit={limit}&consistency={c}", start.query())
}

/// Requests `path` and answers the page or why there is none.
pub fn fetch_page(addr: &str, path: &str) -> ReadOutcome {
    match request_raw(addr, "GET", path, None, "", b"") {
        None => ReadOutcome::Failed("connection error".into()),
        Some((200, _, text)) => match parse_page(&text) {
            Ok(p) => ReadOutcome::Page(p),
            Err(e) => ReadOutcome::Failed(e),
        },
        Some((status, _, text)) => ReadOutcome::Failed(format!("{status} {text:.200}")),
    }
}

/// One timeline request, recorded.
fn read(
    sh: &Shared,
    process: &str,
    session: u64,
    seq: u32,
    strong: bool,
    start: Start,
    limit: usize,
) -> Op {
    let path = timeline_path(&sh.log, strong, &start, limit);
    let invoke = sh.now_ns();
    let outcome = fetch_page(&sh.addr(), &path);
    sh.op(process, invoke, Kind::Read(Read { session, seq, strong, start, limit, path, outcome }))
}

fn page_of(op: &Op) -> Option<&Page> {
    match &op.kind {
        Kind::Read(r) => r.page(),
        _ => None,
    }
}

/// A strong reader: writes, then reads strongly from its own acknowledged commit; or reads
/// strongly from a recent acknowledged commit of anyone; or reads from the start following
/// `next` for a few pages.
pub fn strong_reader(sh: Arc<Shared>, who: String, seed: u64) -> Vec<Op> {
    let mut rng = Rng::with_seed(seed);
    let mut ops = Vec::new();
    let limits = [1, 5, 20, 100, 500];
    for r in 0..ROUNDS_MAX {
        if sh.stopping() {
            break;
        }
        match rng.u8(..4) {
            0 | 1 => {
                let (attempts, ids) = random_write(&sh, &who, r, seed, &mut rng, false);
                ops.extend(attempts);
                if let Some(first) = ids.and_then(|ids| ids.into_iter().min()) {
                    let limit = limits[rng.usize(..limits.len())];
                    ops.push(read(&sh, &who, sh.session(), 0, true, Start::From(first), limit));
                }
            }
            2 => {
                if let Some(id) = sh.recent(&mut rng) {
                    let limit = limits[rng.usize(..limits.len())];
                    ops.push(read(&sh, &who, sh.session(), 0, true, Start::From(id), limit));
                }
            }
            _ => {
                let session = sh.session();
                let limit = [50, 300, 2000][rng.usize(..3)];
                let mut start = Start::Beginning;
                for seq in 0..STRONG_SESSION_PAGES_MAX {
                    if sh.past_deadline() {
                        break;
                    }
                    let op = read(&sh, &who, session, seq, true, start.clone(), limit);
                    let next = page_of(&op).and_then(|p| p.next.clone());
                    let full = page_of(&op).is_some_and(|p| p.commits.len() >= limit);
                    ops.push(op);
                    match next {
                        Some(n) if full => start = Start::After(n),
                        _ => break,
                    }
                }
            }
        }
        if ops.last().is_some_and(|o| page_of(o).is_none()) {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(rng.u64(1..10)));
    }
    ops
}

/// An eventual reader: follows `next` from the beginning until the workload stops, recording
/// every page (empty ones too: their watermark is a promise as well).
pub fn eventual_reader(sh: Arc<Shared>, who: String, seed: u64) -> Vec<Op> {
    let mut rng = Rng::with_seed(seed);
    let mut ops = Vec::new();
    let session = sh.session();
    let mut start = Start::Beginning;
    for seq in 0..PAGES_MAX {
        if sh.stopping() {
            break;
        }
        let limit = [10, 50, 200, 1000][rng.usize(..4)];
        let op = read(&sh, &who, session, seq, false, start.clone(), limit);
        let pause_ms = match page_of(&op) {
            None => 100,
            Some(p) => match &p.next {
                Some(n) if !p.commits.is_empty() => {
                    start = Start::After(n.clone());
                    0
                }
                _ => 30,
            },
        };
        ops.push(op);
        std::thread::sleep(Duration::from_millis(pause_ms));
    }
    ops
}

/// Reads the whole timeline strongly, following `next` (limit 10000), after the last restart.
pub fn final_read(sh: &Shared) -> Op {
    let invoke = sh.now_ns();
    let (mut commits, mut pages, mut start) = (Vec::new(), 0, Start::Beginning);
    for _ in 0..FINAL_PAGES_MAX {
        let path = timeline_path(&sh.log, true, &start, 10_000);
        let page = final_page(sh, &path);
        pages += 1;
        let (next, empty) = (page.next.clone(), page.commits.is_empty());
        commits.extend(page.commits);
        match next {
            Some(n) if !empty => start = Start::After(n),
            _ => break,
        }
    }
    assert!(pages < FINAL_PAGES_MAX, "the final read did not end in {FINAL_PAGES_MAX} pages");
    sh.op("final", invoke, Kind::FinalRead(FinalRead { commits, pages }))
}

/// A page of the final read: nothing is written any more, so a failure is retried a few times
/// (a slow strong read may answer 504) before the run gives up.
fn final_page(sh: &Shared, path: &str) -> Page {
    let mut why = String::new();
    for _ in 0..5 {
        match fetch_page(&sh.addr(), path) {
            ReadOutcome::Page(p) => return p,
            ReadOutcome::Failed(w) => why = w,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the final read failed: {why}")
}
