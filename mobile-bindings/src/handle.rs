//! `CrmStore`, the one object apps hold: a thin shell over
//! `fieldcrm_core::SharedStore`. Every method converts, calls core, converts
//! back.
//!
//! Thread safety: the handle is `Send + Sync`. Reads run on a connection
//! of their own and never wait behind a write or a sync; writes are
//! serialised. Every call blocks (SQLite, and for `sync` the network): call
//! from a background thread / dispatcher, never the UI thread. Sync —
//! foreground `sync` or background `startSync` — holds the store only to
//! build a request and to apply a response, never across the network.
//! Change listeners are called after each write (a local action, or one
//! applied sync page), outside every lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use fieldcrm_core as core;
use fieldcrm_core::HttpTransport;

use crate::error::CrmError;
use crate::types::*;

/// Receives sync progress after every round. Implemented by the app.
#[uniffi::export(foreign)]
pub trait SyncListener: Send + Sync {
    fn on_progress(&self, status: SyncStatus);
}

/// Told which records each write changed (a local action, or one applied
/// sync page): reload what shows them. Implemented by the app; called on
/// the thread that wrote, outside every lock, so it may read the store.
#[uniffi::export(foreign)]
pub trait ChangeListener: Send + Sync {
    fn on_change(&self, changes: Vec<RecordChange>);
}

/// Told how background sync stands. Implemented by the app; called on the
/// sync thread.
#[uniffi::export(foreign)]
pub trait SyncStateListener: Send + Sync {
    fn on_state(&self, state: SyncState);
}

/// Told after every chunk of a file's upload or download — by `sync`,
/// `uploadBlobs`, `fetchBlob` and background sync alike. Implemented by
/// the app (`setBlobListener`); called on the thread moving the file.
#[uniffi::export(foreign)]
pub trait BlobListener: Send + Sync {
    fn on_blob(&self, transfer: BlobTransfer);
}

/// The app's blob listener, shared with background sync.
#[derive(Default, Clone)]
struct Blobs(Arc<Mutex<Option<Arc<dyn BlobListener>>>>);

impl Blobs {
    fn tell(&self, progress: &core::BlobProgress) {
        let listener = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(l) = listener {
            l.on_blob(progress.into());
        }
    }
}

/// Carries one sync request to the relay and returns the response bytes;
/// for apps that use their own HTTP stack. Implemented by the app.
#[uniffi::export(foreign)]
pub trait HostTransport: Send + Sync {
    fn exchange(&self, request: Vec<u8>) -> Result<Vec<u8>, CrmError>;
}

struct HostAdapter(Arc<dyn HostTransport>);

impl core::Transport for HostAdapter {
    fn exchange(&self, request: &[u8]) -> core::Result<Vec<u8>> {
        self.0
            .exchange(request.to_vec())
            .map_err(|e| core::Error::Transport {
                status: None,
                message: e.to_string(),
            })
    }
}

struct Changes(Arc<dyn ChangeListener>);

impl core::ChangeListener for Changes {
    fn changed(&self, changes: &[core::RecordChange]) {
        self.0.on_change(changes.iter().map(Into::into).collect());
    }
}

struct States(Arc<dyn SyncStateListener>, Blobs);

impl core::SyncObserver for States {
    fn state(&self, state: &core::SyncState) {
        self.0.on_state(state.into());
    }

    fn blob(&self, progress: &core::BlobProgress) {
        self.1.tell(progress);
    }
}

#[derive(uniffi::Object)]
pub struct CrmStore {
    shared: Arc<core::SharedStore>,
    transport: Mutex<Option<Arc<HttpTransport>>>,
    blobs: Blobs,
}

impl std::fmt::Debug for CrmStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrmStore").finish_non_exhaustive()
    }
}

impl CrmStore {
    fn read<R>(&self, f: impl FnOnce(&core::Store) -> core::Result<R>) -> Result<R, CrmError> {
        Ok(self.shared.read(f)?)
    }

    fn write<R>(&self, f: impl FnOnce(&mut core::Store) -> core::Result<R>) -> Result<R, CrmError> {
        Ok(self.shared.write(f)?)
    }

    fn transport(&self) -> MutexGuard<'_, Option<Arc<HttpTransport>>> {
        self.transport.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn signed_in(&self) -> Result<Arc<HttpTransport>, CrmError> {
        self.transport()
            .clone()
            .ok_or_else(|| CrmError::NotSignedIn("call login() or restoreSession() first".into()))
    }
}

