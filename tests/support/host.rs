//! Processes a test starts on this host: free loopback ports, and watchdogs that stop
//! a backend however the test process ends.

use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

/// A loopback port nothing listens on now: bound and let go at once (another process
/// may take it before the caller binds it, so starts that can fail that way retry).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port");
    listener.local_addr().expect("reading the ephemeral port").port()
}

/// A shell named `name` that waits for its standard input to close (the test process
/// ending, or the owner dropping the returned stdin), then stops `pid` (TERM, KILL
/// 3 s later) and removes `work`: a backend started for a `static` is stopped however
/// the test process goes.
pub fn watchdog(name: &str, pid: u32, work: &Path) -> (Child, ChildStdin) {
    let script = r#"read _ignored; kill "$1" 2>/dev/null; sleep 3; kill -9 "$1" 2>/dev/null; rm -rf "$2""#;
    let mut child = Command::new("sh")
        .args(["-c", script, name])
        .arg(pid.to_string())
        .arg(work)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the watchdog shell");
    let stdin = child.stdin.take().expect("the watchdog's stdin");
    (child, stdin)
}
