//! The real binary on a loopback port: SIGKILL under concurrent writers loses no acknowledged
//! commit (sync and async), SIGTERM drains and exits 0 with nothing to repair, overload is
//! answered `503` with `Retry-After`.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub child: Child,
    pub addr: String,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    pub fn start(dir: &std::path::Path, extra: &[&str]) -> Server {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr = format!("127.0.0.1:{port}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardlog"))
            .args(["serve", "--listen", &addr, "--data-dir"])
            .arg(dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let sink = std::sync::Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let s = Server { child, addr, stderr };
        let t = Instant::now();
        while request(&s.addr, "GET", "/readyz", None, b"").map(|r| r.0) != Some(200) {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "server never became ready: {}",
                s.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 client: one request per connection. `None` if the server is not there.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Option<(u16, String, Value)> {
    request_with_headers(addr, method, path, content_type, "", body)
}

/// As [`request`], with `extra` header lines (each ending in `\r\n`).
pub fn request_with_headers(
    addr: &str,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    extra: &str,
    body: &[u8],
) -> Option<(u16, String, Value)> {
    let (status, head, body) = request_raw(addr, method, path, content_type, extra, body)?;
    let v = serde_json::from_str(&body).unwrap_or(Value::Null);
    Some((status, head, v))
}

/// As [`request_with_headers`], the body as text (de-chunked): (status, lower-cased head,
/// body).
pub fn request_raw(
    addr: &str,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    extra: &str,
    body: &[u8],
) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let ct = content_type.map(|c| format!("content-type: {c}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{ct}{extra}content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Some((status, head.to_ascii_lowercase(), body))
}

/// The value of an unlabelled family in a scrape of `/metrics`.
pub fn metric(addr: &str, name: &str) -> f64 {
    let (status, _, text) = request_raw(addr, "GET", "/metrics", None, "", b"").unwrap();
    assert_eq!(status, 200);
    super::observability::value(&text, name).unwrap_or_else(|| panic!("{name}"))
}

/// Waits until `name` reads `want`.
pub fn wait_metric(addr: &str, name: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(addr, name) != want {
        assert!(Instant::now() < deadline, "{name} never reached {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client with a 4 KiB receive buffer, so that a stream it stops reading blocks soon.
pub fn connect_small(addr: &str) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType, connect, socket, sockopt};
    let sa: std::net::SocketAddr = addr.parse().unwrap();
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    sockopt::set_socket_recv_buffer_size(&fd, 4096).unwrap();
    connect(&fd, &sa).unwrap();
    TcpStream::from(fd)
}

/// The payload of a `Transfer-Encoding: chunked` body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

fn ndjson(writer: usize, batch: usize, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| format!("{{\"w\":{writer},\"b\":{batch},\"i\":{i}}}\n"))
        .collect::<String>()
        .into_bytes()
}

/// Every commit of `log`, by ID, read shard by shard.
pub fn all_commits(addr: &str, log: &str, shards: u32) -> std::collections::HashMap<String, Value> {
    let mut out = std::collections::HashMap::new();
    for shard in 0..shards {
        let mut after = String::new();
        loop {
            let (s, _, v) = request(
                addr,
                "GET",
                &format!("/v1/logs/{log}/shards/{shard}/commits?limit=10000&after={after}"),
                None,
                b"",
            )
            .unwrap();
            assert_eq!(s, 200, "{v}");
            let page = v["commits"].as_array().unwrap();
            if page.is_empty() {
                break;
            }
            for c in page {
                out.insert(c["id"].as_str().unwrap().to_owned(), c["payload"].clone());
            }
            after = v["next"].as_str().unwrap().to_owned();
        }
    }
    out
}

fn kill_under_load(durability: &str) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--durability", durability, "--default-shards", "4"]);
    let addr = server.addr.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|w| {
            let (addr, stop) = (addr.clone(), std::sync::Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut acked: Vec<(String, Value)> = Vec::new();
                for b in 0..100_000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let body = ndjson(w, b, 50);
                    match request(
                        &addr,
                        "POST",
                        "/v1/logs/crash/commits",
                        Some("application/x-ndjson"),
                        &body,
                    ) {
                        Some((200, _, v)) => {
                            for (i, id) in v["ids"].as_array().unwrap().iter().enumerate() {
                                acked.push((
                                    id.as_str().unwrap().to_owned(),
                                    serde_json::json!({"w": w, "b": b, "i": i}),
                                ));
                            }
                        }
                        _ => break, // killed mid-request: never acknowledged
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    server.signal("-KILL");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked: Vec<(String, Value)> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    assert!(acked.len() > 1000, "too few acknowledged commits to prove anything: {}", acked.len());
    drop(server);
    let server = Server::start(dir.path(), &[]);
    let stored = all_commits(&server.addr, "crash", 4);
    for (id, payload) in &acked {
        assert_eq!(stored.get(id), Some(payload), "acknowledged commit {id} lost or changed");
    }
}

#[test]
fn sigkill_under_concurrent_writers_loses_no_acknowledged_commit_sync() {
    kill_under_load("sync");
}

#[test]
fn sigkill_under_concurrent_writers_loses_no_acknowledged_commit_async() {
    kill_under_load("async");
}

#[test]
fn sigterm_drains_exits_zero_and_the_next_start_needs_no_repair() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let mut ids = Vec::new();
    for b in 0..20 {
        let (s, _, v) = request(
            &server.addr,
            "POST",
            "/v1/logs/t/commits?durability=async",
            Some("application/x-ndjson"),
            &ndjson(0, b, 100),
        )
        .unwrap();
        assert_eq!(s, 200);
        ids.extend(v["ids"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()));
    }
    // Live tails (they stream until told) must not hold the drain open.
    let tails: Vec<TcpStream> = ["", "accept: application/x-ndjson\r\n"]
        .iter()
        .map(|h| {
            let mut s = TcpStream::connect(&server.addr).unwrap();
            write!(s, "GET /v1/logs/t/tail?after=now HTTP/1.1\r\nhost: localhost\r\n{h}\r\n")
                .unwrap();
            s
        })
        .collect();
    wait_metric(&server.addr, "shardlog_tails_active", 2.0);
    server.signal("-TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "SIGTERM did not stop the server with tails open");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?}: {}", server.stderr.lock().unwrap());
    for mut t in tails {
        t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        t.read_to_end(&mut rest).expect("the tail's stream ends");
        assert!(rest.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&rest));
    }
    drop(server);
    let server = Server::start(dir.path(), &[]);
    let stored = all_commits(&server.addr, "t", 4);
    assert!(ids.iter().all(|id| stored.contains_key(id)));
    let log = server.stderr.lock().unwrap().clone();
    assert!(!log.contains("torn tail"), "a clean stop leaves nothing to repair:\n{log}");
}

/// A memory figure of `/proc/PID/status` (`VmHWM`, `RssAnon`, ...), in bytes.
pub fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Peak resident memory of a process so far (VmHWM), in bytes.
fn peak_rss_bytes(pid: u32) -> u64 {
    status_bytes(pid, "VmHWM")
}

#[test]
fn overload_is_answered_503_with_retry_after_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shardlog.toml");
    std::fs::write(&config, "writers = 1\nwriter_queue_depth = 1\ninflight_body_bytes_max = 8388608\nbody_bytes_max = 2097152\n").unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--config", config.to_str().unwrap()]);
    let body = std::sync::Arc::new(ndjson(0, 0, 20_000)); // ~0.5 MB
    let deadline = Instant::now() + Duration::from_secs(4);
    let clients: Vec<_> = (0..24)
        .map(|_| {
            let (addr, body) = (server.addr.clone(), std::sync::Arc::clone(&body));
            std::thread::spawn(move || {
                let (mut ok, mut shed, mut other) = (0, 0, Vec::new());
                while Instant::now() < deadline {
                    match request(
                        &addr,
                        "POST",
                        "/v1/logs/o/commits",
                        Some("application/x-ndjson"),
                        &body,
                    ) {
                        Some((200, _, _)) => ok += 1,
                        Some((503, head, v)) => {
                            assert!(head.contains("retry-after: 1"), "{head}");
                            assert_eq!(v["error"]["code"], "overloaded");
                            shed += 1;
                        }
                        r => other.push(format!("{r:?}")),
                    }
                }
                (ok, shed, other)
            })
        })
        .collect();
    let (mut ok, mut shed) = (0, 0);
    for c in clients {
        let (o, s, other) = c.join().unwrap();
        assert!(other.is_empty(), "unexpected answers: {other:?}");
        ok += o;
        shed += s;
    }
    assert!(ok > 0 && shed > 0, "{ok} accepted, {shed} shed");
    let peak = peak_rss_bytes(server.child.id());
    // 8 MiB of bodies in flight, their parsed copies, one writer's queue, the page cache is not
    // counted: a few tens of MiB. Unbounded buffering of 24 clients would pass this quickly.
    assert!(peak < 256 << 20, "peak RSS {} MiB", peak >> 20);
}

#[test]
fn idempotency_keys_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let server = Server::start(dir.path(), &[]);
        let (s, v) = request_with_key(&server.addr, "k-restart", b"one\ntwo\n");
        assert_eq!(s, 200);
        server.signal("-KILL");
        v
    };
    let server = Server::start(dir.path(), &[]);
    let (s, again) = request_with_key(&server.addr, "k-restart", b"one\ntwo\n");
    assert_eq!(s, 200);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["ids"], first["ids"]);
    assert_eq!(all_commits(&server.addr, "r", 4).len(), 2);
}

