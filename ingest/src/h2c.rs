//! HTTP/2 cleartext with prior knowledge: how a connection is told to be HTTP/2 (its first 24
//! bytes, peeked and not taken), and the stream limit. What it is not: the connection loop
//! (`crate::conn`), which serves both protocols with the same service and watch.

use std::time::Duration;
use tokio::net::TcpStream;

/// Streams one HTTP/2 connection may carry at once.
pub const H2_STREAMS_MAX: u32 = 256;

/// The first bytes an HTTP/2 client with prior knowledge sends (RFC 9113, 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the connection opens with the HTTP/2 preface (cleartext, prior knowledge), looking
/// at its first bytes without taking them; `None` if it closed or sent too little in time.
pub async fn preface(tcp: &TcpStream, timeout: Duration) -> Option<bool> {
    let look = async {
        let mut buf = [0u8; H2_PREFACE.len()];
        loop {
            let n = tcp.peek(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            if buf[..n] != H2_PREFACE[..n] {
                return Some(false);
            }
            if n == H2_PREFACE.len() {
                return Some(true);
            }
            // A prefix of the preface so far: peeking again returns at once, so wait a little.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(timeout, look).await.ok().flatten()
}
