//! The `shardlog` binary: command line, configuration, logging, signals. Everything else is in
//! the `ingest` library; this is the only place `anyhow` errors end.

use clap::{Parser, Subcommand};
use ingest::config::{Config, Durability};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(name = "shardlog", version, about = "Commit-log ingestion service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML file with the same settings (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7070].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Data directory [default: ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Default durability of writes [default: sync].
    #[arg(long, value_parser = ["sync", "async"])]
    durability: Option<String>,
    /// Answer 404 to writes to logs that do not exist instead of creating them.
    #[arg(long)]
    no_auto_create: bool,
    /// Bearer-token file (not available in this build).
    #[arg(long)]
    auth: Option<PathBuf>,
    /// Allow a non-loopback listen address without --auth.
    #[arg(long)]
    insecure: bool,
    /// An origin whose web pages may call the API (CORS), or `*`; repeatable.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    cors_origin: Vec<String>,
    /// A name the Host header may give besides loopback ones (others get 421); repeatable.
    #[arg(long = "allowed-host", value_name = "NAME")]
    allowed_host: Vec<String>,
    /// Cold archive directory or s3:// URL (not available in this build).
    #[arg(long)]
    archive: Option<String>,
    /// Writer threads [default: one per core].
    #[arg(long)]
    writers: Option<usize>,
    /// Shards of a log created without a shard count [default: two per core].
    #[arg(long)]
    default_shards: Option<u32>,
    /// Largest request body after decompression, in bytes [default: 64 MiB].
    #[arg(long)]
    body_bytes_max: Option<usize>,
    /// Largest payload of one commit (an NDJSON line, a frame), in bytes [default: 1 MiB].
    #[arg(long)]
    commit_bytes_max: Option<usize>,
    /// Most commits in one request [default: 100000].
    #[arg(long)]
    batch_commits_max: Option<usize>,
    /// Background flush period of async writes, in milliseconds [default: 100].
    #[arg(long)]
    flush_interval_ms: Option<u64>,
}

fn config(args: ServeArgs) -> anyhow::Result<Config> {
    let mut c = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(v) = args.listen {
        c.listen = v;
    }
    if let Some(v) = args.data_dir {
        c.data_dir = v;
    }
    if let Some(v) = args.durability {
        c.durability = if v == "sync" { Durability::Sync } else { Durability::Async };
    }
    if args.no_auto_create {
        c.auto_create = false;
    }
    if args.auth.is_some() {
        c.auth = args.auth;
    }
    if args.insecure {
        c.insecure = true;
    }
    if args.archive.is_some() {
        c.archive = args.archive;
    }
    if !args.cors_origin.is_empty() {
        c.cors_origins = args.cors_origin;
    }
    if !args.allowed_host.is_empty() {
        c.allowed_hosts = args.allowed_host;
    }
    if let Some(v) = args.writers {
        c.writers = v;
    }
    if let Some(v) = args.default_shards {
        c.default_shards = v;
    }
    if let Some(v) = args.body_bytes_max {
        c.body_bytes_max = v;
    }
    if let Some(v) = args.commit_bytes_max {
        c.commit_bytes_max = v;
    }
    if let Some(v) = args.batch_commits_max {
        c.batch_commits_max = v;
    }
    if let Some(v) = args.flush_interval_ms {
        c.flush_interval_ms = v;
    }
    Ok(c.resolve()?)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        // Without signal handlers the server can still be killed; it just cannot drain.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}

/// glibc's malloc serves allocations at least this large with their own mapping, returned to
/// the kernel when freed. Left to itself, glibc raises the threshold to the largest block freed
/// so far (up to 32 MiB), after which request bodies come from the heap and their freed memory
/// stays resident: the process then held 7× the in-flight budget under overload, against 2×
/// with the threshold fixed (`bench/RESULTS.md`, "Memory under overload").
const MALLOC_MMAP_THRESHOLD_BYTES: usize = 256 * 1024;

/// Fixes glibc's mmap threshold by starting the binary again with the tunable set, unless the
/// caller already set one. Only the environment of the new image changes; the pid stays.
fn fix_malloc_threshold() -> anyhow::Result<()> {
    const VAR: &str = "GLIBC_TUNABLES";
    let current = std::env::var(VAR).unwrap_or_default();
    if !cfg!(all(target_os = "linux", target_env = "gnu"))
        || current.contains("glibc.malloc.mmap_threshold")
    {
        return Ok(());
    }
    let tunable = format!("glibc.malloc.mmap_threshold={MALLOC_MMAP_THRESHOLD_BYTES}");
    let value = if current.is_empty() { tunable } else { format!("{current}:{tunable}") };
    let exe = std::env::current_exe()?;
    let err = std::os::unix::process::CommandExt::exec(
        std::process::Command::new(exe).args(std::env::args_os().skip(1)).env(VAR, value),
    );
    // exec returns only on failure: run as we are.
    eprintln!("shardlog: could not restart with {VAR} set ({err}); malloc keeps its defaults");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    fix_malloc_threshold()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let Cli { command: Command::Serve(args) } = Cli::parse();
    let config = config(args)?;
    eprintln!("shardlog effective configuration:\n{}", toml::to_string(&config)?);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(ingest::server::run(config, shutdown_signal()))
}
