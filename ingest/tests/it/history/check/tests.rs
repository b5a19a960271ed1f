//! The checker's own tests: small hand-made histories, one clean that every check must accept
//! and, for each rule, a broken one its check must reject. They prove the checks are not
//! vacuous; they do not start a server.

use super::super::ops::{
    Commit, Connect, Event, Expected, FinalRead, History, Kind, Op, Page, Read, ReadOutcome,
    Reread, Shape, Start, Tag, TailSession, Write, WriteOutcome,
};
use super::*;

/// A sortable stand-in for a ULID.
fn id(n: u64) -> String {
    format!("{n:026}")
}

fn commit(n: u64, req: &str, i: u32) -> Commit {
    Commit {
        id: id(n),
        key: None,
        shard: 0,
        tag: Some(Tag { req: req.into(), index: i }),
        revision: None,
        raw: format!(
            r#"{{"id":"{}","key":null,"shard":0,"payload":{{"t":"{req}","i":{i}}}}}"#,
            id(n)
        ),
    }
}

fn page(commits: &[Commit], watermark: u64) -> Page {
    Page {
        commits: commits.to_vec(),
        next: commits.last().map(|c| c.id.clone()),
        watermark: id(watermark),
        consistency: "strong".into(),
    }
}

fn op(process: &str, invoke_ns: u64, complete_ns: u64, kind: Kind) -> Op {
    Op { id: 0, process: process.into(), invoke_ns, complete_ns, kind }
}

fn write(req: &str, attempt: u32, n: usize, t: (u64, u64), outcome: WriteOutcome) -> Op {
    let w = Write {
        req: req.into(),
        attempt,
        shape: Shape::Unkeyed,
        keys: vec![None; n],
        expected: vec![None; n],
        durability: None,
        idempotency_key: Some(format!("key-{req}")),
        timeout: None,
        outcome,
    };
    op("writer", t.0, t.1, Kind::Write(w))
}

fn acked(ids: &[u64], duplicate: bool) -> WriteOutcome {
    WriteOutcome::Acked {
        ids: ids.iter().map(|&n| id(n)).collect(),
        revisions: vec![None; ids.len()],
        duplicate,
    }
}

fn lost() -> WriteOutcome {
    WriteOutcome::Unknown { status: None, why: "connection error".into() }
}

fn read(
    session: u64,
    seq: u32,
    strong: bool,
    start: Start,
    limit: usize,
    t: (u64, u64),
    p: Page,
) -> Op {
    let r = Read {
        session,
        seq,
        strong,
        start,
        limit,
        path: String::new(),
        outcome: ReadOutcome::Page(p),
    };
    op("reader", t.0, t.1, Kind::Read(r))
}

fn final_read(commits: &[Commit], at: u64) -> Op {
    op("final", at, at + 1, Kind::FinalRead(FinalRead { commits: commits.to_vec(), pages: 1 }))
}

fn tail(ids: &[u64], start: Start) -> Op {
    let events = ids.iter().map(|&n| Event { id: id(n), at_ns: n * 10, conn: 0 }).collect();
    let connects = vec![Connect {
        at_ns: 0,
        resume: None,
        status: Some(200),
        ended_ns: 100,
        why_ended: "workload stopped".into(),
    }];
    let t = TailSession { sse: true, start, connects, events, event_fields: Vec::new() };
    op("tail", 0, 100, Kind::Tail(t))
}

/// Which checks (by number) report something.
fn failing(h: &History) -> Vec<char> {
    let mut out: Vec<char> =
        check_all(h).iter().map(|v| v.check.chars().next().unwrap_or('?')).collect();
    out.dedup();
    out
}

