//! A real Apache Airflow 3.3.2 for tests: installed once into a cached venv
//! (`~/.cache/inquest/airflow-3.3.2/venv`, by `airflow/install.sh`) and started by
//! `airflow/run.sh` (api-server, scheduler, dag-processor on 127.0.0.1, a free port and
//! a temporary AIRFLOW_HOME) with the DAGs of `airflow/dags/`.
//!
//! Starting takes from 15 s to a minute, so one instance serves the whole test process
//! ([`shared`]). A `static` is never dropped: `run.sh` watches this process and stops
//! every Airflow process (its process group and their descendants) when it is gone. An
//! owned [`Airflow`] also stops them on drop.
//!
//! Before [`shared`] returns, the failing DAGs have been triggered and their runs are
//! `failed`, so tests see real failed task instances, logs and an import error.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use inquest::domains::airflow::config::AirflowConfig;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::host::free_port;

pub const VERSION: &str = "3.3.2";
pub const USERNAME: &str = "admin";
pub const PASSWORD: &str = "admin";

/// The DAGs in `airflow/dags/` and what they do.
pub const FAILING_LOAD_DAG: &str = "orders_daily_load";
pub const FAILING_LOAD_TASK: &str = "load_orders_daily";
pub const TIMEOUT_DAG: &str = "slow_partition_sync";
pub const TIMEOUT_TASK: &str = "sync_partitions";
pub const HEALTHY_DAG: &str = "healthy_heartbeat";
/// Only the write tests touch this one.
pub const WRITES_DAG: &str = "inquest_writes";
pub const WRITES_TASK: &str = "quick";
pub const BROKEN_FILE: &str = "broken_import.py";
/// Its log carries a prompt injection aimed at agents.
pub const INJECTION_DAG: &str = "customer_export";
pub const INJECTION_TASK: &str = "export_customers";
const PARSED_DAGS: [&str; 5] = [FAILING_LOAD_DAG, TIMEOUT_DAG, HEALTHY_DAG, WRITES_DAG, INJECTION_DAG];

const SOURCE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/airflow");
/// Generous: the machine is shared, and a cold start under load takes about a minute.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(240);
const RUN_TIMEOUT: Duration = Duration::from_secs(180);
const TAIL_LINES: usize = 40;

/// A running Airflow.
pub struct Airflow {
    pub url: String,
    pub home: PathBuf,
    /// The `failed` runs made at start.
    pub failed_load_run: String,
    pub failed_timeout_run: String,
    pub failed_injection_run: String,
    child: Option<Child>,
}

static SHARED: OnceCell<Result<Airflow, String>> = OnceCell::const_new();

/// The instance shared by every test of this process, started on first use. A failed
/// start fails every test that asks, with the same message, without starting again.
pub async fn shared() -> &'static Airflow {
    let started = SHARED.get_or_init(|| async { Airflow::start().await }).await;
    match started {
        Ok(airflow) => airflow,
        Err(message) => panic!("{message}"),
    }
}

