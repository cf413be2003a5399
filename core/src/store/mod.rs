//! The device store: record documents, their query projection and the
//! outbox in one SQLite file (WAL). Every user action is ONE transaction that
//! writes the Automerge change, the projection and the outbox entry, so a
//! crash leaves all of it or none.

pub mod blobs;
mod convert;
mod documents;
mod draft;
mod events;
mod orders;
mod outbox;
pub(crate) mod projection;
mod rebase;
mod requeue;
mod response;
pub(crate) mod schema;
pub mod visits;

use std::fmt;
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use crate::doc::{ChangeMeta, Conflict, HistoryEntry, LocalChange, ParsedChange, RecordDoc};
use crate::error::{Error, Result};
use crate::model::{
    normalize_value, validate_id, Config, FieldType, Fields, Kind, Pipeline, Record, RecordId,
    Standing, Value,
};

pub use convert::{plan_conversion, Conversion, ConversionPlan, Converted};
pub use documents::{Received, StoredDoc};
pub use draft::{draft_on, Author, Draft, Edit};
pub use events::{ChangeKind, RecordChange};
pub use outbox::OutboxEntry;
use projection::SearchEntries;
pub use projection::{parse_stage_history, search_columns, stage_history, READING};
pub use rebase::RefusedChange;

/// Milliseconds since the Unix epoch; replaceable in tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// How to open a store.
#[derive(Clone)]
pub struct StoreOptions {
    /// Sync the WAL at every commit so a power loss loses no committed
    /// change (slower). Without it a process crash still loses nothing.
    pub durable: bool,
    pub clock: Clock,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durable: false,
            clock: Arc::new(system_now),
        }
    }
}

impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreOptions")
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

fn system_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What applying remote changes did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyOutcome {
    /// New changes now part of the record.
    pub applied: usize,
    /// Changes this store already had.
    pub duplicates: usize,
    /// Changes kept until the changes they depend on arrive.
    pub pending: usize,
}

/// One record to create in a batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewRecord {
    pub kind: Kind,
    pub fields: Fields,
}

/// Outbox totals: changes waiting to be sent, held by the relay for an
/// office user's review, and refused (kept until retried or discarded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxStatus {
    pub pending: usize,
    pub held: usize,
    pub rejected: usize,
}

/// A device's CRM store. Writes take `&mut self` (one writer); wrap it in a
/// mutex to share it between threads.
pub struct Store {
    conn: Connection,
    path: String,
    user: String,
    actor: Vec<u8>,
    device_id: String,
    /// The pipeline set on this store before the organisation
    /// configuration existed (or the default), under the configuration.
    base_pipeline: Pipeline,
    /// The organisation configuration as this store holds it.
    config: Config,
    clock: Clock,
    /// The user's territories as the relay last said (`["*"]`: all);
    /// `None` before the first sync.
    view: Option<Vec<String>>,
    /// The user's standing under the write rules, as the relay last said.
    standing: Option<Standing>,
}

/// Who makes local changes, and the rules they are made under.
pub(crate) struct Writer<'a> {
    pub actor: &'a [u8],
    pub user: &'a str,
    pub config: &'a Config,
    pub meta: ChangeMeta,
    pub view: Option<&'a [String]>,
    /// The user's standing as the relay last said; `None` before.
    pub standing: Option<Standing>,
}

