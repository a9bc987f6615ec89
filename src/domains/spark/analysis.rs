//! Pure summaries of what the History Server holds: stage health (skew, spill, GC,
//! memory), secret redaction, configuration diffs and argument checks. No IO here.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

use super::model::{Application, Stage, TaskSummary};
use crate::mcp::ToolError;

/// The quantiles asked of `taskSummary`: enough for median and max.
pub const QUANTILES: [f64; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];

/// A stage whose slowest task takes this many times its median task is skewed.
pub const SKEW_RATIO: f64 = 3.0;
/// Below this, a slow task is noise (JVM warm-up, scheduling), not skew.
const SKEW_MIN_MAX_MS: f64 = 1_000.0;
/// GC over this share of executor run time is worth a look.
const GC_SHARE: f64 = 0.1;

/// What shows in `Environment` instead of a secret's value.
pub const REDACTED: &str = "*** (redacted by inquest)";

/// Keys Spark sets differently for every run; a diff of them says nothing.
pub const RUN_IDENTITY_KEYS: [&str; 6] = [
    "spark.app.id",
    "spark.app.startTime",
    "spark.app.submitTime",
    "spark.driver.port",
    "spark.app.name",
    "spark.driver.host",
];

/// The health of one stage attempt, from its totals and its task quantiles.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct StageHealth {
    /// Median task duration (ms) over successful tasks; absent when none succeeded.
    pub median_task_ms: Option<f64>,
    pub max_task_ms: Option<f64>,
    /// `max_task_ms / median_task_ms`.
    pub skew_ratio: Option<f64>,
    pub skewed: bool,
    pub memory_bytes_spilled: i64,
    pub disk_bytes_spilled: i64,
    /// Total JVM GC time of the stage's tasks (ms).
    pub gc_time_ms: i64,
    /// GC time as a share of executor run time.
    pub gc_share: Option<f64>,
    /// The highest peak execution memory of one task (bytes); the stage total when
    /// no task summary exists.
    pub peak_execution_memory: i64,
    /// Findings in words, for the investigator.
    pub findings: Vec<String>,
}

/// Skew, spill, GC and memory of a stage attempt.
pub fn stage_health(stage: &Stage, summary: Option<&TaskSummary>) -> StageHealth {
    let at = |values: &[f64], q: f64| -> Option<f64> {
        let summary = summary?;
        let index = summary.quantiles.iter().position(|x| (x - q).abs() < 1e-9)?;
        values.get(index).copied()
    };
    let (median, max) = match summary {
        Some(s) => (at(&s.duration, 0.5), at(&s.duration, 1.0)),
        None => (None, None),
    };
    let skew_ratio = match (median, max) {
        (Some(m), Some(x)) if m > 0.0 => Some(x / m),
        _ => None,
    };
    let skewed = matches!((skew_ratio, max), (Some(r), Some(x)) if r >= SKEW_RATIO && x >= SKEW_MIN_MAX_MS);
    let gc_share = (stage.executor_run_time > 0).then(|| stage.jvm_gc_time as f64 / stage.executor_run_time as f64);
    let peak_task = summary.and_then(|s| at(&s.peak_execution_memory, 1.0));
    let peak_execution_memory = peak_task.map(|p| p as i64).unwrap_or(stage.peak_execution_memory);

    let mut findings = Vec::new();
    if stage.status == "FAILED" {
        let reason = stage.failure_reason.as_deref().map(first_line).unwrap_or("no reason recorded");
        findings.push(format!("stage failed: {reason}"));
        if stage.failure_reason.as_deref().is_some_and(looks_like_oom) {
            findings.push("the failure looks like running out of memory".into());
        }
    }
    if let (true, Some(r)) = (skewed, skew_ratio) {
        findings.push(format!("task skew: the slowest task took {r:.1}x the median"));
    }
    if stage.memory_bytes_spilled > 0 || stage.disk_bytes_spilled > 0 {
        findings.push(format!(
            "spilled {} bytes from memory, {} bytes to disk",
            stage.memory_bytes_spilled, stage.disk_bytes_spilled
        ));
    }
    if let Some(share) = gc_share.filter(|s| *s >= GC_SHARE) {
        findings.push(format!("GC took {:.0}% of executor run time", share * 100.0));
    }
    StageHealth {
        median_task_ms: median,
        max_task_ms: max,
        skew_ratio,
        skewed,
        memory_bytes_spilled: stage.memory_bytes_spilled,
        disk_bytes_spilled: stage.disk_bytes_spilled,
        gc_time_ms: stage.jvm_gc_time,
        gc_share,
        peak_execution_memory,
        findings,
    }
}

