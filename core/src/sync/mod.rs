//! The device side of sync protocol v1.
//!
//! Two ways to use it:
//! - [`Store::sync`] with a [`Transport`] (the built-in [`HttpTransport`] or
//!   the host app's own) runs rounds until nothing is left;
//! - [`Store::sync_request`] / [`Store::apply_sync_response`] produce and
//!   consume the bytes, for hosts that carry them themselves.
//!
//! Each response is applied in ONE transaction (acks, rejections, received
//! changes, evictions and the new cursor), so an interrupted sync resumes
//! where the last applied round left it; a request whose response was lost
//! is simply sent again (the relay treats repeats idempotently).

pub(crate) mod background;
mod blobs;
#[cfg(feature = "http")]
mod http;

#[cfg(feature = "http")]
pub use http::HttpTransport;

pub use background::SyncState;
pub use blobs::{BlobDirection, BlobProgress, BlobUploads, UPLOAD_CHUNK};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::protocol::{self, Cursor, RecordBytes, SyncRequest, SyncResponse, PROTOCOL_VERSION};
use crate::store::Store;

/// Outbox bytes sent per request.
const PUSH_BUDGET: usize = 1 << 20;
/// Response size a device asks for.
pub const DEFAULT_MAX_BYTES: u64 = 4 << 20;
/// The most a fresh device asks for in its first response: about 1,000
/// records, which it can commit (and an app list) in well under 0.1 s,
/// while the rest of the bootstrap comes in full-sized pages.
pub const FIRST_PAGE_BYTES: u64 = 1 << 20;
/// A safety stop: no sync takes this many rounds.
pub(crate) const MAX_ROUNDS: usize = 100_000;

/// Carries one request to the relay and returns its response.
pub trait Transport {
    fn exchange(&self, request: &[u8]) -> Result<Vec<u8>>;

    /// Blocks until the relay says its log passed `cursor` with changes
    /// the user may see (`Ok(true)`), or `timeout` passes (`Ok(false)`).
    /// Transports without live push just wait out the timeout, and
    /// background sync then polls.
    fn wait_for_change(&self, cursor: u64, timeout: std::time::Duration) -> Result<bool> {
        let _ = cursor;
        std::thread::sleep(timeout);
        Ok(false)
    }

    /// How far blob `sha256` has come at the relay (`GET
    /// /v1/blobs/{sha256}/status`). `Ok(None)`: this transport carries no
    /// blobs (records still sync; attachments wait on the device).
    fn blob_status(&self, sha256: &str) -> Result<Option<protocol::BlobStatus>> {
        let _ = sha256;
        Ok(None)
    }

    /// Sends `bytes` at `offset` of blob `sha256` (`PUT /v1/blobs/{sha256}`).
    fn put_blob_chunk(
        &self,
        sha256: &str,
        offset: u64,
        bytes: &[u8],
    ) -> Result<protocol::BlobStatus> {
        let _ = (sha256, offset, bytes);
        Err(Error::Protocol("this transport carries no blobs".into()))
    }

    /// `len` bytes of blob `sha256` from `from` on (`GET
    /// /v1/blobs/{sha256}` with `Range: bytes=from-(from+len-1)`).
    fn get_blob_range(&self, sha256: &str, from: u64, len: u64) -> Result<Vec<u8>> {
        let _ = (sha256, from, len);
        Err(Error::Protocol("this transport carries no blobs".into()))
    }
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundReport {
    pub pushed: usize,
    pub acked: usize,
    /// Changes the relay refused that stay refused (kept, see
    /// [`Store::refused_changes`]); changes refused only for building on
    /// one of them are made again and not counted.
    pub rejected: usize,
    /// Changes the relay holds for an office user's review.
    pub held: usize,
    /// Records reset to the relay's copy, with later edits re-made on top,
    /// and edits made again once the record they waited for came back.
    pub rebased: usize,
    pub snapshots: usize,
    pub changes: usize,
    pub evicted: usize,
    /// Local changes queued again because the relay was restored from a
    /// backup (it acknowledges those it still has).
    pub requeued: usize,
    pub more: bool,
}

impl RoundReport {
    /// Adds another round's counts (`more` is the later round's).
    pub fn add(&mut self, other: &RoundReport) {
        self.pushed += other.pushed;
        self.acked += other.acked;
        self.rejected += other.rejected;
        self.held += other.held;
        self.rebased += other.rebased;
        self.snapshots += other.snapshots;
        self.changes += other.changes;
        self.evicted += other.evicted;
        self.requeued += other.requeued;
        self.more = other.more;
    }
}

/// Progress after each round of a [`Store::sync`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncProgress {
    pub round: usize,
    /// Totals so far.
    pub total: RoundReport,
    /// Local changes still waiting to be sent.
    pub outbox_pending: usize,
    pub cursor: u64,
}

