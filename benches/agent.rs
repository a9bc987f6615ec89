//! Agent orchestration: what an investigation costs beyond the tools and the model, and
//! whether 200 investigations run at once on this 2-core machine as fast as one.
//!
//! ```text
//! cargo bench --bench agent                      # both parts, ~1 min after the backend starts
//! cargo bench --bench agent -- overhead          # only the sequential overhead
//! cargo bench --bench agent -- concurrency       # only the 200 concurrent investigations
//! INQUEST_BENCH=quick cargo bench --bench agent
//! ```
//!
//! Words (arguments or `INQUEST_BENCH`): `overhead`, `concurrency` (none: both), `quick`
//! (a 3 s warm-up instead of 15 s, 10 sequential investigations instead of 50; the
//! concurrency part is the same).
//!
//! The investigation is the Spark one of the integration tests (tests/agent.rs), made
//! as the investigator makes it (src/agent/investigator.rs): a `SessionManager` from
//! the process's `SessionPool` (connect and list tools the first time, reuse after),
//! then `inquiry::investigate`. The alert is
//! `SparkExecutorOOM` for the run whose task died of `OutOfMemoryError`; the playbook
//! `spark-executor-oom` calls three tools in one wave (concurrently); then the planner
//! takes two model turns: the first asks for `spark__get_application`, the second
//! submits a report citing `c1` and `c4` with root cause `out_of_memory`.
//! - the MCP server is the real Spark domain server, served over mTLS in this process
//!   (`tests/support/served.rs`, as `cargo test` serves it), over the real Spark 4.3.0
//!   History Server (`tests/support/spark.rs`, a separate JVM);
//! - the model is the scripted OpenAI-compatible server (`tests/support/openai.rs`, in
//!   this process) behind the real async-openai client (`OpenAiModel`). It checks every
//!   request; any violation makes the part fail to run.
//! - the process uses mimalloc, as the `inquest` binary does.
//!
//! Part 1, overhead (the model answers at once): after a warm-up (at least 5
//! investigations and 15 s, so the History Server's JIT has settled), N investigations
//! one after another. For each, the bench wraps the model (a `ChatModel` recording when
//! each `chat()` starts and ends, per investigation through a task-local) and the tool
//! caller (a `ToolCaller` around the `SessionManager`, recording each call's start and
//! end as the `Recorder` sees it). Time in the model and time in tools are the lengths
//! of the unions of those intervals: the playbook's three calls overlap, so summing
//! their durations would count the same wall time up to three times. Overhead is the
//! inquiry's wall time (`inquiry::investigate`, measured here in microseconds) minus the
//! union of model and tool intervals: playbook choice and templating, the recorder,
//! finding rules, prompt rendering, redaction, tool selection, building requests,
//! checking the draft, the report and its events, and the scheduling gaps between.
//! "Model" includes async-openai serializing the request and parsing the answer, HTTP
//! on loopback, and the scripted server checking the request; "tools" includes the MCP
//! client, mTLS, the MCP server, and the History Server. Session setup (connect,
//! initialize, list tools: before the inquiry) is shown apart and is not overhead.
//! The row "overhead from the report alone" is what the `Outcome` gives without the
//! wrappers: `usage.millis` - sum of `CallRecord.millis` - model time; it counts
//! overlapping calls more than once, so it is a lower bound (often negative) and only
//! shown for comparison. Overhead has no target: it is printed, not judged.
//!
//! Part 2, concurrency (the model waits 500 ms before every answer): one investigation
//! alone (median of 3 on one pool: the first opens the session, the median reuses
//! it), then 200 at once on a new pool and a new HTTP client (so the burst pays for
//! connecting), each a tokio task on the multi-thread runtime (one worker per core)
//! with its own `SessionManager` from that pool, all sharing the `Planner` (and so one
//! async-openai client), as the investigator does. Targets: every one of the 200 ends with a planner report
//! whose root cause is `out_of_memory`; the wall time of the 200 is within 1.5x the
//! single investigation's; the process's peak RSS (`VmHWM` of /proc/self/status, over
//! the whole run) is under 300 MB. The peak counts the MCP server and the scripted LLM
//! server, both in this process (the LLM server keeps no request bodies here); the
//! History Server is a separate JVM, not counted (its RSS is printed for scale).
//!
//! A missed target prints FAIL and exits 0; a part that could not run exits 1. Two
//! cores are shared by the History Server, the MCP server, the LLM server and the
//! agent: compare runs made under the same conditions.

