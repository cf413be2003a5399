//! Local changes the relay has not acknowledged. Each is in one of three
//! states: waiting to be sent; held by the relay for an office user's
//! review (sent again at every sync, which is how the device learns the
//! decision); or refused, kept with what it meant to do until the user
//! retries or discards it.

use std::collections::{HashMap, HashSet};

use rusqlite::{params, Connection, OptionalExtension};

use crate::protocol::Rejection;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The code of a change the relay holds for review.
pub(crate) const HELD: &str = "held_for_review";
/// The code of a change kept because the relay had no copy of its record
/// when it was refused; made again when the record arrives.
pub(crate) const WAITS_FOR_RECORD: &str = "waits_for_record";

/// One local change not yet acknowledged by the relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub seq: i64,
    pub record_id: String,
    pub hash: [u8; 32],
    pub bytes: Vec<u8>,
    /// The relay's reason if it refused or holds this change.
    pub rejected: Option<String>,
    /// The relay's code for it (`held_for_review` while it is held).
    pub code: Option<String>,
}

/// A refused change as stored: the relay's answer and the intent.
#[derive(Debug, Clone)]
pub(crate) struct Refused {
    pub seq: i64,
    pub record_id: String,
    pub reason: String,
    pub code: String,
    pub field: Option<String>,
    pub intent: Option<String>,
    pub refused_at: Option<i64>,
}

/// Queues a change to send, unless the outbox has it already (then
/// returns false).
pub(crate) fn push(
    conn: &Connection,
    record_id: &str,
    hash: &[u8; 32],
    bytes: &[u8],
) -> Result<bool> {
    Ok(conn
        .prepare_cached("INSERT OR IGNORE INTO outbox (doc_id, hash, bytes) VALUES (?1, ?2, ?3)")?
        .execute(params![record_id, hash, bytes])?
        > 0)
}

fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxEntry> {
    Ok(OutboxEntry {
        seq: r.get(0)?,
        record_id: r.get(1)?,
        hash: r.get(2)?,
        bytes: r.get(3)?,
        rejected: r.get(4)?,
        code: r.get(5)?,
    })
}

/// Entries in the order they were made, starting after `after_seq`: those
/// to send (waiting and held), or with `include_rejected` all of them.
pub(crate) fn entries(
    conn: &Connection,
    after_seq: i64,
    limit: usize,
    include_rejected: bool,
) -> Result<Vec<OutboxEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, doc_id, hash, bytes, rejected, code FROM outbox
         WHERE seq > ?1 AND (?3 OR rejected IS NULL OR code = 'held_for_review')
         ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![after_seq, limit as i64, include_rejected], entry)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// A change waiting to be sent, or held, taken out of the outbox to be
/// put back behind others ([`take_waiting`], [`put_back`]).
pub(crate) struct Waiting {
    record_id: String,
    hash: [u8; 32],
    bytes: Vec<u8>,
    rejected: Option<String>,
    code: Option<String>,
}

/// Takes every change waiting to be sent or held out of the outbox, oldest
/// first; refused ones stay.
pub(crate) fn take_waiting(conn: &Connection) -> Result<Vec<Waiting>> {
    let waiting = conn
        .prepare_cached(
            "DELETE FROM outbox WHERE rejected IS NULL OR code = 'held_for_review'
             RETURNING seq, doc_id, hash, bytes, rejected, code",
        )?
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                Waiting {
                    record_id: r.get(1)?,
                    hash: r.get(2)?,
                    bytes: r.get(3)?,
                    rejected: r.get(4)?,
                    code: r.get(5)?,
                },
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // RETURNING gives no order.
    let mut waiting = waiting;
    waiting.sort_by_key(|(seq, _)| *seq);
    Ok(waiting.into_iter().map(|(_, w)| w).collect())
}

/// Puts a taken change back at the end of the outbox, unless it is there
/// already (queued again meanwhile).
pub(crate) fn put_back(conn: &Connection, w: &Waiting) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO outbox (doc_id, hash, bytes, rejected, code) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![w.record_id, w.hash, w.bytes, w.rejected, w.code])?;
    Ok(())
}

