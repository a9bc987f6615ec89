//! A real Matrix homeserver for tests: Synapse 1.163.2.
//!
//! PyPI `matrix-synapse==1.163.2` is installed once per machine into
//! `~/.cache/inquest/synapse-1.163.2/venv` (Python 3.11); the install counts once its
//! marker file is written, so an interrupted one is redone. One Synapse per test process
//! runs from a temporary folder (SQLite, its own signing key) on 127.0.0.1 and a free
//! port, with registration closed except through the shared secret, no key servers
//! (nothing leaves the machine) and rate limits raised far above what tests send. A
//! watchdog stops it when the test process goes away, however it goes.
//!
//! Two accounts are made through the admin API: the bot (`@inquest:localhost`) and a
//! person (`@alice:localhost`), each logged in once. Rooms are the person's, with the
//! bot invited: the bot joins the way it would in production.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use inquest::chat::matrix::MatrixConfig;
use inquest::percent::encode;
use serde_json::{Value, json};
use sha2::Digest;
use tokio::sync::OnceCell;

use super::host::{free_port, watchdog};
use super::refclients::cache_dir;

pub const VERSION: &str = "1.163.2";
pub const SERVER_NAME: &str = "localhost";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const SHARED_SECRET: &str = "inquest-tests-shared-secret";
const PASSWORD: &str = "correct horse battery staple";

/// A logged-in account.
#[derive(Debug, Clone)]
pub struct Account {
    pub user_id: String,
    pub access_token: String,
}

/// The running homeserver.
pub struct Synapse {
    /// The client-server API, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    pub port: u16,
    pub bot: Account,
    pub person: Account,
    /// How long the install took (`None`: it was cached) and the start (to versions
    /// answered, accounts made).
    pub installed_in: Option<Duration>,
    pub started_in: Duration,
    pid: u32,
    log: PathBuf,
    /// Closing it (the test process ending) tells the watchdog to stop the server.
    watchdog: Mutex<Option<ChildStdin>>,
    _watchdog_child: Mutex<Child>,
    _server: Mutex<Child>,
}

/// The one Synapse of this test process, started on first use.
pub async fn homeserver() -> &'static Synapse {
    static SYNAPSE: OnceCell<Synapse> = OnceCell::const_new();
    SYNAPSE.get_or_init(start).await
}

impl Synapse {
    /// The bot's configuration, with `rooms` (team -> room id).
    pub fn config(&self, rooms: &[(&str, &str)]) -> MatrixConfig {
        MatrixConfig {
            homeserver: self.url.clone(),
            access_token: self.bot.access_token.clone().into(),
            user_id: self.bot.user_id.clone(),
            rooms: rooms.iter().map(|(t, r)| (t.to_string(), r.to_string())).collect::<BTreeMap<_, _>>(),
            default_room: None,
        }
    }

    /// A room of the person's, the bot invited; its id.
    pub async fn create_room(&self, name: &str) -> String {
        let body = json!({"name": name, "preset": "private_chat", "invite": [self.bot.user_id]});
        let room = self.call(&self.person, "POST", "/_matrix/client/v3/createRoom", Some(body)).await;
        room["room_id"].as_str().unwrap().to_string()
    }

    /// The person sends `content` to `room`; the event's id.
    pub async fn person_sends(&self, room: &str, content: Value) -> String {
        let txn = uuid::Uuid::now_v7().to_string();
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", encode(room));
        self.call(&self.person, "PUT", &path, Some(content)).await["event_id"].as_str().unwrap().to_string()
    }

