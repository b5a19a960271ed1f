//! Whether bytes are one JSON value (RFC 8259), checked without building anything: the test
//! a stored payload passes before it is copied as it is into a rendered commit. It runs for
//! every commit of every page and tail, so it is a plain byte loop with a class table, about
//! three times faster than `serde_json`'s `IgnoredAny` on 100-byte objects (`cargo bench -p
//! ingest --bench render`).
//!
//! Never more permissive than `serde_json`: nesting deeper than `JSON_DEPTH_MAX` is refused, as
//! `serde_json` refuses it, and text that is not UTF-8 is refused. What it is not: a parser (no
//! values, no positions in errors).

/// Deepest nesting of arrays and objects accepted (`serde_json` stops at 128).
pub const JSON_DEPTH_MAX: usize = 127;

/// Whether `b` is exactly one JSON value, with optional whitespace around it.
pub fn is_json(b: &[u8]) -> bool {
    if !is_ascii(b) && std::str::from_utf8(b).is_err() {
        return false;
    }
    let mut v = Validator { b, i: 0 };
    v.ws();
    if !v.value(0) {
        return false;
    }
    v.ws();
    v.i == b.len()
}

/// Whether every byte is ASCII: sixteen bytes at a time, the rest in one pass without a branch
/// a byte (`<[u8]>::is_ascii` goes byte by byte after its last 64-byte block, a third of the
/// check on 100-byte payloads).
fn is_ascii(b: &[u8]) -> bool {
    let or = |c: &[u8]| c.iter().fold(0u8, |acc, &x| acc | x);
    let mut chunks = b.chunks_exact(16);
    chunks.all(|c| or(c) < 0x80) && or(chunks.remainder()) < 0x80
}

