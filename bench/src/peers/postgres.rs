//! PostgreSQL: (a) an append-only table loaded with `COPY … FROM STDIN`, one COPY per batch;
//! (b) the revision-counter pattern (each commit a transaction that bumps one row's revision
//! and inserts the commit under it), which serialises every writer on that row's lock.
//! `synchronous_commit = on` for `sync`, `off` for `async` (the WAL writer flushes later).
//!
//! The server runs as the `postgres` user when we are root (it refuses to run as root).

use super::{free_port, wait_port};
use crate::run::Conn;
use anyhow::Context;
use bytes::Bytes;
use futures_util::SinkExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A PostgreSQL cluster we initialised and started; stopped (immediate) when dropped.
pub struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    as_postgres: bool,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut c = self.command("pg_ctl");
        c.arg("-D").arg(self.dir.path().join("data")).args(["stop", "-m", "immediate"]);
        let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

impl Cluster {
    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }
}

/// The directory of PostgreSQL's server programs (Debian: /usr/lib/postgresql/<major>/bin).
fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL server is not installed (bench/install-peers.sh)")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    found.sort();
    found.pop().context("no /usr/lib/postgresql/*/bin/postgres")
}

/// Initialises a cluster under `parent` and starts it on a free loopback port.
pub async fn start(parent: &Path) -> anyhow::Result<Cluster> {
    let dir = tempfile::tempdir_in(parent)?;
    let as_postgres = is_root();
    let port = free_port();
    let cluster = Cluster { bin: bin_dir()?, dir, port, as_postgres };
    if as_postgres {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(cluster.dir.path())
            .status()?
            .success();
        anyhow::ensure!(ok, "chown of the PostgreSQL directory failed");
    }
    let data = cluster.dir.path().join("data");
    let out = cluster
        .command("initdb")
        .arg("-D")
        .arg(&data)
        .args(["--auth=trust", "-U", "postgres", "--no-sync"])
        .output()?;
    anyhow::ensure!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
    let out = cluster
        .command("pg_ctl")
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(cluster.dir.path().join("log"))
        .arg("-o")
        .arg(format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=50",
            cluster.dir.path().display()
        ))
        .args(["-w", "start"])
        .output()?;
    anyhow::ensure!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
    wait_port(port, "postgres").await?;
    Ok(cluster)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Connects with `synchronous_commit` set for `durability`.
async fn connect(port: u16, durability: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(conn);
    let sc = if durability == "sync" { "on" } else { "off" };
    client.batch_execute(&format!("SET synchronous_commit = {sc}")).await?;
    Ok(client)
}

/// Creates the tables both workloads use.
pub async fn create_tables(port: u16) -> anyhow::Result<()> {
    let c = connect(port, "sync").await?;
    c.batch_execute(
        "CREATE TABLE IF NOT EXISTS commits (id bigserial PRIMARY KEY, payload text NOT NULL);
         CREATE TABLE IF NOT EXISTS revisions (stream int PRIMARY KEY, rev bigint NOT NULL);
         INSERT INTO revisions VALUES (1, 0) ON CONFLICT DO NOTHING;
         CREATE TABLE IF NOT EXISTS stream_commits (stream int, rev bigint, payload text NOT NULL,
                                                    PRIMARY KEY (stream, rev));",
    )
    .await?;
    Ok(())
}

/// One connection loading batches with COPY.
pub struct Copy {
    client: tokio_postgres::Client,
    rows: Bytes,
    batch: usize,
}

impl Copy {
    pub async fn new(
        port: u16,
        durability: &str,
        batch: usize,
        commit_bytes: usize,
    ) -> anyhow::Result<Copy> {
        let line = format!("{}\n", "x".repeat(commit_bytes));
        Ok(Copy {
            client: connect(port, durability).await?,
            rows: Bytes::from(line.repeat(batch)),
            batch,
        })
    }
}

impl Conn for Copy {
    async fn batch(&mut self) -> Result<u64, String> {
        let err =
            |e: tokio_postgres::Error| format!("postgres: {}", e.code().map_or("io", |c| c.code()));
        let sink = self.client.copy_in("COPY commits (payload) FROM STDIN").await.map_err(err)?;
        futures_util::pin_mut!(sink);
        sink.send(self.rows.clone()).await.map_err(err)?;
        let n = sink.finish().await.map_err(err)?;
        if n != self.batch as u64 {
            return Err(format!("postgres: COPY stored {n} of {} rows", self.batch));
        }
        Ok(n)
    }
}

/// One connection appending single commits under a revision counter.
pub struct Revision {
    client: tokio_postgres::Client,
    payload: String,
}

impl Revision {
    pub async fn new(port: u16, durability: &str, commit_bytes: usize) -> anyhow::Result<Revision> {
        Ok(Revision { client: connect(port, durability).await?, payload: "x".repeat(commit_bytes) })
    }
}

impl Conn for Revision {
    async fn batch(&mut self) -> Result<u64, String> {
        let err =
            |e: tokio_postgres::Error| format!("postgres: {}", e.code().map_or("io", |c| c.code()));
        let tx = self.client.transaction().await.map_err(err)?;
        let row = tx
            .query_one("UPDATE revisions SET rev = rev + 1 WHERE stream = 1 RETURNING rev", &[])
            .await
            .map_err(err)?;
        let rev: i64 = row.get(0);
        tx.execute("INSERT INTO stream_commits VALUES (1, $1, $2)", &[&rev, &self.payload])
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(1)
    }
}
