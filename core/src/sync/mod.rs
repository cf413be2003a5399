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

    pub(crate) fn next_request(&self, max_bytes: u64) -> Result<SyncRequest> {
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
        let fresh = cursor.is_fresh();
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
        run_rounds(
            &mut StoreRounds(self),
            transport,
            DEFAULT_MAX_BYTES,
            progress,
        )
    }
}

/// What [`run_rounds`] needs from the store it syncs: a request, and one
/// response applied (returning the round, the outbox still pending and the
/// new cursor's log position).
pub(crate) trait Rounds: Send {
    fn request(&mut self, max_bytes: u64) -> Result<SyncRequest>;
    fn apply(&mut self, response: SyncResponse) -> Result<(RoundReport, usize, u64)>;
}

struct StoreRounds<'a>(&'a mut Store);

impl Rounds for StoreRounds<'_> {
    fn request(&mut self, max_bytes: u64) -> Result<SyncRequest> {
        self.0.next_request(max_bytes)
    }

    fn apply(&mut self, response: SyncResponse) -> Result<(RoundReport, usize, u64)> {
        let round = self.0.apply_response(response)?;
        Ok((round, self.0.outbox_status()?.pending, self.0.cursor()?.seq))
    }
}

/// The one sync loop: rounds until the outbox is sent and nothing more is
/// waiting. While a bootstrap page is being applied the next one is
/// already asked for (see [`read_ahead`]), so the device's writing and the
/// relay's reading and the network overlap instead of taking turns.
pub(crate) fn run_rounds(
    rounds: &mut dyn Rounds,
    transport: &dyn Transport,
    max_bytes: u64,
    progress: &mut dyn FnMut(&SyncProgress),
) -> Result<SyncProgress> {
    let mut state = SyncProgress::default();
    // A response asked for ahead, and the request that asked for it.
    let mut fetched: Option<(Vec<u8>, SyncRequest)> = None;
    while state.round < MAX_ROUNDS {
        let (bytes, sent) = match fetched.take() {
            Some(ahead) => ahead,
            None => {
                let request = rounds.request(max_bytes)?;
                (transport.exchange(&protocol::encode(&request))?, request)
            }
        };
        let response: SyncResponse = protocol::decode(&bytes)?;
        drop(bytes);
        let (round, pending, cursor) = match read_ahead(&sent, &response, max_bytes) {
            None => rounds.apply(response)?,
            Some(next) => {
                let (applied, answer) = std::thread::scope(|s| {
                    let applying = s.spawn(|| rounds.apply(response));
                    let answer = transport.exchange(&protocol::encode(&next));
                    let applied = applying
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                    (applied, answer)
                });
                // A read ahead that failed is asked again the usual way,
                // which reports the failure if it persists.
                fetched = answer.ok().map(|bytes| (bytes, next));
                applied?
            }
        };
        state.round += 1;
        state.total.add(&RoundReport {
            pushed: sent.push.len(),
            ..round.clone()
        });
        state.outbox_pending = pending;
        state.cursor = cursor;
        progress(&state);
        // Made again (a rebase, an edit whose record came back): new
        // changes to send at once.
        let outbox_moved = round.acked + round.rejected + round.rebased > 0;
        if fetched.is_none() && !round.more && (state.outbox_pending == 0 || !outbox_moved) {
            break;
        }
    }
    Ok(state)
}

