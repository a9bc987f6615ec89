//! The registry's pages in a real browser (headless Chromium through chromedriver):
//! a person logs in through a real OpenID provider, sees only the servers they may
//! use, approves a pending request, and finds the approval in the audit log.

use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use inquest::app::{Listeners, Role, run};
use inquest::identity::{devca, mtls};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::oidc::{CLIENT_ID, CLIENT_SECRET, OidcProvider, RESOURCE};
use crate::support::server::config_with;

/// chromedriver on a free port, killed on drop.
pub(crate) struct Driver {
    child: tokio::process::Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Driver {
    pub(crate) async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver must be installed (apt-get install chromium chromium-driver; .ci/run does)");
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if reqwest::get(format!("{url}/status")).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Driver { child, url, _profile: tempfile::tempdir().unwrap() }
    }

    pub(crate) async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                         "--disable-dev-shm-usage", "--no-first-run", "--disable-sync", "--disable-component-update",
                         format!("--user-data-dir={}", self._profile.path().display())],
            }),
        );
        ClientBuilder::rustls().expect("rustls").capabilities(caps).connect(&self.url).await.expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_see_permitted_servers_approve_and_audit() {
    inquest::identity::install_crypto_provider();
    // The registry's address must be known before the provider, which checks redirects.
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", public.local_addr().unwrap());
    let provider = OidcProvider::start_with_redirects(&[format!("{base}/auth/callback")]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(
        dir.path(),
        &[
            ("INQUEST_REGISTRY__PUBLIC_URL", &base),
            ("INQUEST_IDENTITY__OIDC__ISSUER", &provider.issuer),
            ("INQUEST_IDENTITY__OIDC__CLIENT_ID", CLIENT_ID),
            ("INQUEST_IDENTITY__OIDC__CLIENT_SECRET", CLIENT_SECRET),
            ("INQUEST_IDENTITY__OIDC__AUDIENCE", RESOURCE),
            ("INQUEST_IDENTITY__DEV_LOGIN", "false"),
            ("INQUEST_REGISTRY__ADMINS", "group:inquest-admins"),
        ],
    );
    let mesh = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mesh_url = format!("https://{}", mesh.local_addr().unwrap());
    let stop = CancellationToken::new();
    let server = tokio::spawn(run(config, Role::All, Listeners { public, mesh: Some(mesh) }, stop.clone()));
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Alice (an administrator) publishes two servers with the API, using a real
    // access token: one bob's team may use, one it may not.
    let token = provider.tokens_for("alice", RESOURCE).await["access_token"].as_str().unwrap().to_string();
    let servers = [
        ("com.example/airflow", "Airflow DAGs and tasks", json!(["group:data-eng", "spiffe://inquest.local/agent"])),
        ("com.example/payroll", "Payroll exports", json!(["group:finance"])),
    ];
    for (name, description, allowed) in servers {
        let doc = json!({"name": name, "description": description, "version": "1.0.0",
                         "remotes": [{"type": "streamable-http", "url": "https://127.0.0.1:1/mcp"}]});
        let policy = json!({"owner": {"team": "data-platform", "support_channel": "#data-platform"}, "access": {
            "allowed": allowed,
            "tools": {"clear_task_instances": {"approval": {"approvers": ["group:data-eng"], "required": 1}}},
        }});
        crate::support::server::list_server(&http, &base, |r| r.bearer_auth(&token), doc, policy).await;
    }

    // The agent, over the mTLS mesh, asks to clear a task: a pending approval for bob's team.
    let identities = devca::ensure_dev_identities(dir.path(), "inquest.local").unwrap();
    let agent = std::sync::Arc::new(identities.file_source("spiffe://inquest.local/agent").unwrap());
    let mesh_client = mtls::http_client(agent, vec!["spiffe://inquest.local/registry".into()]).unwrap();
    let action = json!({"server": "com.example/airflow", "tool": "clear_task_instances",
                        "arguments": {"dag_id": "daily_sales_rollup", "task_ids": ["load_sales"]}});
    let created = mesh_client
        .post(format!("{mesh_url}/v0.1/x/approvals"))
        .json(&json!({"kind": "tool_call", "action": action,
                      "resource": {"server": "com.example/airflow", "tool": "clear_task_instances"}}))
        .send()
        .await
        .unwrap();
    let status = created.status();
    let created: Value = created.json().await.unwrap();
    assert!(status.is_success(), "{created}");
    let approval_id = created["id"].as_str().unwrap().to_string();

    // Bob logs in with the browser through the provider's own login and consent pages.
    let driver = Driver::start().await;
    let c = driver.browser().await;
    c.goto(&format!("{base}/registry")).await.unwrap();
    c.find(Locator::Css("input[name=username]")).await.unwrap().send_keys("bob").await.unwrap();
    c.find(Locator::Css("input[name=password]")).await.unwrap().send_keys("bob-password").await.unwrap();
    c.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
    // The provider asks for consent once; its page has a single "Allow" form.
    c.wait().for_element(Locator::Css("form[action$='/confirm'] button")).await.unwrap().click().await.unwrap();
    if c.wait().at_most(Duration::from_secs(15)).for_element(Locator::Css("#servers")).await.is_err() {
        let url = c.current_url().await.unwrap();
        panic!("not logged in; at {url}: {}", c.source().await.unwrap_or_default());
    }
    assert_eq!(c.current_url().await.unwrap().path(), "/registry");
    assert_eq!(text_of(&c, "#viewer").await, "Bob Example");
    let listed = text_of(&c, "#servers tbody").await;
    assert!(listed.contains("com.example/airflow"), "{listed}");
    assert!(!listed.contains("payroll"), "a server bob may not use is not shown: {listed}");

    // The inbox shows the request; its page shows the exact action and digest.
    c.goto(&format!("{base}/approvals")).await.unwrap();
    let inbox = text_of(&c, "#approvals").await;
    assert!(inbox.contains("clear_task_instances"), "{inbox}");
    c.find(Locator::Css(&format!("tr[data-approval='{approval_id}'] a"))).await.unwrap().click().await.unwrap();
    c.wait().for_element(Locator::Css("#digest")).await.unwrap();
    assert_eq!(text_of(&c, "#digest").await, created["digest"].as_str().unwrap());
    assert!(text_of(&c, "#action").await.contains("daily_sales_rollup"));
    c.find(Locator::Css("#approve")).await.unwrap().click().await.unwrap();
    if c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("#flash")).await.is_err() {
        panic!("no confirmation after approving; the page says: {}", c.source().await.unwrap_or_default());
    }
    assert!(text_of(&c, "#state").await.contains("approved"), "the page shows the new state");

    // The registry agrees, and the audit log shows who approved.
    let view: Value = mesh_client
        .get(format!("{mesh_url}/v0.1/x/approvals/{approval_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["state"], "approved", "{view}");
    c.goto(&format!("{base}/audit")).await.unwrap();
    let audit = text_of(&c, "#audit").await;
    assert!(audit.contains("approval.approved") || audit.contains("approved"), "{audit}");
    assert!(audit.contains("u-bob-0002") || audit.contains("Bob"), "the approver is named: {audit}");

    c.close().await.unwrap();
    stop.cancel();
    server.await.unwrap().unwrap();
}

/// The web thread in a real browser: a person logged in (development login) watches an
/// investigation; an alert joining its episode appears without a reload; a question
/// asked in the page gets its answer in the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_thread_is_live_and_answers_questions() {
    inquest::identity::install_crypto_provider();
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", public.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(dir.path(), &[("INQUEST_REGISTRY__PUBLIC_URL", &base)]);
    let mesh = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(run(config, Role::All, Listeners { public, mesh: Some(mesh) }, stop.clone()));
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alert = |fingerprint: &str| {
        json!({"version": "4", "groupKey": "{}:{alertname=\"WebThreadCheck\"}", "status": "firing",
               "receiver": "inquest", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
               "externalURL": "http://am", "alerts": [{"status": "firing",
               "labels": {"alertname": "WebThreadCheck", "team": "data", "instance": fingerprint},
               "annotations": {}, "startsAt": "2026-11-27T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
               "generatorURL": "", "fingerprint": fingerprint}]})
    };
    let sent = http.post(format!("{base}/v1/alerts/alertmanager")).json(&alert("f1")).send().await.unwrap();
    assert_eq!(sent.status(), 202);
    let id = {
        let mut found = None;
        for _ in 0..200 {
            let list: Value = http.get(format!("{base}/v1/investigations")).send().await.unwrap().json().await.unwrap();
            if let Some(i) = list["investigations"].as_array().and_then(|a| a.first())
                && i["state"] == "completed"
            {
                found = i["id"].as_str().map(str::to_string);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        found.expect("the investigation completes")
    };

    let driver = Driver::start().await;
    let c = driver.browser().await;
    c.goto(&format!("{base}/auth/dev-login?next=/investigations/{id}")).await.unwrap();
    c.find(Locator::Css("input[name=subject]")).await.unwrap().send_keys("carol").await.unwrap();
    c.find(Locator::Css("input[name=groups]")).await.unwrap().send_keys("sre").await.unwrap();
    c.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
    if c.wait().at_most(Duration::from_secs(15)).for_element(Locator::Css("#timeline")).await.is_err() {
        panic!("no thread page: {}", c.source().await.unwrap_or_default());
    }
    let timeline = text_of(&c, "#timeline").await;
    assert!(timeline.contains("Alert received from alertmanager"), "{timeline}");
    assert!(timeline.contains("Completed"), "{timeline}");
    for _ in 0..100 {
        if text_of(&c, "#live-state").await.contains("connected") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(text_of(&c, "#live-state").await, "Live: connected");

    // Another alert of the same episode: it appears without a reload.
    let sent = http.post(format!("{base}/v1/alerts/alertmanager")).json(&alert("f2")).send().await.unwrap();
    assert_eq!(sent.status(), 202);
    let joined = c.wait().at_most(Duration::from_secs(15)).for_element(Locator::Css("li[data-kind='alerts.attached']"));
    if joined.await.is_err() {
        panic!("the new event did not appear live: {}", text_of(&c, "#timeline").await);
    }
    c.execute("window.notReloaded = true;", vec![]).await.unwrap();
    assert_eq!(c.execute("return window.notReloaded === true;", vec![]).await.unwrap(), json!(true));

    // A question asked in the page; its answer arrives in the page.
    c.find(Locator::Css("#question")).await.unwrap().send_keys("what failed?").await.unwrap();
    c.find(Locator::Css("#ask-button")).await.unwrap().click().await.unwrap();
    let answered =
        c.wait().at_most(Duration::from_secs(30)).for_element(Locator::Css("li[data-kind='question.answered']"));
    if answered.await.is_err() {
        panic!("no answer in the page: {}", text_of(&c, "#timeline").await);
    }
    let timeline = text_of(&c, "#timeline").await;
    assert!(timeline.contains("carol asked: what failed?"), "{timeline}");
    assert!(timeline.contains("Answer to “what failed?”"), "{timeline}");

    // The list shows it, and filters.
    c.goto(&format!("{base}/investigations?state=completed&team=data")).await.unwrap();
    assert!(text_of(&c, "#investigations").await.contains("WebThreadCheck"));
    c.goto(&format!("{base}/investigations?team=payroll")).await.unwrap();
    assert!(text_of(&c, "#investigations").await.contains("No investigation matches"));

    c.close().await.unwrap();
    stop.cancel();
    server.await.unwrap().unwrap();
}
