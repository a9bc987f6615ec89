//! Registry benchmark: how long an authorization decision takes in-process, how long
//! the authorization check takes over mTLS at a steady 1,000 requests/s, and how long a
//! page of a 1,000-server catalog takes to list.
//!
//! ```text
//! cargo bench --bench registry                  # everything, ~50 s after the build
//! cargo bench --bench registry -- decide        # only the in-process decisions
//! cargo bench --bench registry -- check list    # only the HTTP parts
//! INQUEST_BENCH=quick cargo bench --bench registry   # 3 s paced windows instead of 10 s
//! ```
//!
//! Words, given as arguments or in `INQUEST_BENCH` (comma or space separated), combine:
//! `decide`, `check`, `list` (none named: all three), and `quick`.
//!
//! Everything runs in this one process on 127.0.0.1. The registry is the real router
//! (`inquest::registry::router`) behind the real authentication layer, on its own Tokio
//! runtime with two worker threads (threads `registry-srv`), served on an
//! `MtlsListener` with the registry's development SVID, over a SQLite store
//! (`SqlStore::open("sqlite://<tmp>/r.db", 8)`) in a temporary directory. The client is
//! the agent's development SVID through `mtls::http_client_builder` (the builder of
//! `mtls::http_client`, plus a 10 s timeout and a connection counter), HTTP/1.1 with
//! keep-alive, on a runtime of its own with one worker (`load-gen`). Setup publishes
//! 1,000 servers with policies and live tool lists through the `CatalogStore` trait
//! (the agent is no admin, as in production), then approves `com.example/airflow` and
//! gives it the policy below, which allows the agent.
//!
//! The policy measured (`realistic_access`): six allowed matchers (four groups, the
//! agent's SPIFFE ID, a SPIFFE prefix), a preview group, twelve listed tools of which
//! two are narrowed to fewer principals and three are sensitive (need approval), and
//! default approvers for unlisted tools.
//!
//! Rows:
//! - decide: `policy::decide` (pure) and `PolicyCache::decide` (1,000 cached servers,
//!   read lock + map lookup + `decide`) over a mix of six questions (allow, narrowed
//!   allow, sensitive tool, unlisted tool, server only, deny), and the sensitive tool
//!   alone. `batched`: 2,000 batches of 1,000 calls, each batch timed once; mean is
//!   total / calls, the percentiles are of the per-call mean of each batch (they hide
//!   single slow calls). `each`: every call timed on its own; includes the timer's own
//!   cost (printed) and any preemption, so it is the conservative figure, and the one
//!   the 10 µs target is judged on (p99).
//! - check: `POST /v0.1/x/authz/check`, the agent asking about itself, cycling four
//!   questions (an allowed tool, the sensitive tool, an unlisted tool, the server).
//!   - `in-process`: the same router and authentication layer called with
//!     `tower::ServiceExt::oneshot`, the peer's SPIFFE ID put where the listener puts it;
//!     no socket, no TLS, no client. One at a time.
//!   - `mTLS keep-alive 1,000/s` (the target row): open loop; request n is due at
//!     start + n ms, sent by a pacer thread that waits until then (sleeping, then
//!     yielding for the last 200 µs, since a sleep alone overshoots by ~90 µs) and
//!     hands the request to the client runtime; latency runs from when it was due to
//!     the last byte of the answer, so a server (or client) that falls behind shows
//!     it. A burst of 8 concurrent checks opens the pool's connections, then 1 s
//!     paced warm-up, then 10 s measured (connections opened while measured, each a
//!     full handshake, are counted and printed). `lag` is due ->
//!     the client task starting the request (the load generator's own delay), `pacer`
//!     the part of it before the hand-over (the pacer thread late, e.g. preempted);
//!     `service` is start -> last byte.
//!   - `plain HTTP keep-alive 1,000/s`: the same router on plain TCP (TCP_NODELAY, as
//!     the mTLS listener sets it; the peer's SPIFFE ID inserted by a bench layer), 5 s
//!     measured: what TLS adds.
//!   - `mTLS new connection each`: 100 requests one after another, each on a fresh
//!     connection (pool disabled): a full TLS 1.3 handshake with both certificate
//!     chains verified (the listener disables resumption on purpose).
//! - list: `GET /v0.1/servers?limit=100` with 1,000 servers (each entry carries its
//!   policy and twelve tools, as the registry serves them), one request at a time,
//!   walking the ten pages by cursor over and over: over the same mTLS keep-alive
//!   client, in-process through the router, and the store's `CatalogStore::list` alone
//!   (SQL and decoding the rows, no JSON out); the differences say where the time
//!   goes. The mTLS row's median per page shows whether deep pages cost more, and a
//!   count of answers that took 40 ms or more watches for Nagle's algorithm meeting a
//!   delayed ACK (the last small segment of a 400 KB answer held back until the client
//!   acknowledges the rest, at least 40 ms on Linux; that put the p99 near 50 ms before
//!   the TLS listener set TCP_NODELAY). `limit=1000` is tried once: the registry
//!   clamps it to 100 (the official registry's maximum); if it ever stops clamping, a
//!   `limit=1000` row is measured too.
//!
//! Targets: decide p99 < 10 µs; check over mTLS p99 < 1 ms at 1,000/s with no errors;
//! list p99 < 20 ms. A missed target prints FAIL and still exits 0; a part that could
//! not run (setup failed, a wrong answer in the sanity checks) exits 1, bad words 2.
//!
//! Machine context comes first: cores, load, how busy the cores were, and the wake-up
//! floor (how late a thread sleeping 0.8 ms wakes, over 2,000 tries): on a VM that
//! floor's p99 can be a millisecond even when idle, and every paced request crosses
//! several sleeping threads, so it bounds how low the HTTP p99s here can go.
//!
//! Reading the numbers: the server, the load generator and SQLite share this machine's
//! cores (two on the reference VM), so every HTTP latency includes the client's own
//! work and its scheduling against the server's threads. The CPU line under the paced
//! rows says who used what: this process's threads precisely (per thread name), the
//! machine as the kernel's tick-sampled share of all cores, which misses short bursts
//! like ours (it can read below this process's own share) but shows other CPU-bound
//! work on the box (compilers, tests). Compare runs made under the same conditions.

#[path = "support/words.rs"]
mod words;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::serve::ListenerExt as _;
use bytes::Bytes;
use chrono::Utc;
use hdrhistogram::Histogram;
use inquest::clock::SystemClock;
use inquest::config::RegistryConfig;
use inquest::identity::Principal;
use inquest::identity::devca;
use inquest::identity::mtls::{self, MtlsListener, MtlsPeer};
use inquest::policy::{
    self, Access, ApproverPolicy, ReviewState, ServerPolicy, ServerStatus, ToolPolicy, UnlistedTools,
};
use inquest::registry::authz::{AuthzError, PolicyCache, PolicyStore, StoredPolicy};
use inquest::registry::catalog::{CatalogStore, ListQuery, Owner, PolicyDoc, Review, ReviewKind};
use inquest::registry::prober::ToolSnapshot;
use inquest::registry::{RegistryState, router, server_json};
use inquest::store::SqlStore;
use inquest::web::auth::{Authn, authenticate};
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tower::ServiceExt;

