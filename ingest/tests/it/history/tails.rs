//! Tail clients: an SSE or NDJSON tail of the log followed across connection drops (every kill
//! drops them), resuming with `Last-Event-ID` (SSE) or `after=` (NDJSON) from the last whole
//! event received, recording every event id with its arrival time.
//!
//! What it is not: an SSE library. It reads one HTTP/1.1 response on a raw socket, de-chunks it
//! as it arrives and takes only whole events (an SSE block ended by a blank line, an NDJSON line
//! ended by a newline); a partial one cut by a drop is discarded and read again on resume.

use super::clients::Shared;
use super::ops::{Connect, Event, Kind, Op, Start, TailSession};
use super::readers::parse_commit;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

/// Connections one tail session opens at most.
const CONNECTS_MAX: usize = 10_000;

/// An HTTP response being received: its head, then its de-chunked body.
#[derive(Default)]
struct Response {
    raw: Vec<u8>,
    status: Option<u16>,
    chunked: bool,
    /// De-chunked body bytes not yet taken as events.
    body: Vec<u8>,
    ended: bool,
}

impl Response {
    /// Takes `bytes` in: parses the head once it is whole, then de-chunks what is complete.
    fn feed(&mut self, bytes: &[u8]) {
        self.raw.extend_from_slice(bytes);
        if self.status.is_none() {
            let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else { return };
            let head = String::from_utf8_lossy(&self.raw[..end]).to_ascii_lowercase();
            self.status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).or(Some(0));
            self.chunked = head.contains("transfer-encoding: chunked");
            self.raw.drain(..end + 4);
        }
        if !self.chunked {
            self.body.append(&mut self.raw);
            return;
        }
        while !self.ended {
            let Some(eol) = self.raw.windows(2).position(|w| w == b"\r\n") else { return };
            let size = std::str::from_utf8(&self.raw[..eol])
                .ok()
                .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok());
            let Some(size) = size else {
                self.ended = true; // not HTTP chunking: stop taking anything
                return;
            };
            if size == 0 {
                self.ended = true;
                return;
            }
            if self.raw.len() < eol + 2 + size + 2 {
                return;
            }
            self.body.extend_from_slice(&self.raw[eol + 2..eol + 2 + size]);
            self.raw.drain(..eol + 2 + size + 2);
        }
    }

    /// The whole events received so far: (id, `event:` field if any).
    fn take_events(&mut self, sse: bool) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        let sep: &[u8] = if sse { b"\n\n" } else { b"\n" };
        while let Some(end) = self.body.windows(sep.len()).position(|w| w == sep) {
            let block = String::from_utf8_lossy(&self.body[..end]).into_owned();
            self.body.drain(..end + sep.len());
            if sse {
                let field = |name: &str| {
                    block.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
                };
                if let Some(id) = field("id:") {
                    out.push((id, field("event:")));
                }
            } else if let Ok(c) = parse_commit(block.trim()) {
                out.push((c.id, None));
            }
        }
        out
    }
}

/// A tail session from `start`: reconnects after every drop until the workload stops.
pub fn tail(sh: Arc<Shared>, who: String, sse: bool, start: Start) -> Vec<Op> {
    let invoke = sh.now_ns();
    let mut session =
        TailSession { sse, start, connects: Vec::new(), events: Vec::new(), event_fields: vec![] };
    while !sh.stopping() && session.connects.len() < CONNECTS_MAX {
        let resume = session.events.last().map(|e| e.id.clone());
        let conn = session.connects.len();
        let mut c = Connect {
            at_ns: sh.now_ns(),
            resume: resume.clone(),
            status: None,
            ended_ns: 0,
            why_ended: String::new(),
        };
        c.why_ended = follow(&sh, &mut session, &mut c, conn);
        c.ended_ns = sh.now_ns();
        let ok = c.status == Some(200);
        session.connects.push(c);
        if !sh.stopping() {
            std::thread::sleep(Duration::from_millis(if ok { 20 } else { 100 }));
        }
    }
    let mut op =
        Op { id: 0, process: who, invoke_ns: invoke, complete_ns: 0, kind: Kind::Tail(session) };
    op.complete_ns = sh.now_ns();
    vec![op]
}

/// One connection: reads events into `session` until the stream ends or the workload stops.
/// Answers why it ended.
fn follow(sh: &Shared, session: &mut TailSession, c: &mut Connect, conn: usize) -> String {
    let addr = sh.addr();
    let mut s = match TcpStream::connect(&addr) {
        Ok(s) => s,
        Err(e) => return format!("connect: {e}"),
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let path = format!("/v1/logs/{}/tail", sh.log);
    let head = match (&c.resume, &session.start, session.sse) {
        (Some(id), _, true) => {
            format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nlast-event-id: {id}\r\n\r\n")
        }
        (Some(id), _, false) | (None, Start::After(id), false) => format!(
            "GET {path}?after={id} HTTP/1.1\r\nhost: {addr}\r\naccept: application/x-ndjson\r\n\r\n"
        ),
        (None, Start::After(id), true) => {
            format!("GET {path}?after={id} HTTP/1.1\r\nhost: {addr}\r\n\r\n")
        }
        (None, _, true) => format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n"),
        (None, _, false) => {
            format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept: application/x-ndjson\r\n\r\n")
        }
    };
    if let Err(e) = s.write_all(head.as_bytes()) {
        return format!("send: {e}");
    }
    let mut resp = Response::default();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if sh.stopping() {
            return "workload stopped".into();
        }
        match s.read(&mut buf) {
            Ok(0) => return "end of stream".into(),
            Ok(n) => resp.feed(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return format!("read: {e}"),
        }
        c.status = resp.status;
        if let Some(st) = resp.status
            && st != 200
        {
            return format!("status {st}");
        }
        for (id, field) in resp.take_events(session.sse) {
            if let Some(f) = field
                && !session.event_fields.contains(&f)
            {
                session.event_fields.push(f);
            }
            session.events.push(Event { id, at_ns: sh.now_ns(), conn });
        }
        if resp.ended {
            return "stream ended by the server".into();
        }
    }
}