impl Writer<'_> {
    /// Refuses at the call a change the write rules keep this user from
    /// making (as the relay would), once the relay has said who they are.
    fn check_rules(&self, kind: Kind, before: Option<&Record>, paths: &[&str]) -> Result<()> {
        let Some(standing) = self.standing else {
            return Ok(());
        };
        let touched: Vec<crate::model::TouchedField> = paths
            .iter()
            .map(|p| crate::model::TouchedField {
                path: p.to_string(),
                now: Vec::new(),
                replaces_object: false,
            })
            .collect();
        crate::model::check_write_rules(self.config, kind, before, &touched, standing)
    }

    /// Refuses to put a record in a territory the user does not have (as
    /// far as the relay last said).
    fn check_territory(&self, fields: &Fields) -> Result<()> {
        let (Some(view), Some(Value::Text(t))) = (self.view, fields.get("territory")) else {
            return Ok(());
        };
        // The shared territory is everyone's; the data model says which
        // kinds live there, the write rules who changes them.
        if t == crate::model::SHARED_TERRITORY || view.iter().any(|v| v == "*" || v == t) {
            return Ok(());
        }
        Err(Error::invalid(
            "territory",
            format!("{t:?}"),
            &format!("not one of your territories ({})", view.join(", ")),
        ))
    }

    /// Refuses to edit a record the user no longer has: one of a territory
    /// not theirs, or one the relay said to evict that is only still here
    /// because its changes wait (sent, or held for review).
    fn check_holds(&self, conn: &Connection, id: &str) -> Result<()> {
        let Some(view) = self.view.filter(|v| !v.iter().any(|t| t == "*")) else {
            return Ok(());
        };
        let territory: Option<String> = conn
            .prepare_cached("SELECT territory FROM records WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?
            .flatten();
        // The shared territory (the configuration) is everyone's to hold;
        // the write rules say who may change it.
        let gone = match &territory {
            Some(t) => t != crate::model::SHARED_TERRITORY && !view.contains(t),
            None => false,
        } || outbox::is_deferred(conn, id)?;
        if gone {
            return Err(Error::NotYours {
                id: id.to_string(),
                territory: territory.unwrap_or_default(),
            });
        }
        Ok(())
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("user", &self.user)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store at `path` for `user`.
    pub fn open(path: impl AsRef<Path>, user: &str) -> Result<Store> {
        Store::open_with(path, user, StoreOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, user: &str, options: StoreOptions) -> Result<Store> {
        let path_str = path.as_ref().to_string_lossy().into_owned();
        if user.trim().is_empty() || user.len() > 256 {
            return Err(Error::invalid(
                "user",
                format!("{user:?}"),
                "a user id is 1 to 256 bytes",
            ));
        }
        let not_a_store = |e: rusqlite::Error| match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => Error::NotAStore {
                path: path_str.clone(),
                reason: "the file is not a SQLite database".into(),
            },
            _ => Error::Sqlite(e),
        };
        let mut conn = Connection::open(path.as_ref()).map_err(not_a_store)?;
        schema::prepare(&conn, options.durable).map_err(|e| match e {
            Error::Sqlite(e) => not_a_store(e),
            e => e,
        })?;
        schema::migrate(&mut conn, &path_str)?;

        let tx = conn.transaction()?;
        let device_id = match meta_get(&tx, "device_id")? {
            Some(id) => id,
            None => {
                let id = uuid::Uuid::now_v7().to_string();
                meta_set(&tx, "device_id", &id)?;
                id
            }
        };
        let actor: Vec<u8> = match tx
            .query_row("SELECT actor FROM actors WHERE user_id = ?1", [user], |r| {
                r.get(0)
            })
            .optional()?
        {
            Some(actor) => actor,
            None => {
                // A fresh actor per (device, user): the relay binds actors to users.
                let actor = uuid::Uuid::new_v4().as_bytes().to_vec();
                tx.execute(
                    "INSERT INTO actors (user_id, actor) VALUES (?1, ?2)",
                    params![user, actor],
                )?;
                actor
            }
        };
        let base_pipeline = match meta_get(&tx, "pipeline")? {
            Some(json) => serde_json::from_str(&json).map_err(|e| {
                Error::InvalidPipeline(format!("stored pipeline is unreadable: {e}"))
            })?,
            None => Pipeline::default(),
        };
        // An unreadable cursor is reported by the next sync, not here.
        let view = meta_get(&tx, "sync.cursor")?
            .and_then(|json| serde_json::from_str::<crate::protocol::Cursor>(&json).ok())
            .and_then(|cursor| cursor.view)
            .map(record_view);
        let config = read_config(&tx, &base_pipeline)?;
        let standing =
            meta_get(&tx, "sync.standing")?.and_then(|s| serde_json::from_str::<Standing>(&s).ok());
        tx.commit()?;
        Ok(Store {
            conn,
            path: path_str,
            user: user.to_string(),
            actor,
            config,
            standing,
            device_id,
            base_pipeline,
            clock: options.clock,
            view,
        })
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// The file this store keeps its data in.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// This device's Automerge actor id for the current user, as hex.
    pub fn actor_hex(&self) -> String {
        self.actor.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn pipeline(&self) -> &Pipeline {
        self.config.pipeline()
    }

    /// The organisation configuration (pipeline, picklists, custom
    /// fields) as this store last received it.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Reads the configuration again after its record changed.
    pub(crate) fn reload_config(&mut self) -> Result<()> {
        self.config = read_config(&self.conn, &self.base_pipeline)?;
        Ok(())
    }

    /// Read access for queries ([`crate::query`]).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The SQL connection, for a host that keeps its own tables in the same
    /// file (the relay), to *read* them. Writes go through
    /// [`StoreTx::sql`] inside [`Store::transaction`].
    pub fn sql(&self) -> &Connection {
        &self.conn
    }

    fn meta(&self) -> ChangeMeta {
        ChangeMeta {
            user: self.user.clone(),
            time: (self.clock)(),
        }
    }

    /// A write transaction, and the writer of the local changes made in it.
    fn begin(&mut self) -> Result<(Transaction<'_>, Writer<'_>)> {
        let meta = self.meta();
        let tx = self.conn.transaction()?;
        let w = Writer {
            actor: &self.actor,
            user: &self.user,
            config: &self.config,
            meta,
            view: self.view.as_deref(),
            standing: self.standing,
        };
        Ok((tx, w))
    }

    /// The user's territories as the relay last said (`["*"]`: every one);
    /// `None` before the first sync. Creating or moving a record outside
    /// them is refused at the call.
    pub fn territories(&self) -> Option<&[String]> {
        self.view.as_deref()
    }

    /// Replaces the deal pipeline. Refused while a live deal sits in a stage
    /// the new pipeline lacks.
    pub fn set_pipeline(&mut self, pipeline: Pipeline) -> Result<()> {
        let mut stmt = self.conn.prepare(
            "SELECT stage, count(*) FROM records WHERE kind = 'deal' AND deleted = 0 GROUP BY stage",
        )?;
        let in_use = stmt
            .query_map([], |r| {
                Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        drop(stmt);
        for (stage, n) in in_use {
            if let Some(stage) = stage.filter(|s| !pipeline.contains(s)) {
                return Err(Error::InvalidPipeline(format!(
                    "{n} deal(s) are in stage {stage:?}, which the new pipeline lacks; move them first"
                )));
            }
        }
        let json =
            serde_json::to_string(&pipeline).map_err(|e| Error::InvalidPipeline(e.to_string()))?;
        meta_set(&self.conn, "pipeline", &json)?;
        self.base_pipeline = pipeline;
        self.reload_config()
    }

    // ----- local edits -------------------------------------------------

    /// Creates a record; returns it as stored.
    pub fn create(&mut self, kind: Kind, fields: Fields) -> Result<Record> {
        let (tx, w) = self.begin()?;
        let record = create_in(&tx, &w, None, kind, fields)?;
        tx.commit()?;
        Ok(record)
    }

    /// Creates many records in one transaction (imports): all or none.
    /// Later records may refer to earlier ones of the same batch.
    pub fn create_many(
        &mut self,
        records: impl IntoIterator<Item = NewRecord>,
    ) -> Result<Vec<RecordId>> {
        self.create_batch("batch", records.into_iter().map(|r| Ok(Some(r))))
    }

    /// Imports newline-delimited JSON, one `{"kind": .., "fields": {..}}`
    /// per line, in one transaction: all lines or none. Read line by line.
    pub fn import_ndjson(&mut self, path: impl AsRef<Path>) -> Result<Vec<RecordId>> {
        let file = std::io::BufReader::new(std::fs::File::open(path.as_ref())?);
        let lines = file.split(b'\n').map(|line| {
            let line = line.map_err(|e| format!("cannot read: {e}"))?;
            let text = std::str::from_utf8(&line)
                .map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to()))?;
            if text.trim().is_empty() {
                return Ok(None);
            }
            serde_json::from_str(text)
                .map(Some)
                .map_err(|e| e.to_string())
        });
        self.create_batch(&path.as_ref().display().to_string(), lines)
    }

    /// Creates records in one transaction; `None` items are skipped and the
    /// first failure (numbered from 1) aborts the whole batch.
    fn create_batch<I>(&mut self, source: &str, items: I) -> Result<Vec<RecordId>>
    where
        I: IntoIterator<Item = std::result::Result<Option<NewRecord>, String>>,
    {
        let (tx, w) = self.begin()?;
        let mut ids = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            let at = |reason: String| Error::Import {
                path: source.to_string(),
                line: index + 1,
                reason,
            };
            let Some(new) = item.map_err(at)? else {
                continue;
            };
            let record =
                create_in(&tx, &w, None, new.kind, new.fields).map_err(|e| at(e.to_string()))?;
            ids.push(record.id);
        }
        tx.commit()?;
        Ok(ids)
    }

    /// Changes some fields of a record; `Value::Null` clears an optional one.
    /// Writing a field that is in conflict resolves the conflict.
    pub fn update(&mut self, id: &str, fields: Fields) -> Result<Record> {
        self.edit(id, |tx, w, doc, kind| {
            update_fields(tx, w, doc, kind, fields)
        })
    }

    /// Resolves a conflict on `field` by writing `value` (one of the
    /// competing values or a new one); the change supersedes every competitor.
    pub fn resolve_conflict(&mut self, id: &str, field: &str, value: Value) -> Result<Record> {
        self.update(id, crate::model::fields([(field, value)]))
    }

    /// Replaces `delete` characters at `pos` (Unicode code points) of a long
    /// text field (notes, activity body) with `insert`.
    pub fn splice_text(
        &mut self,
        id: &str,
        field: &str,
        pos: usize,
        delete: usize,
        insert: &str,
    ) -> Result<Record> {
        self.edit(id, |_, w, doc, kind| {
            match kind.field(field) {
                Some(spec) if spec.ty == FieldType::LongText => {}
                Some(_) => {
                    return Err(Error::invalid(
                        field,
                        "splice",
                        "only long text fields can be spliced",
                    ))
                }
                None => {
                    return Err(Error::UnknownField {
                        kind,
                        field: field.to_string(),
                    })
                }
            }
            let current = doc.read()?;
            let text = current.text(field).unwrap_or("");
            let kept: usize = text
                .chars()
                .enumerate()
                .filter(|(i, _)| *i < pos || *i >= pos.saturating_add(delete))
                .map(|(_, c)| c.len_utf8())
                .sum();
            let len = kept + insert.len();
            if len > crate::model::MAX_LONG_TEXT {
                return Err(Error::OversizeValue {
                    field: field.into(),
                    len,
                    max: crate::model::MAX_LONG_TEXT,
                });
            }
            doc.splice_text(w.actor, field, pos, delete, insert, &w.meta)
        })
    }

    /// Marks a record deleted (a tombstone that syncs like any edit).
    pub fn delete(&mut self, id: &str) -> Result<Record> {
        self.set_deleted(id, true)
    }

    /// Brings a deleted record back.
    pub fn restore(&mut self, id: &str) -> Result<Record> {
        self.set_deleted(id, false)
    }

    fn set_deleted(&mut self, id: &str, deleted: bool) -> Result<Record> {
        self.edit(id, |_, w, doc, _| set_deleted_on(w, doc, deleted))
    }

    /// One local edit as one transaction (see [`edit_in`]).
    fn edit<F>(&mut self, id: &str, f: F) -> Result<Record>
    where
        F: FnOnce(
            &Transaction<'_>,
            &Writer<'_>,
            &mut RecordDoc,
            Kind,
        ) -> Result<Option<LocalChange>>,
    {
        let (tx, w) = self.begin()?;
        let record = edit_in(&tx, &w, id, f)?;
        tx.commit()?;
        Ok(record)
    }

    // ----- reads -------------------------------------------------------

    /// A record as it is now, read from its document.
    pub fn get(&self, id: &str) -> Result<Record> {
        self.load(id)?.read()
    }

    pub(crate) fn load(&self, id: &str) -> Result<RecordDoc> {
        validate_id("id", id)?;
        let loaded =
            documents::load(&self.conn, id)?.ok_or_else(|| Error::NotFound(id.to_string()))?;
        Ok(loaded.doc)
    }

    /// Every change to a record: time, user, actor and the device it
    /// belongs to (this device's own, or as the relay said; `None` while
    /// unknown), old → new per field.
    pub fn history(&self, id: &str) -> Result<Vec<HistoryEntry>> {
        let mut entries = self.load(id)?.history()?;
        let own = self.actor_hex();
        let mut lookup = self
            .conn
            .prepare_cached("SELECT device FROM actor_devices WHERE actor = ?1")?;
        for entry in &mut entries {
            entry.device = if entry.actor == own {
                Some(self.device_id.clone())
            } else {
                lookup.query_row([&entry.actor], |r| r.get(0)).optional()?
            };
        }
        Ok(entries)
    }

    /// A record as it stood at `time` (ms since the epoch).
    pub fn record_at(&self, id: &str, time: i64) -> Result<Record> {
        self.load(id)?.read_at_time(time)
    }

    /// Fields of a record that hold competing concurrent values.
    pub fn conflicts(&self, id: &str) -> Result<Vec<Conflict>> {
        self.load(id)?.conflicts()
    }

    // ----- merge primitive for sync -------------------------------------

    /// Applies changes received for record `id`: idempotent (known changes
    /// are counted, not stored twice), order-independent (a change whose
    /// dependencies are missing is kept and applied when they arrive), and
    /// atomic with the projection update. Malformed bytes or another
    /// record's changes fail the whole call and store nothing.
    pub fn apply_changes(&mut self, id: &str, changes: &[Vec<u8>]) -> Result<ApplyOutcome> {
        validate_id("record id", id)?;
        let parsed = changes
            .iter()
            .map(|bytes| ParsedChange::parse(id, bytes))
            .collect::<Result<Vec<_>>>()?;
        let tx = self.conn.transaction()?;
        let outcome = apply_in(&tx, id, parsed)?;
        tx.commit()?;
        Ok(outcome)
    }

    /// Merges a compacted document received for record `id` (bootstrap).
    pub fn apply_snapshot(&mut self, id: &str, snapshot: &[u8]) -> Result<ApplyOutcome> {
        validate_id("record id", id)?;
        let tx = self.conn.transaction()?;
        let outcome = apply_snapshot_in(&tx, id, snapshot)?;
        tx.commit()?;
        Ok(outcome)
    }

    /// Runs `f` in one transaction: everything it does commits together or
    /// not at all. Hosts (the relay, the sync client) use it to keep their
    /// own tables in step with the records.
    pub fn transaction<R, E: From<Error>>(
        &mut self,
        f: impl FnOnce(&StoreTx<'_>) -> std::result::Result<R, E>,
    ) -> std::result::Result<R, E> {
        let tx = StoreTx {
            tx: self.conn.transaction().map_err(Error::from)?,
            base: &self.base_pipeline,
            clock: &self.clock,
        };
        let result = f(&tx)?;
        tx.tx.commit().map_err(Error::from)?;
        Ok(result)
    }

    /// Removes records from this store without a tombstone: they left the
    /// device's territories. Returns how many were present.
    pub fn evict(&mut self, ids: &[String]) -> Result<usize> {
        self.transaction(|tx| tx.evict(ids))
    }

    /// Changes of record `id` that a party with `heads` lacks (all of them
    /// for empty heads), oldest first.
    pub fn changes_since(&self, id: &str, heads: &[[u8; 32]]) -> Result<Vec<Vec<u8>>> {
        Ok(self.load(id)?.changes_since(heads))
    }

    /// The heads (latest change hashes) of record `id`.
    pub fn heads(&self, id: &str) -> Result<Vec<[u8; 32]>> {
        Ok(self.load(id)?.heads())
    }

    /// The record's compacted document, for bootstrapping another party.
    pub fn snapshot(&self, id: &str) -> Result<Vec<u8>> {
        validate_id("id", id)?;
        match documents::compact_snapshot(&self.conn, id)? {
            Some(bytes) => Ok(bytes),
            None => Ok(self.load(id)?.save()),
        }
    }

    /// Ids of stored documents after `after` in id order, at most `limit`.
    pub fn record_ids_after(&self, after: &str, limit: usize) -> Result<Vec<RecordId>> {
        documents::ids_after(&self.conn, after, limit)
    }

    // ----- outbox and sync state ----------------------------------------

    /// Unacknowledged local changes in the order they were made.
    pub fn outbox(
        &self,
        after_seq: i64,
        limit: usize,
        include_rejected: bool,
    ) -> Result<Vec<OutboxEntry>> {
        outbox::entries(&self.conn, after_seq, limit, include_rejected)
    }

    pub fn outbox_status(&self) -> Result<OutboxStatus> {
        let (pending, held, rejected) = outbox::count(&self.conn)?;
        Ok(OutboxStatus {
            pending,
            held,
            rejected,
        })
    }

    /// The relay stored these changes durably: drop them from the outbox.
    pub fn ack(&mut self, hashes: &[[u8; 32]]) -> Result<usize> {
        self.transaction(|tx| tx.ack(hashes))
    }

    /// A sync-state value (cursor and the like) kept with the data.
    pub fn sync_state(&self, key: &str) -> Result<Option<String>> {
        meta_get(&self.conn, &format!("sync.{key}"))
    }

    pub fn set_sync_state(&mut self, key: &str, value: &str) -> Result<()> {
        meta_set(&self.conn, &format!("sync.{key}"), value)
    }

    // ----- maintenance ---------------------------------------------------

    /// Remakes the query projection from the documents, one document at a
    /// time, in one transaction.
    pub fn rebuild_projection(&mut self) -> Result<usize> {
        let tx = self.conn.transaction()?;
        projection::clear(&tx)?;
        let mut n = 0;
        let mut after = String::new();
        loop {
            let ids = documents::ids_after(&tx, &after, 500)?;
            let Some(last) = ids.last().cloned() else {
                break;
            };
            for id in ids {
                if let Some(mut loaded) = documents::load(&tx, &id)? {
                    n += usize::from(projection::write(&tx, &mut loaded.doc)?.is_some());
                }
            }
            after = last;
        }
        tx.commit()?;
        Ok(n)
    }

    /// Folds every document's incremental changes into its snapshot.
    pub fn compact(&mut self) -> Result<usize> {
        let ids: Vec<String> = self
            .conn
            .prepare("SELECT DISTINCT doc_id FROM doc_changes")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let tx = self.conn.transaction()?;
        for id in &ids {
            if let Some(mut loaded) = documents::load(&tx, id)? {
                documents::compact(&tx, &mut loaded)?;
            }
        }
        tx.commit()?;
        Ok(ids.len())
    }

    /// Closes the store and deletes its files (a user leaving the device).
    /// Callers check first that nothing waits to be sent (`outbox_status`).
    pub fn delete_files(self) -> Result<()> {
        let path = self.path.clone();
        self.conn.close().map_err(|(_, e)| Error::Sqlite(e))?;
        for suffix in ["", "-wal", "-shm"] {
            match std::fs::remove_file(format!("{path}{suffix}")) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }

    /// Runs SQLite's integrity check; `Ok(())` when the file is sound.
    pub fn integrity_check(&self) -> Result<()> {
        let result: String = self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if result == "ok" {
            Ok(())
        } else {
            Err(Error::NotAStore {
                path: self.path.clone(),
                reason: format!("integrity check failed: {result}"),
            })
        }
    }
}

/// A transaction on the store, from [`Store::transaction`].
pub struct StoreTx<'conn> {
    tx: Transaction<'conn>,
    base: &'conn Pipeline,
    clock: &'conn Clock,
}

impl fmt::Debug for StoreTx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreTx").finish_non_exhaustive()
    }
}

impl<'conn> StoreTx<'conn> {
    /// The transaction, for the host's own tables. Never write to the
    /// store's tables through it.
    pub fn sql(&self) -> &Transaction<'conn> {
        &self.tx
    }

    /// A record's document as stored, to receive changes into and
    /// [`save`](Self::save_doc); `None` if the store does not hold it.
    pub fn load_doc(&self, id: &str) -> Result<Option<StoredDoc>> {
        validate_id("record id", id)?;
        documents::load(&self.tx, id)
    }

    /// A stored record's compacted document, as this transaction sees it.
    pub fn snapshot(&self, id: &str) -> Result<Option<Vec<u8>>> {
        validate_id("record id", id)?;
        if let Some(bytes) = documents::compact_snapshot(&self.tx, id)? {
            return Ok(Some(bytes));
        }
        Ok(documents::load(&self.tx, id)?.map(|mut d| d.doc.save()))
    }

    /// Stores what `doc` received since it was loaded: the changes, the
    /// projection, a compaction when due. Returns the record as stored.
    pub fn save_doc(&self, doc: &mut StoredDoc) -> Result<Option<Record>> {
        documents::save(&self.tx, doc)
    }

    /// [`StoreTx::save_doc`] for many documents, their full-text entries
    /// written together after the rest (one index segment, not one each).
    pub fn save_docs<'d>(&self, docs: impl IntoIterator<Item = &'d mut StoredDoc>) -> Result<()> {
        SearchEntries::written_after(&self.tx, |search| {
            docs.into_iter()
                .try_for_each(|doc| documents::save_into(&self.tx, doc, search).map(drop))
        })
    }

    /// [`Store::draft`] inside this transaction: it sees what the
    /// transaction wrote so far.
    pub fn draft(&self, author: &Author, edit: Edit) -> Result<Option<Draft>> {
        draft::draft_in(&self.tx, &self.config()?, author, (self.clock)(), edit)
    }

    /// The organisation configuration as this transaction sees it.
    pub fn config(&self) -> Result<Config> {
        read_config(&self.tx, self.base)
    }

    /// Applies changes as a device does (see [`Store::apply_changes`]).
    pub fn apply_changes(&self, id: &str, changes: Vec<ParsedChange>) -> Result<ApplyOutcome> {
        validate_id("record id", id)?;
        apply_in(&self.tx, id, changes)
    }

    pub fn apply_snapshot(&self, id: &str, snapshot: &[u8]) -> Result<ApplyOutcome> {
        validate_id("record id", id)?;
        apply_snapshot_in(&self.tx, id, snapshot)
    }

    pub fn evict(&self, ids: &[String]) -> Result<usize> {
        let mut n = 0;
        for id in ids {
            n += usize::from(evict_in(&self.tx, id)?);
        }
        Ok(n)
    }

    /// Ids of live and deleted records in any of `territories`.
    pub fn ids_in_territories(&self, territories: &[String]) -> Result<Vec<RecordId>> {
        ids_in_territories(&self.tx, territories)
    }

    pub fn ack(&self, hashes: &[[u8; 32]]) -> Result<usize> {
        let mut n = 0;
        for hash in hashes {
            n += usize::from(outbox::ack(&self.tx, hash)?);
        }
        Ok(n)
    }

    pub fn set_sync_state(&self, key: &str, value: &str) -> Result<()> {
        meta_set(&self.tx, &format!("sync.{key}"), value)
    }
}

