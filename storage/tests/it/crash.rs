//! A real child process appends and is killed with SIGKILL at random moments, again and again
//! on the same directory; after every reopen each batch it reported appended (and synced, in
//! `sync` mode) is readable byte for byte, and no batch is ever half there.

use super::*;
use std::collections::HashMap;
use std::io::BufRead;
use std::process::{Command, Stdio};

const ROUNDS: u64 = 8;
const SHARDS: u32 = 3;

/// (round, batch) → (shard, first id, count), as the child reported them.
type Acked = HashMap<(u64, u64), (usize, Ulid, u64)>;

fn run_round(
    dir: &std::path::Path,
    durability: &str,
    round: u64,
    rng: &mut fastrand::Rng,
    acked: &mut Acked,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_segtool"))
        .args(["crash-writer"])
        .arg(dir)
        .args([SHARDS.to_string(), durability.to_string(), round.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn segtool");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            lines.push(line);
        }
        lines
    });
    std::thread::sleep(std::time::Duration::from_millis(rng.u64(30..400)));
    child.kill().expect("SIGKILL the child");
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed, not finished");
    for line in reader.join().unwrap() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() != 5 {
            continue; // a line cut by the kill was never complete, so never an acknowledgement
        }
        let id = idgen::parse(f[3]).expect("ULID");
        acked.insert(
            (f[0].parse().unwrap(), f[1].parse().unwrap()),
            (f[2].parse().unwrap(), id, f[4].parse().unwrap()),
        );
    }
}

fn check(dir: &std::path::Path, acked: &Acked) {
    let (log, _w) = Log::open(dir, opts(SHARDS)).unwrap();
    let mut seen: HashMap<Ulid, (usize, Vec<u8>)> = HashMap::new();
    let mut batches: HashMap<(u64, u64), (u64, u64)> = HashMap::new(); // → (records seen, n)
    for s in 0..SHARDS as usize {
        for (id, p) in read_all(&log, s) {
            let text = String::from_utf8(p.clone()).unwrap();
            let head = text.split(';').next().unwrap();
            let v: Vec<u64> =
                head.split(' ').map(|kv| kv.split('=').nth(1).unwrap().parse().unwrap()).collect();
            let e = batches.entry((v[0], v[1])).or_insert((0, v[3]));
            e.0 += 1;
            seen.insert(id, (s, p));
        }
    }
    for ((r, b), (got, n)) in &batches {
        assert_eq!(got, n, "batch {b} of round {r} is partial");
    }
    for ((r, b), (shard, first, n)) in acked {
        for i in 0..*n {
            let id = Ulid(first.0 + i as u128);
            let (s, p) = seen
                .get(&id)
                .unwrap_or_else(|| panic!("acknowledged commit {id} (round {r} batch {b}) lost"));
            assert_eq!(s, shard);
            assert!(p.starts_with(format!("r={r} b={b} i={i} n={n};").as_bytes()));
        }
    }
    assert_eq!(log.verify().unwrap(), seen.len() as u64);
}

fn crash_loop(durability: &str, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut acked = Acked::new();
    for round in 0..ROUNDS {
        run_round(dir.path(), durability, round, &mut rng, &mut acked);
        check(dir.path(), &acked);
    }
    assert!(
        acked.len() > 100,
        "the child acknowledged too little to prove anything: {}",
        acked.len()
    );
}

#[test]
fn sigkill_loses_no_acknowledged_batch_sync() {
    crash_loop("sync", 1);
}

#[test]
fn sigkill_loses_no_acknowledged_batch_async() {
    crash_loop("async", 2);
}
