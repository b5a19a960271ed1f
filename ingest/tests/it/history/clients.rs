//! The workload's clients, each a thread recording its own operations: writers (unkeyed NDJSON,
//! cross-shard and single-key JSON, conditional JSON on a few hot streams, sync and async, with and without `Idempotency-Key`, retried
//! with the same key after a `504` or a connection error) and the killer that SIGKILLs and
//! restarts the server. Timeline readers are in `readers`, tails in `tails`.
//!
//! What it is not: a judge. Clients record what they sent and what came back, including
//! failures, and never assert anything about the answers. Every loop is bounded in count and
//! by the run's deadline; everything talks to 127.0.0.1 only.

use super::ops::{Expected, Kill, Kind, Op, Shape, Write, WriteOutcome};
use crate::process::{Server, request_raw};
use fastrand::Rng;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Streams conditional writes pick from (few, so that clients race on them).
const HOT_STREAMS: usize = 6;
/// Requests one writer sends at most.
const WRITES_MAX: u32 = 200_000;
/// Attempts of one request with an `Idempotency-Key`.
const ATTEMPTS_MAX: u32 = 6;
/// First ids of acknowledged writes kept for readers and tails to start from.
const RECENT_MAX: usize = 512;

/// What every client shares: the server's current address (it changes at every restart), the
/// run's clock and its stop flag.
#[derive(Debug)]
pub struct Shared {
    pub log: String,
    pub addr: RwLock<String>,
    pub started: Instant,
    /// Set when the workload ends: clients finish what they are doing and return.
    pub stop: AtomicBool,
    /// No client sends anything after this, whatever it is doing.
    pub hard_deadline: Instant,
    /// First ids of recent acknowledged writes.
    recent: Mutex<VecDeque<String>>,
    sessions: AtomicU64,
    /// The highest revision an answer showed of each stream.
    revisions: Mutex<HashMap<String, u64>>,
}

