//! The recorded history of a checker run: every operation a client invoked against the server
//! (writes and their retries, timeline pages, tail sessions, kills, the final read and the
//! re-requested pages), each with its invocation and completion time in nanoseconds since the
//! run started, and one-line renderings of them for violation reports.
//!
//! What it is not: the clients that record it (`clients`, `tails`) or the judgement over it
//! (`check`). Everything here is plain data; a history can be built by hand, as the checker's own
//! tests do.

use std::fmt;

/// An operation's index in its [`History`].
pub type OpId = usize;

/// Where a read or a tail starts: at the beginning, after a ULID (exclusive) or from one
/// (inclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Beginning,
    After(String),
    From(String),
}

impl Start {
    /// Whether `id` lies at or beyond this start.
    pub fn admits(&self, id: &str) -> bool {
        match self {
            Start::Beginning => true,
            Start::After(a) => id > a.as_str(),
            Start::From(f) => id >= f.as_str(),
        }
    }

    /// The query parameter for a timeline request (`after=X&`, `from=X&` or nothing).
    pub fn query(&self) -> String {
        match self {
            Start::Beginning => String::new(),
            Start::After(a) => format!("after={a}&"),
            Start::From(f) => format!("from={f}&"),
        }
    }
}

impl fmt::Display for Start {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Start::Beginning => write!(f, "beginning"),
            Start::After(a) => write!(f, "after {a}"),
            Start::From(x) => write!(f, "from {x}"),
        }
    }
}

/// Which request and which of its commits a payload belongs to: every payload the workload
/// writes carries `{"t": <request tag>, "i": <index in the request>}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag {
    pub req: String,
    pub index: u32,
}

/// A commit as a page, the final read or a tail showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub id: String,
    pub key: Option<String>,
    pub shard: u64,
    /// `None` for a payload the workload did not write.
    pub tag: Option<Tag>,
    /// Its stream revision (`None` for an unkeyed commit).
    pub revision: Option<u64>,
    /// The commit's JSON exactly as served.
    pub raw: String,
}

/// A timeline page as served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub commits: Vec<Commit>,
    pub next: Option<String>,
    pub watermark: String,
    pub consistency: String,
}

/// What a timeline request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    Page(Page),
    /// A status other than 200, a connection error, or a body that is not a whole page.
    Failed(String),
}

/// One timeline request. Requests of one reader that follow `next` share a `session`.
#[derive(Debug, Clone)]
pub struct Read {
    pub session: u64,
    pub seq: u32,
    pub strong: bool,
    pub start: Start,
    pub limit: usize,
    /// Path and query, to re-request the same page.
    pub path: String,
    pub outcome: ReadOutcome,
}

impl Read {
    /// The page, when one was served.
    pub fn page(&self) -> Option<&Page> {
        match &self.outcome {
            ReadOutcome::Page(p) => Some(p),
            ReadOutcome::Failed(_) => None,
        }
    }

    /// Whether the page holds `limit` commits (so it ends at its `next`, not at the watermark).
    pub fn full(&self) -> bool {
        self.page().is_some_and(|p| p.commits.len() >= self.limit)
    }
}

/// How a write request's commits are keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// NDJSON lines without keys.
    Unkeyed,
    /// JSON commits with distinct keys, so on several shards (one transaction).
    CrossShard,
    /// JSON commits all with one key.
    SingleKey,
    /// JSON commits with distinct hot keys, each expecting the revision last seen of its
    /// stream (`expected_revision`): often stale, then `412`.
    Conditional,
}

/// What a commit of a [`Shape::Conditional`] request expected of its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    NoStream,
    Revision(u64),
}

/// What a write attempt got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// `200`.
    Acked { ids: Vec<String>, revisions: Vec<Option<u64>>, duplicate: bool },
    /// An error status other than `504`: nothing of this attempt may ever be visible.
    Refused { status: u16, code: String },
    /// `504` or a connection error: written whole or not at all.
    Unknown { status: Option<u16>, why: String },
}

