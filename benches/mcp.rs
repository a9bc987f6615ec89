//! MCP server overhead: one representative read tool per domain server, called through
//! the MCP server (Streamable HTTP over mTLS, authentication, per-tool authorization,
//! metrics, audit) and, in the same run, the same backend endpoint called directly over
//! HTTP. The difference is what the server adds. No registry runs here, so usage is not
//! reported (in service it is queued and sent in batches, off the call's path).
//!
//! ```text
//! cargo bench --bench mcp                    # every server, ~2 min after the backends start
//! cargo bench --bench mcp -- spark presto    # only these
//! INQUEST_BENCH=quick cargo bench --bench mcp
//! ```
//!
//! Words (arguments or `INQUEST_BENCH`): `airflow`, `presto`, `spark` (none: all three),
//! `reference` (only the third-party Airflow server row), `quick` (fewer calls).
//!
//! Per server:
//! - the backend is the real one the integration suite uses (tests/support: Airflow
//!   3.3.2, the Spark 4.3.0 History Server, the Presto test coordinator), started here;
//! - `direct`: a keep-alive reqwest client calling the backend endpoint(s) the tool
//!   calls (Presto: the client protocol exchange, POST and every nextUri);
//! - `mcp 2026-07-28` and `mcp 2025-11-25`: an rmcp client as the agent, over mTLS with
//!   the dev CA's SVIDs, calling the tool; the server (`tests/support/served.rs`, as the
//!   integration tests serve it) runs in this process on the same multi-thread tokio
//!   runtime as the client, the kind `inquest server` runs on;
//! - calls alternate (direct, mcp, direct, ...) one at a time after a warm-up, so both
//!   see the same backend state and machine load.
//!
//! Targets (per server, on the 2026-07-28 row, the revision the agent prefers): added
//! latency p50 <= 1 ms and p50 ratio <= 1.10. The 2025-11-25 row is printed beside it.
//! The reference row runs the same Airflow call through the third-party Python server
//! `mcp-server-apache-airflow` (PyPI 0.2.10, plain HTTP, no authentication) for scale;
//! it is not judged. A missed target prints FAIL and exits 0; a part that could not
//! run exits 1.
//!
//! The machine has two cores shared by the backend, the server and the client: compare
//! runs made under the same conditions. The process uses mimalloc, as the `inquest`
//! binary does.

// A bench is a program whose failures are reported by panicking, like a test's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/words.rs"]
mod words;

#[path = "../tests/support/airflow.rs"]
#[allow(dead_code)]
mod airflow;
#[path = "../tests/support/host.rs"]
#[allow(dead_code)]
mod host;
#[path = "../tests/support/presto.rs"]
#[allow(dead_code)]
mod presto;
#[path = "../tests/support/served.rs"]
mod served;
#[path = "../tests/support/spark.rs"]
#[allow(dead_code)]
mod spark;
#[path = "../tests/support/venv.rs"]
mod venv;

use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;

use served::{Served, serve};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use rmcp::model::{CallToolRequestParams, ProtocolVersion};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientLifecycleMode, ClientServiceExt, RoleClient};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TARGET_ADDED_MS: f64 = 1.0;
const TARGET_RATIO: f64 = 1.10;
const REFERENCE_VERSION: &str = "0.2.10";

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Options {
    servers: Vec<&'static str>,
    reference: bool,
    /// Warm-up pairs: at least this many, and for at least `warmup_for`.
    warmup: usize,
    warmup_for: Duration,
    calls: usize,
}

fn options() -> Result<Options> {
    let words = words::words();
    let mut servers = Vec::new();
    let mut reference = false;
    let mut quick = false;
    for w in &words {
        match w.as_str() {
            "airflow" => servers.push("airflow"),
            "presto" => servers.push("presto"),
            "spark" => servers.push("spark"),
            "reference" => reference = true,
            "quick" => quick = true,
            "bench" => {}
            other => bail!("unknown word `{other}` (airflow, presto, spark, reference, quick)"),
        }
    }
    if servers.is_empty() && !reference {
        servers = vec!["airflow", "presto", "spark"];
        reference = true;
    }
    // The Spark History Server is a JVM: profiled during a 50-call warm-up, its JIT
    // compiler threads kept both cores busy well into the measured calls, and every
    // thread wake-up on the MCP path (client, server, backend client) queued behind
    // them. Warm up by time, so the backends run compiled code when measuring starts.
    let (warmup, warmup_for, calls) =
        if quick { (20, Duration::from_secs(3), 100) } else { (50, Duration::from_secs(20), 400) };
    Ok(Options { servers, reference, warmup, warmup_for, calls })
}

