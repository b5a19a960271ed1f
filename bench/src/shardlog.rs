//! shardlog as a system under test: a minimal HTTP/1.1 client over hyper (one connection per
//! task, keep-alive), the write workload's bodies, the read workloads (timeline pages, an NDJSON
//! range, a tail), and starting a server of our own for `compare`.
//!
//! What it is not: an SDK. Bodies are built once per connection and resent.

use crate::run::{Conn, Latency, Report};
use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Body formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Ndjson,
    Json,
}

/// What each write request carries.
#[derive(Debug, Clone)]
pub struct WriteSpec {
    pub addr: String,
    /// Connection `i` writes log `{log_prefix}{i % logs}`.
    pub log_prefix: String,
    pub logs: usize,
    pub batch: usize,
    pub commit_bytes: usize,
    pub format: Format,
    pub durability: String,
    pub keyed: bool,
}

/// A keep-alive HTTP/1.1 connection.
pub struct Http {
    send: SendRequest<Full<Bytes>>,
    host: String,
}

impl Http {
    /// Connects to `addr` (`host:port`).
    pub async fn connect(addr: &str) -> anyhow::Result<Http> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        let (send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Http { send, host: addr.to_owned() })
    }

    /// Sends a request; the answer once its head has arrived (the body still to be read).
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        let mut b = hyper::Request::builder().method(method).uri(path).header("host", &self.host);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(body)).map_err(|e| format!("request: {e}"))?;
        self.send.ready().await.map_err(|_| "io".to_owned())?;
        self.send.send_request(req).await.map_err(|_| "io".to_owned())
    }

    /// Sends a request and reads the whole answer: (status, body).
    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(u16, Bytes), String> {
        let resp = self.send(method, path, headers, body).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|_| "io".to_owned())?.to_bytes();
        Ok((status, body))
    }
}

/// The body of one write request: `batch` commits of `commit_bytes` each (the NDJSON line, or
/// the JSON payload string, is padded to that size).
pub fn write_body(spec: &WriteSpec, conn: usize) -> Bytes {
    let mut out = String::with_capacity(spec.batch * (spec.commit_bytes + 40));
    if spec.format == Format::Json {
        out.push_str("{\"commits\":[");
    }
    for i in 0..spec.batch {
        let key = if spec.keyed {
            format!("\"key\":\"k{}\",", (conn * 31 + i) % 64)
        } else {
            String::new()
        };
        match spec.format {
            Format::Ndjson => {
                let head = format!("{{{key}\"c\":{conn},\"i\":{i},\"p\":\"");
                let pad = spec.commit_bytes.saturating_sub(head.len() + 3).max(1);
                out.push_str(&head);
                out.extend(std::iter::repeat_n('x', pad));
                out.push_str("\"}\n");
            }
            Format::Json => {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&format!("{{{key}\"payload\":\""));
                out.extend(std::iter::repeat_n('x', spec.commit_bytes.max(1)));
                out.push_str("\"}");
            }
        }
    }
    if spec.format == Format::Json {
        out.push_str("]}");
    }
    Bytes::from(out)
}

/// One connection writing `body` to one log.
pub struct Writer {
    http: Http,
    path: String,
    content_type: &'static str,
    body: Bytes,
    batch: u64,
}

impl Writer {
    /// Connection `i` of a write workload.
    pub async fn new(spec: &WriteSpec, i: usize) -> anyhow::Result<Writer> {
        Ok(Writer {
            http: Http::connect(&spec.addr).await?,
            path: format!(
                "/v1/logs/{}{}/commits?durability={}&ids=false",
                spec.log_prefix,
                i % spec.logs.max(1),
                spec.durability
            ),
            content_type: match spec.format {
                Format::Ndjson => "application/x-ndjson",
                Format::Json => "application/json",
            },
            body: write_body(spec, i),
            batch: spec.batch as u64,
        })
    }
}

impl Conn for Writer {
    async fn batch(&mut self) -> Result<u64, String> {
        let (status, _) = self
            .http
            .call("POST", &self.path, &[("content-type", self.content_type)], self.body.clone())
            .await?;
        if status == 200 { Ok(self.batch) } else { Err(format!("http {status}")) }
    }
}