const TD: &str = "inquest.local";
const AGENT: &str = "spiffe://inquest.local/agent";
const REGISTRY: &str = "spiffe://inquest.local/registry";
/// The server the agent asks about; one of the catalog's servers.
const GOVERNED: &str = "com.example/airflow";
const CATALOG_SIZE: usize = 1_000;
/// The governed server's tools, as its policy lists them and its probe saw them.
const TOOLS: [&str; 12] = [
    "get_logs",
    "list_dags",
    "get_dag",
    "list_dag_runs",
    "get_task_instance",
    "get_variables",
    "list_pools",
    "get_import_errors",
    "trigger_dag",
    "pause_dag",
    "clear_task",
    "mark_failed",
];
const SENSITIVE: &str = "clear_task";

const TARGET_DECIDE_P99: Duration = Duration::from_micros(10);
const TARGET_CHECK_P99: Duration = Duration::from_millis(1);
const TARGET_LIST_P99: Duration = Duration::from_millis(20);

const DECIDE_BATCHES: usize = 2_000;
const DECIDE_BATCH: usize = 1_000;
const DECIDE_EACH: usize = 500_000;
const CHECK_RATE: u64 = 1_000;
const IN_PROCESS_CHECKS: usize = 5_000;
const NEW_CONNECTIONS: usize = 100;
/// Concurrent checks before a paced run: the keep-alive connections it starts with.
const WARM_CONNECTIONS: usize = 8;
const LIST_LIMIT: u32 = 100;
/// Bounds on the list loop, whichever comes first.
const LIST_REQUESTS: usize = 500;
const LIST_TIME: Duration = Duration::from_secs(15);
const IN_PROCESS_LISTS: usize = 200;
/// Linux's shortest delayed ACK: a list answer this slow most likely waited for one.
const DELAYED_ACK: Duration = Duration::from_millis(40);
/// Every request gives up after this; keeps every loop bounded in time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let opts = match Options::from_env_and_args() {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("registry bench: {msg}\nsee the top of benches/registry.rs for the words it takes");
            return ExitCode::from(2);
        }
    };
    print_machine();
    let mut ran = true;
    if opts.decide {
        ran &= report("decide", decide_part());
    }
    if opts.check || opts.list {
        match Env::start() {
            Ok(env) => {
                if opts.check {
                    ran &= report("check", check_part(&env, &opts));
                }
                if opts.list {
                    ran &= report("list", list_part(&env));
                }
                env.stop();
            }
            Err(e) => {
                println!("\nregistry bench: could not set up the registry: {e:#}");
                ran = false;
            }
        }
    }
    if ran { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Prints a part's table; false if the part could not run.
fn report(part: &str, result: Result<()>) -> bool {
    match result {
        Ok(()) => true,
        Err(e) => {
            println!("\n{part}: could not run: {e:#}");
            false
        }
    }
}

// ---------------------------------------------------------------------------------
// Options

struct Options {
    decide: bool,
    check: bool,
    list: bool,
    quick: bool,
}

impl Options {
    fn from_env_and_args() -> Result<Options, String> {
        let words = words::words();
        let mut o = Options { decide: false, check: false, list: false, quick: false };
        for w in &words {
            match w.as_str() {
                "decide" => o.decide = true,
                "check" => o.check = true,
                "list" => o.list = true,
                "quick" => o.quick = true,
                other => return Err(format!("unknown word `{other}`")),
            }
        }
        if !(o.decide || o.check || o.list) {
            (o.decide, o.check, o.list) = (true, true, true);
        }
        Ok(o)
    }
}

// ---------------------------------------------------------------------------------
// The policy and the catalog

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn approvers(who: &[&str]) -> Option<ApproverPolicy> {
    Some(ApproverPolicy { approvers: strings(who), required: 1 })
}

/// The governed server's access rules; see the top of the file.
fn realistic_access() -> Access {
    let mut tools: BTreeMap<String, ToolPolicy> =
        TOOLS.iter().map(|t| (t.to_string(), ToolPolicy::default())).collect();
    tools.insert("get_logs".into(), ToolPolicy { minutes_saved: Some(10), ..Default::default() });
    tools.insert(
        "trigger_dag".into(),
        ToolPolicy { allowed: Some(strings(&["group:data-eng", "group:airflow-oncall"])), ..Default::default() },
    );
    tools.insert(
        "pause_dag".into(),
        ToolPolicy {
            allowed: Some(strings(&["group:airflow-oncall", AGENT])),
            approval: approvers(&["group:airflow-owners"]),
            ..Default::default()
        },
    );
    tools.insert(
        SENSITIVE.into(),
        ToolPolicy {
            approval: approvers(&["group:airflow-oncall", "user:lead"]),
            minutes_saved: Some(20),
            ..Default::default()
        },
    );
    tools.insert(
        "mark_failed".into(),
        ToolPolicy { approval: approvers(&["group:airflow-oncall"]), ..Default::default() },
    );
    Access {
        allowed: strings(&[
            "group:data-eng",
            "group:analytics",
            "group:sre",
            "group:airflow-oncall",
            AGENT,
            "spiffe://inquest.local/server/*",
        ]),
        preview: strings(&["group:airflow-dev"]),
        tools,
        unlisted_tools: UnlistedTools::NeedsApproval,
        default_approvers: approvers(&["group:data-platform"]),
    }
}

fn approved_policy() -> ServerPolicy {
    ServerPolicy {
        status: ServerStatus::Active,
        security_review: ReviewState::Approved,
        production: ReviewState::Approved,
        access: realistic_access(),
    }
}

/// The name of catalog server `i`; server 0 is the governed one.
fn server_name(i: usize) -> String {
    if i == 0 { GOVERNED.to_string() } else { format!("com.example/mcp-{i:04}") }
}

/// A `server.json` shaped like the official registry's entries.
fn server_doc(name: &str) -> Value {
    let short = name.rsplit('/').next().unwrap_or(name);
    json!({
        "$schema": "https://static.modelcontextprotocol.io/schemas/2025-10-17/server.schema.json",
        "name": name,
        "title": format!("{short} tools"),
        "description": format!("Read jobs, logs and metrics of {short}; act on failed runs"),
        "version": "1.4.2",
        "websiteUrl": format!("https://{short}.example.com"),
        "repository": {"url": format!("https://github.com/example/{short}-mcp"), "source": "github"},
        "remotes": [{"type": "streamable-http", "url": format!("https://{short}.example.com/mcp")}]
    })
}

fn policy_doc(name: &str, access: Access) -> PolicyDoc {
    let short = name.rsplit('/').next().unwrap_or(name);
    PolicyDoc {
        owner: Owner { team: format!("team-{short}"), support_channel: Some(format!("#{short}-support")) },
        service_identity: Some(format!("spiffe://{TD}/server/{short}")),
        access,
        minutes_saved: Some(5),
    }
}

/// What a probe lists for every server: twelve tools with titles, descriptions and hints.
fn tool_snapshots() -> Vec<ToolSnapshot> {
    TOOLS
        .iter()
        .map(|t| ToolSnapshot {
            name: t.to_string(),
            title: Some(t.replace('_', " ")),
            description: Some(format!("{} for one DAG, task or run; see the server's docs", t.replace('_', " "))),
            annotations: json!({"readOnlyHint": t.starts_with("get") || t.starts_with("list")}),
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// Part 1: in-process decisions

/// One question: who asks, about which tool, and the answer the policy must give.
struct Question {
    principal: Principal,
    tool: Option<&'static str>,
    want: &'static str,
}

fn questions() -> Vec<Question> {
    // Groups as an OIDC provider sends them: several, the matching one late in the list.
    let alice = Principal::user(
        "alice",
        &["everyone", "eng", "eng-platform", "vpn-users", "github", "oncall-secondary", "data-eng"],
    );
    let bob = Principal::user("bob", &["everyone", "marketing", "finance", "vpn-users"]);
    let agent = Principal::service(AGENT);
    vec![
        Question { principal: agent.clone(), tool: Some("get_logs"), want: "allow" },
        Question { principal: alice.clone(), tool: Some("trigger_dag"), want: "allow" },
        Question { principal: alice, tool: Some(SENSITIVE), want: "needs_approval" },
        Question { principal: agent.clone(), tool: Some("drop_dag"), want: "needs_approval" },
        Question { principal: agent, tool: None, want: "allow" },
        Question { principal: bob, tool: Some("get_logs"), want: "deny" },
    ]
}

/// A policy store that hands the cache fixed policies: fills it without a database.
struct FixedPolicies(Vec<StoredPolicy>);

#[async_trait]
impl PolicyStore for FixedPolicies {
    async fn policies_since(&self, rev: i64) -> Result<Vec<StoredPolicy>, AuthzError> {
        Ok(self.0.iter().filter(|p| p.rev > rev).cloned().collect())
    }
}

fn cache_of_catalog() -> Result<PolicyCache> {
    let approved = Review { state: ReviewState::Approved, ..Default::default() };
    let policies = (0..CATALOG_SIZE)
        .map(|i| {
            let name = server_name(i);
            StoredPolicy {
                doc: Some(policy_doc(&name, realistic_access())),
                name,
                rev: i64::try_from(i + 1).unwrap_or(i64::MAX),
                status: ServerStatus::Active,
                security_review: approved.clone(),
                production: approved.clone(),
            }
        })
        .collect();
    let cache = PolicyCache::default();
    futures::executor::block_on(cache.refresh(&FixedPolicies(policies))).context("filling the policy cache")?;
    Ok(cache)
}

fn decide_part() -> Result<()> {
    let policy = approved_policy();
    let cache = cache_of_catalog()?;
    let qs = questions();
    for q in &qs {
        let pure = policy::decide(&policy, &q.principal, q.tool).kind();
        let cached = cache.decide(GOVERNED, &q.principal, q.tool).kind();
        ensure!(
            pure == q.want && cached == q.want,
            "{} asking about {:?}: decide says {pure}, the cache {cached}, expected {}",
            q.principal.id(),
            q.tool,
            q.want
        );
    }
    let sensitive: Vec<&Question> = qs.iter().filter(|q| q.tool == Some(SENSITIVE)).collect();
    let mix: Vec<&Question> = qs.iter().collect();
    let pure = |q: &Question| policy::decide(black_box(&policy), black_box(&q.principal), black_box(q.tool));
    let cached = |q: &Question| cache.decide(black_box(GOVERNED), black_box(&q.principal), black_box(q.tool));

    let overhead = timer_overhead()?;
    let mut rows = Vec::new();
    for (what, set) in [("mix of 6", &mix), ("sensitive tool", &sensitive)] {
        rows.push(batched(&format!("policy::decide, {what}, batched"), set, &pure)?);
        rows.push(each(&format!("policy::decide, {what}, each"), set, &pure)?);
    }
    rows.push(batched("PolicyCache::decide (1,000 servers), mix of 6, batched", &mix, &cached)?);
    rows.push(each("PolicyCache::decide (1,000 servers), mix of 6, each", &mix, &cached)?);

    println!();
    println!("== Authorization decision, in-process (one thread) ==");
    println!("target: p99 < {} per decision, judged on the `each` rows", fmt_ns(nanos(TARGET_DECIDE_P99)));
    println!(
        "batched: {} batches of {} calls, percentiles of each batch's per-call mean; \
         each: {} calls timed one by one (timer cost {} per reading included)",
        thousands(DECIDE_BATCHES as u64),
        thousands(DECIDE_BATCH as u64),
        thousands(DECIDE_EACH as u64),
        fmt_ns(overhead)
    );
    print_rows(&rows);
    Ok(())
}

/// Time `f` over the questions in batches; the histogram holds per-call batch means.
fn batched<R>(what: &str, qs: &[&Question], f: &impl Fn(&Question) -> R) -> Result<Row> {
    let n = qs.len();
    // Warm caches and branch predictors before anything counts.
    for i in 0..DECIDE_BATCH * 50 {
        black_box(f(qs[i % n]));
    }
    let mut hist = ns_histogram()?;
    let started = Instant::now();
    for b in 0..DECIDE_BATCHES {
        let t = Instant::now();
        for i in 0..DECIDE_BATCH {
            black_box(f(qs[(b + i) % n]));
        }
        hist.saturating_record(nanos(t.elapsed()) / DECIDE_BATCH as u64);
    }
    let calls = (DECIDE_BATCHES * DECIDE_BATCH) as u64;
    let mean = nanos(started.elapsed()) as f64 / calls as f64;
    Ok(Row::from_hist(what, calls, &hist).with_mean(mean))
}

/// Time every call of `f` on its own; these rows carry the decide target.
fn each<R>(what: &str, qs: &[&Question], f: &impl Fn(&Question) -> R) -> Result<Row> {
    let n = qs.len();
    for i in 0..DECIDE_BATCH * 50 {
        black_box(f(qs[i % n]));
    }
    let mut hist = ns_histogram()?;
    for i in 0..DECIDE_EACH {
        let q = qs[i % n];
        let t = Instant::now();
        black_box(f(q));
        hist.saturating_record(nanos(t.elapsed()));
    }
    Ok(Row::from_hist(what, DECIDE_EACH as u64, &hist).judged(TARGET_DECIDE_P99))
}

/// What reading the clock twice costs, the median of many tries.
fn timer_overhead() -> Result<u64> {
    let mut hist = ns_histogram()?;
    for _ in 0..100_000 {
        let t = Instant::now();
        hist.saturating_record(nanos(black_box(t).elapsed()));
    }
    Ok(hist.value_at_quantile(0.5))
}

// ---------------------------------------------------------------------------------
// The registry under test

/// The registry served on 127.0.0.1 over mTLS (and plain HTTP, for comparison), its
/// store seeded, and the agent's client.
struct Env {
    /// The server's runtime; shut down without blocking when the bench ends.
    server_rt: Option<Runtime>,
    client_rt: Option<Runtime>,
    state: RegistryState,
    /// The router behind the authentication layer, as it is served over mTLS.
    app: Router,
    mtls_base: String,
    plain_base: String,
    /// The agent's keep-alive client, and the connections it has opened so far.
    client: reqwest::Client,
    connects: Arc<AtomicU64>,
    /// A client that opens a new connection for every request.
    fresh_client: reqwest::Client,
    fresh_connects: Arc<AtomicU64>,
    /// Seeding, for the report.
    seeded_in: Duration,
    // Last: removed only after the runtimes stopped reading its files.
    _dir: tempfile::TempDir,
}

impl Env {
    fn start() -> Result<Env> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let paths = devca::ensure_dev_identities_with(dir.path(), TD, &[]).context("issuing development SVIDs")?;
        let server_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("registry-srv")
            .enable_all()
            .build()
            .context("starting the server runtime")?;
        let client_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("load-gen")
            .enable_all()
            .build()
            .context("starting the client runtime")?;

        let url = format!("sqlite://{}/r.db", dir.path().display());
        let (state, app, mtls_addr, plain_addr, seeded_in) = server_rt.block_on(async {
            let store = Arc::new(SqlStore::open(&url, 8).await.context("opening the store")?);
            let config = RegistryConfig {
                public_url: "https://registry.inquest.local".into(),
                url: "https://registry.inquest.local".into(),
                admins: vec!["group:registry-admins".into()],
                approval_ttl: Duration::from_secs(3600),
                probe_interval: Duration::from_secs(30),
                pull_request_approvers: Vec::new(),
            };
            let state = RegistryState {
                config: Arc::new(config),
                store,
                clock: Arc::new(SystemClock),
                policy: Arc::new(PolicyCache::default()),
            };
            let started = Instant::now();
            seed(&state).await?;
            let seeded_in = started.elapsed();

            let app = router(state.clone()).layer(axum::middleware::from_fn_with_state(Authn::default(), authenticate));
            // The registry's own SVID, admitting the agent only (as the registry's
            // mesh listener would, among other roles).
            let source = Arc::new(paths.file_source(REGISTRY).context("the registry's SVID")?);
            let config = mtls::server_config(source, vec![AGENT.to_string()]).context("the server TLS config")?;
            let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the mTLS listener")?;
            let mtls_addr = serve_mtls(tcp, config, &app)?;

            // Plain HTTP: the same router; a bench layer stands in for the listener and
            // says the peer is the agent, so authentication resolves the same principal.
            let plain = app.clone().layer(axum::middleware::map_request(as_agent_peer));
            let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the plain listener")?;
            let plain_addr = tcp.local_addr().context("the plain listener's address")?;
            // TCP_NODELAY, as the mTLS listener sets it: the rows then differ by TLS only.
            let tcp = tcp.tap_io(|stream| {
                let _ = stream.set_nodelay(true);
            });
            tokio::spawn(async move {
                if let Err(e) = axum::serve(tcp, plain).await {
                    eprintln!("registry bench: the plain server stopped: {e}");
                }
            });
            Ok::<_, anyhow::Error>((state, app, mtls_addr, plain_addr, seeded_in))
        })?;

        // The agent's SVID follows its files from the client runtime, as in the agent.
        let (client, connects, fresh_client, fresh_connects) = {
            let _in_runtime = client_rt.enter();
            let source = Arc::new(paths.file_source(AGENT).context("the agent's SVID")?);
            let build = |pooled: bool| -> Result<(reqwest::Client, Arc<AtomicU64>)> {
                let counter = Arc::new(AtomicU64::new(0));
                let mut builder = mtls::http_client_builder(source.clone(), vec![REGISTRY.to_string()])
                    .context("the agent's client")?
                    .timeout(REQUEST_TIMEOUT)
                    .connector_layer(CountConnects(counter.clone()));
                if !pooled {
                    builder = builder.pool_max_idle_per_host(0);
                }
                Ok((builder.build().context("building the agent's client")?, counter))
            };
            let (client, connects) = build(true)?;
            let (fresh_client, fresh_connects) = build(false)?;
            (client, connects, fresh_client, fresh_connects)
        };
        Ok(Env {
            server_rt: Some(server_rt),
            client_rt: Some(client_rt),
            state,
            app,
            mtls_base: format!("https://{mtls_addr}"),
            plain_base: format!("http://{plain_addr}"),
            client,
            connects,
            fresh_client,
            fresh_connects,
            seeded_in,
            _dir: dir,
        })
    }

    fn server_rt(&self) -> Result<&Runtime> {
        self.server_rt.as_ref().context("the server runtime is gone")
    }

    fn client_rt(&self) -> Result<&Runtime> {
        self.client_rt.as_ref().context("the client runtime is gone")
    }

    /// Closes the store, then the runtimes (their Drop does the rest).
    fn stop(self) {
        if let Ok(rt) = self.server_rt() {
            rt.block_on(self.state.store.close());
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Dropping a runtime waits for its blocking threads; this does not.
        for rt in [self.client_rt.take(), self.server_rt.take()].into_iter().flatten() {
            rt.shutdown_background();
        }
    }
}

/// Publishes the catalog through the store (the agent is no admin), governs the
/// servers and records their tools, then approves the governed server.
async fn seed(state: &RegistryState) -> Result<()> {
    let store = &*state.store;
    let now = Utc::now();
    let tools = tool_snapshots();
    for i in 0..CATALOG_SIZE {
        let name = server_name(i);
        let doc = server_doc(&name);
        let server = server_json::validate(&doc).map_err(|v| anyhow!("{name}: invalid server.json: {v:?}"))?;
        CatalogStore::publish(store, &server, "bench", now).await.with_context(|| format!("publishing {name}"))?;
        // Other servers allow other groups; the shape (and so the JSON) is the same.
        let mut access = realistic_access();
        if i != 0 {
            access.allowed.retain(|m| m.starts_with("group:"));
        }
        store.set_policy(&name, &policy_doc(&name, access), "bench", now).await.context("writing a policy")?;
        store.record_tools(&name, &tools, now).await.context("recording tools")?;
    }
    for kind in [ReviewKind::SecurityReview, ReviewKind::Production] {
        let review = Review { state: ReviewState::Approved, by: Some("user:root".into()), at: Some(now), note: None };
        store.set_review(GOVERNED, kind, &review, now).await.context("approving the governed server")?;
    }
    // As the admin routes do after a write, so the first check sees it all.
    state.policy.refresh(store).await.context("loading the policy cache")?;
    Ok(())
}

/// Serves `app` over mTLS on `tcp` from the current runtime; the address it listens on.
fn serve_mtls(tcp: tokio::net::TcpListener, config: Arc<rustls::ServerConfig>, app: &Router) -> Result<SocketAddr> {
    let listener = MtlsListener::new(tcp, config).context("the mTLS listener")?;
    let addr = axum::serve::Listener::local_addr(&listener).context("the mTLS listener's address")?;
    let served = app.clone().into_make_service_with_connect_info::<MtlsPeer>();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, served).await {
            eprintln!("registry bench: an mTLS server stopped: {e}");
        }
    });
    Ok(addr)
}

async fn as_agent_peer(mut req: Request) -> Request {
    req.extensions_mut().insert(ConnectInfo(agent_peer()));
    req
}

fn agent_peer() -> MtlsPeer {
    MtlsPeer { addr: SocketAddr::from(([127, 0, 0, 1], 40_000)), spiffe_id: Some(AGENT.to_string()) }
}

/// Counts the connections a client opens: a tower layer over reqwest's connector.
#[derive(Clone)]
struct CountConnects(Arc<AtomicU64>);

impl<S> tower::Layer<S> for CountConnects {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted { inner, count: self.0.clone() }
    }
}

