//! Many replicas, as an operator runs them: the registry, the three domain servers and
//! three agents, each its own `inquest` process, on one PostgreSQL database, against
//! the real backends (Airflow, the Spark History Server, the Presto test coordinator),
//! with pull requests drafted on the GitHub test server and threads posted to the Slack
//! test server.
//!
//! 300 alerts in 60 episodes arrive through all three agents; one agent is killed with
//! `kill -9` while it holds leases. Then: every investigation completed exactly once,
//! after calling all three domain servers; one pull request per investigation, no
//! comment twice; no chat post twice; and the dead agent's investigations were taken
//! over by the survivors.
//!
//! `scripts/fleet` runs this test alone, with its processes' logs kept.

// Helpers outside `#[test]` functions are test code too: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::support::github::GithubServer;
use crate::support::host::free_port;
use crate::support::oidc::{OidcProvider, RESOURCE};
use crate::support::pg::TestDb;
use crate::support::presto::Coordinator;
use crate::support::process::{
    Accepted, Api, Inquest, InquestBuilder, Investigation, Scratch, accepted_by_episode, alertmanager_payload, wait_for,
};
use crate::support::server::list_server;
use crate::support::slack::{self, SlackServer};
use crate::support::{airflow, spark};

const EPISODES: usize = 60;
const PER_EPISODE: usize = 5;
const AGENTS: [&str; 3] = ["agent-a", "agent-b", "agent-c"];
/// The agent killed in the middle.
const VICTIM: &str = "agent-b";
const TTL: Duration = Duration::from_secs(3);
const SLOTS: usize = 4;
/// Added to each investigation's work, so that the killed agent holds leases.
const WORK: &str = "1500ms";
const CHANNEL: &str = "C0FLEET";
const TEAM: &str = "data";
const CONF: &str = "conf/fleet.conf";

/// Every alert of the test goes to this playbook: one read-only call on each domain
/// server, a finding over Presto's answer, and a fix to propose.
const PLAYBOOK: &str = r#"
name: fleet-check
description: Looks at Airflow, Presto and Spark for a replica-test alert.
manual_minutes: 10
match: {labels: ['alertname="InquestTestAlert"']}
steps:
  - {id: dags, tool: airflow__list_dags, args: {}}
  - {id: catalogs, tool: presto__list_catalogs, args: {}}
  - {id: apps, tool: spark__list_applications, args: {}}
findings:
  - {id: catalog, step: catalogs, regex: '(?P<catalog>hive)', category: checked, summary: "Presto lists the {{ match.catalog }} catalog"}
remediations:
  - id: retries
    when: [catalog]
    title: "Raise the retries for {{ labels.instance }}"
    files:
      - path: "conf/fleet.conf"
        find: 'retries = \d+'
        replace: "retries = 3"
"#;

/// The whole fleet, started in dependency order.
struct Fleet {
    registry: Inquest,
    /// Kept alive for the test's length.
    _servers: Vec<Inquest>,
    agents: Vec<Inquest>,
}