/// The request that follows `response` when it can be sent before
/// `response` is applied (asking for a page of `max_bytes`): `response` is
/// a bootstrap page with more to come, and not the first, answering a
/// request that pushed nothing. Such a request only reads at the relay, so
/// one whose answer is never applied (the device stops, or applying
/// fails) costs nothing; and applying the page changes nothing it would
/// carry: changes made meanwhile (an app's edit, one remade once its
/// record came back) go in a later round. The first page is applied
/// alone, so that what it holds is listed as soon as it can be.
fn read_ahead(sent: &SyncRequest, response: &SyncResponse, max_bytes: u64) -> Option<SyncRequest> {
    let quiet = sent.push.is_empty()
        && sent.cursor.bootstrap.is_some()
        && response.acks.is_empty()
        && response.rejected.is_empty()
        && response.resets.is_empty()
        && !response.restored;
    (quiet && response.more && response.cursor.bootstrap.is_some()).then(|| SyncRequest {
        version: sent.version,
        device_id: sent.device_id.clone(),
        cursor: response.cursor.clone(),
        push: Vec::new(),
        max_bytes,
        projections: sent.projections,
    })
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

    /// A relay serving one territory's bootstrap in pages of three records,
    /// noting every request; exchanges numbered in `fail` fail once.
    struct PagedRelay {
        pages: Vec<Vec<RecordBytes>>,
        asked: std::sync::Mutex<Vec<(Option<String>, usize)>>,
        fail: std::sync::Mutex<Vec<usize>>,
    }

    /// Where the bootstrap continues from after the last page.
    const START_SEQ: u64 = 7;

    impl PagedRelay {
        fn new(records: usize, fail: &[usize]) -> (tempfile::TempDir, PagedRelay) {
            let dir = tempfile::tempdir().unwrap();
            let mut source = Store::open(dir.path().join("source.db"), "bob").unwrap();
            let mut ids: Vec<String> = (0..records)
                .map(|i| {
                    let name = format!("Account {i}");
                    source
                        .create(
                            crate::Kind::Account,
                            crate::fields([("name", name.as_str()), ("territory", "n")]),
                        )
                        .unwrap()
                        .id
                })
                .collect();
            ids.sort();
            let pages = ids
                .chunks(3)
                .map(|page| {
                    page.iter()
                        .map(|id| RecordBytes {
                            record_id: id.clone(),
                            bytes: source.snapshot(id).unwrap(),
                        })
                        .collect()
                })
                .collect();
            let relay = PagedRelay {
                pages,
                asked: Default::default(),
                fail: std::sync::Mutex::new(fail.to_vec()),
            };
            (dir, relay)
        }

        fn asked(&self) -> Vec<(Option<String>, usize)> {
            self.asked.lock().unwrap().clone()
        }
    }

    impl Transport for PagedRelay {
        fn exchange(&self, request: &[u8]) -> Result<Vec<u8>> {
            let request: SyncRequest = protocol::decode(request)?;
            let after = request
                .cursor
                .bootstrap
                .as_ref()
                .map(|b| b.after_id.clone());
            let n = {
                let mut asked = self.asked.lock().unwrap();
                asked.push((after.clone(), request.push.len()));
                asked.len() - 1
            };
            let mut fail = self.fail.lock().unwrap();
            if let Some(i) = fail.iter().position(|&f| f == n) {
                fail.remove(i);
                return Err(Error::Transport {
                    status: None,
                    message: format!("exchange {n} failed"),
                });
            }
            let index = match (&after, request.cursor.seq) {
                (None, 0) => 0,
                (None, _) => self.pages.len(),
                (Some(after), _) => self
                    .pages
                    .iter()
                    .position(|p| p[0].record_id > *after)
                    .unwrap_or(self.pages.len()),
            };
            let page = self.pages.get(index).cloned().unwrap_or_default();
            let more = index + 1 < self.pages.len();
            let cursor = match page.last() {
                Some(last) if more => Cursor {
                    bootstrap: Some(protocol::Bootstrap {
                        territory: "n".into(),
                        after_id: last.record_id.clone(),
                        start_seq: START_SEQ,
                        only: None,
                    }),
                    ..Cursor::default()
                },
                _ => Cursor {
                    seq: START_SEQ,
                    ..Cursor::default()
                },
            };
            Ok(protocol::encode(&SyncResponse {
                version: PROTOCOL_VERSION,
                snapshots: page,
                cursor,
                more,
                ..SyncResponse::default()
            }))
        }
    }

    fn count(store: &Store) -> usize {
        let query = crate::ListQuery {
            limit: 100,
            ..Default::default()
        };
        store.list(&query).unwrap().total
    }

    #[test]
    fn bootstrap_pages_after_the_first_are_asked_for_while_the_last_is_applied() {
        let (dir, relay) = PagedRelay::new(12, &[]);
        let mut device = Store::open(dir.path().join("d.db"), "ann").unwrap();
        let mut seen = Vec::new();
        let done = device
            .sync(&relay, &mut |p| seen.push(p.total.snapshots))
            .unwrap();
        assert_eq!(count(&device), 12);
        assert_eq!(seen, [3, 6, 9, 12], "progress after every page");
        assert_eq!((done.round, done.cursor), (4, START_SEQ));
        // Each page asked once, each from where the one before it ended,
        // though the device had not stored that cursor when it asked.
        let asked = relay.asked();
        let expected: Vec<_> = std::iter::once(None)
            .chain(
                relay.pages[..3]
                    .iter()
                    .map(|p| p[2].record_id.clone())
                    .map(Some),
            )
            .map(|after| (after, 0))
            .collect();
        assert_eq!(asked, expected);
    }

    #[test]
    fn a_page_asked_for_ahead_that_fails_is_asked_again() {
        // Exchange 2 is the first asked ahead (page 3, while page 2 is applied).
        let (dir, relay) = PagedRelay::new(12, &[2]);
        let mut device = Store::open(dir.path().join("d.db"), "ann").unwrap();
        let done = device.sync(&relay, &mut |_| {}).unwrap();
        assert_eq!((count(&device), done.cursor), (12, START_SEQ));
        let asked = relay.asked();
        assert_eq!(asked.len(), 5, "{asked:?}");
        assert_eq!(asked[2], asked[3], "the failed one asked again");
    }

    #[test]
    fn a_failure_that_persists_stops_the_sync_where_the_last_page_left_it() {
        let (dir, relay) = PagedRelay::new(12, &[2, 3]);
        let mut device = Store::open(dir.path().join("d.db"), "ann").unwrap();
        let err = device.sync(&relay, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("exchange 3 failed"), "{err}");
        assert_eq!(count(&device), 6, "pages 1 and 2 applied and kept");
        let after = device.cursor().unwrap().bootstrap.unwrap().after_id;
        assert_eq!(after, relay.pages[1][2].record_id);
        // The next sync goes on from there.
        device.sync(&relay, &mut |_| {}).unwrap();
        assert_eq!(count(&device), 12);
    }

    #[test]
    fn a_request_that_pushes_is_answered_before_the_next_is_made() {
        let (dir, relay) = PagedRelay::new(12, &[]);
        let mut device = Store::open(dir.path().join("d.db"), "ann").unwrap();
        // Into the bootstrap, then a local edit (this relay never
        // acknowledges it, so every later request carries it).
        for _ in 0..2 {
            let response = relay.exchange(&device.sync_request().unwrap()).unwrap();
            device.apply_sync_response(&response).unwrap();
        }
        device
            .create(
                crate::Kind::Account,
                crate::fields([("name", "Mine"), ("territory", "n")]),
            )
            .unwrap();
        device.sync(&relay, &mut |_| {}).unwrap();
        let pushes: Vec<usize> = relay.asked().iter().map(|(_, pushed)| *pushed).collect();
        assert_eq!(
            pushes,
            [0, 0, 1, 1],
            "no request asked ahead of a push's answer"
        );
        assert_eq!(count(&device), 13);
    }

    #[test]
    fn only_a_bootstrap_page_after_the_first_answering_no_push_is_read_ahead() {
        let into = |after: &str| Cursor {
            bootstrap: Some(protocol::Bootstrap {
                territory: "n".into(),
                after_id: after.into(),
                start_seq: START_SEQ,
                only: None,
            }),
            ..Cursor::default()
        };
        let sent = SyncRequest {
            version: PROTOCOL_VERSION,
            device_id: "d".into(),
            cursor: into("a"),
            push: Vec::new(),
            max_bytes: FIRST_PAGE_BYTES,
            projections: true,
        };
        let page = SyncResponse {
            version: PROTOCOL_VERSION,
            cursor: into("b"),
            more: true,
            ..SyncResponse::default()
        };
        let next = read_ahead(&sent, &page, DEFAULT_MAX_BYTES).expect("read ahead");
        assert_eq!(
            (next.cursor, next.max_bytes),
            (page.cursor.clone(), DEFAULT_MAX_BYTES)
        );
        assert_eq!((next.device_id.as_str(), next.push.len()), ("d", 0));

        let first = SyncRequest {
            cursor: Cursor::default(),
            ..sent.clone()
        };
        let pushing = SyncRequest {
            push: vec![RecordBytes {
                record_id: "r".into(),
                bytes: vec![1],
            }],
            ..sent.clone()
        };
        let last = SyncResponse {
            more: false,
            cursor: Cursor {
                seq: START_SEQ,
                ..Cursor::default()
            },
            ..page.clone()
        };
        let restored = SyncResponse {
            restored: true,
            ..page.clone()
        };
        for (why, sent, response) in [
            ("the first page", &first, &page),
            ("a push", &pushing, &page),
            ("the last page", &sent, &last),
            ("a restored relay", &sent, &restored),
        ] {
            assert!(
                read_ahead(sent, response, DEFAULT_MAX_BYTES).is_none(),
                "{why}"
            );
        }
    }
}