#[derive(Clone)]
struct Counted<S> {
    inner: S,
    count: Arc<AtomicU64>,
}

impl<S: tower::Service<R>, R> tower::Service<R> for Counted<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> S::Future {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.inner.call(req)
    }
}

// ---------------------------------------------------------------------------------
// Part 2: the authorization check

/// The check bodies the agent cycles through, with the answer each must get.
fn check_bodies() -> Vec<(Bytes, &'static str)> {
    [
        (Some("get_logs"), "allow"),
        (Some(SENSITIVE), "needs_approval"),
        (Some("drop_dag"), "needs_approval"),
        (None, "allow"),
    ]
    .into_iter()
    .map(|(tool, want)| (Bytes::from(json!({"server": GOVERNED, "tool": tool}).to_string()), want))
    .collect()
}

fn check_part(env: &Env, opts: &Options) -> Result<()> {
    let bodies = check_bodies();
    let check_url = format!("{}/v0.1/x/authz/check", env.mtls_base);
    let plain_url = format!("{}/v0.1/x/authz/check", env.plain_base);
    // Every way in gives every answer right before anything is timed.
    for (body, want) in &bodies {
        for (how, got) in [
            ("mTLS", env.client_rt()?.block_on(post_json(&env.client, &check_url, body.clone()))?),
            ("plain", env.client_rt()?.block_on(post_json(&env.client, &plain_url, body.clone()))?),
            ("in-process", env.server_rt()?.block_on(oneshot(&env.app, "POST", "/v0.1/x/authz/check", body.clone()))?),
        ] {
            let v: Value = serde_json::from_slice(&got).context("a check answer that is not JSON")?;
            ensure!(v["decision"] == *want, "{how} check {}: got {v}, expected {want}", String::from_utf8_lossy(body));
        }
    }

    let measure = if opts.quick { Duration::from_secs(3) } else { Duration::from_secs(10) };
    let plain_measure = if opts.quick { Duration::from_secs(2) } else { Duration::from_secs(5) };
    let warmup = Duration::from_secs(1);
    let payloads: Vec<Bytes> = bodies.iter().map(|(b, _)| b.clone()).collect();

    let mut rows = Vec::new();
    let in_process = env.server_rt()?.block_on(in_process_loop(&env.app, "POST", IN_PROCESS_CHECKS, |i| {
        ("/v0.1/x/authz/check".to_string(), payloads[i % payloads.len()].clone())
    }))?;
    rows.push(in_process.row("in-process router, one at a time"));

    let mtls_run = paced(env, &env.client, &env.connects, &check_url, &payloads, warmup, measure)?;
    let plain_run = paced(env, &env.client, &env.connects, &plain_url, &payloads, warmup, plain_measure)?;
    let fresh = env.client_rt()?.block_on(sequential(&env.fresh_client, &check_url, &payloads, NEW_CONNECTIONS))?;
    let fresh_connects = env.fresh_connects.load(Ordering::Relaxed);

    rows.push(mtls_run.total_row(&format!("mTLS keep-alive {}/s", thousands(CHECK_RATE))).judged(TARGET_CHECK_P99));
    rows.push(mtls_run.lag_row("  of which lag (due -> sent)"));
    rows.push(mtls_run.pacer_row("    of which pacer (due -> handed over)"));
    rows.push(mtls_run.service_row("  of which service (sent -> answer)"));
    rows.push(plain_run.total_row(&format!("plain HTTP keep-alive {}/s", thousands(CHECK_RATE))));
    rows.push(plain_run.service_row("  of which service (sent -> answer)"));
    rows.push(fresh.row("mTLS new connection each, one at a time"));

    println!();
    println!("== Authorization check: POST /v0.1/x/authz/check, the agent asking about {GOVERNED} ==");
    println!(
        "target: p99 < {} over mTLS at {}/s, no errors; paced rows: open loop, {} warm-up, latency from when each request was due",
        fmt_ns(nanos(TARGET_CHECK_P99)),
        thousands(CHECK_RATE),
        secs(warmup)
    );
    println!(
        "mTLS paced: {} measured, {} sent, new connections while measured: {} (each a full handshake); plain: {} measured",
        secs(measure),
        thousands(mtls_run.offered),
        mtls_run.new_connections,
        secs(plain_measure)
    );
    print_rows(&rows);
    for (name, run) in [("mTLS paced", &mtls_run), ("plain paced", &plain_run)] {
        println!("cpu, {name}: {}", run.cpu.describe());
        if let Some(e) = &run.first_error {
            println!("first error, {name}: {e}");
        }
    }
    if let Some(e) = &fresh.first_error {
        println!("first error, new connections: {e}");
    }
    println!("new-connection client opened {fresh_connects} connections for {NEW_CONNECTIONS} requests (+ none kept)");
    Ok(())
}