// A bench is a program whose failures are reported by panicking, like a test's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/words.rs"]
mod words;

#[path = "../tests/support/host.rs"]
#[allow(dead_code)]
mod host;
#[path = "../tests/support/openai.rs"]
#[allow(dead_code)]
mod openai;
#[path = "../tests/support/served.rs"]
#[allow(dead_code)]
mod served;
#[path = "../tests/support/spark.rs"]
#[allow(dead_code)]
mod spark;
#[path = "../tests/support/venv.rs"]
mod venv;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use async_openai::types::chat::{CreateChatCompletionRequest, CreateChatCompletionResponse};
use async_trait::async_trait;
use inquest::agent::inquiry::{self, Setup};
use inquest::agent::investigator::tool_infos;
use inquest::agent::report::Mode;
use inquest::agent::{Limits, Redactor, SessionManager, SessionPool, Target};
use inquest::mcp::Domain;
use inquest::planner::{Budget, ChatModel, LlmError, OpenAiModel, Planner, Prompts};
use inquest::playbook::{self, AlertContext, Playbook, ToolCaller};
use openai::{Script, ScriptedLlm, Turn};
use serde_json::{Map, Value, json};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONCURRENT: usize = 200;
const LATENCY: Duration = Duration::from_millis(500);
const TARGET_RATIO: f64 = 1.5;
const TARGET_RSS_MB: f64 = 300.0;
const CAUSE: &str = "out_of_memory";

struct Options {
    overhead: bool,
    concurrency: bool,
    real: bool,
    replay: bool,
    warmup: usize,
    warmup_for: Duration,
    sequential: usize,
}

fn options() -> Result<Options> {
    let words = words::words();
    let (mut overhead, mut concurrency, mut quick) = (false, false, false);
    let (mut real, mut replay) = (false, false);
    for w in &words {
        match w.as_str() {
            "overhead" => overhead = true,
            "concurrency" => concurrency = true,
            "quick" => quick = true,
            "real" => real = true,
            "replay" => replay = true,
            "bench" => {}
            other => bail!("unknown word `{other}` (overhead, concurrency, real, replay, quick)"),
        }
    }
    if !overhead && !concurrency {
        (overhead, concurrency) = (true, true);
    }
    if !real && !replay {
        (real, replay) = (true, true);
    }
    let (warmup_for, sequential) = if quick { (Duration::from_secs(3), 10) } else { (Duration::from_secs(15), 50) };
    Ok(Options { overhead, concurrency, real, replay, warmup: 5, warmup_for, sequential })
}

// ---------------------------------------------------------------------------------
// Where the time goes: the model and the tool caller, wrapped.

type Spans = Arc<Mutex<Vec<(Instant, Instant)>>>;

tokio::task_local! {
    /// The current investigation's `chat()` intervals. The planner is shared, as in the
    /// investigator, so the model wrapper finds its investigation through the task.
    static MODEL_SPANS: Spans;
}

struct TimedModel(Arc<dyn ChatModel>);

#[async_trait]
impl ChatModel for TimedModel {
    fn model(&self) -> &str {
        self.0.model()
    }

    async fn chat(&self, request: CreateChatCompletionRequest) -> Result<CreateChatCompletionResponse, LlmError> {
        let started = Instant::now();
        let answer = self.0.chat(request).await;
        let ended = Instant::now();
        let _ = MODEL_SPANS.try_with(|spans| spans.lock().unwrap().push((started, ended)));
        answer
    }
}

struct TimedCaller<'a> {
    inner: &'a SessionManager,
    spans: Mutex<Vec<(Instant, Instant)>>,
}

#[async_trait]
impl ToolCaller for TimedCaller<'_> {
    async fn call(&self, server: &str, tool: &str, args: Map<String, Value>) -> Result<Value, String> {
        let started = Instant::now();
        let result = ToolCaller::call(self.inner, server, tool, args).await;
        let ended = Instant::now();
        self.spans.lock().unwrap().push((started, ended));
        result
    }
}

