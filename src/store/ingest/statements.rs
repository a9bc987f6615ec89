//! The SQL of one batch on PostgreSQL (SQLite's is in `native`).
//!
//! The `Any` driver binds no arrays, so a statement's rows travel as one JSON array in
//! `$1` and are read as a table named `x` (`jsonb_array_elements_text` /
//! `jsonb_to_recordset`). `$2` is the batch's time where a statement needs one. Values
//! that are JSON text themselves (labels, raw alerts, event data, bodies) travel as
//! JSON strings, so they are stored exactly as serialized.

use std::sync::LazyLock;

pub(super) struct Statements {
    /// The most JSON one statement's `$1` takes; more rows take more statements.
    /// sqlx 0.9.0 leaves Nagle's algorithm on (no `TCP_NODELAY`), so a
    ///   message larger than the socket's send buffer (16 KiB at first) waits ~40 ms
    ///   for the server's delayed ACK, per statement (measured: a 32-delivery batch
    ///   took 95 ms instead of 9 ms). A round trip per 12 KiB is far cheaper. Raise it
    ///   once sqlx sets `TCP_NODELAY` again (fixed upstream after 0.9.0). A single row
    ///   over the limit still goes alone, and still waits, as it did before batching.
    pub max_json_bytes: usize,
    /// Takes the episode keys' advisory locks, in key order.
    pub lock_keys: String,
    /// `dedup_key, id, episode_id` of the stored alerts among `$1` (dedup keys).
    pub stored_alerts: String,
    /// `key, id, last_alert_at, investigation_id, state` of the latest episode of each
    /// key in `$1` that has one.
    pub latest_episodes: String,
    /// `id, state, next_seq` of the investigations in `$1`, locked (in id order, bytewise like Rust sorts), since a claim may change them until then.
    pub lock_investigations: String,
    pub insert_deliveries: String,
    pub insert_episodes: String,
    pub insert_investigations: String,
    pub insert_alerts: String,
    pub update_episodes: String,
    pub update_investigations: String,
    pub insert_events: String,
}

impl Statements {
    pub fn get() -> &'static Statements {
        static STATEMENTS: LazyLock<Statements> = LazyLock::new(Statements::new);
        &STATEMENTS
    }

    fn new() -> Statements {
        // `$1`, an array of strings, as table `x` with one column `k`.
        let texts = "jsonb_array_elements_text($1::jsonb) AS x(k)";
        // `$1`, an array of objects, as table `x` with these columns ("name type, ...").
        let rows = |columns: &str| format!("jsonb_to_recordset($1::jsonb) AS x({columns})");
        Statements {
            max_json_bytes: 12 << 10,
            // Every replica takes the locks in the same (byte) order, the order the
            // per-key locking before used, so batches cannot deadlock on them. Volatile
            // output expressions are evaluated after ORDER BY (PostgreSQL 9.6 and later).
            lock_keys: format!(
                "SELECT pg_advisory_xact_lock(hashtextextended(x.k, 0)) FROM {texts} ORDER BY x.k COLLATE \"C\""
            ),
            stored_alerts: format!(
                "SELECT dedup_key, id, episode_id FROM alerts WHERE dedup_key IN (SELECT x.k FROM {texts})"
            ),
            // The latest episode's id per key first (an index lookup each), then its row
            // by primary key: joining on the subquery directly makes PostgreSQL scan
            // every episode.
            latest_episodes: format!(
                "SELECT l.k, e.id, e.last_alert_at, e.investigation_id, i.state \
                 FROM (SELECT x.k, (SELECT p.id FROM episodes p WHERE p.episode_key = x.k \
                 ORDER BY p.opened_at DESC, p.id DESC LIMIT 1) AS id FROM {texts}) AS l \
                 JOIN episodes e ON e.id = l.id LEFT JOIN investigations i ON i.id = e.investigation_id"
            ),
            lock_investigations: format!(
                "SELECT id, state, next_seq FROM investigations WHERE id IN (SELECT x.k FROM {texts}) \
                 ORDER BY id COLLATE \"C\" FOR UPDATE"
            ),
            insert_deliveries: format!(
                "INSERT INTO deliveries (id, source, body, received_at) SELECT x.id, x.source, x.body, $2 FROM {}",
                rows("id text, source text, body text")
            ),
            insert_episodes: format!(
                "INSERT INTO episodes (id, episode_key, source, title, team, service, opened_at, last_alert_at, \
                 resolved_at, alert_count, investigation_id) \
                 SELECT x.id, x.episode_key, x.source, x.title, x.team, x.service, $2, $2, \
                 x.resolved_at, x.alert_count, x.investigation_id FROM {}",
                rows(
                    "id text, episode_key text, source text, title text, team text, service text, \
                     resolved_at bigint, alert_count bigint, investigation_id text"
                )
            ),
            insert_investigations: format!(
                "INSERT INTO investigations (id, episode_id, title, team, service, state, created_at, updated_at, \
                 finished_at, resolved_at, next_seq) \
                 SELECT x.id, x.episode_id, x.title, x.team, x.service, x.state, $2, $2, \
                 x.finished_at, x.resolved_at, x.next_seq FROM {}",
                rows(
                    "id text, episode_id text, title text, team text, service text, state text, \
                     finished_at bigint, resolved_at bigint, next_seq bigint"
                )
            ),
            insert_alerts: format!(
                "INSERT INTO alerts (id, dedup_key, episode_id, delivery_id, source, status, fingerprint, labels, \
                 annotations, starts_at, ends_at, generator_url, raw, received_at) \
                 SELECT x.id, x.dedup_key, x.episode_id, x.delivery_id, x.source, x.status, x.fingerprint, x.labels, \
                 x.annotations, x.starts_at, x.ends_at, x.generator_url, x.raw, $2 FROM {}",
                rows(
                    "id text, dedup_key text, episode_id text, delivery_id text, source text, status text, \
                     fingerprint text, labels text, annotations text, starts_at bigint, ends_at bigint, \
                     generator_url text, raw text"
                )
            ),
            update_episodes: format!(
                "UPDATE episodes SET alert_count = episodes.alert_count + x.added, last_alert_at = $2, \
                 resolved_at = x.resolved_at FROM {} WHERE episodes.id = x.id",
                rows("id text, added bigint, resolved_at bigint")
            ),
            update_investigations: format!(
                "UPDATE investigations SET state = x.state, next_seq = investigations.next_seq + x.events, \
                 updated_at = $2, resolved_at = COALESCE(x.resolved_at, investigations.resolved_at), \
                 finished_at = COALESCE(x.finished_at, investigations.finished_at) \
                 FROM {} WHERE investigations.id = x.id",
                rows("id text, state text, events bigint, resolved_at bigint, finished_at bigint")
            ),
            insert_events: format!(
                "INSERT INTO investigation_events (investigation_id, seq, kind, data, at) \
                 SELECT x.investigation_id, x.seq, x.kind, x.data, $2 FROM {}",
                rows("investigation_id text, seq bigint, kind text, data text")
            ),
        }
    }
}