impl Shared {
    pub fn new(log: &str, addr: String, started: Instant, hard_deadline: Instant) -> Shared {
        Shared {
            log: log.to_owned(),
            addr: RwLock::new(addr),
            started,
            stop: AtomicBool::new(false),
            hard_deadline,
            recent: Mutex::new(VecDeque::new()),
            sessions: AtomicU64::new(0),
            revisions: Mutex::new(HashMap::new()),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    pub fn addr(&self) -> String {
        self.addr.read().unwrap().clone()
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || Instant::now() >= self.hard_deadline
    }

    pub fn past_deadline(&self) -> bool {
        Instant::now() >= self.hard_deadline
    }

    pub fn session(&self) -> u64 {
        self.sessions.fetch_add(1, Ordering::Relaxed)
    }

    fn remember(&self, id: &str) {
        let mut r = self.recent.lock().unwrap();
        if r.len() == RECENT_MAX {
            r.pop_front();
        }
        r.push_back(id.to_owned());
    }

    fn saw_revisions(&self, keys: &[Option<String>], revisions: &[Option<u64>]) {
        let mut known = self.revisions.lock().unwrap();
        for (k, r) in keys.iter().zip(revisions) {
            if let (Some(k), Some(r)) = (k, r) {
                let e = known.entry(k.clone()).or_insert(*r);
                *e = (*e).max(*r);
            }
        }
    }

    /// The highest revision seen of stream `key`.
    fn known_revision(&self, key: &str) -> Option<u64> {
        self.revisions.lock().unwrap().get(key).copied()
    }

    /// A recent acknowledged id, if any.
    pub fn recent(&self, rng: &mut Rng) -> Option<String> {
        let r = self.recent.lock().unwrap();
        (!r.is_empty()).then(|| r[rng.usize(..r.len())].clone())
    }

    /// An operation of `process` invoked at `invoke_ns` and completed now.
    pub fn op(&self, process: &str, invoke_ns: u64, kind: Kind) -> Op {
        Op { id: 0, process: process.to_owned(), invoke_ns, complete_ns: self.now_ns(), kind }
    }
}

/// A request body and what it holds.
struct Body {
    shape: Shape,
    keys: Vec<Option<String>>,
    expected: Vec<Option<Expected>>,
    content_type: &'static str,
    bytes: Vec<u8>,
}

/// A random request tagged `req`: unkeyed NDJSON, cross-shard keyed JSON, single-key JSON or
/// conditional JSON on hot streams.
fn body(sh: &Shared, req: &str, rng: &mut Rng) -> Body {
    let payload = |i: usize| format!(r#"{{"t":"{req}","i":{i},"pad":"{}"}}"#, "x".repeat(i % 7));
    match rng.u8(..12) {
        10.. => {
            let mut pool: Vec<usize> = (0..HOT_STREAMS).collect();
            rng.shuffle(&mut pool);
            let keys: Vec<String> =
                pool[..rng.usize(1..=3)].iter().map(|k| format!("hot{k}")).collect();
            let expected: Vec<Expected> = keys
                .iter()
                .map(|k| sh.known_revision(k).map_or(Expected::NoStream, Expected::Revision))
                .collect();
            let commits: Vec<String> = keys
                .iter()
                .zip(&expected)
                .enumerate()
                .map(|(i, (k, e))| {
                    let e = match e {
                        Expected::NoStream => "\"no_stream\"".to_owned(),
                        Expected::Revision(r) => r.to_string(),
                    };
                    format!(r#"{{"key":"{k}","payload":{},"expected_revision":{e}}}"#, payload(i))
                })
                .collect();
            Body {
                shape: Shape::Conditional,
                keys: keys.into_iter().map(Some).collect(),
                expected: expected.into_iter().map(Some).collect(),
                content_type: "application/json",
                bytes: format!(r#"{{"commits":[{}]}}"#, commits.join(",")).into_bytes(),
            }
        }
        0..4 => {
            let n = rng.usize(1..=20);
            let lines: String = (0..n).map(|i| payload(i) + "\n").collect();
            Body {
                shape: Shape::Unkeyed,
                keys: vec![None; n],
                expected: vec![None; n],
                content_type: "application/x-ndjson",
                bytes: lines.into_bytes(),
            }
        }
        n => {
            let (shape, keys) = if n < 8 {
                let mut pool: Vec<usize> = (0..64).collect();
                rng.shuffle(&mut pool);
                let keys: Vec<String> =
                    pool[..rng.usize(2..=8)].iter().map(|k| format!("k{k}")).collect();
                (Shape::CrossShard, keys)
            } else {
                let k = format!("k{}", rng.usize(..64));
                (Shape::SingleKey, vec![k; rng.usize(1..=5)])
            };
            let commits: Vec<String> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| format!(r#"{{"key":"{k}","payload":{}}}"#, payload(i)))
                .collect();
            Body {
                shape,
                expected: vec![None; keys.len()],
                keys: keys.into_iter().map(Some).collect(),
                content_type: "application/json",
                bytes: format!(r#"{{"commits":[{}]}}"#, commits.join(",")).into_bytes(),
            }
        }
    }
}

/// How one request is sent.
struct Send<'a> {
    req: &'a str,
    body: &'a Body,
    durability: Option<&'static str>,
    idempotency_key: Option<String>,
    /// `?timeout=` of the first attempt (retries wait as long as the server's default).
    timeout: Option<&'static str>,
}

/// One attempt of a write.
fn attempt(sh: &Shared, process: &str, s: &Send<'_>, n: u32) -> Op {
    let timeout = if n == 1 { s.timeout } else { None };
    let mut query = Vec::new();
    if let Some(d) = s.durability {
        query.push(format!("durability={d}"));
    }
    if let Some(t) = timeout {
        query.push(format!("timeout={t}"));
    }
    let path = format!("/v1/logs/{}/commits?{}", sh.log, query.join("&"));
    let extra =
        s.idempotency_key.as_ref().map(|k| format!("idempotency-key: {k}\r\n")).unwrap_or_default();
    let invoke = sh.now_ns();
    let answer =
        request_raw(&sh.addr(), "POST", &path, Some(s.body.content_type), &extra, &s.body.bytes);
    let outcome = match answer {
        None => WriteOutcome::Unknown { status: None, why: "connection error".into() },
        Some((status, _, text)) => {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            match status {
                200 => match v["ids"].as_array() {
                    Some(ids) => WriteOutcome::Acked {
                        ids: ids.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect(),
                        revisions: v["revisions"]
                            .as_array()
                            .map(|r| r.iter().map(Value::as_u64).collect())
                            .unwrap_or_default(),
                        duplicate: v["duplicate"] == Value::Bool(true),
                    },
                    // A 200 whose body did not arrive whole: the outcome is not known.
                    None => WriteOutcome::Unknown {
                        status: Some(200),
                        why: format!("unreadable body {text:?}"),
                    },
                },
                504 => WriteOutcome::Unknown { status: Some(504), why: "deadline".into() },
                _ => WriteOutcome::Refused {
                    status,
                    code: v["error"]["code"].as_str().unwrap_or("<no code>").to_owned(),
                },
            }
        }
    };
    if let WriteOutcome::Acked { ids, revisions, .. } = &outcome {
        if let Some(first) = ids.first() {
            sh.remember(first);
        }
        sh.saw_revisions(&s.body.keys, revisions);
    }
    let w = Write {
        req: s.req.to_owned(),
        attempt: n,
        shape: s.body.shape,
        keys: s.body.keys.clone(),
        expected: s.body.expected.clone(),
        durability: s.durability,
        idempotency_key: s.idempotency_key.clone(),
        timeout,
        outcome,
    };
    sh.op(process, invoke, Kind::Write(w))
}

/// Sends one request and, when it has an `Idempotency-Key` and its outcome is unknown (or it
/// was shed with 503/429), retries it with the same key and body. Answers every attempt and the
/// ids of the acknowledged one.
fn write_request(sh: &Shared, process: &str, s: &Send<'_>) -> (Vec<Op>, Option<Vec<String>>) {
    let mut ops = Vec::new();
    for n in 1..=ATTEMPTS_MAX {
        if sh.past_deadline() {
            break;
        }
        let op = attempt(sh, process, s, n);
        let Kind::Write(w) = &op.kind else { unreachable!("attempt records a write") };
        let (retry, pause_ms) = match &w.outcome {
            WriteOutcome::Acked { ids, .. } => {
                let ids = ids.clone();
                ops.push(op);
                return (ops, Some(ids));
            }
            WriteOutcome::Refused { status: 429 | 503, .. } => (true, 50),
            WriteOutcome::Refused { .. } => (false, 0),
            WriteOutcome::Unknown { status: None, .. } => {
                wait_for_server(sh);
                (true, 0)
            }
            WriteOutcome::Unknown { .. } => (true, 10),
        };
        ops.push(op);
        if !retry || s.idempotency_key.is_none() {
            break;
        }
        std::thread::sleep(Duration::from_millis(pause_ms));
    }
    (ops, None)
}

/// Waits until the server (its current address) accepts connections, after a connection error:
/// it is being restarted, and a client spinning on its old address would only record noise.
pub fn wait_for_server(sh: &Shared) {
    while !sh.past_deadline() && std::net::TcpStream::connect(sh.addr()).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How request `req` is sent: a random durability (or the server's default), an
/// `Idempotency-Key` two times in three and, with `timeouts`, a small `?timeout=` one time in five.
fn random_send<'a>(
    seed: u64,
    req: &'a str,
    body: &'a Body,
    rng: &mut Rng,
    timeouts: bool,
) -> Send<'a> {
    let durability = [None, Some("sync"), Some("async")][rng.usize(..3)];
    let idempotency_key = (rng.u8(..3) != 0).then(|| format!("{seed:x}-{req}"));
    let timeout = (timeouts && rng.u8(..5) == 0).then(|| ["1ms", "3ms", "10ms"][rng.usize(..3)]);
    Send { req, body, durability, idempotency_key, timeout }
}

/// One random request of `who` numbered `r`, with its retries: every attempt, and the ids of
/// the acknowledged one.
pub fn random_write(
    sh: &Shared,
    who: &str,
    r: u32,
    seed: u64,
    rng: &mut Rng,
    timeouts: bool,
) -> (Vec<Op>, Option<Vec<String>>) {
    let req = format!("{who}.{r}");
    let body = body(sh, &req, rng);
    let s = random_send(seed, &req, &body, rng, timeouts);
    write_request(sh, who, &s)
}

/// A writer: requests of every shape until the workload stops.
pub fn writer(sh: Arc<Shared>, who: String, seed: u64) -> Vec<Op> {
    let mut rng = Rng::with_seed(seed);
    let mut ops = Vec::new();
    for r in 0..WRITES_MAX {
        if sh.stopping() {
            break;
        }
        let (attempts, _) = random_write(&sh, &who, r, seed, &mut rng, true);
        let lost = attempts.last().is_some_and(|o| {
            matches!(&o.kind, Kind::Write(w) if matches!(w.outcome, WriteOutcome::Unknown { status: None, .. }))
        });
        ops.extend(attempts);
        if lost {
            wait_for_server(&sh);
        }
        std::thread::sleep(Duration::from_micros(rng.u64(0..3000)));
    }
    ops
}

/// The killer: every few seconds until `until`, SIGKILL the server and restart it on the same
/// data directory, publishing the new address. Answers the running server and its kills.
pub fn killer(
    sh: Arc<Shared>,
    mut server: Server,
    dir: std::path::PathBuf,
    flags: Vec<String>,
    until: Instant,
    seed: u64,
) -> (Server, Vec<Op>) {
    let mut rng = Rng::with_seed(seed);
    let mut ops = Vec::new();
    loop {
        let at = Instant::now() + Duration::from_millis(rng.u64(3000..5000));
        if at >= until {
            break;
        }
        std::thread::sleep(at - Instant::now());
        let (op, s) = kill_and_restart(&sh, server, &dir, &flags, "killer");
        server = s;
        ops.push(op);
    }
    (server, ops)
}

/// SIGKILLs `server`, starts a new one on `dir` and publishes its address.
pub fn kill_and_restart(
    sh: &Shared,
    server: Server,
    dir: &std::path::Path,
    flags: &[String],
    process: &str,
) -> (Op, Server) {
    let invoke = sh.now_ns();
    let old_addr = server.addr.clone();
    server.signal("-KILL");
    drop(server);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = Server::start(dir, &flags);
    *sh.addr.write().unwrap() = server.addr.clone();
    let kill = Kill { old_addr, new_addr: server.addr.clone() };
    (sh.op(process, invoke, Kind::Kill(kill)), server)
}