/// Whether `b` can be JSON at all: its first byte after whitespace can start a value (the
/// cases of `Validator::value`).
pub fn may_start_value(b: &[u8]) -> bool {
    let first = b.iter().find(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r'));
    matches!(first, Some(b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n'))
}

struct Validator<'a> {
    b: &'a [u8],
    i: usize,
}

/// Bytes a string holds without a closer look: not `"`, not `\`, not a control character.
const PLAIN: [bool; 256] = {
    let mut t = [true; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = false;
        c += 1;
    }
    t[b'"' as usize] = false;
    t[b'\\' as usize] = false;
    t
};

/// The end of the run of plain string bytes ([`PLAIN`]) from `i`: sixteen bytes at a time while
/// none of them can end it (a branch-free test the compiler turns into vector compares), then
/// byte by byte.
fn plain_run(b: &[u8], mut i: usize) -> usize {
    while let Some(chunk) = b.get(i..i + 16) {
        let stops =
            chunk.iter().fold(false, |any, &c| any | (c < 0x20) | (c == b'"') | (c == b'\\'));
        if stops {
            break;
        }
        i += 16;
    }
    plain_bytes(b, i)
}

/// The end of the run of plain string bytes from `i`, byte by byte.
fn plain_bytes(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && PLAIN[b[i] as usize] {
        i += 1;
    }
    i
}

impl Validator<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> bool {
        match self.peek() {
            Some(b'{') => depth < JSON_DEPTH_MAX && self.object(depth + 1),
            Some(b'[') => depth < JSON_DEPTH_MAX && self.array(depth + 1),
            Some(b'"') => self.string(),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => false,
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            true
        } else {
            false
        }
    }

    fn object(&mut self, depth: usize) -> bool {
        self.i += 1; // {
        self.ws();
        if self.eat(b'}') {
            return true;
        }
        loop {
            if self.peek() != Some(b'"') || !self.string() {
                return false;
            }
            self.ws();
            if !self.eat(b':') {
                return false;
            }
            self.ws();
            if !self.value(depth) {
                return false;
            }
            self.ws();
            if self.eat(b'}') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
            self.ws();
        }
    }

    fn array(&mut self, depth: usize) -> bool {
        self.i += 1; // [
        self.ws();
        if self.eat(b']') {
            return true;
        }
        loop {
            if !self.value(depth) {
                return false;
            }
            self.ws();
            if self.eat(b']') {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
            self.ws();
        }
    }

    fn string(&mut self) -> bool {
        self.i += 1; // "
        loop {
            self.i = plain_run(self.b, self.i);
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return true;
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            self.i += 1;
                            let Some(unit) = self.hex4() else { return false };
                            // A surrogate must come as a lead and a trail escape, in order.
                            if (0xDC00..=0xDFFF).contains(&unit) {
                                return false;
                            }
                            if (0xD800..=0xDBFF).contains(&unit) {
                                if !self.b[self.i..].starts_with(b"\\u") {
                                    return false;
                                }
                                self.i += 2;
                                if !self.hex4().is_some_and(|t| (0xDC00..=0xDFFF).contains(&t)) {
                                    return false;
                                }
                            }
                        }
                        _ => return false,
                    }
                }
                // A control character, or the end.
                _ => return false,
            }
        }
    }

    /// Four hex digits, as a UTF-16 code unit.
    fn hex4(&mut self) -> Option<u16> {
        let hex = self.b.get(self.i..self.i + 4)?;
        let text = std::str::from_utf8(hex).ok()?;
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        self.i += 4;
        u16::from_str_radix(text, 16).ok()
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> bool {
        self.eat(b'-');
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return false,
        }
        if self.eat(b'.') && self.digits() == 0 {
            return false;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if self.digits() == 0 {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn serde_ok(b: &[u8]) -> bool {
        serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok()
    }

    #[test]
    fn the_ascii_check_sees_a_high_byte_anywhere() {
        for len in 0..70 {
            let mut v = vec![b'a'; len];
            assert!(is_ascii(&v));
            for at in 0..len {
                v[at] = 0x80;
                assert!(!is_ascii(&v), "len {len} at {at}");
                v[at] = 0x7f;
                assert!(is_ascii(&v));
            }
        }
    }

    #[test]
    fn the_grammar() {
        for ok in [
            "0",
            "-0",
            "12",
            "-1.5e+10",
            "1E-2",
            "1e400",
            "true",
            "false",
            "null",
            "\"\"",
            "\"a\\\"b\\\\c\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\"",
            "\"é ü 日本\"",
            "[]",
            "{}",
            " [1, [2, {\"a\": []}], \"x\"] ",
            "{\"a\":{\"b\":{\"c\":null}}}",
            "\n\t{ }\r\n",
        ] {
            assert!(is_json(ok.as_bytes()), "{ok}");
            assert!(serde_ok(ok.as_bytes()), "serde: {ok}");
        }
        for bad in [
            "",
            " ",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "+1",
            "tru",
            "nul",
            "True",
            "[",
            "]",
            "[1,]",
            "[,1]",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{a:1}",
            "{'a':1}",
            "\"abc",
            "\"a\nb\"",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\u12G4\"",
            "1 2",
            "[1] x",
            "\"\u{1}\"",
            "NaN",
            "Infinity",
            "{\"a\":1}}",
            "[[1]",
            "\"\\uD800\"",
            "\"\\uDE00\"",
            "\"\\uD83Dx\"",
            "\"\\uD83D\\u0041\"",
        ] {
            assert!(!is_json(bad.as_bytes()), "{bad:?}");
        }
        assert!(!is_json(b"\"\xff\""), "not UTF-8");
        assert!(!is_json(b"\"\xc3\""), "truncated UTF-8");
    }

    #[test]
    fn strings_are_checked_at_every_offset_of_the_word_scan() {
        for len in 0..24 {
            for at in 0..=len {
                let x = |s: &str| format!("\"{}{s}{}\"", "x".repeat(at), "x".repeat(len - at));
                for (inner, ok) in [
                    ("\\\"", true),
                    ("\\\\", true),
                    ("\\u00e9", true),
                    ("é", true),
                    ("\u{7f}", true),
                    ("\u{1f}", false),
                    ("\t", false),
                    ("\\", false),
                    ("\"", false),
                ] {
                    let s = x(inner);
                    assert_eq!(is_json(s.as_bytes()), ok, "{s:?}");
                    assert_eq!(serde_ok(s.as_bytes()), ok, "serde: {s:?}");
                }
            }
        }
    }

    #[test]
    fn nesting_stops_before_serde_json_does() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(is_json(deep(JSON_DEPTH_MAX).as_bytes()));
        assert!(!is_json(deep(JSON_DEPTH_MAX + 1).as_bytes()));
        assert!(!is_json(deep(100_000).as_bytes()), "deep input is refused, not a stack overflow");
        assert!(serde_ok(deep(JSON_DEPTH_MAX).as_bytes()));
    }

    /// Any JSON value, as `serde_json` writes it (compact and pretty).
    fn value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
            any::<String>().prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
                prop::collection::btree_map(any::<String>(), inner, 0..8)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn every_value_serde_json_writes_is_accepted(v in value()) {
            prop_assert!(is_json(serde_json::to_string(&v).unwrap().as_bytes()));
            prop_assert!(is_json(serde_json::to_string_pretty(&v).unwrap().as_bytes()));
            let spaced = format!(" \n{v}");
            prop_assert!(may_start_value(spaced.as_bytes()));
        }

        /// Mutated JSON (bytes replaced, inserted or cut): accepted only if `serde_json`
        /// accepts it too, so a copied payload is always valid JSON.
        #[test]
        fn never_more_permissive_than_serde_json(
            v in value(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<prop::sample::Index>()), 1..4),
        ) {
            const BYTES: &[u8] = b"{}[]\",:\\0123456789.eE+-tfnulDd \n\t\x01\xc3\xa9";
            let mut b = serde_json::to_vec(&v).unwrap();
            for (at, kind, byte) in edits {
                let i = at.index(b.len() + 1);
                let byte = BYTES[byte.index(BYTES.len())];
                match kind {
                    0 if i < b.len() => b[i] = byte,
                    1 => b.insert(i, byte),
                    2 if i < b.len() => { b.remove(i); }
                    _ => b.truncate(i),
                }
            }
            if is_json(&b) {
                prop_assert!(serde_ok(&b), "accepted what serde_json refuses: {:?}", String::from_utf8_lossy(&b));
            }
        }

        #[test]
        fn arbitrary_bytes_agree_with_serde_json(b in prop::collection::vec(any::<u8>(), 0..64)) {
            if is_json(&b) {
                prop_assert!(serde_ok(&b));
            }
            // The first-byte test never turns away what serde_json takes.
            if serde_ok(&b) {
                prop_assert!(may_start_value(&b));
            }
        }
    }
}
