//! The PostgreSQL relay store, for deployments that outgrow one machine:
//! several relay processes behind a load balancer share one database.
//!
//! Each record is one row of `relay_documents` (its compacted Automerge
//! document, rewritten on every accepted change) and one row of
//! `relay_records` (the query projection with a `tsvector` for search).
//! The change log, users, tokens, territories and actor bindings have the
//! same shape as in the SQLite store.
//!
//! Cursor correctness: a sequence hands out numbers in the order
//! transactions ask, not the order they commit, so a reader could see seq
//! N+1 before N commits and skip N for ever. Every push therefore appends
//! to the log last, holding a transaction-scoped advisory lock
//! (`LOG_LOCK`) from taking its numbers until its commit is visible. A
//! transaction with a higher number can only take them after a lower one
//! has committed, so log order is commit order (docs/storage.md).
//!
//! Pushes lock the documents they change (`SELECT ... FOR UPDATE`) in
//! record-id order, so two relays pushing the same records cannot deadlock.
//! After commit, `NOTIFY fieldcrm_log` tells every relay process (see
//! [`PgRelay::listen`]) to wake its connected devices.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use fieldcrm_core::protocol::{Cursor, Projection, RecordBytes};
use fieldcrm_core::{
    check_field_filters, check_offset, stage_timeline, DealGroups, DealSums, Edit,
    Error as CoreError, Kind, ListQuery, OwnerCount, Page, Pipeline, Record, RecordDoc, SortBy,
    StageFlow, MAX_PAGE,
};
use postgres::types::ToSql;
use postgres::{GenericClient, NoTls};
use r2d2_postgres::PostgresConnectionManager;

mod push;
mod statements;

use push::PgPush;
use statements::{Cached, Manager, PgConnection};

mod blobs;

use super::access::Scope;
use super::pull::{self, LogEntry, LogSource, PageSize};
use super::review::{Decided, Held};
use super::{
    EditOutcome, EditRefusal, PullPage, PushOutcome, RecordDetail, RelayError, RelayStats,
    RelayStore, Result, Role, User,
};

type Pool = r2d2::Pool<Manager>;

/// 2 added `relay_review`, 3 `relay_user_settings` (created by the schema
/// below), 4 `relay_records.stage_history` (filled from the documents when
/// a store is upgraded), 5 `relay_actors.device`, 6 `relay_log.received_at`.
const SCHEMA_VERSION: i64 = 8;
/// Advisory lock held from taking log numbers until commit ("FCRM").
const LOG_LOCK: i64 = 0x4643_524D;
/// Advisory lock held while migrating, so relays starting together do not race.
const MIGRATE_LOCK: i64 = 0x4643_524E;
/// The channel relays hear about new log entries on.
pub const CHANNEL: &str = "fieldcrm_log";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS relay_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- One compacted Automerge document per record ('' while being created).
CREATE TABLE IF NOT EXISTS relay_documents (id TEXT PRIMARY KEY, snapshot BYTEA NOT NULL);
-- Query projection, derived from the documents.
CREATE TABLE IF NOT EXISTS relay_records (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    name          TEXT NOT NULL,
    owner         TEXT,
    territory     TEXT,
    account_id    TEXT,
    related_to    TEXT,
    stage         TEXT,
    amount        BIGINT,
    currency      TEXT,
    close_date    TEXT,
    due_at        BIGINT,
    done          BOOLEAN,
    deleted       BOOLEAN NOT NULL,
    has_conflicts BOOLEAN NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    record        TEXT NOT NULL,
    search        TSVECTOR NOT NULL,
    -- A deal's stages as JSON, oldest first (schema 4).
    stage_history TEXT
);
CREATE INDEX IF NOT EXISTS relay_records_kind_name ON relay_records (kind, name);
CREATE INDEX IF NOT EXISTS relay_records_kind_updated ON relay_records (kind, updated_at);
CREATE INDEX IF NOT EXISTS relay_records_owner ON relay_records (owner);
CREATE INDEX IF NOT EXISTS relay_records_territory ON relay_records (territory, id);
CREATE INDEX IF NOT EXISTS relay_records_account ON relay_records (account_id) WHERE account_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS relay_records_related ON relay_records (related_to) WHERE related_to IS NOT NULL;
CREATE INDEX IF NOT EXISTS relay_records_conflicts ON relay_records (kind, territory) WHERE has_conflicts AND NOT deleted;
CREATE INDEX IF NOT EXISTS relay_records_stage ON relay_records (stage) WHERE stage IS NOT NULL;
CREATE INDEX IF NOT EXISTS relay_records_search ON relay_records USING GIN (search);
CREATE SEQUENCE IF NOT EXISTS relay_log_seq;
CREATE TABLE IF NOT EXISTS relay_log (
    seq            BIGINT PRIMARY KEY,
    record_id      TEXT NOT NULL,
    hash           BYTEA NOT NULL UNIQUE,
    territory      TEXT,
    prev_territory TEXT,
    device         TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    bytes          BYTEA NOT NULL,
    -- When this relay received the change (ms; NULL before schema 6).
    received_at    BIGINT
);
CREATE INDEX IF NOT EXISTS relay_log_territory ON relay_log (territory, seq);
CREATE INDEX IF NOT EXISTS relay_log_record ON relay_log (record_id, device);
CREATE INDEX IF NOT EXISTS relay_log_moves ON relay_log (prev_territory, seq) WHERE prev_territory IS NOT NULL;
-- parent: the territory this one sits under (schema 7); NULL at the top.
CREATE TABLE IF NOT EXISTS relay_territories (name TEXT PRIMARY KEY, parent TEXT);
CREATE TABLE IF NOT EXISTS relay_users (
    id            TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    territories   TEXT[] NOT NULL
);
CREATE TABLE IF NOT EXISTS relay_tokens (
    hash    BYTEA PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES relay_users (id) ON DELETE CASCADE
);
-- device: the one that first pushed with the actor (schema 5; NULL before).
CREATE TABLE IF NOT EXISTS relay_actors (actor TEXT PRIMARY KEY, user_id TEXT NOT NULL, device TEXT);
CREATE TABLE IF NOT EXISTS relay_web_actors (
    user_id TEXT NOT NULL,
    device  TEXT NOT NULL,
    actor   BYTEA NOT NULL,
    PRIMARY KEY (user_id, device)
);
-- Changes held for an office user's review (relay/review.rs).
CREATE TABLE IF NOT EXISTS relay_review (
    seq        BIGSERIAL PRIMARY KEY,
    hash       BYTEA NOT NULL UNIQUE,
    record_id  TEXT NOT NULL,
    territory  TEXT,
    user_id    TEXT NOT NULL,
    device     TEXT NOT NULL,
    bytes      BYTEA NOT NULL,
    held_at    BIGINT NOT NULL,
    status     TEXT NOT NULL,
    decided_by TEXT,
    decided_at BIGINT
);
CREATE INDEX IF NOT EXISTS relay_review_status ON relay_review (status, territory);
-- A user's own settings (time zone, saved filters: see preferences.rs).
CREATE TABLE IF NOT EXISTS relay_user_settings (
    user_id TEXT NOT NULL REFERENCES relay_users (id) ON DELETE CASCADE,
    name    TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (user_id, name)
);
";

