//! Redis Streams: `XADD stream * p <payload>`, a batch as one pipeline; AOF with
//! `appendfsync everysec` (async) or `always` (sync).

use super::{Process, free_port, wait_port};
use crate::run::Conn;
use std::process::{Command, Stdio};

/// Starts `redis-server` with an append-only file and this `appendfsync`.
pub async fn start(parent: &std::path::Path, appendfsync: &str) -> anyhow::Result<Process> {
    let dir = tempfile::tempdir_in(parent)?;
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
        .arg(dir.path())
        .args(["--appendonly", "yes", "--appendfsync", appendfsync, "--save", ""])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let p = Process { child, port, _dir: dir };
    wait_port(port, "redis-server").await?;
    Ok(p)
}

/// One client connection sending batches of XADD.
pub struct Xadd {
    conn: redis::aio::MultiplexedConnection,
    payload: Vec<u8>,
    batch: usize,
}

impl Xadd {
    pub async fn new(port: u16, batch: usize, commit_bytes: usize) -> anyhow::Result<Xadd> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
        let conn = client.get_multiplexed_async_connection().await?;
        Ok(Xadd { conn, payload: vec![b'x'; commit_bytes], batch })
    }
}

impl Conn for Xadd {
    async fn batch(&mut self) -> Result<u64, String> {
        let mut pipe = redis::pipe();
        for _ in 0..self.batch {
            pipe.cmd("XADD").arg("bench").arg("*").arg("p").arg(&self.payload[..]).ignore();
        }
        pipe.query_async::<()>(&mut self.conn)
            .await
            .map_err(|e| format!("redis: {:?}", e.kind()))?;
        Ok(self.batch as u64)
    }
}