/// Latencies of one way of making the call.
struct Series {
    hist: Histogram<u64>,
    errors: u64,
}

impl Series {
    fn new() -> Series {
        Series { hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap(), errors: 0 }
    }

    fn record(&mut self, took: Duration, ok: bool) {
        if ok {
            let _ = self.hist.record(took.as_nanos().max(1) as u64);
        } else {
            self.errors += 1;
        }
    }

    fn p(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1e6
    }
}

/// The call made both ways.
struct Case {
    server: &'static str,
    tool: &'static str,
    args: Value,
    direct: Box<dyn Fn() -> futures::future::BoxFuture<'static, Result<()>> + Send + Sync>,
}

async fn client(
    http: reqwest::Client,
    url: &str,
    lifecycle: ClientLifecycleMode,
) -> Result<RunningService<RoleClient, ()>> {
    let transport =
        StreamableHttpClientTransport::with_client(http, StreamableHttpClientTransportConfig::with_uri(url));
    Ok(().serve_with_lifecycle(transport, lifecycle).await?)
}

fn modern() -> ClientLifecycleMode {
    ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] }
}

async fn call_tool(client: &RunningService<RoleClient, ()>, tool: &str, args: &Value) -> Result<()> {
    let mut params = CallToolRequestParams::new(tool.to_string());
    params.arguments = args.as_object().cloned();
    let result = client.call_tool(params).await?;
    if result.is_error == Some(true) {
        bail!("{tool} failed: {:?}", result.content);
    }
    Ok(())
}

/// Direct and MCP calls alternately, after a warm-up of each.
async fn measure(case: &Case, client: &RunningService<RoleClient, ()>, opts: &Options) -> Result<(Series, Series)> {
    let started = Instant::now();
    let mut pairs = 0;
    while pairs < opts.warmup || started.elapsed() < opts.warmup_for {
        pairs += 1;
        (case.direct)().await.with_context(|| format!("{}: the direct call", case.server))?;
        call_tool(client, case.tool, &case.args).await.with_context(|| format!("{}: {}", case.server, case.tool))?;
    }
    let (mut direct, mut via) = (Series::new(), Series::new());
    for _ in 0..opts.calls {
        let t = Instant::now();
        let ok = (case.direct)().await.is_ok();
        direct.record(t.elapsed(), ok);
        let t = Instant::now();
        let ok = call_tool(client, case.tool, &case.args).await.is_ok();
        via.record(t.elapsed(), ok);
    }
    Ok((direct, via))
}

struct Row {
    server: String,
    way: String,
    series: Series,
    /// The direct series it is compared with, and whether it is judged.
    base: Option<(f64, bool)>,
}

fn print(rows: &[Row]) {
    println!(
        "{:<9} {:<34} {:>6} {:>8} {:>8} {:>7} {:>9} {:>7}  target",
        "server", "way", "calls", "p50 ms", "p99 ms", "errors", "added ms", "ratio"
    );
    for r in rows {
        let (p50, p99) = (r.series.p(0.5), r.series.p(0.99));
        let (added, ratio, verdict) = match r.base {
            Some((base, judged)) => {
                let added = p50 - base;
                let ratio = p50 / base;
                let verdict = if !judged {
                    "-".to_string()
                } else if added <= TARGET_ADDED_MS && ratio <= TARGET_RATIO && r.series.errors == 0 {
                    "PASS".to_string()
                } else {
                    format!("FAIL (added {added:.2} ms, ratio {ratio:.2}, errors {})", r.series.errors)
                };
                (format!("{added:.3}"), format!("{ratio:.3}"), verdict)
            }
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<9} {:<34} {:>6} {:>8.3} {:>8.3} {:>7} {:>9} {:>7}  {}",
            r.server,
            r.way,
            r.series.hist.len(),
            p50,
            p99,
            r.series.errors,
            added,
            ratio,
            verdict
        );
    }
}

