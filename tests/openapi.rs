//! The checked-in OpenAPI description is the one the code generates.
//! Regenerate with `UPDATE_OPENAPI=1 cargo test --test all openapi`.

#[test]
fn checked_in_description_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
    let generated = inquest::web::openapi::document();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(checked_in == generated, "docs/openapi.json is stale; run UPDATE_OPENAPI=1 cargo test --test all openapi");
    let doc: serde_json::Value = serde_json::from_str(&checked_in).unwrap();
    for path in [
        "/v1/alerts/{source}",
        "/v1/investigations",
        "/v1/investigations/{id}",
        "/v1/investigations/{id}/events",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is described");
    }
}