fn status(p: &core::SyncProgress) -> SyncStatus {
    p.into()
}

#[uniffi::export]
impl CrmStore {
    /// Opens (creating if needed) the store at `path` for the signed-in `user`.
    #[uniffi::constructor]
    pub fn open(path: String, user: String) -> Result<Arc<Self>, CrmError> {
        Ok(Arc::new(CrmStore {
            shared: core::SharedStore::open(&path, &user)?,
            transport: Mutex::new(None),
            blobs: Blobs::default(),
        }))
    }

    /// Closes the store file; later calls fail with `Closed`. (Kotlin's
    /// `close()` / Swift's deinit free the handle itself.)
    pub fn close_store(&self) {
        self.shared.close();
    }

    pub fn device_id(&self) -> Result<String, CrmError> {
        self.read(|s| Ok(s.device_id().to_string()))
    }

    pub fn create(
        &self,
        kind: RecordKind,
        fields: HashMap<String, FieldValue>,
    ) -> Result<CrmRecord, CrmError> {
        self.write(|s| s.create(kind.into(), to_fields(fields)))
            .map(|r| (&r).into())
    }

    /// Changes the given fields; `FieldValue::Null` clears one.
    pub fn update(
        &self,
        id: String,
        fields: HashMap<String, FieldValue>,
    ) -> Result<CrmRecord, CrmError> {
        self.write(|s| s.update(&id, to_fields(fields)))
            .map(|r| (&r).into())
    }

    /// Edits a long text field (notes, body) at a position in Unicode code points.
    pub fn splice_text(
        &self,
        id: String,
        field: String,
        pos: u32,
        delete: u32,
        insert: String,
    ) -> Result<CrmRecord, CrmError> {
        self.write(|s| s.splice_text(&id, &field, pos as usize, delete as usize, &insert))
            .map(|r| (&r).into())
    }

    pub fn delete(&self, id: String) -> Result<CrmRecord, CrmError> {
        self.write(|s| s.delete(&id)).map(|r| (&r).into())
    }

    pub fn restore(&self, id: String) -> Result<CrmRecord, CrmError> {
        self.write(|s| s.restore(&id)).map(|r| (&r).into())
    }

    pub fn get(&self, id: String) -> Result<CrmRecord, CrmError> {
        self.read(|s| s.get(&id)).map(|r| (&r).into())
    }

    /// The record `id` stands for now: itself, or the one the office
    /// merged it into (a merged record arrives deleted, naming it).
    pub fn survivor_of(&self, id: String) -> Result<String, CrmError> {
        self.read(|s| s.survivor_of(&id))
    }

    /// Converts a lead in one offline action: an account (or the one
    /// given), a contact, optionally a deal; its activities move to the
    /// contact and the lead is marked converted.
    pub fn convert_lead(&self, id: String, how: LeadConversion) -> Result<ConvertedLead, CrmError> {
        self.write(|s| s.convert_lead(&id, how.into()))
            .map(Into::into)
    }

    /// Records of `kind` the given fields may duplicate (before creating
    /// one: "this looks like…"), likeliest first. `default_country_code`
    /// (digits, e.g. "44") is what national phone numbers are dialled with.
    pub fn find_duplicates(
        &self,
        kind: RecordKind,
        fields: HashMap<String, FieldValue>,
        default_country_code: Option<String>,
    ) -> Result<Vec<DuplicateCandidate>, CrmError> {
        let rules = match_rules(default_country_code);
        self.read(|s| s.find_duplicates(kind.into(), &to_fields(fields), &rules))
            .map(|found| found.into_iter().map(Into::into).collect())
    }

    /// Records a stored one may duplicate (after creating it).
    pub fn duplicates_of(
        &self,
        id: String,
        default_country_code: Option<String>,
    ) -> Result<Vec<DuplicateCandidate>, CrmError> {
        let rules = match_rules(default_country_code);
        self.read(|s| s.duplicates_of(&id, &rules))
            .map(|found| found.into_iter().map(Into::into).collect())
    }

