//! A store an app shares between its threads: the UI reads, edits are
//! made, and sync runs in the background, at the same time.
//!
//! - Reads go to a connection of their own (SQLite's WAL lets them read
//!   the last committed state while a write is under way), so they never
//!   wait for a sync page being applied.
//! - Writes are serialised on the writer connection. After each one —
//!   a local action, or one applied sync page — the change listeners are
//!   told which records changed, *after* the lock is released, so a
//!   listener may read the store at once.
//! - Sync (foreground [`SharedStore::sync`] or the background loop of
//!   [`SharedStore::start_sync`]) holds the writer only to build a request
//!   and to apply a response, never across the network.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::protocol::{SyncRequest, SyncResponse};
use crate::store::{RecordChange, Store, StoreOptions};
use crate::sync::background::{Background, SyncState};
use crate::sync::{RoundReport, Rounds, SyncProgress, Transport, DEFAULT_MAX_BYTES};

/// Told, after each write, which records it changed.
pub trait ChangeListener: Send + Sync {
    fn changed(&self, changes: &[RecordChange]);
}

/// Told how background sync stands.
pub trait SyncObserver: Send + Sync {
    fn state(&self, state: &SyncState);
    /// A chunk of an attachment's upload or download moved (after the
    /// records of each sync).
    fn blob(&self, progress: &crate::sync::BlobProgress) {
        let _ = progress;
    }
}

/// A store shared by an app's threads (see the module docs).
pub struct SharedStore {
    writer: Mutex<Option<Store>>,
    reader: Mutex<Option<Store>>,
    listeners: Mutex<Vec<(u64, Arc<dyn ChangeListener>)>>,
    next_listener: AtomicU64,
    background: Mutex<Option<Background>>,
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic inside a call cannot leave SQLite half-written (its
    // transaction rolls back), so a poisoned lock still guards a sound store.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn closed() -> Error {
    Error::Closed
}

/// Sync rounds of a shared store: the request is built and the response
/// applied under the writer, the exchange runs without it.
struct SharedRounds<'a>(&'a SharedStore);

impl Rounds for SharedRounds<'_> {
    fn request(&mut self, max_bytes: u64) -> Result<SyncRequest> {
        let guard = lock(&self.0.writer);
        guard.as_ref().ok_or_else(closed)?.next_request(max_bytes)
    }

    fn apply(&mut self, response: SyncResponse) -> Result<(RoundReport, usize, u64)> {
        let (applied, _) = self.0.write_quietly(|s| {
            let round = s.apply_response(response)?;
            Ok((round, s.outbox_status()?.pending, s.cursor()?.seq))
        })?;
        applied
    }
}

impl SharedStore {
    /// Opens (creating if needed) the store at `path` for `user`.
    pub fn open(path: &str, user: &str) -> Result<Arc<SharedStore>> {
        SharedStore::open_with(path, user, StoreOptions::default())
    }

    pub fn open_with(path: &str, user: &str, options: StoreOptions) -> Result<Arc<SharedStore>> {
        let mut writer = Store::open_with(path, user, options.clone())?;
        writer.track_changes()?;
        let reader = Store::open_with(path, user, options)?;
        Ok(Arc::new(SharedStore {
            writer: Mutex::new(Some(writer)),
            reader: Mutex::new(Some(reader)),
            listeners: Mutex::new(Vec::new()),
            next_listener: AtomicU64::new(1),
            background: Mutex::new(None),
        }))
    }

    /// Runs a read on the reading connection (never behind a write).
    pub fn read<R>(&self, f: impl FnOnce(&Store) -> Result<R>) -> Result<R> {
        let guard = lock(&self.reader);
        f(guard.as_ref().ok_or_else(closed)?)
    }

    /// Runs a write, then tells the listeners what it changed and wakes
    /// background sync.
    pub fn write<R>(&self, f: impl FnOnce(&mut Store) -> Result<R>) -> Result<R> {
        let (result, changes) = self.write_quietly(f)?;
        if !changes.is_empty() {
            if let Some(b) = lock(&self.background).as_ref() {
                b.local_edit();
            }
        }
        result
    }

    /// A write of the blob store (no record changes, nothing to announce).
    pub(crate) fn write_blobs<R>(&self, f: impl FnOnce(&mut Store) -> Result<R>) -> Result<R> {
        self.write_quietly(f)?.0
    }

