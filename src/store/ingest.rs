//! Storing a batch of deliveries in one transaction: dedup, episodes, investigations.
//!
//! The decisions are made by pure functions (`intake::grouping::decide`,
//! `engine::step`) through `plan`; the two engines read what they need and write
//! what it decides in their own way:
//! - SQLite (`native`): the whole batch on a rusqlite connection's thread, row by
//!   row through cached statements, in one handoff.
//! - PostgreSQL (here): every statement costs a network round trip, which for rows
//!   this small costs more than the work. So a batch costs the same few statements
//!   whatever its size: two reads fetch what the decisions need for every delivery at
//!   once, `plan` decides the whole batch in memory in delivery order, one more read
//!   fetches the investigations that get events, and each table is then written with
//!   one statement (`statements`).

mod native;
mod plan;
mod statements;

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

pub(crate) use self::native::NativeIngest;
use self::plan::{Latest, Locked, Plan, Writes, json_text};
use self::statements::Statements;
use super::sql::SqlStore;
use super::{IngestOutcome, IngestPolicy, IngestRequest, Result, StoreError, to_ms};
use crate::engine::State;
use crate::intake::grouping::EpisodeView;

type Tx = Transaction<'static, Any>;

impl SqlStore {
    pub(super) async fn ingest_batch(
        &self,
        batch: Vec<IngestRequest>,
        policy: &IngestPolicy,
        now: DateTime<Utc>,
    ) -> Result<(Vec<IngestOutcome>, Vec<String>)> {
        let now_ms = to_ms(now);
        if let Some(native) = &self.native {
            // sqlx's only write connection, held as the process's write lock while the
            // batch runs on the native one: the claims and registry writes that use it
            // wait here instead of in SQLite's busy handler, which sleeps for up to
            // 100 ms at a time.
            let _write_lock = self.write.acquire().await?;
            return native.ingest(batch, policy.clone(), now_ms).await;
        }
        let sql = Statements::get();
        // Sorted and unique: the order PostgreSQL takes their locks in.
        let keys: Vec<&str> =
            batch.iter().map(|r| r.delivery.episode_key.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
        let dedup_keys: Vec<&str> =
            batch.iter().flat_map(|r| &r.delivery.alerts).map(|a| a.dedup_key.as_str()).collect();

        let mut tx = self.begin_write().await?;
        // Replicas ingesting the same episode key must not both open an episode.
        // Chunks follow the sorted order, so the locks are still taken in key order.
        for chunk in json_chunks(&keys, sql.max_json_bytes)? {
            sqlx::query(sql.lock_keys.as_str()).bind(chunk).execute(&mut *tx).await?;
        }
        let stored = stored_alerts(&mut tx, sql, &dedup_keys).await?;
        let latest = latest_episodes(&mut tx, sql, &keys).await?;

        let mut plan = Plan::new(now_ms, policy, stored, latest);
        for req in &batch {
            plan.add(req)?;
        }
        let locked = lock_investigations(&mut tx, sql, plan.investigations_to_lock()).await?;
        let (outcomes, writes, touched) = plan.finish(&locked, policy)?;
        write(&mut tx, sql, &writes, now_ms).await?;
        tx.commit().await?;
        Ok((outcomes, touched))
    }
}

/// Alerts already stored under any of `dedup_keys`: dedup key -> (alert id, episode id).
async fn stored_alerts(
    tx: &mut Tx,
    sql: &'static Statements,
    dedup_keys: &[&str],
) -> Result<HashMap<String, (String, String)>> {
    let rows = read_rows(tx, sql, &sql.stored_alerts, dedup_keys).await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?)))).collect()
}

/// The latest episode of each of `keys` that has one.
async fn latest_episodes(tx: &mut Tx, sql: &'static Statements, keys: &[&str]) -> Result<HashMap<String, Latest>> {
    let rows = read_rows(tx, sql, &sql.latest_episodes, keys).await?;
    rows.iter()
        .map(|r| {
            let state: Option<String> = r.try_get(4)?;
            let latest = Latest {
                view: EpisodeView {
                    id: r.try_get(1)?,
                    last_alert_at_ms: r.try_get(2)?,
                    investigation_state: state.as_deref().and_then(State::parse),
                },
                investigation: r.try_get(3)?,
            };
            Ok((r.try_get(0)?, latest))
        })
        .collect()
}