/// A little of everything, all of it as the contract says.
fn clean_ops() -> Vec<Op> {
    let all = [
        commit(1, "a", 0),
        commit(2, "a", 1),
        commit(3, "b", 0),
        commit(4, "e", 0),
        commit(5, "e", 1),
    ];
    vec![
        write("a", 1, 2, (0, 10), acked(&[1, 2], false)),
        write("b", 1, 1, (5, 15), lost()),
        write("b", 2, 1, (16, 18), acked(&[3], true)),
        write("c", 1, 1, (1, 2), WriteOutcome::Refused { status: 400, code: "bad_json".into() }),
        write("d", 1, 3, (3, 4), lost()),
        write(
            "e",
            1,
            2,
            (6, 7),
            WriteOutcome::Unknown { status: Some(504), why: "deadline".into() },
        ),
        read(1, 0, true, Start::From(id(1)), 10, (20, 30), page(&all, 5)),
        read(2, 0, false, Start::Beginning, 2, (8, 9), page(&all[..2], 2)),
        read(2, 1, false, Start::After(id(2)), 10, (31, 32), page(&all[2..], 9)),
        tail(&[1, 2, 3, 4, 5], Start::Beginning),
        tail(&[3, 4], Start::After(id(2))),
        final_read(&all, 50),
    ]
}

fn clean() -> History {
    let mut h = History::new(clean_ops());
    let of = h.reads().find(|(_, r)| r.session == 2).map(|(o, _)| o.id).unwrap();
    let again = page(&clean_ops_page(), 5);
    h.push(op("final", 60, 61, Kind::Reread(Reread { of, outcome: ReadOutcome::Page(again) })));
    h
}

fn clean_ops_page() -> Vec<Commit> {
    vec![commit(1, "a", 0), commit(2, "a", 1)]
}

#[test]
fn history_checker_accepts_a_clean_history() {
    let h = clean();
    let v = check_all(&h);
    assert!(v.is_empty(), "{}", v.iter().map(|v| v.render(&h)).collect::<Vec<_>>().join("\n"));
}

/// The history of `ops` with the first op that `find` matches replaced by `new`.
fn with(mut ops: Vec<Op>, find: impl Fn(&Op) -> bool, new: Op) -> History {
    let i = ops.iter().position(find).expect("the op to replace");
    ops[i] = new;
    History::new(ops)
}

fn is_final(o: &Op) -> bool {
    matches!(o.kind, Kind::FinalRead(_))
}

#[test]
fn history_checker_rejects_a_lost_acknowledged_commit() {
    let f = [commit(1, "a", 0), commit(3, "b", 0), commit(4, "e", 0), commit(5, "e", 1)];
    let h = with(clean_ops(), is_final, final_read(&f, 50));
    assert!(failing(&h).contains(&'1'), "{:?}", failing(&h));
}

#[test]
fn history_checker_rejects_a_refused_request_that_is_visible() {
    let mut ops = clean_ops();
    ops.push(write(
        "z",
        1,
        1,
        (1, 2),
        WriteOutcome::Refused { status: 503, code: "overloaded".into() },
    ));
    let f = [
        commit(1, "a", 0),
        commit(2, "a", 1),
        commit(3, "b", 0),
        commit(4, "e", 0),
        commit(5, "e", 1),
        commit(6, "z", 0),
    ];
    let h = with(ops, is_final, final_read(&f, 50));
    assert_eq!(check_all(&h).iter().filter(|v| v.check.starts_with('2')).count(), 1);
}

#[test]
fn history_checker_rejects_half_of_an_unknown_request() {
    let f = [commit(1, "a", 0), commit(2, "a", 1), commit(3, "b", 0), commit(4, "e", 0)];
    let h = with(clean_ops(), is_final, final_read(&f, 50));
    assert!(failing(&h).contains(&'2'), "{:?}", failing(&h));
}

