//! The real `inquest` binary as a child process: start it with environment and
//! arguments, wait until it is ready, talk to its API, stop it gracefully (SIGTERM) or
//! kill it outright (SIGKILL).
//!
//! Each start writes the child's stdout and stderr to `<log_dir>/<name>.<n>.log`. When a
//! test panics, dropping an [`Inquest`] prints the tail of its log, and the child is
//! always killed on drop.

// Helpers outside `#[test]` functions are test code too: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::host::free_port;

/// How long a start may take before the test fails.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines of the child's log shown with a failure.
const TAIL_LINES: usize = 60;

/// How to start one `inquest` process. Cloning gives a starting point for a restart
/// with changed settings.
#[derive(Debug, Clone)]
pub struct InquestBuilder {
    name: String,
    role: String,
    data_dir: PathBuf,
    log_dir: PathBuf,
    env: BTreeMap<String, String>,
    /// Where readiness is asked instead of `<listen>/readyz` (a domain server answers on
    /// its own TLS listener).
    ready_url: Option<String>,
}

impl InquestBuilder {
    /// `inquest all` on `data_dir`, worker id `name`, logs beside the data.
    pub fn new(name: &str, data_dir: &Path) -> InquestBuilder {
        let mut env = BTreeMap::new();
        env.insert("INQUEST_ENGINE__WORKER_ID".to_string(), name.to_string());
        // Tests run many processes at once: the mesh listener takes any free port.
        env.insert("INQUEST_MESH_LISTEN".to_string(), "127.0.0.1:0".to_string());
        // Plain text logs: they end up in failure messages.
        env.insert("NO_COLOR".to_string(), "1".to_string());
        InquestBuilder {
            name: name.to_string(),
            role: "all".to_string(),
            data_dir: data_dir.to_path_buf(),
            log_dir: data_dir.to_path_buf(),
            env,
            ready_url: None,
        }
    }

    /// The subcommand to run (`all`, `agent`, `registry`, `server <id>`).
    pub fn role(mut self, role: &str) -> Self {
        self.role = role.to_string();
        self
    }

    /// Asks `url` (over TLS, any certificate) whether the child is ready, instead of its
    /// public listener's `/readyz`.
    pub fn ready_url(mut self, url: &str) -> Self {
        self.ready_url = Some(url.to_string());
        self
    }

    pub fn log_dir(mut self, dir: &Path) -> Self {
        self.log_dir = dir.to_path_buf();
        self
    }

