//! The embedded relay store: one SQLite file holding the record documents
//! and their projection (a core [`Store`], so the office UI gets queries,
//! history and conflicts for free) plus the relay's own tables: the change
//! log, users, tokens, territories and actor bindings.
//!
//! Connections: one writer (behind a mutex, with [`group_commit`] for
//! pushes) and a small pool of readers. SQLite's WAL lets readers work while
//! the writer writes, so pulls, sign-in checks and the office UI's reports
//! never wait behind a push; each read runs in one read transaction, a
//! consistent snapshot of what has committed.
//!
//! Cursor correctness: SQLite runs one write transaction at a time, and a
//! push assigns log sequence numbers inside its write transaction. So a
//! transaction holding a lower number always commits before one holding a
//! higher number starts, and a reader can never see seq N+1 without seq N.

mod group_commit;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use fieldcrm_core::protocol::{Cursor, RecordBytes, Rejection};
use fieldcrm_core::{
    Author, Edit, Error as CoreError, Kind, ListQuery, OwnerCount, Page, ParsedChange, Pipeline,
    Record, StageSummary, Store, StoreOptions, StoreTx,
};
use rusqlite::{params, Connection, OptionalExtension};

use super::pull::{self, LogEntry, LogSource};
use super::{
    check_access, parse_pushed, reject, EditOutcome, EditRefusal, PullPage, PushOutcome,
    RecordDetail, RelayError, RelayStats, RelayStore, Result, Role, User,
};

/// 2 added `relay_web_actors`; opening a version 1 file upgrades it.
const SCHEMA_VERSION: i64 = 2;
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS relay_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
-- Append-only change log; seq is the sync cursor. territory is the record's
-- territory after the change; prev_territory is set when the change moved it.
CREATE TABLE IF NOT EXISTS relay_log (
    seq            INTEGER PRIMARY KEY,
    record_id      TEXT NOT NULL,
    hash           BLOB NOT NULL UNIQUE,
    territory      TEXT,
    prev_territory TEXT,
    device         TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    bytes          BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS relay_log_territory ON relay_log (territory, seq);
CREATE INDEX IF NOT EXISTS relay_log_record ON relay_log (record_id, device);
CREATE INDEX IF NOT EXISTS relay_log_moves ON relay_log (prev_territory, seq) WHERE prev_territory IS NOT NULL;
CREATE TABLE IF NOT EXISTS relay_territories (name TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS relay_users (
    id            TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    territories   TEXT NOT NULL
) WITHOUT ROWID;
-- Bearer tokens, stored as SHA-256 of the token.
CREATE TABLE IF NOT EXISTS relay_tokens (
    hash    BLOB PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES relay_users (id) ON DELETE CASCADE
);
-- Each Automerge actor belongs to the first user who pushed with it.
CREATE TABLE IF NOT EXISTS relay_actors (actor TEXT PRIMARY KEY, user_id TEXT NOT NULL) WITHOUT ROWID;
-- The Automerge actor each user edits with from the office UI (one per
-- user and device name, used by nobody else).
CREATE TABLE IF NOT EXISTS relay_web_actors (
    user_id TEXT NOT NULL,
    device  TEXT NOT NULL,
    actor   BLOB NOT NULL,
    PRIMARY KEY (user_id, device)
) WITHOUT ROWID;
";

/// Read connections in the pool: enough for both cores and a slow report.
const READERS: u32 = 4;
/// Page cache of each reader, in KiB (SQLite's default size).
const READER_CACHE_KIB: i64 = 2048;
/// Store calls worth running at once: pushes waiting for the writer form
/// the next group commit, and reads run beside it.
const PARALLELISM: usize = 8;

/// Relay store in `DIR/relay.db`.
pub struct SqliteRelay {
    writer: Mutex<Store>,
    pushes: group_commit::GroupCommit<PushJob, Result<PushOutcome>>,
    readers: r2d2::Pool<Readers>,
}

/// One request's push, waiting for its group commit.
struct PushJob {
    user: User,
    device: String,
    changes: Vec<RecordBytes>,
}

/// Opens read connections to the relay's file for the pool.
#[derive(Debug)]
struct Readers {
    path: PathBuf,
}

impl r2d2::ManageConnection for Readers {
    type Connection = Store;
    type Error = CoreError;

    fn connect(&self) -> std::result::Result<Store, CoreError> {
        let store = Store::open_with(&self.path, "relay", relay_options())?;
        // The writer keeps the large cache; readers find recent pages in the
        // OS page cache, and their own caches would multiply the relay's RSS.
        store
            .sql()
            .pragma_update(None, "cache_size", -READER_CACHE_KIB)?;
        Ok(store)
    }

    fn is_valid(&self, _: &mut Store) -> std::result::Result<(), CoreError> {
        Ok(())
    }

    fn has_broken(&self, _: &mut Store) -> bool {
        false
    }
}

fn relay_options() -> StoreOptions {
    // FULL: an acknowledged change must survive a power loss too.
    StoreOptions {
        durable: true,
        ..StoreOptions::default()
    }
}

impl std::fmt::Debug for SqliteRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteRelay").finish_non_exhaustive()
    }
}

