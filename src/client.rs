//! Helper commands that talk to a running Inquest over its HTTP API.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use secrecy::ExposeSecret;

use crate::cli::SourceArg;
use crate::config::Config;
use crate::intake::auth::hmac_sha256;

fn base_url(cfg: &Config, url: Option<String>) -> String {
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    url.unwrap_or_else(|| format!("{scheme}://{}", cfg.listen)).trim_end_matches('/').to_string()
}

fn http() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().context("building the HTTP client")
}

/// `inquest alert send`.
pub async fn send_alert(
    cfg: &Config,
    source: SourceArg,
    file: &Path,
    url: Option<String>,
    token: Option<String>,
) -> anyhow::Result<ExitCode> {
    let body = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let (name, configured) = match source {
        SourceArg::Alertmanager => ("alertmanager", cfg.intake.alertmanager.tokens.first()),
        SourceArg::Grafana => ("grafana", cfg.intake.grafana.tokens.first()),
        SourceArg::Pagerduty => ("pagerduty", None),
        SourceArg::Generic => ("generic", cfg.intake.generic.tokens.first()),
    };
    let endpoint = format!("{}/v1/alerts/{name}", base_url(cfg, url));
    let mut req = http()?.post(&endpoint).header("content-type", "application/json");
    if let Some(t) = token.or_else(|| configured.map(|s| s.expose_secret().to_string())) {
        req = req.bearer_auth(t);
    }
    match source {
        SourceArg::Grafana => {
            if let Some(secret) = &cfg.intake.grafana.hmac_secret {
                let key = secret.expose_secret().as_bytes();
                match &cfg.intake.grafana.timestamp_header {
                    Some(ts_header) => {
                        let ts = chrono::Utc::now().timestamp().to_string();
                        let sig = hex::encode(hmac_sha256(key, &[ts.as_bytes(), b":", &body]));
                        req = req
                            .header(ts_header.as_str(), ts)
                            .header(cfg.intake.grafana.signature_header.as_str(), sig);
                    }
                    None => {
                        let sig = hex::encode(hmac_sha256(key, &[&body]));
                        req = req.header(cfg.intake.grafana.signature_header.as_str(), sig);
                    }
                }
            }
        }
        SourceArg::Pagerduty => {
            if let Some(secret) = cfg.intake.pagerduty.signing_secrets.first() {
                let sig = hex::encode(hmac_sha256(secret.expose_secret().as_bytes(), &[&body]));
                req = req.header("x-pagerduty-signature", format!("v1={sig}"));
            }
            req = req.header("x-webhook-id", uuid::Uuid::now_v7().to_string());
        }
        SourceArg::Alertmanager | SourceArg::Generic => {}
    }
    let resp = req.body(body).send().await.with_context(|| format!("sending to {endpoint}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    println!("{text}");
    if status.is_success() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("inquest: {endpoint} answered {status}");
        Ok(ExitCode::FAILURE)
    }
}

/// `inquest investigations list`.
pub async fn list_investigations(
    cfg: &Config,
    url: Option<String>,
    state: Option<String>,
    team: Option<String>,
    since: Option<String>,
    limit: i64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let endpoint = format!("{}/v1/investigations", base_url(cfg, url));
    let mut query: Vec<(&str, String)> = vec![("limit", limit.to_string())];
    for (k, v) in [("state", state), ("team", team), ("since", since)] {
        if let Some(v) = v {
            query.push((k, v));
        }
    }
    let value = get_json(&endpoint, &query).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<36}  {:<10}  {:<16}  {:<20}  TITLE", "ID", "STATE", "TEAM", "CREATED");
    for inv in value["investigations"].as_array().into_iter().flatten() {
        println!(
            "{:<36}  {:<10}  {:<16}  {:<20}  {}",
            inv["id"].as_str().unwrap_or(""),
            inv["state"].as_str().unwrap_or(""),
            inv["team"].as_str().unwrap_or(""),
            inv["created_at"].as_str().unwrap_or("").get(..19).unwrap_or(""),
            inv["title"].as_str().unwrap_or(""),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `inquest investigations show`.
pub async fn show_investigation(cfg: &Config, url: Option<String>, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let endpoint = format!("{}/v1/investigations/{id}", base_url(cfg, url));
    let v = get_json(&endpoint, &[]).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}  [{}]  team {}",
        v["title"].as_str().unwrap_or(""),
        v["state"].as_str().unwrap_or(""),
        v["team"].as_str().unwrap_or("")
    );
    println!("id {}  opened {}", v["id"].as_str().unwrap_or(""), v["created_at"].as_str().unwrap_or(""));
    if let Some(s) = v["summary"].as_str() {
        println!("summary: {s}");
    }
    println!("\nalerts:");
    for a in v["alerts"].as_array().into_iter().flatten() {
        println!(
            "  {} {} {}",
            a["status"].as_str().unwrap_or(""),
            a["fingerprint"].as_str().unwrap_or(""),
            a["labels"]
        );
    }
    println!("\nevents:");
    for e in v["events"].as_array().into_iter().flatten() {
        println!(
            "  #{:<4} {}  {:<24} {}",
            e["seq"],
            e["at"].as_str().unwrap_or(""),
            e["kind"].as_str().unwrap_or(""),
            e["data"]
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn get_json(endpoint: &str, query: &[(&str, String)]) -> anyhow::Result<serde_json::Value> {
    let resp = http()?.get(endpoint).query(query).send().await.with_context(|| format!("requesting {endpoint}"))?;
    let status = resp.status();
    let value: serde_json::Value = resp.json().await.with_context(|| format!("reading the answer of {endpoint}"))?;
    if !status.is_success() {
        bail!("{endpoint} answered {status}: {}", value["message"].as_str().unwrap_or(""));
    }
    Ok(value)
}
