//! The test suite's GitHub test server (`tests/support/github.rs`) as a program, for the
//! local stack: `scripts/local up` starts it so that drafted pull requests and their
//! approval gates can be tried without a real GitHub. Every request it receives and
//! every answer it gives is checked against GitHub's published REST description, as in
//! the tests; a violation is printed on standard error.
//!
//! Usage: `github_test_server <owner> [<prefix>=<folder>]...`: a repository
//! `<owner>/<any name>` whose `main` branch holds the files of each folder under its
//! prefix. Prints `{"url": "http://127.0.0.1:<port>"}` once it listens, then serves
//! until its standard input closes or it is told to stop.

// The suite's support code, used here as it is in the tests: a panic is a failed start.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/gh_openapi.rs"]
mod gh_openapi;
#[path = "../tests/support/github.rs"]
mod github;
#[path = "../tests/support/refclients.rs"]
mod refclients;

use std::path::PathBuf;

use tokio::io::AsyncReadExt;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let Some(owner) = args.next() else {
        eprintln!("usage: github_test_server <owner> [<prefix>=<folder>]...");
        std::process::exit(2);
    };
    let mut files: Vec<(String, String)> = Vec::new();
    for arg in args {
        let Some((prefix, folder)) = arg.split_once('=') else {
            eprintln!("`{arg}` is not <prefix>=<folder>");
            std::process::exit(2);
        };
        let entries = std::fs::read_dir(PathBuf::from(folder)).unwrap_or_else(|e| panic!("reading {folder}: {e}"));
        for entry in entries.flatten().filter(|e| e.path().is_file()) {
            let name = entry.file_name().to_string_lossy().to_string();
            let text = std::fs::read_to_string(entry.path()).unwrap_or_else(|e| panic!("reading {name}: {e}"));
            files.push((format!("{}/{name}", prefix.trim_end_matches('/')), text));
        }
    }
    let files: Vec<(&str, &str)> = files.iter().map(|(p, t)| (p.as_str(), t.as_str())).collect();
    let server = github::GithubServer::start(&owner, &files).await;
    println!("{}", serde_json::json!({"url": server.url}));

    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 256];
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM");
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            read = stdin.read(&mut buf) => if matches!(read, Ok(0) | Err(_)) { break },
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {}
        }
        for violation in server.take_violations() {
            eprintln!("not as GitHub's REST description says: {violation}");
        }
    }
    for violation in server.take_violations() {
        eprintln!("not as GitHub's REST description says: {violation}");
    }
}