impl SqliteRelay {
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| RelayError::Invalid(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("relay.db");
        let mut store = Store::open_with(&path, "relay", relay_options())?;
        store.transaction(|tx| {
            let sql = tx.sql();
            sql.execute_batch(SCHEMA)?;
            let version: Option<String> = sql
                .query_row("SELECT value FROM relay_meta WHERE key = 'schema'", [], |r| r.get(0))
                .optional()?;
            match version.and_then(|v| v.parse::<i64>().ok()) {
                None => {
                    sql.execute(
                        "INSERT INTO relay_meta (key, value) VALUES ('schema', ?1)",
                        [SCHEMA_VERSION.to_string()],
                    )?;
                }
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(CoreError::Refused(format!(
                        "relay schema version {v} is newer than this build ({SCHEMA_VERSION}); upgrade the server"
                    )))
                }
                Some(v) if v < SCHEMA_VERSION => {
                    // Every step so far only added tables, created above.
                    sql.execute(
                        "UPDATE relay_meta SET value = ?1 WHERE key = 'schema'",
                        [SCHEMA_VERSION.to_string()],
                    )?;
                }
                Some(_) => {}
            }
            Ok(())
        })?;
        // Readers open after the writer has made or upgraded the schema.
        let readers = r2d2::Pool::builder()
            .max_size(READERS)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(30))
            .build(Readers { path })?;
        Ok(SqliteRelay {
            writer: Mutex::new(store),
            pushes: Default::default(),
            readers,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave SQLite half-written
        // (the transaction rolls back), so the store stays usable.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on a pooled reader inside one read transaction: every query
    /// in it sees the same committed state.
    fn read<R>(&self, f: impl FnOnce(&Store) -> Result<R>) -> Result<R> {
        let store = self.readers.get()?;
        // Dropped at the end: a rollback, which for reads only ends the snapshot.
        let _snapshot = store.sql().unchecked_transaction()?;
        f(&store)
    }

    /// Write access to the relay's record store.
    pub fn with_records<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        f(&mut self.lock())
    }
}

fn territories_json(territories: &[String]) -> String {
    serde_json::Value::from(territories.to_vec()).to_string()
}

fn parse_territories(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

/// A pushed change that passed the checks that need no document.
struct Checked<'a> {
    change: &'a RecordBytes,
    parsed: ParsedChange,
    hash: [u8; 32],
    actor: String,
    actor_bound: bool,
}