/// One attempt of a write request. Attempts of one request (retries with the same
/// `Idempotency-Key`) share `req` and send the same body.
#[derive(Debug, Clone)]
pub struct Write {
    pub req: String,
    pub attempt: u32,
    pub shape: Shape,
    /// Each commit's key, in request order.
    pub keys: Vec<Option<String>>,
    /// Each commit's expectation, in request order (all `None` but for conditional writes).
    pub expected: Vec<Option<Expected>>,
    pub durability: Option<&'static str>,
    pub idempotency_key: Option<String>,
    pub timeout: Option<&'static str>,
    pub outcome: WriteOutcome,
}

/// One connection of a tail session.
#[derive(Debug, Clone)]
pub struct Connect {
    pub at_ns: u64,
    /// The cursor it resumed from (`Last-Event-ID` or `after=`).
    pub resume: Option<String>,
    pub status: Option<u16>,
    pub ended_ns: u64,
    pub why_ended: String,
}

/// One event a tail received.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub at_ns: u64,
    /// Index of its connection in [`TailSession::connects`].
    pub conn: usize,
}

/// A tail followed across reconnects.
#[derive(Debug, Clone)]
pub struct TailSession {
    pub sse: bool,
    pub start: Start,
    pub connects: Vec<Connect>,
    pub events: Vec<Event>,
    /// `event:` field values seen on commit events (SSE).
    pub event_fields: Vec<String>,
}

/// The server was killed with SIGKILL and restarted on the same data directory.
#[derive(Debug, Clone)]
pub struct Kill {
    pub old_addr: String,
    pub new_addr: String,
}

/// The whole timeline read after the last restart, strong, following `next`.
#[derive(Debug, Clone)]
pub struct FinalRead {
    pub commits: Vec<Commit>,
    pub pages: usize,
}

/// A recorded page requested again, the same way, after the last restart.
#[derive(Debug, Clone)]
pub struct Reread {
    pub of: OpId,
    pub outcome: ReadOutcome,
}

#[derive(Debug, Clone)]
pub enum Kind {
    Write(Write),
    Read(Read),
    Tail(TailSession),
    Kill(Kill),
    FinalRead(FinalRead),
    Reread(Reread),
}

/// One operation: who did what, when.
#[derive(Debug, Clone)]
pub struct Op {
    pub id: OpId,
    pub process: String,
    pub invoke_ns: u64,
    pub complete_ns: u64,
    pub kind: Kind,
}

/// Every operation of a run, by invocation time.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub ops: Vec<Op>,
}

impl History {
    /// Orders `ops` by invocation and numbers them.
    pub fn new(mut ops: Vec<Op>) -> History {
        ops.sort_by(|a, b| (a.invoke_ns, &a.process).cmp(&(b.invoke_ns, &b.process)));
        for (i, op) in ops.iter_mut().enumerate() {
            op.id = i;
        }
        History { ops }
    }

    /// Appends `op` (numbered) and answers its id.
    pub fn push(&mut self, mut op: Op) -> OpId {
        let id = self.ops.len();
        op.id = id;
        self.ops.push(op);
        id
    }

    pub fn writes(&self) -> impl Iterator<Item = (&Op, &Write)> {
        self.ops.iter().filter_map(|o| match &o.kind {
            Kind::Write(w) => Some((o, w)),
            _ => None,
        })
    }

    pub fn reads(&self) -> impl Iterator<Item = (&Op, &Read)> {
        self.ops.iter().filter_map(|o| match &o.kind {
            Kind::Read(r) => Some((o, r)),
            _ => None,
        })
    }

    pub fn tails(&self) -> impl Iterator<Item = (&Op, &TailSession)> {
        self.ops.iter().filter_map(|o| match &o.kind {
            Kind::Tail(t) => Some((o, t)),
            _ => None,
        })
    }

    pub fn rereads(&self) -> impl Iterator<Item = (&Op, &Reread)> {
        self.ops.iter().filter_map(|o| match &o.kind {
            Kind::Reread(r) => Some((o, r)),
            _ => None,
        })
    }

    pub fn kills(&self) -> impl Iterator<Item = &Op> {
        self.ops.iter().filter(|o| matches!(o.kind, Kind::Kill(_)))
    }

