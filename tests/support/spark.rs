//! A real Spark 4.3.0 History Server for tests, over the event logs of real PySpark runs.
//!
//! PyPI `pyspark==4.3.0` (its jars included; Java 17 is on the machine) is installed once
//! into `~/.cache/inquest/spark-4.3.0/venv`. The job in `tests/support/spark/job.py` runs
//! three times (master `local[2]`, event log on): a clean run, a run whose Python UDF
//! raises on a bad record, and a run whose task dies with `java.lang.OutOfMemoryError`.
//! Their event logs are kept in `~/.cache/inquest/spark-4.3.0/events-v1` (made again when
//! missing). One History Server per test process serves them on 127.0.0.1 and a free
//! port; a watchdog stops it when the test process goes away, however it goes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::OnceCell;

use super::host::{free_port, watchdog};

const VERSION: &str = "4.3.0";
/// The cached event logs; made again when `job.py` changes (its digest is recorded).
const EVENTS: &str = "events-v1";
const JOB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/spark/job.py");
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The applications the History Server holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Runs {
    /// SHA-256 of the `job.py` that made these runs.
    pub job_sha256: String,
    /// Succeeded.
    pub ok: String,
    /// Failed: the Python UDF raised `ValueError` on the record `4242,n/a`.
    pub bad_record: String,
    /// Failed: a task ran out of JVM heap (512m driver, which is the executor in local mode).
    pub oom: String,
}

/// The running History Server.
pub struct SparkHistory {
    pub url: String,
    pub port: u16,
    pub runs: Runs,
    pid: u32,
    /// Closing it (the test process ending) tells the watchdog to stop the server.
    watchdog: Mutex<Option<ChildStdin>>,
    _watchdog_child: Mutex<Child>,
}

impl SparkHistory {
    /// `GET /api/v1/<path>` as JSON, straight from the server (to compare tools with).
    pub async fn rest(&self, path: &str) -> Value {
        let url = format!("{}/api/v1/{path}", self.url);
        let response = reqwest::get(&url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(response.status().is_success(), "GET {url}: {}", response.status());
        response.json().await.unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }
}

impl Drop for SparkHistory {
    fn drop(&mut self) {
        // Only reached for a non-static instance; the watchdog covers the static one.
        if let Ok(mut stdin) = self.watchdog.lock() {
            stdin.take();
        }
    }
}

/// The one History Server of this test process, started on first use.
pub async fn history() -> &'static SparkHistory {
    static HISTORY: OnceCell<SparkHistory> = OnceCell::const_new();
    HISTORY
        .get_or_init(|| async { tokio::task::spawn_blocking(start).await.expect("starting the History Server") })
        .await
}

fn start() -> SparkHistory {
    let venv = super::venv::install(&cache_dir(), "python3", "pyspark", VERSION).0;
    let (events, runs) = event_logs(&venv);
    let spark_home = spark_home(&venv);
    let mut failures = Vec::new();
    for _ in 0..3 {
        match try_start(&spark_home, &events, &runs) {
            Ok(history) => return history,
            Err(log) => failures.push(log),
        }
    }
    panic!("the Spark History Server did not start in 3 tries:\n{}", failures.join("\n---\n"));
}