/// Size, shape, author and actor checks. `Ok(None)`: the relay already has
/// the change (acknowledge it, store nothing).
fn precheck<'a>(
    tx: &StoreTx<'_>,
    user: &User,
    change: &'a RecordBytes,
) -> std::result::Result<Option<Checked<'a>>, Rejection> {
    let parsed = parse_pushed(user, change)?;
    let hash = parsed.hash();
    let fail = |reason: String| reject(Some(hash), reason);
    let sql = tx.sql();
    let logged: Option<i64> = sql
        .prepare_cached("SELECT 1 FROM relay_log WHERE hash = ?1")
        .and_then(|mut s| s.query_row([&hash], |r| r.get(0)).optional())
        .map_err(|e| fail(e.to_string()))?;
    if logged.is_some() {
        return Ok(None);
    }
    let actor = parsed.actor_hex();
    let owner: Option<String> = sql
        .prepare_cached("SELECT user_id FROM relay_actors WHERE actor = ?1")
        .and_then(|mut s| s.query_row([&actor], |r| r.get(0)).optional())
        .map_err(|e| fail(e.to_string()))?;
    if let Some(owner) = &owner {
        if owner != &user.id {
            return Err(fail(format!("actor {actor} belongs to another user")));
        }
    }
    Ok(Some(Checked {
        change,
        parsed,
        hash,
        actor,
        actor_bound: owner.is_some(),
    }))
}

/// The record's territories a group of changes touched: before and after.
type Touched = [Option<String>; 2];

