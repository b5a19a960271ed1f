//! Starting and stopping the service: state, recovery, listening, graceful shutdown.
//!
//! Start: writers first, then the listener (so `/healthz` answers at once), then recovery of
//! every log on the blocking pool; `/readyz` and writes wait for it. Stop (SIGTERM/SIGINT): stop
//! accepting, end the tails' streams (`AppState::stopping`), let in-flight requests finish, stop
//! the writers after their queued work (each syncs all its shards), close every log (final
//! flush and checkpoint), exit 0.

use crate::api::{AppState, app};
use crate::config::Config;
use crate::logs::Registry;
use crate::writers::Writers;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use storage::LogOptions;

/// Builds the state for `config` (already resolved). Logs are not opened yet.
pub fn state(config: Config) -> anyhow::Result<Arc<AppState>> {
    std::fs::create_dir_all(&config.data_dir)?;
    let metrics = Arc::new(crate::metrics::Metrics::new(config.writers, config.metrics_logs_max));
    let writers = Writers::start(
        config.writers,
        config.writer_queue_depth,
        config.writer_burst_max,
        Arc::clone(&metrics),
    )?;
    let opts = LogOptions {
        segment_bytes: config.segment_bytes,
        flush_interval_ms: config.flush_interval_ms,
        metrics: metrics.storage.clone(),
        ..LogOptions::default()
    };
    // Before the logs: their recovery asks it which keyed transactions have their record.
    let idempotency = Arc::new(crate::idempotency::Idempotency::open(
        &config.data_dir,
        config.idempotency_ttl_ms,
        config.idempotency_keys_max,
        config.idempotency_bytes_max,
        idgen::Clock::now_ms(&idgen::SystemClock),
    )?);
    let registry =
        Registry::new(&config.data_dir, opts, Arc::clone(&metrics), Arc::clone(&idempotency))?;
    let body_budget =
        crate::budget::Budget::new(config.inflight_body_bytes_max, config.body_bytes_max);
    let config_dir = config.data_dir.clone();
    Ok(Arc::new(AppState {
        config,
        registry,
        writers,
        ready: AtomicBool::new(false),
        body_budget,
        idempotency,
        consumers: crate::consumers::Consumers::new(&config_dir)?,
        metrics,
        hubs: Default::default(),
        stopping: tokio::sync::watch::channel(false).0,
    }))
}

/// Opens every log on disk and marks the service ready. Blocking.
pub fn recover(state: &AppState) -> anyhow::Result<()> {
    let t = std::time::Instant::now();
    let n = state.registry.open_existing(&state.writers)?;
    state.ready.store(true, Ordering::Release);
    tracing::info!(
        logs = n,
        elapsed_ms = t.elapsed().as_millis() as u64,
        "recovery finished, ready"
    );
    Ok(())
}

/// Idle writers advance their shards' marks on a tick (strong reads also nudge them at once).
/// Must run inside the runtime; abort the handle to stop it.
pub fn spawn_ticker(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let period = std::time::Duration::from_millis(state.config.idle_advance_ms.max(1));
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            state.writers.nudge();
        }
    })
}

/// Stops the writers and closes every log. Blocking.
pub fn stop(state: &AppState) {
    state.ready.store(false, Ordering::Release);
    state.writers.shutdown();
    state.registry.close_all();
}

/// Serves until `shutdown` resolves, then stops gracefully.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let state = state(config)?;
    let st = Arc::clone(&state);
    let mut recovery = tokio::task::spawn_blocking(move || recover(&st));
    // A failed recovery stops the server at once (it would never become ready).
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<()>();
    let st = Arc::clone(&state);
    let until = async move {
        tokio::select! {
            _ = shutdown => {}
            Ok(()) = failed_rx => {}
        }
        // Tails stream until told: end them, or draining would wait for their clients.
        st.stopping.send_replace(true);
    };
    let ticker = spawn_ticker(Arc::clone(&state));
    let limits = crate::conn::ConnLimits::of(&state.config);
    let conns = state.metrics.conn.clone();
    let server = crate::conn::serve(listener, app(Arc::clone(&state)), limits, conns, until);
    let watch = async {
        let r = (&mut recovery).await;
        if !matches!(r, Ok(Ok(()))) {
            let _ = failed_tx.send(());
        }
        r
    };
    let (served, recovered) = tokio::join!(server, watch);
    ticker.abort();
    let () = served;
    tracing::info!("stopping: draining writers, flushing shards");
    if let Err(e) = recovered.map_err(anyhow::Error::from).and_then(|r| r) {
        tracing::error!(error = %e, "recovery failed");
        let st = Arc::clone(&state);
        tokio::task::spawn_blocking(move || stop(&st)).await?;
        return Err(e.context("recovery failed"));
    }
    let st = Arc::clone(&state);
    tokio::task::spawn_blocking(move || stop(&st)).await?;
    tracing::info!("stopped");
    Ok(())
}
