//! Percent-encoding for URLs: every byte but RFC 3986's unreserved characters
//! (`A-Z a-z 0-9 - . _ ~`) becomes `%XX`. That is safe in a path segment, a query
//! value and a form field alike, and decodes the same everywhere.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
const UNRESERVED_AND_SLASH: &AsciiSet = &UNRESERVED.remove(b'/');

/// One path segment, query value or form field.
pub fn encode(text: &str) -> String {
    utf8_percent_encode(text, UNRESERVED).to_string()
}

/// A path of several segments, or a local path carried in a query: `/` kept.
pub fn encode_keeping_slashes(text: &str) -> String {
    utf8_percent_encode(text, UNRESERVED_AND_SLASH).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unreserved_characters_stay() {
        assert_eq!(
            encode("manual__2026-01-01T00:00:00+00:00 ~ä/x"),
            "manual__2026-01-01T00%3A00%3A00%2B00%3A00%20~%C3%A4%2Fx"
        );
        assert_eq!(encode_keeping_slashes("/a b/c?"), "/a%20b/c%3F");
    }
}