/// Columns later schemas added to tables an older store has. Run only when
/// upgrading: even with IF NOT EXISTS, ALTER TABLE locks the table, which
/// would stall the other relays each time one starts.
const ADDED_COLUMNS: &str = "
ALTER TABLE relay_records ADD COLUMN IF NOT EXISTS stage_history TEXT;
ALTER TABLE relay_actors ADD COLUMN IF NOT EXISTS device TEXT;
ALTER TABLE relay_log ADD COLUMN IF NOT EXISTS received_at BIGINT;
ALTER TABLE relay_territories ADD COLUMN IF NOT EXISTS parent TEXT;
";

/// Indexes on those columns, made once they exist.
const LATER_INDEXES: &str =
    "CREATE INDEX IF NOT EXISTS relay_actors_device ON relay_actors (user_id, device);";

/// Relay store in a PostgreSQL database.
pub struct PgRelay {
    pool: Pool,
    config: postgres::Config,
    log_id: String,
}

impl std::fmt::Debug for PgRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRelay").finish_non_exhaustive()
    }
}

impl PgRelay {
    /// Connects to `url` (`postgres://user@host/db`), creating or upgrading
    /// the schema. `pool_size` bounds the connections this process opens.
    pub fn open(url: &str, pool_size: u32) -> Result<Self> {
        let config: postgres::Config = url
            .parse()
            .map_err(|e| RelayError::Invalid(format!("bad PostgreSQL URL: {e}")))?;
        let manager = Manager(PostgresConnectionManager::new(config.clone(), NoTls));
        let pool = r2d2::Pool::builder()
            .max_size(pool_size.max(1))
            .connection_timeout(Duration::from_secs(10))
            .build(manager)?;
        let mut relay = PgRelay {
            pool,
            config,
            log_id: String::new(),
        };
        relay.log_id = relay.migrate()?;
        Ok(relay)
    }

    /// Gives the log a new identity, after the database was restored from
    /// a backup (docs/deploy.md): each device then sends again the changes
    /// it made that the restored relay may lack. Run it with every relay
    /// stopped; relays started afterwards use the new identity.
    pub fn mark_restored(&self) -> Result<String> {
        let id = uuid::Uuid::new_v4().to_string();
        self.conn()?.execute(
            "INSERT INTO relay_meta (key, value) VALUES ('log_id', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&id],
        )?;
        Ok(id)
    }

    /// One transaction of push-path work: `f`, then the log appended
    /// ([`PgPush::finish`]) and the commit. An error rolls it all back
    /// (the transaction is dropped).
    fn write<R>(&self, f: impl FnOnce(&mut PgPush<'_, '_>) -> Result<R>) -> Result<R> {
        self.write_if(f, |_| true)
    }

    /// [`PgRelay::write`] for work that may be refused: a refusal rolls it
    /// back too and is answered as one.
    fn write_or_refuse<R>(
        &self,
        f: impl FnOnce(&mut PgPush<'_, '_>) -> Result<std::result::Result<R, EditRefusal>>,
    ) -> Result<std::result::Result<R, EditRefusal>> {
        self.write_if(f, |done| done.is_ok())
    }

