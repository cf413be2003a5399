//! What a device lacks, one page at a time: the paging algorithm every relay
//! store shares. A store only answers the four questions of [`LogSource`].
//!
//! A fresh device (cursor 0) bootstraps from compacted documents, territory
//! by territory in id order, leaving out records whose every change came
//! from that device; then it reads the log from where the bootstrap began.
//! Log reading skips the device's own changes, sends a whole document when a
//! record enters the user's territories and an eviction when it leaves them.

use std::collections::BTreeSet;

use fieldcrm_core::protocol::{Bootstrap, Cursor, Projection, RecordBytes};

use super::access::{self, Delivery, Scope};
use super::{PullPage, Result, User};

/// Log entries read per query.
const LOG_BATCH: usize = 1000;
/// Record ids read per bootstrap query.
const BOOTSTRAP_BATCH: usize = 500;

/// One entry of the relay's change log.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub seq: u64,
    pub record_id: String,
    /// The record's territory after the change.
    pub territory: Option<String>,
    /// Set when the change moved the record: its territory before.
    pub prev_territory: Option<String>,
    pub device: String,
    /// The user who pushed it.
    pub user: String,
    pub bytes: Vec<u8>,
}

/// What the paging needs from a store, read in one consistent view.
pub trait LogSource {
    /// The newest sequence number in the log (0 when empty).
    fn head(&mut self) -> Result<u64>;
    /// Up to `limit` entries after `seq`, in order, whose territory or
    /// previous territory is in `scope`.
    fn entries_after(&mut self, scope: &Scope, seq: u64, limit: usize) -> Result<Vec<LogEntry>>;
    /// Up to `limit` records after `after_id`, in id order, of `territory`
    /// ("": every territory), each with its compacted document and its
    /// projection (read in the same view); with `not_only_from` set, only
    /// records holding a change from a device other than that one.
    fn bootstrap_batch(
        &mut self,
        territory: &str,
        after_id: &str,
        not_only_from: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(RecordBytes, Projection)>>;
    /// The record's compacted document.
    fn snapshot(&mut self, id: &str) -> Result<Vec<u8>>;
    /// The actors, as (actor hex, device id), of the devices in `pushers`
    /// (user, device) and of every device that pushed to `records`.
    fn actor_devices(
        &mut self,
        records: &[String],
        pushers: &BTreeSet<(String, String)>,
    ) -> Result<Vec<(String, String)>>;
}

/// What a device asks of a page.
#[derive(Debug, Clone, Copy)]
pub struct PageSize {
    /// At most this many bytes of documents, changes and projections (but
    /// at least one item).
    pub max_bytes: u64,
    /// Send bootstrap snapshots' projections.
    pub projections: bool,
}

/// The next page for `device` after `cursor`.
pub fn pull(
    source: &mut dyn LogSource,
    user: &User,
    device: &str,
    cursor: &Cursor,
    size: PageSize,
) -> Result<PullPage> {
    let head = source.head()?;
    let max_bytes = size.max_bytes;
    let mut pushers = BTreeSet::new();
    let mut page = match bootstrap_state(cursor, head) {
        Some(boot) => bootstrap_page(source, user, device, boot, head, size)?,
        None => log_page(
            source,
            user,
            device,
            cursor.seq,
            head,
            max_bytes,
            &mut pushers,
        )?,
    };
    // Which device made each change the page brings, for the device's
    // history: a change's pusher is in its log entry; a snapshot holds the
    // changes of every device that pushed to its record.
    let mut records: Vec<String> = page.snapshots.iter().map(|r| r.record_id.clone()).collect();
    records.sort_unstable();
    records.dedup();
    if !records.is_empty() || !pushers.is_empty() {
        page.devices = source.actor_devices(&records, &pushers)?;
    }
    Ok(page)
}

/// A fresh device (cursor 0) bootstraps from compacted documents.
fn bootstrap_state(cursor: &Cursor, head: u64) -> Option<Bootstrap> {
    match &cursor.bootstrap {
        Some(b) => Some(b.clone()),
        None if cursor.seq == 0 && head > 0 => Some(Bootstrap {
            territory: String::new(),
            after_id: String::new(),
            start_seq: head,
            only: None,
        }),
        None => None,
    }
}

fn bootstrap_page(
    source: &mut dyn LogSource,
    user: &User,
    device: &str,
    boot: Bootstrap,
    head: u64,
    size: PageSize,
) -> Result<PullPage> {
    let mut page = PullPage::default();
    let mut bytes = 0u64;
    // One ordered range scan per territory, so each page costs its own
    // size, not the size of the store. "" stands for "every territory".
    let mut territories = match &boot.only {
        Some(only) => {
            let mut t = only.clone();
            t.sort();
            t
        }
        None => access::bootstrap_territories(user),
    };
    territories.retain(|t| *t >= boot.territory);
    // A first bootstrap leaves out what the device made itself (it has it,
    // and has never evicted anything); any later one sends everything.
    let not_only_from = boot.only.is_none().then_some(device);
    for territory in territories {
        let mut after = if territory == boot.territory {
            boot.after_id.clone()
        } else {
            String::new()
        };
        loop {
            let batch =
                source.bootstrap_batch(&territory, &after, not_only_from, BOOTSTRAP_BATCH)?;
            if batch.is_empty() {
                break;
            }
            for (snapshot, projection) in batch {
                let len = snapshot.bytes.len()
                    + if size.projections {
                        projection.record.len()
                            + projection.stage_history.as_ref().map_or(0, String::len)
                    } else {
                        0
                    };
                if bytes > 0 && bytes + len as u64 > size.max_bytes {
                    page.cursor = Cursor {
                        bootstrap: Some(Bootstrap {
                            territory,
                            after_id: after,
                            start_seq: boot.start_seq,
                            only: boot.only.clone(),
                        }),
                        ..Cursor::default()
                    };
                    page.more = true;
                    return Ok(page);
                }
                bytes += len as u64;
                after = snapshot.record_id.clone();
                page.snapshots.push(snapshot);
                if size.projections {
                    page.projections.push(projection);
                }
            }
        }
    }
    // Done: continue from the log position the bootstrap started at.
    page.cursor = Cursor {
        seq: boot.start_seq,
        ..Cursor::default()
    };
    page.more = head > boot.start_seq;
    Ok(page)
}

fn log_page(
    source: &mut dyn LogSource,
    user: &User,
    device: &str,
    seq: u64,
    head: u64,
    max_bytes: u64,
    pushers: &mut BTreeSet<(String, String)>,
) -> Result<PullPage> {
    let mut page = PullPage {
        cursor: Cursor {
            seq,
            ..Cursor::default()
        },
        ..Default::default()
    };
    let mut bytes = 0u64;
    let mut snapshotted: Vec<String> = Vec::new();
    let mut last = seq;
    let scope = access::scope(user);
    loop {
        let entries = source.entries_after(&scope, last, LOG_BATCH)?;
        if entries.is_empty() {
            // Nothing visible up to head: skip past invisible entries too.
            page.cursor.seq = head.max(page.cursor.seq);
            page.more = false;
            return Ok(page);
        }
        for entry in entries {
            last = entry.seq;
            let item_bytes = entry.bytes.len() as u64;
            if bytes > 0 && bytes + item_bytes > max_bytes {
                page.more = true;
                return Ok(page);
            }
            let delivery = access::delivery(
                &scope,
                entry.territory.as_deref(),
                entry.prev_territory.as_deref(),
            );
            match delivery {
                Delivery::Evict => {
                    // What the page sent of it before it left is moot now;
                    // the device applies evictions before snapshots.
                    page.snapshots.retain(|s| s.record_id != entry.record_id);
                    page.changes.retain(|c| c.record_id != entry.record_id);
                    snapshotted.retain(|id| *id != entry.record_id);
                    page.evict.push(entry.record_id);
                }
                // It entered the user's view: the device lacks its history.
                Delivery::Snapshot if !snapshotted.contains(&entry.record_id) => {
                    page.evict.retain(|id| *id != entry.record_id);
                    let snapshot = source.snapshot(&entry.record_id)?;
                    bytes += snapshot.len() as u64;
                    snapshotted.push(entry.record_id.clone());
                    page.snapshots.push(RecordBytes {
                        record_id: entry.record_id,
                        bytes: snapshot,
                    });
                }
                Delivery::Change if entry.device != device => {
                    bytes += item_bytes;
                    // A page's changes come from a handful of devices.
                    if !pushers
                        .iter()
                        .any(|(u, d)| *u == entry.user && *d == entry.device)
                    {
                        pushers.insert((entry.user, entry.device));
                    }
                    page.changes.push(RecordBytes {
                        record_id: entry.record_id,
                        bytes: entry.bytes,
                    });
                }
                _ => {}
            }
            page.cursor.seq = entry.seq;
        }
    }
}
