//! Local changes waiting for the relay's acknowledgement.

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// One local change not yet acknowledged by the relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub seq: i64,
    pub record_id: String,
    pub hash: [u8; 32],
    pub bytes: Vec<u8>,
    /// The relay's reason if it refused this change; the change is kept.
    pub rejected: Option<String>,
}

pub(crate) fn push(
    conn: &Connection,
    record_id: &str,
    hash: &[u8; 32],
    bytes: &[u8],
) -> Result<()> {
    conn.prepare_cached("INSERT OR IGNORE INTO outbox (doc_id, hash, bytes) VALUES (?1, ?2, ?3)")?
        .execute(params![record_id, hash, bytes])?;
    Ok(())
}

/// Entries in the order they were made, starting after `after_seq`.
pub(crate) fn entries(
    conn: &Connection,
    after_seq: i64,
    limit: usize,
    include_rejected: bool,
) -> Result<Vec<OutboxEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, doc_id, hash, bytes, rejected FROM outbox
         WHERE seq > ?1 AND (?3 OR rejected IS NULL) ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![after_seq, limit as i64, include_rejected], |r| {
            Ok(OutboxEntry {
                seq: r.get(0)?,
                record_id: r.get(1)?,
                hash: r.get(2)?,
                bytes: r.get(3)?,
                rejected: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub(crate) fn ack(conn: &Connection, hash: &[u8; 32]) -> Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM outbox WHERE hash = ?1")?
        .execute([hash])?
        > 0)
}

pub(crate) fn reject(conn: &Connection, hash: &[u8; 32], reason: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("UPDATE outbox SET rejected = ?2 WHERE hash = ?1")?
        .execute(params![hash, reason])?
        > 0)
}

pub(crate) fn count(conn: &Connection) -> Result<(usize, usize)> {
    Ok(conn.query_row(
        "SELECT count(*) FILTER (WHERE rejected IS NULL), count(*) FILTER (WHERE rejected IS NOT NULL) FROM outbox",
        [],
        |r| Ok((r.get::<_, i64>(0)? as usize, r.get::<_, i64>(1)? as usize)),
    )?)
}
