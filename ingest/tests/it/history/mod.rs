//! A Jepsen/Elle-style history checker against the real binary: a random, seeded workload of
//! concurrent writers, strong and eventual readers and SSE/NDJSON tails on an 8-shard log while
//! the server is SIGKILLed and restarted every few seconds; every operation is recorded with its
//! invocation and completion time, and after a last restart the history is checked against the
//! contract's Ingest, Read and Tail rules (`check`). A failure prints each violation with the
//! few operations that witness it, and the seed to run it again.
//!
//! Run: `cargo test -p ingest --test it history -- --nocapture`; `SHARDLOG_CHECKER_SEED=<n>`
//! repeats a run's random choices (the server's timing is not repeatable), and
//! `SHARDLOG_CHECKER_SECS=<s>` runs the workload longer than the default 20 s.
//!
//! What it is not: a model checker of arbitrary histories (it checks stated rules, see
//! `check`), nor a load test: the clients are few and pause, so that kills, not saturation,
//! make the interesting cases. Everything runs on 127.0.0.1.

mod check;
mod clients;
mod ops;
mod readers;
mod tails;

use crate::process::{Server, request};
use clients::Shared;
use ops::{History, Kind, Op, ReadOutcome, Reread, Start, WriteOutcome};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const LOG: &str = "history";
/// Workload length without `SHARDLOG_CHECKER_SECS`: with 3–4 kills and the final checks the
/// test takes about half a minute on two cores.
const WORKLOAD_SECS_DEFAULT: u64 = 20;
/// Recorded pages requested again after the last restart.
const REREADS_MAX: usize = 300;
/// Violations the failure message shows in full.
const SHOWN_MAX: usize = 10;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

#[test]
fn history_of_a_killed_server_keeps_the_contract() {
    let seed = env_u64("SHARDLOG_CHECKER_SEED").unwrap_or_else(|| fastrand::u64(..));
    let secs = env_u64("SHARDLOG_CHECKER_SECS").unwrap_or(WORKLOAD_SECS_DEFAULT);
    println!("history checker: seed {seed} (SHARDLOG_CHECKER_SEED={seed} repeats it), {secs} s");
    let h = run(seed, secs);
    let checking = Instant::now();
    let violations = check::check_all(&h);
    println!("{} (checked in {:.1} s)", summary(&h, &violations), checking.elapsed().as_secs_f64());
    for v in &violations {
        println!("{}\n", v.render(&h));
    }
    if !violations.is_empty() {
        let shown: Vec<String> = sample(&violations).iter().map(|v| v.render(&h)).collect();
        panic!(
            "{} contract violations (seed {seed}), {} of them (the first of each check in turn):\n\n{}",
            violations.len(),
            shown.len(),
            shown.join("\n\n")
        );
    }
}

/// At most `SHOWN_MAX` violations, taking the first of each check in turn, so that every broken
/// rule is shown.
fn sample(violations: &[check::Violation]) -> Vec<&check::Violation> {
    let mut by_check: BTreeMap<&str, std::collections::VecDeque<&check::Violation>> =
        BTreeMap::new();
    for v in violations {
        by_check.entry(v.check).or_default().push_back(v);
    }
    let mut out = Vec::new();
    while out.len() < SHOWN_MAX && by_check.values().any(|q| !q.is_empty()) {
        for q in by_check.values_mut() {
            if out.len() < SHOWN_MAX
                && let Some(v) = q.pop_front()
            {
                out.push(v);
            }
        }
    }
    out.sort_by_key(|v| v.check);
    out
}

