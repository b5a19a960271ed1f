//! Unit tests of the codec: round trips, every rejection path, and "never panics" on any bytes.

use super::*;
use crate::recovery::Known;
use proptest::prelude::*;

fn record<'a>(key: &'a [u8], payload: &'a [u8], inverse: &'a [u8]) -> NewRecord<'a> {
    NewRecord { key, payload, inverse, revision: 7, aux: 9, flags: flags::CONFLICT }
}

fn encoded(tag: u32, id: u128, r: &NewRecord<'_>) -> Vec<u8> {
    let mut buf = vec![0xAA; frame_len_padded(r.key.len(), r.payload.len(), r.inverse.len())];
    let n = encode_frame(&mut buf, tag, Ulid(id), r.flags, r);
    assert_eq!(n, buf.len());
    buf
}

#[test]
fn frame_round_trips() {
    let r = record(b"user-1", b"{\"a\":1}", b"{\"a\":0}");
    let buf = encoded(0xDEADBEEF, 42, &r);
    assert_eq!(buf.len() % ALIGN, 0);
    let (f, padded) = decode_frame(&buf, 0xDEADBEEF).unwrap();
    assert_eq!(padded, buf.len());
    assert_eq!(
        f,
        FrameRef {
            id: Ulid(42),
            flags: flags::CONFLICT,
            revision: 7,
            aux: 9,
            key: b"user-1",
            payload: b"{\"a\":1}",
            inverse: b"{\"a\":0}"
        }
    );
    assert!(buf[FRAME_HEADER_LEN + 6 + 7 + 7..].iter().all(|&b| b == 0), "padding is zeroed");
}

fn check_rejects(buf: &[u8], tag: u32, expected: FormatError) {
    assert_eq!(decode_frame(buf, tag).unwrap_err(), expected);
}

#[test]
fn frame_rejections() {
    let r = record(b"k", b"payload", b"");
    let good = encoded(1, 5, &r);
    check_rejects(&[], 1, FormatError::Empty);
    check_rejects(&[0u8; 64], 1, FormatError::Empty);
    check_rejects(&good[..40], 1, FormatError::BadLength { len: get_u32(&good, 0), available: 40 });
    check_rejects(&good, 2, FormatError::ForeignTag { expected: 2, got: 1 });
    let mut flipped = good.clone();
    flipped[FRAME_HEADER_LEN + 2] ^= 1;
    assert!(matches!(decode_frame(&flipped, 1), Err(FormatError::ChecksumMismatch { .. })));
    let mut short = good.clone();
    short[0..4].copy_from_slice(&8u32.to_le_bytes());
    check_rejects(&short, 1, FormatError::BadLength { len: 8, available: good.len() });
}

/// Rewrites a field and fixes the checksum, to reach the checks after it.
fn with_field(mut buf: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
    let len = get_u32(&buf, 0) as usize;
    let crc = crc32c::crc32c(&buf[8..len]);
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    buf
}

#[test]
fn frame_rejects_unknown_flags_and_bad_inner_lengths() {
    let good = encoded(1, 5, &record(b"k", b"payload", b""));
    let unknown = with_field(good.clone(), 12, &(1u16 << 15).to_le_bytes());
    check_rejects(&unknown, 1, FormatError::Reserved { flags: 1 << 15 });
    let reserved = with_field(good.clone(), 52, &1u32.to_le_bytes());
    assert!(matches!(decode_frame(&reserved, 1), Err(FormatError::Reserved { .. })));
    let long_key = with_field(good.clone(), 14, &100u16.to_le_bytes());
    assert!(matches!(
        decode_frame(&long_key, 1),
        Err(FormatError::BadInnerLength { key_len: 100, .. })
    ));
}

#[test]
fn header_round_trips_and_detects_damage() {
    let h = SegmentHeader {
        state: SegmentState::Sealed,
        nonce: 0x0123_4567_89AB_CDEF,
        shard: 3,
        seq: 17,
        created_ms: 1_700_000_000_000,
        footer_offset: 4096,
    };
    let b = encode_header(&h);
    assert_eq!(&b[0..8], b"SHLGSEG\0");
    assert_eq!(decode_header(&b), Ok(h));
    assert_eq!(h.tag(), 0x89AB_CDEF);
    let mut bad = b;
    bad[33] ^= 1;
    assert!(matches!(decode_header(&bad), Err(FormatError::ChecksumMismatch { .. })));
    let mut magic = b;
    magic[0] = b'X';
    assert!(matches!(decode_header(&magic), Err(FormatError::BadMagic { .. })));
    let mut version = b;
    version[8] = 2;
    assert!(matches!(
        decode_header(&version),
        Err(FormatError::UnsupportedVersion { got: 2, supported: 1 })
    ));
}

#[test]
fn footer_and_meta_round_trip() {
    let f = Footer {
        count: 3,
        first_id: 10,
        last_id: 12,
        data_end: 640,
        index: vec![(10, 64), (12, 400)],
    };
    assert_eq!(decode_footer(&encode_footer(&f)), Ok(f));
    assert!(decode_footer(&[0u8; 10]).is_err());
    let m = LogMeta { shards: 8, created_ms: 5, max_age_ms: 0, max_bytes: 1 << 30 };
    assert_eq!(decode_meta(&encode_meta(&m)), Ok(m));
    let mut bad = encode_meta(&m);
    bad[13] ^= 1;
    assert!(decode_meta(&bad).is_err());
}

#[test]
fn checkpoint_round_trips_and_detects_damage() {
    let c = Checkpoint {
        generation: 9,
        shards: vec![
            CheckpointEntry { seq: 3, durable_len: 4096 },
            CheckpointEntry { seq: 1, durable_len: 64 },
        ],
    };
    let b = encode_checkpoint(&c);
    assert_eq!(b.len(), checkpoint_slot_len(2));
    assert_eq!(decode_checkpoint(&b, 2), Ok(c));
    assert!(decode_checkpoint(&b, 3).is_err(), "shard count must match");
    let mut bad = b.clone();
    bad[30] ^= 1;
    assert!(matches!(decode_checkpoint(&bad, 2), Err(FormatError::ChecksumMismatch { .. })));
}

proptest! {
    /// Arbitrary bytes never panic any decoder.
    #[test]
    fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), tag in any::<u32>()) {
        let _ = decode_frame(&bytes, tag);
        let _ = decode_header(&bytes);
        let _ = decode_footer(&bytes);
        let _ = decode_meta(&bytes);
        let _ = decode_checkpoint(&bytes, 3);
        for known in [Known::Whole, Known::Prefix(bytes.len() / 2), Known::Nothing] {
            let _ = crate::recovery::scan_open_segment(&bytes, tag, 512, known);
        }
    }

    /// Any record round-trips.
    #[test]
    fn any_record_round_trips(
        key in prop::collection::vec(any::<u8>(), 0..40),
        payload in prop::collection::vec(any::<u8>(), 0..300),
        inverse in prop::collection::vec(any::<u8>(), 0..40),
        id in any::<u128>(), tag in any::<u32>(), revision in any::<u64>(),
    ) {
        let r = NewRecord { key: &key, payload: &payload, inverse: &inverse, revision, aux: 1, flags: flags::BATCH_END };
        let buf = encoded(tag, id, &r);
        let (f, _) = decode_frame(&buf, tag).unwrap();
        prop_assert_eq!(f.key, &key[..]);
        prop_assert_eq!(f.payload, &payload[..]);
        prop_assert_eq!(f.inverse, &inverse[..]);
        prop_assert_eq!(f.id, Ulid(id));
        prop_assert_eq!(f.revision, revision);
    }
}