    /// Sets an environment variable of the child, e.g. `INQUEST_ENGINE__SLOTS`.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.insert(key.to_string(), value.into());
        self
    }

    /// Sets `INQUEST_ENGINE__<KEY>`.
    pub fn engine(self, key: &str, value: impl Into<String>) -> Self {
        let key = format!("INQUEST_ENGINE__{}", key.to_ascii_uppercase());
        self.env(&key, value)
    }

    pub fn store_url(self, url: &str) -> Self {
        self.env("INQUEST_STORE__URL", url)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Starts the process and waits until `GET /readyz` answers 200.
    pub async fn start(&self) -> Inquest {
        // A free port is found by binding port 0 and letting go of it; another process
        // can take it in between, so a start that fails to listen is tried again.
        let mut failures = Vec::new();
        for _ in 0..5 {
            match self.try_start().await {
                Ok(inquest) => return inquest,
                Err(StartError::PortTaken(log)) => failures.push(log),
                Err(StartError::Failed(message)) => panic!("{message}"),
            }
        }
        panic!("`{}` could not listen on a free port in 5 tries:\n{}", self.name, failures.join("\n---\n"));
    }

    async fn try_start(&self) -> Result<Inquest, StartError> {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        std::fs::create_dir_all(&self.log_dir).expect("creating the log directory");
        let log_path = next_log_path(&self.log_dir, &self.name);
        let log = File::create(&log_path).expect("creating the child's log file");

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_inquest"));
        cmd.args(self.role.split(' ')).arg("--data-dir").arg(&self.data_dir).arg("--listen").arg(&listen);
        // The child reads INQUEST_* as configuration and rejects keys it does not know
        // (INQUEST_TEST_POSTGRES_URL would be one): only what this builder sets goes in.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("INQUEST_") {
                cmd.env_remove(&key);
            }
        }
        cmd.envs(&self.env);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("cloning the log file handle")))
            .stderr(Stdio::from(log));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", env!("CARGO_BIN_EXE_inquest")));

        let mut inquest =
            Inquest { builder: self.clone(), api: Api::new(&format!("http://{listen}")), child: Some(child), log_path };
        let started = Instant::now();
        loop {
            if let Some(status) = inquest.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                inquest.child = None;
                let log = inquest.log_tail(TAIL_LINES);
                if log.contains("cannot listen on") {
                    return Err(StartError::PortTaken(log));
                }
                return Err(StartError::Failed(format!(
                    "`{}` exited before it was ready ({status}); its log {}:\n{log}",
                    self.name,
                    inquest.log_path.display()
                )));
            }
            let ready = match &self.ready_url {
                Some(url) => ready_at(url).await,
                None => inquest.api.ready().await,
            };
            if ready {
                return Ok(inquest);
            }
            if started.elapsed() > READY_TIMEOUT {
                let log = inquest.log_tail(TAIL_LINES);
                return Err(StartError::Failed(format!(
                    "`{}` was not ready after {READY_TIMEOUT:?}; its log {}:\n{log}",
                    self.name,
                    inquest.log_path.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `GET url` answers 200, whatever certificate it shows (readiness only).
async fn ready_at(url: &str) -> bool {
    let http = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(2))
        .build()
        .expect("building an HTTP client");
    matches!(http.get(url).send().await, Ok(r) if r.status() == reqwest::StatusCode::OK)
}

enum StartError {
    PortTaken(String),
    Failed(String),
}

fn next_log_path(dir: &Path, name: &str) -> PathBuf {
    (1..).map(|n| dir.join(format!("{name}.{n}.log"))).find(|p| !p.exists()).expect("an unused log file name")
}

/// A running (or stopped) `inquest` process.
pub struct Inquest {
    builder: InquestBuilder,
    api: Api,
    child: Option<Child>,
    log_path: PathBuf,
}

impl Inquest {
    pub fn name(&self) -> &str {
        &self.builder.name
    }

    pub fn builder(&self) -> &InquestBuilder {
        &self.builder
    }

    /// A cheap handle on the HTTP API, for use from spawned tasks. A restart moves the
    /// process to another port: take a new handle afterwards.
    pub fn api(&self) -> Api {
        self.api.clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_else(|| panic!("`{}` is not running", self.name()))
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of the current run's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_else(|e| format!("(cannot read the log: {e})"));
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGKILL, then reap. Nothing of the process runs after this returns.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // On Unix, `Child::kill` sends SIGKILL.
            child.kill().unwrap_or_else(|e| panic!("SIGKILL to `{}`: {e}", self.builder.name));
            child.wait().unwrap_or_else(|e| panic!("reaping `{}`: {e}", self.builder.name));
        }
    }

    /// SIGTERM, then waits up to `timeout` for the process to exit. Returns the exit
    /// status and how long the exit took; a process still alive after `timeout` is
    /// killed and the test fails.
    pub async fn terminate(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let pid = self.pid();
        let started = Instant::now();
        let sent = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().expect("running kill -TERM");
        assert!(sent.success(), "kill -TERM {pid} failed: {sent}");
        loop {
            let child = self.child.as_mut().expect("the child is running");
            if let Some(status) = child.try_wait().expect("polling the child") {
                self.child = None;
                return (status, started.elapsed());
            }
            if started.elapsed() > timeout {
                let tail = self.log_tail(TAIL_LINES);
                self.kill9();
                panic!("`{}` was still running {timeout:?} after SIGTERM; its log:\n{tail}", self.builder.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGSTOP: the process freezes as a stalled machine would, holding its leases,
    /// connections and timers.
    pub fn pause(&mut self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Inquest::pause`].
    pub fn resume(&mut self) {
        self.signal("-CONT");
    }

    fn signal(&mut self, signal: &str) {
        let pid = self.pid();
        let sent = Command::new("kill").arg(signal).arg(pid.to_string()).status().expect("running kill");
        assert!(sent.success(), "kill {signal} {pid} failed: {sent}");
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Starts the process again with the same settings (a new port and log file).
    pub async fn restart(&mut self) {
        self.restart_with(self.builder.clone()).await;
    }

    /// Starts the process again with other settings; the old one must be stopped.
    pub async fn restart_with(&mut self, builder: InquestBuilder) {
        assert!(!self.is_running(), "`{}` must be stopped before it is restarted", self.builder.name);
        let mut fresh = builder.start().await;
        // Swap so that `fresh` (now holding nothing) drops quietly.
        std::mem::swap(&mut self.builder, &mut fresh.builder);
        std::mem::swap(&mut self.api, &mut fresh.api);
        std::mem::swap(&mut self.log_path, &mut fresh.log_path);
        self.child = fresh.child.take();
    }
}

impl Drop for Inquest {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- last {TAIL_LINES} lines of `{}` ({}) ----\n{}\n---- end of `{}` ----",
                self.builder.name,
                self.log_path.display(),
                self.log_tail(TAIL_LINES),
                self.builder.name
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A temporary directory for data and logs, removed afterwards unless the test fails:
/// then it is kept and its path printed.
pub struct Scratch(Option<tempfile::TempDir>);

impl Scratch {
    pub fn new() -> Scratch {
        remember_panics();
        Scratch(Some(
            tempfile::Builder::new().prefix("inquest-test-").tempdir().expect("creating a temporary directory"),
        ))
    }

    pub fn path(&self) -> &Path {
        self.0.as_ref().map(tempfile::TempDir::path).expect("the directory exists until drop")
    }
}

impl Default for Scratch {
    fn default() -> Scratch {
        Scratch::new()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.0.take()
        {
            eprintln!("---- kept the test's data and logs in {} ----", dir.keep().display());
            // The processes' logs above are long and a CI summary may cut the middle
            // of the output, where the panic message is: say it again, last.
            if let Some(message) = LAST_PANIC.with(|p| p.borrow_mut().take()) {
                let end = message.floor_char_boundary(PANIC_REPEAT);
                let cut = if end < message.len() { " [...]" } else { "" };
                eprintln!("---- the failure, again ----\n{}{cut}", &message[..end]);
            }
        }
    }
}

/// How much of a panic message is said again at the end of a failed test's output.
const PANIC_REPEAT: usize = 4000;

thread_local! {
    /// The last panic on this thread, as the panic hook printed it.
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Installs (once) a panic hook that keeps each thread's last panic message for
/// [`Scratch`]'s drop, then prints as before.
fn remember_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
            previous(info);
        }));
    });
}

/// The answer to an accepted delivery.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Accepted {
    pub alert_ids: Vec<String>,
    pub episode_ids: Vec<String>,
    pub duplicates: usize,
}

/// One investigation as `GET /v1/investigations[/{id}]` shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct Investigation {
    pub id: String,
    pub episode_id: String,
    pub state: String,
    pub attempts: i64,
    pub worker: Option<String>,
    pub alert_count: i64,
    #[serde(default)]
    pub alerts: Vec<Value>,
    #[serde(default)]
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub seq: i64,
    pub kind: String,
    pub data: Value,
    pub at: DateTime<Utc>,
}

impl Event {
    pub fn at_ms(&self) -> i64 {
        self.at.timestamp_millis()
    }
}

impl Investigation {
    pub fn events_of(&self, kind: &str) -> Vec<&Event> {
        self.events.iter().filter(|e| e.kind == kind).collect()
    }

    /// The event log, one line per event, for failure messages.
    pub fn log(&self) -> String {
        let mut out = format!(
            "investigation {} ({}, attempts {}, worker {:?}):",
            self.id, self.state, self.attempts, self.worker
        );
        for e in &self.events {
            let mut data = e.data.to_string();
            if data.len() > 160 {
                data.truncate(data.floor_char_boundary(160));
                data.push('…');
            }
            out.push_str(&format!("\n  #{} {} {} {data}", e.seq, e.at.format("%H:%M:%S%.3f"), e.kind));
        }
        out
    }
}

/// The HTTP API of one process.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str) -> Api {
        let http =
            reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("building an HTTP client");
        Api { base: base.to_string(), http }
    }

    async fn ready(&self) -> bool {
        let probe = self.http.get(format!("{}/readyz", self.base)).timeout(Duration::from_secs(2)).send().await;
        matches!(probe, Ok(r) if r.status() == reqwest::StatusCode::OK)
    }

    /// POSTs an Alertmanager webhook; returns the status and the JSON body.
    pub async fn try_post_alertmanager(&self, payload: &Value) -> Result<(u16, Value), String> {
        let resp = self
            .http
            .post(format!("{}/v1/alerts/alertmanager", self.base))
            .json(payload)
            .send()
            .await
            .map_err(|e| format!("POST to {}: {e}", self.base))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| format!("reading the answer of {}: {e}", self.base))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, body))
    }

    /// POSTs an Alertmanager webhook and insists on `202 Accepted`.
    pub async fn post_alertmanager(&self, payload: &Value) -> Accepted {
        let (status, body) = self.try_post_alertmanager(payload).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status, 202, "{} answered {status} {body} to {}", self.base, payload["groupKey"]);
        serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("a 202 body that is no Accepted ({e}): {body}"))
    }

    async fn get_json(&self, path: &str) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let resp = self.http.get(&url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| format!("GET {url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("GET {url}: {status} {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("GET {url}: not JSON ({e}): {text}"))
    }

    /// `GET /v1/investigations?limit=1000[&state=...]`.
    pub async fn try_investigations(&self, state: Option<&str>) -> Result<Vec<Investigation>, String> {
        let path = match state {
            Some(s) => format!("/v1/investigations?limit=1000&state={s}"),
            None => "/v1/investigations?limit=1000".to_string(),
        };
        let body = self.get_json(&path).await?;
        serde_json::from_value(body["investigations"].clone()).map_err(|e| format!("{path}: {e}: {body}"))
    }

    pub async fn investigations(&self, state: Option<&str>) -> Vec<Investigation> {
        self.try_investigations(state).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// `GET /v1/investigations/{id}`: with alerts and events.
    pub async fn try_investigation(&self, id: &str) -> Result<Investigation, String> {
        let path = format!("/v1/investigations/{id}");
        let body = self.get_json(&path).await?;
        serde_json::from_value(body.clone()).map_err(|e| format!("{path}: {e}: {body}"))
    }

    pub async fn investigation(&self, id: &str) -> Investigation {
        self.try_investigation(id).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Every investigation with its alerts and events.
    pub async fn investigations_in_full(&self) -> Vec<Investigation> {
        let mut out = Vec::new();
        for inv in self.investigations(None).await {
            out.push(self.investigation(&inv.id).await);
        }
        out
    }
}

/// An Alertmanager webhook (`version: "4"`) for `group_key` with one firing alert per
/// fingerprint. Alerts differ by fingerprint and `instance`, so each is a new alert.
pub fn alertmanager_payload(group_key: &str, team: &str, fingerprints: &[String]) -> Value {
    let alerts: Vec<Value> = fingerprints
        .iter()
        .map(|fp| {
            json!({
                "status": "firing",
                "labels": {"alertname": "InquestTestAlert", "instance": fp, "severity": "critical"},
                "annotations": {"summary": format!("test alert {fp}")},
                "startsAt": "2026-11-26T09:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.local/graph",
                "fingerprint": fp,
            })
        })
        .collect();
    json!({
        "receiver": "inquest",
        "status": "firing",
        "alerts": alerts,
        "groupLabels": {"alertname": "InquestTestAlert"},
        "commonLabels": {"alertname": "InquestTestAlert", "team": team},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.local:9093",
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
    })
}

/// What [`Api::try_post_alertmanager`] answers.
pub type PostResult = Result<(u16, Value), String>;

/// The intake's answers to the deliveries of each episode, as spawned tasks return them
/// (`(episode, answers)`); fails the test on any answer but a 202.
pub async fn accepted_by_episode<const N: usize>(
    mut tasks: tokio::task::JoinSet<(usize, [PostResult; N])>,
) -> BTreeMap<usize, Vec<Accepted>> {
    let mut answers = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (e, results) = joined.expect("a posting task panicked");
        let accepted: Vec<Accepted> = results
            .into_iter()
            .enumerate()
            .map(|(i, r)| match r {
                Ok((202, body)) => serde_json::from_value(body).unwrap(),
                Ok((status, body)) => panic!("episode {e}, request {i}: {status} {body}"),
                Err(err) => panic!("episode {e}, request {i}: {err}"),
            })
            .collect();
        answers.insert(e, accepted);
    }
    answers
}

/// Polls `probe` every 100 ms until it answers, for at most `secs`.
pub async fn until<T>(what: &str, secs: u64, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..secs * 10 {
        if let Some(v) = probe().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Polls `probe` every 100 ms until it gives `Ok`, for at most `timeout`. On timeout the
/// test fails with `what` and the last `Err` the probe gave (its view of the world).
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) => {
                if started.elapsed() > timeout {
                    panic!("timed out after {timeout:?} waiting for {what}; last observation:\n{last}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Milliseconds since the epoch, as the store writes times.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}