impl Airflow {
    /// Installs (once per machine), starts, waits until healthy and seeds failed runs.
    pub async fn start() -> Result<Airflow, String> {
        let venv = install().await?;
        let home = tempfile::Builder::new()
            .prefix("inquest-airflow-")
            .tempdir()
            .map_err(|e| format!("creating AIRFLOW_HOME: {e}"))?
            .keep();
        copy_dags(&home)?;
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let log = std::fs::File::create(home.join("run.log")).map_err(|e| format!("creating run.log: {e}"))?;
        let mut command = Command::new("bash");
        command
            .arg(Path::new(SOURCE_DIR).join("run.sh"))
            .arg(&venv)
            .arg(&home)
            .arg(port.to_string())
            .arg(std::process::id().to_string())
            .arg("cleanup")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(log));
        // Its own process group, so that stopping it reaches every Airflow process.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().map_err(|e| format!("starting {SOURCE_DIR}/run.sh: {e}"))?;
        let mut airflow = Airflow {
            url,
            home,
            failed_load_run: String::new(),
            failed_timeout_run: String::new(),
            failed_injection_run: String::new(),
            child: Some(child),
        };
        match airflow.prepare().await {
            Ok(()) => Ok(airflow),
            Err(why) => Err(format!("Airflow at {} did not come up: {why}\n{}", airflow.url, airflow.logs_tail())),
        }
    }

    async fn prepare(&mut self) -> Result<(), String> {
        self.wait_healthy().await?;
        let rest = self.rest().await?;
        let started = Instant::now();
        loop {
            let dags = rest.get("/dags?limit=100").await?;
            let errors = rest.get("/importErrors").await?;
            let ids: Vec<&str> =
                dags["dags"].as_array().into_iter().flatten().filter_map(|d| d["dag_id"].as_str()).collect();
            let broken = errors["import_errors"].as_array().into_iter().flatten().any(|e| e["filename"] == BROKEN_FILE);
            if PARSED_DAGS.iter().all(|d| ids.contains(d)) && broken {
                break;
            }
            if started.elapsed() > HEALTHY_TIMEOUT {
                return Err(format!("the DAGs were not parsed in time; DAGs {ids:?}, import errors {errors}"));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let load = rest.trigger(FAILING_LOAD_DAG).await?;
        let timeout = rest.trigger(TIMEOUT_DAG).await?;
        let injection = rest.trigger(INJECTION_DAG).await?;
        rest.wait_run_state(FAILING_LOAD_DAG, &load, "failed", RUN_TIMEOUT).await?;
        rest.wait_run_state(TIMEOUT_DAG, &timeout, "failed", RUN_TIMEOUT).await?;
        rest.wait_run_state(INJECTION_DAG, &injection, "failed", RUN_TIMEOUT).await?;
        self.failed_load_run = load;
        self.failed_timeout_run = timeout;
        self.failed_injection_run = injection;
        Ok(())
    }

    async fn wait_healthy(&mut self) -> Result<(), String> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().map_err(|e| e.to_string())?;
        let started = Instant::now();
        let mut last: String;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(format!("run.sh exited ({status}) before Airflow was healthy"));
            }
            match http.get(format!("{}/api/v2/monitor/health", self.url)).send().await {
                Ok(r) if r.status().is_success() => {
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    let ok = |part: &str| body[part]["status"] == "healthy";
                    if ok("metadatabase") && ok("scheduler") && ok("dag_processor") {
                        return Ok(());
                    }
                    last = body.to_string();
                }
                Ok(r) => last = format!("status {}", r.status()),
                Err(e) => last = e.to_string(),
            }
            if started.elapsed() > HEALTHY_TIMEOUT {
                return Err(format!("not healthy after {HEALTHY_TIMEOUT:?}; last answer: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Settings for an `AirflowDomain` on this instance.
    pub fn config(&self) -> AirflowConfig {
        AirflowConfig {
            url: self.url.clone(),
            username: USERNAME.to_string(),
            password: SecretString::from(PASSWORD.to_string()),
            ..AirflowConfig::default()
        }
    }

    /// A logged-in REST client for direct calls (one per test: clients are bound to
    /// the runtime they were made in).
    pub async fn rest(&self) -> Result<Rest, String> {
        Rest::login(&self.url).await
    }

    /// The last lines of each part's log, for failure messages.
    pub fn logs_tail(&self) -> String {
        ["run", "migrate", "api-server", "scheduler", "dag-processor"]
            .iter()
            .map(|part| {
                let path = self.home.join(format!("{part}.log"));
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| format!("(cannot read: {e})"));
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "---- last {TAIL_LINES} lines of {} ----\n{}",
                    path.display(),
                    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Airflow {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM to run.sh alone: it stops its group and descendants, then exits.
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = Command::new("kill").arg("-KILL").arg(format!("-{}", child.id())).status();
            let _ = child.wait();
        }
    }
}

/// Direct calls to Airflow's REST API, to compare the tools with.
pub struct Rest {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Rest {
    pub async fn login(url: &str) -> Result<Rest, String> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().map_err(|e| e.to_string())?;
        let response = http
            .post(format!("{url}/auth/token"))
            .json(&json!({"username": USERNAME, "password": PASSWORD}))
            .send()
            .await
            .map_err(|e| format!("POST {url}/auth/token: {e}"))?;
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        let token = body["access_token"].as_str().ok_or_else(|| format!("no access_token in {body}"))?.to_string();
        Ok(Rest { base: format!("{url}/api/v2"), token, http })
    }

    /// `GET /api/v2<path>` as JSON; `Err` for a non-success answer.
    pub async fn get(&self, path: &str) -> Result<Value, String> {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| format!("{method} {url}: {e}"))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| format!("{method} {url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{method} {url}: {status} {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{method} {url}: not JSON ({e}): {text}"))
    }

    /// Triggers a run now; returns its id.
    pub async fn trigger(&self, dag_id: &str) -> Result<String, String> {
        let run = self.post(&format!("/dags/{dag_id}/dagRuns"), json!({"logical_date": null})).await?;
        run["dag_run_id"].as_str().map(str::to_string).ok_or_else(|| format!("no dag_run_id in {run}"))
    }

    /// Waits until the run is in `state`; fails early when it ends in another state.
    pub async fn wait_run_state(
        &self,
        dag_id: &str,
        run_id: &str,
        state: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        let path = format!("/dags/{dag_id}/dagRuns/{}", encode(run_id));
        let started = Instant::now();
        loop {
            let run = self.get(&path).await?;
            let now = run["state"].as_str().unwrap_or_default();
            if now == state {
                return Ok(());
            }
            if matches!(now, "success" | "failed") {
                return Err(format!("run {run_id} of {dag_id} ended {now}, not {state}"));
            }
            if started.elapsed() > timeout {
                return Err(format!("run {run_id} of {dag_id} was still {now} after {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Percent-encodes a path segment (run ids hold `+` and `:`).
pub fn encode(segment: &str) -> String {
    let mut url = reqwest::Url::parse("http://x/").unwrap();
    url.path_segments_mut().unwrap().push(segment);
    url.path()[1..].to_string()
}

/// Installs Airflow into the cached venv unless it is there; returns the venv.
async fn install() -> Result<PathBuf, String> {
    let home = std::env::var("HOME").map_err(|_| "HOME is not set".to_string())?;
    let cache = PathBuf::from(home).join(".cache/inquest").join(format!("airflow-{VERSION}"));
    let venv = cache.join("venv");
    if venv.join(".installed").exists() {
        return Ok(venv);
    }
    let script = Path::new(SOURCE_DIR).join("install.sh");
    let output = tokio::process::Command::new("bash")
        .arg(&script)
        .arg(&cache)
        .env("AIRFLOW_VERSION", VERSION)
        .output()
        .await
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !output.status.success() {
        return Err(format!(
            "installing apache-airflow=={VERSION} into {} failed ({}):\n{}\n{}",
            venv.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(venv)
}

fn copy_dags(home: &Path) -> Result<(), String> {
    let dags = home.join("dags");
    std::fs::create_dir_all(&dags).map_err(|e| format!("creating {}: {e}", dags.display()))?;
    let source = Path::new(SOURCE_DIR).join("dags");
    for entry in std::fs::read_dir(&source).map_err(|e| format!("reading {}: {e}", source.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        if entry.path().extension().is_some_and(|e| e == "py") {
            std::fs::copy(entry.path(), dags.join(entry.file_name())).map_err(|e| format!("copying DAGs: {e}"))?;
        }
    }
    Ok(())
}
