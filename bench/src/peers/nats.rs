//! NATS JetStream: a file-storage stream; a batch is `batch` asynchronous publishes whose acks
//! are then awaited (so up to `batch` acks are outstanding per connection). NATS's default
//! flushes to disk in the background (like `async`); it has no per-publish fsync to compare
//! with `sync`.

use super::{Process, free_port, spawn};
use crate::run::Conn;
use bytes::Bytes;
use std::process::Command;

/// Starts `nats-server` with JetStream storing under a temporary directory.
pub async fn start(parent: &std::path::Path) -> anyhow::Result<Process> {
    let dir = tempfile::tempdir_in(parent)?;
    let port = free_port();
    let mut cmd = Command::new("nats-server");
    cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"]).arg(dir.path());
    spawn(cmd, port, dir, "nats-server").await
}

/// Creates the `BENCH` stream (subject `bench`, file storage).
pub async fn create_stream(port: u16) -> anyhow::Result<()> {
    let client = async_nats::connect(format!("127.0.0.1:{port}")).await?;
    let js = async_nats::jetstream::new(client);
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: "BENCH".into(),
        subjects: vec!["bench".into()],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    Ok(())
}

/// One client connection publishing batches.
pub struct Publish {
    js: async_nats::jetstream::Context,
    payload: Bytes,
    batch: usize,
}

impl Publish {
    pub async fn new(port: u16, batch: usize, commit_bytes: usize) -> anyhow::Result<Publish> {
        let client = async_nats::connect(format!("127.0.0.1:{port}")).await?;
        let js = async_nats::jetstream::new(client);
        Ok(Publish { js, payload: Bytes::from(vec![b'x'; commit_bytes]), batch })
    }
}

impl Conn for Publish {
    async fn batch(&mut self) -> Result<u64, String> {
        let mut acks = Vec::with_capacity(self.batch);
        for _ in 0..self.batch {
            let ack = self
                .js
                .publish("bench", self.payload.clone())
                .await
                .map_err(|e| format!("nats publish: {:?}", e.kind()))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|e| format!("nats ack: {:?}", e.kind()))?;
        }
        Ok(self.batch as u64)
    }
}
