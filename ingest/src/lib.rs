//! The shardlog service as a library: configuration, body parsing, the log registry, the
//! writer threads and the HTTP API; `main.rs` is only the binary's edge (CLI, signals).
//!
//! What it is not: storage. Everything on disk goes through the `storage` crate.

pub mod api;
pub mod body;
pub mod budget;
pub mod config;
pub mod conn;
pub mod consumers;
pub mod error;
pub mod h2c;
pub mod idempotency;
pub mod json;
pub mod logs;
pub mod metrics;
pub mod server;
pub mod streams;
pub mod writers;

/// Locks `m` through poisoning: what the service's mutexes guard stays whole if a holder
/// panicked, so the next holder goes on.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