    /// Every event related to `root` by `rel_type` (`m.thread`, `m.replace`), oldest
    /// first, as the person sees them.
    pub async fn related(&self, room: &str, root: &str, rel_type: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let mut path = format!(
                "/_matrix/client/v1/rooms/{}/relations/{}/{rel_type}?dir=f&limit=50",
                encode(room),
                encode(root)
            );
            if let Some(from) = &from {
                path.push_str(&format!("&from={}", encode(from)));
            }
            let page = self.call(&self.person, "GET", &path, None).await;
            events.extend(page["chunk"].as_array().unwrap().iter().cloned());
            match page["next_batch"].as_str() {
                Some(next) => from = Some(next.to_string()),
                None => return events,
            }
        }
    }

    /// The room's messages (`m.room.message`), oldest first, as the person sees them.
    pub async fn messages(&self, room: &str) -> Vec<Value> {
        let filter = encode(&json!({"types": ["m.room.message"]}).to_string());
        let mut events = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let mut path =
                format!("/_matrix/client/v3/rooms/{}/messages?dir=f&limit=100&filter={filter}", encode(room));
            if let Some(from) = &from {
                path.push_str(&format!("&from={}", encode(from)));
            }
            let page = self.call(&self.person, "GET", &path, None).await;
            let chunk = page["chunk"].as_array().unwrap();
            events.extend(chunk.iter().cloned());
            match page["end"].as_str() {
                Some(end) if !chunk.is_empty() => from = Some(end.to_string()),
                _ => return events,
            }
        }
    }

    /// One event, as the person sees it (edits bundled under `unsigned`).
    pub async fn event(&self, room: &str, event_id: &str) -> Value {
        let path = format!("/_matrix/client/v3/rooms/{}/event/{}", encode(room), encode(event_id));
        self.call(&self.person, "GET", &path, None).await
    }

    /// A request as `who`; its JSON answer, which must be a success.
    pub async fn call(&self, who: &Account, method: &str, path: &str, body: Option<Value>) -> Value {
        // A client per call: the homeserver outlives each test's runtime.
        let http = reqwest::Client::new();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = http.request(method.clone(), format!("{}{path}", self.url)).bearer_auth(&who.access_token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}\n{}", self.log_tail());
        serde_json::from_str(&text).unwrap()
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        // Only reached for a non-static instance; the watchdog covers the static one.
        if let Ok(mut stdin) = self.watchdog.lock() {
            stdin.take();
        }
    }
}

async fn start() -> Synapse {
    let (venv, installed_in) = tokio::task::spawn_blocking(|| {
        super::venv::install(&cache_dir(&format!("synapse-{VERSION}")), "python3.11", "matrix-synapse", VERSION)
    })
    .await
    .unwrap();
    let mut failures = Vec::new();
    for _ in 0..3 {
        match try_start(&venv, installed_in).await {
            Ok(synapse) => {
                eprintln!(
                    "Synapse {VERSION}: installed in {:?}, started in {:?} on {}",
                    synapse.installed_in, synapse.started_in, synapse.url
                );
                return synapse;
            }
            Err(log) => failures.push(log),
        }
    }
    panic!("Synapse did not start in 3 tries:\n{}", failures.join("\n---\n"));
}