/// Validates and creates one record inside `tx`, with a new id or `id`
/// (a refused creation made again keeps its record's id).
pub(crate) fn create_in(
    tx: &Transaction<'_>,
    w: &Writer<'_>,
    id: Option<&str>,
    kind: Kind,
    mut fields: Fields,
) -> Result<Record> {
    if kind.field("owner").is_some() {
        fields
            .entry("owner".into())
            .or_insert_with(|| Value::from(w.user));
    }
    let fields = validate_fields(tx, kind, fields, w.config, true)?;
    w.check_territory(&fields)?;
    let paths: Vec<&str> = fields.keys().map(String::as_str).collect();
    w.check_rules(kind, None, &paths)?;
    let id = id.map_or_else(|| uuid::Uuid::now_v7().to_string(), String::from);
    let (mut doc, change) = RecordDoc::create(&id, kind, &fields, w.actor, &w.meta)?;
    documents::insert(tx, &id, &change.bytes)?;
    outbox::push(tx, &id, &change.hash, &change.bytes)?;
    projection::write(tx, &mut doc)?.ok_or_else(|| Error::NotFound(id.clone()))
}

/// One local edit inside `tx`: load the document, let `f` make at most one
/// change, then store the change, the projection and the outbox entry.
pub(crate) fn edit_in<F>(tx: &Transaction<'_>, w: &Writer<'_>, id: &str, f: F) -> Result<Record>
where
    F: FnOnce(&Transaction<'_>, &Writer<'_>, &mut RecordDoc, Kind) -> Result<Option<LocalChange>>,
{
    validate_id("id", id)?;
    let mut loaded = documents::load(tx, id)?.ok_or_else(|| Error::NotFound(id.to_string()))?;
    let kind = loaded
        .doc
        .kind()?
        .ok_or_else(|| Error::NotFound(id.to_string()))?;
    w.check_holds(tx, id)?;
    let Some(change) = f(tx, w, &mut loaded.doc, kind)? else {
        return loaded.doc.read();
    };
    documents::add_change(tx, id, &change.hash, &change.bytes)?;
    outbox::push(tx, id, &change.hash, &change.bytes)?;
    loaded.stored_changes.push(change.hash);
    let record =
        projection::write(tx, &mut loaded.doc)?.ok_or_else(|| Error::NotFound(id.to_string()))?;
    if loaded.stored_changes.len() >= documents::COMPACT_AFTER {
        documents::compact(tx, &mut loaded)?;
    }
    Ok(record)
}

