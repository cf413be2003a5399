//! The relay's storage contract and the sync flow built on it.
//!
//! [`RelayStore`] is implemented by [`sqlite::SqliteRelay`] (the embedded
//! default) and [`postgres::PgRelay`]. The rules live above the trait, once:
//! [`push`] is the one push algorithm, [`pull`] the one paging algorithm,
//! [`access`] the one access policy; a store answers storage questions.
//! Every store keeps these promises:
//! - a push stores accepted changes durably and appends them to the log
//!   before returning; repeats are acknowledged, never duplicated;
//! - the log's sequence number is the sync cursor, and a reader never skips a
//!   change that commits later with a lower number;
//! - a pull returns only what the user may see, paged by bytes.

pub mod access;
pub mod blobs;
mod error;
mod group_commit;
pub mod merge;
pub mod office;
pub mod postgres;
pub mod pull;
pub mod push;
pub mod review;
pub mod sqlite;

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

pub use error::{EditRefusal, Refusal, RelayError, Result};
use fieldcrm_core::protocol::{
    ActorDevice, Cursor, RecordBytes, Rejection, SyncRequest, SyncResponse, PROTOCOL_VERSION,
};
use fieldcrm_core::{
    Config, Conflict, DealGroups, Edit, HistoryEntry, Kind, ListQuery, OwnerCount, Page, Pipeline,
    Record, RecordDoc, StageFlow, CONFIG_ID,
};
pub use pull::{LogEntry, PageSize};
pub use push::MAX_CHANGE_BYTES;

/// Largest response page, whatever the device asks for.
pub const MAX_PAGE_BYTES: u64 = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Rep,
    Manager,
    Office,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Rep => "rep",
            Role::Manager => "manager",
            Role::Office => "office",
            Role::Admin => "admin",
        }
    }

    /// Office staff and admins see every territory.
    pub fn sees_all(self) -> bool {
        matches!(self, Role::Office | Role::Admin)
    }

    /// What the write rules (`fieldcrm_core::WRITE_RULES`) let this role change.
    pub fn standing(self) -> fieldcrm_core::Standing {
        match self {
            Role::Rep => fieldcrm_core::Standing::Rep,
            Role::Manager => fieldcrm_core::Standing::Manager,
            Role::Office => fieldcrm_core::Standing::Office,
            Role::Admin => fieldcrm_core::Standing::Admin,
        }
    }
}

impl std::str::FromStr for Role {
    type Err = RelayError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "rep" => Ok(Role::Rep),
            "manager" => Ok(Role::Manager),
            "office" => Ok(Role::Office),
            "admin" => Ok(Role::Admin),
            _ => Err(RelayError::Invalid(format!(
                "unknown role {s:?} (expected rep, manager, office or admin)"
            ))),
        }
    }
}

/// A signed-in user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub role: Role,
    pub territories: Vec<String>,
}

impl User {
    /// A user for unit tests.
    #[cfg(test)]
    pub(crate) fn sample(id: &str, role: Role, territories: &[&str]) -> User {
        User {
            id: id.into(),
            role,
            territories: territories.iter().map(|t| t.to_string()).collect(),
        }
    }
}

/// Result of a push: per change, acknowledged or refused with a reason.
#[derive(Debug, Default)]
pub struct PushOutcome {
    pub acks: Vec<[u8; 32]>,
    pub rejected: Vec<Rejection>,
    /// Changes newly appended to the log.
    pub appended: usize,
    /// The records refused changes were for, as the store now has them
    /// (empty bytes: none the user may see), so the device can reset them.
    pub resets: Vec<RecordBytes>,
    /// The territories those changes touched (before and after a move), so
    /// only devices that may see them are woken; `None` when the store does
    /// not say, which wakes every device.
    pub territories: Option<BTreeSet<String>>,
}

/// One page of what a device lacks.
#[derive(Debug, Default)]
pub struct PullPage {
    pub snapshots: Vec<RecordBytes>,
    /// The projections of bootstrap snapshots, when asked for.
    pub projections: Vec<fieldcrm_core::protocol::Projection>,
    pub changes: Vec<RecordBytes>,
    pub evict: Vec<String>,
    pub cursor: Cursor,
    pub more: bool,
    /// (actor hex, device id) behind the changes of these records.
    pub devices: Vec<(String, String)>,
}

/// A record with what its page shows: history and open conflicts.
#[derive(Debug, Clone)]
pub struct RecordDetail {
    pub record: Record,
    pub history: Vec<HistoryEntry>,
    /// Device that pushed each change in `history` (by hex change hash).
    pub devices: HashMap<String, String>,
    /// When the relay received each change (ms, the relay's clock; changes
    /// logged before relays kept it are missing), beside the device's own
    /// time in `history`, which a wrong device clock makes wrong.
    pub received: HashMap<String, i64>,
    pub conflicts: Vec<Conflict>,
}