async fn try_start(venv: &Path, installed_in: Option<Duration>) -> Result<Synapse, String> {
    let started = Instant::now();
    let work = tempfile::Builder::new().prefix("inquest-synapse").tempdir().unwrap().keep();
    let port = free_port();
    let config = work.join("homeserver.yaml");
    std::fs::write(&config, homeserver_yaml(&work, port).to_string()).unwrap();
    std::fs::write(work.join("signing.key"), signing_key()).unwrap();
    let log = work.join("synapse.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut server = Command::new(venv.join("bin/python"))
        .args(["-m", "synapse.app.homeserver", "-c"])
        .arg(&config)
        .current_dir(&work)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("starting Synapse");
    let pid = server.id();
    let (watchdog_child, stdin) = watchdog("synapse-watchdog", pid, &work);
    let url = format!("http://127.0.0.1:{port}");
    let ready = async {
        wait_ready(&mut server, &url, started).await?;
        let http = reqwest::Client::new();
        Ok::<_, String>((register(&http, &url, venv, "inquest").await?, register(&http, &url, venv, "alice").await?))
    };
    let (bot, person) = match ready.await {
        Ok(accounts) => accounts,
        Err(why) => {
            let _ = server.kill();
            let _ = server.wait();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            // Closing its input tells the watchdog to remove the folder.
            drop(stdin);
            return Err(format!("{why}; the log:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
        }
    };
    Ok(Synapse {
        url,
        port,
        bot,
        person,
        installed_in,
        started_in: started.elapsed(),
        pid,
        log,
        watchdog: Mutex::new(Some(stdin)),
        _watchdog_child: Mutex::new(watchdog_child),
        _server: Mutex::new(server),
    })
}

/// Waits until the client API answers, or the server exits, or [`READY_TIMEOUT`].
async fn wait_ready(server: &mut Child, url: &str, started: Instant) -> Result<(), String> {
    let http = reqwest::Client::new();
    loop {
        if let Ok(Some(status)) = server.try_wait() {
            return Err(format!("Synapse exited ({status})"));
        }
        let versions = http.get(format!("{url}/_matrix/client/versions")).send().await;
        if versions.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if started.elapsed() > READY_TIMEOUT {
            return Err(format!("no answer after {READY_TIMEOUT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Everything differing from Synapse's defaults (JSON is YAML).
fn homeserver_yaml(work: &Path, port: u16) -> Value {
    let path = |name: &str| work.join(name).display().to_string();
    let plenty = json!({"per_second": 1000, "burst_count": 1000});
    json!({
        "server_name": SERVER_NAME,
        "pid_file": path("homeserver.pid"),
        "listeners": [{
            "port": port,
            "bind_addresses": ["127.0.0.1"],
            "type": "http",
            "tls": false,
            "x_forwarded": false,
            "resources": [{"names": ["client"], "compress": false}],
        }],
        "database": {"name": "sqlite3", "args": {"database": path("homeserver.db")}},
        "media_store_path": path("media"),
        "signing_key_path": path("signing.key"),
        "report_stats": false,
        "trusted_key_servers": [],
        "suppress_key_server_warning": true,
        "enable_registration": false,
        "registration_shared_secret": SHARED_SECRET,
        "macaroon_secret_key": "inquest-tests-macaroon",
        "form_secret": "inquest-tests-form",
        "use_presence": false,
        "rc_message": plenty,
        "rc_registration": plenty,
        "rc_login": {"address": plenty, "account": plenty, "failed_attempts": plenty},
        "rc_joins": {"local": plenty, "remote": plenty},
        "rc_invites": {"per_room": plenty, "per_user": plenty, "per_issuer": plenty},
    })
}

/// An ed25519 signing key in Synapse's format (`ed25519 <key id> <unpadded base64 seed>`).
fn signing_key() -> String {
    let seed = sha2::Sha256::digest(format!("{:?} {}", Instant::now(), uuid::Uuid::now_v7()).as_bytes());
    format!("ed25519 a_test {}\n", STANDARD_NO_PAD.encode(seed))
}

/// Registers `user` through the admin API (a nonce, then the HMAC-SHA1 of the shared
/// secret over nonce, user, password and admin flag), then logs in.
async fn register(http: &reqwest::Client, url: &str, venv: &Path, user: &str) -> Result<Account, String> {
    let endpoint = format!("{url}/_synapse/admin/v1/register");
    let nonce: Value = http.get(&endpoint).send().await.map_err(|e| e.to_string())?.json().await.unwrap();
    let nonce = nonce["nonce"].as_str().ok_or("no nonce")?.to_string();
    let message = format!("{nonce}\0{user}\0{PASSWORD}\0notadmin");
    let mac = hmac_sha1(venv, SHARED_SECRET, &message);
    let body = json!({"nonce": nonce, "username": user, "password": PASSWORD, "admin": false, "mac": mac});
    let registered = http.post(&endpoint).json(&body).send().await.map_err(|e| e.to_string())?;
    if !registered.status().is_success() {
        return Err(format!("registering {user}: {}", registered.text().await.unwrap_or_default()));
    }
    let login = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
                       "password": PASSWORD, "initial_device_display_name": "inquest tests"});
    let answer: Value = http
        .post(format!("{url}/_matrix/client/v3/login"))
        .json(&login)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .unwrap();
    Ok(Account {
        user_id: answer["user_id"].as_str().ok_or_else(|| format!("login of {user}: {answer}"))?.to_string(),
        access_token: answer["access_token"].as_str().unwrap().to_string(),
    })
}

/// HMAC-SHA1, by the venv's Python (the crate has no SHA-1 of its own).
fn hmac_sha1(venv: &Path, key: &str, message: &str) -> String {
    let script = "import hashlib, hmac, sys; \
                  print(hmac.new(sys.argv[1].encode(), sys.stdin.buffer.read(), hashlib.sha1).hexdigest())";
    let mut child = Command::new(venv.join("bin/python"))
        .args(["-c", script, key])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(message.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "hmac failed");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}