/// Applies changes of one record together (one document load, one
/// projection write), checks access, binds actors and appends to the log;
/// all or nothing.
fn apply_group(
    tx: &StoreTx<'_>,
    user: &User,
    device: &str,
    group: &[Checked<'_>],
) -> std::result::Result<Touched, String> {
    let sql = tx.sql();
    // Cached statements: this runs once per pushed record.
    let run = |stmt: &str| {
        sql.prepare_cached(stmt)
            .and_then(|mut s| s.execute([]))
            .map_err(|e| e.to_string())
    };
    run("SAVEPOINT push_group")?;
    let result = write_group(tx, user, device, group);
    if result.is_err() {
        run("ROLLBACK TO push_group")?;
    }
    run("RELEASE push_group")?;
    result
}

/// [`apply_group`]'s work inside its savepoint: on failure, part may be written.
fn write_group(
    tx: &StoreTx<'_>,
    user: &User,
    device: &str,
    group: &[Checked<'_>],
) -> std::result::Result<Touched, String> {
    let record_id = &group[0].change.record_id;
    let territories: RefCell<(Option<String>, Option<String>)> = RefCell::new((None, None));
    let check = |before: Option<&Record>, after: &Record| -> fieldcrm_core::Result<()> {
        *territories.borrow_mut() = check_access(user, before, after)?;
        Ok(())
    };
    let sql = tx.sql();
    let parsed = group.iter().map(|c| c.parsed.clone()).collect();
    tx.apply_checked(record_id, parsed, &check)
        .map_err(|e| e.to_string())?;
    let (before, after) = territories.take();
    // The first entry carries the move, so readers learn of it once.
    let mut moved_from = before.clone().filter(|b| Some(b) != after.as_ref());
    let write = |c: &Checked<'_>, moved_from: Option<String>| -> rusqlite::Result<()> {
        if !c.actor_bound {
            sql.prepare_cached(
                "INSERT OR IGNORE INTO relay_actors (actor, user_id) VALUES (?1, ?2)",
            )?
            .execute(params![c.actor, user.id])?;
        }
        sql.prepare_cached(
            "INSERT INTO relay_log (record_id, hash, territory, prev_territory, device, user_id, bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![record_id, c.hash, after, moved_from, device, user.id, c.change.bytes])?;
        Ok(())
    };
    for c in group {
        write(c, moved_from.take()).map_err(|e| e.to_string())?;
    }
    Ok([before, after])
}

/// Pushes one request's changes inside its transaction. One record's
/// changes go together; if that fails, each is tried alone so every change
/// gets its own answer.
fn push_all(tx: &StoreTx<'_>, user: &User, device: &str, changes: &[RecordBytes]) -> PushOutcome {
    let mut out = PushOutcome::default();
    let mut territories = BTreeSet::new();
    let mut touched = |t: Touched| territories.extend(t.into_iter().flatten());
    // A device's edits interleave records; grouping all of one record's
    // changes (their order kept) means one document load and one
    // projection write per record, not per change.
    let mut ordered: Vec<&RecordBytes> = changes.iter().collect();
    ordered.sort_by(|a, b| a.record_id.cmp(&b.record_id));
    for run in ordered.chunk_by(|a, b| a.record_id == b.record_id) {
        let mut group = Vec::new();
        for change in run.iter().copied() {
            match precheck(tx, user, change) {
                Ok(Some(checked)) => group.push(checked),
                Ok(None) => {
                    // Already stored: acknowledge again, append nothing.
                    if let Ok(parsed) = ParsedChange::parse(&change.record_id, &change.bytes) {
                        out.acks.push(parsed.hash());
                    }
                }
                Err(rejection) => out.rejected.push(rejection),
            }
        }
        if group.is_empty() {
            continue;
        }
        if let Ok(t) = apply_group(tx, user, device, &group) {
            touched(t);
            out.acks.extend(group.iter().map(|c| c.hash));
            out.appended += group.len();
            continue;
        }
        for single in group.chunks(1) {
            match apply_group(tx, user, device, single) {
                Ok(t) => {
                    touched(t);
                    out.acks.push(single[0].hash);
                    out.appended += 1;
                }
                Err(reason) => out.rejected.push(reject(Some(single[0].hash), reason)),
            }
        }
    }
    out.territories = Some(territories);
    out
}

/// Writes a group commit's pushes, each answered on its own. (Writing a
/// batch without the savepoint per record was tried: no faster for small
/// pushes, 15% slower for large ones.)
fn push_batch(tx: &StoreTx<'_>, jobs: &[PushJob]) -> Vec<PushOutcome> {
    jobs.iter()
        .map(|j| push_all(tx, &j.user, &j.device, &j.changes))
        .collect()
}

impl RelayStore for SqliteRelay {
    fn push(&self, user: &User, device: &str, changes: Vec<RecordBytes>) -> Result<PushOutcome> {
        if changes.is_empty() {
            return Ok(PushOutcome::default());
        }
        let job = PushJob {
            user: user.clone(),
            device: device.to_string(),
            changes,
        };
        self.pushes.submit(
            &self.writer,
            job,
            |store, jobs| {
                metrics::histogram!("fieldcrm_group_commit_pushes").record(jobs.len() as f64);
                // Every job's changes are checked and answered on their own,
                // so one bad push cannot fail its neighbours; only the
                // commit itself is shared.
                let pushed = store.transaction(|tx| Ok(push_batch(tx, &jobs)));
                match pushed {
                    Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
                    Err(e) => {
                        let why = e.to_string();
                        jobs.iter()
                            .map(|_| Err(RelayError::Storage(why.clone())))
                            .collect()
                    }
                }
            },
            || {
                Err(RelayError::Storage(
                    "the push was interrupted before it was stored; send it again".into(),
                ))
            },
        )
    }

    fn pull(&self, user: &User, device: &str, cursor: &Cursor, max_bytes: u64) -> Result<PullPage> {
        self.read(|store| pull::pull(&mut SqliteLog(store), user, device, cursor, max_bytes))
    }

    fn head(&self) -> Result<u64> {
        self.read(|store| head(store_conn(store)))
    }

    fn parallelism(&self) -> usize {
        PARALLELISM
    }

    fn stats(&self) -> Result<RelayStats> {
        self.read(|store| {
            let conn = store_conn(store);
            let count = |sql: &str| {
                conn.query_row(sql, [], |r| r.get::<_, i64>(0))
                    .map(|n| n as u64)
            };
            Ok(RelayStats {
                records: count("SELECT count(*) FROM records")?,
                log_entries: count("SELECT count(*) FROM relay_log")?,
                head: head(conn)?,
            })
        })
    }

    fn add_user(
        &self,
        id: &str,
        password_hash: &str,
        role: Role,
        territories: &[String],
    ) -> Result<()> {
        let mut store = self.lock();
        store.transaction(|tx| {
            check_territories(tx.sql(), territories)?;
            let inserted = tx.sql().execute(
                "INSERT OR IGNORE INTO relay_users (id, password_hash, role, territories) VALUES (?1, ?2, ?3, ?4)",
                params![id, password_hash, role.as_str(), territories_json(territories)],
            )?;
            if inserted == 0 {
                return Err(CoreError::Refused(format!("user {id:?} already exists")));
            }
            Ok(())
        })?;
        Ok(())
    }

    fn user(&self, id: &str) -> Result<Option<(User, String)>> {
        self.read(|store| {
            Ok(store_conn(store)
                .query_row(
                    "SELECT id, role, territories, password_hash FROM relay_users WHERE id = ?1",
                    [id],
                    |r| Ok((user_from_row(r)?, r.get::<_, String>(3)?)),
                )
                .optional()?)
        })
    }

    fn list_users(&self) -> Result<Vec<User>> {
        self.read(|store| {
            let conn = store_conn(store);
            let mut stmt =
                conn.prepare("SELECT id, role, territories FROM relay_users ORDER BY id")?;
            let users = stmt
                .query_map([], user_from_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(users)
        })
    }

    fn remove_user(&self, id: &str) -> Result<bool> {
        let mut store = self.lock();
        Ok(store.transaction(|tx| {
            tx.sql()
                .execute("DELETE FROM relay_tokens WHERE user_id = ?1", [id])?;
            Ok(tx
                .sql()
                .execute("DELETE FROM relay_users WHERE id = ?1", [id])?
                > 0)
        })?)
    }

    fn set_territories(&self, id: &str, territories: &[String]) -> Result<()> {
        let mut store = self.lock();
        store.transaction(|tx| {
            check_territories(tx.sql(), territories)?;
            let n = tx.sql().execute(
                "UPDATE relay_users SET territories = ?2 WHERE id = ?1",
                params![id, territories_json(territories)],
            )?;
            if n == 0 {
                return Err(CoreError::NotFound(format!("user {id}")));
            }
            Ok(())
        })?;
        Ok(())
    }

    fn add_territory(&self, name: &str) -> Result<()> {
        if name.trim().is_empty() || name.len() > 64 {
            return Err(RelayError::Invalid(format!(
                "territory name {name:?} must be 1 to 64 bytes"
            )));
        }
        let store = self.lock();
        store_conn(&store).execute(
            "INSERT OR IGNORE INTO relay_territories (name) VALUES (?1)",
            [name],
        )?;
        Ok(())
    }

    fn territories(&self) -> Result<Vec<String>> {
        self.read(|store| {
            let conn = store_conn(store);
            let mut stmt = conn.prepare("SELECT name FROM relay_territories ORDER BY name")?;
            let names = stmt
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(names)
        })
    }

    fn add_token(&self, user: &str, token_hash: &[u8; 32]) -> Result<()> {
        let store = self.lock();
        store_conn(&store).execute(
            "INSERT INTO relay_tokens (hash, user_id) VALUES (?1, ?2)",
            params![token_hash, user],
        )?;
        Ok(())
    }

    fn user_by_token(&self, token_hash: &[u8; 32]) -> Result<Option<User>> {
        self.read(|store| {
            Ok(store_conn(store)
                .prepare_cached(
                    "SELECT u.id, u.role, u.territories FROM relay_tokens t JOIN relay_users u ON u.id = t.user_id
                     WHERE t.hash = ?1",
                )?
                .query_row([token_hash], user_from_row)
                .optional()?)
        })
    }

    fn revoke_tokens(&self, user: &str) -> Result<usize> {
        let store = self.lock();
        Ok(store_conn(&store).execute("DELETE FROM relay_tokens WHERE user_id = ?1", [user])?)
    }

    fn revoke_token(&self, token_hash: &[u8; 32]) -> Result<bool> {
        let store = self.lock();
        Ok(
            store_conn(&store).execute("DELETE FROM relay_tokens WHERE hash = ?1", [token_hash])?
                > 0,
        )
    }

    fn pipeline(&self) -> Result<Pipeline> {
        Ok(self.readers.get()?.pipeline().clone())
    }

    fn list(&self, q: &ListQuery) -> Result<Page> {
        self.read(|store| Ok(store.list(q)?))
    }

    fn search(
        &self,
        text: &str,
        kind: Option<Kind>,
        territories: &[String],
        limit: usize,
    ) -> Result<Vec<Record>> {
        self.read(|store| Ok(store.search_in(text, kind, territories, limit)?))
    }

    fn record(&self, id: &str) -> Result<Option<RecordDetail>> {
        self.read(|store| record_detail(store, id))
    }

    fn record_at(&self, id: &str, time: i64) -> Result<Record> {
        self.read(|store| Ok(store.record_at(id, time)?))
    }

    fn pipeline_summary(
        &self,
        territories: &[String],
        at: Option<i64>,
    ) -> Result<Vec<StageSummary>> {
        self.read(|store| {
            Ok(match at {
                None => store.pipeline_summary(None, territories)?,
                Some(time) => store.pipeline_summary_at(territories, time)?,
            })
        })
    }

    fn owner_counts(&self, territories: &[String]) -> Result<Vec<OwnerCount>> {
        self.read(|store| Ok(store.owner_counts(territories)?))
    }

    fn edit(&self, user: &User, device: &str, edits: Vec<Edit>) -> Result<Vec<EditOutcome>> {
        let mut store = self.lock();
        let drafted = store.transaction(|tx| {
            let author = Author {
                user: user.id.clone(),
                actor: web_actor(tx.sql(), &user.id, device)?,
            };
            Ok(edits
                .into_iter()
                .map(|edit| edit_one(tx, user, device, &author, edit))
                .collect::<Vec<_>>())
        })?;
        // An edit that changed nothing answers with the record as it is.
        Ok(drafted
            .into_iter()
            .map(|outcome| match outcome {
                Drafted::Stored(record) => Ok(record),
                Drafted::Unchanged(id) => store.get(&id).map_err(EditRefusal::from),
                Drafted::Refused(why) => Err(why),
            })
            .collect())
    }
}

/// A record with its history (and the device of each change) and conflicts.
fn record_detail(store: &Store, id: &str) -> Result<Option<RecordDetail>> {
    let record = match store.get(id) {
        Ok(record) => record,
        Err(CoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let history = store.history(id)?;
    let mut devices = std::collections::HashMap::new();
    let mut stmt =
        store_conn(store).prepare_cached("SELECT device FROM relay_log WHERE hash = ?1")?;
    for entry in &history {
        let Ok(hash) = hex::decode(&entry.change) else {
            continue;
        };
        if let Some(device) = stmt
            .query_row([&hash[..]], |r| r.get::<_, String>(0))
            .optional()?
        {
            devices.insert(entry.change.clone(), device);
        }
    }
    drop(stmt);
    let conflicts = store.conflicts(id)?;
    Ok(Some(RecordDetail {
        record,
        history,
        devices,
        conflicts,
    }))
}

enum Drafted {
    Stored(Record),
    Unchanged(String),
    Refused(EditRefusal),
}

/// Drafts one office edit and pushes it through the device path.
fn edit_one(tx: &StoreTx<'_>, user: &User, device: &str, author: &Author, edit: Edit) -> Drafted {
    let target = match &edit {
        Edit::Create { .. } => None,
        Edit::Update { id, .. } | Edit::Delete { id } | Edit::Restore { id } => Some(id.clone()),
    };
    let draft = match tx.draft(author, edit) {
        Ok(Some(draft)) => draft,
        Ok(None) => return Drafted::Unchanged(target.unwrap_or_default()),
        Err(e) => return Drafted::Refused(e.into()),
    };
    let change = RecordBytes {
        record_id: draft.record_id.clone(),
        bytes: draft.change.bytes.clone(),
    };
    let pushed = push_all(tx, user, device, std::slice::from_ref(&change));
    match pushed.rejected.into_iter().next() {
        Some(rejection) => Drafted::Refused(EditRefusal::Refused(rejection.reason)),
        None => Drafted::Stored(draft.record),
    }
}

/// The actor `user` edits with from `device` in the office UI, made on first use.
fn web_actor(conn: &Connection, user: &str, device: &str) -> fieldcrm_core::Result<Vec<u8>> {
    let found: Option<Vec<u8>> = conn
        .prepare_cached("SELECT actor FROM relay_web_actors WHERE user_id = ?1 AND device = ?2")?
        .query_row([user, device], |r| r.get(0))
        .optional()?;
    if let Some(actor) = found {
        return Ok(actor);
    }
    let actor = rand::random::<[u8; 16]>().to_vec();
    conn.execute(
        "INSERT INTO relay_web_actors (user_id, device, actor) VALUES (?1, ?2, ?3)",
        params![user, device, actor],
    )?;
    Ok(actor)
}

/// The relay reads its own tables through the record store's connection.
fn store_conn(store: &Store) -> &Connection {
    store.sql()
}

fn head(conn: &Connection) -> Result<u64> {
    Ok(
        conn.query_row("SELECT coalesce(max(seq), 0) FROM relay_log", [], |r| {
            r.get::<_, i64>(0)
        })? as u64,
    )
}

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let role: String = r.get(1)?;
    Ok(User {
        id: r.get(0)?,
        role: role.parse().unwrap_or(Role::Rep),
        territories: parse_territories(&r.get::<_, String>(2)?),
    })
}

fn check_territories(conn: &Connection, territories: &[String]) -> fieldcrm_core::Result<()> {
    for t in territories {
        let known: Option<i64> = conn
            .query_row(
                "SELECT 1 FROM relay_territories WHERE name = ?1",
                [t],
                |r| r.get(0),
            )
            .optional()?;
        if known.is_none() {
            return Err(CoreError::Refused(format!(
                "unknown territory {t:?}; add it first with `fieldcrm-server territory add`"
            )));
        }
    }
    Ok(())
}

/// The log and documents as [`pull`] reads them.
struct SqliteLog<'a>(&'a Store);

impl LogSource for SqliteLog<'_> {
    fn head(&mut self) -> Result<u64> {
        head(store_conn(self.0))
    }

    fn entries_after(&mut self, user: &User, seq: u64, limit: usize) -> Result<Vec<LogEntry>> {
        let (filter, territories) = territory_filter(user, "territory");
        let (move_filter, _) = territory_filter(user, "prev_territory");
        let sql = format!(
            "SELECT seq, record_id, territory, prev_territory, device, bytes FROM relay_log
             WHERE seq > ?1 AND (1 {filter} OR 1 {move_filter}) ORDER BY seq LIMIT {limit}"
        );
        let mut stmt = store_conn(self.0).prepare_cached(&sql)?;
        let rows = stmt
            .query_map(params![seq as i64, territories], |r| {
                Ok(LogEntry {
                    seq: r.get::<_, i64>(0)? as u64,
                    record_id: r.get(1)?,
                    territory: r.get(2)?,
                    prev_territory: r.get(3)?,
                    device: r.get(4)?,
                    bytes: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn bootstrap_batch(
        &mut self,
        territory: &str,
        after_id: &str,
        device: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        // Ordered range scans on records(territory, id), or the id index.
        let own_only =
            "AND EXISTS (SELECT 1 FROM relay_log l WHERE l.record_id = records.id AND l.device != ?3)";
        let sql = if territory.is_empty() {
            format!("SELECT id FROM records WHERE id > ?1 AND ?2 = '' {own_only} ORDER BY id LIMIT {limit}")
        } else {
            format!("SELECT id FROM records WHERE territory = ?2 AND id > ?1 {own_only} ORDER BY id LIMIT {limit}")
        };
        let ids: Vec<String> = store_conn(self.0)
            .prepare_cached(&sql)?
            .query_map(params![after_id, territory, device], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        ids.into_iter()
            .map(|id| {
                let snapshot = self.0.snapshot(&id)?;
                Ok((id, snapshot))
            })
            .collect()
    }

    fn snapshot(&mut self, id: &str) -> Result<Vec<u8>> {
        Ok(self.0.snapshot(id)?)
    }
}

/// SQL narrowing rows to the user's territories (always true for office and
/// admin), with its parameter: a JSON array bound as `?2`.
fn territory_filter(user: &User, column: &str) -> (String, String) {
    if user.role.sees_all() {
        ("AND ?2 IS NOT NULL".into(), "[]".into())
    } else {
        (
            format!("AND {column} IN (SELECT value FROM json_each(?2))"),
            territories_json(&user.territories),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldcrm_core::protocol::{self, SyncRequest};

    /// What a fresh device of `user` pushes after creating `names` in `territory`.
    fn pushed(dir: &Path, user: &str, territory: &str, names: &[&str]) -> Vec<RecordBytes> {
        let mut device = Store::open(dir.join(format!("{user}-{territory}.db")), user).unwrap();
        for name in names {
            device
                .create(
                    Kind::Account,
                    fieldcrm_core::fields([("name", *name), ("territory", territory)]),
                )
                .unwrap();
        }
        let request: SyncRequest = protocol::decode(&device.sync_request().unwrap()).unwrap();
        request.push
    }

    fn rep(id: &str, territory: &str) -> User {
        User::sample(id, Role::Rep, &[territory])
    }

    #[test]
    fn a_refused_push_in_a_group_commit_leaves_its_neighbours_stored() {
        let dir = tempfile::tempdir().unwrap();
        let relay = SqliteRelay::open(&dir.path().join("relay")).unwrap();
        let jobs = vec![
            PushJob {
                user: rep("ann", "north"),
                device: "a".into(),
                changes: pushed(dir.path(), "ann", "north", &["Acme", "Birch"]),
            },
            // Bob's second record is outside his territory: refused alone.
            PushJob {
                user: rep("bob", "north"),
                device: "b".into(),
                changes: [
                    pushed(dir.path(), "bob", "north", &["Cedar"]),
                    pushed(dir.path(), "bob", "south", &["Dune"]),
                ]
                .concat(),
            },
            PushJob {
                user: rep("cat", "north"),
                device: "c".into(),
                changes: pushed(dir.path(), "cat", "north", &["Elm"]),
            },
        ];
        let outcomes = relay
            .with_records(|store| store.transaction(|tx| Ok(push_batch(tx, &jobs))))
            .unwrap();
        let answered: Vec<(usize, usize)> = outcomes
            .iter()
            .map(|o| (o.acks.len(), o.rejected.len()))
            .collect();
        assert_eq!(answered, vec![(2, 0), (1, 1), (1, 0)]);
        assert!(
            outcomes[1].rejected[0].reason.contains("outside yours"),
            "{:?}",
            outcomes[1].rejected
        );
        let stats = relay.stats().unwrap();
        assert_eq!((stats.records, stats.log_entries), (4, 4));
    }

    #[test]
    fn pushes_in_one_batch_are_all_stored_and_a_repeat_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let relay = SqliteRelay::open(&dir.path().join("relay")).unwrap();
        let jobs: Vec<PushJob> = ["ann", "bob"]
            .iter()
            .map(|u| PushJob {
                user: rep(u, "north"),
                device: format!("{u}-device"),
                changes: pushed(dir.path(), u, "north", &["One", "Two"]),
            })
            .collect();
        let outcomes = relay
            .with_records(|store| store.transaction(|tx| Ok(push_batch(tx, &jobs))))
            .unwrap();
        assert!(outcomes
            .iter()
            .all(|o| o.acks.len() == 2 && o.rejected.is_empty()));
        // Pushing the same again acknowledges without storing twice.
        let again = relay
            .with_records(|store| store.transaction(|tx| Ok(push_batch(tx, &jobs))))
            .unwrap();
        assert!(again.iter().all(|o| o.acks.len() == 2 && o.appended == 0));
        assert_eq!(relay.stats().unwrap().log_entries, 4);
    }
}