    /// `f` in a push transaction, committed only if `keep` says so.
    fn write_if<R>(
        &self,
        f: impl FnOnce(&mut PgPush<'_, '_>) -> Result<R>,
        keep: impl FnOnce(&R) -> bool,
    ) -> Result<R> {
        let mut conn = self.conn()?;
        let PgConnection { client, statements } = &mut *conn;
        let mut tx = client.transaction()?;
        let mut store = PgPush::new(&mut tx, statements);
        let done = f(&mut store)?;
        if !keep(&done) {
            return Ok(done);
        }
        store.finish()?;
        tx.commit()?;
        Ok(done)
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<Manager>> {
        Ok(self.pool.get()?)
    }

    /// Creates or upgrades the schema; returns the log's identity.
    fn migrate(&self) -> Result<String> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])?;
        // Every `IF NOT EXISTS` of an existing table is a NOTICE, which
        // the driver logs: one line per table at every start and command.
        tx.batch_execute("SET LOCAL client_min_messages = warning")?;
        tx.batch_execute(SCHEMA)?;
        tx.batch_execute(blobs::SCHEMA)?;
        let version: Option<String> = tx
            .query_opt("SELECT value FROM relay_meta WHERE key = 'schema'", &[])?
            .map(|r| r.get(0));
        match version.and_then(|v| v.parse::<i64>().ok()) {
            None => {
                tx.execute(
                    "INSERT INTO relay_meta (key, value) VALUES ('schema', $1)",
                    &[&SCHEMA_VERSION.to_string()],
                )?;
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(RelayError::Invalid(format!(
                    "relay schema version {v} is newer than this build ({SCHEMA_VERSION}); upgrade the server"
                )))
            }
            // Every step so far only added tables (made above) and
            // columns; 4 also fills the stage histories, 8 the blob refs.
            Some(v) if v < SCHEMA_VERSION => {
                tx.batch_execute(ADDED_COLUMNS)?;
                if v < 4 {
                    fill_stage_histories(&mut tx)?;
                }
                if v < 8 {
                    tx.batch_execute(blobs::FILL_REFS)?;
                }
                tx.execute(
                    "UPDATE relay_meta SET value = $1 WHERE key = 'schema'",
                    &[&SCHEMA_VERSION.to_string()],
                )?;
            }
            Some(_) => {}
        }
        tx.batch_execute(LATER_INDEXES)?;
        // The log's identity, made with the store (see `mark_restored`).
        tx.execute(
            "INSERT INTO relay_meta (key, value) VALUES ('log_id', $1) ON CONFLICT (key) DO NOTHING",
            &[&uuid::Uuid::new_v4().to_string()],
        )?;
        let log_id: String = tx
            .query_one("SELECT value FROM relay_meta WHERE key = 'log_id'", &[])?
            .get(0);
        tx.commit()?;
        Ok(log_id)
    }

    /// Calls `on_head` with the newest log sequence number (and the
    /// territories appended to, when the notice carries them) whenever any
    /// relay process on this database appends to the log. Runs on its own
    /// thread with its own connection, reconnecting after failures.
    pub fn listen(&self, on_head: impl Fn(u64, Option<BTreeSet<String>>) + Send + 'static) {
        let config = self.config.clone();
        std::thread::Builder::new()
            .name("fieldcrm-listen".into())
            .spawn(move || loop {
                if let Err(e) = listen_once(&config, &on_head) {
                    tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                }
                std::thread::sleep(Duration::from_secs(1));
            })
            .expect("spawning the listener thread");
    }
}

fn listen_once(
    config: &postgres::Config,
    on_head: &dyn Fn(u64, Option<BTreeSet<String>>),
) -> Result<()> {
    let mut client = config.connect(NoTls)?;
    client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    // Whatever was appended while not listening, in territories not known.
    on_head(head_from(&client.query_one(HEAD, &[])?), None);
    let mut notifications = client.notifications();
    let mut iter = notifications.blocking_iter();
    while let Some(note) = postgres::fallible_iterator::FallibleIterator::next(&mut iter)? {
        if let Some(notice) = LogNotice::parse(note.payload()) {
            on_head(notice.head, notice.territories);
        }
    }
    Ok(())
}

/// The payload of a log notification: JSON `{"head": N, "territories":
/// [...]}`, territories `null` when not known. A bare number (relays of
/// earlier builds) is a head with territories not known.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct LogNotice {
    pub head: u64,
    pub territories: Option<BTreeSet<String>>,
}

/// PostgreSQL refuses notification payloads of 8,000 bytes or more.
const MAX_NOTICE_TERRITORIES_BYTES: usize = 6_000;

impl LogNotice {
    fn parse(payload: &str) -> Option<LogNotice> {
        serde_json::from_str(payload).ok().or_else(|| {
            payload.parse().ok().map(|head| LogNotice {
                head,
                territories: None,
            })
        })
    }

    /// The territories as the notice will carry them: `None` if too many
    /// to fit in a notification.
    pub(crate) fn fitting(territories: &BTreeSet<String>) -> Option<&BTreeSet<String>> {
        let bytes: usize = territories.iter().map(|t| t.len() + 3).sum();
        (bytes <= MAX_NOTICE_TERRITORIES_BYTES).then_some(territories)
    }
}

/// The newest log sequence number (0 when empty).
const HEAD: &str = "SELECT coalesce(max(seq), 0) FROM relay_log";

fn head_from(row: &postgres::Row) -> u64 {
    row.get::<_, i64>(0) as u64
}

fn user_from_row(row: &postgres::Row) -> User {
    let role: String = row.get("role");
    User {
        id: row.get("id"),
        role: role.parse().unwrap_or(Role::Rep),
        territories: row.get("territories"),
    }
}

fn check_known_territories(conn: &mut impl GenericClient, territories: &[String]) -> Result<()> {
    for t in territories {
        if conn
            .query_opt("SELECT 1 FROM relay_territories WHERE name = $1", &[t])?
            .is_none()
        {
            return Err(RelayError::Invalid(format!(
                "unknown territory {t:?}; add it first with `fieldcrm-server territory add`"
            )));
        }
    }
    Ok(())
}

fn read_document(conn: &mut impl GenericClient, id: &str) -> Result<Option<RecordDoc>> {
    let row = conn.query_opt(
        "SELECT snapshot FROM relay_documents WHERE id = $1 AND snapshot <> ''",
        &[&id],
    )?;
    match row {
        Some(row) => {
            let snapshot: Vec<u8> = row.get(0);
            Ok(Some(RecordDoc::load(id, Some(&snapshot), [])?))
        }
        None => Ok(None),
    }
}

/// A page's offset, once its limit and offset are checked.
fn check_page(q: &ListQuery) -> Result<i64> {
    if q.limit == 0 || q.limit > MAX_PAGE {
        return Err(CoreError::InvalidQuery(format!(
            "limit {} must be between 1 and {MAX_PAGE}",
            q.limit
        ))
        .into());
    }
    check_field_filters(q)?;
    Ok(check_offset(q.offset)?)
}

/// Territory filter for the projection: `None` for every territory.
fn territories_param(territories: &[String]) -> Option<Vec<String>> {
    (!territories.is_empty()).then(|| territories.to_vec())
}

