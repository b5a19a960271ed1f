//! Conversions between ULIDs, milliseconds and RFC 3339 times, for seeking by time.
//!
//! Times before the epoch or past the 48-bit millisecond range are errors, not clamps: a query
//! for a time the ID space cannot express should say so.

use crate::MAX_MS;
use ::time::OffsetDateTime;
use ::time::format_description::well_known::Rfc3339;
use ulid::Ulid;

/// Why a time could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeError {
    /// Not an RFC 3339 timestamp.
    #[error("not an RFC 3339 time or a ULID: {text:?}")]
    Unparsable {
        /// The input.
        text: String,
    },
    /// Before 1970 or after the year 10889.
    #[error("time {text:?} is outside the ULID range (1970 to 10889)")]
    OutOfRange {
        /// The input.
        text: String,
    },
}

/// The lowest ULID of millisecond `ms`.
pub fn min_for_ms(ms: u64) -> Ulid {
    Ulid((ms.min(MAX_MS) as u128) << 80)
}

/// The highest ULID of millisecond `ms`.
pub fn max_for_ms(ms: u64) -> Ulid {
    Ulid(((ms.min(MAX_MS) as u128) << 80) | ((1u128 << 80) - 1))
}

/// Milliseconds since the epoch of an RFC 3339 time (`2026-11-22T03:00:00.123Z`, offsets
/// allowed); sub-millisecond digits are truncated.
pub fn ms_from_rfc3339(text: &str) -> Result<u64, TimeError> {
    let t = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| TimeError::Unparsable { text: text.to_owned() })?;
    let ms = t.unix_timestamp_nanos().div_euclid(1_000_000);
    if ms < 0 || ms > MAX_MS as i128 {
        return Err(TimeError::OutOfRange { text: text.to_owned() });
    }
    Ok(ms as u64)
}

/// The RFC 3339 time (UTC, milliseconds) of a ULID's timestamp.
pub fn to_rfc3339(id: Ulid) -> String {
    let ms = (id.0 >> 80) as i128;
    OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{ms}ms"))
}

/// A query bound given as a ULID or as an RFC 3339 time; a time becomes the lowest ULID of
/// its millisecond (so `from=` is inclusive of that instant and `to=` exclusive of it).
pub fn parse_ulid_or_time(text: &str) -> Result<Ulid, TimeError> {
    if let Some(id) = crate::parse(text) {
        return Ok(id);
    }
    ms_from_rfc3339(text).map(min_for_ms)
}