/// What became of one office edit: the record after it, or why it was refused.
pub type EditOutcome = std::result::Result<Record, EditRefusal>;

/// Counts for /metrics and the benchmark.
#[derive(Debug, Default, Serialize)]
pub struct RelayStats {
    pub records: u64,
    pub log_entries: u64,
    pub head: u64,
}

/// Everything the relay stores. Blocking: call from `spawn_blocking`.
pub trait RelayStore: Send + Sync {
    /// Pushes `changes` as `user` from `device`, whose cursor (what it
    /// knew) is `known` (`Cursor::default()` for pushers that are not
    /// syncing devices).
    fn push(
        &self,
        user: &User,
        device: &str,
        known: &Cursor,
        changes: Vec<RecordBytes>,
    ) -> Result<PushOutcome>;
    fn pull(&self, user: &User, device: &str, cursor: &Cursor, size: PageSize) -> Result<PullPage>;
    /// The newest log sequence number.
    fn head(&self) -> Result<u64>;
    /// The identity of the log (new after a restore from a backup), sent
    /// in every cursor.
    fn log_id(&self) -> &str;
    fn stats(&self) -> Result<RelayStats>;

    fn add_user(
        &self,
        id: &str,
        password_hash: &str,
        role: Role,
        territories: &[String],
    ) -> Result<()>;
    /// The user and their password hash.
    fn user(&self, id: &str) -> Result<Option<(User, String)>>;
    /// Every user with their password hash, by id.
    fn list_users(&self) -> Result<Vec<(User, String)>>;
    fn remove_user(&self, id: &str) -> Result<bool>;
    fn set_territories(&self, id: &str, territories: &[String]) -> Result<()>;
    /// Replaces a user's stored password hash (see `accounts`).
    fn set_password_hash(&self, id: &str, password_hash: &str) -> Result<()>;
    /// A user's own settings, by name (see `preferences`).
    fn user_settings(&self, user: &str) -> Result<Vec<(String, String)>>;
    /// Sets one of a user's settings, or removes it (`None`).
    fn set_user_setting(&self, user: &str, name: &str, value: Option<&str>) -> Result<()>;
    fn add_territory(&self, name: &str) -> Result<()>;
    fn territories(&self) -> Result<Vec<String>>;
    /// Every territory with the one it sits under (`None`: at the top).
    fn territory_parents(&self) -> Result<Vec<(String, Option<String>)>>;
    /// Puts a territory under another, or at the top (checked in `accounts`).
    fn set_territory_parent(&self, name: &str, parent: Option<&str>) -> Result<()>;

    /// `user` as the access policy sees them: their territories and every
    /// territory under those (a manager of a region sees its areas). The
    /// one place assigned territories become seen ones.
    fn in_effect(&self, mut user: User) -> Result<User> {
        if user.role.sees_all() || user.territories.is_empty() {
            return Ok(user);
        }
        user.territories = access::with_descendants(&user.territories, &self.territory_parents()?);
        Ok(user)
    }

    /// The signed-in user a token belongs to, in effect ([`Self::in_effect`]).
    fn signed_in(&self, token_hash: &[u8; 32]) -> Result<Option<User>> {
        self.user_by_token(token_hash)?
            .map(|u| self.in_effect(u))
            .transpose()
    }

    fn add_token(&self, user: &str, token_hash: &[u8; 32]) -> Result<()>;
    fn user_by_token(&self, token_hash: &[u8; 32]) -> Result<Option<User>>;
    fn revoke_tokens(&self, user: &str) -> Result<usize>;
    /// Revokes one token (a browser session); the user's devices stay signed in.
    fn revoke_token(&self, token_hash: &[u8; 32]) -> Result<bool>;

    /// How many calls may usefully run at once (the relay queues the rest).
    fn parallelism(&self) -> usize {
        2
    }

    /// Calls `on_head` with the newest sequence number and the territories
    /// appended to (`None`: not known) when another process appends to this
    /// store's log (several relays on one database). A store only one
    /// process uses has nothing to watch.
    fn watch_log(&self, on_head: Box<OnHead>) {
        let _ = on_head;
    }

    // ----- the office UI: records read and edited on a user's behalf.
    // These do not check access: `office` does, before and after calling
    // them. `territories` empty means every territory.