    /// `owner`'s open visits planned from `from` to `to` (ms) as the day's
    /// route: in `order` (visit ids, the rep's own order) first, the rest
    /// in an order that shortens the drive, each with its distance and
    /// arrival time. Computed on the device, offline.
    pub fn day_route(
        &self,
        owner: String,
        from: i64,
        to: i64,
        options: DayRouteOptions,
        order: Vec<String>,
    ) -> Result<DayRoute, CrmError> {
        let options = options.into();
        self.read(|s| s.day_route(&owner, from, to, &options, &order))
            .map(Into::into)
    }

    /// Checks in at a visit now, at `position` when the device knows it;
    /// warns (and checks in all the same) when farther than `radius_m`
    /// (default 250) from the customer. Refused while another visit is in
    /// progress. Offline; syncs like any edit.
    pub fn check_in(
        &self,
        visit_id: String,
        position: Option<GeoPoint>,
        radius_m: Option<f64>,
    ) -> Result<VisitCheckIn, CrmError> {
        let at = position.map(|p| (p.lat, p.lon));
        let radius = radius_m.unwrap_or(core::DEFAULT_CHECK_IN_RADIUS_M);
        self.write(|s| s.check_in(&visit_id, at, radius))
            .map(Into::into)
    }

    /// Checks out of a visit with its report: outcome and notes on the
    /// visit (now done), the next step as a task. One offline action.
    pub fn check_out(
        &self,
        visit_id: String,
        position: Option<GeoPoint>,
        report: VisitReportInput,
    ) -> Result<VisitCheckOut, CrmError> {
        let at = position.map(|p| (p.lat, p.lon));
        self.write(|s| s.check_out(&visit_id, at, report.into()))
            .map(Into::into)
    }

    /// Adds a line to an order, offline: `quantity` of a product at its
    /// price book price in the order's currency today, `discount` percent
    /// off. Returns the new line's id. Refused for an inactive or unpriced
    /// product, a quantity not above 0, a discount outside 0–100, and an
    /// order past its draft (for reps).
    pub fn add_order_line(
        &self,
        order_id: String,
        product_id: String,
        quantity: f64,
        discount: f64,
    ) -> Result<String, CrmError> {
        self.write(|s| s.add_order_line(&order_id, &product_id, quantity, discount))
            .map(|(line, _)| line)
    }

    /// Changes one line's quantity and/or discount; other lines stay.
    pub fn set_order_line(
        &self,
        order_id: String,
        line_id: String,
        quantity: Option<f64>,
        discount: Option<f64>,
    ) -> Result<OrderSummary, CrmError> {
        self.write(|s| s.set_order_line(&order_id, &line_id, quantity, discount))
            .map(|o| (&o).into())
    }

    pub fn remove_order_line(
        &self,
        order_id: String,
        line_id: String,
    ) -> Result<OrderSummary, CrmError> {
        self.write(|s| s.remove_order_line(&order_id, &line_id))
            .map(|o| (&o).into())
    }

    /// An order's live lines and its totals (net, discount, tax, gross).
    pub fn order_summary(&self, order_id: String) -> Result<OrderSummary, CrmError> {
        self.read(|s| s.get(&order_id)).map(|o| (&o).into())
    }

    /// A product's unit price (minor units) in `currency` on `day`
    /// (`YYYY-MM-DD`) from the price book on this device.
    pub fn price_of(
        &self,
        product_id: String,
        currency: String,
        day: String,
    ) -> Result<Option<i64>, CrmError> {
        self.read(|s| s.price_of(&product_id, &currency, &day))
    }

    /// Attaches a file to a record, offline, as one action: the bytes are
    /// stored durably beside the store, then the attachment is recorded
    /// and queued for upload. `media_type` must be what the bytes are (an
    /// HTML page named `.jpg` is refused). Returns the attachment's id.
    pub fn add_attachment(
        &self,
        record_id: String,
        name: String,
        media_type: String,
        bytes: Vec<u8>,
        caption: Option<String>,
    ) -> Result<String, CrmError> {
        // Checked, hashed and thumbnailed before the store is held.
        let file = core::PreparedFile::new(&name, &media_type, bytes, caption.as_deref())?;
        self.write(|s| s.attach_prepared(&record_id, file))
            .map(|(id, _)| id)
    }

    /// Attaches the file at `path` (a photo the camera saved), named as it is.
    pub fn add_attachment_file(
        &self,
        record_id: String,
        path: String,
        media_type: String,
        caption: Option<String>,
    ) -> Result<String, CrmError> {
        let file = core::PreparedFile::read(&path, &media_type, caption.as_deref())?;
        self.write(|s| s.attach_prepared(&record_id, file))
            .map(|(id, _)| id)
    }

