//! The checks of write requests against the final timeline: acknowledged commits survive once,
//! failed requests stay invisible and unknown ones all or nothing, idempotent retries never
//! duplicate.
//!
//! What it is not: a check of what readers saw of them while the run went on (`reads`, `tails`),
//! except that a refused request's commit seen on any page is reported here.

use super::{Index, Violation};
use crate::history::ops::{Commit, OpId, Tag, WriteOutcome};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Contract, Errors: "never loses an acknowledged commit: after `kill -9` and restart every
/// acknowledged commit is readable"; Read: following `next` visits every commit exactly once.
/// Every id a `200` answered is in the final timeline exactly once, holding that request's
/// commit (its tag, index and key), and a `200` answers one id per commit.
pub fn acknowledged_commits_survive_once(ix: &Index<'_>) -> Vec<Violation> {
    const CHECK: &str = "1 acknowledged commits survive, once";
    if let Some(v) = ix.no_final_read(CHECK) {
        return vec![v];
    }
    let mut out = Vec::new();
    for (op, w) in ix.h.writes() {
        let WriteOutcome::Acked { ids, .. } = &w.outcome else { continue };
        let mut problems = Vec::new();
        if ids.len() != w.keys.len() {
            problems.push(format!("answered {} ids for {} commits", ids.len(), w.keys.len()));
        }
        for (i, id) in ids.iter().enumerate() {
            let want = Tag { req: w.req.clone(), index: i as u32 };
            match ix.final_by_id.get(id.as_str()).map(Vec::as_slice) {
                None | Some([]) => problems.push(format!("{id} (index {i}) is missing")),
                Some([c]) if c.tag.as_ref() != Some(&want) || w.keys.get(i) != Some(&c.key) => {
                    problems.push(format!("{id} (index {i}) holds another commit: {}", c.raw))
                }
                Some([_]) => {}
                Some(cs) => problems.push(format!("{id} (index {i}) appears {} times", cs.len())),
            }
        }
        if !problems.is_empty() {
            let mut ops = vec![op.id];
            ops.extend(ix.kills_between(op.complete_ns, u64::MAX));
            ops.extend(ix.final_op);
            let what = format!(
                "acknowledged request {} in the final timeline: {}",
                w.req,
                problems.join("; ")
            );
            out.push(Violation { check: CHECK, what, ops });
        }
    }
    out
}

/// Ingest: "All or nothing: after any error response other than `504`, none of the request's
/// commits is ever visible"; "A `504` means the outcome is not known yet: the request is still
/// written whole or not at all, never in part". A request refused on every attempt shows no
/// commit anywhere (final timeline, any page); a request without a `200` (a `504` or a
/// connection error on some attempt) holds none or all of its commits in the final timeline.
pub fn failed_requests_are_invisible_and_unknown_ones_all_or_nothing(
    ix: &Index<'_>,
) -> Vec<Violation> {
    const CHECK: &str = "2 failed requests invisible, unknown ones all or nothing";
    if let Some(v) = ix.no_final_read(CHECK) {
        return vec![v];
    }
    // Where each request's commits were seen, outside the final read.
    let mut seen: HashMap<&str, Vec<(OpId, &Commit)>> = HashMap::new();
    for (op, page, _, _) in ix.pages() {
        for c in &page.commits {
            if let Some(t) = &c.tag {
                seen.entry(t.req.as_str()).or_default().push((op.id, c));
            }
        }
    }
    let mut out = Vec::new();
    for (&req, attempts) in &ix.attempts {
        let n = attempts[0].1.keys.len();
        let indices: HashSet<u32> = (0..n as u32)
            .filter(|&i| ix.final_by_tag.contains_key(&Tag { req: req.to_owned(), index: i }))
            .collect();
        let refused =
            attempts.iter().all(|(_, w)| matches!(w.outcome, WriteOutcome::Refused { .. }));
        let acked = attempts.iter().any(|(_, w)| matches!(w.outcome, WriteOutcome::Acked { .. }));
        if refused {
            let mut places: Vec<(OpId, &Commit)> = seen.get(req).cloned().unwrap_or_default();
            if !indices.is_empty() {
                let f = ix.final_op.unwrap_or_default();
                places.extend(
                    ix.final_by_tag.iter().filter(|(t, _)| t.req == req).map(|(_, cs)| (f, cs[0])),
                );
            }
            if let Some((at, c)) = places.first() {
                let answers: Vec<String> = attempts
                    .iter()
                    .map(|(_, w)| match &w.outcome {
                        WriteOutcome::Refused { status, code } => format!("{status} {code}"),
                        _ => String::new(),
                    })
                    .collect();
                let mut ops = ix.request_witnesses(req);
                ops.extend(places.iter().take(3).map(|(o, _)| *o));
                let what = format!(
                    "request {req} was refused on every attempt ({}), yet its commit {} is visible in #{at} (and {} more places)",
                    answers.join(", "),
                    c.id,
                    places.len() - 1
                );
                out.push(Violation { check: CHECK, what, ops });
            }
        } else if !acked && !indices.is_empty() && indices.len() != n {
            let mut have: Vec<u32> = indices.into_iter().collect();
            have.sort_unstable();
            let what = format!(
                "request {req} had no 200 answer and the final timeline holds {} of its {n} commits (indices {have:?}): neither none nor all",
                have.len()
            );
            out.push(Violation { check: CHECK, what, ops: ix.request_witnesses(req) });
        }
    }
    out
}

/// Ingest, `Idempotency-Key`: "a repeat with the same key returns the first response, ids
/// included, with `"duplicate": true`, and writes nothing"; a `504`'s retry "never writes it
/// twice". Each commit of each request (its tag) appears at most once in the final timeline,
/// and every later `200` to a request says `"duplicate": true` with the first `200`'s ids.
pub fn idempotent_retries_never_duplicate(ix: &Index<'_>) -> Vec<Violation> {
    const CHECK: &str = "3 idempotent retries never duplicate";
    if let Some(v) = ix.no_final_read(CHECK) {
        return vec![v];
    }
    let mut out = Vec::new();
    let mut twice: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (tag, cs) in &ix.final_by_tag {
        if cs.len() > 1 {
            let ids: Vec<&str> = cs.iter().map(|c| c.id.as_str()).collect();
            twice.entry(tag.req.as_str()).or_default().push(format!(
                "index {} as [{}]",
                tag.index,
                ids.join(", ")
            ));
        }
    }
    for (req, dups) in twice {
        let what =
            format!("request {req} is in the final timeline more than once: {}", dups.join("; "));
        out.push(Violation { check: CHECK, what, ops: ix.request_witnesses(req) });
    }
    for (&req, attempts) in &ix.attempts {
        let mut acked = attempts.iter().filter_map(|(op, w)| match &w.outcome {
            WriteOutcome::Acked { ids, duplicate, .. } => Some((op, ids, *duplicate)),
            _ => None,
        });
        let Some((first_op, first_ids, _)) = acked.next() else { continue };
        for (op, ids, duplicate) in acked {
            if ids != first_ids || !duplicate {
                let what = format!(
                    "request {req}: attempt #{} answered duplicate={duplicate} with ids {ids:?}, after #{} had answered {first_ids:?}",
                    op.id, first_op.id
                );
                out.push(Violation { check: CHECK, what, ops: vec![first_op.id, op.id] });
            }
        }
    }
    out
}
