//! Unit tests of body decoding and the three formats, including every per-commit error.

use super::*;

const LIMITS: Limits = Limits {
    body_bytes_max: 1 << 20,
    commit_bytes_max: 64,
    batch_commits_max: 10,
    key_bytes_max: 8,
    retry_after_s: 1,
};

/// A charge on a budget far larger than any test body.
fn charge() -> Charge {
    crate::budget::Budget::new(1 << 30, 64 << 20).charge()
}

fn parse_str(ct: &str, body: &str) -> Result<Batch, ApiError> {
    parse(Bytes::from(body.to_owned()), Some(ct), LIMITS, false, &mut charge())
}

fn payloads(b: &Batch) -> Vec<String> {
    b.commits.iter().map(|c| String::from_utf8(b.payload(c).to_vec()).unwrap()).collect()
}

#[test]
fn ndjson_lines_are_stored_byte_for_byte_and_empty_lines_skipped() {
    let b = parse_str(NDJSON, "{\"a\": 1}\n\nplain text \n{not json\n").unwrap();
    assert_eq!(payloads(&b), ["{\"a\": 1}", "plain text ", "{not json"]);
}

#[test]
fn crlf_ends_a_line_and_a_blank_crlf_line_is_no_commit() {
    let b = parse_str(NDJSON, "{\"a\": 1}\r\n\r\nx\r\n\ry\nlast\r").unwrap();
    assert_eq!(payloads(&b), ["{\"a\": 1}", "x", "\ry", "last"]);
}