/// Posts a JSON body; the answer's bytes on a 200, else an error naming the status.
async fn post_json(client: &reqwest::Client, url: &str, body: Bytes) -> Result<Bytes> {
    let resp = client.post(url).header(CONTENT_TYPE, "application/json").body(body).send().await?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    ensure!(status == reqwest::StatusCode::OK, "{status}: {}", String::from_utf8_lossy(&bytes[..bytes.len().min(200)]));
    Ok(bytes)
}

async fn get(client: &reqwest::Client, url: &str) -> Result<Bytes> {
    let resp = client.get(url).send().await?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    ensure!(status == reqwest::StatusCode::OK, "{status}: {}", String::from_utf8_lossy(&bytes[..bytes.len().min(200)]));
    Ok(bytes)
}

/// One request through the router in-process, as the mTLS listener would hand it over.
async fn oneshot(app: &Router, method: &str, uri: &str, body: Bytes) -> Result<Bytes> {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .context("building a request")?;
    req.extensions_mut().insert(ConnectInfo(agent_peer()));
    let resp = app.clone().oneshot(req).await.context("the router failed")?;
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.context("reading the answer")?;
    ensure!(
        status == axum::http::StatusCode::OK,
        "{status}: {}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
    );
    Ok(bytes)
}

/// Latencies of requests made one after another.
struct Sequential {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    bytes: u64,
    first_error: Option<String>,
}