/// WHERE clause and parameters over `relay_records`.
#[derive(Default)]
struct Filter {
    clauses: Vec<String>,
    params: Vec<Box<dyn ToSql + Sync>>,
}

impl Filter {
    fn add(&mut self, clause: &str, value: impl ToSql + Sync + 'static) {
        self.params.push(Box::new(value));
        self.clauses
            .push(clause.replace('?', &format!("${}", self.params.len())));
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|p| p.as_ref()).collect()
    }
}

fn list_filter(q: &ListQuery) -> Filter {
    let mut f = Filter::default();
    if let Some(kind) = q.kind {
        f.add("kind = ?", kind.as_str().to_string());
    }
    if let Some(ids) = &q.ids {
        f.add("id = ANY(?)", ids.clone());
    }
    if let Some(owner) = &q.owner {
        f.add("owner = ?", owner.clone());
    }
    if let Some(territories) = territories_param(&q.territories) {
        f.add("territory = ANY(?)", territories);
    }
    if let Some(account) = &q.account_id {
        f.add("account_id = ?", account.clone());
    }
    if let Some(related) = &q.related_to {
        f.add("related_to = ?", related.clone());
    }
    if let Some(about) = &q.about {
        f.add(
            "(related_to = ? OR related_to IN (SELECT id FROM relay_records WHERE account_id = ?))",
            about.clone(),
        );
    }
    if let Some(stage) = &q.stage {
        f.add("stage = ?", stage.clone());
    }
    for (path, value) in &q.field_is {
        // `check_page` allows letters, digits, `_` and `.` only.
        f.add(
            &format!("(record::jsonb -> 'fields' ->> '{path}') = ?"),
            value.clone(),
        );
    }
    if let Some(since) = q.updated_since {
        f.add("updated_at >= ?", since);
    }
    if let Some(before) = q.due_before {
        f.add("due_at < ? AND NOT coalesce(done, false)", before);
    }
    if !q.include_deleted {
        f.clauses.push("NOT deleted".into());
    }
    if q.not_done {
        f.clauses.push("NOT coalesce(done, false)".into());
    }
    if q.only_conflicts {
        f.clauses.push("has_conflicts".into());
    }
    f
}

fn sort_column(sort: SortBy) -> &'static str {
    match sort {
        SortBy::Name => "name",
        SortBy::UpdatedAt => "updated_at",
        SortBy::CreatedAt => "created_at",
        SortBy::Amount => "amount",
        SortBy::CloseDate => "close_date",
        SortBy::DueAt => "due_at",
        SortBy::Stage => "stage",
    }
}

fn records_from(rows: Vec<postgres::Row>) -> Result<Vec<Record>> {
    rows.iter()
        .map(|r| {
            let json: String = r.get("record");
            serde_json::from_str(&json)
                .map_err(|e| RelayError::Invalid(format!("unreadable projection row: {e}")))
        })
        .collect()
}

/// Each word a prefix term, all required; nothing typed is query syntax.
fn ts_query(text: &str) -> Option<String> {
    let terms: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .take(16)
        .map(|t| format!("{}:*", t.to_lowercase()))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" & "))
}

/// The log as [`pull`] reads it, in one repeatable-read transaction.
struct PgLog<'a, 'b>(Cached<'a, 'b>);

impl LogSource for PgLog<'_, '_> {
    fn head(&mut self) -> Result<u64> {
        Ok(head_from(&self.0.query_one(HEAD, &[])?))
    }

    fn entries_after(&mut self, scope: &Scope, seq: u64, limit: usize) -> Result<Vec<LogEntry>> {
        let territories: Option<&Vec<String>> = match scope {
            Scope::All => None,
            Scope::Territories(t) => Some(t),
        };
        let rows = self.0.query(
            "SELECT seq, record_id, territory, prev_territory, device, bytes, user_id FROM relay_log
             WHERE seq > $1 AND ($2::text[] IS NULL OR territory = ANY($2) OR prev_territory = ANY($2))
             ORDER BY seq LIMIT $3",
            &[&(seq as i64), &territories, &(limit as i64)],
        )?;
        Ok(rows
            .iter()
            .map(|r| LogEntry {
                seq: r.get::<_, i64>(0) as u64,
                record_id: r.get(1),
                territory: r.get(2),
                prev_territory: r.get(3),
                device: r.get(4),
                bytes: r.get(5),
                user: r.get(6),
            })
            .collect())
    }

