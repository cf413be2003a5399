//! The relay's storage contract and the sync flow built on it.
//!
//! [`RelayStore`] is implemented by [`sqlite::SqliteRelay`] (the embedded
//! default); a PostgreSQL implementation must keep the same promises:
//! - `push` validates every change (it must load into its record's
//!   document), enforces the user's access, stores accepted changes durably
//!   and appends them to the log before returning; repeats are acknowledged,
//!   never duplicated;
//! - the log's sequence number is the sync cursor, and a reader never skips a
//!   change that commits later with a lower number;
//! - `pull` returns only what the user may see, paged by bytes.

pub mod office;
pub mod postgres;
pub mod pull;
pub mod sqlite;

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use fieldcrm_core::protocol::{
    Cursor, RecordBytes, Rejection, SyncRequest, SyncResponse, PROTOCOL_VERSION,
};
use fieldcrm_core::{
    Conflict, Edit, HistoryEntry, Kind, ListQuery, OwnerCount, Page, Pipeline, Record, StageSummary,
};
pub use pull::LogEntry;

/// Largest single change a device may push.
pub const MAX_CHANGE_BYTES: usize = 1 << 20;
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

    /// Whether the user may see and change records of `territory`.
    pub fn can_access(&self, territory: Option<&str>) -> bool {
        self.role.sees_all()
            || territory.is_some_and(|t| self.territories.iter().any(|mine| mine == t))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Core(#[from] fieldcrm_core::Error),
    #[error("relay storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("relay storage error: {0}")]
    Postgres(#[from] ::postgres::Error),
    #[error("relay storage unavailable: {0}")]
    Pool(#[from] r2d2::Error),
    /// A storage failure reported to several requests at once (a group
    /// commit that failed).
    #[error("relay storage error: {0}")]
    Storage(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
}

pub type Result<T, E = RelayError> = std::result::Result<T, E>;

/// Result of a push: per change, acknowledged or refused with a reason.
#[derive(Debug, Default)]
pub struct PushOutcome {
    pub acks: Vec<[u8; 32]>,
    pub rejected: Vec<Rejection>,
    /// Changes newly appended to the log.
    pub appended: usize,
    /// The territories those changes touched (before and after a move), so
    /// only devices that may see them are woken; `None` when the store does
    /// not say, which wakes every device.
    pub territories: Option<BTreeSet<String>>,
}

/// One page of what a device lacks.
#[derive(Debug, Default)]
pub struct PullPage {
    pub snapshots: Vec<RecordBytes>,
    pub changes: Vec<RecordBytes>,
    pub evict: Vec<String>,
    pub cursor: Cursor,
    pub more: bool,
}

/// The territories a user's devices hold: theirs, or `*` for all.
pub fn view_of(user: &User) -> Vec<String> {
    if user.role.sees_all() {
        vec!["*".to_string()]
    } else {
        let mut v = user.territories.clone();
        v.sort();
        v
    }
}

/// A record with what its page shows: history and open conflicts.
#[derive(Debug, Clone)]
pub struct RecordDetail {
    pub record: Record,
    pub history: Vec<HistoryEntry>,
    /// Device that pushed each change in `history` (by hex change hash).
    pub devices: HashMap<String, String>,
    pub conflicts: Vec<Conflict>,
}

/// Why an office edit was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditRefusal {
    /// The record does not exist, or not for this user.
    #[error("{0}")]
    NotFound(String),
    /// The edit is invalid or not allowed (the message says which field or rule).
    #[error("{0}")]
    Refused(String),
}

impl From<fieldcrm_core::Error> for EditRefusal {
    fn from(e: fieldcrm_core::Error) -> Self {
        match e {
            fieldcrm_core::Error::NotFound(_) => EditRefusal::NotFound(e.to_string()),
            e => EditRefusal::Refused(e.to_string()),
        }
    }
}

impl From<EditRefusal> for RelayError {
    fn from(e: EditRefusal) -> Self {
        match e {
            EditRefusal::NotFound(m) => RelayError::NotFound(m),
            EditRefusal::Refused(m) => RelayError::Invalid(m),
        }
    }
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
    fn push(&self, user: &User, device: &str, changes: Vec<RecordBytes>) -> Result<PushOutcome>;
    fn pull(&self, user: &User, device: &str, cursor: &Cursor, max_bytes: u64) -> Result<PullPage>;
    /// The newest log sequence number.
    fn head(&self) -> Result<u64>;
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
    fn list_users(&self) -> Result<Vec<User>>;
    fn remove_user(&self, id: &str) -> Result<bool>;
    fn set_territories(&self, id: &str, territories: &[String]) -> Result<()>;
    fn add_territory(&self, name: &str) -> Result<()>;
    fn territories(&self) -> Result<Vec<String>>;

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

    fn pipeline(&self) -> Result<Pipeline>;
    fn list(&self, q: &ListQuery) -> Result<Page>;
    fn search(
        &self,
        text: &str,
        kind: Option<Kind>,
        territories: &[String],
        limit: usize,
    ) -> Result<Vec<Record>>;
    fn record(&self, id: &str) -> Result<Option<RecordDetail>>;
    fn record_at(&self, id: &str, time: i64) -> Result<Record>;
    /// Live deals per stage now, or as they stood at `at` (ms since the epoch).
    fn pipeline_summary(
        &self,
        territories: &[String],
        at: Option<i64>,
    ) -> Result<Vec<StageSummary>>;
    fn owner_counts(&self, territories: &[String]) -> Result<Vec<OwnerCount>>;
    /// Makes each edit as `user` (with the user's own Automerge actor for
    /// `device`) and pushes it as that device would: validated, checked
    /// against the user's territories, stored and appended to the log, so
    /// devices receive it on their next sync. One outcome per edit, in order.
    fn edit(&self, user: &User, device: &str, edits: Vec<Edit>) -> Result<Vec<EditOutcome>>;
}

pub(crate) fn reject(hash: Option<[u8; 32]>, reason: impl Into<String>) -> Rejection {
    Rejection {
        hash: hash.map(|h| h.to_vec()).unwrap_or_default(),
        reason: reason.into(),
    }
}

/// The checks a pushed change passes before any storage is read: its size,
/// that it is one well-formed change, and that it is signed as `user`.
pub(crate) fn parse_pushed(
    user: &User,
    change: &RecordBytes,
) -> std::result::Result<fieldcrm_core::ParsedChange, Rejection> {
    if change.bytes.len() > MAX_CHANGE_BYTES {
        return Err(reject(
            None,
            format!(
                "change of {} bytes exceeds the limit of {MAX_CHANGE_BYTES}",
                change.bytes.len()
            ),
        ));
    }
    let parsed = fieldcrm_core::ParsedChange::parse(&change.record_id, &change.bytes)
        .map_err(|e| reject(None, e.to_string()))?;
    if parsed.user() != Some(user.id.as_str()) {
        return Err(reject(
            Some(parsed.hash()),
            format!(
                "change is signed as user {:?}, but you are {:?}",
                parsed.user().unwrap_or(""),
                user.id
            ),
        ));
    }
    Ok(parsed)
}

/// Refuses a change unless `user` may hold the record both before it
/// (when it existed) and after it. Returns its territory before and after.
pub(crate) fn check_access(
    user: &User,
    before: Option<&Record>,
    after: &Record,
) -> fieldcrm_core::Result<(Option<String>, Option<String>)> {
    let (b, a) = (
        before.and_then(|r| r.text("territory")),
        after.text("territory"),
    );
    for t in before.map(|_| b).into_iter().chain([a]) {
        if !user.can_access(t) {
            return Err(fieldcrm_core::Error::Refused(format!(
                "record {} is in territory {:?}, outside yours",
                after.id,
                t.unwrap_or("")
            )));
        }
    }
    Ok((b.map(String::from), a.map(String::from)))
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
    let pushed = store.push(user, &request.device_id, request.push)?;
    let now = view_of(user);
    let mut cursor = request.cursor;
    let mut evict_territories = Vec::new();
    if let Some(before) = cursor.view.take().filter(|before| *before != now) {
        // The user's territories changed since this device last synced.
        evict_territories = if before.iter().any(|t| t == "*") {
            // From everything to some: evict every territory not kept.
            store
                .territories()?
                .into_iter()
                .filter(|t| !now.contains(t))
                .collect()
        } else {
            before
                .iter()
                .filter(|t| !now.contains(t) && !now.iter().any(|n| n == "*"))
                .cloned()
                .collect()
        };
        if now.iter().any(|t| !before.contains(t)) {
            // Gained territories: bootstrap again (what the device has merges idempotently).
            cursor = Cursor::default();
        }
    }
    let max_bytes = request.max_bytes.clamp(1, MAX_PAGE_BYTES);
    let page = store.pull(user, &request.device_id, &cursor, max_bytes)?;
    let response = SyncResponse {
        version: PROTOCOL_VERSION,
        acks: pushed
            .acks
            .iter()
            .map(|h| serde_bytes::ByteBuf::from(h.to_vec()))
            .collect(),
        rejected: pushed.rejected,
        snapshots: page.snapshots,
        changes: page.changes,
        evict: page.evict,
        evict_territories,
        cursor: Cursor {
            view: Some(now),
            ..page.cursor
        },
        more: page.more,
    };
    let appended = Appended {
        changes: pushed.appended,
        territories: pushed.territories,
    };
    Ok((response, appended))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_follows_role_and_territories() {
        let rep = User {
            id: "ann".into(),
            role: Role::Rep,
            territories: vec!["north".into()],
        };
        assert!(rep.can_access(Some("north")));
        assert!(!rep.can_access(Some("south")));
        assert!(!rep.can_access(None));
        let office = User {
            role: Role::Office,
            territories: vec![],
            ..rep
        };
        assert!(office.can_access(Some("south")) && office.can_access(None));
        assert!("boss".parse::<Role>().is_err());
    }
}