/// Writes validated `fields` of a live record as one change.
pub(crate) fn update_fields(
    tx: &Transaction<'_>,
    w: &Writer<'_>,
    doc: &mut RecordDoc,
    kind: Kind,
    fields: Fields,
) -> Result<Option<LocalChange>> {
    let before = doc.read()?;
    if before.deleted {
        return Err(Error::Deleted(doc.id().to_string()));
    }
    let fields = validate_fields(tx, kind, fields, w.config, false)?;
    w.check_territory(&fields)?;
    // What the change will touch: the values that differ.
    let paths: Vec<&str> = fields
        .iter()
        .filter(|(p, v)| before.get(p).unwrap_or(&Value::Null) != *v)
        .map(|(p, _)| p.as_str())
        .collect();
    w.check_rules(kind, Some(&before), &paths)?;
    doc.update(w.actor, kind, &fields, &w.meta)
}

/// Sets the tombstone as one change (none if it is already so).
pub(crate) fn set_deleted_on(
    w: &Writer<'_>,
    doc: &mut RecordDoc,
    deleted: bool,
) -> Result<Option<LocalChange>> {
    let before = doc.read()?;
    if before.deleted == deleted {
        return Ok(None);
    }
    w.check_rules(before.kind, Some(&before), &["deleted"])?;
    doc.set_deleted(w.actor, deleted, &w.meta)
}