fn request_with_key(addr: &str, key: &str, body: &[u8]) -> (u16, Value) {
    let extra = format!("idempotency-key: {key}\r\n");
    let (status, _, v) = request_with_headers(
        addr,
        "POST",
        "/v1/logs/r/commits",
        Some("application/x-ndjson"),
        &extra,
        body,
    )
    .unwrap();
    (status, v)
}

#[test]
fn requests_spanning_shards_are_all_or_nothing_across_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: std::collections::HashSet<String> = Default::default();
    for round in 0..4 {
        let server = Server::start(
            dir.path(),
            &[
                "--default-shards",
                "4",
                "--durability",
                if round % 2 == 0 { "sync" } else { "async" },
            ],
        );
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients: Vec<_> = (0..4)
            .map(|c| {
                let (addr, stop) = (server.addr.clone(), std::sync::Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    for r in 0.. {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        let req = format!("{round}-{c}-{r}");
                        let commits: Vec<String> = (0..8)
                            .map(|i| {
                                format!(
                                    r#"{{"key": "k{i}", "payload": {{"req": "{req}", "i": {i}}}}}"#
                                )
                            })
                            .collect();
                        let body = format!(r#"{{"commits": [{}]}}"#, commits.join(","));
                        match request(
                            &addr,
                            "POST",
                            "/v1/logs/atomic/commits",
                            Some("application/json"),
                            body.as_bytes(),
                        ) {
                            Some((200, _, _)) => acked.push(req),
                            _ => break,
                        }
                    }
                    acked
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300 + 200 * round));
        server.signal("-KILL");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for c in clients {
            acked.extend(c.join().unwrap());
        }
        drop(server);
    }
    assert!(acked.len() > 50, "too few acknowledged requests: {}", acked.len());
    let server = Server::start(dir.path(), &[]);
    let stored = all_commits(&server.addr, "atomic", 4);
    let mut per_req: std::collections::HashMap<String, usize> = Default::default();
    for payload in stored.values() {
        *per_req.entry(payload["req"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    for (req, n) in &per_req {
        assert_eq!(*n, 8, "request {req} is partially visible");
    }
    for req in &acked {
        assert_eq!(per_req.get(req), Some(&8), "acknowledged request {req} lost");
    }
}

struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_answered_507_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a tmpfs needs root (CI runs as root)");
    let _tmpfs = Tmpfs(mnt.clone());
    let config = dir.path().join("small.toml");
    std::fs::write(
        &config,
        "segment_bytes = 262144\ncommit_bytes_max = 65536\ndefault_shards = 1\n",
    )
    .unwrap();
    let server = Server::start(&mnt.join("data"), &["--config", config.to_str().unwrap()]);
    let mut acked = Vec::new();
    let mut full = None;
    for b in 0..10_000 {
        let (s, _, v) = request(
            &server.addr,
            "POST",
            "/v1/logs/full/commits",
            Some("application/x-ndjson"),
            &ndjson(0, b, 200),
        )
        .unwrap();
        if s == 200 {
            acked.extend(
                v["ids"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()),
            );
        } else {
            full = Some((s, v));
            break;
        }
    }
    let (s, v) = full.expect("the 2 MiB disk never filled");
    assert_eq!((s, v["error"]["code"].as_str()), (507, Some("disk_full")), "{v}");
    let stored = all_commits(&server.addr, "full", 1);
    assert!(acked.iter().all(|id| stored.contains_key(id)));
    // The server stays up and answers reads.
    let (s, _, _) = request(&server.addr, "GET", "/v1/logs/full", None, b"").unwrap();
    assert_eq!(s, 200);
}
