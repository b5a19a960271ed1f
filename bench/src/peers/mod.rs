//! The peers shardlog is compared with, each started by us on a loopback port with a temporary
//! data directory, and driven through its own Rust client crate: Redis Streams (`redis`), NATS
//! JetStream (`async-nats`), PostgreSQL (`tokio-postgres`); beside them Redis's own
//! `redis-benchmark`, and nginx answering `return 200` as the HTTP ceiling. Install them with
//! `bench/install-peers.sh` (Debian packages).
//!
//! What it is not: a tuning guide. Each peer runs with its defaults except the durability
//! setting the workload asks for.

pub mod nats;
pub mod nginx;
pub mod postgres;
pub mod redis;

use std::process::Child;
use std::time::{Duration, Instant};

/// A peer process; killed when dropped.
pub struct Process {
    pub child: Child,
    pub port: u16,
    /// Its data; removed when dropped.
    pub _dir: tempfile::TempDir,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd` (its output dropped) as the peer that will listen on `port`, owning its data
/// directory `dir`, and waits until it accepts connections.
pub async fn spawn(
    mut cmd: std::process::Command,
    port: u16,
    dir: tempfile::TempDir,
    what: &str,
) -> anyhow::Result<Process> {
    use std::process::Stdio;
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let p = Process { child, port, _dir: dir };
    wait_port(port, what).await?;
    Ok(p)
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Waits until something accepts connections on `port`.
pub async fn wait_port(port: u16, what: &str) -> anyhow::Result<()> {
    let t = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        anyhow::ensure!(t.elapsed() < Duration::from_secs(30), "{what} never listened on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Whether `program` is on the PATH (or an absolute path that exists).
pub fn installed(program: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}
