//! What a device does with one relay response, in ONE transaction: drop
//! acknowledged changes, keep held ones, rebase records with refused
//! changes (docs/decisions/0004-refused-changes.md), evict what left the
//! user's territories — unless changes of it still wait, then once they
//! are settled — and apply snapshots, changes and the new cursor. After a
//! relay was restored from a backup, queue the device's own changes again.

use rusqlite::Transaction;

use super::projection::SearchEntries;
use super::rebase::{self, Refusals};
use super::requeue;
use super::{
    adopt_snapshot, apply_into, apply_snapshot_into, evict_in, ids_in_territories, meta_set,
    outbox, Store, Writer,
};
use crate::doc::ParsedChange;
use crate::error::{Error, Result};
use crate::protocol::{self, SyncResponse};
use crate::sync::RoundReport;

impl Store {
    pub(crate) fn apply_response(&mut self, response: SyncResponse) -> Result<RoundReport> {
        let cursor =
            serde_json::to_string(&response.cursor).map_err(|e| Error::Protocol(e.to_string()))?;
        let meta = self.meta();
        let tx = self.conn.transaction()?;
        let mut report = RoundReport {
            more: response.more,
            ..Default::default()
        };
        for hash in &response.acks {
            report.acked += usize::from(outbox::ack(&tx, &protocol::hash_from(hash)?)?);
        }
        if response.restored {
            // The relay looked at none of this request's push; what it
            // may have lost goes out first at the next rounds.
            report.requeued = requeue::requeue_own_changes(&tx, &self.user, &self.device_id)?;
        }
        let mut refusals: Refusals<'_> = Default::default();
        for r in response.rejected.iter().filter(|r| !r.hash.is_empty()) {
            let hash = protocol::hash_from(&r.hash)?;
            if r.code == outbox::HELD {
                report.held += usize::from(outbox::hold(&tx, &hash, &r.reason)?);
            } else {
                refusals.insert(hash, r);
            }
        }
        // Changes that lack only other devices' changes (a relay restored
        // from a backup) wait for them: their records keep their copy.
        let waiting = outbox::keep_waiting(&tx, &mut refusals, meta.time)?;
        // Replays are made under the territories this response grants.
        let view = response.cursor.view.as_deref().or(self.view.as_deref());
        let resets: Vec<_> = response
            .resets
            .iter()
            .filter(|r| {
                !waiting.contains(&r.record_id) || refusals_for(&tx, &refusals, &r.record_id)
            })
            .collect();
        let mut actor = self.actor.clone();
        if !resets.is_empty() {
            // The refused changes used sequence numbers of this actor that
            // the relay never stored; re-made changes must not reuse them.
            actor = rotate_actor(&tx, &self.user)?;
        }
        let w = Writer {
            actor: &actor,
            user: &self.user,
            config: &self.config,
            meta,
            view,
            standing: response.standing.or(self.standing),
        };
        for reset in resets {
            report.rejected += rebase::rebase(&tx, &w, &reset.record_id, &reset.bytes, &refusals)?;
            report.rebased += 1;
        }
        // A refusal the relay sent no copy of the record with (an older
        // relay): keep it refused. (Those rebased are refused already.)
        for (hash, r) in &refusals {
            report.rejected += usize::from(outbox::refuse(
                &tx,
                hash,
                &r.reason,
                &r.code,
                r.field.as_deref(),
                None,
                w.meta.time,
            )?);
        }
        if !response.evict_territories.is_empty() {
            let ids = ids_in_territories(&tx, &response.evict_territories)?;
            report.evicted += evict_or_defer(&tx, &ids)?;
        }
        report.evicted += evict_or_defer(&tx, &response.evict)?;
        // Changes kept until their record comes back (after a relay
        // restore) are made again as soon as it does.
        let waits = outbox::any_waiting_for_record(&tx)?;
        // The page's full-text entries are written after its records (see
        // SearchEntries). A remade change writes its record's entry at
        // once, so one waiting for the page's entries must go first.
        let mut search = SearchEntries::default();
        // Projections come in the snapshots' order; a snapshot may have none.
        let mut shipped = response.projections.iter().peekable();
        for s in &response.snapshots {
            outbox::cancel_eviction(&tx, &s.record_id)?;
            let adopted = match shipped.next_if(|p| p.record_id == s.record_id) {
                Some(p) => adopt_snapshot(&tx, &s.record_id, &s.bytes, p, &mut search)?,
                None => false,
            };
            if !adopted {
                apply_snapshot_into(&tx, &s.record_id, &s.bytes, &mut search)?;
            }
            if waits {
                std::mem::take(&mut search).write(&tx)?;
                report.rebased += rebase::remake_waiting(&tx, &w, &s.record_id)?;
            }
            report.snapshots += 1;
        }
        // Consecutive changes of one record go in one call.
        for group in response.changes.chunk_by(|a, b| a.record_id == b.record_id) {
            let id = &group[0].record_id;
            let parsed = group
                .iter()
                .map(|c| ParsedChange::parse(id, &c.bytes))
                .collect::<Result<Vec<_>>>()?;
            report.changes += group.len();
            outbox::cancel_eviction(&tx, id)?;
            apply_into(&tx, id, parsed, &mut search)?;
            if waits {
                std::mem::take(&mut search).write(&tx)?;
                report.rebased += rebase::remake_waiting(&tx, &w, id)?;
            }
        }
        // Before evictions, which remove entries of their own.
        search.write(&tx)?;
        report.evicted += settle_evictions(&tx)?;
        for d in &response.devices {
            // A binding that could not be one is ignored, not stored.
            if d.actor.len() <= 64 && !d.device.is_empty() && d.device.len() <= 128 {
                tx.prepare_cached(
                    "INSERT INTO actor_devices (actor, device) VALUES (?1, ?2)
                     ON CONFLICT (actor) DO UPDATE SET device = excluded.device",
                )?
                .execute(rusqlite::params![d.actor, d.device])?;
            }
        }
        meta_set(&tx, "sync.cursor", &cursor)?;
        if let Some(standing) = response.standing {
            let json =
                serde_json::to_string(&standing).map_err(|e| Error::Protocol(e.to_string()))?;
            meta_set(&tx, "sync.standing", &json)?;
        }
        tx.commit()?;
        let config_id = crate::model::CONFIG_ID;
        if response.changes.iter().any(|c| c.record_id == config_id)
            || response.snapshots.iter().any(|s| s.record_id == config_id)
            || response.resets.iter().any(|r| r.record_id == config_id)
        {
            self.reload_config()?;
        }
        self.actor = actor;
        if response.standing.is_some() {
            self.standing = response.standing;
        }
        if response.cursor.view.is_some() {
            self.view = response.cursor.view.map(super::record_view);
        }
        Ok(report)
    }
}