impl Sequential {
    fn new() -> Result<Sequential> {
        Ok(Sequential { hist: ns_histogram()?, ok: 0, errors: 0, bytes: 0, first_error: None })
    }

    fn record(&mut self, took: Duration, result: Result<Bytes>) {
        match result {
            Ok(b) => {
                self.ok += 1;
                self.bytes += b.len() as u64;
                self.hist.saturating_record(nanos(took));
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }

    fn row(&self, what: &str) -> Row {
        Row::from_hist(what, self.ok, &self.hist).with_errors(self.errors)
    }

    /// How many answers took `d` or longer.
    fn at_least(&self, d: Duration) -> u64 {
        let limit = nanos(d);
        self.hist.iter_recorded().filter(|v| v.value_iterated_to() >= limit).map(|v| v.count_at_value()).sum()
    }
}

/// `n` in-process requests one at a time; `req(i)` gives the URI and body of request i.
async fn in_process_loop(
    app: &Router,
    method: &str,
    n: usize,
    req: impl Fn(usize) -> (String, Bytes),
) -> Result<Sequential> {
    let mut out = Sequential::new()?;
    for i in 0..n + n / 10 {
        let (uri, body) = req(i);
        let t = Instant::now();
        let result = oneshot(app, method, &uri, body).await;
        // The first tenth warms up.
        if i >= n / 10 {
            out.record(t.elapsed(), result);
        }
    }
    Ok(out)
}

/// `n` checks one after another on `client`.
async fn sequential(client: &reqwest::Client, url: &str, bodies: &[Bytes], n: usize) -> Result<Sequential> {
    let mut out = Sequential::new()?;
    for i in 0..n {
        let t = Instant::now();
        let result = post_json(client, url, bodies[i % bodies.len()].clone()).await;
        out.record(t.elapsed(), result);
    }
    Ok(out)
}

/// One paced request, as the client task saw it.
struct Sample {
    due: Instant,
    /// When the pacer spawned it onto the client runtime.
    handed_over: Instant,
    started: Instant,
    done: Instant,
    result: Result<(), String>,
}

/// What a paced run measured, over the requests due inside the measured window.
struct PacedRun {
    total: Histogram<u64>,
    lag: Histogram<u64>,
    pacer: Histogram<u64>,
    service: Histogram<u64>,
    ok: u64,
    errors: u64,
    offered: u64,
    first_error: Option<String>,
    new_connections: u64,
    cpu: CpuUse,
}

impl PacedRun {
    fn total_row(&self, what: &str) -> Row {
        Row::from_hist(what, self.ok, &self.total).with_errors(self.errors)
    }

    fn lag_row(&self, what: &str) -> Row {
        Row::from_hist(what, self.ok, &self.lag)
    }

    fn pacer_row(&self, what: &str) -> Row {
        Row::from_hist(what, self.ok, &self.pacer)
    }

    fn service_row(&self, what: &str) -> Row {
        Row::from_hist(what, self.ok, &self.service)
    }
}

/// Offers CHECK_RATE requests/s to `url` for warm-up + measure, open loop: this thread
/// paces, the client runtime sends. Latency counts from each request's due time, so a
/// stall anywhere shows up (no coordinated omission).
fn paced(
    env: &Env,
    client: &reqwest::Client,
    connects: &AtomicU64,
    url: &str,
    bodies: &[Bytes],
    warmup: Duration,
    measure: Duration,
) -> Result<PacedRun> {
    let handle = env.client_rt()?.handle().clone();
    // A burst of concurrent checks first, so the pool holds the connections an agent
    // that has been running a while would have: otherwise the first hiccup in the
    // window makes the client open more, each a full handshake (~1 ms of CPU on both
    // sides), which prolongs the hiccup. Connections opened while measured are counted.
    env.client_rt()?.block_on(async {
        let burst = (0..WARM_CONNECTIONS).map(|i| post_json(client, url, bodies[i % bodies.len()].clone()));
        futures::future::try_join_all(burst).await.map(drop)
    })?;
    let period = Duration::from_nanos(1_000_000_000 / CHECK_RATE);
    let total = (warmup + measure).as_nanos() / period.as_nanos();
    let total = u32::try_from(total).context("too many requests for one run")?;
    let start = Instant::now() + Duration::from_millis(5);
    let window_from = start + warmup;
    let window_to = start + warmup + measure;
    let probe = CpuProbe::spawn(window_from, window_to)?;
    let mut connects_at_window = None;
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        let due = start + period * n;
        pace_until(due);
        if due >= window_from && connects_at_window.is_none() {
            connects_at_window = Some(connects.load(Ordering::Relaxed));
        }
        let (client, url, body) = (client.clone(), url.to_string(), bodies[n as usize % bodies.len()].clone());
        let handed_over = Instant::now();
        tasks.push(handle.spawn(async move {
            let started = Instant::now();
            let result = post_json(&client, &url, body).await.map(drop).map_err(|e| format!("{e:#}"));
            Sample { due, handed_over, started, done: Instant::now(), result }
        }));
    }
    let samples = env.client_rt()?.block_on(async {
        let mut samples = Vec::with_capacity(tasks.len());
        for t in tasks {
            samples.push(t.await.context("a request task panicked")?);
        }
        Ok::<_, anyhow::Error>(samples)
    })?;
    let new_connections = connects.load(Ordering::Relaxed) - connects_at_window.unwrap_or(0);
    let cpu = probe.finish();

    let mut run = PacedRun {
        total: ns_histogram()?,
        lag: ns_histogram()?,
        pacer: ns_histogram()?,
        service: ns_histogram()?,
        ok: 0,
        errors: 0,
        offered: 0,
        first_error: None,
        new_connections,
        cpu,
    };
    for s in samples.iter().filter(|s| s.due >= window_from && s.due < window_to) {
        run.offered += 1;
        match &s.result {
            Ok(()) => {
                run.ok += 1;
                run.total.saturating_record(nanos(s.done - s.due));
                run.lag.saturating_record(nanos(s.started.saturating_duration_since(s.due)));
                run.pacer.saturating_record(nanos(s.handed_over.saturating_duration_since(s.due)));
                run.service.saturating_record(nanos(s.done - s.started));
            }
            Err(e) => {
                run.errors += 1;
                run.first_error.get_or_insert_with(|| e.clone());
            }
        }
    }
    Ok(run)
}

// ---------------------------------------------------------------------------------
// Part 3: the catalog list

fn list_part(env: &Env) -> Result<()> {
    let base = format!("{}/v0.1/servers", env.mtls_base);
    let client_rt = env.client_rt()?;

    // Whether a page may hold 1,000: the registry answers, clamped or not.
    let big = client_rt.block_on(get(&env.client, &format!("{base}?limit=1000")))?;
    let big: Value = serde_json::from_slice(&big).context("a list answer that is not JSON")?;
    let big_count = big["metadata"]["count"].as_u64().context("a list answer without metadata.count")?;

    // The ten pages' cursors, by walking the catalog once.
    let mut cursors: Vec<Option<String>> = vec![None];
    let mut walked = 0;
    loop {
        let uri = page_uri(LIST_LIMIT, cursors.last().and_then(Option::as_deref));
        let page = client_rt.block_on(get(&env.client, &format!("{}{uri}", env.mtls_base)))?;
        let page: Value = serde_json::from_slice(&page).context("a list answer that is not JSON")?;
        walked += page["metadata"]["count"].as_u64().unwrap_or(0);
        match page["metadata"]["nextCursor"].as_str() {
            Some(c) if cursors.len() < CATALOG_SIZE => cursors.push(Some(c.to_string())),
            _ => break,
        }
    }
    ensure!(walked == CATALOG_SIZE as u64, "walking the catalog by cursor found {walked} servers, not {CATALOG_SIZE}");
    let uris: Vec<String> = cursors.iter().map(|c| page_uri(LIST_LIMIT, c.as_deref())).collect();

    let mut rows = Vec::new();
    let afters: Vec<Option<(String, String)>> = cursors
        .iter()
        .map(|c| c.as_deref().and_then(|c| c.split_once(':')).map(|(n, v)| (n.to_string(), v.to_string())))
        .collect();
    let store_only = env.server_rt()?.block_on(store_list_loop(&env.state.store, &afters))?;
    rows.push(store_only.row(&format!("limit={LIST_LIMIT}, CatalogStore::list only (SQL + rows)")));
    let in_process = env.server_rt()?.block_on(in_process_loop(&env.app, "GET", IN_PROCESS_LISTS, |i| {
        (uris[i % uris.len()].clone(), Bytes::new())
    }))?;
    rows.push(in_process.row(&format!("limit={LIST_LIMIT}, in-process router")));
    let (over_mtls, by_page) = client_rt.block_on(list_loop(&env.client, &env.mtls_base, &uris))?;
    rows.push(over_mtls.row(&format!("limit={LIST_LIMIT}, mTLS keep-alive")).judged(TARGET_LIST_P99));
    let clamped = big_count <= u64::from(LIST_LIMIT);
    let mut big_run = None;
    if !clamped {
        let uris = vec![page_uri(1000, None)];
        let (run, _) = client_rt.block_on(list_loop(&env.client, &env.mtls_base, &uris))?;
        rows.push(run.row("limit=1000, mTLS keep-alive").judged(TARGET_LIST_P99));
        big_run = Some(run);
    }

    println!();
    println!(
        "== Catalog list: GET /v0.1/servers with {} servers, one request at a time ==",
        thousands(CATALOG_SIZE as u64)
    );
    println!(
        "target: p99 < {}; pages walked by cursor in turn ({} pages), each entry with its policy and {} tools",
        fmt_ns(nanos(TARGET_LIST_P99)),
        uris.len(),
        TOOLS.len()
    );
    if clamped {
        println!(
            "limit=1000: answered {big_count} servers: the registry clamps limit to {LIST_LIMIT}, so only limit={LIST_LIMIT} is measured"
        );
    }
    let avg = |s: &Sequential| s.bytes.checked_div(s.ok).unwrap_or(0);
    println!(
        "answer size: {} bytes on average per page of {LIST_LIMIT}{}; seeding the catalog took {}",
        thousands(avg(&over_mtls)),
        big_run.as_ref().map_or(String::new(), |r| format!(", {} bytes for limit=1000", thousands(avg(r)))),
        secs(env.seeded_in)
    );
    print_rows(&rows);
    let by_page: Vec<String> =
        by_page.iter().enumerate().map(|(i, h)| format!("{} {}", i + 1, fmt_ns(h.value_at_quantile(0.5)))).collect();
    println!("mTLS p50 by page: {}", by_page.join(", "));
    println!(
        "mTLS answers taking {} or more (a delayed ACK holding the last segment back): {} of {}",
        fmt_ns(nanos(DELAYED_ACK)),
        over_mtls.at_least(DELAYED_ACK),
        over_mtls.ok
    );
    if let Some(e) = &over_mtls.first_error {
        println!("first error: {e}");
    }
    Ok(())
}

/// The store's part of a list: each page's query and rows, one at a time.
async fn store_list_loop(store: &SqlStore, afters: &[Option<(String, String)>]) -> Result<Sequential> {
    let mut out = Sequential::new()?;
    for (i, after) in afters.iter().cycle().take(IN_PROCESS_LISTS + IN_PROCESS_LISTS / 10).enumerate() {
        let q = ListQuery { after: after.clone(), limit: LIST_LIMIT, ..Default::default() };
        let t = Instant::now();
        let page = CatalogStore::list(store, &q).await.context("listing from the store")?;
        let took = t.elapsed();
        ensure!(page.entries.len() == LIST_LIMIT as usize, "a page of {} entries", page.entries.len());
        // The first tenth warms up.
        if i >= IN_PROCESS_LISTS / 10 {
            out.record(took, Ok(Bytes::new()));
        }
    }
    Ok(out)
}

fn page_uri(limit: u32, cursor: Option<&str>) -> String {
    match cursor {
        None => format!("/v0.1/servers?limit={limit}"),
        Some(c) => format!("/v0.1/servers?limit={limit}&cursor={}", encode(c)),
    }
}

/// Percent-encodes a query value (cursors hold `/` and `:`).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Lists the pages in turn, one request at a time, after a short warm-up; also the
/// latencies of each page on its own (whether deep pages cost more).
async fn list_loop(client: &reqwest::Client, base: &str, uris: &[String]) -> Result<(Sequential, Vec<Histogram<u64>>)> {
    for uri in uris.iter().cycle().take(20) {
        get(client, &format!("{base}{uri}")).await?;
    }
    let mut out = Sequential::new()?;
    let mut by_page = uris.iter().map(|_| ns_histogram()).collect::<Result<Vec<_>>>()?;
    let started = Instant::now();
    for (i, uri) in uris.iter().enumerate().cycle().take(LIST_REQUESTS) {
        if started.elapsed() > LIST_TIME {
            break;
        }
        let t = Instant::now();
        let result = get(client, &format!("{base}{uri}")).await;
        let took = t.elapsed();
        if result.is_ok() {
            by_page[i].saturating_record(nanos(took));
        }
        out.record(took, result);
    }
    Ok((out, by_page))
}

// ---------------------------------------------------------------------------------
// Rows and printing

/// One line of a table: latencies in nanoseconds.
struct Row {
    what: String,
    samples: u64,
    errors: Option<u64>,
    mean: f64,
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    target: Option<Duration>,
}

impl Row {
    fn from_hist(what: &str, samples: u64, h: &Histogram<u64>) -> Row {
        let empty = h.is_empty();
        let q = |x: f64| if empty { 0 } else { h.value_at_quantile(x) };
        Row {
            what: what.to_string(),
            samples,
            errors: None,
            mean: if empty { 0.0 } else { h.mean() },
            p50: q(0.5),
            p99: q(0.99),
            p999: q(0.999),
            max: if empty { 0 } else { h.max() },
            target: None,
        }
    }