fn try_start(spark_home: &Path, events: &Path, runs: &Runs) -> Result<SparkHistory, String> {
    let work = tempfile::Builder::new().prefix("inquest-spark-history").tempdir().unwrap().keep();
    let port = free_port();
    let opts = format!(
        "-Dspark.history.fs.logDirectory=file://{} -Dspark.history.ui.port={port} -Dspark.history.fs.update.interval=2s",
        events.display()
    );
    let output = Command::new(spark_home.join("sbin/start-history-server.sh"))
        .env("SPARK_HOME", spark_home)
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .env("SPARK_LOG_DIR", work.join("log"))
        .env("SPARK_PID_DIR", work.join("pid"))
        .env("SPARK_HISTORY_OPTS", opts)
        .env_remove("SPARK_NO_DAEMONIZE")
        .stdin(Stdio::null())
        .output()
        .expect("running start-history-server.sh");
    let logs = || read_dir_text(&work.join("log"));
    if !output.status.success() {
        return Err(format!("start-history-server.sh failed: {}\n{}", String::from_utf8_lossy(&output.stderr), logs()));
    }
    let pid = read_pid(&work.join("pid")).ok_or_else(|| format!("no pid file; logs:\n{}", logs()))?;
    let (watchdog, stdin) = watchdog("spark-history-watchdog", pid, &work);
    let url = format!("http://127.0.0.1:{port}");
    let history = SparkHistory {
        url: url.clone(),
        port,
        runs: runs.clone(),
        pid,
        watchdog: Mutex::new(Some(stdin)),
        _watchdog_child: Mutex::new(watchdog),
    };

    let wanted = [&runs.ok, &runs.bad_record, &runs.oom];
    let started = Instant::now();
    loop {
        if !alive(pid) {
            return Err(format!("the History Server exited; logs:\n{}", logs()));
        }
        let listed = http_get(port, "/api/v1/applications")
            .and_then(|body| serde_json::from_str::<Vec<Value>>(&body).ok())
            .map(|apps| apps.iter().filter_map(|a| a["id"].as_str().map(String::from)).collect::<Vec<_>>())
            .unwrap_or_default();
        if wanted.iter().all(|id| listed.contains(id)) {
            return Ok(history);
        }
        if started.elapsed() > READY_TIMEOUT {
            return Err(format!(
                "not listing {wanted:?} after {READY_TIMEOUT:?} (lists {listed:?}); logs:\n{}",
                logs()
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A plain HTTP/1.0 GET (this runs on a blocking thread, outside any runtime).
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn read_pid(dir: &Path) -> Option<u32> {
    let entry = std::fs::read_dir(dir).ok()?.flatten().find(|e| e.path().extension().is_some_and(|x| x == "pid"))?;
    std::fs::read_to_string(entry.path()).ok()?.trim().parse().ok()
}

fn read_dir_text(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let content = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let tail: Vec<&str> = content.lines().rev().take(40).collect();
        text.push_str(&format!("== {}\n", entry.path().display()));
        text.extend(tail.into_iter().rev().map(|l| format!("{l}\n")));
    }
    text
}

/// Where each address listens on `port`, from `/proc/net/tcp{,6}`
/// (`127.0.0.1`, `0.0.0.0`, `::`, ...), to check what the server bound.
pub fn listen_addresses(port: u16) -> Vec<String> {
    let mut found = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let table = std::fs::read_to_string(file).unwrap_or_default();
        for line in table.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else { continue };
            let Some((addr, p)) = local.split_once(':') else { continue };
            if *state != "0A" || u16::from_str_radix(p, 16).ok() != Some(port) {
                continue;
            }
            found.push(decode_address(addr));
        }
    }
    found
}

/// `0100007F` -> `127.0.0.1`; IPv6 as four little-endian words, IPv4-mapped shown as IPv4.
fn decode_address(hex: &str) -> String {
    let bytes: Vec<u8> =
        (0..hex.len()).step_by(2).filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect();
    let words: Vec<[u8; 4]> = bytes.chunks(4).map(|c| [c[3], c[2], c[1], c[0]]).collect();
    match words.as_slice() {
        [v4] => std::net::Ipv4Addr::from(*v4).to_string(),
        [a, b, c, d] => {
            let mut octets = [0u8; 16];
            for (i, w) in [a, b, c, d].iter().enumerate() {
                octets[i * 4..i * 4 + 4].copy_from_slice(&w[..]);
            }
            let v6 = std::net::Ipv6Addr::from(octets);
            v6.to_ipv4_mapped().map(|v4| v4.to_string()).unwrap_or_else(|| v6.to_string())
        }
        _ => hex.to_string(),
    }
}

/// A port nothing listens on (bound and let go at once).
pub fn closed_port() -> u16 {
    free_port()
}

fn cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    home.join(".cache/inquest").join(format!("spark-{VERSION}"))
}

fn spark_home(venv: &Path) -> PathBuf {
    let lib = venv.join("lib");
    std::fs::read_dir(&lib)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("site-packages/pyspark"))
        .find(|p| p.join("sbin/start-history-server.sh").exists())
        .unwrap_or_else(|| panic!("no pyspark with sbin/ under {}", lib.display()))
}

/// The event logs of the three runs, made once.
fn event_logs(venv: &Path) -> (PathBuf, Runs) {
    let dir = cache_dir().join(EVENTS);
    let marker = dir.join("runs.json");
    let job_sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(std::fs::read(JOB).unwrap()));
    let cached = std::fs::read(&marker).ok().and_then(|b| serde_json::from_slice::<Runs>(&b).ok());
    if let Some(runs) = cached.filter(|r| r.job_sha256 == job_sha256) {
        return (dir, runs);
    }
    let staging = cache_dir().join(format!(".{EVENTS}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(staging.join("logs")).unwrap();
    let started = Instant::now();
    let runs = Runs {
        job_sha256,
        ok: run_job(venv, &staging, "ok", true),
        bad_record: run_job(venv, &staging, "bad_record", false),
        oom: run_job(venv, &staging, "oom", false),
    };
    // The job logs stay out of the History Server's folder.
    let _ = std::fs::remove_dir_all(staging.join("logs"));
    let mut file = std::fs::File::create(staging.join("runs.json")).unwrap();
    file.write_all(&serde_json::to_vec_pretty(&runs).unwrap()).unwrap();
    drop(file);
    // Replace a stale cache; if another test process just made a fresh one, keep it.
    let fresh = |m: &Path| {
        std::fs::read(m)
            .ok()
            .and_then(|b| serde_json::from_slice::<Runs>(&b).ok())
            .is_some_and(|r| r.job_sha256 == runs.job_sha256)
    };
    if fresh(&marker) {
        let _ = std::fs::remove_dir_all(&staging);
    } else {
        let _ = std::fs::remove_dir_all(&dir);
        if std::fs::rename(&staging, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
    }
    eprintln!("made Spark event logs in {} in {:?}", dir.display(), started.elapsed());
    let runs = serde_json::from_slice(&std::fs::read(&marker).unwrap()).unwrap();
    (dir, runs)
}

/// Runs one variant of the job; its application id.
fn run_job(venv: &Path, events: &Path, variant: &str, should_succeed: bool) -> String {
    let python = venv.join("bin/python");
    let log_path = events.join("logs").join(format!("{variant}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let status = Command::new(&python)
        .arg(JOB)
        .arg(events)
        .arg(variant)
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .env("PYSPARK_PYTHON", &python)
        .env("PYSPARK_DRIVER_PYTHON", &python)
        .env_remove("SPARK_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .status()
        .expect("running the PySpark job");
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    let tail = || output.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    assert_eq!(status.success(), should_succeed, "job `{variant}` ended with {status}:\n{}", tail());
    output
        .lines()
        .find_map(|l| l.strip_prefix("APP_ID="))
        .map(|id| id.trim().to_string())
        .unwrap_or_else(|| panic!("job `{variant}` did not say its application id:\n{}", tail()))
}