/// Whether any change of `record` is still refused in `refusals` (then the
/// record is rebased though others of its changes wait).
fn refusals_for(tx: &Transaction<'_>, refusals: &Refusals<'_>, record: &str) -> bool {
    refusals.keys().any(|hash| {
        tx.prepare_cached("SELECT 1 FROM outbox WHERE hash = ?1 AND doc_id = ?2")
            .and_then(|mut s| s.exists(rusqlite::params![hash, record]))
            .unwrap_or(true)
    })
}

/// A new Automerge actor for this device's user.
fn rotate_actor(tx: &Transaction<'_>, user: &str) -> Result<Vec<u8>> {
    let actor = uuid::Uuid::new_v4().as_bytes().to_vec();
    tx.prepare_cached("UPDATE actors SET actor = ?2 WHERE user_id = ?1")?
        .execute(rusqlite::params![user, actor])?;
    Ok(actor)
}

/// Evicts each record now, or — while changes of it wait to be sent or
/// are held for review — once they are settled. Returns how many went now.
fn evict_or_defer(tx: &Transaction<'_>, ids: &[String]) -> Result<usize> {
    let mut n = 0;
    for id in ids {
        if outbox::unsettled(tx, id)? {
            outbox::defer_eviction(tx, id)?;
        } else {
            n += usize::from(evict_in(tx, id)?);
        }
    }
    Ok(n)
}

/// Evicts the deferred records whose changes are all settled now.
fn settle_evictions(tx: &Transaction<'_>) -> Result<usize> {
    let mut n = 0;
    for id in outbox::deferred_evictions(tx)? {
        if !outbox::unsettled(tx, &id)? {
            n += usize::from(evict_in(tx, &id)?);
            outbox::cancel_eviction(tx, &id)?;
        }
    }
    Ok(n)
}
