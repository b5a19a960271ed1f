//! The shardlog service as a library: configuration, body parsing, the log registry, the
//! writer threads and the HTTP API; `main.rs` is only the binary's edge (CLI, signals).
//!
//! What it is not: storage. Everything on disk goes through the `storage` crate.

pub mod api;
pub mod body;
pub mod config;
pub mod consumers;
pub mod error;
pub mod idempotency;
pub mod json;
pub mod logs;
pub mod metrics;
pub mod server;
pub mod writers;
