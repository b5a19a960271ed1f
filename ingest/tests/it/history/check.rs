//! The checker: pure functions over a recorded [`History`], one per contract rule, each answering
//! the [`Violation`]s it finds, every violation naming the few operations that witness it (the
//! write, the read, the kill in between, the final read), never the whole history.
//!
//! The rules live by concept: `writes` (acknowledged, failed and retried requests), `reads`
//! (strong reads, watermarks, pages), `tails` and `streams` (revisions).
//!
//! What it is not: a linearizability checker. It checks the contract's own promises about
//! acknowledged writes, all-or-nothing requests, idempotent retries, strong reads, watermarks,
//! immutable pages and tails, against the final timeline read after the last restart (the
//! reference: nothing is written after it). It trusts the recorded times to be real-time order
//! on one machine: an answer received before a request was sent happened before it arrived.

mod reads;
mod streams;
mod tails;
mod tests;
mod writes;

pub use reads::{
    pages_never_change, strong_reads_include_earlier_acknowledgements, watermarks_cover_their_pages,
};
pub use streams::{acknowledged_revisions_are_stored, streams_are_numbered_without_gaps};
pub use tails::tails_miss_and_repeat_nothing;
pub use writes::{
    acknowledged_commits_survive_once,
    failed_requests_are_invisible_and_unknown_ones_all_or_nothing,
    idempotent_retries_never_duplicate,
};

use super::ops::{
    Commit, History, Kind, Op, OpId, Page, ReadOutcome, Start, Tag, Write, WriteOutcome,
};
use std::collections::{BTreeMap, HashMap};

/// Most violations reported of one rule (the rest are counted in its last one).
const PER_CHECK_MAX: usize = 25;

/// A broken rule and the operations that show it.
#[derive(Debug, Clone)]
pub struct Violation {
    pub check: &'static str,
    pub what: String,
    pub ops: Vec<OpId>,
}

impl Violation {
    /// The violation with its minimal history: its operations by invocation time.
    pub fn render(&self, h: &History) -> String {
        let mut ops: Vec<&Op> = self.ops.iter().filter_map(|&i| h.ops.get(i)).collect();
        ops.sort_by_key(|o| (o.invoke_ns, o.id));
        ops.dedup_by_key(|o| o.id);
        let lines: Vec<String> = ops.iter().map(|o| format!("    {o}")).collect();
        format!("[{}] {}\n  minimal history:\n{}", self.check, self.what, lines.join("\n"))
    }
}

/// Every check, in the contract's order, at most `PER_CHECK_MAX` violations of each rule.
pub fn check_all(h: &History) -> Vec<Violation> {
    let ix = Index::new(h);
    let mut all = Vec::new();
    for check in [
        acknowledged_commits_survive_once,
        failed_requests_are_invisible_and_unknown_ones_all_or_nothing,
        idempotent_retries_never_duplicate,
        strong_reads_include_earlier_acknowledgements,
        watermarks_cover_their_pages,
        pages_never_change,
        tails_miss_and_repeat_nothing,
        streams_are_numbered_without_gaps,
        acknowledged_revisions_are_stored,
    ] {
        all.extend(check(&ix));
    }
    let mut by_rule: BTreeMap<&str, Vec<Violation>> = BTreeMap::new();
    for v in all {
        by_rule.entry(v.check).or_default().push(v);
    }
    by_rule.into_values().flat_map(capped).collect()
}

/// At most `PER_CHECK_MAX` violations, the last saying how many more there were.
fn capped(mut v: Vec<Violation>) -> Vec<Violation> {
    if v.len() > PER_CHECK_MAX {
        let more = v.len() - PER_CHECK_MAX;
        v.truncate(PER_CHECK_MAX);
        v[PER_CHECK_MAX - 1].what.push_str(&format!(" (and {more} more of this rule)"));
    }
    v
}

/// What the checks look things up in, built once per history.
pub struct Index<'h> {
    pub h: &'h History,
    final_op: Option<OpId>,
    /// The final timeline as served.
    final_served: Vec<&'h Commit>,
    /// The final timeline by id (for range look-ups even if it was served out of order).
    final_sorted: Vec<&'h Commit>,
    final_by_id: HashMap<&'h str, Vec<&'h Commit>>,
    final_by_tag: BTreeMap<&'h Tag, Vec<&'h Commit>>,
    /// Write attempts by request tag, in invocation order.
    attempts: BTreeMap<&'h str, Vec<(&'h Op, &'h Write)>>,
    /// The acknowledged attempt that answered each id.
    acked_by_id: HashMap<&'h str, OpId>,
}

