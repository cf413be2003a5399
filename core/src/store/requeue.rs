//! A relay restored from a backup may lack changes it acknowledged before
//! (docs/protocol.md, "Restored relays"). The device then queues again
//! every change its user made on this device — records in the order they
//! came to this device, each record's changes in causal order — ahead of
//! what waits in the outbox. The relay acknowledges those it still has and
//! stores the rest, so nothing the device ever had acknowledged is lost.

use std::collections::HashSet;

use rusqlite::{params, Transaction};

use super::{documents, outbox};
use crate::error::Result;

/// Records read per query.
const BATCH: i64 = 500;

/// Queues the user's own changes again, first; returns how many were not
/// already waiting.
pub(crate) fn requeue_own_changes(tx: &Transaction<'_>, user: &str, device: &str) -> Result<usize> {
    let waiting = outbox::take_waiting(tx)?;
    // The user's changes made on their other devices are those devices' to
    // send: the relay binds an actor to the device that first pushes it.
    let others: HashSet<String> = tx
        .prepare("SELECT actor FROM actor_devices WHERE device <> ?1")?
        .query_map([device], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut after = 0i64;
    loop {
        let ids: Vec<(i64, String)> = tx
            .prepare_cached(
                "SELECT rowid, id FROM records WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
            )?
            .query_map(params![after, BATCH], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let Some((last, _)) = ids.last() else { break };
        after = *last;
        for (_, id) in ids {
            let Some(mut stored) = documents::load(tx, &id)? else {
                continue;
            };
            for (hash, bytes) in stored.doc().changes_made_by(user, |a| !others.contains(a)) {
                outbox::push(tx, &id, &hash, &bytes)?;
            }
        }
    }
    for w in &waiting {
        outbox::put_back(tx, w)?;
    }
    let (to_send, held, _) = outbox::count(tx)?;
    Ok((to_send + held).saturating_sub(waiting.len()))
}
