//! Strategies several targets share.

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value};

/// A mutation of bytes: what fuzzers do to well-formed input.
#[derive(Debug, Clone)]
pub enum Edit {
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Replace(Index, u8),
    Delete(Index, usize),
    Repeat(Index, usize, usize),
}

/// Bytes that break or confuse the formats here: JSON and TOML punctuation, line
/// ends, the agent's 0xFF sentinel, truncated and invalid UTF-8.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"=",
    b"\n",
    b"\r\n",
    b"\r",
    b"\0",
    b"\xff",
    b"\xc3",
    b"\xe2\x82",
    b"\xed\xa0\x80",
    b"'''",
    b"\"\"\"",
    b"#",
    b" ",
    b"\t",
    b"-1",
    b"0",
    b"1e400",
    b"18446744073709551616",
    b"nan",
    b"inf",
    b"true",
    b"null",
    b"\\u0000",
    b"\\ud800",
    b"\xef\xbb\xbf",
];

pub fn token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::sample::select(TOKENS).prop_map(<[u8]>::to_vec),
        1 => prop::collection::vec(any::<u8>(), 1..8),
    ]
}

pub fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        1 => any::<Index>().prop_map(Edit::Truncate),
        3 => (any::<Index>(), token()).prop_map(|(at, t)| Edit::Insert(at, t)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Edit::Replace(at, b)),
        2 => (any::<Index>(), 1usize..16).prop_map(|(at, n)| Edit::Delete(at, n)),
        1 => (any::<Index>(), 1usize..32, 1usize..64)
            .prop_map(|(at, len, times)| Edit::Repeat(at, len, times)),
    ]
}

pub fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let at = |i: &Index| i.index(bytes.len() + 1);
    match edit {
        Edit::Truncate(i) => {
            let at = at(i);
            bytes.truncate(at);
        }
        Edit::Insert(i, token) => {
            let at = at(i);
            bytes.splice(at..at, token.iter().copied());
        }
        Edit::Replace(i, b) => {
            if !bytes.is_empty() {
                let at = i.index(bytes.len());
                bytes[at] = *b;
            }
        }
        Edit::Delete(i, n) => {
            let at = at(i);
            let end = (at + n).min(bytes.len());
            bytes.drain(at..end);
        }
        Edit::Repeat(i, len, times) => {
            let at = at(i);
            let end = (at + len).min(bytes.len());
            let piece = bytes[at..end].to_vec();
            for _ in 0..*times {
                bytes.splice(end..end, piece.iter().copied());
            }
        }
    }
}

/// Bytes nested `depth` deep: `[[[...]]]` or `{"a":{"a":...}}`, past any sane
/// recursion limit when deep.
pub fn nested_json(depth: usize, objects: bool) -> Vec<u8> {
    let (open, close): (&[u8], &[u8]) = if objects {
        (b"{\"a\":", b"}")
    } else {
        (b"[", b"]")
    };
    let mut out = open.repeat(depth);
    out.extend_from_slice(b"1");
    out.extend_from_slice(&close.repeat(depth));
    out
}

/// A long string, mostly of one repeated piece (a flood, not random noise).
pub fn huge_string(max: usize) -> impl Strategy<Value = String> {
    (
        prop::sample::select(&["a", "}", "{", "\\\"", "\u{fffd}", "é", " ", "\"}", "A=="][..]),
        1usize..max,
    )
        .prop_map(|(piece, n)| piece.repeat(n))
}

/// Any JSON value, with the odd numbers, strings and shapes a peer may send.
pub fn json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        2 => Just(Value::Null),
        2 => any::<bool>().prop_map(Value::from),
        2 => any::<i64>().prop_map(Value::from),
        2 => any::<u64>().prop_map(Value::from),
        2 => any::<f64>().prop_map(Value::from),
        2 => prop::sample::select(&[0u64, 1, 2, 3, u64::MAX, 1 << 53][..]).prop_map(Value::from),
        4 => any::<String>().prop_map(Value::from),
        1 => huge_string(20_000).prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
    .boxed()
}

/// Object keys: mostly the ones the protocols use, so shapes get close to real.
pub fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(
            &[
                "return", "error", "event", "id", "data", "timestamp", "seconds",
                "microseconds", "class", "desc", "QMP", "version", "qemu", "major",
                "minor", "micro", "package", "capabilities", "pid", "exited", "exitcode",
                "signal", "out-data", "err-data", "out-truncated", "count", "buf-b64",
                "eof", "supported_commands", "name", "enabled",
            ][..]
        )
        .prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

/// A JSON document as bytes: well-formed, deeply nested, or edited.
pub fn wire(value: impl Strategy<Value = Value> + Clone) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => value.clone().prop_map(|v| v.to_string().into_bytes()),
        1 => (1usize..400, any::<bool>()).prop_map(|(d, o)| nested_json(d, o)),
        3 => (value, prop::collection::vec(edit(), 1..4)).prop_map(|(v, edits)| {
            let mut bytes = v.to_string().into_bytes();
            for e in &edits {
                apply(&mut bytes, e);
            }
            bytes
        }),
    ]
}

/// The value of a wrong type (or shape) for wherever it is put.
pub fn wrong_type() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        any::<String>().prop_map(Value::from),
        Just(Value::Array(vec![])),
        Just(Value::Object(Map::new())),
    ]
}
