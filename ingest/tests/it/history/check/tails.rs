//! The check of tail sessions: across reconnects, events neither miss nor repeat a commit.
//!
//! What it is not: a check of the events' bodies (their ids are what a resuming client relies
//! on) or of how fast a tail follows.

use super::{Index, Violation};
use crate::history::ops::secs;
use std::collections::HashSet;

/// Tail: "one event per commit, `id:` = the commit's ULID, so a client that reconnects with
/// `Last-Event-ID` misses nothing and sees nothing twice" (and `after=` for NDJSON). Per tail
/// session, across its reconnects, event ids strictly increase, and they are exactly the final
/// timeline's ids after the session's start up to the last event received.
pub fn tails_miss_and_repeat_nothing(ix: &Index<'_>) -> Vec<Violation> {
    const CHECK: &str = "7 tails miss and repeat nothing";
    let mut out = Vec::new();
    for (op, t) in ix.h.tails() {
        let kind = if t.sse { "SSE" } else { "NDJSON" };
        let at = |k: usize| {
            let e = &t.events[k];
            let c = &t.connects.get(e.conn);
            format!(
                "{} at {} on connection {} (opened at {}, resuming after {})",
                e.id,
                secs(e.at_ns),
                e.conn,
                c.map_or("?".into(), |c| secs(c.at_ns)),
                c.and_then(|c| c.resume.as_deref()).unwrap_or("nothing")
            )
        };
        if let Some(k) = t.events.windows(2).position(|w| w[0].id >= w[1].id) {
            let what = format!("{kind} tail #{}: event {} came after {}", op.id, at(k + 1), at(k));
            out.push(Violation { check: CHECK, what, ops: vec![op.id] });
        }
        let Some(last) = t.events.last() else { continue };
        if ix.final_op.is_none() {
            continue;
        }
        let got: HashSet<&str> = t.events.iter().map(|e| e.id.as_str()).collect();
        let want = ix.final_in(&t.start, Some(&last.id));
        let want_ids: HashSet<&str> = want.iter().map(|c| c.id.as_str()).collect();
        let missed: Vec<&str> =
            want.iter().map(|c| c.id.as_str()).filter(|id| !got.contains(id)).collect();
        let extra: Vec<usize> =
            (0..t.events.len()).filter(|&k| !want_ids.contains(t.events[k].id.as_str())).collect();
        if missed.is_empty() && extra.is_empty() {
            continue;
        }
        let mut parts = Vec::new();
        let mut ops = vec![op.id];
        ops.extend(ix.final_op);
        if let Some(m) = missed.first() {
            let after = t.events.partition_point(|e| e.id.as_str() < *m);
            let around = match after {
                0 => "before its first event".to_owned(),
                k if k == t.events.len() => "after its last event".to_owned(),
                k => format!("between {} and {}", at(k - 1), at(k)),
            };
            parts.push(format!("missed {} commits, first {m} {around}", missed.len()));
            ops.extend(ix.writers_of(m));
        }
        if let Some(&k) = extra.first() {
            parts.push(format!(
                "received {} events the final timeline does not hold, first {}",
                extra.len(),
                at(k)
            ));
        }
        let what = format!(
            "{kind} tail #{} ({}, {} events) against the final timeline up to {}: {}",
            op.id,
            t.start,
            t.events.len(),
            last.id,
            parts.join("; ")
        );
        out.push(Violation { check: CHECK, what, ops });
    }
    out
}