    /// A record's attachments, oldest first.
    pub fn attachments(&self, record_id: String) -> Result<Vec<AttachmentView>, CrmError> {
        self.read(|s| s.attachments(&record_id)).map(|all| {
            all.into_iter()
                .map(|(id, a)| AttachmentView::new(id, a))
                .collect()
        })
    }

    /// Sets or clears an attachment's caption.
    pub fn caption_attachment(
        &self,
        record_id: String,
        attachment_id: String,
        caption: Option<String>,
    ) -> Result<(), CrmError> {
        self.write(|s| s.caption_attachment(&record_id, &attachment_id, caption.as_deref()))
            .map(|_| ())
    }

    pub fn remove_attachment(
        &self,
        record_id: String,
        attachment_id: String,
    ) -> Result<(), CrmError> {
        self.write(|s| s.remove_attachment(&record_id, &attachment_id))
            .map(|_| ())
    }

    /// A blob's bytes if this device holds them (checked against the hash).
    pub fn blob(&self, sha256: String) -> Result<Option<Vec<u8>>, CrmError> {
        self.read(|s| s.blob(&sha256))
    }

    /// Keeps this device's blobs within `limit_bytes`, least recently used
    /// first, never one not yet uploaded. Returns how many it removed.
    pub fn evict_blobs(&self, limit_bytes: u64) -> Result<u64, CrmError> {
        self.write(|s| s.evict_blobs(limit_bytes)).map(|n| n as u64)
    }

    /// Sends the files of attachments made here that the relay lacks, in
    /// 1 MiB chunks resuming where an interrupted upload stopped (`sync`
    /// does this after the records). Returns how many the relay now holds;
    /// files whose record the relay has not accepted yet stay queued.
    pub fn upload_blobs(&self) -> Result<u64, CrmError> {
        let transport = self.signed_in()?;
        let done = self
            .shared
            .upload_blobs(&*transport, &mut |p| self.blobs.tell(p))?;
        Ok(done.uploaded as u64)
    }

    /// Sets (or with `null` removes) the listener told after every chunk
    /// of a file's upload or download, for a progress bar.
    pub fn set_blob_listener(&self, listener: Option<Arc<dyn BlobListener>>) {
        *self.blobs.0.lock().unwrap_or_else(|e| e.into_inner()) = listener;
    }

    /// A file's bytes: from this device, or downloaded from the relay
    /// (resuming an interrupted download), checked against its hash and
    /// kept. `NotFound` while the relay does not hold it yet, or when no
    /// record this user may see names it.
    pub fn fetch_blob(&self, sha256: String) -> Result<Vec<u8>, CrmError> {
        let transport = self.signed_in()?;
        Ok(self
            .shared
            .fetch_blob(&*transport, &sha256, &mut |p| self.blobs.tell(p))?)
    }

    /// Downloads the files of records of these kinds at every background
    /// sync (e.g. `["order"]`); empty: only when opened with `fetchBlob`.
    pub fn set_blob_prefetch(&self, kinds: Vec<String>) -> Result<(), CrmError> {
        let kinds = kinds
            .iter()
            .map(|k| k.parse::<core::Kind>())
            .collect::<core::Result<Vec<_>>>()?;
        self.write(|s| s.set_blob_prefetch(&kinds))
    }

    /// The bytes of files this device keeps (512 MiB unless set): after
    /// each background sync the least recently used ones the relay holds
    /// are evicted down to it.
    pub fn set_blob_cache_limit(&self, bytes: u64) -> Result<(), CrmError> {
        self.write(|s| s.set_blob_cache_limit(bytes))
    }

    /// The visit checked in and not out yet, if any.
    pub fn visit_in_progress(&self) -> Result<Option<Activity>, CrmError> {
        self.read(|s| s.visit_in_progress())
            .map(|v| v.as_ref().map(activity))
    }

    /// The organisation configuration (pipeline, picklists, custom field
    /// definitions) as this device last received it from the relay: build
    /// forms from it; `create` and `update` validate against it.
    pub fn configuration(&self) -> Result<OrgConfiguration, CrmError> {
        self.read(|s| Ok(s.config().into()))
    }

    /// Any record with every field by its dotted path, custom ones
    /// included: for screens that show fields the typed records lack.
    pub fn get_generic(&self, id: String) -> Result<GenericRecord, CrmError> {
        self.read(|s| s.get(&id)).map(|r| (&r).into())
    }

