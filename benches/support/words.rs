//! The words a bench is run with: its arguments (cargo's own flags, which start with
//! `-`, left out) and `INQUEST_BENCH` (comma or space separated), lowercased.

pub fn words() -> Vec<String> {
    let env = std::env::var("INQUEST_BENCH").unwrap_or_default();
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .chain(env.split(|c: char| c == ',' || c.is_whitespace()).map(str::to_string))
        .map(|w| w.trim().to_ascii_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}
