//! `inquest playbooks check`, run as a user runs it, over the shipped playbooks and a
//! broken one.

use std::process::Command;

fn check(args: &[&str], dir: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_inquest"))
        .current_dir(dir)
        .env("INQUEST_DATA_DIR", dir.join("data"))
        // A configuration mistake does not stop a file check.
        .env("INQUEST_NOT_A_SETTING", "x")
        .arg("playbooks")
        .arg("check")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn the_shipped_playbooks_pass_and_each_kind_of_alert_has_one() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // No argument: the `playbooks` folder of the working directory.
    let (code, stdout, stderr) = check(&[], root);
    assert_eq!(code, 0, "{stdout}{stderr}");
    for name in [
        "airflow-task-failure",
        "airflow-dag-import-error",
        "spark-job-failure",
        "spark-executor-oom",
        "presto-query-failure",
        "data-freshness",
    ] {
        assert!(stdout.contains(&format!("ok  {name} ")), "{name} missing from {stdout}");
    }
}

#[test]
fn a_broken_playbook_fails_with_file_line_field_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "name: broken\ndescription: d\nmanual_minutes: 5\nmatch:\n  labels: ['alertname=~\"(\"']\nsteps:\n  - id: a\n    tool: nope\n",
    )
    .unwrap();
    let (code, stdout, stderr) = check(&[broken.to_str().unwrap()], dir.path());
    assert_eq!(code, 1, "{stdout}{stderr}");
    let file = broken.display().to_string();
    assert!(stdout.contains(&format!("{file}:5: match.labels[0]: ")), "{stdout}");
    assert!(stdout.contains(&format!("{file}:7: steps[0].tool: `nope` is not `server__tool`")), "{stdout}");
    assert!(stderr.contains("2 problem(s)"), "{stderr}");
    // A missing file is a problem too, not a crash.
    let (code, stdout, _) = check(&["no-such.yaml"], dir.path());
    assert_eq!(code, 1);
    assert!(stdout.contains("no-such.yaml: (file): cannot read"), "{stdout}");
}