async fn run_case(case: Case, served: Served, opts: &Options, rows: &mut Vec<Row>) -> Result<()> {
    for (name, lifecycle) in [("2026-07-28", modern()), ("2025-11-25", ClientLifecycleMode::Initialize)] {
        let client = client(served.agent_http.clone(), &served.url, lifecycle).await?;
        let (direct, via) = measure(&case, &client, opts).await?;
        let base = direct.p(0.5);
        rows.push(Row { server: case.server.into(), way: "direct HTTP".into(), series: direct, base: None });
        rows.push(Row {
            server: case.server.into(),
            way: format!("mcp {name} {}", case.tool),
            series: via,
            base: Some((base, name == "2026-07-28")),
        });
        let _ = client.cancel().await;
    }
    Ok(())
}

async fn spark_case(dir: &std::path::Path, stop: &CancellationToken) -> Result<(Case, Served)> {
    let history = spark::history().await;
    let config = inquest::domains::spark::SparkConfig { history_url: history.url.clone(), ..Default::default() };
    let domain = Arc::new(inquest::domains::spark::SparkDomain::new(&config)?);
    let served = serve(domain, dir, stop).await?;
    let app = history.runs.bad_record.clone();
    // `list_jobs` reads one endpoint, as the direct call does (`get_application` reads
    // three and summarizes them).
    let url = format!("{}/api/v1/applications/{app}/jobs", history.url);
    let http = reqwest::Client::new();
    let direct = Box::new(move || {
        let (http, url) = (http.clone(), url.clone());
        Box::pin(async move {
            let body = http.get(&url).send().await?.error_for_status()?.bytes().await?;
            serde_json::from_slice::<Value>(&body)?;
            Ok(())
        }) as futures::future::BoxFuture<'static, Result<()>>
    });
    Ok((Case { server: "spark", tool: "list_jobs", args: json!({"app_id": app}), direct }, served))
}

async fn airflow_case(
    dir: &std::path::Path,
    stop: &CancellationToken,
) -> Result<(Case, Served, &'static airflow::Airflow)> {
    let af = airflow::shared().await;
    let domain = Arc::new(inquest::domains::airflow::AirflowDomain::new(&af.config())?);
    let served = serve(domain, dir, stop).await?;
    let rest = af.rest().await.map_err(anyhow::Error::msg)?;
    let (dag, run) = failed_run(af);
    let args = json!({"dag_id": dag, "dag_run_id": run});
    let path = format!("/dags/{}/dagRuns/{}", airflow::encode(&dag), airflow::encode(&run));
    let rest = Arc::new(rest);
    let direct = Box::new(move || {
        let (rest, path) = (rest.clone(), path.clone());
        Box::pin(async move {
            rest.get(&path).await.map_err(anyhow::Error::msg)?;
            Ok(())
        }) as futures::future::BoxFuture<'static, Result<()>>
    });
    Ok((Case { server: "airflow", tool: "get_dag_run", args, direct }, served, af))
}

/// The seeded failed run, as `(dag_id, dag_run_id)`.
fn failed_run(af: &airflow::Airflow) -> (String, String) {
    (airflow::FAILING_LOAD_DAG.to_string(), af.failed_load_run.clone())
}

async fn presto_case(dir: &std::path::Path, stop: &CancellationToken) -> Result<(Case, Served, presto::Coordinator)> {
    let coordinator = presto::Coordinator::start().await;
    let config = inquest::domains::presto::config::PrestoConfig { url: coordinator.url.clone(), ..Default::default() };
    let domain = Arc::new(inquest::domains::presto::PrestoDomain::new(config).map_err(|e| anyhow::anyhow!("{e}"))?);
    let served = serve(domain, dir, stop).await?;
    const SQL: &str = "SELECT ds, count(*) AS orders FROM hive.warehouse.orders_daily GROUP BY ds ORDER BY ds";
    let url = format!("{}/v1/statement", coordinator.url);
    let http = reqwest::Client::new();
    let direct = Box::new(move || {
        let (http, url) = (http.clone(), url.clone());
        Box::pin(async move {
            // The client protocol: POST the statement, then follow nextUri to the end.
            let mut page: Value = http
                .post(&url)
                .header("X-Trino-User", "inquest")
                .body(SQL)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            while let Some(next) = page.get("nextUri").and_then(Value::as_str).map(str::to_string) {
                page =
                    http.get(&next).header("X-Trino-User", "inquest").send().await?.error_for_status()?.json().await?;
            }
            if let Some(e) = page.get("error") {
                bail!("query failed: {e}");
            }
            Ok(())
        }) as futures::future::BoxFuture<'static, Result<()>>
    });
    Ok((Case { server: "presto", tool: "run_query", args: json!({"sql": SQL}), direct }, served, coordinator))
}

