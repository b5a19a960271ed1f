//! ULIDs for writers that own them: a monotonic generator per writer, with the clock and the
//! randomness injected from outside, plus the conversions the merger and queries need.
//!
//! What this crate is not: a global or shared generator. Each writer owns one [`Generator`];
//! uniqueness across writers comes from the 80 random bits, order within a writer from the
//! monotonic rule (see [`Generator`]). Nothing here does I/O besides reading the clock in
//! [`clock::SystemClock`], the only place in the workspace allowed to call `SystemTime::now`.

pub mod clock;
mod generator;
mod text;
mod time;

pub use clock::{Clock, ManualClock, SystemClock};
pub use generator::{Generator, IdRange};
pub use text::{ULID_LEN, encode, parse};
pub use time::{
    TimeError, max_for_ms, min_for_ms, ms_from_rfc3339, parse_ulid_or_time, to_rfc3339,
};
pub use ulid::Ulid;

/// Highest millisecond a ULID can carry (48 bits, until the year 10889).
pub const MAX_MS: u64 = (1 << 48) - 1;

#[cfg(test)]
mod tests;