/// State and next sequence number of investigations the batch gives events, locked
/// until the commit.
async fn lock_investigations(tx: &mut Tx, sql: &'static Statements, mut ids: Vec<&str>) -> Result<Locked> {
    // Sorted, so that chunks keep the locks in id order.
    ids.sort_unstable();
    let rows = read_rows(tx, sql, &sql.lock_investigations, &ids).await?;
    rows.iter()
        .map(|r| {
            let state: String = r.try_get(1)?;
            let state = State::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("unknown state `{state}`")))?;
            Ok((r.try_get(0)?, (state, r.try_get(2)?)))
        })
        .collect()
}

/// Runs a read over `items` (a JSON array in `$1`): once, or once per
/// `max_json_bytes` of them; not at all when there are none.
async fn read_rows<T: Serialize>(
    tx: &mut Tx,
    sql: &'static Statements,
    statement: &'static str,
    items: &[T],
) -> Result<Vec<AnyRow>> {
    let mut rows = Vec::new();
    for chunk in json_chunks(items, sql.max_json_bytes)? {
        rows.extend(sqlx::query(statement).bind(chunk).fetch_all(&mut **tx).await?);
    }
    Ok(rows)
}

/// Writes the batch, one statement per kind of row, parents before children.
async fn write(tx: &mut Tx, sql: &'static Statements, w: &Writes<'_>, now_ms: i64) -> Result<()> {
    write_rows(tx, sql, &sql.insert_deliveries, &w.deliveries, now_ms).await?;
    write_rows(tx, sql, &sql.insert_episodes, &w.episodes, now_ms).await?;
    write_rows(tx, sql, &sql.insert_investigations, &w.investigations, now_ms).await?;
    write_rows(tx, sql, &sql.insert_alerts, &w.alerts, now_ms).await?;
    write_rows(tx, sql, &sql.update_episodes, &w.episode_updates, now_ms).await?;
    write_rows(tx, sql, &sql.update_investigations, &w.investigation_updates, now_ms).await?;
    write_rows(tx, sql, &sql.insert_events, &w.events, now_ms).await
}

/// Runs a write statement over `rows` (a JSON array in `$1`) at `now_ms` (`$2`): once,
/// or once per `max_json_bytes` of rows; not at all when there are none. The
/// statements are built once from constants (see `statements`), hence `'static`.
async fn write_rows<T: Serialize>(
    tx: &mut Tx,
    sql: &'static Statements,
    statement: &'static str,
    rows: &[T],
    now_ms: i64,
) -> Result<()> {
    for chunk in json_chunks(rows, sql.max_json_bytes)? {
        sqlx::query(statement).bind(chunk).bind(now_ms).execute(&mut **tx).await?;
    }
    Ok(())
}

/// `rows` as JSON arrays of up to `max_bytes` each, in order (a row larger than that
/// gets an array of its own); none for no rows.
fn json_chunks<T: Serialize>(rows: &[T], max_bytes: usize) -> Result<Vec<String>> {
    let mut chunks = Vec::new();
    let mut chunk = String::new();
    for row in rows {
        let row = json_text(row)?;
        // +2: the separator before the row and the closing bracket after it.
        if !chunk.is_empty() && chunk.len() + row.len() + 2 > max_bytes {
            chunk.push(']');
            chunks.push(std::mem::take(&mut chunk));
        }
        chunk.push(if chunk.is_empty() { '[' } else { ',' });
        chunk.push_str(&row);
    }
    if !chunk.is_empty() {
        chunk.push(']');
        chunks.push(chunk);
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::json_chunks;

    #[test]
    fn rows_are_split_into_bounded_json_arrays_in_order() {
        let rows: Vec<String> = (0..50).map(|i| "x".repeat(i % 7)).collect();
        for max in [1, 10, 40, 1_000] {
            let chunks = json_chunks(&rows, max).unwrap();
            let mut back: Vec<String> = Vec::new();
            for c in &chunks {
                let part: Vec<String> = serde_json::from_str(c).unwrap();
                assert!(c.len() <= max || part.len() == 1, "{c} is over {max} bytes");
                back.extend(part);
            }
            assert_eq!(back, rows, "max {max}");
        }
        assert_eq!(json_chunks(&rows, 1_000).unwrap().len(), 1);
        assert!(json_chunks::<u8>(&[], 10).unwrap().is_empty());
    }
}
