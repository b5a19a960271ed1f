//! Fuzz target: arbitrary bytes through every decoder and through recovery's scan of an open
//! segment under each checkpoint policy. Nothing may panic, and a scan's answer must stay
//! inside the input (end, dirty range, torn offset).
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage::format;
use storage::recovery::{self, Known};

fuzz_target!(|data: &[u8]| {
    let tag = data.get(..4).map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()));
    let _ = format::decode_frame(data, tag);
    let _ = format::decode_header(data);
    let _ = format::decode_footer(data);
    let _ = format::decode_meta(data);
    let _ = format::decode_checkpoint(data, 4);
    for known in [Known::Whole, Known::Prefix(data.len() / 2), Known::Nothing] {
        match recovery::scan_open_segment(data, tag, 512, known) {
            Ok(scan) => {
                assert!(scan.end <= data.len().max(format::HEADER_LEN));
                assert!(scan.dirty_end <= data.len().max(scan.end));
                if let Some((at, _)) = scan.torn_at {
                    assert!(at <= data.len());
                }
            }
            Err((at, _)) => assert!(at <= data.len()),
        }
    }
});
