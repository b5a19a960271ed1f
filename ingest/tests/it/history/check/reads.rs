//! The checks of timeline pages: strong reads include every earlier acknowledgement, watermarks
//! cover their pages, pages never change (along `next`, against the final timeline, when
//! requested again).
//!
//! What it is not: the checks of the writes themselves (`writes`) or of tails (`tails`).

use super::{Index, Violation};
use crate::history::ops::{
    Commit, Kind, Op, OpId, Page, Read, ReadOutcome, Start, WriteOutcome, secs,
};
use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

/// Read, strong: "includes every commit acknowledged before the request arrived". Every commit
/// whose `200` arrived before a strong read was sent, admitted by the read's start and (when the
/// page is full, ended by its limit) at or below its last commit, is on the page. A page that is
/// not full ends at its watermark, which a strong read must have waited for: it holds every such
/// commit, also those above its watermark (reported as such).
pub fn strong_reads_include_earlier_acknowledgements(ix: &Index<'_>) -> Vec<Violation> {
    const CHECK: &str = "4 strong reads include earlier acknowledgements";
    let mut acks: Vec<(u64, &str, OpId)> = Vec::new();
    for (op, w) in ix.h.writes() {
        if let WriteOutcome::Acked { ids, .. } = &w.outcome {
            acks.extend(ids.iter().map(|id| (op.complete_ns, id.as_str(), op.id)));
        }
    }
    acks.sort_unstable();
    let mut reads: Vec<(&Op, &Read, &Page)> =
        ix.h.reads()
            .filter(|(_, r)| r.strong)
            .filter_map(|(o, r)| Some((o, r, r.page()?)))
            .collect();
    reads.sort_by_key(|(o, _, _)| o.invoke_ns);
    // Commits acknowledged so far, by id, as reads are visited in invocation order.
    let mut known: BTreeMap<&str, (u64, OpId)> = BTreeMap::new();
    let mut next_ack = 0;
    let mut out = Vec::new();
    for (op, r, page) in reads {
        while next_ack < acks.len() && acks[next_ack].0 < op.invoke_ns {
            let (at, id, w) = acks[next_ack];
            known.insert(id, (at, w));
            next_ack += 1;
        }
        let on_page: HashSet<&str> = page.commits.iter().map(|c| c.id.as_str()).collect();
        let upto = if r.full() { page.commits.last().map(|c| c.id.as_str()) } else { None };
        let range: Box<dyn Iterator<Item = (&&str, &(u64, OpId))>> = match &r.start {
            Start::Beginning => Box::new(known.iter()),
            Start::From(f) => Box::new(known.range(f.as_str()..)),
            Start::After(a) => {
                Box::new(known.range::<&str, _>((Bound::Excluded(a.as_str()), Bound::Unbounded)))
            }
        };
        let missing: Vec<(&str, u64, OpId)> = range
            .take_while(|(id, _)| upto.is_none_or(|u| **id <= u))
            .filter(|(id, _)| !on_page.contains(**id))
            .map(|(id, (at, w))| (*id, *at, *w))
            .collect();
        if missing.is_empty() {
            continue;
        }
        let shown: Vec<String> = missing
            .iter()
            .take(3)
            .map(|(id, at, w)| {
                let side = if *id > page.watermark.as_str() { "above" } else { "at or below" };
                format!("{id} (acknowledged at {} by #{w}, {side} the page's watermark)", secs(*at))
            })
            .collect();
        let what = format!(
            "strong read #{} ({}, limit {}, {} commits, watermark {}) misses {} commits acknowledged before it was sent: {}",
            op.id,
            r.start,
            r.limit,
            page.commits.len(),
            page.watermark,
            missing.len(),
            shown.join("; ")
        );
        let mut ops = vec![op.id];
        ops.extend(missing.iter().take(3).map(|m| m.2));
        out.push(Violation { check: CHECK, what, ops });
    }
    out
}

/// Words, watermark: "the ULID up to which the merged timeline is complete and will never
/// change". Every page's watermark is at or above each of its commits; and a page not ended by
/// its limit shows everything up to its watermark, so the final timeline holds nothing after
/// the page's last commit (or its start) and at or below its watermark.
pub fn watermarks_cover_their_pages(ix: &Index<'_>) -> Vec<Violation> {
    const CHECK: &str = "5a watermarks are at or above their pages' commits";
    const LATER: &str = "5b nothing appears later at or below a served watermark";
    let mut out = Vec::new();
    for (op, page, start, limit) in ix.pages() {
        let w = page.watermark.as_str();
        if let Some(c) = page.commits.iter().find(|c| c.id.as_str() > w) {
            let above = page.commits.iter().filter(|c| c.id.as_str() > w).count();
            let what = format!(
                "page #{} has {above} commits above its watermark {w}, first {}",
                op.id, c.id
            );
            let mut ops = vec![op.id];
            ops.extend(ix.writers_of_commit(c));
            out.push(Violation { check: CHECK, what, ops });
            continue;
        }
        if page.commits.len() >= limit || ix.final_op.is_none() {
            continue;
        }
        let after = match page.commits.last() {
            Some(c) => Start::After(c.id.clone()),
            None => start.clone(),
        };
        if let Some(c) = ix.final_in(&after, Some(w)).first() {
            let shape = match page.commits.last() {
                Some(last) => {
                    format!("{} of limit {limit}, ending at {}", page.commits.len(), last.id)
                }
                None => format!("empty, limit {limit}"),
            };
            let what = format!(
                "page #{} ({start}, {shape}) has watermark {w}, yet the final timeline holds {} above its end and at or below that watermark",
                op.id, c.id
            );
            let mut ops = vec![op.id];
            ops.extend(ix.writers_of(&c.id));
            ops.extend(ix.final_op);
            out.push(Violation { check: LATER, what, ops });
        }
    }
    out
}