/// Reads the timeline of `log` from its start in pages of `limit` (following `next`), as JSON or
/// NDJSON, with eventual consistency, until its end or for `duration`. Reports commits/s;
/// latency is per page, request to last byte.
///
/// NDJSON pages are pipelined over `PAGES_IN_FLIGHT` connections: the next page is asked for
/// as soon as a page's head (with `x-shardlog-next`) arrives, so the server merges it while
/// bodies before it are still sent. A JSON page's `next` is in its body: one page at a time.
pub async fn read_timeline(
    addr: &str,
    log: &str,
    limit: usize,
    ndjson: bool,
    duration: Duration,
) -> anyhow::Result<Report> {
    // One reader is one stream of pages: on a runtime of its own, on one thread, its
    // connections and the reading task never wake each other across threads (on the
    // multi-threaded runtime that took 65 futex calls a page, CPU the server on the same
    // machine did not get).
    let (addr, log) = (addr.to_owned(), log.to_owned());
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(read_timeline_on_this_thread(&addr, &log, limit, ndjson, duration))
    })
    .await?
}

/// NDJSON pages in flight at once: one connection each.
const PAGES_IN_FLIGHT: usize = 3;

async fn read_timeline_on_this_thread(
    addr: &str,
    log: &str,
    limit: usize,
    ndjson: bool,
    duration: Duration,
) -> anyhow::Result<Report> {
    let start = Instant::now();
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let (mut commits, mut bytes, mut pages) = (0u64, 0u64, 0u64);
    let accept = if ndjson { "application/x-ndjson" } else { "application/json" };
    let page = |after: Option<&str>| {
        let mut path = format!("/v1/logs/{log}/timeline?consistency=eventual&limit={limit}");
        if let Some(a) = after {
            path.push_str("&after=");
            path.push_str(a);
        }
        path
    };
    let mut after: Option<String> = None;
    if ndjson {
        // The chain of heads is the only order between pages: each page is asked for as soon
        // as the head before it arrives, and bodies are read by tasks of their own (this
        // runtime's one thread), up to `PAGES_IN_FLIGHT` connections.
        let mut free = Vec::new();
        for _ in 0..PAGES_IN_FLIGHT {
            free.push(Http::connect(addr).await?);
        }
        let mut reading = std::collections::VecDeque::new();
        loop {
            let mut conn = match free.pop() {
                Some(c) => c,
                None => {
                    let task: tokio::task::JoinHandle<anyhow::Result<_>> =
                        reading.pop_front().expect("a connection is busy");
                    let (c, n, len, took): (Http, u64, u64, Duration) = task.await??;
                    (commits, bytes, pages) = (commits + n, bytes + len, pages + 1);
                    let _ = hist.record(took.as_micros().max(1) as u64);
                    c
                }
            };
            let asked = Instant::now();
            let r = conn
                .send("GET", &page(after.as_deref()), &[("accept", accept)], Bytes::new())
                .await
                .map_err(anyhow::Error::msg)?;
            let status = r.status().as_u16();
            let next = r.headers().get("x-shardlog-next").and_then(|v| v.to_str().ok());
            after = next.map(str::to_owned);
            reading.push_back(tokio::spawn(async move {
                let mut body = r.into_body();
                let (mut whole, mut len, mut lines) = (Vec::new(), 0u64, 0u64);
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(|e| anyhow::anyhow!("reading a page: {e}"))?;
                    if let Some(data) = frame.data_ref() {
                        len += data.len() as u64;
                        lines += memchr::memchr_iter(b'\n', data).count() as u64;
                        if status != 200 {
                            whole.extend_from_slice(data);
                        }
                    }
                }
                if status != 200 {
                    bail!("timeline read answered {status}: {}", String::from_utf8_lossy(&whole));
                }
                Ok((conn, lines, len, asked.elapsed()))
            }));
            // An empty page has no `next`: the reader is at the watermark.
            if after.is_none() || start.elapsed() >= duration {
                break;
            }
        }
        for task in reading {
            let (_, n, len, took) = task.await??;
            (commits, bytes, pages) = (commits + n, bytes + len, pages + 1);
            let _ = hist.record(took.as_micros().max(1) as u64);
        }
    } else {
        let mut conn = Http::connect(addr).await?;
        loop {
            let asked = Instant::now();
            let (status, body) = conn
                .call("GET", &page(after.as_deref()), &[("accept", accept)], Bytes::new())
                .await
                .map_err(anyhow::Error::msg)?;
            if status != 200 {
                bail!("timeline read answered {status}: {}", String::from_utf8_lossy(&body));
            }
            let _ = hist.record(asked.elapsed().as_micros().max(1) as u64);
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            let n = v["commits"].as_array().map_or(0, Vec::len) as u64;
            (commits, bytes, pages) = (commits + n, bytes + body.len() as u64, pages + 1);
            after = v["next"].as_str().map(str::to_owned);
            if n < limit as u64 || after.is_none() || start.elapsed() >= duration {
                break;
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let q = |p: f64| hist.value_at_quantile(p);
    Ok(Report {
        system: "shardlog".into(),
        workload: format!(
            "timeline read ({}, pages of {limit})",
            if ndjson { "NDJSON, pipelined" } else { "JSON" }
        ),
        commits,
        batches: pages,
        seconds,
        commits_per_s: commits as f64 / seconds,
        mb_per_s: bytes as f64 / seconds / 1e6,
        latency: Latency {
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: hist.max(),
        },
        errors: Default::default(),
    })
}

/// Tails `log` as NDJSON, from its beginning or (`from_now`) from the watermark, for `duration`
/// (or until `commits_max` arrived): commits/s delivered.
pub async fn tail(
    addr: &str,
    log: &str,
    duration: Duration,
    commits_max: u64,
    from_now: bool,
) -> anyhow::Result<Report> {
    let mut http = Http::connect(addr).await?;
    let query = if from_now { "?after=now" } else { "" };
    let path = format!("/v1/logs/{log}/tail{query}");
    let resp = http
        .send("GET", &path, &[("accept", "application/x-ndjson")], Bytes::new())
        .await
        .map_err(anyhow::Error::msg)?;
    if resp.status() != 200 {
        bail!("tail answered {}", resp.status());
    }
    let mut body = resp.into_body();
    let start = Instant::now();
    let (mut lines, mut bytes) = (0u64, 0u64);
    // A commit is one '\n'-ended line of the (de-chunked) body.
    while start.elapsed() < duration && lines < commits_max {
        let left = duration.saturating_sub(start.elapsed());
        let Ok(frame) = tokio::time::timeout(left, body.frame()).await else { break };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| anyhow::anyhow!("reading the tail: {e}"))?;
        if let Some(data) = frame.data_ref() {
            bytes += data.len() as u64;
            lines += memchr::memchr_iter(b'\n', data).count() as u64;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(Report {
        system: "shardlog".into(),
        workload: format!("tail (NDJSON, from {})", if from_now { "now" } else { "the start" }),
        commits: lines,
        batches: 0,
        seconds,
        commits_per_s: lines as f64 / seconds,
        mb_per_s: bytes as f64 / seconds / 1e6,
        latency: Latency::default(),
        errors: Default::default(),
    })
}

/// A shardlog server we started, on a loopback port with its own data directory.
pub struct Server {
    child: std::process::Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `shardlog` binary next to this one (same target directory), built with cargo if absent.
pub fn binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let dir = me.parent().context("exe dir")?;
    // Tests run from target/<profile>/deps.
    for d in [dir, dir.parent().unwrap_or(dir)] {
        let p = d.join("shardlog");
        if p.exists() {
            return Ok(p);
        }
    }
    let release = dir.ends_with("release") || dir.parent().is_some_and(|p| p.ends_with("release"));
    let mut cmd =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "-p", "ingest", "--bin", "shardlog"]);
    if release {
        cmd.arg("--release");
    }
    anyhow::ensure!(cmd.status()?.success(), "cargo build -p ingest failed");
    for d in [dir, dir.parent().unwrap_or(dir)] {
        let p = d.join("shardlog");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("no shardlog binary near {}", dir.display())
}

/// Starts shardlog with its data in a fresh directory under `parent`.
pub async fn start(parent: &Path, port: u16) -> anyhow::Result<Server> {
    let dir = tempfile::tempdir_in(parent)?;
    let addr = format!("127.0.0.1:{port}");
    let child = std::process::Command::new(binary()?)
        .args(["serve", "--listen", &addr, "--data-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let server = Server { child, addr: addr.clone(), _dir: dir };
    wait_ready(&addr).await?;
    Ok(server)
}

/// Waits until `addr` answers `/readyz` with 200.
pub async fn wait_ready(addr: &str) -> anyhow::Result<()> {
    let t = Instant::now();
    loop {
        if let Ok(mut h) = Http::connect(addr).await
            && let Ok((200, _)) = h.call("GET", "/readyz", &[], Bytes::new()).await
        {
            return Ok(());
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(30),
            "shardlog at {addr} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