/// Every entry of one record, oldest first.
pub(crate) fn of_record(conn: &Connection, record_id: &str) -> Result<Vec<OutboxEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, doc_id, hash, bytes, rejected, code FROM outbox WHERE doc_id = ?1 ORDER BY seq",
    )?;
    let rows = stmt
        .query_map([record_id], entry)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Whether a record has changes still waiting to be sent or held.
pub(crate) fn unsettled(conn: &Connection, record_id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM outbox WHERE doc_id = ?1 AND (rejected IS NULL OR code = 'held_for_review')",
        )?
        .exists([record_id])?)
}

pub(crate) fn ack(conn: &Connection, hash: &[u8; 32]) -> Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM outbox WHERE hash = ?1")?
        .execute([hash])?
        > 0)
}

/// The relay holds the change for review: keep sending it.
pub(crate) fn hold(conn: &Connection, hash: &[u8; 32], reason: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("UPDATE outbox SET rejected = ?2, code = ?3 WHERE hash = ?1")?
        .execute(params![hash, reason, HELD])?
        > 0)
}

/// The change is refused: keep it, with what it meant to do, unsent. Only
/// a waiting or held change can become refused.
pub(crate) fn refuse(
    conn: &Connection,
    hash: &[u8; 32],
    reason: &str,
    code: &str,
    field: Option<&str>,
    intent: Option<&str>,
    at: i64,
) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "UPDATE outbox SET rejected = ?2, code = ?3, field = ?4,
                 intent = coalesce(?5, intent), refused_at = ?6
             WHERE hash = ?1 AND (rejected IS NULL OR code = 'held_for_review')",
        )?
        .execute(params![hash, reason, code, field, intent, at])?
        > 0)
}

/// The changes waiting for record `id` to arrive, oldest first (an
/// indexed lookup: called for every record a sync page brings).
pub(crate) fn waiting_for_record(conn: &Connection, id: &str) -> Result<Vec<Refused>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, doc_id, rejected, code, field, intent, refused_at
         FROM outbox WHERE doc_id = ?1 AND code = 'waits_for_record' ORDER BY seq",
    )?;
    let rows = stmt
        .query_map([id], refused_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// How long a change refused only for lacking other devices' changes
/// waits for them (sent again at every sync) before it is made again on
/// the relay's copy: 3 days, in ms.
pub(crate) const WAIT_FOR_OTHERS_MS: i64 = 3 * 86_400_000;

/// Of `refusals`, the changes refused only for lacking changes that are
/// neither this device's (refused ones among them) nor anywhere the
/// relay can get them from now — other devices' changes a relay restored
/// from a backup lost, which those devices will send again — are kept
/// waiting, unchanged and unrefused (sent again at every sync), for up to
/// [`WAIT_FOR_OTHERS_MS`] since first refused so: taken out of
/// `refusals`, with their records returned.
pub(crate) fn keep_waiting(
    conn: &Connection,
    refusals: &mut HashMap<[u8; 32], &Rejection>,
    now: i64,
) -> Result<HashSet<String>> {
    let mut waiting = HashSet::new();
    let candidates: Vec<[u8; 32]> = refusals
        .iter()
        .filter(|(_, r)| r.code == "missing_dependencies")
        .map(|(h, _)| *h)
        .collect();
    for hash in candidates {
        let row: Option<(String, Vec<u8>, Option<i64>)> = conn
            .prepare_cached(
                "SELECT doc_id, bytes, refused_at FROM outbox WHERE hash = ?1 AND rejected IS NULL",
            )?
            .query_row([hash], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((record, bytes, since)) = row else {
            continue;
        };
        if since.is_some_and(|t| now - t > WAIT_FOR_OTHERS_MS) {
            continue;
        }
        let Ok(change) = crate::doc::ParsedChange::parse(&record, &bytes) else {
            continue;
        };
        // Built on one of ours the relay refused: that never arrives.
        let mut on_refused = false;
        for dep in change.deps() {
            let refused_now = refusals
                .get(&dep)
                .is_some_and(|r| r.code != "missing_dependencies");
            if refused_now || is_refused(conn, &dep)? {
                on_refused = true;
                break;
            }
        }
        if on_refused {
            continue;
        }
        conn.prepare_cached(
            "UPDATE outbox SET refused_at = coalesce(refused_at, ?2) WHERE hash = ?1",
        )?
        .execute(params![hash, now])?;
        refusals.remove(&hash);
        waiting.insert(record);
    }
    Ok(waiting)
}

fn is_refused(conn: &Connection, hash: &[u8; 32]) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM outbox WHERE hash = ?1 AND rejected IS NOT NULL AND code <> 'held_for_review'",
        )?
        .exists([hash])?)
}