    /// The pipeline set before the organisation configuration existed
    /// (relay_meta), or the default: the configuration's base.
    fn base_pipeline(&self) -> Result<Pipeline>;
    /// The organisation configuration in force.
    fn configuration(&self) -> Result<Config> {
        let record = match self.document(CONFIG_ID)? {
            Some(bytes) => Some(RecordDoc::from_snapshot(CONFIG_ID, &bytes)?.read()?),
            None => None,
        };
        Ok(Config::new(self.base_pipeline()?, record.as_ref()))
    }
    /// The deal pipeline of the configuration in force.
    fn pipeline(&self) -> Result<Pipeline> {
        Ok(self.configuration()?.pipeline().clone())
    }
    fn list(&self, q: &ListQuery) -> Result<Page>;
    /// A page of the best matches of `text` among the records `q` selects,
    /// and how many match, counted up to `most` (0: not counted).
    fn search_page(&self, text: &str, q: &ListQuery, most: usize) -> Result<Page>;
    /// The best `limit` matches of `text` among live records.
    fn search(
        &self,
        text: &str,
        kind: Option<Kind>,
        territories: &[String],
        limit: usize,
    ) -> Result<Vec<Record>> {
        Ok(self
            .search_page(text, &ListQuery::first(kind, territories, limit), 0)?
            .records)
    }
    fn record(&self, id: &str) -> Result<Option<RecordDetail>>;
    fn record_at(&self, id: &str, time: i64) -> Result<Record>;
    /// Live deals grouped for dashboards, now or as they stood at `at`
    /// (ms since the epoch).
    fn deal_groups(&self, territories: &[String], at: Option<i64>) -> Result<DealGroups>;
    /// How the live deals moved through the stages, from their documents'
    /// stage histories (read a page at a time).
    fn stage_flow(&self, territories: &[String]) -> Result<StageFlow>;
    fn owner_counts(&self, territories: &[String]) -> Result<Vec<OwnerCount>>;
    /// Makes each edit as `user` (with the user's own Automerge actor for
    /// `device`) and pushes it as that device would: validated, checked
    /// against the user's territories, stored and appended to the log, so
    /// devices receive it on their next sync. One outcome per edit, in order.
    fn edit(&self, user: &User, device: &str, edits: Vec<Edit>) -> Result<Vec<EditOutcome>>;
    /// [`Self::edit`] for edits that stand or fall together (a lead's
    /// conversion): all are kept, or, at the first refusal, none.
    fn edit_together(
        &self,
        user: &User,
        device: &str,
        edits: Vec<Edit>,
    ) -> Result<std::result::Result<Vec<Record>, EditRefusal>>;

    /// Merges `duplicate` into `survivor` as `user`, in one transaction
    /// (relay/merge.rs): all of it is kept or, at a refusal, none.
    fn merge(
        &self,
        user: &User,
        survivor: &str,
        duplicate: &str,
        take: &[String],
    ) -> Result<std::result::Result<merge::Merged, EditRefusal>>;
    /// Undoes the merge that tombstoned `tombstone` (relay/merge.rs).
    fn unmerge(
        &self,
        user: &User,
        tombstone: &str,
    ) -> Result<std::result::Result<Record, EditRefusal>>;

    // ----- the review queue (relay/review.rs)

    /// Changes still held for review in `scope`, in the order they were held.
    fn held_changes(&self, scope: &access::Scope) -> Result<Vec<review::Held>>;
    /// A stored record's compacted document.
    fn document(&self, id: &str) -> Result<Option<Vec<u8>>>;
    /// Accepts or discards held changes as `decider` (relay/review.rs).
    fn decide(
        &self,
        decider: &User,
        hashes: &[[u8; 32]],
        accept: bool,
    ) -> Result<Vec<review::Decided>>;

    // ----- attachment blobs (relay/blobs.rs holds the rules)