#[test]
fn json_payloads_keep_their_text_and_keys_are_unescaped() {
    let b = parse_str(JSON, r#"{"commits": [{"key": "k\u0031", "payload": {"x": [1, 2]}}, {"payload": "s", "inverse": 3}, {"payload": null}]}"#).unwrap();
    assert_eq!(payloads(&b), [r#"{"x": [1, 2]}"#, r#""s""#, "null"]);
    assert_eq!(b.key(&b.commits[0]), Some(&b"k1"[..]));
    assert_eq!(b.inverse(&b.commits[1]), b"3");
}

#[test]
fn plain_keys_are_read_in_place_and_every_form_of_a_commit_reads_the_same() {
    let b = parse_str(
        JSON,
        r#"{"commits": [{"key": "k1", "payload": 1}, {"payload": 2, "key": "k\u0031"}, {"key": null, "payload": 3}, {"payload": 4, "key": "k1", "inverse": 5}]}"#,
    )
    .unwrap();
    assert!(matches!(b.commits[0].key, CommitKey::InBody(_)), "no copy of a plain key");
    assert!(matches!(b.commits[1].key, CommitKey::Owned(_)), "an escaped key is unescaped");
    let keys: Vec<Option<&[u8]>> = b.commits.iter().map(|c| b.key(c)).collect();
    assert_eq!(keys, [Some(&b"k1"[..]), Some(b"k1"), None, Some(b"k1")]);
    assert_eq!(payloads(&b), ["1", "2", "3", "4"]);
    assert_eq!(b.inverse(&b.commits[3]), b"5");
    assert!(!b.commits[2].has_key() && b.commits[3].has_key());
}

#[test]
fn frames_are_length_prefixed() {
    let mut body = Vec::new();
    for p in [&b"\x00\x01binary"[..], b"", b"x"] {
        body.extend_from_slice(&(p.len() as u32).to_le_bytes());
        body.extend_from_slice(p);
    }
    let b = parse(Bytes::from(body), Some(FRAMES), LIMITS, false, &mut charge()).unwrap();
    assert_eq!(b.commits.len(), 3);
    assert_eq!(b.payload(&b.commits[0]), b"\x00\x01binary");
}

fn check_err(ct: &str, body: &str, expected: &str) {
    let e = parse_str(ct, body).unwrap_err();
    assert_eq!(e.to_string(), expected, "{body:?}");
}

#[test]
fn bad_commits_are_named_by_index() {
    check_err(
        JSON,
        r#"{"commits": [{"payload": 1}, {"key": "k"}]}"#,
        "commit 1: missing \"payload\"",
    );
    check_err(
        JSON,
        r#"{"commits": [{"payload": 1}, 7]}"#,
        "commit 1: not a commit object: invalid type: integer `7`, expected a map at line 1 column 1",
    );
    check_err(
        JSON,
        r#"{"commits": [{"payload": 1, "colour": 2}]}"#,
        "commit 0: unknown field \"colour\" (key, payload, inverse, expected_revision)",
    );
    check_err(
        JSON,
        r#"{"commits": [{"payload": 1, "key": 5}]}"#,
        "commit 0: \"key\" must be a string",
    );
    check_err(
        JSON,
        r#"{"commits": [{"payload": 1, "key": "much-too-long"}]}"#,
        "commit 0: key of 13 bytes is not in 1..=8",
    );
    check_err(
        NDJSON,
        &format!("ok\n{}\n", "x".repeat(65)),
        "commit 1: payload of 65 bytes exceeds commit_bytes_max 64",
    );
    check_err(
        JSON,
        r#"{"items": []}"#,
        "expected {\"commits\": [...]}: unknown field `items`, expected `commits` at line 1 column 8",
    );
    check_err(NDJSON, "\n\n", "the request holds no commit");
    check_err(
        "text/plain",
        "x",
        "content-type \"text/plain\" is not accepted (application/x-ndjson, application/json, application/vnd.shardlog.frames)",
    );
}

#[test]
fn truncated_frames_fail_with_their_index() {
    let mut body = 3u32.to_le_bytes().to_vec();
    body.extend_from_slice(b"abc");
    body.extend_from_slice(&10u32.to_le_bytes());
    body.extend_from_slice(b"short");
    let e = parse(Bytes::from(body), Some(FRAMES), LIMITS, false, &mut charge()).unwrap_err();
    assert_eq!(e.to_string(), "commit 1: frame of 10 bytes runs past the end of the body");
}

#[test]
fn partial_collects_rejections() {
    let b = parse(
        Bytes::from_static(br#"{"commits": [{"payload": 1}, {"nope": 1}, {"payload": 2}]}"#),
        Some(JSON),
        LIMITS,
        true,
        &mut charge(),
    )
    .unwrap();
    assert_eq!(payloads(&b), ["1", "2"]);
    assert_eq!(b.rejected.len(), 1);
    assert_eq!(b.rejected[0].0, 1);
}

#[test]
fn too_many_commits_is_413() {
    let body = "x\n".repeat(11);
    assert!(matches!(
        parse_str(NDJSON, &body),
        Err(ApiError::TooManyCommits { commits: 11, limit: 10 })
    ));
}

#[test]
fn gzip_and_zstd_bodies_are_decoded_under_the_limit() {
    use std::io::Write;
    let plain = b"line one\nline two\n".repeat(100);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    assert_eq!(
        decode(
            Bytes::from(gz.clone()),
            Some("gzip"),
            Limits { body_bytes_max: 1 << 20, ..LIMITS },
            &mut charge()
        )
        .unwrap(),
        &plain[..]
    );
    let zs = zstd::encode_all(&plain[..], 3).unwrap();
    assert_eq!(
        decode(
            Bytes::from(zs),
            Some("zstd"),
            Limits { body_bytes_max: 1 << 20, ..LIMITS },
            &mut charge()
        )
        .unwrap(),
        &plain[..]
    );
    assert!(matches!(
        decode(
            Bytes::from(gz),
            Some("gzip"),
            Limits { body_bytes_max: 100, ..LIMITS },
            &mut charge()
        ),
        Err(ApiError::TooLarge { .. })
    ));
    assert!(matches!(
        decode(
            Bytes::from_static(b"xx"),
            Some("br"),
            Limits { body_bytes_max: 100, ..LIMITS },
            &mut charge()
        ),
        Err(ApiError::UnsupportedMediaType { .. })
    ));
    assert!(matches!(
        decode(
            Bytes::from_static(b"not gzip"),
            Some("gzip"),
            Limits { body_bytes_max: 100, ..LIMITS },
            &mut charge()
        ),
        Err(ApiError::BadRequest { code: "bad_encoding", .. })
    ));
}

#[test]
fn parsing_and_decoding_charge_the_budget_and_stop_when_it_is_spent() {
    use std::io::Write;
    let body = "x\n".repeat(1000);
    let budget = crate::budget::Budget::new(1 << 20, 1 << 20);
    let mut c = budget.charge();
    let many = Limits { batch_commits_max: 100_000, ..LIMITS };
    let b = parse(Bytes::from(body.clone()), Some(NDJSON), many, false, &mut c).unwrap();
    assert_eq!(b.commits.len(), 1000);
    assert!(c.bytes() >= 1000 * COMMIT_INDEX_BYTES, "the index is charged: {}", c.bytes());
    drop(c);
    let small = crate::budget::Budget::new(16 * 1024, 16 * 1024);
    let e = parse(Bytes::from(body), Some(NDJSON), many, false, &mut small.charge());
    assert!(matches!(e, Err(ApiError::Overloaded { .. })), "{e:?}");
    // A zstd bomb: 8 MiB of zeros in a few hundred bytes stops at the budget, not the limit.
    let bomb = zstd::encode_all(&vec![0u8; 8 << 20][..], 3).unwrap();
    assert!(bomb.len() < 4096);
    let limits = Limits { body_bytes_max: 64 << 20, ..LIMITS };
    let e = decode(Bytes::from(bomb), Some("zstd"), limits, &mut budget.charge());
    assert!(matches!(e, Err(ApiError::Overloaded { .. })), "{e:?}");
    assert_eq!(budget.used_bytes(), 0, "a refused request holds nothing");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&[7u8; 300 << 10]).unwrap();
    let mut c = budget.charge();
    let out = decode(Bytes::from(gz.finish().unwrap()), Some("gzip"), limits, &mut c).unwrap();
    assert_eq!(out.len(), 300 << 10);
    assert!(c.bytes() >= out.len(), "decompressed bytes are charged");
}

#[test]
fn expected_revisions_are_read_as_sent_and_bad_ones_named() {
    let b = parse_str(
        JSON,
        r#"{"commits": [{"key": "a", "payload": 1, "expected_revision": 4},
            {"key": "b", "payload": 2, "expected_revision": "no_stream"},
            {"key": "c", "payload": 3, "expected_revision": "stream_exists"},
            {"key": "d", "payload": 4, "expected_revision": "any"},
            {"key": "e", "payload": 5}]}"#,
    )
    .unwrap();
    let got: Vec<Expect> = b.commits.iter().map(|c| c.expect).collect();
    assert_eq!(
        got,
        [Expect::Exactly(4), Expect::NoStream, Expect::StreamExists, Expect::Any, Expect::Any]
    );
    for bad in ["-1", "1.5", "\"latest\"", "null", "[0]", "18446744073709551616"] {
        let body =
            format!(r#"{{"commits": [{{"key": "a", "payload": 1, "expected_revision": {bad}}}]}}"#);
        let e = parse_str(JSON, &body).unwrap_err().to_string();
        assert!(e.starts_with("commit 0: \"expected_revision\""), "{bad}: {e}");
    }
    // Without a key it parses (the streams endpoint gives every commit the path's key); the
    // plain endpoint refuses it (`streams::check_expectations_have_streams`).
    let b =
        parse_str(JSON, r#"{"commits": [{"payload": 1}, {"payload": 1, "expected_revision": 0}]}"#)
            .unwrap();
    let e = crate::streams::check_expectations_have_streams(&b).unwrap_err();
    assert_eq!(e.to_string(), "commit 1: \"expected_revision\" needs a \"key\"");
    let mut b = b;
    crate::streams::bind(&mut b, Box::from(&b"k"[..]), Expect::Any).unwrap();
    assert!(crate::streams::check_expectations_have_streams(&b).is_ok());
}