    pub fn list(&self, filter: ListFilter) -> Result<RecordPage, CrmError> {
        let page = self.read(|s| s.list(&filter.into()))?;
        Ok(RecordPage {
            records: page.records.iter().map(Into::into).collect(),
            total: page.total as u64,
        })
    }

    /// Full-text search over names, emails, phones and notes.
    pub fn search(
        &self,
        text: String,
        kind: Option<RecordKind>,
        limit: u32,
    ) -> Result<Vec<CrmRecord>, CrmError> {
        let found = self.read(|s| s.search(&text, kind.map(Into::into), limit as usize))?;
        Ok(found.iter().map(Into::into).collect())
    }

    pub fn account_overview(&self, account_id: String) -> Result<AccountOverview, CrmError> {
        self.read(|s| s.account_overview(&account_id))
            .map(Into::into)
    }

    pub fn pipeline_summary(
        &self,
        owner: Option<String>,
        territories: Vec<String>,
    ) -> Result<Vec<StageSummary>, CrmError> {
        let summary = self.read(|s| s.pipeline_summary(owner.as_deref(), &territories))?;
        Ok(summary
            .into_iter()
            .map(|s| StageSummary {
                stage: s.stage,
                count: s.count as u64,
                amounts: s.amounts.into_iter().collect(),
            })
            .collect())
    }