/// Whether any change waits for its record.
pub(crate) fn any_waiting_for_record(conn: &Connection) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM outbox WHERE code = 'waits_for_record'")?
        .exists([])?)
}

/// Replaces a kept change's refusal with another one.
pub(crate) fn set_refusal(
    conn: &Connection,
    seq: i64,
    reason: &str,
    code: &str,
    field: Option<&str>,
) -> Result<()> {
    conn.prepare_cached("UPDATE outbox SET rejected = ?2, code = ?3, field = ?4 WHERE seq = ?1")?
        .execute(params![seq, reason, code, field])?;
    Ok(())
}

/// Refused changes, oldest first.
pub(crate) fn refused(conn: &Connection) -> Result<Vec<Refused>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, doc_id, rejected, coalesce(code, 'refused'), field, intent, refused_at
         FROM outbox WHERE rejected IS NOT NULL AND coalesce(code, '') != 'held_for_review'
         ORDER BY seq",
    )?;
    let rows = stmt
        .query_map([], refused_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

fn refused_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Refused> {
    Ok(Refused {
        seq: r.get(0)?,
        record_id: r.get(1)?,
        reason: r.get(2)?,
        code: r.get(3)?,
        field: r.get(4)?,
        intent: r.get(5)?,
        refused_at: r.get(6)?,
    })
}

pub(crate) fn refused_one(conn: &Connection, seq: i64) -> Result<Option<Refused>> {
    Ok(refused(conn)?.into_iter().find(|r| r.seq == seq))
}

/// Drops an entry (a refused change discarded, or re-made as a new one).
pub(crate) fn remove(conn: &Connection, seq: i64) -> Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM outbox WHERE seq = ?1")?
        .execute([seq])?
        > 0)
}

/// (waiting, held, refused)
pub(crate) fn count(conn: &Connection) -> Result<(usize, usize, usize)> {
    Ok(conn.query_row(
        "SELECT count(*) FILTER (WHERE rejected IS NULL),
                count(*) FILTER (WHERE code = 'held_for_review'),
                count(*) FILTER (WHERE rejected IS NOT NULL AND coalesce(code, '') != 'held_for_review')
         FROM outbox",
        [],
        |r| {
            Ok((
                r.get::<_, i64>(0)? as usize,
                r.get::<_, i64>(1)? as usize,
                r.get::<_, i64>(2)? as usize,
            ))
        },
    )?)
}

// ----- evictions that wait for a record's changes ---------------------------

pub(crate) fn defer_eviction(conn: &Connection, record_id: &str) -> Result<()> {
    conn.prepare_cached("INSERT OR IGNORE INTO deferred_evictions (record_id) VALUES (?1)")?
        .execute([record_id])?;
    Ok(())
}

/// The relay sent the record again: it is visible, nothing to evict.
pub(crate) fn cancel_eviction(conn: &Connection, record_id: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM deferred_evictions WHERE record_id = ?1")?
        .execute([record_id])?;
    Ok(())
}

pub(crate) fn deferred_evictions(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT record_id FROM deferred_evictions")?;
    let ids = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(ids)
}

/// Whether the relay said to evict the record and it only waits for its changes.
pub(crate) fn is_deferred(conn: &Connection, record_id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM deferred_evictions WHERE record_id = ?1")?
        .exists([record_id])?)
}
