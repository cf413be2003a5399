//! The embedded relay store: one SQLite file holding the record documents
//! and their projection (a core [`Store`], so the office UI gets queries,
//! history and conflicts for free) plus the relay's own tables: the change
//! log, users, tokens, territories and actor bindings.
//!
//! Connections: one writer (behind a mutex, with [`super::group_commit`] for
//! pushes) and a small pool of readers. SQLite's WAL lets readers work while
//! the writer writes, so pulls, sign-in checks and the office UI's reports
//! never wait behind a push; each read runs in one read transaction, a
//! consistent snapshot of what has committed.
//!
//! Cursor correctness: SQLite runs one write transaction at a time, and a
//! push assigns log sequence numbers inside its write transaction. So a
//! transaction holding a lower number always commits before one holding a
//! higher number starts, and a reader can never see seq N+1 without seq N.

pub mod backup;
mod blob_files;
mod push_store;
mod tables;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use fieldcrm_core::protocol::{Cursor, Projection, RecordBytes};
use fieldcrm_core::{
    DealGroups, Edit, Error as CoreError, ListQuery, OwnerCount, Page, Pipeline, Record, StageFlow,
    Store, StoreOptions, StoreTx,
};

use super::access::Scope;
use super::group_commit::GroupCommit;
use super::pull::{self, LogEntry, LogSource, PageSize};
use super::push::{self, PushJob};
use super::review::{self, Decided, Held};
use super::{
    EditOutcome, EditRefusal, PullPage, PushOutcome, RecordDetail, RelayError, RelayStats,
    RelayStore, Result, Role, User,
};
use push_store::SqlitePush;

/// Read connections in the pool: enough for both cores and a slow report.
const READERS: u32 = 4;
/// Page cache of each reader, in KiB: 8 MiB holds the full-text index's
/// document sizes that ranking reads for every match (a search matching
/// 40,000 of 100,000 records: 240 ms with SQLite's default 2 MiB, which
/// re-reads each page from the OS, against ~60 ms).
const READER_CACHE_KIB: i64 = 8192;
/// Store calls worth running at once: pushes waiting for the writer form
/// the next group commit, and reads run beside it.
const PARALLELISM: usize = 8;