    fn with_mean(mut self, mean: f64) -> Row {
        self.mean = mean;
        self
    }

    fn with_errors(mut self, errors: u64) -> Row {
        self.errors = Some(errors);
        self
    }

    fn judged(mut self, p99: Duration) -> Row {
        self.target = Some(p99);
        self
    }

    /// PASS or FAIL against the row's p99 target (and no errors), with the margin.
    fn verdict(&self) -> String {
        let Some(target) = self.target else { return String::new() };
        let limit = nanos(target);
        if self.samples == 0 {
            return "FAIL (no sample)".to_string();
        }
        if self.errors.unwrap_or(0) > 0 {
            return format!("FAIL ({} errors)", self.errors.unwrap_or(0));
        }
        if self.p99 < limit {
            format!("PASS ({:.1}x margin)", limit as f64 / self.p99.max(1) as f64)
        } else {
            format!("FAIL (p99 {:.0}% over)", (self.p99 as f64 / limit as f64 - 1.0) * 100.0)
        }
    }
}

fn print_rows(rows: &[Row]) {
    let width = rows.iter().map(|r| r.what.chars().count()).max().unwrap_or(0).max(4);
    println!(
        "{:<width$} {:>9} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}  target p99",
        "what", "samples", "errors", "mean", "p50", "p99", "p99.9", "max"
    );
    for r in rows {
        let target = r.target.map_or(String::new(), |t| format!("< {} {}", fmt_ns(nanos(t)), r.verdict()));
        println!(
            "{:<width$} {:>9} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}  {}",
            r.what,
            thousands(r.samples),
            r.errors.map_or("-".to_string(), |e| e.to_string()),
            fmt_ns(r.mean.round() as u64),
            fmt_ns(r.p50),
            fmt_ns(r.p99),
            fmt_ns(r.p999),
            fmt_ns(r.max),
            target
        );
    }
}

fn print_machine() {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    // How busy the machine is without us: other work on the box moves every HTTP row.
    let before = machine_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let after = machine_ticks();
    let (busy, all) = (after.0.saturating_sub(before.0), after.1.saturating_sub(before.1));
    let busy = if all == 0 { "unknown".to_string() } else { format!("{:.0}%", busy as f64 / all as f64 * 100.0) };
    println!(
        "machine: {cores} cores, load average {} and {busy} of all cores busy in the second before the run; the \
         registry server, its SQLite threads and the load generator all share these cores (one process)",
        load.join(" ")
    );
    if let Ok(h) = wake_up_floor() {
        let q = |x: f64| fmt_ns(h.value_at_quantile(x));
        println!(
            "wake-up floor: a thread sleeping {} wakes late by p50 {}, p99 {}, p99.9 {}, max {} ({} tries); every \
             request crosses several sleeping threads (pacer, client and server workers), so no HTTP p99 here \
             can be much below this one",
            fmt_ns(nanos(FLOOR_SLEEP)),
            q(0.5),
            q(0.99),
            q(0.999),
            fmt_ns(h.max()),
            thousands(FLOOR_TRIES)
        );
    }
}

const FLOOR_SLEEP: Duration = Duration::from_micros(800);
const FLOOR_TRIES: u64 = 2_000;

/// How late a sleeping thread wakes up on this machine: the scheduler's and (on a VM)
/// the hypervisor's wake-up latency, which every cross-thread hand-off pays too.
fn wake_up_floor() -> Result<Histogram<u64>> {
    let mut h = ns_histogram()?;
    for _ in 0..FLOOR_TRIES {
        let t = Instant::now();
        std::thread::sleep(FLOOR_SLEEP);
        h.saturating_record(nanos(t.elapsed().saturating_sub(FLOOR_SLEEP)));
    }
    Ok(h)
}

fn ns_histogram() -> Result<Histogram<u64>> {
    // Nanoseconds, 1 ns to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).context("creating a histogram")
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// 850 -> "850 ns", 12_300 -> "12.3 µs", 1_234_000 -> "1.23 ms".
fn fmt_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.1} µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// 12345 -> "12,345".
fn thousands(x: u64) -> String {
    let digits = x.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------------
// CPU accounting from /proc (Linux; elsewhere the line stays empty)

/// CPU used over a window, as % of one core per group of threads, and the machine's
/// busy share of all its cores.
#[derive(Default)]
struct CpuUse {
    groups: Vec<(&'static str, f64)>,
    machine: Option<f64>,
}

impl CpuUse {
    fn describe(&self) -> String {
        let groups: Vec<String> = self.groups.iter().map(|(g, p)| format!("{g} {p:.0}%")).collect();
        let ours: f64 = self.groups.iter().map(|(_, p)| p).sum();
        let machine =
            self.machine.map_or(String::new(), |m| format!("; machine {m:.0}% of all cores busy (tick-sampled)"));
        format!("this process {ours:.0}% of one core: {} (over the measured window){machine}", groups.join(", "))
    }
}

/// Samples this process's threads at the window's start and end, from a thread of its
/// own so the pacer never pauses to read /proc.
struct CpuProbe(Option<std::thread::JoinHandle<CpuUse>>);

impl CpuProbe {
    fn spawn(from: Instant, to: Instant) -> Result<CpuProbe> {
        let handle = std::thread::Builder::new()
            .name("cpu-probe".into())
            .spawn(move || {
                sleep_until(from);
                let (threads_a, machine_a, at_a) = (own_threads(), machine_ticks(), Instant::now());
                sleep_until(to);
                let (threads_b, machine_b, at_b) = (own_threads(), machine_ticks(), Instant::now());
                let ticks_per_s = clock_ticks_per_s();
                let wall = (at_b - at_a).as_secs_f64().max(1e-3);
                let mut groups: HashMap<&'static str, u64> = HashMap::new();
                for (tid, (name, ticks)) in &threads_b {
                    let before = threads_a.get(tid).map_or(0, |(_, t)| *t);
                    *groups.entry(group_of(name)).or_default() += ticks.saturating_sub(before);
                }
                let mut groups: Vec<(&'static str, f64)> =
                    groups.into_iter().map(|(g, t)| (g, t as f64 / ticks_per_s / wall * 100.0)).collect();
                groups.sort_by(|a, b| b.1.total_cmp(&a.1));
                let (busy, all) = (machine_b.0.saturating_sub(machine_a.0), machine_b.1.saturating_sub(machine_a.1));
                let machine = (all > 0).then(|| busy as f64 / all as f64 * 100.0);
                CpuUse { groups, machine }
            })
            .context("starting the CPU probe")?;
        Ok(CpuProbe(Some(handle)))
    }

    fn finish(mut self) -> CpuUse {
        self.0.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }
}

/// Waits until `t` on the pacer thread. A thread sleep overshoots by 50-100 µs (the
/// kernel's timer slack and wake-up), which would count as latency; so the thread
/// sleeps until shortly before and yields for the rest (about a tenth of a core at
/// 1,000/s, shown as `pacer` in the CPU line).
fn pace_until(t: Instant) {
    const YIELD_FOR: Duration = Duration::from_micros(200);
    let now = Instant::now();
    if t > now + YIELD_FOR {
        std::thread::sleep(t - now - YIELD_FOR);
    }
    while Instant::now() < t {
        std::thread::yield_now();
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Which side a thread works for, by the names this bench gives its threads.
fn group_of(thread: &str) -> &'static str {
    if thread.starts_with("registry-srv") {
        "server (tokio)"
    } else if thread.starts_with("sqlx") {
        "server (sqlite)"
    } else if thread.starts_with("load-gen") {
        "client (tokio)"
    } else if thread.starts_with("registry") {
        // The main thread paces; it carries the binary's name (`registry-<hash>`).
        "pacer"
    } else {
        "other"
    }
}

/// Every thread of this process: tid -> (name, utime + stime ticks).
fn own_threads() -> HashMap<u32, (String, u64)> {
    let Ok(tasks) = fs::read_dir("/proc/self/task") else { return HashMap::new() };
    tasks
        .flatten()
        .filter_map(|t| {
            let tid = t.file_name().to_string_lossy().parse::<u32>().ok()?;
            let name = fs::read_to_string(t.path().join("comm")).ok()?.trim().to_string();
            Some((tid, (name, stat_ticks(&t.path().join("stat")))))
        })
        .collect()
}

/// utime + stime of a /proc/.../stat file, in clock ticks; 0 if it is gone.
fn stat_ticks(stat: &Path) -> u64 {
    let Ok(text) = fs::read_to_string(stat) else { return 0 };
    // The command name may hold spaces; the fields after it start at field 3 (state).
    let Some((_, rest)) = text.rsplit_once(')') else { return 0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// (busy, all) ticks of all cores since boot, from the `cpu` line of /proc/stat.
fn machine_ticks() -> (u64, u64) {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else { return (0, 0) };
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let all: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (all.saturating_sub(idle), all)
}

fn clock_ticks_per_s() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}