/// The third-party Airflow MCP server, installed into a cached venv.
struct Reference {
    child: Child,
    url: String,
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn reference_venv() -> Result<PathBuf> {
    let home = std::env::var("HOME").context("HOME")?;
    let root = PathBuf::from(home).join(format!(".cache/inquest/mcp-server-apache-airflow-{REFERENCE_VERSION}"));
    let bin = root.join("venv/bin/mcp-server-apache-airflow");
    if !bin.exists() {
        eprintln!("installing mcp-server-apache-airflow {REFERENCE_VERSION} into {} ...", root.display());
        std::fs::create_dir_all(&root)?;
        let ok = Command::new("python3").args(["-m", "venv"]).arg(root.join("venv")).status()?.success()
            && Command::new(root.join("venv/bin/pip"))
                .args(["install", "-q", &format!("mcp-server-apache-airflow=={REFERENCE_VERSION}")])
                .status()?
                .success();
        if !ok {
            bail!("installing mcp-server-apache-airflow failed");
        }
    }
    Ok(bin)
}

async fn start_reference(af: &airflow::Airflow) -> Result<Reference> {
    let bin = reference_venv()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let token = login_token(af).await?;
    let child = Command::new(bin)
        .args(["--transport", "http", "--mcp-host", "127.0.0.1", "--mcp-port", &port.to_string()])
        .env("AIRFLOW_HOST", &af.url)
        .env("AIRFLOW_JWT_TOKEN", token)
        .env("AIRFLOW_API_VERSION", "v2")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let reference = Reference { child, url: format!("http://127.0.0.1:{port}/mcp") };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(reference);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("mcp-server-apache-airflow did not start listening on port {port}")
}

async fn login_token(af: &airflow::Airflow) -> Result<String> {
    let body: Value = reqwest::Client::new()
        .post(format!("{}/auth/token", af.url))
        .json(&json!({"username": airflow::USERNAME, "password": airflow::PASSWORD}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    body["access_token"].as_str().map(str::to_string).context("no access_token")
}

async fn run(opts: Options) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let stop = CancellationToken::new();
    let mut rows = Vec::new();
    let mut airflow_case_for_reference = None;
    for server in &opts.servers {
        eprintln!("{server}: starting the backend and the server ...");
        match *server {
            "spark" => {
                let (case, served) = spark_case(dir.path(), &stop).await?;
                run_case(case, served, &opts, &mut rows).await?;
            }
            "presto" => {
                let (case, served, _coordinator) = presto_case(dir.path(), &stop).await?;
                run_case(case, served, &opts, &mut rows).await?;
            }
            "airflow" => {
                let (case, served, af) = airflow_case(dir.path(), &stop).await?;
                run_case(case, served, &opts, &mut rows).await?;
                airflow_case_for_reference = Some(af);
            }
            _ => {}
        }
    }
    if opts.reference {
        let af = match airflow_case_for_reference {
            Some(af) => af,
            None => airflow::shared().await,
        };
        eprintln!("reference: mcp-server-apache-airflow {REFERENCE_VERSION} ...");
        let reference = start_reference(af).await?;
        let (case, _served, _) = airflow_case(dir.path(), &stop).await?;
        let client = client(reqwest::Client::new(), &reference.url, ClientLifecycleMode::Initialize).await?;
        let (direct, via) = measure(&case, &client, &opts).await?;
        let base = direct.p(0.5);
        rows.push(Row { server: "airflow".into(), way: "direct HTTP".into(), series: direct, base: None });
        rows.push(Row {
            server: "airflow".into(),
            way: format!("reference (Python) {}", case.tool),
            series: via,
            base: Some((base, false)),
        });
    }
    stop.cancel();
    println!();
    println!(
        "== MCP server overhead: one call at a time, direct and MCP alternating, {} calls each after a warm-up \
         of at least {} pairs and {} s ==",
        opts.calls,
        opts.warmup,
        opts.warmup_for.as_secs()
    );
    println!("target: on the 2026-07-28 row, added p50 <= {TARGET_ADDED_MS} ms and p50 ratio <= {TARGET_RATIO}");
    print(&rows);
    Ok(())
}

fn main() -> ExitCode {
    inquest::identity::install_crypto_provider();
    let opts = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mcp bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcp bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