/// Runs the workload for `secs` seconds with kills, restarts once more, reads the final
/// timeline and re-requests a sample of the pages: the whole history.
fn run(seed: u64, secs: u64) -> History {
    let dir = tempfile::tempdir().unwrap();
    let durability = if seed.is_multiple_of(2) { "sync" } else { "async" };
    let flags: Vec<String> =
        ["--default-shards", "8", "--durability", durability].map(String::from).to_vec();
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::start(dir.path(), &flag_refs);
    let (s, _, v) = request(
        &server.addr,
        "PUT",
        &format!("/v1/logs/{LOG}"),
        Some("application/json"),
        br#"{"shards": 8}"#,
    )
    .unwrap();
    assert_eq!(s, 201, "creating the log: {v}");

    let started = Instant::now();
    let workload_end = started + Duration::from_secs(secs);
    let hard_deadline = workload_end + Duration::from_secs(20);
    let sh = Arc::new(Shared::new(LOG, server.addr.clone(), started, hard_deadline));
    let seeded = move |k: u64| seed.wrapping_add(k.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut workers: Vec<std::thread::JoinHandle<Vec<Op>>> = Vec::new();
    let mut spawn = |f: Box<dyn FnOnce() -> Vec<Op> + Send>| workers.push(std::thread::spawn(f));
    for w in 0..4u64 {
        let sh = Arc::clone(&sh);
        spawn(Box::new(move || clients::writer(sh, format!("w{w}"), seeded(w + 1))));
    }
    for r in 0..2u64 {
        let sh = Arc::clone(&sh);
        spawn(Box::new(move || readers::strong_reader(sh, format!("s{r}"), seeded(r + 10))));
    }
    {
        let sh = Arc::clone(&sh);
        spawn(Box::new(move || readers::eventual_reader(sh, "e0".into(), seeded(20))));
    }
    for (name, sse, late) in [("sse0", true, false), ("sse1", true, true), ("nd0", false, true)] {
        let sh = Arc::clone(&sh);
        spawn(Box::new(move || {
            let mut rng = fastrand::Rng::with_seed(seeded(30));
            // A late tail starts after some commit of the first second, by cursor.
            let start = if late {
                std::thread::sleep(Duration::from_millis(1000));
                sh.recent(&mut rng).map_or(Start::Beginning, Start::After)
            } else {
                Start::Beginning
            };
            tails::tail(sh, name.into(), sse, start)
        }));
    }
    let killer = {
        let (sh, dir, flags) = (Arc::clone(&sh), dir.path().to_owned(), flags.clone());
        std::thread::spawn(move || {
            clients::killer(sh, server, dir, flags, workload_end, seeded(40))
        })
    };
    let (server, mut ops) = killer.join().expect("the killer");
    std::thread::sleep(workload_end.saturating_duration_since(Instant::now()));
    sh.stop.store(true, Ordering::Relaxed);
    for w in workers {
        ops.extend(w.join().expect("a client thread"));
    }

    let (kill, server) = clients::kill_and_restart(&sh, server, dir.path(), &flags, "final");
    ops.push(kill);
    ops.push(readers::final_read(&sh));
    let mut h = History::new(ops);
    reread_sample(&sh, &mut h, seeded(50));
    drop(server);
    h
}

/// Requests a random sample of the recorded pages again, the same way.
fn reread_sample(sh: &Shared, h: &mut History, seed: u64) {
    let mut pages: Vec<(usize, String)> = h
        .reads()
        .filter(|(_, r)| r.page().is_some_and(|p| !p.commits.is_empty()))
        .map(|(o, r)| (o.id, r.path.clone()))
        .collect();
    fastrand::Rng::with_seed(seed).shuffle(&mut pages);
    for (of, path) in pages.into_iter().take(REREADS_MAX) {
        let invoke = sh.now_ns();
        let outcome = readers::fetch_page(&sh.addr(), &path);
        let kind = Kind::Reread(Reread { of, outcome });
        h.push(Op {
            id: 0,
            process: "final".into(),
            invoke_ns: invoke,
            complete_ns: sh.now_ns(),
            kind,
        });
    }
}

/// The run's figures: operations, requests by outcome, commits, pages, tail events, kills and
/// violations by check.
fn summary(h: &History, violations: &[check::Violation]) -> String {
    let mut attempts: BTreeMap<String, usize> = BTreeMap::new();
    let mut reqs: BTreeMap<&str, &'static str> = BTreeMap::new();
    for (_, w) in h.writes() {
        let (label, rank) = match &w.outcome {
            WriteOutcome::Acked { duplicate: true, .. } => {
                ("200 duplicate".to_owned(), "acknowledged")
            }
            WriteOutcome::Acked { .. } => ("200".to_owned(), "acknowledged"),
            WriteOutcome::Refused { status, code } => (format!("{status} {code}"), "refused"),
            WriteOutcome::Unknown { status: Some(s), .. } => (format!("{s} unknown"), "unknown"),
            WriteOutcome::Unknown { .. } => ("connection error".to_owned(), "unknown"),
        };
        *attempts.entry(label).or_default() += 1;
        let r = reqs.entry(w.req.as_str()).or_insert(rank);
        if rank == "acknowledged" || (rank == "unknown" && *r == "refused") {
            *r = rank;
        }
    }
    // How requests whose first attempt's outcome was unknown ended after their retries.
    let mut by_req: BTreeMap<&str, Vec<&WriteOutcome>> = BTreeMap::new();
    for (_, w) in h.writes() {
        by_req.entry(w.req.as_str()).or_default().push(&w.outcome);
    }
    let mut resolved: BTreeMap<&str, usize> = BTreeMap::new();
    for outcomes in by_req.values().filter(|o| o.len() > 1) {
        if !matches!(outcomes[0], WriteOutcome::Unknown { .. }) {
            continue;
        }
        let end = match outcomes.last() {
            Some(WriteOutcome::Acked { duplicate: true, .. }) => "replayed (duplicate: true)",
            Some(WriteOutcome::Acked { .. }) => "written by the retry",
            _ => "still unknown",
        };
        *resolved.entry(end).or_default() += 1;
    }
    let mut by_end: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reqs.values() {
        *by_end.entry(r).or_default() += 1;
    }
    let (mut strong, mut eventual, mut failed) = (0, 0, 0);
    for (_, r) in h.reads() {
        match (&r.outcome, r.strong) {
            (ReadOutcome::Failed(_), _) => failed += 1,
            (_, true) => strong += 1,
            (_, false) => eventual += 1,
        }
    }
    let rereads = h.rereads().count();
    let (mut events, mut connects, mut fields) = (0, 0, HashSet::new());
    for (_, t) in h.tails() {
        events += t.events.len();
        connects += t.connects.len();
        fields.extend(t.event_fields.iter().cloned());
    }
    let commits = h.final_read().map_or(0, |(_, f)| f.commits.len());
    let restarts: Vec<f64> =
        h.kills().map(|k| (k.complete_ns - k.invoke_ns) as f64 / 1e9).collect();
    let slowest = restarts.iter().copied().fold(0.0, f64::max);
    let mut per_check: BTreeMap<&str, usize> = BTreeMap::new();
    for v in violations {
        *per_check.entry(v.check).or_default() += 1;
    }
    format!(
        "history summary: {} operations; {} requests ({by_end:?}) in {} attempts {attempts:?}; \
         retried after an unknown outcome: {resolved:?}; \
         {commits} commits in the final timeline; pages: {strong} strong, {eventual} eventual, \
         {failed} failed reads, {rereads} re-requested; {} tails: {events} events over {connects} \
         connections (SSE event fields seen: {fields:?}); {} kills survived (the last before the \
         final read; the slowest kill and restart took {slowest:.1} s); violations: {} {per_check:?}",
        h.ops.len(),
        reqs.len(),
        h.writes().count(),
        h.tails().count(),
        h.kills().count(),
        violations.len(),
    )
}
