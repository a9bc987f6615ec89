//! The Presto test coordinator (`tests/support/presto/coordinator.py`): the Trino/Presto
//! client protocol over DuckDB, started on 127.0.0.1 on a free port.
//!
//! Its venv (pinned `duckdb` and `trino`, the official client used to check the
//! coordinator's fidelity) is installed once into
//! `~/.cache/inquest/presto-coordinator-v1/venv`; a marker file says the install
//! finished, so a later run skips it. The coordinator dies with its standard input,
//! i.e. when the test drops it or the test process dies.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

pub const PACKAGES: &[&str] = &["duckdb==2.0.1", "trino==0.340.0"];
const CACHE_NAME: &str = "presto-coordinator-v1";
pub const SOURCE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/presto");
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start a coordinator.
#[derive(Debug, Clone, Default)]
pub struct CoordinatorBuilder {
    page_rows: Option<usize>,
    basic: Option<(String, String)>,
    bearer: Option<String>,
}

impl CoordinatorBuilder {
    /// Rows per result page (default 100).
    pub fn page_rows(mut self, rows: usize) -> Self {
        self.page_rows = Some(rows);
        self
    }

    /// Requires HTTP basic auth with these credentials.
    pub fn basic(mut self, user: &str, password: &str) -> Self {
        self.basic = Some((user.to_string(), password.to_string()));
        self
    }

    /// Requires this bearer token.
    pub fn bearer(mut self, token: &str) -> Self {
        self.bearer = Some(token.to_string());
        self
    }

    pub async fn start(self) -> Coordinator {
        let python = venv_python().await;
        let mut cmd = Command::new(&python);
        cmd.arg(Path::new(SOURCE_DIR).join("coordinator.py"));
        if let Some(rows) = self.page_rows {
            cmd.arg("--page-rows").arg(rows.to_string());
        }
        if let Some((user, password)) = &self.basic {
            cmd.arg("--basic").arg(format!("{user}:{password}"));
        }
        if let Some(token) = &self.bearer {
            cmd.arg("--bearer").arg(token);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting the presto test coordinator");
        let stdin = child.stdin.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = match tokio::time::timeout(READY_TIMEOUT, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!("the presto coordinator did not start ({other:?}); its stderr:\n{}", stderr.lock().unwrap());
            }
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let port = serde_json::from_str::<Value>(&line).unwrap()["port"].as_u64().unwrap();
        Coordinator { url: format!("http://127.0.0.1:{port}"), port: port as u16, _child: child, _stdin: stdin, stderr }
    }
}

/// A running coordinator; killed on drop.
pub struct Coordinator {
    pub url: String,
    pub port: u16,
    _child: Child,
    _stdin: ChildStdin,
    stderr: Arc<Mutex<String>>,
}

impl Coordinator {
    pub fn builder() -> CoordinatorBuilder {
        CoordinatorBuilder::default()
    }

    pub async fn start() -> Coordinator {
        CoordinatorBuilder::default().start().await
    }

    /// What the coordinator saw: `statement`, `cancel`, `kill`, `forced_status` events.
    pub async fn events(&self) -> Vec<Value> {
        reqwest::get(format!("{}/_test/events", self.url)).await.unwrap().json().await.unwrap()
    }

    pub async fn events_of(&self, kind: &str) -> Vec<Value> {
        self.events().await.into_iter().filter(|e| e["kind"] == kind).collect()
    }

    /// The next `times` statement POSTs answer `status`.
    pub async fn fail_next(&self, status: u16, times: usize) {
        let url = format!("{}/_test/fail?status={status}&times={times}", self.url);
        let response = reqwest::Client::new().post(url).send().await.unwrap();
        assert_eq!(response.status(), 204);
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Runs a Python script with the venv's interpreter (the official `trino` client
    /// is importable), passing `args`; returns its stdout, failing on a non-zero exit.
    pub async fn run_python(script: &str, args: &[&str]) -> String {
        let python = venv_python().await;
        let out = Command::new(python).arg("-c").arg(script).args(args).output().await.unwrap();
        assert!(
            out.status.success(),
            "the python script failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// The venv's python, installing the venv first if no finished install is cached.
pub async fn venv_python() -> PathBuf {
    // Tests of one binary run in parallel: one installs, the others wait.
    static INSTALL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _guard = INSTALL.lock().await;
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    let dir = home.join(".cache/inquest").join(CACHE_NAME);
    let venv = dir.join("venv");
    let python = venv.join("bin/python");
    let marker = dir.join("installed.txt");
    let wanted = PACKAGES.join("\n");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == wanted) && python.exists() {
        return python;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let _ = std::fs::remove_file(&marker);
    let created = Command::new("python3").arg("-m").arg("venv").arg("--clear").arg(&venv).status().await.unwrap();
    assert!(created.success(), "python3 -m venv {} failed", venv.display());
    let out = Command::new(venv.join("bin/pip")).arg("install").arg("-q").args(PACKAGES).output().await.unwrap();
    assert!(out.status.success(), "pip install {PACKAGES:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(&marker, wanted).unwrap();
    python
}
