//! Background sync for a [`SharedStore`]: one thread that syncs, one that
//! listens to the relay's live stream and wakes it.
//!
//! The sync thread syncs at start, when woken (a live event; a local edit,
//! after a short pause that gathers a burst of edits into one sync), and
//! every [`POLL`] otherwise. A failure is reported and retried after a
//! back-off that doubles up to [`MAX_BACKOFF`], with ±20% jitter so that a
//! relay coming back is not hit by every device at the same instant. A
//! sign-in the relay no longer accepts stops the loop (retrying cannot
//! help) and says so; nothing on the device is touched.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Transport;
use crate::error::Error;
use crate::shared::{SharedStore, SyncObserver};

/// Pages asked for in the background: small enough that each applies in
/// tens of milliseconds, so local edits never wait long for the writer.
pub const BACKGROUND_PAGE_BYTES: u64 = 256 << 10;
/// Gathers a burst of local edits into one sync.
pub const DEBOUNCE: Duration = Duration::from_millis(250);
/// How often to sync when nothing happens (and transports without live push poll).
pub const POLL: Duration = Duration::from_secs(30);
/// Longest wait between retries after failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long one wait on the live stream lasts before it is opened again.
const LISTEN: Duration = Duration::from_secs(25);

/// How background sync stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SyncState {
    /// Up to date with the relay; `pending` local changes wait (made since).
    Idle {
        pending: usize,
    },
    Syncing,
    /// The relay cannot be reached, or answered with an error; retried in
    /// `retry_in_ms`.
    Offline {
        reason: String,
        retry_in_ms: u64,
    },
    /// The relay no longer accepts the sign-in; nothing was deleted. Sign
    /// in again and start sync again.
    SignedOut {
        reason: String,
    },
    Stopped,
}

#[derive(Default)]
struct Wake {
    edit: bool,
    event: bool,
}

struct Control {
    stop: AtomicBool,
    wake: Mutex<Wake>,
    signal: Condvar,
}

/// A running background sync.
pub(crate) struct Background {
    control: Arc<Control>,
    sync: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    pub(crate) fn start(
        store: Weak<SharedStore>,
        transport: Arc<dyn Transport + Send + Sync>,
        observer: Arc<dyn SyncObserver>,
    ) -> Background {
        let control = Arc::new(Control {
            stop: AtomicBool::new(false),
            wake: Mutex::new(Wake::default()),
            signal: Condvar::new(),
        });
        {
            let (control, store, transport) = (control.clone(), store.clone(), transport.clone());
            std::thread::Builder::new()
                .name("fieldcrm-listen".into())
                .spawn(move || listen(&control, &store, &*transport))
                .expect("spawning the live-stream thread");
        }
        let sync = {
            let control = control.clone();
            std::thread::Builder::new()
                .name("fieldcrm-sync".into())
                .spawn(move || run(&control, &store, &*transport, &*observer))
                .expect("spawning the sync thread")
        };
        Background {
            control,
            sync: Some(sync),
        }
    }

    /// A local edit was made: sync shortly.
    pub(crate) fn local_edit(&self) {
        self.control.poke(|w| w.edit = true);
    }

    /// Stops the loop and waits for the sync thread to end (a round under
    /// way finishes first), so no observer or listener call comes after.
    pub(crate) fn stop(mut self) {
        self.control.stop.store(true, Ordering::SeqCst);
        self.control.signal.notify_all();
        if let Some(sync) = self.sync.take() {
            if sync.thread().id() != std::thread::current().id() {
                let _ = sync.join();
            }
        }
    }
}

impl Control {
    fn poke(&self, f: impl FnOnce(&mut Wake)) {
        f(&mut self.wake.lock().unwrap_or_else(|e| e.into_inner()));
        self.signal.notify_all();
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Waits up to `timeout` for a wake-up; returns what woke it.
    fn wait(&self, timeout: Duration) -> Wake {
        let guard = self.wake.lock().unwrap_or_else(|e| e.into_inner());
        let (mut guard, _) = self
            .signal
            .wait_timeout_while(guard, timeout, |w| !(w.edit || w.event || self.stopped()))
            .unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *guard)
    }
}

/// Keeps a live stream open and wakes the sync thread on each event.
fn listen(control: &Control, store: &Weak<SharedStore>, transport: &dyn Transport) {
    let mut failures = 0u32;
    while !control.stopped() {
        let Some(cursor) = store.upgrade().and_then(|s| s.cursor_seq().ok()) else {
            return;
        };
        match transport.wait_for_change(cursor, LISTEN) {
            Ok(true) => {
                failures = 0;
                control.poke(|w| w.event = true);
            }
            Ok(false) => failures = 0,
            Err(_) => {
                // The sync thread reports failures; here just do not spin.
                failures += 1;
                std::thread::sleep(backoff(failures));
            }
        }
    }
}

fn run(
    control: &Control,
    store: &Weak<SharedStore>,
    transport: &dyn Transport,
    observer: &dyn SyncObserver,
) {
    let mut failures = 0u32;
    let mut next_wait = Duration::ZERO;
    loop {
        let woke = control.wait(next_wait);
        if control.stopped() {
            break;
        }
        if woke.edit && !woke.event {
            // Let a burst of edits gather; whatever comes in meanwhile rides along.
            let until = Instant::now() + DEBOUNCE;
            while Instant::now() < until && !control.stopped() {
                control.wait(until.saturating_duration_since(Instant::now()));
            }
        }
        let Some(shared) = store.upgrade() else { break };
        observer.state(&SyncState::Syncing);
        let result = shared
            .sync_paged(transport, BACKGROUND_PAGE_BYTES, &mut |_| {})
            .and_then(|done| {
                // Files after records: a record never waits for a file.
                let heard = &mut |p: &super::BlobProgress| observer.blob(p);
                shared.upload_blobs(transport, heard)?;
                let limit = shared.read(|s| s.blob_cache_limit())?;
                shared.prefetch_blobs(transport, limit, heard)?;
                Ok(done)
            });
        match result {
            Ok(done) => {
                failures = 0;
                next_wait = POLL;
                observer.state(&SyncState::Idle {
                    pending: done.outbox_pending,
                });
            }
            Err(Error::Transport {
                status: Some(401),
                message,
            }) => {
                observer.state(&SyncState::SignedOut { reason: message });
                break;
            }
            Err(Error::Closed) => break,
            Err(e) => {
                failures += 1;
                next_wait = backoff(failures);
                observer.state(&SyncState::Offline {
                    reason: e.to_string(),
                    retry_in_ms: next_wait.as_millis() as u64,
                });
            }
        }
    }
    observer.state(&SyncState::Stopped);
}

/// 1 s, 2 s, 4 s ... up to [`MAX_BACKOFF`], each ±20%.
fn backoff(failures: u32) -> Duration {
    let base = Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(MAX_BACKOFF);
    let jitter = 0.8 + 0.4 * fraction();
    base.mul_f64(jitter)
}

/// A number in [0, 1) that differs between devices and calls.
fn fraction() -> f64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    f64::from(u16::from_le_bytes([bytes[0], bytes[1]])) / 65_536.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_with_jitter() {
        for (failures, secs) in [(1, 1.0), (2, 2.0), (3, 4.0), (7, 60.0), (30, 60.0)] {
            let d = backoff(failures).as_secs_f64();
            assert!(d >= secs * 0.8 && d <= secs * 1.2, "{failures}: {d}");
        }
    }
}