async fn start_fleet(
    db: &TestDb,
    dir: &Path,
    oidc: &OidcProvider,
    github: &GithubServer,
    slack_server: &SlackServer,
) -> Fleet {
    // One development CA for every process, made before any of them starts.
    let data = dir.join("data");
    let mut dev_ca = std::process::Command::new(env!("CARGO_BIN_EXE_inquest"));
    dev_ca.arg("dev-ca").arg("--data-dir").arg(&data);
    // The child reads INQUEST_* as configuration (CI's INQUEST_CACHE is not a key).
    for (key, _) in std::env::vars_os().filter(|(k, _)| k.to_string_lossy().starts_with("INQUEST_")) {
        dev_ca.env_remove(key);
    }
    let out = dev_ca.output().unwrap();
    assert!(out.status.success(), "inquest dev-ca: {}", String::from_utf8_lossy(&out.stderr));

    let mesh = format!("127.0.0.1:{}", free_port());
    let registry_url = format!("https://{mesh}");
    let registry = InquestBuilder::new("registry", &data)
        .role("registry")
        .log_dir(dir)
        .store_url(&db.url)
        .env("INQUEST_MESH_LISTEN", &mesh)
        .env("INQUEST_IDENTITY__OIDC__ISSUER", &oidc.issuer)
        .env("INQUEST_IDENTITY__OIDC__CLIENT_ID", crate::support::oidc::CLIENT_ID)
        .env("INQUEST_IDENTITY__OIDC__CLIENT_SECRET", crate::support::oidc::CLIENT_SECRET)
        .env("INQUEST_IDENTITY__OIDC__AUDIENCE", RESOURCE)
        .env("INQUEST_REGISTRY__ADMINS", "group:inquest-admins")
        .env("INQUEST_REGISTRY__PROBE_INTERVAL", "1s")
        .start()
        .await;

    // An administrator lists the three servers and names their SPIFFE IDs; each then
    // registers itself when it starts.
    let (airflow, history, presto) = tokio::join!(airflow::shared(), spark::history(), Coordinator::start());
    let ports: BTreeMap<&str, u16> = [("airflow", free_port()), ("presto", free_port()), ("spark", free_port())].into();
    let token = oidc.tokens_for("alice", RESOURCE).await["access_token"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();
    let base = registry.api().base.clone();
    for (id, port) in &ports {
        let name = format!("dev.inquest/{id}");
        let doc = json!({"name": name, "description": format!("{id}, listed by an admin"), "version": "0.0.1",
                         "remotes": [{"type": "streamable-http", "url": format!("https://127.0.0.1:{port}/mcp")}]});
        let policy = json!({"owner": {"team": TEAM}, "service_identity": format!("spiffe://inquest.local/server/{id}"),
            "access": {"allowed": ["spiffe://inquest.local/agent", "group:data"], "unlisted_tools": "allow"}});
        list_server(&http, &base, |r| r.bearer_auth(&token), doc, policy).await;
    }

    let server = |id: &str| {
        let port = ports[id];
        let key = |k: &str| format!("INQUEST_SERVERS__{}__{k}", id.to_ascii_uppercase());
        InquestBuilder::new(&format!("server-{id}"), &data)
            .role(&format!("server {id}"))
            .log_dir(dir)
            .ready_url(&format!("https://127.0.0.1:{port}/readyz"))
            .env("INQUEST_REGISTRY__URL", &registry_url)
            .env(&key("LISTEN"), format!("127.0.0.1:{port}"))
    };
    let servers = [
        server("airflow")
            .env("INQUEST_SERVERS__AIRFLOW__URL", &airflow.url)
            .env("INQUEST_SERVERS__AIRFLOW__USERNAME", airflow::USERNAME)
            .env("INQUEST_SERVERS__AIRFLOW__PASSWORD", airflow::PASSWORD),
        server("presto").env("INQUEST_SERVERS__PRESTO__URL", &presto.url),
        server("spark").env("INQUEST_SERVERS__SPARK__HISTORY_URL", &history.url),
    ];
    let (a, p, s) = tokio::join!(servers[0].start(), servers[1].start(), servers[2].start());
    // The coordinator lives as long as this test; it is not shared.
    std::mem::forget(presto);

    // Each server registered itself (its own version, its tools) and passes the
    // registry's health probe.
    wait_for("the servers to register themselves and be healthy", Duration::from_secs(60), || {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        async move {
            let mut seen = Vec::new();
            for id in ["airflow", "presto", "spark"] {
                let r = http
                    .get(format!("{base}/v0.1/servers/dev.inquest%2F{id}/versions/latest"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let body: Value = r.json().await.map_err(|e| e.to_string())?;
                let version = body["server"]["version"].as_str().unwrap_or_default().to_string();
                let health = body["_meta"]["dev.inquest/registry"]["health"]["status"].as_str().unwrap_or_default();
                seen.push(format!("{id}: version {version}, health {health}"));
                if version != env!("CARGO_PKG_VERSION") || health != "healthy" {
                    return Err(format!("{seen:?}\n{body}"));
                }
            }
            Ok(())
        }
    })
    .await;

    // The agents.
    let playbooks = dir.join("playbooks");
    std::fs::create_dir_all(&playbooks).unwrap();
    std::fs::write(playbooks.join("fleet.yaml"), PLAYBOOK).unwrap();
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[registry]
url = "{registry_url}"
public_url = "{base}"
[agent]
playbooks = "{playbooks}"
[github]
repository = "acme/etl"
token = "dev-token"
api_url = "{github}"
[chat.slack]
api_url = "{slack_api}"
bot_token = "{bot_token}"
signing_secret = "{signing}"
channels = {{ {TEAM} = "{CHANNEL}" }}
# Slack's own pace (a message a second per channel) would take 15 minutes for these
# 60 threads; the test server allows more.
pace = "20ms"
"#,
            playbooks = playbooks.display(),
            github = github.url,
            slack_api = slack_server.api_url,
            bot_token = slack::BOT_TOKEN,
            signing = slack::SIGNING_SECRET,
        ),
    )
    .unwrap();
    let agent = |name: &str| {
        InquestBuilder::new(name, &data)
            .role("agent")
            .log_dir(dir)
            .store_url(&db.url)
            .env("INQUEST_CONFIG", config.display().to_string())
            .engine("simulated_work", WORK)
            .engine("lease_ttl", format!("{}s", TTL.as_secs()))
            .engine("poll_interval", "100ms")
            .engine("slots", SLOTS.to_string())
    };
    let builders: Vec<InquestBuilder> = AGENTS.iter().map(|n| agent(n)).collect();
    let (x, y, z) = tokio::join!(builders[0].start(), builders[1].start(), builders[2].start());
    Fleet { registry, _servers: vec![a, p, s], agents: vec![x, y, z] }
}

/// Sends the 300 alerts: per episode, its first two alerts to two agents at once, the
/// other three spread over all three; every request of every episode in flight together.
async fn send_alerts(apis: &[Api]) -> BTreeMap<usize, Vec<Accepted>> {
    let mut tasks = JoinSet::new();
    for e in 0..EPISODES {
        let apis: Vec<Api> = apis.to_vec();
        tasks.spawn(async move {
            let gk = format!("{{}}:{{alertname=\"Fleet{e}\"}}");
            let fp = |i: usize| format!("fleet-{e:02}-{i}");
            let d0 = alertmanager_payload(&gk, TEAM, &[fp(0), fp(1)]);
            let d1 = alertmanager_payload(&gk, TEAM, &[fp(2)]);
            let d2 = alertmanager_payload(&gk, TEAM, &[fp(3)]);
            let d3 = alertmanager_payload(&gk, TEAM, &[fp(4)]);
            let at = |i: usize| &apis[(e + i) % apis.len()];
            let results = tokio::join!(
                at(0).try_post_alertmanager(&d0),
                at(1).try_post_alertmanager(&d0),
                at(1).try_post_alertmanager(&d1),
                at(2).try_post_alertmanager(&d2),
                at(0).try_post_alertmanager(&d3),
            );
            (e, [results.0, results.1, results.2, results.3, results.4])
        });
    }
    accepted_by_episode(tasks).await
}

/// Who claimed each investigation, in order, from its event log.
fn claimants(inv: &Investigation) -> Vec<String> {
    inv.events
        .iter()
        .filter(|e| matches!(e.kind.as_str(), "investigation.started" | "investigation.resumed"))
        .map(|e| e.data["worker"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_the_registry_and_three_servers_survive_a_kill_9_without_duplicates() {
    let db = TestDb::create().await;
    let dir = Scratch::new();
    let oidc = OidcProvider::start().await;
    let github = GithubServer::start("acme", &[(CONF, "retries = 1\n")]).await;
    let slack_server = SlackServer::start(&[CHANNEL]).await;
    let started = Instant::now();
    let mut fleet = start_fleet(&db, dir.path(), &oidc, &github, &slack_server).await;
    eprintln!("fleet up in {:?}", started.elapsed());

    let apis: Vec<Api> = fleet.agents.iter().map(|a| a.api()).collect();
    let answers = send_alerts(&apis).await;
    let alerts: usize = answers.values().flatten().map(|a| a.alert_ids.len()).sum();
    let episodes: BTreeSet<&String> = answers.values().flatten().flat_map(|a| a.episode_ids.iter()).collect();
    assert_eq!(episodes.len(), EPISODES, "one episode per group key, whichever agent took which alert");
    assert!(alerts >= EPISODES * PER_EPISODE, "{alerts} alerts accepted");

    // In the middle: once some investigations are done and the victim holds some.
    let victim = AGENTS.iter().position(|n| *n == VICTIM).unwrap();
    let holds = wait_for("the victim to hold leases", Duration::from_secs(120), || {
        let api = apis[0].clone();
        async move {
            let all = api.try_investigations(None).await?;
            let done = all.iter().filter(|i| i.state == "completed").count();
            let held: Vec<String> = all
                .iter()
                .filter(|i| i.state == "running" && i.worker.as_deref() == Some(VICTIM))
                .map(|i| i.id.clone())
                .collect();
            if done >= 6 && !held.is_empty() { Ok(held) } else { Err(format!("{done} done, victim holds {held:?}")) }
        }
    })
    .await;
    fleet.agents[victim].kill9();
    let killed_at = Instant::now();
    // Events the victim wrote are stamped before this.
    let killed_wall = chrono::Utc::now();
    eprintln!("killed {VICTIM} holding {holds:?}");

    // Every investigation ends, on the survivors.
    let survivor = apis[(victim + 1) % apis.len()].clone();
    let all = wait_for("all 60 investigations to complete", Duration::from_secs(600), || {
        let api = survivor.clone();
        async move {
            let all = api.try_investigations(None).await?;
            let open: Vec<String> =
                all.iter().filter(|i| i.state != "completed").map(|i| format!("{} {}", i.id, i.state)).collect();
            if all.len() == EPISODES && open.is_empty() {
                Ok(all)
            } else {
                Err(format!("{} investigations; not completed: {open:?}", all.len()))
            }
        }
    })
    .await;
    eprintln!("all completed {:?} after the kill", killed_at.elapsed());

    let mut ids = BTreeSet::new();
    let mut taken_over = 0;
    for summary in &all {
        let inv = survivor.investigation(&summary.id).await;
        ids.insert(inv.id.clone());
        let log = inv.log();
        assert_eq!(inv.events_of("investigation.completed").len(), 1, "completed once:\n{log}");
        let called: BTreeSet<String> = inv
            .events_of("tool.called")
            .iter()
            .filter(|e| e.data["outcome"] == "ok")
            .filter_map(|e| e.data["tool"].as_str().map(str::to_string))
            .collect();
        for tool in ["airflow__list_dags", "presto__list_catalogs", "spark__list_applications"] {
            assert!(called.contains(tool), "{tool} answered:\n{log}");
        }
        let claims = claimants(&inv);
        let by_victim = claims.iter().any(|c| c == VICTIM);
        if holds.contains(&inv.id) {
            assert!(by_victim, "{log}");
        }
        if by_victim {
            if claims.last().unwrap() == VICTIM {
                // The victim finished it, in the moment between the listing that saw
                // it running and the kill: its completion is stamped before the kill.
                let done = inv.events_of("investigation.completed")[0].at;
                assert!(done <= killed_wall, "{} was finished by the killed {VICTIM}:\n{log}", inv.id);
            } else {
                taken_over += 1;
            }
        }
        assert!(claims.iter().all(|c| AGENTS.contains(&c.as_str())), "{claims:?}");
    }
    assert_eq!(ids.len(), EPISODES);
    assert!(taken_over > 0, "no investigation the killed {VICTIM} held was taken over");

    // One pull request per investigation, each comment once.
    let drafted = wait_for("a pull request per investigation", Duration::from_secs(120), || async {
        let pulls = github.pulls();
        if pulls.len() >= EPISODES { Ok(pulls) } else { Err(format!("{} pull requests", pulls.len())) }
    })
    .await;
    let mut per_investigation: BTreeMap<String, usize> = BTreeMap::new();
    for pull in &drafted {
        let id = ids.iter().find(|id| pull.body.contains(id.as_str()) || pull.head.contains(id.as_str()));
        let id =
            id.unwrap_or_else(|| panic!("PR #{} names no investigation: {} {}", pull.number, pull.head, pull.body));
        *per_investigation.entry(id.clone()).or_default() += 1;
        let unique: BTreeSet<&String> = pull.comments.iter().collect();
        assert_eq!(unique.len(), pull.comments.len(), "PR #{} has a comment twice: {:?}", pull.number, pull.comments);
    }
    let twice: Vec<_> = per_investigation.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "investigations with more than one PR: {twice:?}");
    assert_eq!(per_investigation.len(), EPISODES, "every investigation drafted its PR");
    github.assert_conforms();

    // No chat post twice: every post's key (investigation/seq) appears once.
    let posts = wait_for("every investigation's thread", Duration::from_secs(120), || async {
        let roots = slack_server.roots(CHANNEL);
        if roots.len() >= EPISODES { Ok(roots) } else { Err(format!("{} threads", roots.len())) }
    })
    .await;
    let mut keys: BTreeMap<String, usize> = BTreeMap::new();
    for root in &posts {
        let thread = std::iter::once(root.clone()).chain(slack_server.replies(CHANNEL, &root.ts));
        for key in thread.flat_map(|m| m.keys()) {
            *keys.entry(key).or_default() += 1;
        }
    }
    let repeated: Vec<_> = keys.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "chat posts made twice: {repeated:?}");
    assert_eq!(posts.len(), EPISODES, "one thread per investigation");
    slack_server.assert_conforms();

    for agent in &mut fleet.agents {
        if agent.is_running() {
            agent.terminate(Duration::from_secs(30)).await;
        }
    }
    fleet.registry.terminate(Duration::from_secs(30)).await;
}
