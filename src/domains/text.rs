//! How domain settings are written in configuration: durations as people write them
//! (`30s`, `2m`) and secrets as plain strings that stay out of `Debug`.

use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

pub(crate) fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
    String::deserialize(d).map(SecretString::from)
}

pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}