/// Whether an error text says the JVM or Python ran out of memory.
pub fn looks_like_oom(text: &str) -> bool {
    const MARKS: [&str; 6] = [
        "OutOfMemoryError",
        "MemoryError",
        "SparkOutOfMemoryError",
        "Java heap space",
        "GC overhead limit exceeded",
        "Unable to acquire",
    ];
    MARKS.iter().any(|m| text.contains(m))
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// Whether a configuration key names a secret: a word of it is a password, secret,
/// token, credential or key (`fs.s3a.access.key`, `spark.ssl.keyPassword`). Redacting
/// a harmless key by mistake costs little; showing a secret costs a lot.
pub fn is_secret_key(key: &str) -> bool {
    const WORDS: [&str; 7] = ["password", "passwd", "secret", "token", "credential", "credentials", "key"];
    const INFIXES: [&str; 4] = ["password", "secret", "token", "credential"];
    let lower = key.to_ascii_lowercase();
    if INFIXES.iter().any(|i| lower.contains(i)) {
        return true;
    }
    words(key).iter().any(|w| WORDS.contains(&w.as_str()))
}

/// Splits `spark.ssl.keyStore_path` into `spark ssl key store path`.
fn words(key: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in key.chars() {
        if !c.is_ascii_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && previous_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        current.push(c.to_ascii_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// `value`, or [`REDACTED`] when `key` names a secret.
pub fn redact(key: &str, value: &str) -> String {
    if is_secret_key(key) { REDACTED.to_string() } else { value.to_string() }
}

/// One key whose value differs between two applications (absent on one side: `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ConfigDifference {
    pub key: String,
    pub left: Option<String>,
    pub right: Option<String>,
}

/// The keys whose values differ, sorted, secrets redacted, run-identity keys left out.
pub fn config_diff(left: &[(String, String)], right: &[(String, String)]) -> Vec<ConfigDifference> {
    let left: BTreeMap<&str, &str> = left.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let right: BTreeMap<&str, &str> = right.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut keys: Vec<&str> = left.keys().chain(right.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .filter(|k| !RUN_IDENTITY_KEYS.contains(k))
        .filter(|k| left.get(k) != right.get(k))
        .map(|k| ConfigDifference {
            key: k.to_string(),
            left: left.get(k).map(|v| redact(k, v)),
            right: right.get(k).map(|v| redact(k, v)),
        })
        .collect()
}

/// One application reduced to what a comparison needs.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RunSummary {
    pub app_id: String,
    pub name: String,
    /// Of the last attempt, in milliseconds.
    pub duration_ms: i64,
    pub completed: bool,
    pub jobs: usize,
    pub failed_jobs: usize,
    /// Stage attempts, retries included.
    pub stages: usize,
    pub failed_stages: usize,
    pub failed_tasks: i64,
    pub memory_bytes_spilled: i64,
    pub disk_bytes_spilled: i64,
    pub gc_time_ms: i64,
}

pub fn run_summary(app: &Application, jobs: &[super::model::Job], stages: &[Stage]) -> RunSummary {
    let last = app.attempts.first();
    RunSummary {
        app_id: app.id.clone(),
        name: app.name.clone(),
        duration_ms: last.map(|a| a.duration).unwrap_or_default(),
        completed: last.is_some_and(|a| a.completed),
        jobs: jobs.len(),
        failed_jobs: jobs.iter().filter(|j| j.status == "FAILED").count(),
        stages: stages.len(),
        failed_stages: stages.iter().filter(|s| s.status == "FAILED").count(),
        failed_tasks: stages.iter().map(|s| s.num_failed_tasks).sum(),
        memory_bytes_spilled: stages.iter().map(|s| s.memory_bytes_spilled).sum(),
        disk_bytes_spilled: stages.iter().map(|s| s.disk_bytes_spilled).sum(),
        gc_time_ms: stages.iter().map(|s| s.jvm_gc_time).sum(),
    }
}

/// An application id as Spark makes them (`local-1700000000000`,
/// `application_1700000000000_0001`): letters, digits, `-`, `_`, `.`.
pub fn check_app_id(name: &str, value: &str) -> Result<(), ToolError> {
    let fine = !value.is_empty()
        && value.len() <= 200
        && value != "."
        && value != ".."
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if fine {
        Ok(())
    } else {
        Err(ToolError::InvalidArgument {
            name: name.into(),
            why: format!("`{value}` is not a Spark application id (letters, digits, `-`, `_`, `.`)"),
        })
    }
}

/// A date as the History Server takes it: `2026-01-31`, or with a time
/// `2026-01-31T10:00:00` (optionally `.SSS` and a zone such as `GMT` or `Z`).
pub fn check_date(name: &str, value: &str) -> Result<(), ToolError> {
    let wrong = || ToolError::InvalidArgument {
        name: name.into(),
        why: format!("`{value}` is not a date like 2026-01-31 or 2026-01-31T10:00:00.000GMT"),
    };
    let (date, time) = match value.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (value, None),
    };
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| wrong())?;
    if let Some(time) = time {
        let clock: String = time.chars().take_while(|c| c.is_ascii_digit() || *c == ':' || *c == '.').collect();
        let zone = &time[clock.len()..];
        let clock_fine = chrono::NaiveTime::parse_from_str(&clock, "%H:%M:%S%.f").is_ok();
        let zone_fine =
            zone.is_empty() || zone.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | ':'));
        if !clock_fine || !zone_fine {
            return Err(wrong());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(status: &str) -> Stage {
        Stage {
            status: status.into(),
            stage_id: 3,
            attempt_id: 0,
            name: "collect".into(),
            num_tasks: 4,
            num_complete_tasks: 4,
            num_failed_tasks: 0,
            num_killed_tasks: 0,
            submission_time: None,
            completion_time: None,
            failure_reason: None,
            executor_run_time: 10_000,
            jvm_gc_time: 2_000,
            input_bytes: 0,
            shuffle_read_bytes: 0,
            shuffle_write_bytes: 0,
            memory_bytes_spilled: 0,
            disk_bytes_spilled: 0,
            peak_execution_memory: 99,
        }
    }

    fn summary(durations: [f64; 5], peaks: [f64; 5]) -> TaskSummary {
        TaskSummary {
            quantiles: QUANTILES.to_vec(),
            duration: durations.to_vec(),
            executor_run_time: vec![],
            jvm_gc_time: vec![],
            peak_execution_memory: peaks.to_vec(),
            memory_bytes_spilled: vec![],
            disk_bytes_spilled: vec![],
        }
    }

    #[test]
    fn skew_is_max_over_median() {
        let s = summary([100.0, 200.0, 500.0, 600.0, 5_000.0], [0.0, 0.0, 0.0, 0.0, 4096.0]);
        let health = stage_health(&stage("COMPLETE"), Some(&s));
        assert_eq!(health.skew_ratio, Some(10.0));
        assert!(health.skewed);
        assert_eq!(health.peak_execution_memory, 4096);
        assert_eq!(health.gc_share, Some(0.2));
        assert_eq!(
            health.findings,
            ["task skew: the slowest task took 10.0x the median", "GC took 20% of executor run time"]
        );
    }

    #[test]
    fn short_stages_are_not_skewed() {
        let s = summary([1.0, 2.0, 5.0, 6.0, 500.0], [0.0; 5]);
        let health = stage_health(&stage("COMPLETE"), Some(&s));
        assert!(!health.skewed);
    }

    #[test]
    fn a_stage_without_successful_tasks_falls_back_to_totals() {
        let mut failed = stage("FAILED");
        failed.failure_reason = Some("Job aborted: java.lang.OutOfMemoryError: Java heap space\n\tat x".into());
        failed.disk_bytes_spilled = 10;
        let health = stage_health(&failed, None);
        assert_eq!((health.median_task_ms, health.skew_ratio, health.skewed), (None, None, false));
        assert_eq!(health.peak_execution_memory, 99);
        assert_eq!(
            health.findings[..3],
            [
                "stage failed: Job aborted: java.lang.OutOfMemoryError: Java heap space".to_string(),
                "the failure looks like running out of memory".to_string(),
                "spilled 0 bytes from memory, 10 bytes to disk".to_string(),
            ]
        );
    }

    #[test]
    fn secret_keys_are_recognised() {
        let table = [
            ("spark.hadoop.fs.s3a.access.key", true),
            ("spark.hadoop.fs.s3a.secret.key", true),
            ("spark.ssl.keyPassword", true),
            ("spark.ssl.keyStore", true),
            ("spark.authenticate.secret", true),
            ("spark.myservice.apiToken", true),
            ("SPARK_DB_PASSWORD", true),
            ("spark.executor.memory", false),
            ("spark.sql.shuffle.partitions", false),
            ("spark.monkey.business", false),
            ("spark.driver.host", false),
        ];
        for (key, secret) in table {
            assert_eq!(is_secret_key(key), secret, "{key}");
        }
    }

    #[test]
    fn the_diff_skips_run_identity_and_redacts() {
        let left = vec![
            ("spark.app.id".to_string(), "local-1".to_string()),
            ("spark.executor.memory".to_string(), "1g".to_string()),
            ("spark.sql.shuffle.partitions".to_string(), "200".to_string()),
            ("spark.db.password".to_string(), "hunter2".to_string()),
        ];
        let right = vec![
            ("spark.app.id".to_string(), "local-2".to_string()),
            ("spark.executor.memory".to_string(), "4g".to_string()),
            ("spark.sql.shuffle.partitions".to_string(), "200".to_string()),
            ("spark.db.password".to_string(), "hunter3".to_string()),
            ("spark.extra".to_string(), "on".to_string()),
        ];
        let diff = config_diff(&left, &right);
        let d = |k: &str, l: Option<&str>, r: Option<&str>| ConfigDifference {
            key: k.into(),
            left: l.map(String::from),
            right: r.map(String::from),
        };
        assert_eq!(
            diff,
            [
                d("spark.db.password", Some(REDACTED), Some(REDACTED)),
                d("spark.executor.memory", Some("1g"), Some("4g")),
                d("spark.extra", None, Some("on")),
            ]
        );
    }

    #[test]
    fn dates_are_checked() {
        for good in ["2026-01-31", "2026-01-31T10:00:00", "2026-01-31T10:00:00.000GMT", "2026-01-31T10:00:00Z"] {
            assert!(check_date("min_date", good).is_ok(), "{good}");
        }
        for bad in ["yesterday", "2026-13-01", "2026-01-31T25:00:00", "2026-01-31T10:00:00 GMT;x"] {
            let err = check_date("min_date", bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.starts_with("invalid argument `min_date`"), "{bad}: {err}");
        }
    }

    #[test]
    fn app_ids_are_checked() {
        assert!(check_app_id("app_id", "local-1700000000000").is_ok());
        assert!(check_app_id("app_id", "application_1_0001").is_ok());
        for bad in ["", "..", "a/b", "x?y"] {
            assert!(check_app_id("app_id", bad).is_err(), "{bad}");
        }
    }
}
