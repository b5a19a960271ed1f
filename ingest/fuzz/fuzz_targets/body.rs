//! Fuzz target: request bodies through `ingest::body::decode` and `ingest::body::parse`, as
//! `post_commits` calls them, for each content type and content encoding, with `partial` off
//! and on, under small and large limits and budgets.
//!
//! The first two bytes choose: content type, encoding, whether the rest is compressed here
//! (a body the decoder can read) or handed over as it is (arbitrary compressed bytes), the
//! limits and the budget. Checked: nothing panics; a decoded body is within
//! `body_bytes_max`, what was compressed here decodes back to itself, and decompressed bytes
//! are charged; an `Ok` batch is not empty, counts at most `batch_commits_max` commits, holds
//! every payload, inverse and key range inside the body, respects the payload and key limits,
//! rejects nothing without `partial`, and rejects in index order; the index is charged;
//! parsing is deterministic, and `partial` changes nothing for a body without a bad commit.
#![no_main]

use bytes::Bytes;
use ingest::body::{self, Batch, CommitKey, Limits};
use ingest::budget::Budget;
use libfuzzer_sys::fuzz_target;
use std::io::Write;

const CONTENT_TYPES: [Option<&str>; 6] = [
    Some(body::NDJSON),
    Some(body::JSON),
    Some(body::FRAMES),
    Some("Application/JSON; charset=utf-8"),
    Some("text/plain"),
    None,
];
const ENCODINGS: [Option<&str>; 4] = [None, Some("identity"), Some("gzip"), Some(" ZSTD ")];

fn limits(sel: u8) -> Limits {
    Limits {
        body_bytes_max: [64, 4096, 1 << 20][(sel & 3) as usize % 3],
        commit_bytes_max: [4, 64, 1 << 20][((sel >> 2) & 3) as usize % 3],
        batch_commits_max: [1, 10, 100_000][((sel >> 4) & 3) as usize % 3],
        key_bytes_max: [1, 8, 1024][((sel >> 6) & 3) as usize % 3],
        retry_after_s: 1,
    }
}

fn compress(enc: Option<&str>, b: &[u8]) -> Vec<u8> {
    match enc {
        Some("gzip") => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(b).unwrap();
            e.finish().unwrap()
        }
        Some(" ZSTD ") => zstd::encode_all(b, 1).unwrap(),
        _ => b.to_vec(),
    }
}

/// Every invariant of an `Ok` batch parsed from `body`.
fn check_batch(batch: &Batch, body: &[u8], ct: &str, limits: Limits, partial: bool) {
    assert_eq!(&batch.body[..], body, "the batch holds its body");
    let n = batch.commits.len() + batch.rejected.len();
    assert!(n >= 1, "an Ok batch is not empty");
    assert!(n <= limits.batch_commits_max, "{n} commits over batch_commits_max");
    if !partial {
        assert!(batch.rejected.is_empty(), "rejected entries without partial");
    }
    for w in batch.rejected.windows(2) {
        assert!(w[0].0 < w[1].0, "rejected out of order: {:?}", batch.rejected);
    }
    if let Some((last, _)) = batch.rejected.last() {
        assert!(*last < n, "rejected index {last} of {n} commits");
    }
    let inside = |r: &std::ops::Range<usize>| r.start <= r.end && r.end <= body.len();
    let mut framed = 0;
    for c in &batch.commits {
        assert!(inside(&c.payload), "payload {:?} outside a body of {}", c.payload, body.len());
        assert!(inside(&c.inverse), "inverse {:?} outside a body of {}", c.inverse, body.len());
        assert!(c.payload.len() <= limits.commit_bytes_max, "payload over commit_bytes_max");
        if let CommitKey::InBody(r) = &c.key {
            assert!(inside(r), "key {r:?} outside a body of {}", body.len());
        }
        if let Some(k) = batch.key(c) {
            assert!(!k.is_empty() && k.len() <= limits.key_bytes_max, "key of {} bytes", k.len());
        }
        let p = batch.payload(c);
        match ct {
            body::NDJSON => {
                assert!(!p.is_empty() && !p.contains(&b'\n'), "NDJSON payload {p:?}");
                assert!(c.key == CommitKey::None && c.inverse.is_empty());
            }
            body::FRAMES => {
                assert!(c.key == CommitKey::None && c.inverse.is_empty());
                framed += 4 + p.len();
            }
            _ => {
                let json = |b: &[u8]| serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok();
                assert!(json(p), "JSON payload is not JSON: {:?}", String::from_utf8_lossy(p));
                if !c.inverse.is_empty() {
                    assert!(json(batch.inverse(c)), "JSON inverse is not JSON");
                }
            }
        }
    }
    if ct == body::FRAMES && batch.rejected.is_empty() {
        assert_eq!(framed, body.len(), "frames cover the whole body");
    }
}