/// The wall time covered by `spans`, overlaps counted once.
fn union(mut spans: Vec<(Instant, Instant)>) -> Duration {
    spans.sort_by_key(|s| s.0);
    let mut total = Duration::ZERO;
    let mut current: Option<(Instant, Instant)> = None;
    for (start, end) in spans {
        current = match current {
            Some((s, e)) if start <= e => Some((s, e.max(end))),
            Some((s, e)) => {
                total += e - s;
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    if let Some((s, e)) = current {
        total += e - s;
    }
    total
}

// ---------------------------------------------------------------------------------
// One investigation.

#[derive(Clone)]
struct Env {
    targets: Vec<Target>,
    /// The agent process's sessions, shared by its investigations as the investigator
    /// shares them.
    pool: Arc<SessionPool>,
    playbooks: Vec<Playbook>,
    alert: AlertContext,
}

/// One investigation's times and what it concluded.
struct Sample {
    /// Session setup plus the inquiry.
    total: Duration,
    /// `SessionPool::manager` and `tool_infos`: connect, initialize, list tools when
    /// the pool has no session yet, else the kept listing.
    setup: Duration,
    inquiry: Duration,
    model: Duration,
    tools: Duration,
    overhead: Duration,
    /// `usage.millis - sum of CallRecord.millis - model`, in ms.
    report_overhead_ms: f64,
    tools_sum: Duration,
    mode: Mode,
    root_cause: Option<String>,
    tool_calls: u32,
    model_turns: u32,
    /// Bytes of the two model requests (the scripted server counts 4 bytes a token)
    /// and of the tool results as JSON.
    request_bytes: u64,
    result_bytes: usize,
}

async fn investigate(env: &Env, planner: &Planner) -> Result<Sample> {
    let started = Instant::now();
    let sessions = env.pool.manager(env.targets.clone());
    let tools = tool_infos(&sessions).await;
    ensure!(!tools.is_empty(), "the Spark server listed no tools");
    let setup = started.elapsed();
    let caller = TimedCaller { inner: &sessions, spans: Mutex::new(Vec::new()) };
    let model_spans = Spans::default();
    let inquiry_started = Instant::now();
    let outcome = MODEL_SPANS
        .scope(
            model_spans.clone(),
            inquiry::investigate(Setup {
                alert: &env.alert,
                team: "data",
                playbooks: &env.playbooks,
                caller: &caller,
                tools: &tools,
                planner: Some(planner),
                question: None,
                waits: None,
                first_call: 1,
            }),
        )
        .await
        .context("no playbook and no planner")?;
    let inquiry = inquiry_started.elapsed();
    let total = started.elapsed();
    let tool_spans = caller.spans.into_inner().unwrap();
    let model_spans = model_spans.lock().unwrap().clone();
    let tools_union = union(tool_spans.clone());
    let model = union(model_spans.clone());
    let busy = union(tool_spans.into_iter().chain(model_spans).collect());
    let r = &outcome.report;
    let call_ms: u64 = outcome.calls.iter().map(|c| c.millis).sum();
    Ok(Sample {
        total,
        setup,
        inquiry,
        model,
        tools: tools_union,
        overhead: inquiry.saturating_sub(busy),
        report_overhead_ms: r.usage.millis as f64 - call_ms as f64 - model.as_secs_f64() * 1e3,
        tools_sum: Duration::from_millis(call_ms),
        mode: r.mode,
        root_cause: r.root_cause.clone(),
        tool_calls: r.usage.tool_calls,
        model_turns: r.usage.model_turns,
        request_bytes: r.usage.prompt_tokens * 4,
        result_bytes: outcome.calls.iter().filter_map(|c| c.result.as_ref().ok()).map(|v| v.to_string().len()).sum(),
    })
}

impl Sample {
    /// Whether it ended as scripted: the planner's report, with the expected cause.
    fn as_scripted(&self) -> bool {
        self.mode == Mode::Planner && self.root_cause.as_deref() == Some(CAUSE)
    }

    fn check(&self) -> Result<()> {
        ensure!(
            self.as_scripted() && self.tool_calls == 4 && self.model_turns == 2,
            "the investigation did not go as scripted: mode {:?}, root cause {:?}, {} tool calls, {} model turns",
            self.mode,
            self.root_cause,
            self.tool_calls,
            self.model_turns
        );
        Ok(())
    }
}

fn submit(app: &str) -> Turn {
    Turn::ToolCalls(vec![(
        "submit_report".into(),
        json!({
            "summary": format!("A task of {app} died with java.lang.OutOfMemoryError; its executor had too little heap."),
            "root_cause": CAUSE,
            "evidence": [
                {"claim": "the failed task's reason is OutOfMemoryError", "calls": ["c1"]},
                {"claim": "the application failed", "calls": ["c4"]}
            ],
            "confidence": "high",
            "ruled_out": [{"hypothesis": "bad input data", "why": "the task failed on memory", "calls": ["c1"]}]
        }),
    )])
}

/// The scripted model, served on the servers' runtime.
async fn llm(servers: &Handle, app: &str, latency: Duration) -> Result<ScriptedLlm> {
    let app = app.to_string();
    let script = Script::new(vec![]).latency(latency).forget_bodies().responder(move |_, turn| {
        Some(match turn {
            0 => Turn::ToolCalls(vec![("spark__get_application".into(), json!({"app_id": app}))]),
            _ => submit(&app),
        })
    });
    Ok(servers.spawn(ScriptedLlm::start(script)).await?)
}

fn new_planner(llm: &ScriptedLlm) -> Result<Planner> {
    let budget = Budget { max_steps: 6, max_tokens: 500_000, max_cost_usd: 5.0, max_time: Duration::from_secs(120) };
    let config = llm.config("sk-bench", Duration::from_secs(60), &budget);
    Ok(Planner {
        model: Arc::new(TimedModel(Arc::new(OpenAiModel::new(&config)))),
        prompts: Prompts::load(None)?,
        budget,
        prices: BTreeMap::new(),
        redactor: Redactor::default(),
        max_tools: 24,
    })
}

fn violations(llm: &ScriptedLlm) -> Result<()> {
    let v = llm.violations();
    ensure!(v.is_empty(), "the scripted LLM saw {} bad requests, first: {}", v.len(), v[0]);
    Ok(())
}

// ---------------------------------------------------------------------------------
// Reporting.

/// Nearest-rank quantile of durations, in ms.
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn row(name: &str, values: &[f64]) {
    println!(
        "{name:<62} {:>8.3} {:>8.3} {:>8.3}",
        quantile(values, 0.5),
        quantile(values, 0.95),
        quantile(values, 1.0)
    );
}

/// A field of /proc/<pid>/status in MB (`VmHWM`, `VmRSS`).
fn status_mb(pid: &str, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// CPU time (user + system) of a process so far, in seconds (USER_HZ is 100 on Linux).
fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// CPU time the whole machine spent busy so far (all cores), in seconds.
fn machine_busy_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<f64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|t| t.parse().ok()).collect();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((ticks.iter().take(8).sum::<f64>() - idle) / 100.0)
}

/// The name of the servers' runtime threads (at most 15 bytes: what /proc shows).
const SERVERS_THREAD: &str = "inquest-servers";

/// CPU seconds so far (or, after `since`, over an interval).
struct Cpu {
    process: Option<f64>,
    /// The servers' runtime threads of this process.
    servers: Option<f64>,
    history: Option<f64>,
    machine: Option<f64>,
}

impl Cpu {
    fn now(history_pid: &str) -> Cpu {
        Cpu {
            process: cpu_secs("self"),
            servers: threads_cpu_secs(SERVERS_THREAD),
            history: cpu_secs(history_pid),
            machine: machine_busy_secs(),
        }
    }

    fn since(&self, before: &Cpu) -> Cpu {
        let d = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
        Cpu {
            process: d(self.process, before.process),
            servers: d(self.servers, before.servers),
            history: d(self.history, before.history),
            machine: d(self.machine, before.machine),
        }
    }

    /// Everything in this process but the servers' threads.
    fn agent(&self) -> Option<f64> {
        Some(self.process? - self.servers?)
    }
}

/// CPU seconds of this process's threads named `name`.
fn threads_cpu_secs(name: &str) -> Option<f64> {
    let mut total = 0.0;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let Some((head, tail)) = stat.rsplit_once(')') else { continue };
        if head.split_once('(').is_some_and(|(_, comm)| comm == name) {
            let fields: Vec<&str> = tail.split_whitespace().collect();
            let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
            total += (ticks(11) + ticks(12)) / 100.0;
        }
    }
    Some(total)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

// ---------------------------------------------------------------------------------
// The parts.

async fn warm_up(servers: &Handle, env: &Env, app: &str, opts: &Options) -> Result<()> {
    let llm = llm(servers, app, Duration::ZERO).await?;
    let planner = new_planner(&llm)?;
    let started = Instant::now();
    let mut n = 0;
    while n < opts.warmup || started.elapsed() < opts.warmup_for {
        investigate(env, &planner).await.context("a warm-up investigation")?.check()?;
        n += 1;
    }
    violations(&llm)?;
    eprintln!("warmed up: {n} investigations in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

async fn overhead(servers: &Handle, env: &Env, app: &str, opts: &Options) -> Result<()> {
    let llm = llm(servers, app, Duration::ZERO).await?;
    let planner = new_planner(&llm)?;
    let mut samples = Vec::new();
    let cpu_before = Cpu::now("");
    for _ in 0..opts.sequential {
        let s = investigate(env, &planner).await?;
        s.check()?;
        samples.push(s);
    }
    let cpu = Cpu::now("").since(&cpu_before);
    violations(&llm)?;
    let col = |f: &dyn Fn(&Sample) -> f64| samples.iter().map(f).collect::<Vec<f64>>();
    println!();
    println!(
        "== Orchestration overhead: {} investigations one after another (playbook: 3 calls in one wave; \
         planner: 2 model turns, 1 call), scripted LLM answering at once ==",
        samples.len()
    );
    println!("no target: printed, not judged");
    println!("{:<62} {:>8} {:>8} {:>8}", "", "p50 ms", "p95 ms", "max ms");
    row("investigation (session setup + inquiry)", &col(&|s| ms(s.total)));
    row("  session setup: connect, initialize, list tools", &col(&|s| ms(s.setup)));
    row("  inquiry (inquiry::investigate)", &col(&|s| ms(s.inquiry)));
    row("    model: union of chat() intervals (2 turns)", &col(&|s| ms(s.model)));
    row("    tools: union of call intervals (4 calls, 3 overlapping)", &col(&|s| ms(s.tools)));
    row("    tools: sum of CallRecord.millis (overlaps counted again)", &col(&|s| ms(s.tools_sum)));
    row("    OVERHEAD: inquiry - union(model, tools)", &col(&|s| ms(s.overhead)));
    row("    from the report alone: usage.millis - sum(calls) - model", &col(&|s| s.report_overhead_ms));
    if let Some(s) = samples.first() {
        println!(
            "per investigation: tool results {:.1} KB (JSON), model requests {:.1} KB (both turns)",
            s.result_bytes as f64 / 1024.0,
            s.request_bytes as f64 / 1024.0
        );
    }
    let per = |c: Option<f64>| c.map_or("?".to_string(), |c| format!("{:.1} ms", c * 1e3 / samples.len() as f64));
    println!(
        "CPU per investigation: agent {} (investigation, MCP and model clients, TLS), \
         servers {} (MCP server, scripted LLM)",
        per(cpu.agent()),
        per(cpu.servers)
    );
    Ok(())
}

/// What one backend's burst gave.
struct Burst {
    singles: Vec<f64>,
    wall: f64,
    done: Vec<Sample>,
    failures: Vec<String>,
    /// VmHWM during the burst, and whether it could be reset first (else: whole run).
    peak: f64,
    peak_reset: bool,
    rss_before: f64,
    cpu: Cpu,
    /// Tasks still alive on the agent's runtime once the burst is over.
    tasks_left: usize,
}

impl Burst {
    fn single(&self) -> f64 {
        quantile(&self.singles, 0.5)
    }

    fn ratio(&self) -> f64 {
        self.wall / self.single()
    }

    fn complete(&self) -> bool {
        self.failures.is_empty() && self.done.len() == CONCURRENT
    }
}

/// `CONCURRENT` investigations at once, each its own task and `SessionManager` (from
/// the one pool).
async fn burst_once(env: &Arc<Env>, planner: &Arc<Planner>) -> (f64, Vec<Sample>, Vec<String>) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENT)
        .map(|_| {
            let (env, planner) = (env.clone(), planner.clone());
            tokio::spawn(async move { investigate(&env, &planner).await })
        })
        .collect();
    let (mut done, mut failures) = (Vec::new(), Vec::new());
    for t in tasks {
        match t.await {
            Ok(Ok(s)) if s.as_scripted() => done.push(s),
            Ok(Ok(s)) => failures.push(format!("mode {:?}, root cause {:?}", s.mode, s.root_cause)),
            Ok(Err(e)) => failures.push(format!("{e:#}")),
            Err(e) => failures.push(format!("the task failed: {e}")),
        }
    }
    (ms(started.elapsed()), done, failures)
}

/// A single investigation three times, then the burst, each with cold connection
/// pools (a new agent HTTP client and planner).
async fn burst(servers: &Handle, backend: &Backend, base: &Env, app: &str, history_pid: &str) -> Result<Burst> {
    let llm = llm(servers, app, LATENCY).await?;
    let fresh = || -> Result<(Arc<Env>, Arc<Planner>)> {
        let env = Env {
            targets: vec![backend.target()?],
            pool: Arc::new(SessionPool::new(Limits::default())),
            ..base.clone()
        };
        Ok((Arc::new(env), Arc::new(new_planner(&llm)?)))
    };
    let (env, planner) = fresh()?;
    let mut singles = Vec::new();
    for _ in 0..3 {
        let s = investigate(&env, &planner).await.context("a single investigation")?;
        s.check()?;
        singles.push(ms(s.total));
    }
    let (env, planner) = fresh()?;
    let rss_before = status_mb("self", "VmRSS").unwrap_or(f64::NAN);
    // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0+).
    let peak_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    eprintln!("{}: {CONCURRENT} investigations at once ...", backend.label);
    let cpu_before = Cpu::now(history_pid);
    let (wall, done, failures) = burst_once(&env, &planner).await;
    let cpu = Cpu::now(history_pid).since(&cpu_before);
    let peak = status_mb("self", "VmHWM").context("no VmHWM in /proc/self/status")?;
    drop((env, planner));
    let tasks_left = Handle::current().metrics().num_alive_tasks();
    violations(&llm)?;
    Ok(Burst { singles, wall, done, failures, peak, peak_reset, rss_before, cpu, tasks_left })
}

async fn concurrency(servers: &Handle, backends: &[Backend], base: &Env, app: &str, history_pid: u32) -> Result<()> {
    let history_pid = history_pid.to_string();
    let mut bursts = Vec::new();
    for b in backends {
        bursts.push(burst(servers, b, base, app, &history_pid).await?);
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!();
    println!(
        "== Concurrency: {CONCURRENT} investigations at once, scripted LLM latency {} ms, \
         multi-thread runtime with {cores} workers, new connections ==",
        LATENCY.as_millis()
    );
    println!(
        "targets: all complete with root cause {CAUSE}; wall <= {TARGET_RATIO}x a single investigation; \
         peak RSS < {TARGET_RSS_MB} MB"
    );
    let line = |name: &str, cells: Vec<String>| {
        print!("{name:<50}");
        for c in cells {
            print!(" {c:>30}");
        }
        println!();
    };
    let each = |f: &dyn Fn(&Burst) -> String| bursts.iter().map(f).collect::<Vec<String>>();
    line("", backends.iter().map(|b| b.label.to_string()).collect());
    line("single investigation, median of 3 (ms)", each(&|b| format!("{:.1}", b.single())));
    line("  the 3 singles (ms)", each(&|b| b.singles.iter().map(|s| format!("{s:.0}")).collect::<Vec<_>>().join(" ")));
    line(&format!("{CONCURRENT} at once: wall (ms)"), each(&|b| format!("{:.1}", b.wall)));
    line(
        &format!("  completed, root cause {CAUSE}"),
        each(&|b| format!("{}/{CONCURRENT} {}", b.done.len(), verdict(b.complete()))),
    );
    line(
        &format!("  wall / single (<= {TARGET_RATIO})"),
        each(&|b| format!("{:.3} {}", b.ratio(), verdict(b.ratio() <= TARGET_RATIO))),
    );
    line(
        &format!("  peak RSS, VmHWM (< {TARGET_RSS_MB} MB)"),
        each(&|b| {
            let when = if b.peak_reset { "" } else { " (whole run)" };
            format!("{:.1} MB{when} {}", b.peak, verdict(b.peak < TARGET_RSS_MB))
        }),
    );
    line("  RSS before the burst (MB)", each(&|b| format!("{:.1}", b.rss_before)));
    let secs = |c: Option<f64>| c.map_or("?".to_string(), |c| format!("{c:.2}"));
    line(
        &format!("  CPU s during the burst, of wall x {cores} cores"),
        each(&|b| format!("{:.2}", b.wall / 1e3 * cores as f64)),
    );
    line("    agent: investigations, MCP and model clients, TLS", each(&|b| secs(b.cpu.agent())));
    line("    servers here: MCP server, scripted LLM, replay", each(&|b| secs(b.cpu.servers)));
    line("    the History Server JVM", each(&|b| secs(b.cpu.history)));
    line("    the whole machine (the rest: other work)", each(&|b| secs(b.cpu.machine)));
    line(
        "  agent CPU per investigation (ms)",
        each(&|b| b.cpu.agent().map_or("?".to_string(), |c| format!("{:.1}", c * 1e3 / CONCURRENT as f64))),
    );
    line("  tasks left on the agent runtime afterwards", each(&|b| b.tasks_left.to_string()));
    let q = |f: fn(&Sample) -> f64| {
        move |b: &Burst| {
            let v: Vec<f64> = b.done.iter().map(f).collect();
            format!("{:.0} / {:.0} / {:.0}", quantile(&v, 0.5), quantile(&v, 0.95), quantile(&v, 1.0))
        }
    };
    line(&format!("  in the {CONCURRENT}, p50 / p95 / max (ms): investigation"), each(&q(|s| ms(s.total))));
    line("    session setup", each(&q(|s| ms(s.setup))));
    line("    model (2 turns of 500 ms)", each(&q(|s| ms(s.model))));
    line("    tools (union)", each(&q(|s| ms(s.tools))));
    line("    overhead: inquiry - union(model, tools)", each(&q(|s| ms(s.overhead))));
    for (b, burst) in backends.iter().zip(&bursts) {
        for f in burst.failures.iter().take(5) {
            println!("  {} failed: {f}", b.label);
        }
    }
    if let Some(mb) = status_mb(&history_pid, "VmRSS") {
        println!("the History Server JVM (another process, not counted above) has {mb:.1} MB resident");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// The backends: the Spark MCP server over the History Server, or over a replay of it.

/// The Spark MCP server served in this process, and how to reach it afresh.
struct Backend {
    label: &'static str,
    url: String,
    /// The dev identities' directory, for new agent clients.
    dir: std::path::PathBuf,
    /// Kept for the same server's first target.
    http: reqwest::Client,
}

impl Backend {
    /// Serves the Spark domain over `history_url` on the servers' runtime.
    async fn start(
        servers: &Handle,
        label: &'static str,
        history_url: &str,
        dir: &std::path::Path,
        stop: &CancellationToken,
    ) -> Result<Backend> {
        let config =
            inquest::domains::spark::SparkConfig { history_url: history_url.to_string(), ..Default::default() };
        let domain: Arc<dyn Domain> = Arc::new(inquest::domains::spark::SparkDomain::new(&config)?);
        let (owned_dir, stop) = (dir.to_path_buf(), stop.clone());
        let served = servers.spawn(async move { served::serve(domain, &owned_dir, &stop).await }).await??;
        Ok(Backend { label, url: served.url, dir: dir.to_path_buf(), http: served.agent_http })
    }

    /// The server as a target, with the shared client.
    fn shared_target(&self) -> Target {
        Target { name: "spark".into(), url: self.url.clone(), http: self.http.clone(), trusted: true }
    }

    /// The server as a target, with a new agent client (an empty connection pool).
    fn target(&self) -> Result<Target> {
        let paths = inquest::identity::devca::ensure_dev_identities(&self.dir, served::TD)?;
        let svid: Arc<dyn inquest::identity::svid::SvidSource> = Arc::new(paths.file_source(served::AGENT)?);
        let server_id = format!("spiffe://{}/server/spark", served::TD);
        let http = inquest::identity::mtls::http_client(svid, vec![server_id])?;
        Ok(Target { name: "spark".into(), url: self.url.clone(), http, trusted: true })
    }
}

/// A History Server stand-in: each path and query is fetched once from the real one,
/// then answered from memory (status, body and content type as the real one gave).
struct Replay {
    upstream: String,
    http: reqwest::Client,
    cache: Mutex<std::collections::HashMap<String, (u16, String, bytes::Bytes)>>,
}

async fn replay(
    axum::extract::State(r): axum::extract::State<Arc<Replay>>,
    uri: axum::http::Uri,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let key = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let cached = r.cache.lock().unwrap().get(&key).cloned();
    let (status, content_type, body) = match cached {
        Some(hit) => hit,
        None => {
            let fetched = async {
                let response = r.http.get(format!("{}{key}", r.upstream)).send().await?;
                let status = response.status().as_u16();
                let content_type = response
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/json")
                    .to_string();
                Ok::<_, reqwest::Error>((status, content_type, response.bytes().await?))
            };
            match fetched.await {
                Ok(answer) => {
                    r.cache.lock().unwrap().insert(key, answer.clone());
                    answer
                }
                Err(e) => return (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
            }
        }
    };
    let status = axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
    (status, [(axum::http::header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn start_replay(upstream: String, stop: CancellationToken) -> Result<String> {
    let state = Arc::new(Replay {
        upstream: upstream.trim_end_matches('/').to_string(),
        http: reqwest::Client::new(),
        cache: Mutex::default(),
    });
    let app = axum::Router::new().fallback(replay).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let token = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(token.cancelled_owned()).await;
    });
    Ok(url)
}

async fn run(opts: Options, servers: Handle) -> Result<()> {
    eprintln!("starting the Spark History Server and the Spark MCP servers ...");
    let history = spark::history().await;
    let app = history.runs.oom.clone();
    let dir = tempfile::tempdir()?;
    let stop = CancellationToken::new();
    let real = Backend::start(&servers, "real History Server", &history.url, dir.path(), &stop).await?;
    let replayed_url = servers.spawn(start_replay(history.url.clone(), stop.clone())).await??;
    let replayed = Backend::start(&servers, "replayed History Server", &replayed_url, dir.path(), &stop).await?;
    let playbooks = playbook::load(&[std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks")])
        .map_err(|problems| anyhow::anyhow!("the shipped playbooks do not load: {problems:?}"))?;
    let alert = AlertContext {
        labels: [("alertname", "SparkExecutorOOM"), ("app_id", app.as_str())]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: [("description".to_string(), "executors of the nightly job died".to_string())]
            .into_iter()
            .collect(),
    };
    let env = Env {
        targets: vec![real.shared_target()],
        pool: Arc::new(SessionPool::new(Limits::default())),
        playbooks,
        alert,
    };
    warm_up(&servers, &env, &app, &opts).await?;
    if opts.overhead {
        overhead(&servers, &env, &app, &opts).await?;
    }
    if opts.concurrency {
        let backends: Vec<Backend> = [(opts.real, real), (opts.replay, replayed)]
            .into_iter()
            .filter_map(|(wanted, b)| wanted.then_some(b))
            .collect();
        concurrency(&servers, &backends, &env, &app, history.pid()).await?;
    }
    stop.cancel();
    Ok(())
}

fn main() -> ExitCode {
    inquest::identity::install_crypto_provider();
    let opts = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("agent bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    // The agent and the servers it talks to run on runtimes of their own (both one
    // worker per core), so each one's CPU time can be told apart.
    let runtime = |name: &str| tokio::runtime::Builder::new_multi_thread().thread_name(name).enable_all().build();
    let (agent, servers) = match (runtime("inquest-agent"), runtime(SERVERS_THREAD)) {
        (Ok(a), Ok(s)) => (a, s),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("agent bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    // On a worker of the agent's runtime, not on this thread, like everything else.
    let result = agent.block_on(async { agent.spawn(run(opts, servers.handle().clone())).await });
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("agent bench: {e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("agent bench: {e}");
            ExitCode::FAILURE
        }
    }
}