/// Read: "A page never changes once served: following `next` from the start visits every
/// commit exactly once, in ULID order, however writes interleave". Ids strictly increase within
/// a page, along a reader's pages and in the final read, and `next` is the page's last id; every
/// page is the final timeline over the range it covers (its start to its last commit), byte for
/// byte; a page requested again after the last restart starts with the same commits (is the
/// same, when it was full).
pub fn pages_never_change(ix: &Index<'_>) -> Vec<Violation> {
    const CHECK: &str = "6 pages never change";
    let mut out = Vec::new();
    let final_ids: Vec<&str> = ix.final_served.iter().map(|c| c.id.as_str()).collect();
    if let Some(k) = final_ids.windows(2).position(|w| w[0] >= w[1]) {
        let what = format!("the final read goes from {} to {}", final_ids[k], final_ids[k + 1]);
        out.push(Violation { check: CHECK, what, ops: ix.final_op.into_iter().collect() });
    }
    let mut sessions: BTreeMap<u64, Vec<(&Op, &Read)>> = BTreeMap::new();
    for (op, r) in ix.h.reads() {
        sessions.entry(r.session).or_default().push((op, r));
    }
    for reads in sessions.values_mut() {
        reads.sort_by_key(|(_, r)| r.seq);
        let mut prev: Option<(&Op, &str)> = None;
        for (op, r) in reads.iter() {
            let Some(page) = r.page() else { continue };
            let ids: Vec<&str> = page.commits.iter().map(|c| c.id.as_str()).collect();
            let mut ops = vec![op.id];
            let bad = if let Some(k) = ids.windows(2).position(|w| w[0] >= w[1]) {
                Some(format!("page #{} goes from {} to {}", op.id, ids[k], ids[k + 1]))
            } else if let (Some((p, last)), Some(first)) = (prev, ids.first())
                && *first <= last
            {
                ops.push(p.id);
                Some(format!(
                    "page #{} starts at {first}, not after #{}'s last commit {last}",
                    op.id, p.id
                ))
            } else if page.next.as_deref() != ids.last().copied() {
                Some(format!(
                    "page #{} has next {:?} but ends at {:?}",
                    op.id,
                    page.next,
                    ids.last()
                ))
            } else {
                None
            };
            if let Some(what) = bad {
                out.push(Violation { check: CHECK, what, ops });
            }
            if let Some(last) = ids.last() {
                prev = Some((op, last));
            }
        }
    }
    if ix.final_op.is_some() {
        for (op, page, start, _) in ix.pages() {
            let Some(last) = page.commits.last() else { continue };
            let want = ix.final_in(start, Some(&last.id));
            if let Some((what, about)) = first_difference(&page.commits, want) {
                let mut ops = vec![op.id];
                ops.extend(ix.final_op);
                ops.extend(ix.writers_of_commit(about));
                let what = format!(
                    "page #{} ({start}, up to {}) differs from the final timeline: {what}",
                    op.id, last.id
                );
                out.push(Violation { check: CHECK, what, ops });
            }
        }
    }
    for (op, rr) in ix.h.rereads() {
        let Some(Kind::Read(orig)) = ix.h.ops.get(rr.of).map(|o| &o.kind) else { continue };
        let (Some(was), ReadOutcome::Page(now)) = (orig.page(), &rr.outcome) else { continue };
        let n = was.commits.len();
        let same_prefix = now.commits.len() >= n && now.commits[..n] == was.commits[..];
        let same = if orig.full() {
            same_prefix && now.commits.len() == n && now.next == was.next
        } else {
            same_prefix
        };
        if !same {
            let k = (0..n).find(|&k| now.commits.get(k) != Some(&was.commits[k])).unwrap_or(n);
            let what = format!(
                "page #{} requested again as #{} changed at commit {k}: was {}, now {}",
                rr.of,
                op.id,
                was.commits.get(k).map_or("nothing", |c| c.raw.as_str()),
                now.commits.get(k).map_or("nothing", |c| c.raw.as_str())
            );
            out.push(Violation { check: CHECK, what, ops: vec![rr.of, op.id] });
        }
    }
    out
}

/// The first way `got` differs from `want`: what, and the commit it is about.
fn first_difference<'a>(got: &'a [Commit], want: &[&'a Commit]) -> Option<(String, &'a Commit)> {
    for k in 0..got.len().max(want.len()) {
        match (got.get(k), want.get(k)) {
            (Some(g), Some(w)) if g == *w => {}
            (Some(g), Some(w)) if g.id == w.id => {
                return Some((format!("{} was served as {} but is now {}", g.id, g.raw, w.raw), g));
            }
            (Some(g), Some(w)) if g.id < w.id => {
                let what = format!("it showed {}, which the final timeline does not hold", g.id);
                return Some((what, g));
            }
            (_, Some(w)) => return Some((format!("it lacks {}", w.id), w)),
            (Some(g), None) => {
                let what = format!("it showed {}, which the final timeline does not hold", g.id);
                return Some((what, g));
            }
            (None, None) => break,
        }
    }
    None
}