    /// The records whose attachments name blob `sha`.
    fn blob_refs(&self, sha: &str) -> Result<Vec<blobs::BlobRef>>;
    /// How much of blob `sha` is here.
    fn blob_held(&self, sha: &str) -> Result<blobs::Held>;
    /// Appends `bytes` at `offset` of blob `sha`'s unfinished upload,
    /// durably; returns the bytes now held. `offset` must be where the
    /// upload ends ([`RelayError::WrongOffset`] otherwise: two uploads of
    /// one blob race, and the later one asks again).
    fn append_blob(&self, sha: &str, offset: u64, bytes: &[u8]) -> Result<u64>;
    /// Up to `len` bytes from `offset` of what is held of blob `sha`.
    fn read_blob(&self, sha: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// Makes a verified upload of `size` bytes the held blob.
    fn seal_blob(&self, sha: &str, size: u64) -> Result<()>;
    /// Discards an unfinished or failed upload.
    fn drop_partial(&self, sha: &str) -> Result<()>;
    /// Removes blobs and uploads no record has named for `grace_ms` before
    /// `now` (marking the ones newly unnamed); returns how many went.
    fn collect_blobs(&self, now: i64, grace_ms: i64) -> Result<usize>;
}

/// One `POST /v1/sync` round: push, then pull, as one response.
pub fn sync(
    store: &dyn RelayStore,
    user: &User,
    request: SyncRequest,
) -> Result<(SyncResponse, Appended)> {
    if request.device_id.is_empty() || request.device_id.len() > 128 {
        return Err(RelayError::Invalid(
            "device_id must be 1 to 128 bytes".into(),
        ));
    }
    let restored = restored_since(store, &request.cursor)?;
    let (pushed, mut cursor) = if restored {
        // The device's changes may build on ones this relay lost: leave
        // them until it has queued those again (`SyncResponse::restored`),
        // and start its cursor over, in the view it has.
        let cursor = Cursor {
            view: request.cursor.view,
            ..Cursor::default()
        };
        (PushOutcome::default(), cursor)
    } else {
        let pushed = store.push(user, &request.device_id, &request.cursor, request.push)?;
        (pushed, request.cursor)
    };
    let now = access::view(user);
    let mut evict_territories = Vec::new();
    if let Some(before) = cursor.view.take() {
        let change = access::view_change(user, &before, || store.territories())?;
        evict_territories = change.lost;
        if !change.gained.is_empty() {
            cursor = bootstrap_gained(user, cursor, change.gained);
        }
    }
    let max_bytes = request.max_bytes.clamp(1, MAX_PAGE_BYTES);
    let size = PageSize {
        max_bytes,
        projections: request.projections,
    };
    let page = store.pull(user, &request.device_id, &cursor, size)?;
    let response = SyncResponse {
        version: PROTOCOL_VERSION,
        acks: pushed
            .acks
            .iter()
            .map(|h| serde_bytes::ByteBuf::from(h.to_vec()))
            .collect(),
        rejected: pushed.rejected,
        snapshots: page.snapshots,
        projections: page.projections,
        changes: page.changes,
        resets: pushed.resets,
        evict: page.evict,
        evict_territories,
        cursor: Cursor {
            view: Some(now),
            log: Some(store.log_id().to_string()),
            ..page.cursor
        },
        more: page.more || restored,
        devices: page
            .devices
            .into_iter()
            .map(|(actor, device)| ActorDevice { actor, device })
            .collect(),
        restored,
        standing: Some(user.role.standing()),
    };
    let appended = Appended {
        changes: pushed.appended,
        territories: pushed.territories,
    };
    Ok((response, appended))
}

/// Whether the relay was restored from a backup since `cursor` was made:
/// it names another log, or a position past this log's end (a copy that
/// kept the log's identity, e.g. one taken by hand).
fn restored_since(store: &dyn RelayStore, cursor: &Cursor) -> Result<bool> {
    if cursor
        .log
        .as_deref()
        .is_some_and(|log| log != store.log_id())
    {
        return Ok(true);
    }
    let seen = cursor
        .bootstrap
        .as_ref()
        .map_or(cursor.seq, |b| b.start_seq.max(cursor.seq));
    Ok(seen > 0 && seen > store.head()?)
}

/// The cursor that fetches territories a user gained: every record of them
/// (the device may have evicted some of them before), then the log from
/// where the device was. A device still in its first bootstrap starts a
/// complete one of all its territories instead.
fn bootstrap_gained(user: &User, cursor: Cursor, gained: Vec<String>) -> Cursor {
    let (only, start_seq) = match cursor.bootstrap {
        Some(unfinished) => (access::bootstrap_territories(user), unfinished.start_seq),
        None if gained.iter().any(|t| t == access::ALL) => (vec![String::new()], cursor.seq),
        None => (gained, cursor.seq),
    };
    Cursor {
        seq: 0,
        bootstrap: Some(fieldcrm_core::protocol::Bootstrap {
            territory: String::new(),
            after_id: String::new(),
            start_seq,
            only: Some(only),
        }),
        view: None,
        log: None,
    }
}

/// Territory names: 1 to 64 bytes, not blank, not starting with `*`
/// (`*` stands for every territory, `*organisation` for the shared one).
pub(crate) fn check_territory_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.len() > 64 {
        return Err(RelayError::Invalid(format!(
            "territory name {name:?} must be 1 to 64 bytes and not blank"
        )));
    }
    if name.starts_with('*') {
        return Err(RelayError::Invalid(format!(
            "territory name {name:?} may not start with * (names starting with * are reserved)"
        )));
    }
    Ok(())
}

/// The relay's clock, in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Told of appends by other relay processes: (newest sequence number,
/// the territories appended to, `None` if not known).
pub type OnHead = dyn Fn(u64, Option<BTreeSet<String>>) + Send;

/// What a sync added to the log, for waking event streams.
#[derive(Debug, Default)]
pub struct Appended {
    pub changes: usize,
    /// See [`PushOutcome::territories`].
    pub territories: Option<BTreeSet<String>>,
}