/// Relay store in `DIR/relay.db`.
pub struct SqliteRelay {
    writer: Mutex<Store>,
    pushes: GroupCommit<PushJob, Result<PushOutcome>>,
    readers: r2d2::Pool<Readers>,
    log_id: String,
    blobs: blob_files::BlobFiles,
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
        let path = dir.join(backup::FILE);
        let mut store = Store::open_with(&path, "relay", relay_options())?;
        let log_id = write(&mut store, |tx| {
            tables::migrate(tx.sql())?;
            tables::log_id(tx.sql())
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
            log_id,
            blobs: blob_files::BlobFiles::in_folder(dir)?,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave SQLite half-written
        // (the transaction rolls back), so the store stays usable.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` in one write transaction of the writer.
    fn write<R>(&self, f: impl FnOnce(&StoreTx<'_>) -> Result<R>) -> Result<R> {
        write(&mut self.lock(), f)
    }

    /// [`Self::write`] for work that may be refused: a refusal rolls the
    /// transaction back as an error would, and is answered as a refusal.
    fn write_or_refuse<R>(
        &self,
        f: impl FnOnce(&StoreTx<'_>) -> Result<std::result::Result<R, EditRefusal>>,
    ) -> Result<std::result::Result<R, EditRefusal>> {
        let mut refused = None;
        let written = self.write(|tx| {
            f(tx)?.map_err(|refusal| {
                refused = Some(refusal);
                // Any error rolls the transaction back.
                RelayError::Invalid("refused".into())
            })
        });
        match (written, refused) {
            (_, Some(refusal)) => Ok(Err(refusal)),
            (Ok(done), None) => Ok(Ok(done)),
            (Err(e), None) => Err(e),
        }
    }

    /// Runs `f` on a pooled reader inside one read transaction: every query
    /// in it sees the same committed state.
    fn read<R>(&self, f: impl FnOnce(&Store) -> Result<R>) -> Result<R> {
        let store = self.readers.get()?;
        // Dropped at the end: a rollback, which for reads only ends the snapshot.
        let _snapshot = store.sql().unchecked_transaction()?;
        f(&store)
    }

    /// Write access to the relay's record store (tests and tools).
    pub fn with_records<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        f(&mut self.lock())
    }
}

/// One transaction on `store`; any error rolls it back.
fn write<R>(store: &mut Store, f: impl FnOnce(&StoreTx<'_>) -> Result<R>) -> Result<R> {
    store.transaction(f)
}

/// Writes a group commit's pushes, each answered on its own: a push that
/// fails (storage) is rolled back to its savepoint and the others go on.
fn push_batch(tx: &StoreTx<'_>, jobs: &[PushJob]) -> Vec<Result<PushOutcome>> {
    let run = |sql: &str| tx.sql().prepare_cached(sql).and_then(|mut s| s.execute([]));
    jobs.iter()
        .map(|job| {
            run("SAVEPOINT push_job")?;
            let pushed = job.run(&mut SqlitePush { tx });
            if pushed.is_err() {
                run("ROLLBACK TO push_job")?;
            }
            run("RELEASE push_job")?;
            pushed
        })
        .collect()
}

impl RelayStore for SqliteRelay {
    fn push(
        &self,
        user: &User,
        device: &str,
        known: &Cursor,
        changes: Vec<RecordBytes>,
    ) -> Result<PushOutcome> {
        if changes.is_empty() {
            return Ok(PushOutcome::default());
        }
        let job = PushJob {
            user: user.clone(),
            device: device.to_string(),
            known: known.clone(),
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
                match write(store, |tx| Ok(push_batch(tx, &jobs))) {
                    Ok(outcomes) => outcomes,
                    Err(e) => jobs.iter().map(|_| Err(e.for_each_of_a_group())).collect(),
                }
            },
            || {
                Err(RelayError::Storage(
                    "the push was interrupted before it was stored; send it again".into(),
                ))
            },
        )
    }

    fn pull(&self, user: &User, device: &str, cursor: &Cursor, size: PageSize) -> Result<PullPage> {
        self.read(|store| pull::pull(&mut SqliteLog(store), user, device, cursor, size))
    }

    fn head(&self) -> Result<u64> {
        self.read(|store| tables::head(store.sql()))
    }

    fn log_id(&self) -> &str {
        &self.log_id
    }

    fn parallelism(&self) -> usize {
        PARALLELISM
    }

    fn stats(&self) -> Result<RelayStats> {
        self.read(|store| {
            let (records, log_entries) = tables::counts(store.sql())?;
            Ok(RelayStats {
                records,
                log_entries,
                head: tables::head(store.sql())?,
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
        self.write(|tx| tables::add_user(tx.sql(), id, password_hash, role, territories))
    }

    fn user(&self, id: &str) -> Result<Option<(User, String)>> {
        self.read(|store| tables::user(store.sql(), id))
    }

    fn list_users(&self) -> Result<Vec<(User, String)>> {
        self.read(|store| tables::list_users(store.sql()))
    }

    fn remove_user(&self, id: &str) -> Result<bool> {
        self.write(|tx| tables::remove_user(tx.sql(), id))
    }

    fn set_territories(&self, id: &str, territories: &[String]) -> Result<()> {
        self.write(|tx| tables::set_territories(tx.sql(), id, territories))
    }

    fn set_password_hash(&self, id: &str, password_hash: &str) -> Result<()> {
        self.write(|tx| tables::set_password_hash(tx.sql(), id, password_hash))
    }

    fn user_settings(&self, user: &str) -> Result<Vec<(String, String)>> {
        self.read(|store| tables::user_settings(store.sql(), user))
    }

    fn set_user_setting(&self, user: &str, name: &str, value: Option<&str>) -> Result<()> {
        self.write(|tx| tables::set_user_setting(tx.sql(), user, name, value))
    }

    fn add_territory(&self, name: &str) -> Result<()> {
        super::check_territory_name(name)?;
        self.write(|tx| tables::add_territory(tx.sql(), name))
    }

    fn territories(&self) -> Result<Vec<String>> {
        self.read(|store| tables::territories(store.sql()))
    }

    fn territory_parents(&self) -> Result<Vec<(String, Option<String>)>> {
        self.read(|store| tables::territory_parents(store.sql()))
    }

    fn set_territory_parent(&self, name: &str, parent: Option<&str>) -> Result<()> {
        self.write(|tx| tables::set_territory_parent(tx.sql(), name, parent))
    }

    fn add_token(&self, user: &str, token_hash: &[u8; 32]) -> Result<()> {
        self.write(|tx| tables::add_token(tx.sql(), user, token_hash))
    }

    fn user_by_token(&self, token_hash: &[u8; 32]) -> Result<Option<User>> {
        self.read(|store| tables::user_by_token(store.sql(), token_hash))
    }

    fn revoke_tokens(&self, user: &str) -> Result<usize> {
        self.write(|tx| tables::revoke_tokens(tx.sql(), user))
    }

    fn revoke_token(&self, token_hash: &[u8; 32]) -> Result<bool> {
        self.write(|tx| tables::revoke_token(tx.sql(), token_hash))
    }

    fn base_pipeline(&self) -> Result<Pipeline> {
        self.read(|store| push_store::pipeline(store.sql()))
    }

    fn list(&self, q: &ListQuery) -> Result<Page> {
        self.read(|store| Ok(store.list(q)?))
    }

    fn search_page(&self, text: &str, q: &ListQuery, most: usize) -> Result<Page> {
        self.read(|store| Ok(store.search_page(text, q, most)?))
    }

    fn record(&self, id: &str) -> Result<Option<RecordDetail>> {
        self.read(|store| record_detail(store, id))
    }

    fn record_at(&self, id: &str, time: i64) -> Result<Record> {
        self.read(|store| Ok(store.record_at(id, time)?))
    }

    fn deal_groups(&self, territories: &[String], at: Option<i64>) -> Result<DealGroups> {
        self.read(|store| {
            Ok(match at {
                None => store.deal_groups(None, territories)?,
                Some(time) => store.deal_groups_at(territories, time)?,
            })
        })
    }

    fn stage_flow(&self, territories: &[String]) -> Result<StageFlow> {
        self.read(|store| Ok(store.stage_flow(territories)?))
    }

    fn owner_counts(&self, territories: &[String]) -> Result<Vec<OwnerCount>> {
        self.read(|store| Ok(store.owner_counts(territories)?))
    }

    fn edit(&self, user: &User, device: &str, edits: Vec<Edit>) -> Result<Vec<EditOutcome>> {
        let now = super::now_ms();
        self.write(|tx| push::edit(&mut SqlitePush { tx }, user, device, edits, now))
    }

    fn edit_together(
        &self,
        user: &User,
        device: &str,
        edits: Vec<Edit>,
    ) -> Result<std::result::Result<Vec<Record>, EditRefusal>> {
        let now = super::now_ms();
        self.write_or_refuse(|tx| {
            let outcomes = push::edit(&mut SqlitePush { tx }, user, device, edits, now)?;
            Ok(super::push::all_or_none(outcomes))
        })
    }

    fn merge(
        &self,
        user: &User,
        survivor: &str,
        duplicate: &str,
        take: &[String],
    ) -> Result<std::result::Result<super::merge::Merged, EditRefusal>> {
        let now = super::now_ms();
        self.write_or_refuse(|tx| {
            super::merge::merge(&mut SqlitePush { tx }, user, survivor, duplicate, take, now)
        })
    }

    fn unmerge(
        &self,
        user: &User,
        tombstone: &str,
    ) -> Result<std::result::Result<Record, EditRefusal>> {
        let now = super::now_ms();
        self.write_or_refuse(|tx| {
            super::merge::unmerge(&mut SqlitePush { tx }, user, tombstone, now)
        })
    }

    fn held_changes(&self, scope: &Scope) -> Result<Vec<Held>> {
        self.read(|store| tables::held(store.sql(), scope))
    }

    fn document(&self, id: &str) -> Result<Option<Vec<u8>>> {
        self.read(|store| match store.snapshot(id) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(CoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        })
    }

    fn decide(&self, decider: &User, hashes: &[[u8; 32]], accept: bool) -> Result<Vec<Decided>> {
        let now = super::now_ms();
        self.write(|tx| review::decide(&mut SqlitePush { tx }, decider, hashes, accept, now))
    }

    fn blob_refs(&self, sha: &str) -> Result<Vec<super::blobs::BlobRef>> {
        self.read(|store| blob_files::refs(store.sql(), sha))
    }

    fn blob_held(&self, sha: &str) -> Result<super::blobs::Held> {
        self.blobs.held(sha)
    }

    fn append_blob(&self, sha: &str, offset: u64, bytes: &[u8]) -> Result<u64> {
        self.blobs.append(sha, offset, bytes)
    }

    fn read_blob(&self, sha: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.blobs.read(sha, offset, len)
    }

    fn seal_blob(&self, sha: &str, _size: u64) -> Result<()> {
        self.blobs.seal(sha)
    }

    fn drop_partial(&self, sha: &str) -> Result<()> {
        self.blobs.drop_partial(sha)
    }

    fn collect_blobs(&self, now: i64, grace_ms: i64) -> Result<usize> {
        self.write(|tx| self.blobs.collect(tx.sql(), now, grace_ms))
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
    let mut received = std::collections::HashMap::new();
    for entry in &history {
        let Ok(hash) = hex::decode(&entry.change) else {
            continue;
        };
        if let Some((device, at)) = tables::logged_of(store.sql(), &hash)? {
            devices.insert(entry.change.clone(), device);
            if let Some(at) = at {
                received.insert(entry.change.clone(), at);
            }
        }
    }
    let conflicts = store.conflicts(id)?;
    Ok(Some(RecordDetail {
        record,
        history,
        devices,
        received,
        conflicts,
    }))
}

/// The log and documents as [`pull`] reads them.
struct SqliteLog<'a>(&'a Store);

impl LogSource for SqliteLog<'_> {
    fn head(&mut self) -> Result<u64> {
        tables::head(self.0.sql())
    }

    fn entries_after(&mut self, scope: &Scope, seq: u64, limit: usize) -> Result<Vec<LogEntry>> {
        tables::entries_after(self.0.sql(), scope, seq, limit)
    }

    fn bootstrap_batch(
        &mut self,
        territory: &str,
        after_id: &str,
        not_only_from: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(RecordBytes, Projection)>> {
        tables::bootstrap_rows(self.0.sql(), territory, after_id, not_only_from, limit)?
            .into_iter()
            .map(|projection| {
                let snapshot = RecordBytes {
                    bytes: self.0.snapshot(&projection.record_id)?,
                    record_id: projection.record_id.clone(),
                };
                Ok((snapshot, projection))
            })
            .collect()
    }

    fn snapshot(&mut self, id: &str) -> Result<Vec<u8>> {
        Ok(self.0.snapshot(id)?)
    }

    fn actor_devices(
        &mut self,
        records: &[String],
        pushers: &std::collections::BTreeSet<(String, String)>,
    ) -> Result<Vec<(String, String)>> {
        tables::actor_devices(self.0.sql(), records, pushers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fieldcrm_core::protocol::{self, SyncRequest};
    use fieldcrm_core::Kind;

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

    /// A relay that knows the territories and reps the tests push as.
    fn relay(dir: &Path) -> SqliteRelay {
        let relay = SqliteRelay::open(&dir.join("relay")).unwrap();
        for t in ["north", "south"] {
            relay.add_territory(t).unwrap();
        }
        for u in ["ann", "bob", "cat"] {
            relay
                .add_user(u, "hash", Role::Rep, &["north".into()])
                .unwrap();
        }
        relay
    }

    #[test]
    fn a_refused_push_in_a_group_commit_leaves_its_neighbours_stored() {
        let dir = tempfile::tempdir().unwrap();
        let relay = relay(dir.path());
        let jobs = vec![
            PushJob {
                user: rep("ann", "north"),
                device: "a".into(),
                known: Cursor::default(),
                changes: pushed(dir.path(), "ann", "north", &["Acme", "Birch"]),
            },
            // Bob's second record is outside his territory: refused alone.
            PushJob {
                user: rep("bob", "north"),
                device: "b".into(),
                known: Cursor::default(),
                changes: [
                    pushed(dir.path(), "bob", "north", &["Cedar"]),
                    pushed(dir.path(), "bob", "south", &["Dune"]),
                ]
                .concat(),
            },
            PushJob {
                user: rep("cat", "north"),
                device: "c".into(),
                known: Cursor::default(),
                changes: pushed(dir.path(), "cat", "north", &["Elm"]),
            },
        ];
        let outcomes: Vec<PushOutcome> = relay
            .with_records(|store| {
                store.transaction(|tx| Ok::<_, RelayError>(push_batch(tx, &jobs)))
            })
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
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
        let relay = relay(dir.path());
        let jobs: Vec<PushJob> = ["ann", "bob"]
            .iter()
            .map(|u| PushJob {
                user: rep(u, "north"),
                device: format!("{u}-device"),
                known: Cursor::default(),
                changes: pushed(dir.path(), u, "north", &["One", "Two"]),
            })
            .collect();
        let batch = || -> Vec<PushOutcome> {
            relay
                .with_records(|store| {
                    store.transaction(|tx| Ok::<_, RelayError>(push_batch(tx, &jobs)))
                })
                .unwrap()
                .into_iter()
                .map(Result::unwrap)
                .collect()
        };
        let outcomes = batch();
        assert!(outcomes
            .iter()
            .all(|o| o.acks.len() == 2 && o.rejected.is_empty()));
        // Pushing the same again acknowledges without storing twice.
        let again = batch();
        assert!(again.iter().all(|o| o.acks.len() == 2 && o.appended == 0));
        assert_eq!(relay.stats().unwrap().log_entries, 4);
    }
}