    /// A write whose changes are announced but that does not wake sync
    /// (sync's own writes). The outer `Result` fails only when closed.
    fn write_quietly<R>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<R>,
    ) -> Result<(Result<R>, Vec<RecordChange>)> {
        let (result, changes) = {
            let mut guard = lock(&self.writer);
            let store = guard.as_mut().ok_or_else(closed)?;
            let result = f(store);
            // A failed call rolled back: it changed nothing, but an earlier
            // transaction of the same call may have committed.
            (result, store.take_changes()?)
        };
        if changes.iter().any(|c| c.id == crate::model::CONFIG_ID) {
            // The reader keeps its own copy of the configuration.
            if let Some(reader) = lock(&self.reader).as_mut() {
                reader.reload_config()?;
            }
        }
        self.announce(&changes);
        Ok((result, changes))
    }

    fn announce(&self, changes: &[RecordChange]) {
        if changes.is_empty() {
            return;
        }
        let listeners: Vec<Arc<dyn ChangeListener>> = lock(&self.listeners)
            .iter()
            .map(|(_, l)| l.clone())
            .collect();
        for l in listeners {
            l.changed(changes);
        }
    }

    /// Registers a listener; returns its id for [`remove_listener`](Self::remove_listener).
    pub fn add_listener(&self, listener: Arc<dyn ChangeListener>) -> u64 {
        let id = self.next_listener.fetch_add(1, Ordering::Relaxed);
        lock(&self.listeners).push((id, listener));
        id
    }

    pub fn remove_listener(&self, id: u64) -> bool {
        let mut listeners = lock(&self.listeners);
        let before = listeners.len();
        listeners.retain(|(i, _)| *i != id);
        listeners.len() != before
    }

    /// Syncs until everything is exchanged, without holding the store across
    /// the network; `progress` after every round.
    pub fn sync(
        &self,
        transport: &dyn Transport,
        progress: &mut dyn FnMut(&SyncProgress),
    ) -> Result<SyncProgress> {
        self.sync_paged(transport, DEFAULT_MAX_BYTES, progress)
    }

    pub(crate) fn sync_paged(
        &self,
        transport: &dyn Transport,
        max_bytes: u64,
        progress: &mut dyn FnMut(&SyncProgress),
    ) -> Result<SyncProgress> {
        crate::sync::run_rounds(&mut SharedRounds(self), transport, max_bytes, progress)
    }

    /// Starts syncing in the background over `transport`: at once, whenever
    /// the relay's live stream says its log advanced, shortly after local
    /// edits, and on a timer; backing off with jitter after failures.
    /// `observer` hears every state. A second call replaces the first loop.
    pub fn start_sync(
        self: &Arc<Self>,
        transport: Arc<dyn Transport + Send + Sync>,
        observer: Arc<dyn SyncObserver>,
    ) {
        let background = Background::start(Arc::downgrade(self), transport, observer);
        let old = lock(&self.background).replace(background);
        if let Some(old) = old {
            old.stop();
        }
    }

    /// Stops background sync; returns once the loop has ended (a round
    /// under way finishes first), so no listener hears anything of it after.
    pub fn stop_sync(&self) {
        let running = lock(&self.background).take();
        if let Some(b) = running {
            b.stop();
        }
    }

    /// Closes both connections; later calls fail with `Closed`. Returns the
    /// writer's store (to delete its files, say).
    pub fn close(&self) -> Option<Store> {
        self.stop_sync();
        lock(&self.reader).take();
        lock(&self.writer).take()
    }

    /// The log position the store has reached (the reader's view).
    pub(crate) fn cursor_seq(&self) -> Result<u64> {
        self.read(|s| Ok(s.cursor()?.seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{fields, Kind};
    use crate::protocol::{self, Cursor, RecordBytes, SyncResponse};

    /// A relay stand-in: answers every request with the same page.
    struct Canned(Vec<u8>);
    impl Transport for Canned {
        fn exchange(&self, _: &[u8]) -> Result<Vec<u8>> {
            Ok(self.0.clone())
        }
    }

    struct Heard(Mutex<Vec<RecordChange>>);
    impl ChangeListener for Heard {
        fn changed(&self, changes: &[RecordChange]) {
            lock(&self.0).extend_from_slice(changes);
        }
    }

    #[test]
    fn listeners_hear_local_edits_and_applied_pages_and_reads_see_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut source = Store::open(dir.path().join("source.db"), "bob").unwrap();
        let made = source
            .create(
                Kind::Account,
                fields([("name", "From afar"), ("territory", "n")]),
            )
            .unwrap();
        let page = protocol::encode(&SyncResponse {
            version: protocol::PROTOCOL_VERSION,
            snapshots: vec![RecordBytes {
                record_id: made.id.clone(),
                bytes: source.snapshot(&made.id).unwrap(),
            }],
            cursor: Cursor {
                seq: 1,
                ..Cursor::default()
            },
            ..SyncResponse::default()
        });

        let app = SharedStore::open(&dir.path().join("app.db").to_string_lossy(), "ann").unwrap();
        let heard = Arc::new(Heard(Mutex::new(Vec::new())));
        let id = app.add_listener(heard.clone());
        let mine = app
            .write(|s| {
                s.create(
                    Kind::Account,
                    fields([("name", "Mine"), ("territory", "n")]),
                )
            })
            .unwrap();
        app.sync(&Canned(page), &mut |_| {}).unwrap();
        let ids: Vec<String> = lock(&heard.0).iter().map(|c| c.id.clone()).collect();
        assert_eq!(ids, [mine.id.clone(), made.id.clone()]);
        assert_eq!(
            app.read(|s| s.get(&made.id)).unwrap().text("name"),
            Some("From afar")
        );
        assert!(app.remove_listener(id));
        app.close();
        assert!(matches!(app.read(|s| s.get(&mine.id)), Err(Error::Closed)));
    }
}