/// Finds a record a reference points at: its kind and whether it is deleted.
pub type LookupRecord<'a> = &'a dyn Fn(&str) -> Result<Option<(Kind, bool)>>;

/// [`LookupRecord`] over this store's projection.
fn lookup_in(conn: &Connection, id: &str) -> Result<Option<(Kind, bool)>> {
    let found: Option<(String, bool)> = conn
        .prepare_cached("SELECT kind, deleted FROM records WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    found
        .map(|(kind, deleted)| Ok((kind.parse::<Kind>()?, deleted)))
        .transpose()
}

/// Normalises every field, checks references against the store and, for a
/// new record, that every required field is present.
fn validate_fields(
    conn: &Connection,
    kind: Kind,
    fields: Fields,
    config: &Config,
    creating: bool,
) -> Result<Fields> {
    validate_fields_with(&|id| lookup_in(conn, id), kind, fields, config, creating)
}

/// [`validate_fields`] for any storage: `lookup` resolves references.
pub fn validate_fields_with(
    lookup: LookupRecord<'_>,
    kind: Kind,
    fields: Fields,
    config: &Config,
    creating: bool,
) -> Result<Fields> {
    let mut out = Fields::new();
    for (path, value) in fields {
        let value = normalize_value(kind, &path, value, config)?;
        if let (Some(FieldType::Ref(expected)), Value::Text(target)) =
            (config.field_type(kind, &path), &value)
        {
            check_reference(lookup, &path, target, expected)?;
        }
        if !(creating && value.is_null()) {
            out.insert(path, value);
        }
    }
    if creating {
        // What a new record of the kind starts with unless given.
        for (path, value) in kind.creation_defaults() {
            out.entry(path.to_string())
                .or_insert_with(|| Value::from(*value));
        }
        let required = kind
            .fields()
            .iter()
            .filter(|f| f.required)
            .map(|f| f.path.to_string())
            .chain(
                config
                    .custom_fields_of(kind)
                    .filter(|f| f.entry.required && !f.entry.retired)
                    .map(|f| f.path()),
            );
        if let Some(missing) = required.into_iter().find(|p| !out.contains_key(p)) {
            return Err(Error::MissingField {
                kind,
                field: missing,
            });
        }
    }
    Ok(out)
}

/// The territories records can be in, of a view the relay gave: the
/// shared one holds only the organisation configuration.
pub(crate) fn record_view(mut view: Vec<String>) -> Vec<String> {
    view.retain(|t| t != crate::model::SHARED_TERRITORY);
    view
}

/// The configuration a store holds: its record over `base`.
fn read_config(conn: &Connection, base: &Pipeline) -> Result<Config> {
    let record = match documents::load(conn, crate::model::CONFIG_ID)? {
        Some(mut stored) => match stored.doc.kind()? {
            Some(Kind::Config) => Some(stored.doc.read()?),
            _ => None,
        },
        None => None,
    };
    Ok(Config::new(base.clone(), record.as_ref()))
}

pub(crate) fn check_reference(
    lookup: LookupRecord<'_>,
    field: &str,
    target: &str,
    expected: Option<Kind>,
) -> Result<()> {
    let found = lookup(target)?;
    let expected_text = expected.map_or("an existing record".to_string(), |k| {
        format!("an existing {k}")
    });
    let bad = || Error::BadReference {
        field: field.to_string(),
        target: target.to_string(),
        expected: expected_text.clone(),
    };
    match found {
        None => Err(bad()),
        Some((_, true)) => Err(Error::BadReference {
            field: field.to_string(),
            target: target.to_string(),
            expected: format!("{expected_text} (it is deleted)"),
        }),
        Some((kind, false)) => match expected {
            Some(k) if k != kind => Err(bad()),
            _ => Ok(()),
        },
    }
}

/// Applies parsed remote changes to one record inside `tx`, as a device
/// does: a change whose dependencies are missing is kept until they arrive.
pub(crate) fn apply_in(
    tx: &Transaction<'_>,
    id: &str,
    changes: Vec<ParsedChange>,
) -> Result<ApplyOutcome> {
    SearchEntries::written_after(tx, |search| apply_into(tx, id, changes, search))
}

/// [`apply_in`], leaving full-text entries in `search`.
pub(crate) fn apply_into(
    tx: &Transaction<'_>,
    id: &str,
    changes: Vec<ParsedChange>,
    search: &mut SearchEntries,
) -> Result<ApplyOutcome> {
    let mut stored = documents::load(tx, id)?.unwrap_or_else(|| StoredDoc::new(id));
    let mut outcome = ApplyOutcome::default();
    let mut fresh: Vec<ParsedChange> = Vec::new();
    for change in changes {
        let hash = change.hash();
        if stored.knows(&hash) || fresh.iter().any(|c| c.hash() == hash) {
            outcome.duplicates += 1;
        } else {
            fresh.push(change);
        }
    }
    if fresh.is_empty() {
        return Ok(outcome);
    }
    stored.doc.apply_remote(fresh.clone())?;
    outcome.pending = fresh
        .iter()
        .filter(|c| !stored.doc.has_change(&c.hash()))
        .count();
    outcome.applied = fresh.len() - outcome.pending;
    stored.fresh = fresh;
    documents::save_into(tx, &mut stored, search)?;
    Ok(outcome)
}

/// Stores the compacted document of a record this store lacks with the
/// relay's projection of it, without reading the document (a bootstrap's
/// cost: docs/decisions/0012-bootstrap-projections.md). `false`, with
/// nothing written, when the projection cannot stand for the document —
/// another reading, another record, not a record's JSON, bytes that are not
/// one whole Automerge chunk, or a record this store has: then the
/// caller reads the document.
pub(crate) fn adopt_snapshot(
    tx: &Transaction<'_>,
    id: &str,
    snapshot: &[u8],
    shipped: &crate::protocol::Projection,
    search: &mut SearchEntries,
) -> Result<bool> {
    if shipped.reading != projection::READING
        || shipped.record_id != id
        || !RecordDoc::is_one_chunk(snapshot)
    {
        return Ok(false);
    }
    let Ok(record) = serde_json::from_str::<Record>(&shipped.record) else {
        return Ok(false);
    };
    if record.id != id || documents::exists(tx, id)? {
        return Ok(false);
    }
    documents::insert(tx, id, snapshot)?;
    let stages = shipped
        .stage_history
        .as_deref()
        .filter(|_| record.kind == Kind::Deal);
    projection::upsert(
        tx,
        &record,
        &shipped.record,
        shipped.has_conflicts,
        stages,
        search,
    )?;
    Ok(true)
}

/// Merges a compacted document for record `id` inside `tx`.
pub(crate) fn apply_snapshot_in(
    tx: &Transaction<'_>,
    id: &str,
    snapshot: &[u8],
) -> Result<ApplyOutcome> {
    SearchEntries::written_after(tx, |search| apply_snapshot_into(tx, id, snapshot, search))
}

/// [`apply_snapshot_in`], leaving full-text entries in `search`.
pub(crate) fn apply_snapshot_into(
    tx: &Transaction<'_>,
    id: &str,
    snapshot: &[u8],
    search: &mut SearchEntries,
) -> Result<ApplyOutcome> {
    let mut incoming = RecordDoc::from_snapshot(id, snapshot)?;
    let incoming_changes = incoming.changes_since(&[]).len();
    Ok(match documents::load(tx, id)? {
        None => {
            documents::insert(tx, id, snapshot)?;
            projection::write_into(tx, &mut incoming, search)?;
            ApplyOutcome {
                applied: incoming_changes,
                ..Default::default()
            }
        }
        Some(mut loaded) => {
            let before = loaded.doc.changes_since(&[]).len();
            loaded.doc.merge(incoming)?;
            let applied = loaded.doc.changes_since(&[]).len() - before;
            if applied > 0 {
                documents::compact(tx, &mut loaded)?;
                projection::write_into(tx, &mut loaded.doc, search)?;
            }
            ApplyOutcome {
                applied,
                duplicates: incoming_changes - applied,
                pending: loaded.stored_changes.len(),
            }
        }
    })
}

/// Removes a record's document and projection from this store (it left the
/// device's territories). Unsent local changes stay in the outbox.
/// Ids of live and deleted records in any of `territories`.
pub(crate) fn ids_in_territories(
    conn: &Connection,
    territories: &[String],
) -> Result<Vec<RecordId>> {
    let json = serde_json::Value::from(territories.to_vec()).to_string();
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM records WHERE territory IN (SELECT value FROM json_each(?1))",
    )?;
    let ids = stmt
        .query_map([json], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(ids)
}

pub(crate) fn evict_in(tx: &Transaction<'_>, id: &str) -> Result<bool> {
    let rowid: Option<i64> = tx
        .prepare_cached("SELECT rowid FROM records WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    if let Some(rowid) = rowid {
        tx.prepare_cached("DELETE FROM records_fts WHERE rowid = ?1")?
            .execute([rowid])?;
        tx.prepare_cached("DELETE FROM records WHERE rowid = ?1")?
            .execute([rowid])?;
        tx.prepare_cached("DELETE FROM attachment_refs WHERE record_id = ?1")?
            .execute([id])?;
    }
    tx.prepare_cached("DELETE FROM doc_changes WHERE doc_id = ?1")?
        .execute([id])?;
    Ok(tx
        .prepare_cached("DELETE FROM documents WHERE id = ?1")?
        .execute([id])?
        > 0)
}

fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

pub(crate) fn meta_set(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.prepare_cached("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")?
        .execute(params![key, value])?;
    Ok(())
}

#[cfg(test)]
mod tests;