impl<'h> Index<'h> {
    pub fn new(h: &'h History) -> Index<'h> {
        let fin = h.final_read();
        let final_served: Vec<&Commit> =
            fin.map(|(_, f)| f.commits.iter().collect()).unwrap_or_default();
        let mut final_sorted = final_served.clone();
        final_sorted.sort_by(|a, b| a.id.cmp(&b.id));
        let mut final_by_id: HashMap<&str, Vec<&Commit>> = HashMap::new();
        let mut final_by_tag: BTreeMap<&Tag, Vec<&Commit>> = BTreeMap::new();
        for c in &final_served {
            final_by_id.entry(c.id.as_str()).or_default().push(c);
            if let Some(t) = &c.tag {
                final_by_tag.entry(t).or_default().push(c);
            }
        }
        let mut attempts: BTreeMap<&str, Vec<(&Op, &Write)>> = BTreeMap::new();
        let mut acked_by_id = HashMap::new();
        for (op, w) in h.writes() {
            attempts.entry(w.req.as_str()).or_default().push((op, w));
            if let WriteOutcome::Acked { ids, .. } = &w.outcome {
                acked_by_id.extend(ids.iter().map(|id| (id.as_str(), op.id)));
            }
        }
        Index {
            h,
            final_op: fin.map(|(o, _)| o.id),
            final_served,
            final_sorted,
            final_by_id,
            final_by_tag,
            attempts,
            acked_by_id,
        }
    }

    /// The final timeline's commits admitted by `start`, up to `upto` (inclusive) if given.
    fn final_in(&self, start: &Start, upto: Option<&str>) -> &[&'h Commit] {
        let s = &self.final_sorted;
        let lo = s.partition_point(|c| !start.admits(&c.id));
        let hi = upto.map_or(s.len(), |u| s.partition_point(|c| c.id.as_str() <= u));
        &s[lo..hi.max(lo)]
    }

    /// The write attempts that produced commit `id`: the acknowledged one that answered it,
    /// else every attempt of the request its payload (in the final timeline) names.
    fn writers_of(&self, id: &str) -> Vec<OpId> {
        let tag = self.final_by_id.get(id).and_then(|cs| cs[0].tag.as_ref());
        self.writers(id, tag)
    }

    /// As [`Index::writers_of`], for a commit as some page showed it.
    fn writers_of_commit(&self, c: &Commit) -> Vec<OpId> {
        self.writers(&c.id, c.tag.as_ref())
    }

    fn writers(&self, id: &str, tag: Option<&Tag>) -> Vec<OpId> {
        if let Some(&op) = self.acked_by_id.get(id) {
            return vec![op];
        }
        let attempts = tag.and_then(|t| self.attempts.get(t.req.as_str()));
        attempts.map(|a| a.iter().map(|(op, _)| op.id).collect()).unwrap_or_default()
    }

    /// Kills between `from_ns` and `to_ns`.
    fn kills_between(&self, from_ns: u64, to_ns: u64) -> Vec<OpId> {
        self.h
            .kills()
            .filter(|k| k.complete_ns >= from_ns && k.invoke_ns <= to_ns)
            .map(|k| k.id)
            .collect()
    }

    /// Every attempt of `req`, the kills during them and the final read.
    fn request_witnesses(&self, req: &str) -> Vec<OpId> {
        let attempts = self.attempts.get(req).map(Vec::as_slice).unwrap_or_default();
        let mut ops: Vec<OpId> = attempts.iter().map(|(o, _)| o.id).collect();
        if let (Some(first), Some(last)) = (attempts.first(), attempts.last()) {
            ops.extend(self.kills_between(first.0.invoke_ns, last.0.complete_ns));
        }
        ops.extend(self.final_op);
        ops
    }

    fn no_final_read(&self, check: &'static str) -> Option<Violation> {
        self.final_op.is_none().then(|| Violation {
            check,
            what: "the history has no final read to check against".into(),
            ops: Vec::new(),
        })
    }

    /// Every served page (reads and re-reads) with its operation, start and limit.
    fn pages(&self) -> Vec<(&'h Op, &'h Page, &'h Start, usize)> {
        let mut out = Vec::new();
        for (op, r) in self.h.reads() {
            if let Some(p) = r.page() {
                out.push((op, p, &r.start, r.limit));
            }
        }
        for (op, rr) in self.h.rereads() {
            if let (ReadOutcome::Page(p), Some(Kind::Read(orig))) =
                (&rr.outcome, self.h.ops.get(rr.of).map(|o| &o.kind))
            {
                out.push((op, p, &orig.start, orig.limit));
            }
        }
        out
    }
}
