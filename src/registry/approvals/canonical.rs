//! Canonical JSON: one text per JSON value, so that a digest names exactly one action.
//!
//! Object keys are sorted recursively by code point (Rust's `str` order, which is also
//! UTF-8 byte order and Python's `sorted`), there is no whitespace outside strings,
//! strings are escaped minimally (`\"`, `\\`, `\b \f \n \r \t`, other control
//! characters as lowercase `\u00xx`, nothing else), and numbers are printed as
//! serde_json prints them. Written out by hand rather than through `serde_json::to_string`
//! because that follows the map's iteration order, which a dependency enabling
//! serde_json's `preserve_order` feature would silently change.
//!
//! A client computing the same digest in Python: `json.dumps(v, sort_keys=True,
//! separators=(",", ":"), ensure_ascii=False)` agrees for every value whose numbers are
//! integers.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The canonical text of `value`.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, &mut out);
    out
}

/// Lowercase hex SHA-256 of the canonical text of `value`: the digest an approval is bound to.
pub fn action_digest(value: &Value) -> String {
    sha256_hex(canonical_json(value).as_bytes())
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        // `Number`'s Display is what serde_json's serializer writes.
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_value(item, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn canonical_text_table() {
        let cases = [
            (json!(null), "null"),
            (json!(true), "true"),
            (json!(-0), "0"),
            (json!(12), "12"),
            (json!(-7), "-7"),
            (json!(1.5), "1.5"),
            (json!(1e21), "1e+21"),
            (json!(u64::MAX), "18446744073709551615"),
            // DEL (U+007F) and non-ASCII pass through unescaped, as serde_json and Python write them.
            (json!("a\"b\\c\n\t\u{1}\u{7f}é/"), "\"a\\\"b\\\\c\\n\\t\\u0001\u{7f}é/\""),
            (json!([]), "[]"),
            (json!({}), "{}"),
            (json!({"b": 1, "a": [3, {"z": null, "y": "x"}], "A": 0}), r#"{"A":0,"a":[3,{"y":"x","z":null}],"b":1}"#),
            // Code-point order: "é" (U+00E9) after "z", "Z" before "a".
            (json!({"é": 1, "z": 2, "a": 3, "Z": 4}), r#"{"Z":4,"a":3,"z":2,"é":1}"#),
        ];
        for (value, expected) in cases {
            assert_eq!(canonical_json(&value), expected, "{value:?}");
        }
    }

    #[test]
    fn key_order_and_whitespace_do_not_change_the_digest() {
        let a: Value = serde_json::from_str(r#"{"tool": "clear_task", "args": {"dag": "d", "task": "t"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"args":{"task":"t","dag":"d"},"tool":"clear_task"}"#).unwrap();
        assert_eq!(action_digest(&a), action_digest(&b));
        let c = json!({"tool": "clear_task", "args": {"dag": "d", "task": "u"}});
        assert_ne!(action_digest(&a), action_digest(&c));
    }

    #[test]
    fn digest_known_answer() {
        // Computed independently: printf '%s' '{"args":{"dag":"d","task":"t"},"tool":"clear_task"}' | sha256sum
        let v = json!({"tool": "clear_task", "args": {"task": "t", "dag": "d"}});
        assert_eq!(canonical_json(&v), r#"{"args":{"dag":"d","task":"t"},"tool":"clear_task"}"#);
        assert_eq!(action_digest(&v), KNOWN_DIGEST);
    }

    const KNOWN_DIGEST: &str = "baea19b2053adff99365b42b02a12f77aff7238a597e7fc20a20b4e46c9f2a95";
}
