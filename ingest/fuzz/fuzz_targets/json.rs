//! Fuzz target: `ingest::json::is_json` against `serde_json`, on arbitrary bytes. Its
//! contract (`ingest/src/json.rs`): never more permissive than `serde_json`, so `is_json(b)`
//! implies `serde_json::from_slice::<IgnoredAny>(b)` accepts `b`; and `may_start_value` never
//! turns away what `serde_json` takes. The other way: a value `serde_json` parses in full
//! (strings checked, numbers in range) and nests at most `JSON_DEPTH_MAX` deep is accepted.
#![no_main]

use ingest::json::{JSON_DEPTH_MAX, is_json, may_start_value};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Nesting depth of arrays and objects (a scalar is 0).
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fuzz_target!(|b: &[u8]| {
    let ours = is_json(b);
    let serde_ok = serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok();
    if ours {
        assert!(
            serde_ok,
            "is_json accepts what serde_json refuses: {:?}",
            String::from_utf8_lossy(b)
        );
    }
    if serde_ok {
        assert!(
            may_start_value(b),
            "may_start_value turns away JSON: {:?}",
            String::from_utf8_lossy(b)
        );
    }
    if let Ok(v) = serde_json::from_slice::<Value>(b)
        && depth(&v) <= JSON_DEPTH_MAX
    {
        assert!(ours, "is_json refuses JSON serde_json parses: {:?}", String::from_utf8_lossy(b));
    }
    assert_eq!(ours, is_json(b), "not deterministic");
});