/// A batch in a comparable form.
fn summary(r: &Result<Batch, ingest::error::ApiError>) -> String {
    match r {
        Ok(b) => format!("ok {:?} {:?}", b.commits, b.rejected),
        Err(e) => format!("err {e:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let [sel, lim, rest @ ..] = data else { return };
    let ct = CONTENT_TYPES[(sel & 7) as usize % CONTENT_TYPES.len()];
    let enc = ENCODINGS[((sel >> 3) & 3) as usize];
    let compress_here = sel & 0x20 != 0;
    let big_budget = sel & 0x40 == 0;
    let limits = limits(*lim);
    let raw = if compress_here { compress(enc, rest) } else { rest.to_vec() };

    let budget = Budget::new(if big_budget { 64 << 20 } else { 2048 }, limits.body_bytes_max);
    let mut charge = budget.charge();
    // As the server does: the received body is charged before it is decoded.
    if charge.cover(raw.len()).is_err() {
        return;
    }
    let before = charge.bytes();
    let decoded = body::decode(Bytes::from(raw.clone()), enc, limits, &mut charge);
    assert!(charge.bytes() <= budget.used_bytes() && budget.used_bytes() <= 64 << 20);
    let decoded = match decoded {
        Ok(d) => d,
        Err(e) => {
            // What was compressed here is readable: only a limit may refuse it.
            if compress_here && big_budget && rest.len() <= limits.body_bytes_max {
                panic!("{rest:?} compressed with {enc:?} is refused: {e:?}");
            }
            return;
        }
    };
    assert!(decoded.len() <= limits.body_bytes_max, "decoded body over body_bytes_max");
    match enc {
        None | Some("identity") => assert_eq!(&decoded[..], &raw[..], "identity changed bytes"),
        _ => assert!(
            charge.bytes() >= before + decoded.len(),
            "decompressed bytes not charged: {} < {} + {}",
            charge.bytes(),
            before,
            decoded.len()
        ),
    }
    if compress_here {
        assert_eq!(&decoded[..], rest, "a compressed body does not decode to itself");
    }

    let ct_name = ct.map(|c| c.split(';').next().unwrap().trim().to_ascii_lowercase());
    let mut results = Vec::new();
    for partial in [false, true] {
        let mut c = budget.charge();
        c.cover(charge.bytes()).ok();
        let base = c.bytes();
        let r = body::parse(decoded.clone(), ct, limits, partial, &mut c);
        let again = body::parse(decoded.clone(), ct, limits, partial, &mut budget.charge());
        if big_budget {
            assert_eq!(summary(&r), summary(&again), "parsing is not deterministic");
        }
        if let Ok(b) = &r {
            check_batch(b, &decoded, ct_name.as_deref().unwrap_or(""), limits, partial);
            assert!(
                c.bytes() >= base + b.commits.len() * body::COMMIT_INDEX_BYTES,
                "the commits' index is not charged"
            );
        }
        results.push(r);
    }
    if big_budget && let (Ok(strict), Ok(lenient)) = (&results[0], &results[1]) {
        assert_eq!(strict.commits, lenient.commits, "partial changed a body without bad commits");
        assert!(lenient.rejected.is_empty());
    }
    if big_budget && let Err(e) = &results[1] {
        // partial only turns a bad commit into an entry: an envelope error stays one.
        assert!(results[0].is_err(), "partial refuses what strict takes: {e:?}");
    }
});