#[test]
fn history_checker_rejects_a_duplicated_tag_and_a_retry_with_other_ids() {
    let mut ops = clean_ops();
    ops.push(write("r", 1, 1, (40, 41), lost()));
    ops.push(write("r", 2, 1, (42, 43), acked(&[7], false)));
    let mut f: Vec<Commit> = [1, 2, 3, 4, 5]
        .iter()
        .zip(["a", "a", "b", "e", "e"])
        .zip([0, 1, 0, 0, 1])
        .map(|((&n, r), i)| commit(n, r, i))
        .collect();
    f.extend([commit(6, "r", 0), commit(7, "r", 0)]);
    let h = with(ops, is_final, final_read(&f, 50));
    let v = check_all(&h);
    let dup = v.iter().find(|v| v.check.starts_with('3')).expect("the duplicate is reported");
    assert!(dup.what.contains("request r"), "{}", dup.what);
    // A replay that answers other ids than the first answer.
    let mut ops = clean_ops();
    ops.push(write("a", 2, 2, (11, 12), acked(&[1, 9], true)));
    assert!(failing(&History::new(ops)).contains(&'3'));
}

#[test]
fn history_checker_rejects_a_strong_read_missing_an_earlier_acknowledgement() {
    let p = [commit(1, "a", 0), commit(3, "b", 0), commit(4, "e", 0), commit(5, "e", 1)];
    let is_strong = |o: &Op| matches!(&o.kind, Kind::Read(r) if r.strong);
    let h = with(
        clean_ops(),
        is_strong,
        read(1, 0, true, Start::From(id(1)), 10, (20, 30), page(&p, 5)),
    );
    let v = strong_reads_include_earlier_acknowledgements(&Index::new(&h));
    assert_eq!(v.len(), 1);
    assert!(v[0].what.contains(&id(2)), "{}", v[0].what);
    // Above the watermark of a page that is not full is missing too.
    let h = with(
        clean_ops(),
        is_strong,
        read(1, 0, true, Start::From(id(1)), 10, (20, 30), page(&p[..1], 1)),
    );
    let v = strong_reads_include_earlier_acknowledgements(&Index::new(&h));
    assert!(v.len() == 1 && v[0].what.contains("above the page's watermark"), "{v:?}");
    // A write acknowledged after the read was sent may be missing.
    let h = with(
        clean_ops(),
        is_strong,
        read(
            1,
            0,
            true,
            Start::From(id(1)),
            10,
            (9, 30),
            page(&[commit(1, "a", 0), commit(2, "a", 1)], 2),
        ),
    );
    assert!(strong_reads_include_earlier_acknowledgements(&Index::new(&h)).is_empty());
}

#[test]
fn history_checker_rejects_a_watermark_below_a_commit() {
    let is_first = |o: &Op| matches!(&o.kind, Kind::Read(r) if r.session == 2 && r.seq == 0);
    let p = page(&clean_ops_page(), 1);
    let h = with(clean_ops(), is_first, read(2, 0, false, Start::Beginning, 2, (8, 9), p));
    assert!(failing(&h).contains(&'5'), "{:?}", failing(&h));
    // A page that is not full promises everything up to its watermark.
    let p = page(&clean_ops_page(), 3);
    let h = with(clean_ops(), is_first, read(2, 0, false, Start::Beginning, 5, (8, 9), p));
    assert!(failing(&h).contains(&'5'), "{:?}", failing(&h));
}

#[test]
fn history_checker_rejects_a_page_that_changed_or_went_backwards() {
    let is_second = |o: &Op| matches!(&o.kind, Kind::Read(r) if r.session == 2 && r.seq == 1);
    let p = [commit(3, "b", 0), commit(5, "e", 1)];
    let h = with(
        clean_ops(),
        is_second,
        read(2, 1, false, Start::After(id(2)), 10, (31, 32), page(&p, 9)),
    );
    assert!(failing(&h).contains(&'6'), "{:?}", failing(&h));
    let p = [commit(2, "a", 1), commit(3, "b", 0)];
    let h = with(
        clean_ops(),
        is_second,
        read(2, 1, false, Start::After(id(1)), 10, (31, 32), page(&p, 9)),
    );
    let v = pages_never_change(&Index::new(&h));
    assert!(v.iter().any(|v| v.what.contains("not after")), "{v:?}");
    // Requested again, the full page shows something else.
    let mut h = History::new(clean_ops());
    let of = h.reads().find(|(_, r)| r.session == 2).map(|(o, _)| o.id).unwrap();
    let again = page(&[commit(1, "a", 0), commit(3, "b", 0)], 5);
    h.push(op("final", 60, 61, Kind::Reread(Reread { of, outcome: ReadOutcome::Page(again) })));
    assert!(failing(&h).contains(&'6'), "{:?}", failing(&h));
}

