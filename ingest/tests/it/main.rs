//! ingest integration tests (filled below).