    fn bootstrap_batch(
        &mut self,
        territory: &str,
        after_id: &str,
        not_only_from: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(RecordBytes, Projection)>> {
        // Ids, documents and projections in one query per batch; an ordered range scan
        // on relay_records(territory, id), or the id index for everything.
        let scope = if territory.is_empty() {
            "$2 = ''"
        } else {
            "r.territory = $2"
        };
        let sql = format!(
            "SELECT r.id, d.snapshot, r.record, r.has_conflicts, r.stage_history
             FROM relay_records r JOIN relay_documents d ON d.id = r.id
             WHERE {scope} AND r.id > $1
               AND ($3::text IS NULL OR EXISTS
                   (SELECT 1 FROM relay_log l WHERE l.record_id = r.id AND l.device <> $3))
             ORDER BY r.id LIMIT $4"
        );
        let rows = self.0.query(
            &sql,
            &[&after_id, &territory, &not_only_from, &(limit as i64)],
        )?;
        Ok(rows
            .iter()
            .map(|r| {
                let snapshot = RecordBytes {
                    record_id: r.get(0),
                    bytes: r.get(1),
                };
                let projection = Projection {
                    record_id: snapshot.record_id.clone(),
                    reading: fieldcrm_core::READING,
                    record: r.get(2),
                    has_conflicts: r.get(3),
                    stage_history: r.get(4),
                };
                (snapshot, projection)
            })
            .collect())
    }

    fn snapshot(&mut self, id: &str) -> Result<Vec<u8>> {
        let row = self
            .0
            .query_opt("SELECT snapshot FROM relay_documents WHERE id = $1", &[&id])?;
        row.map(|r| r.get(0))
            .filter(|s: &Vec<u8>| !s.is_empty())
            .ok_or_else(|| RelayError::NotFound(format!("no record with id {id:?}")))
    }

    fn actor_devices(
        &mut self,
        records: &[String],
        pushers: &BTreeSet<(String, String)>,
    ) -> Result<Vec<(String, String)>> {
        let (users, devices): (Vec<&str>, Vec<&str>) = pushers
            .iter()
            .map(|(u, d)| (u.as_str(), d.as_str()))
            .unzip();
        let rows = self.0.query(
            "SELECT DISTINCT a.actor, a.device FROM relay_actors a
             WHERE (a.user_id, a.device) IN (SELECT * FROM unnest($2::text[], $3::text[]))
                OR (a.user_id, a.device) IN
                   (SELECT user_id, device FROM relay_log WHERE record_id = ANY($1))
             ORDER BY a.actor",
            &[&records, &users, &devices],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

impl RelayStore for PgRelay {
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
        let known = super::push::Known::from_cursor(known);
        self.write(|store| super::push::push(store, user, device, &known, &changes))
    }

    fn pull(&self, user: &User, device: &str, cursor: &Cursor, size: PageSize) -> Result<PullPage> {
        let mut conn = self.conn()?;
        let PgConnection { client, statements } = &mut *conn;
        // One snapshot for the whole page: the log, documents and projection agree.
        let mut tx = client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let page = pull::pull(
            &mut PgLog(Cached::new(&mut tx, statements)),
            user,
            device,
            cursor,
            size,
        )?;
        tx.commit()?;
        Ok(page)
    }

    fn head(&self) -> Result<u64> {
        Ok(head_from(&self.conn()?.query_one(HEAD, &[])?))
    }

    fn log_id(&self) -> &str {
        &self.log_id
    }

    fn stats(&self) -> Result<RelayStats> {
        let mut conn = self.conn()?;
        let row = conn.query_one(
            "SELECT (SELECT count(*) FROM relay_records), (SELECT count(*) FROM relay_log),
                    (SELECT coalesce(max(seq), 0) FROM relay_log)",
            &[],
        )?;
        Ok(RelayStats {
            records: row.get::<_, i64>(0) as u64,
            log_entries: row.get::<_, i64>(1) as u64,
            head: row.get::<_, i64>(2) as u64,
        })
    }

    fn add_user(
        &self,
        id: &str,
        password_hash: &str,
        role: Role,
        territories: &[String],
    ) -> Result<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        check_known_territories(&mut tx, territories)?;
        let inserted = tx.execute(
            "INSERT INTO relay_users (id, password_hash, role, territories) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO NOTHING",
            &[&id, &password_hash, &role.as_str(), &territories],
        )?;
        if inserted == 0 {
            return Err(RelayError::AlreadyExists(format!(
                "user {id:?} already exists"
            )));
        }
        tx.commit()?;
        Ok(())
    }

    fn user(&self, id: &str) -> Result<Option<(User, String)>> {
        let row = self.conn()?.query_opt(
            "SELECT id, role, territories, password_hash FROM relay_users WHERE id = $1",
            &[&id],
        )?;
        Ok(row.map(|r| (user_from_row(&r), r.get("password_hash"))))
    }

    fn list_users(&self) -> Result<Vec<(User, String)>> {
        let rows = self.conn()?.query(
            "SELECT id, role, territories, password_hash FROM relay_users ORDER BY id",
            &[],
        )?;
        Ok(rows.iter().map(|r| (user_from_row(r), r.get(3))).collect())
    }

    fn remove_user(&self, id: &str) -> Result<bool> {
        Ok(self
            .conn()?
            .execute("DELETE FROM relay_users WHERE id = $1", &[&id])?
            > 0)
    }

    fn user_settings(&self, user: &str) -> Result<Vec<(String, String)>> {
        let rows = self.conn()?.query(
            "SELECT name, value FROM relay_user_settings WHERE user_id = $1 ORDER BY name",
            &[&user],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn set_user_setting(&self, user: &str, name: &str, value: Option<&str>) -> Result<()> {
        let mut conn = self.conn()?;
        match value {
            Some(value) => conn.execute(
                "INSERT INTO relay_user_settings (user_id, name, value) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id, name) DO UPDATE SET value = excluded.value",
                &[&user, &name, &value],
            )?,
            None => conn.execute(
                "DELETE FROM relay_user_settings WHERE user_id = $1 AND name = $2",
                &[&user, &name],
            )?,
        };
        Ok(())
    }

    fn set_password_hash(&self, id: &str, password_hash: &str) -> Result<()> {
        let n = self.conn()?.execute(
            "UPDATE relay_users SET password_hash = $2 WHERE id = $1",
            &[&id, &password_hash],
        )?;
        if n == 0 {
            return Err(RelayError::NotFound(format!("no user {id:?}")));
        }
        Ok(())
    }

    fn set_territories(&self, id: &str, territories: &[String]) -> Result<()> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction()?;
        check_known_territories(&mut tx, territories)?;
        let n = tx.execute(
            "UPDATE relay_users SET territories = $2 WHERE id = $1",
            &[&id, &territories],
        )?;
        if n == 0 {
            return Err(RelayError::NotFound(format!("no user {id:?}")));
        }
        tx.commit()?;
        Ok(())
    }

    fn add_territory(&self, name: &str) -> Result<()> {
        super::check_territory_name(name)?;
        self.conn()?.execute(
            "INSERT INTO relay_territories (name) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&name],
        )?;
        Ok(())
    }

    fn territories(&self) -> Result<Vec<String>> {
        let rows = self
            .conn()?
            .query("SELECT name FROM relay_territories ORDER BY name", &[])?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn territory_parents(&self) -> Result<Vec<(String, Option<String>)>> {
        let rows = self.conn()?.query(
            "SELECT name, parent FROM relay_territories ORDER BY name",
            &[],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn set_territory_parent(&self, name: &str, parent: Option<&str>) -> Result<()> {
        self.conn()?.execute(
            "UPDATE relay_territories SET parent = $2 WHERE name = $1",
            &[&name, &parent],
        )?;
        Ok(())
    }

    fn add_token(&self, user: &str, token_hash: &[u8; 32]) -> Result<()> {
        self.conn()?.execute(
            "INSERT INTO relay_tokens (hash, user_id) VALUES ($1, $2)",
            &[&&token_hash[..], &user],
        )?;
        Ok(())
    }

    fn user_by_token(&self, token_hash: &[u8; 32]) -> Result<Option<User>> {
        let row = self.conn()?.query_opt(
            "SELECT u.id, u.role, u.territories FROM relay_tokens t JOIN relay_users u ON u.id = t.user_id
             WHERE t.hash = $1",
            &[&&token_hash[..]],
        )?;
        Ok(row.as_ref().map(user_from_row))
    }

    fn revoke_tokens(&self, user: &str) -> Result<usize> {
        Ok(self
            .conn()?
            .execute("DELETE FROM relay_tokens WHERE user_id = $1", &[&user])? as usize)
    }

    fn parallelism(&self) -> usize {
        self.pool.max_size() as usize
    }

    fn watch_log(&self, on_head: Box<super::OnHead>) {
        self.listen(on_head);
    }

    fn revoke_token(&self, token_hash: &[u8; 32]) -> Result<bool> {
        Ok(self.conn()?.execute(
            "DELETE FROM relay_tokens WHERE hash = $1",
            &[&&token_hash[..]],
        )? > 0)
    }

    fn base_pipeline(&self) -> Result<Pipeline> {
        pipeline_from(self.conn()?.query_opt(PIPELINE, &[])?)
    }

    fn list(&self, q: &ListQuery) -> Result<Page> {
        let offset = check_page(q)?;
        let f = list_filter(q);
        let mut conn = self.conn()?;
        let total: i64 = conn
            .query_one(
                &format!("SELECT count(*) FROM relay_records {}", f.sql()),
                &f.params(),
            )?
            .get(0);
        let order = if q.descending { "DESC" } else { "ASC" };
        let column = sort_column(q.sort);
        let sql = format!(
            "SELECT record FROM relay_records {} ORDER BY {column} IS NULL, {column} {order}, id {order} LIMIT {} OFFSET {offset}",
            f.sql(),
            q.limit,
        );
        let records = records_from(conn.query(&sql, &f.params())?)?;
        Ok(Page {
            records,
            total: total as usize,
        })
    }

    fn search_page(&self, text: &str, q: &ListQuery, most: usize) -> Result<Page> {
        let offset = check_page(q)?;
        let Some(query) = ts_query(text) else {
            return Ok(Page::default());
        };
        let mut f = list_filter(q);
        f.add("search @@ to_tsquery('simple', ?)", query);
        let n = f.params.len();
        let mut conn = self.conn()?;
        let sql = format!(
            "SELECT record FROM relay_records {} ORDER BY ts_rank(search, to_tsquery('simple', ${n})) DESC, id
             LIMIT {} OFFSET {offset}",
            f.sql(),
            q.limit
        );
        let records = records_from(conn.query(&sql, &f.params())?)?;
        let total = if most == 0 {
            records.len()
        } else {
            let sql = format!(
                "SELECT count(*) FROM (SELECT 1 FROM relay_records {} LIMIT {most}) m",
                f.sql()
            );
            conn.query_one(&sql, &f.params())?.get::<_, i64>(0) as usize
        };
        Ok(Page { records, total })
    }

    fn record(&self, id: &str) -> Result<Option<RecordDetail>> {
        let mut conn = self.conn()?;
        let Some(mut doc) = read_document(&mut conn.client, id)? else {
            return Ok(None);
        };
        let record = doc.read()?;
        let history = doc.history()?;
        let (mut devices, mut received) = (HashMap::new(), HashMap::new());
        for entry in &history {
            let Ok(hash) = hex::decode(&entry.change) else {
                continue;
            };
            if let Some(row) = conn.query_opt(
                "SELECT device, received_at FROM relay_log WHERE hash = $1",
                &[&hash],
            )? {
                devices.insert(entry.change.clone(), row.get(0));
                if let Some(at) = row.get::<_, Option<i64>>(1) {
                    received.insert(entry.change.clone(), at);
                }
            }
        }
        let conflicts = doc.conflicts()?;
        Ok(Some(RecordDetail {
            record,
            history,
            devices,
            received,
            conflicts,
        }))
    }

    fn record_at(&self, id: &str, time: i64) -> Result<Record> {
        match read_document(&mut self.conn()?.client, id)? {
            Some(mut doc) => Ok(doc.read_at_time(time)?),
            None => Err(RelayError::NotFound(format!("no record with id {id:?}"))),
        }
    }

    fn deal_groups(&self, territories: &[String], at: Option<i64>) -> Result<DealGroups> {
        let mut conn = self.conn()?;
        let mut groups = DealGroups::default();
        let territories = territories_param(territories);
        let Some(time) = at else {
            let rows = conn.query(
                "SELECT coalesce(stage, ''), coalesce(currency, ''), substr(close_date, 1, 7),
                        count(*), coalesce(sum(amount), 0)::bigint,
                        coalesce(sum(amount::numeric * (record::jsonb #>> '{fields,probability}')::bigint), 0)::text,
                        coalesce(sum(amount) FILTER (WHERE record::jsonb #>> '{fields,probability}' IS NULL), 0)::bigint
                 FROM relay_records WHERE kind = 'deal' AND NOT deleted
                   AND ($1::text[] IS NULL OR territory = ANY($1))
                 GROUP BY 1, 2, 3",
                &[&territories],
            )?;
            for r in rows {
                let weighted: String = r.get(5);
                let sums = DealSums {
                    count: r.get::<_, i64>(3) as usize,
                    amount: r.get(4),
                    amount_times_own_probability: weighted.parse().map_err(|_| {
                        RelayError::Storage(format!("unreadable weighted amount {weighted:?}"))
                    })?,
                    amount_without_probability: r.get(6),
                };
                groups.add(r.get(0), r.get(1), r.get(2), sums);
            }
            return Ok(groups);
        };
        // As it stood then: each deal read from its document.
        each_deal_document(&mut conn.client, Some(time), None, |mut doc| {
            let deal = match doc.read_at_time(time) {
                Ok(deal) => deal,
                Err(CoreError::NotYetCreated { .. }) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            let in_view = territories.as_ref().is_none_or(|ts| {
                deal.text("territory")
                    .is_some_and(|t| ts.iter().any(|mine| mine == t))
            });
            if !deal.deleted && in_view {
                groups.add_deal(&deal);
            }
            Ok(())
        })?;
        Ok(groups)
    }

    fn stage_flow(&self, territories: &[String]) -> Result<StageFlow> {
        let mut conn = self.conn()?;
        let pipeline = pipeline_from(conn.query_opt(PIPELINE, &[])?)?;
        let territories = territories_param(territories);
        let mut flow = StageFlow::default();
        let mut after = String::new();
        loop {
            let rows = conn.query(
                "SELECT id, stage_history FROM relay_records
                 WHERE kind = 'deal' AND NOT deleted AND id > $1
                   AND ($2::text[] IS NULL OR territory = ANY($2))
                 ORDER BY id LIMIT 1000",
                &[&after, &territories],
            )?;
            let Some(last) = rows.last().map(|r| r.get::<_, String>(0)) else {
                return Ok(flow);
            };
            for row in rows {
                let history: Option<String> = row.get(1);
                let timeline = match fieldcrm_core::parse_stage_history(history.as_deref()) {
                    Some(timeline) => timeline,
                    None => {
                        let id: String = row.get(0);
                        let snapshot = self.document(&id)?.unwrap_or_default();
                        stage_timeline(&mut RecordDoc::load(&id, Some(&snapshot), [])?)?
                    }
                };
                flow.add_deal(&pipeline, &timeline);
            }
            after = last;
        }
    }

    fn owner_counts(&self, territories: &[String]) -> Result<Vec<OwnerCount>> {
        let rows = self.conn()?.query(
            "SELECT coalesce(owner, ''), kind, count(*) FROM relay_records
             WHERE NOT deleted AND ($1::text[] IS NULL OR territory = ANY($1))
             GROUP BY 1, 2 ORDER BY 1, 2",
            &[&territories_param(territories)],
        )?;
        let mut out: Vec<OwnerCount> = Vec::new();
        for r in rows {
            let owner: String = r.get(0);
            if out.last().is_none_or(|o| o.owner != owner) {
                out.push(OwnerCount {
                    owner,
                    ..Default::default()
                });
            }
            let last = out.last_mut().expect("pushed above");
            let n = r.get::<_, i64>(2) as usize;
            match r.get::<_, String>(1).parse::<Kind>() {
                Ok(Kind::Account) => last.accounts = n,
                Ok(Kind::Contact) => last.contacts = n,
                Ok(Kind::Deal) => last.deals = n,
                Ok(Kind::Activity) => last.activities = n,
                Ok(Kind::Lead) => last.leads = n,
                Ok(Kind::Case) => last.cases = n,
                Ok(Kind::Config | Kind::Product | Kind::Price | Kind::Order) | Err(_) => {}
            }
        }
        Ok(out)
    }

    fn edit(&self, user: &User, device: &str, edits: Vec<Edit>) -> Result<Vec<EditOutcome>> {
        self.write(|store| super::push::edit(store, user, device, edits, super::now_ms()))
    }

    fn edit_together(
        &self,
        user: &User,
        device: &str,
        edits: Vec<Edit>,
    ) -> Result<std::result::Result<Vec<Record>, EditRefusal>> {
        self.write_or_refuse(|store| {
            let outcomes = super::push::edit(store, user, device, edits, super::now_ms())?;
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
        self.write_or_refuse(|store| {
            super::merge::merge(store, user, survivor, duplicate, take, super::now_ms())
        })
    }

    fn unmerge(
        &self,
        user: &User,
        tombstone: &str,
    ) -> Result<std::result::Result<Record, EditRefusal>> {
        self.write_or_refuse(|store| super::merge::unmerge(store, user, tombstone, super::now_ms()))
    }

    fn held_changes(&self, scope: &Scope) -> Result<Vec<Held>> {
        let territories: Option<&Vec<String>> = match scope {
            Scope::All => None,
            Scope::Territories(t) => Some(t),
        };
        let rows = self.conn()?.query(
            &format!(
                "SELECT {} FROM relay_review
                 WHERE status = 'held' AND ($1::text[] IS NULL OR territory = ANY($1))
                 ORDER BY seq",
                super::review::HELD_COLUMNS
            ),
            &[&territories],
        )?;
        rows.iter().map(push::held_from_row).collect()
    }

    fn document(&self, id: &str) -> Result<Option<Vec<u8>>> {
        let row = self.conn()?.query_opt(
            "SELECT snapshot FROM relay_documents WHERE id = $1 AND snapshot <> ''",
            &[&id],
        )?;
        Ok(row.map(|r| r.get(0)))
    }

    fn decide(&self, decider: &User, hashes: &[[u8; 32]], accept: bool) -> Result<Vec<Decided>> {
        self.write(|store| super::review::decide(store, decider, hashes, accept, super::now_ms()))
    }

    fn blob_refs(&self, sha: &str) -> Result<Vec<super::blobs::BlobRef>> {
        blobs::refs(&mut self.conn()?.client, sha)
    }

    fn blob_held(&self, sha: &str) -> Result<super::blobs::Held> {
        blobs::held(&mut self.conn()?.client, sha)
    }

    fn append_blob(&self, sha: &str, offset: u64, bytes: &[u8]) -> Result<u64> {
        blobs::append(
            &mut self.conn()?.client,
            sha,
            offset,
            bytes,
            super::now_ms(),
        )
    }

    fn read_blob(&self, sha: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        blobs::read(&mut self.conn()?.client, sha, offset, len)
    }

    fn seal_blob(&self, sha: &str, size: u64) -> Result<()> {
        blobs::seal(&mut self.conn()?.client, sha, size)
    }

    fn drop_partial(&self, sha: &str) -> Result<()> {
        blobs::drop_partial(&mut self.conn()?.client, sha)
    }

    fn collect_blobs(&self, now: i64, grace_ms: i64) -> Result<usize> {
        blobs::collect(&mut self.conn()?.client, now, grace_ms)
    }
}

/// The configured deal pipeline (`relay_meta` key `pipeline`), or the default.
/// Calls `f` with every deal's document, 500 at a time, in id order:
/// those created by `created_by` (ms), or, with `live_in`, the live deals
/// in those territories (empty: all).
fn each_deal_document(
    conn: &mut impl GenericClient,
    created_by: Option<i64>,
    live_in: Option<&[String]>,
    mut f: impl FnMut(RecordDoc) -> Result<()>,
) -> Result<()> {
    let live = live_in.is_some();
    let territories = live_in.and_then(territories_param);
    let mut after = String::new();
    loop {
        let rows = conn.query(
            "SELECT r.id, d.snapshot, r.record, r.has_conflicts, r.stage_history
             FROM relay_records r JOIN relay_documents d ON d.id = r.id
             WHERE r.kind = 'deal' AND r.id > $1 AND ($2::bigint IS NULL OR r.created_at <= $2)
               AND (NOT $3 OR NOT r.deleted) AND ($4::text[] IS NULL OR r.territory = ANY($4))
             ORDER BY r.id LIMIT 500",
            &[&after, &created_by, &live, &territories],
        )?;
        let Some(last) = rows.last().map(|r| r.get::<_, String>(0)) else {
            return Ok(());
        };
        for row in rows {
            let id: String = row.get(0);
            let snapshot: Vec<u8> = row.get(1);
            f(RecordDoc::load(&id, Some(&snapshot), [])?)?;
        }
        after = last;
    }
}

/// Writes every deal's stage history from its document (upgrading to 4),
/// 500 deals at a time.
fn fill_stage_histories(conn: &mut impl GenericClient) -> Result<()> {
    let mut after = String::new();
    loop {
        let rows = conn.query(
            "SELECT r.id, d.snapshot, r.record, r.has_conflicts, r.stage_history
             FROM relay_records r JOIN relay_documents d ON d.id = r.id
             WHERE r.kind = 'deal' AND r.id > $1 ORDER BY r.id LIMIT 500",
            &[&after],
        )?;
        let Some(last) = rows.last().map(|r| r.get::<_, String>(0)) else {
            return Ok(());
        };
        let mut ids = Vec::new();
        let mut histories = Vec::new();
        for row in rows {
            let id: String = row.get(0);
            let snapshot: Vec<u8> = row.get(1);
            let mut doc = RecordDoc::load(&id, Some(&snapshot), [])?;
            histories.push(fieldcrm_core::stage_history(&mut doc, Kind::Deal)?);
            ids.push(id);
        }
        conn.execute(
            "UPDATE relay_records r SET stage_history = u.history
             FROM unnest($1::text[], $2::text[]) AS u(id, history) WHERE r.id = u.id",
            &[&ids, &histories],
        )?;
        after = last;
    }
}

/// The organisation's pipeline, read with [`pipeline_from`].
const PIPELINE: &str = "SELECT value FROM relay_meta WHERE key = 'pipeline'";

fn pipeline_from(row: Option<postgres::Row>) -> Result<Pipeline> {
    match row {
        None => Ok(Pipeline::default()),
        Some(row) => serde_json::from_str(&row.get::<_, String>(0))
            .map_err(|e| RelayError::Storage(format!("the stored pipeline is unreadable: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_terms_are_prefixes_and_never_syntax() {
        assert_eq!(ts_query("Ada Love"), Some("ada:* & love:*".into()));
        assert_eq!(ts_query("x' | !y & (z"), Some("x:* & y:* & z:*".into()));
        assert_eq!(ts_query(" -- "), None);
    }
}

#[cfg(test)]
mod notice_tests {
    use super::*;

    #[test]
    fn notices_carry_territories_and_old_relays_bare_heads() {
        let sent = LogNotice {
            head: 42,
            territories: Some(["north".to_string(), "so\"uth".to_string()].into()),
        };
        let payload = serde_json::to_string(&sent).unwrap();
        assert_eq!(LogNotice::parse(&payload), Some(sent));
        assert_eq!(
            LogNotice::parse("17"),
            Some(LogNotice {
                head: 17,
                territories: None
            })
        );
        assert_eq!(LogNotice::parse("not a notice"), None);
    }

    #[test]
    fn too_many_territories_for_one_notice_are_sent_as_unknown() {
        let few: BTreeSet<String> = (0..10).map(|i| format!("t{i}")).collect();
        assert!(LogNotice::fitting(&few).is_some());
        let many: BTreeSet<String> = (0..200).map(|i| format!("{i:0>60}")).collect();
        assert!(LogNotice::fitting(&many).is_none());
    }
}
