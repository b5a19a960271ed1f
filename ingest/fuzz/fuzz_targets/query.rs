//! Fuzz target: the query parameters' parsers on arbitrary text — `ingest::api::
//! parse_duration_ms` (`?timeout=`), `idgen::parse` (ULIDs), `idgen::ms_from_rfc3339` and
//! `idgen::parse_ulid_or_time` (`from=`/`to=`) — and the printers they pair with. Nothing may
//! panic, and what parses round-trips: a ULID prints back as its text (upper case), a
//! duration as `{ms}ms`, a time through `to_rfc3339` to the same millisecond. The input's
//! first 16 bytes, as a ULID, also go through `encode` and `to_rfc3339` and back.
#![no_main]

use idgen::{MAX_MS, Ulid};
use libfuzzer_sys::fuzz_target;

fn text_checks(s: &str) {
    if let Some(ms) = ingest::api::parse_duration_ms(s) {
        assert_eq!(ingest::api::parse_duration_ms(&format!("{ms}ms")), Some(ms), "{s:?}");
    }
    let ulid = idgen::parse(s);
    if let Some(id) = ulid {
        assert_eq!(&idgen::encode(id)[..], s.to_ascii_uppercase().as_bytes(), "{s:?}");
    }
    let time = idgen::ms_from_rfc3339(s);
    if let Ok(ms) = time {
        assert!(ms <= MAX_MS, "{s:?} gives {ms} ms, beyond the ULID range");
        let printed = idgen::to_rfc3339(idgen::min_for_ms(ms));
        assert_eq!(idgen::ms_from_rfc3339(&printed), Ok(ms), "{s:?} printed as {printed:?}");
    }
    match (idgen::parse_ulid_or_time(s), ulid, time) {
        (Ok(id), Some(u), _) => assert_eq!(id, u, "{s:?}"),
        (Ok(id), None, Ok(ms)) => assert_eq!(id, idgen::min_for_ms(ms), "{s:?}"),
        (Err(_), None, Err(_)) => {}
        (r, u, t) => panic!("{s:?}: parse_ulid_or_time {r:?}, parse {u:?}, ms_from_rfc3339 {t:?}"),
    }
}

fn ulid_checks(id: Ulid) {
    let text = idgen::encode(id);
    let text = std::str::from_utf8(&text).expect("ASCII");
    assert_eq!(idgen::parse(text), Some(id), "{text}");
    assert_eq!(idgen::parse(&text.to_ascii_lowercase()), Some(id), "{text}");
    let ms = (id.0 >> 80) as u64;
    assert!(idgen::min_for_ms(ms) <= id && id <= idgen::max_for_ms(ms));
    let printed = idgen::to_rfc3339(id);
    // Past year 9999 the time crate prints no RFC 3339 text: `@{ms}ms` says so.
    if !printed.starts_with('@') {
        assert_eq!(idgen::ms_from_rfc3339(&printed), Ok(ms), "{id:?} printed as {printed:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(b) = data.get(..16) {
        ulid_checks(Ulid(u128::from_le_bytes(b.try_into().unwrap())));
    }
    if let Ok(s) = std::str::from_utf8(data) {
        text_checks(s);
    }
});
