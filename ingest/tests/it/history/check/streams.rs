//! The checks of streams against the final timeline: every stream is numbered 0, 1, 2, … with
//! no gap and no repeat in timeline order, every acknowledged revision is the stored one, and
//! every acknowledged conditional commit got the revision after the one it expected.
//!
//! What it is not: a check that refused conditional writes are invisible (`writes` checks every
//! refused request that way, `412`s included).

use super::{Index, Violation};
use crate::history::ops::{Commit, Expected, WriteOutcome};
use std::collections::BTreeMap;

/// Streams: "Revisions are 0, 1, 2, … per key with no gap, also across restarts and crashes";
/// "Commits of a stream carry `revision` wherever they are read". In the final timeline each
/// key's commits, in ULID order, carry revisions 0, 1, 2, …; unkeyed commits carry none.
pub fn streams_are_numbered_without_gaps(ix: &Index<'_>) -> Vec<Violation> {
    const CHECK: &str = "8 streams are numbered 0, 1, 2, … without gaps";
    if let Some(v) = ix.no_final_read(CHECK) {
        return vec![v];
    }
    let mut streams: BTreeMap<&str, Vec<&Commit>> = BTreeMap::new();
    let mut out = Vec::new();
    for c in &ix.final_sorted {
        match (&c.key, c.revision) {
            (Some(k), _) => streams.entry(k.as_str()).or_default().push(c),
            (None, Some(r)) => out.push(Violation {
                check: CHECK,
                what: format!("unkeyed commit {} carries revision {r}", c.id),
                ops: ix.writers_of(&c.id).into_iter().chain(ix.final_op).collect(),
            }),
            (None, None) => {}
        }
    }
    for (key, commits) in streams {
        for (want, c) in commits.iter().enumerate() {
            if c.revision == Some(want as u64) {
                continue;
            }
            let got = c.revision.map_or("none".to_owned(), |r| r.to_string());
            let mut ops = ix.writers_of(&c.id);
            if let Some(before) = want.checked_sub(1).map(|i| commits[i]) {
                ops.extend(ix.writers_of(&before.id));
            }
            ops.extend(ix.final_op);
            let what = format!(
                "stream {key:?}: its commit #{want} in ULID order, {}, carries revision {got}",
                c.id
            );
            out.push(Violation { check: CHECK, what, ops });
            break;
        }
    }
    out
}

/// Streams: the response carries `"revisions"` in request order, and an append whose
/// expectation holds gets the stream's next revision. Every acknowledged commit's answered
/// revision is the one stored with its id, and a conditional commit acknowledged got the
/// revision right after the one it expected (0 for `no_stream`).
pub fn acknowledged_revisions_are_stored(ix: &Index<'_>) -> Vec<Violation> {
    const CHECK: &str = "9 acknowledged revisions are the stored ones";
    if let Some(v) = ix.no_final_read(CHECK) {
        return vec![v];
    }
    let mut out = Vec::new();
    for (op, w) in ix.h.writes() {
        let WriteOutcome::Acked { ids, revisions, .. } = &w.outcome else { continue };
        let mut problems = Vec::new();
        if revisions.len() != ids.len() {
            problems.push(format!("{} revisions for {} ids", revisions.len(), ids.len()));
        }
        for (i, (id, answered)) in ids.iter().zip(revisions).enumerate() {
            let stored = ix.final_by_id.get(id.as_str()).and_then(|cs| cs.first());
            if let Some(c) = stored
                && c.revision != *answered
            {
                problems.push(format!(
                    "{id} (index {i}) was answered revision {answered:?}, is stored with {:?}",
                    c.revision
                ));
            }
            let want = match w.expected.get(i).copied().flatten() {
                None => continue,
                Some(Expected::NoStream) => 0,
                Some(Expected::Revision(r)) => r + 1,
            };
            if *answered != Some(want) {
                problems.push(format!(
                    "{id} (index {i}) expected {:?} and got revision {answered:?}",
                    w.expected[i]
                ));
            }
        }
        if !problems.is_empty() {
            let what = format!("request {}: {}", w.req, problems.join("; "));
            out.push(Violation {
                check: CHECK,
                what,
                ops: vec![op.id].into_iter().chain(ix.final_op).collect(),
            });
        }
    }
    out
}
