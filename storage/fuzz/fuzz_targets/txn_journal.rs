//! Fuzz target: arbitrary bytes as a log's transaction journal (`txn.journal`). The records
//! are decoded by `format::decode_txn_record` as `Txns::load` walks them, and the journal is
//! opened for real: `Log::open_read_only` on a fixture log of two shards that holds plain
//! commits and the parts of two transactions, so a `Cut` or an `Aborted` record steers
//! recovery's scan of the shards. Nothing may panic; every decoded record re-encodes to the
//! bytes it came from; decoding and opening are deterministic (twice the same answer; the log
//! is opened a second time only when records were decoded).
//!
//! Records are CRC-guarded, which random mutation rarely passes. So the first byte chooses:
//! even, the rest is the file as it is; odd, the rest is a list of record bodies (`u8` length,
//! body) framed here with their length and a correct CRC behind a valid header (version 1 if
//! bit 1 is set), and with bit 2 a torn copy of the last record appended.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use storage::format::{self, NewRecord, TxnRecord};
use storage::{Log, LogOptions, NoExternal, Visibility, txn};

/// The fixture log, built once per process, and its transaction ids.
struct Fixture {
    dir: PathBuf,
    ids: [u64; 2],
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let base = std::env::temp_dir().join("shardlog-fuzz-txn");
        remove_dead_fixtures(&base);
        let dir = base.join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("fixture directory");
        let opts = LogOptions {
            shards: 2,
            segment_bytes: storage::SEGMENT_BYTES_MIN,
            background: false,
            ..LogOptions::default()
        };
        let (a, b) = (txn::new_id(2, false), txn::new_id(1, false));
        {
            let (log, mut w) = Log::open(&dir, opts).expect("fixture log");
            let part = |id, p| NewRecord {
                flags: format::flags::TXN_PART,
                aux: id,
                ..NewRecord::payload(p)
            };
            w[0].append(&[NewRecord::payload(b"plain 0")]).unwrap();
            log.begin_txn(a, &[0, 1]);
            w[0].append(&[part(a, b"a0"), part(a, b"a0'")]).unwrap();
            log.begin_txn(b, &[1]);
            w[1].append(&[part(b, b"b1")]).unwrap();
            w[1].append(&[part(a, b"a1")]).unwrap();
            w[0].append(&[NewRecord::keyed(b"k", b"plain 0'")]).unwrap();
            w[1].append(&[NewRecord::payload(b"plain 1")]).unwrap();
            for w in &mut w {
                w.sync().unwrap();
            }
        }
        Fixture { dir, ids: [a, b] }
    })
}

/// Fixture directories of earlier runs whose process is gone.
fn remove_dead_fixtures(base: &Path) {
    for e in std::fs::read_dir(base).into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !Path::new("/proc").join(&pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The journal file the input stands for.
fn journal(data: &[u8]) -> Vec<u8> {
    let Some((&mode, rest)) = data.split_first() else { return Vec::new() };
    if mode & 1 == 0 {
        return rest.to_vec();
    }
    let mut out = format::encode_txn_journal_header().to_vec();
    if mode & 2 != 0 {
        out[8..10].copy_from_slice(&1u16.to_le_bytes());
    }
    let mut last = None;
    let mut rest = rest;
    while let Some((&len, tail)) = rest.split_first() {
        let body = &tail[..(len as usize).min(tail.len())];
        let at = out.len();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
        out.extend_from_slice(body);
        last = Some(at..out.len());
        rest = &tail[body.len()..];
    }
    if mode & 4 != 0
        && let Some(r) = last
    {
        let torn = out[r.start..r.end - 1].to_vec();
        out.extend_from_slice(&torn);
    }
    out
}

/// The records `Txns::load` reads: from the header to the first torn or damaged one.
fn records(bytes: &[u8]) -> Vec<(TxnRecord, usize)> {
    let mut out = Vec::new();
    if format::decode_txn_journal_header(bytes).is_err() {
        return out;
    }
    let mut at = format::TXN_JOURNAL_HEADER_LEN;
    while let Some((rec, len)) = format::decode_txn_record(&bytes[at..]) {
        assert!(len >= 8 && len <= bytes.len() - at, "record length {len} at {at}");
        assert_eq!(
            format::encode_txn_record(&rec),
            &bytes[at..at + len],
            "{rec:?} does not re-encode to its bytes"
        );
        out.push((rec, len));
        at += len;
    }
    out
}

/// What opening the log read-only answers, in a comparable form.
fn open(f: &Fixture) -> Result<String, String> {
    let (log, report) =
        Log::open_read_only(&f.dir, Arc::new(NoExternal)).map_err(|e| e.to_string())?;
    let mut aborted = report.aborted_txns.clone();
    aborted.sort_unstable();
    let vis: Vec<Visibility> = f.ids.iter().map(|&id| log.txns().visibility(id)).collect();
    Ok(format!(
        "{aborted:?} {} {:?} {vis:?} {} {}",
        report.txn_scan_commits,
        report.torn_tails,
        log.txns().aborted_count(),
        log.txns().pending_count()
    ))
}

fuzz_target!(|data: &[u8]| {
    let bytes = journal(data);
    let first = records(&bytes);
    assert_eq!(first, records(&bytes), "decoding is not deterministic");

    let f = fixture();
    std::fs::write(f.dir.join("txn.journal"), &bytes).expect("write the journal");
    let once = open(f);
    // A second open (the scans of the shards are most of a run) when records steer recovery.
    if !first.is_empty() {
        assert_eq!(once, open(f), "opening is not deterministic");
    }
    // A damaged header refuses the log; records after it only end the journal early.
    if !bytes.is_empty() && format::decode_txn_journal_header(&bytes).is_err() {
        assert!(once.is_err(), "a journal with a bad header was accepted: {once:?}");
    }
});