    /// The final read (the last one, if several were recorded).
    pub fn final_read(&self) -> Option<(&Op, &FinalRead)> {
        self.ops.iter().rev().find_map(|o| match &o.kind {
            Kind::FinalRead(f) => Some((o, f)),
            _ => None,
        })
    }
}

/// Nanoseconds since the run started, as seconds.
pub fn secs(ns: u64) -> String {
    format!("+{:.6}s", ns as f64 / 1e9)
}

/// The first and last few of a list of ids.
fn ids_brief(ids: &[String]) -> String {
    match ids.len() {
        0 => "[]".into(),
        1..=4 => format!("[{}]", ids.join(", ")),
        n => format!("[{}, {} … {} ({n})]", ids[0], ids[1], ids[n - 1]),
    }
}

fn page_brief(p: &Page) -> String {
    let ids: Vec<String> = p.commits.iter().map(|c| c.id.clone()).collect();
    format!(
        "page {} commits {} next {} watermark {} ({})",
        p.commits.len(),
        ids_brief(&ids),
        p.next.as_deref().unwrap_or("null"),
        p.watermark,
        p.consistency
    )
}

fn read_outcome(o: &ReadOutcome) -> String {
    match o {
        ReadOutcome::Page(p) => page_brief(p),
        ReadOutcome::Failed(why) => format!("failed: {why}"),
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b) = (secs(self.invoke_ns), secs(self.complete_ns));
        write!(f, "#{} [{a} .. {b}] {}: ", self.id, self.process)?;
        match &self.kind {
            Kind::Write(w) => {
                let keys: Vec<String> = w
                    .keys
                    .iter()
                    .zip(&w.expected)
                    .map(|(k, e)| {
                        let k = k.as_deref().unwrap_or("-");
                        match e {
                            None => k.to_owned(),
                            Some(Expected::NoStream) => format!("{k}@none"),
                            Some(Expected::Revision(r)) => format!("{k}@{r}"),
                        }
                    })
                    .collect();
                write!(
                    f,
                    "write {} attempt {} {:?} {} commits keys [{}] durability={} idempotency-key={} timeout={} -> ",
                    w.req,
                    w.attempt,
                    w.shape,
                    w.keys.len(),
                    keys.join(","),
                    w.durability.unwrap_or("default"),
                    w.idempotency_key.as_deref().unwrap_or("none"),
                    w.timeout.unwrap_or("none"),
                )?;
                match &w.outcome {
                    WriteOutcome::Acked { ids, revisions, duplicate } => {
                        let revs: Vec<String> = revisions
                            .iter()
                            .map(|r| r.map_or("-".to_owned(), |r| r.to_string()))
                            .collect();
                        write!(
                            f,
                            "200 ids {} revisions [{}] duplicate={duplicate}",
                            ids_brief(ids),
                            revs.join(",")
                        )
                    }
                    WriteOutcome::Refused { status, code } => write!(f, "{status} {code}"),
                    WriteOutcome::Unknown { status, why } => match status {
                        Some(s) => write!(f, "{s} (unknown outcome) {why}"),
                        None => write!(f, "unknown outcome: {why}"),
                    },
                }
            }
            Kind::Read(r) => write!(
                f,
                "{} read session {} page {} {} limit {} -> {}",
                if r.strong { "strong" } else { "eventual" },
                r.session,
                r.seq,
                r.start,
                r.limit,
                read_outcome(&r.outcome)
            ),
            Kind::Tail(t) => write!(
                f,
                "{} tail {} with {} connections and {} events (first {}, last {})",
                if t.sse { "SSE" } else { "NDJSON" },
                t.start,
                t.connects.len(),
                t.events.len(),
                t.events.first().map_or("-", |e| e.id.as_str()),
                t.events.last().map_or("-", |e| e.id.as_str()),
            ),
            Kind::Kill(k) => write!(f, "SIGKILL {} and restart on {}", k.old_addr, k.new_addr),
            Kind::FinalRead(r) => write!(
                f,
                "final strong read after the last restart: {} commits in {} pages",
                r.commits.len(),
                r.pages
            ),
            Kind::Reread(r) => {
                write!(f, "re-request of page #{} -> {}", r.of, read_outcome(&r.outcome))
            }
        }
    }
}