impl Store {
    /// The device's position in the relay's log.
    pub fn cursor(&self) -> Result<Cursor> {
        match self.sync_state("cursor")? {
            None => Ok(Cursor::default()),
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| Error::Protocol(format!("stored sync cursor is unreadable: {e}"))),
        }
    }

    /// The next request: the oldest unsent outbox changes (up to 1 MiB) and
    /// the cursor.
    pub fn sync_request(&self) -> Result<Vec<u8>> {
        Ok(protocol::encode(&self.next_request(DEFAULT_MAX_BYTES)?))
    }

    /// [`Store::sync_request`] asking for pages of at most `max_bytes`:
    /// smaller pages hold the store for less time each.
    pub fn sync_request_paged(&self, max_bytes: u64) -> Result<Vec<u8>> {
        Ok(protocol::encode(&self.next_request(max_bytes)?))
    }

    fn next_request(&self, max_bytes: u64) -> Result<SyncRequest> {
        let mut push = Vec::new();
        let mut bytes = 0;
        let mut after = 0;
        'outer: loop {
            let entries = self.outbox(after, 500, false)?;
            let Some(last) = entries.last() else { break };
            after = last.seq;
            for e in entries {
                if !push.is_empty() && bytes + e.bytes.len() > PUSH_BUDGET {
                    break 'outer;
                }
                bytes += e.bytes.len();
                push.push(RecordBytes {
                    record_id: e.record_id,
                    bytes: e.bytes,
                });
            }
        }
        let cursor = self.cursor()?;
        let fresh = cursor.seq == 0 && cursor.bootstrap.is_none();
        Ok(SyncRequest {
            version: PROTOCOL_VERSION,
            device_id: self.device_id().to_string(),
            cursor,
            push,
            max_bytes: if fresh {
                max_bytes.min(FIRST_PAGE_BYTES)
            } else {
                max_bytes
            },
            projections: true,
        })
    }

    /// Applies a relay response in one transaction: acknowledgements,
    /// held and refused changes (a record with a refused change is reset to
    /// the relay's copy and its later edits re-made on top), evictions,
    /// snapshots, changes and the new cursor.
    pub fn apply_sync_response(&mut self, response: &[u8]) -> Result<RoundReport> {
        let response: SyncResponse = protocol::decode(response)?;
        self.apply_response(response)
    }

    /// Syncs until the outbox is sent and nothing more is waiting, calling
    /// `progress` after every round.
    pub fn sync(
        &mut self,
        transport: &dyn Transport,
        progress: &mut dyn FnMut(&SyncProgress),
    ) -> Result<SyncProgress> {
        let mut state = SyncProgress::default();
        while state.round < MAX_ROUNDS {
            let request = self.next_request(DEFAULT_MAX_BYTES)?;
            let pushed = request.push.len();
            let response = transport.exchange(&protocol::encode(&request))?;
            let round = self.apply_sync_response(&response)?;
            state.round += 1;
            state.total.add(&RoundReport {
                pushed,
                ..round.clone()
            });
            state.outbox_pending = self.outbox_status()?.pending;
            state.cursor = self.cursor()?.seq;
            progress(&state);
            // Made again (a rebase, an edit whose record came back): new
            // changes to send at once.
            let outbox_moved = round.acked + round.rejected + round.rebased > 0;
            if !round.more && (state.outbox_pending == 0 || !outbox_moved) {
                break;
            }
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(store: &Store) -> u64 {
        let request: SyncRequest = protocol::decode(&store.sync_request().unwrap()).unwrap();
        request.max_bytes
    }

    #[test]
    fn a_fresh_device_asks_for_a_small_first_page_then_full_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("d.db"), "ann").unwrap();
        assert_eq!(asked(&store), FIRST_PAGE_BYTES);
        let bootstrapping = Cursor {
            bootstrap: Some(protocol::Bootstrap {
                territory: "north".into(),
                after_id: "a".into(),
                start_seq: 9,
                only: None,
            }),
            ..Cursor::default()
        };
        store
            .set_sync_state("cursor", &serde_json::to_string(&bootstrapping).unwrap())
            .unwrap();
        assert_eq!(asked(&store), DEFAULT_MAX_BYTES);
        let caught_up = Cursor {
            seq: 9,
            ..Cursor::default()
        };
        store
            .set_sync_state("cursor", &serde_json::to_string(&caught_up).unwrap())
            .unwrap();
        assert_eq!(asked(&store), DEFAULT_MAX_BYTES);
    }
}