    pub fn history(&self, id: String) -> Result<Vec<HistoryEntry>, CrmError> {
        Ok(self
            .read(|s| s.history(&id))?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// The record as it stood at `time` (ms since the epoch).
    pub fn record_at(&self, id: String, time: i64) -> Result<CrmRecord, CrmError> {
        self.read(|s| s.record_at(&id, time)).map(|r| (&r).into())
    }

    pub fn conflicts(&self, id: String) -> Result<Vec<Conflict>, CrmError> {
        Ok(self
            .read(|s| s.conflicts(&id))?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Settles a conflict with one of its values or a new one.
    pub fn resolve_conflict(
        &self,
        id: String,
        field: String,
        value: FieldValue,
    ) -> Result<CrmRecord, CrmError> {
        self.write(|s| s.resolve_conflict(&id, &field, value.into()))
            .map(|r| (&r).into())
    }

    /// Registers a listener told which records each write changed; returns
    /// its id for `removeChangeListener`.
    pub fn add_change_listener(&self, listener: Arc<dyn ChangeListener>) -> u64 {
        self.shared.add_listener(Arc::new(Changes(listener)))
    }

    pub fn remove_change_listener(&self, id: u64) -> bool {
        self.shared.remove_listener(id)
    }

    /// Signs in to a relay (e.g. `https://crm.example.com`); sync then uses
    /// it. A wrong name or password is `NotSignedIn` with the relay's words.
    pub fn login(
        &self,
        base_url: String,
        username: String,
        password: String,
    ) -> Result<(), CrmError> {
        let (transport, _) =
            HttpTransport::login(&base_url, &username, &password).map_err(|e| match e {
                fieldcrm_core::Error::Transport {
                    status: Some(401),
                    message,
                } => CrmError::NotSignedIn(message),
                other => other.into(),
            })?;
        *self.transport() = Some(Arc::new(transport));
        Ok(())
    }

    /// The sign-in's bearer token, to keep in the platform's secure storage
    /// between launches (see `restoreSession`) or to call the relay with
    /// the app's own HTTP stack; `None` when not signed in. It stays valid
    /// until signed out (`signOut`, or an admin revokes it).
    pub fn session_token(&self) -> Option<String> {
        self.transport().as_ref().map(|t| t.token().to_string())
    }

    /// Signs in again with a kept token, without the password. A token the
    /// relay no longer accepts shows at the next sync as `NotSignedIn`.
    pub fn restore_session(&self, base_url: String, token: String) {
        *self.transport() = Some(Arc::new(HttpTransport::new(&base_url, &token)));
    }

    /// Syncs with the relay signed in to, until everything is exchanged.
    /// Reads and edits go on meanwhile.
    pub fn sync(&self, listener: Option<Arc<dyn SyncListener>>) -> Result<SyncStatus, CrmError> {
        let transport = self.signed_in()?;
        let done = self.shared.sync(&*transport, &mut |p| {
            if let Some(l) = &listener {
                l.on_progress(status(p));
            }
        })?;
        // Files after records: a record never waits for a file.
        self.shared
            .upload_blobs(&*transport, &mut |p| self.blobs.tell(p))?;
        Ok(status(&done))
    }

    /// Syncs through the app's own transport.
    pub fn sync_with(
        &self,
        transport: Arc<dyn HostTransport>,
        listener: Option<Arc<dyn SyncListener>>,
    ) -> Result<SyncStatus, CrmError> {
        let adapter = HostAdapter(transport);
        let done = self.shared.sync(&adapter, &mut |p| {
            if let Some(l) = &listener {
                l.on_progress(status(p));
            }
        })?;
        Ok(status(&done))
    }

    /// Starts syncing in the background with the relay signed in to: at
    /// once, when the relay's live stream says something changed, shortly
    /// after local edits, and every 30 s; retrying with back-off when
    /// offline. Returns at once; `listener` hears each state. The change
    /// listeners hear what each applied page changed.
    pub fn start_sync(&self, listener: Arc<dyn SyncStateListener>) -> Result<(), CrmError> {
        let transport = self.signed_in()?;
        self.shared
            .start_sync(transport, Arc::new(States(listener, self.blobs.clone())));
        Ok(())
    }

    /// Starts background sync over the app's own transport (it polls: the
    /// live stream needs the built-in transport).
    pub fn start_sync_with(
        &self,
        transport: Arc<dyn HostTransport>,
        listener: Arc<dyn SyncStateListener>,
    ) {
        self.shared.start_sync(
            Arc::new(HostAdapter(transport)),
            Arc::new(States(listener, self.blobs.clone())),
        );
    }

    /// Stops background sync; a round under way finishes on its own.
    pub fn stop_sync(&self) {
        self.shared.stop_sync();
    }

    /// The next request's bytes, for apps that carry them to `POST /v1/sync` themselves.
    pub fn sync_request(&self) -> Result<Vec<u8>, CrmError> {
        self.read(|s| s.sync_request())
    }

    /// Applies the relay's response bytes; `more` says whether to send another request.
    pub fn apply_sync_response(&self, response: Vec<u8>) -> Result<SyncStatus, CrmError> {
        self.write(|s| {
            let round = s.apply_sync_response(&response)?;
            Ok(SyncStatus {
                rounds: 1,
                pushed: 0,
                acked: round.acked as u64,
                rejected: round.rejected as u64,
                held: round.held as u64,
                rebased: round.rebased as u64,
                received_changes: round.changes as u64,
                received_snapshots: round.snapshots as u64,
                evicted: round.evicted as u64,
                requeued: round.requeued as u64,
                outbox_pending: s.outbox_status()?.pending as u64,
                cursor: s.cursor()?.seq,
                more: round.more,
            })
        })
    }

    pub fn outbox_status(&self) -> Result<OutboxStatus, CrmError> {
        let s = self.read(|s| s.outbox_status())?;
        Ok(OutboxStatus {
            pending: s.pending as u64,
            held: s.held as u64,
            rejected: s.rejected as u64,
        })
    }

    /// Local changes the relay refused, with what each meant to do and why.
    pub fn refused_changes(&self) -> Result<Vec<RefusedChange>, CrmError> {
        let refused = self.read(|s| s.refused_changes())?;
        Ok(refused.into_iter().map(Into::into).collect())
    }

    /// Makes a refused change again on the record as it is now (sent at the
    /// next sync); fails, keeping it, if it is still invalid.
    pub fn retry_refused(&self, id: i64) -> Result<CrmRecord, CrmError> {
        self.write(|s| s.retry_refused(id)).map(|r| (&r).into())
    }

    /// Drops a refused change for good.
    pub fn discard_refused(&self, id: i64) -> Result<(), CrmError> {
        self.write(|s| s.discard_refused(id))
    }

    /// Signs out and removes this user's data from the device: the relay
    /// stops accepting the sign-in (when it can be reached), and the store
    /// file is deleted. Refused with `PendingChanges`, changing nothing,
    /// while changes wait to be sent, are held for review or are refused —
    /// unless `discard_pending` is true: then they are deleted with the rest.
    /// After it, every call fails with `Closed`.
    pub fn sign_out(&self, discard_pending: bool) -> Result<(), CrmError> {
        let status = self.read(|s| s.outbox_status())?;
        let waiting = status.pending + status.held + status.rejected;
        if waiting > 0 && !discard_pending {
            return Err(CrmError::PendingChanges(format!(
                "signing out would delete {} change(s) not yet sent, {} held for review and {} refused; \
                 sync first (syncThenSignOut), retry or discard the refused ones, \
                 or sign out with discardPending = true",
                status.pending, status.held, status.rejected
            )));
        }
        if let Some(transport) = self.transport().take() {
            // Offline: the token stays valid until an admin revokes it.
            let _ = transport.logout();
        }
        if let Some(store) = self.shared.close() {
            store.delete_files()?;
        }
        Ok(())
    }

    /// Sends everything waiting, then signs out (see `signOut`): refused
    /// with `PendingChanges` if changes are still held or refused after the
    /// sync, so the user can decide about them first.
    pub fn sync_then_sign_out(
        &self,
        listener: Option<Arc<dyn SyncListener>>,
    ) -> Result<(), CrmError> {
        self.sync(listener)?;
        self.sign_out(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: &str) -> FieldValue {
        FieldValue::Text { value: v.into() }
    }

    fn open(dir: &tempfile::TempDir) -> Arc<CrmStore> {
        CrmStore::open(
            dir.path().join("s.db").to_string_lossy().into(),
            "ann".into(),
        )
        .unwrap()
    }

    #[test]
    fn records_cross_as_typed_records_per_kind() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let fields = HashMap::from([
            ("name".to_string(), text("Acme")),
            ("territory".to_string(), text("north")),
            ("address.city".to_string(), text("Leeds")),
            ("custom.tier".to_string(), FieldValue::Int { value: 2 }),
        ]);
        let CrmRecord::Account { account } = store.create(RecordKind::Account, fields).unwrap()
        else {
            panic!("an account comes back as an account");
        };
        assert_eq!(account.name, "Acme");
        assert_eq!(account.address.city.as_deref(), Some("Leeds"));
        assert_eq!(account.custom["tier"], FieldValue::Int { value: 2 });
        assert_eq!(account.owner, "ann");
        let page = store
            .list(ListFilter {
                kind: Some(RecordKind::Account),
                ids: None,
                owner: None,
                territories: vec![],
                account_id: None,
                related_to: None,
                about: None,
                stage: None,
                field_is: vec![],
                updated_since: None,
                due_before: None,
                include_deleted: false,
                not_done: false,
                only_conflicts: false,
                sort: None,
                descending: false,
                limit: 10,
                offset: 0,
            })
            .unwrap();
        assert_eq!(page.total, 1);
    }

    #[test]
    fn bad_input_is_an_error_with_a_message_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let err = store.get("no-such-id".into()).unwrap_err();
        assert!(matches!(err, CrmError::NotFound(_)), "{err}");
        let err = store
            .create(
                RecordKind::Contact,
                HashMap::from([("email".to_string(), text("nope"))]),
            )
            .unwrap_err();
        assert!(
            matches!(err, CrmError::InvalidInput(ref m) if m.contains("email")),
            "{err}"
        );
        let err = store.update("../x".into(), HashMap::new()).unwrap_err();
        assert!(matches!(err, CrmError::InvalidInput(_)), "{err}");
        let err = store.sync(None).unwrap_err();
        assert!(matches!(err, CrmError::NotSignedIn(_)), "{err}");
        let err = store.apply_sync_response(vec![1, 2, 3]).unwrap_err();
        assert!(matches!(err, CrmError::Sync(_)), "{err}");

        store.close_store();
        let err = store.get("x".into()).unwrap_err();
        assert!(matches!(err, CrmError::Closed(_)), "{err}");

        let corrupt = dir.path().join("corrupt.db");
        std::fs::write(&corrupt, vec![0x42; 4096]).unwrap();
        let err = CrmStore::open(corrupt.to_string_lossy().into(), "ann".into()).unwrap_err();
        assert!(
            matches!(err, CrmError::Storage(ref m) if m.contains("not a SQLite database")),
            "{err}"
        );
    }

    #[test]
    fn the_handle_is_shared_across_threads() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..10 {
                        let fields = HashMap::from([
                            ("name".to_string(), text(&format!("T{t} A{i}"))),
                            ("territory".to_string(), text("north")),
                        ]);
                        store.create(RecordKind::Account, fields).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(store.outbox_status().unwrap().pending, 40);
    }
}