#[test]
fn history_checker_rejects_a_tail_that_misses_or_repeats() {
    let is_tail = |o: &Op| matches!(&o.kind, Kind::Tail(t) if t.start == Start::Beginning);
    for ids in [&[1, 2, 4, 5][..], &[1, 2, 2, 3], &[1, 3, 2, 4, 5], &[2, 3]] {
        let h = with(clean_ops(), is_tail, tail(ids, Start::Beginning));
        let v = tails_miss_and_repeat_nothing(&Index::new(&h));
        assert!(!v.is_empty(), "{ids:?} passed");
    }
}

/// Commit `n` of request `req` (index `i`) in stream `key` at `revision`.
fn in_stream(n: u64, req: &str, i: u32, key: &str, revision: u64) -> Commit {
    Commit { key: Some(key.into()), revision: Some(revision), ..commit(n, req, i) }
}

/// A keyed write of `ids` acknowledged with `revisions`, each commit expecting `expected`.
fn stream_write(
    req: &str,
    key: &str,
    ids: &[u64],
    revisions: &[u64],
    expected: &[Option<Expected>],
) -> Op {
    let w = Write {
        req: req.into(),
        attempt: 1,
        shape: Shape::Conditional,
        keys: vec![Some(key.into()); ids.len()],
        expected: expected.to_vec(),
        durability: None,
        idempotency_key: None,
        timeout: None,
        outcome: WriteOutcome::Acked {
            ids: ids.iter().map(|&n| id(n)).collect(),
            revisions: revisions.iter().map(|&r| Some(r)).collect(),
            duplicate: false,
        },
    };
    op("writer", 0, 1, Kind::Write(w))
}

/// Two writes on stream `k`, the second expecting the first's last revision, and the final
/// read of `stored` (revisions as given).
fn stream_history(answered: [u64; 3], stored: [u64; 3], expected: u64) -> History {
    History::new(vec![
        stream_write("s", "k", &[1, 2], &answered[..2], &[None, None]),
        stream_write("t", "k", &[3], &answered[2..], &[Some(Expected::Revision(expected))]),
        final_read(
            &[
                in_stream(1, "s", 0, "k", stored[0]),
                in_stream(2, "s", 1, "k", stored[1]),
                in_stream(3, "t", 0, "k", stored[2]),
            ],
            50,
        ),
    ])
}

#[test]
fn history_checker_accepts_streams_numbered_as_answered() {
    let h = stream_history([0, 1, 2], [0, 1, 2], 1);
    let v = check_all(&h);
    assert!(v.is_empty(), "{}", v.iter().map(|v| v.render(&h)).collect::<Vec<_>>().join("\n"));
}

#[test]
fn history_checker_rejects_a_gap_in_a_stream() {
    let h = stream_history([0, 1, 3], [0, 1, 3], 2);
    assert_eq!(failing(&h), vec!['8'], "a gap at 2");
}

#[test]
fn history_checker_rejects_revisions_other_than_answered_or_expected() {
    assert_eq!(
        failing(&stream_history([0, 1, 1], [0, 1, 2], 1)),
        vec!['9'],
        "answered 1, stored 2"
    );
    assert_eq!(failing(&stream_history([0, 1, 2], [0, 1, 2], 0)), vec!['9'], "expected 0, got 2");
}
