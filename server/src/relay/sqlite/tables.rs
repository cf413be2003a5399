//! The SQLite relay's own tables — the change log, users, tokens,
//! territories, actor bindings — in the same file as the record store, so
//! a push writes records and log in one transaction. Writes take a
//! `Transaction` (they run inside one); reads take any connection.

use std::collections::{HashMap, HashSet};

use fieldcrm_core::protocol::Projection;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::relay::access::Scope;
use crate::relay::pull::LogEntry;
use crate::relay::push::LogRow;
use crate::relay::review::{Held, Review, HELD_COLUMNS};
use crate::relay::{RelayError, Result, Role, User};

/// 2 added `relay_web_actors`, 3 `relay_review`, 4 `relay_user_settings`,
/// 5 `relay_actors.device`, 6 `relay_log.received_at`; opening an older
/// file upgrades it (each step only added a table or a column); 8 added
/// `relay_blob_orphans`.
pub(super) const SCHEMA_VERSION: i64 = 8;
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS relay_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
-- Blobs in blobs/ that no record names, since when (garbage collection).
CREATE TABLE IF NOT EXISTS relay_blob_orphans (sha256 TEXT PRIMARY KEY, since INTEGER NOT NULL) WITHOUT ROWID;
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
    bytes          BLOB NOT NULL,
    -- When this relay received the change (ms; NULL before schema 6).
    received_at    INTEGER
);
CREATE INDEX IF NOT EXISTS relay_log_territory ON relay_log (territory, seq);
CREATE INDEX IF NOT EXISTS relay_log_record ON relay_log (record_id, device);
CREATE INDEX IF NOT EXISTS relay_log_moves ON relay_log (prev_territory, seq) WHERE prev_territory IS NOT NULL;
-- parent: the territory this one sits under (schema 7); NULL at the top.
CREATE TABLE IF NOT EXISTS relay_territories (name TEXT PRIMARY KEY, parent TEXT) WITHOUT ROWID;
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
-- Each Automerge actor belongs to the first user who pushed with it, from
-- device (NULL: bound before schema 5, until that user pushes with it again).
CREATE TABLE IF NOT EXISTS relay_actors (
    actor   TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device  TEXT
) WITHOUT ROWID;
-- The Automerge actor each user edits with from the office UI (one per
-- user and device name, used by nobody else).
CREATE TABLE IF NOT EXISTS relay_web_actors (
    user_id TEXT NOT NULL,
    device  TEXT NOT NULL,
    actor   BLOB NOT NULL,
    PRIMARY KEY (user_id, device)
) WITHOUT ROWID;
-- Changes made while their author had access, that arrived after it was
-- taken away: kept for an office user to accept (then applied and logged,
-- as their author's) or discard. status: held, accepted or discarded.
CREATE TABLE IF NOT EXISTS relay_review (
    seq        INTEGER PRIMARY KEY,
    hash       BLOB NOT NULL UNIQUE,
    record_id  TEXT NOT NULL,
    territory  TEXT,
    user_id    TEXT NOT NULL,
    device     TEXT NOT NULL,
    bytes      BLOB NOT NULL,
    held_at    INTEGER NOT NULL,
    status     TEXT NOT NULL,
    decided_by TEXT,
    decided_at INTEGER
);
CREATE INDEX IF NOT EXISTS relay_review_status ON relay_review (status, territory);
-- A user's own settings (time zone, saved filters: see preferences.rs).
CREATE TABLE IF NOT EXISTS relay_user_settings (
    user_id TEXT NOT NULL,
    name    TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (user_id, name)
) WITHOUT ROWID;
";

/// Creates the tables, or upgrades them from an older version.
pub(super) fn migrate(tx: &Transaction<'_>) -> Result<()> {
    tx.execute_batch(SCHEMA)?;
    // Columns added since a table was first made (CREATE TABLE IF NOT
    // EXISTS leaves an existing table as it was).
    for (table, column, ty) in [
        ("relay_actors", "device", "TEXT"),
        ("relay_log", "received_at", "INTEGER"),
        ("relay_territories", "parent", "TEXT"),
    ] {
        let has: bool = tx.query_row(
            "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
            [table, column],
            |r| r.get(0),
        )?;
        if !has {
            tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty};"))?;
        }
    }
    tx.execute_batch(
        "CREATE INDEX IF NOT EXISTS relay_actors_device ON relay_actors (user_id, device);",
    )?;
    let version: Option<String> = tx
        .query_row(
            "SELECT value FROM relay_meta WHERE key = 'schema'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    match version.and_then(|v| v.parse::<i64>().ok()) {
        Some(v) if v > SCHEMA_VERSION => {
            return Err(RelayError::Invalid(format!(
                "relay schema version {v} is newer than this build ({SCHEMA_VERSION}); upgrade the server"
            )))
        }
        // Every step so far only added tables, created above.
        Some(v) if v == SCHEMA_VERSION => {}
        _ => {
            tx.execute(
                "INSERT INTO relay_meta (key, value) VALUES ('schema', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [SCHEMA_VERSION.to_string()],
            )?;
        }
    }
    Ok(())
}

/// The identity of this store's log, made when the store is created; a
/// restored backup gets a new one (`sqlite::backup`), so devices whose
/// cursor names the old one send again what the relay may have lost.
pub(crate) fn log_id(tx: &Connection) -> Result<String> {
    tx.execute(
        "INSERT OR IGNORE INTO relay_meta (key, value) VALUES ('log_id', ?1)",
        [uuid::Uuid::new_v4().to_string()],
    )?;
    Ok(tx.query_row(
        "SELECT value FROM relay_meta WHERE key = 'log_id'",
        [],
        |r| r.get(0),
    )?)
}

/// Gives the store's log a new identity (after a restore).
pub(crate) fn renew_log_id(tx: &Connection) -> Result<String> {
    let id = uuid::Uuid::new_v4().to_string();
    tx.execute(
        "INSERT INTO relay_meta (key, value) VALUES ('log_id', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [&id],
    )?;
    Ok(id)
}

// ----- users, tokens, territories --------------------------------------

fn territories_json(territories: &[String]) -> String {
    serde_json::Value::from(territories.to_vec()).to_string()
}

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let role: String = r.get(1)?;
    let territories: String = r.get(2)?;
    Ok(User {
        id: r.get(0)?,
        role: role.parse().unwrap_or(Role::Rep),
        territories: serde_json::from_str(&territories).unwrap_or_default(),
    })
}

fn check_territories(conn: &Connection, territories: &[String]) -> Result<()> {
    for t in territories {
        if !is_territory(conn, t)? {
            return Err(RelayError::Invalid(format!(
                "unknown territory {t:?}; add it first with `fieldcrm-server territory add`"
            )));
        }
    }
    Ok(())
}

pub(super) fn add_user(
    tx: &Transaction<'_>,
    id: &str,
    password_hash: &str,
    role: Role,
    territories: &[String],
) -> Result<()> {
    check_territories(tx, territories)?;
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO relay_users (id, password_hash, role, territories) VALUES (?1, ?2, ?3, ?4)",
        params![id, password_hash, role.as_str(), territories_json(territories)],
    )?;
    if inserted == 0 {
        return Err(RelayError::AlreadyExists(format!(
            "user {id:?} already exists"
        )));
    }
    Ok(())
}

pub(super) fn user(conn: &Connection, id: &str) -> Result<Option<(User, String)>> {
    Ok(conn
        .prepare_cached(
            "SELECT id, role, territories, password_hash FROM relay_users WHERE id = ?1",
        )?
        .query_row([id], |r| Ok((user_from_row(r)?, r.get::<_, String>(3)?)))
        .optional()?)
}

pub(super) fn is_user(conn: &Connection, id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM relay_users WHERE id = ?1")?
        .exists([id])?)
}

pub(super) fn list_users(conn: &Connection) -> Result<Vec<(User, String)>> {
    let mut stmt =
        conn.prepare("SELECT id, role, territories, password_hash FROM relay_users ORDER BY id")?;
    let users = stmt
        .query_map([], |r| Ok((user_from_row(r)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(users)
}

pub(super) fn remove_user(tx: &Transaction<'_>, id: &str) -> Result<bool> {
    tx.execute("DELETE FROM relay_tokens WHERE user_id = ?1", [id])?;
    tx.execute("DELETE FROM relay_user_settings WHERE user_id = ?1", [id])?;
    Ok(tx.execute("DELETE FROM relay_users WHERE id = ?1", [id])? > 0)
}

pub(super) fn set_territories(
    tx: &Transaction<'_>,
    id: &str,
    territories: &[String],
) -> Result<()> {
    check_territories(tx, territories)?;
    let n = tx.execute(
        "UPDATE relay_users SET territories = ?2 WHERE id = ?1",
        params![id, territories_json(territories)],
    )?;
    if n == 0 {
        return Err(RelayError::NotFound(format!("no user {id:?}")));
    }
    Ok(())
}

pub(super) fn set_password_hash(tx: &Transaction<'_>, id: &str, hash: &str) -> Result<()> {
    let n = tx.execute(
        "UPDATE relay_users SET password_hash = ?2 WHERE id = ?1",
        params![id, hash],
    )?;
    if n == 0 {
        return Err(RelayError::NotFound(format!("no user {id:?}")));
    }
    Ok(())
}

pub(super) fn user_settings(conn: &Connection, user: &str) -> Result<Vec<(String, String)>> {
    let mut stmt = conn
        .prepare("SELECT name, value FROM relay_user_settings WHERE user_id = ?1 ORDER BY name")?;
    let settings = stmt
        .query_map([user], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(settings)
}

pub(super) fn set_user_setting(
    tx: &Transaction<'_>,
    user: &str,
    name: &str,
    value: Option<&str>,
) -> Result<()> {
    match value {
        Some(value) => tx.execute(
            "INSERT INTO relay_user_settings (user_id, name, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (user_id, name) DO UPDATE SET value = excluded.value",
            params![user, name, value],
        )?,
        None => tx.execute(
            "DELETE FROM relay_user_settings WHERE user_id = ?1 AND name = ?2",
            params![user, name],
        )?,
    };
    Ok(())
}

pub(super) fn add_territory(tx: &Transaction<'_>, name: &str) -> Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO relay_territories (name) VALUES (?1)",
        [name],
    )?;
    Ok(())
}

pub(super) fn is_territory(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM relay_territories WHERE name = ?1")?
        .exists([name])?)
}

pub(super) fn territories(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM relay_territories ORDER BY name")?;
    let names = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(names)
}

pub(super) fn territory_parents(conn: &Connection) -> Result<Vec<(String, Option<String>)>> {
    let mut stmt =
        conn.prepare_cached("SELECT name, parent FROM relay_territories ORDER BY name")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

pub(super) fn set_territory_parent(
    tx: &Transaction<'_>,
    name: &str,
    parent: Option<&str>,
) -> Result<()> {
    tx.execute(
        "UPDATE relay_territories SET parent = ?2 WHERE name = ?1",
        rusqlite::params![name, parent],
    )?;
    Ok(())
}

pub(super) fn add_token(tx: &Transaction<'_>, user: &str, token_hash: &[u8; 32]) -> Result<()> {
    tx.execute(
        "INSERT INTO relay_tokens (hash, user_id) VALUES (?1, ?2)",
        params![token_hash, user],
    )?;
    Ok(())
}

pub(super) fn user_by_token(conn: &Connection, token_hash: &[u8; 32]) -> Result<Option<User>> {
    Ok(conn
        .prepare_cached(
            "SELECT u.id, u.role, u.territories FROM relay_tokens t JOIN relay_users u ON u.id = t.user_id
             WHERE t.hash = ?1",
        )?
        .query_row([token_hash], user_from_row)
        .optional()?)
}

pub(super) fn revoke_tokens(tx: &Transaction<'_>, user: &str) -> Result<usize> {
    Ok(tx.execute("DELETE FROM relay_tokens WHERE user_id = ?1", [user])?)
}

pub(super) fn revoke_token(tx: &Transaction<'_>, token_hash: &[u8; 32]) -> Result<bool> {
    Ok(tx.execute("DELETE FROM relay_tokens WHERE hash = ?1", [token_hash])? > 0)
}

// ----- actors ------------------------------------------------------------

pub(super) fn claim_actors(
    tx: &Transaction<'_>,
    user: &str,
    device: &str,
    actors: &[&str],
) -> Result<HashMap<String, String>> {
    let mut owners = HashMap::with_capacity(actors.len());
    let mut claim = tx.prepare_cached(
        "INSERT INTO relay_actors (actor, user_id, device) VALUES (?1, ?2, ?3)
         ON CONFLICT (actor) DO UPDATE SET device = excluded.device
         WHERE relay_actors.device IS NULL AND relay_actors.user_id = excluded.user_id",
    )?;
    let mut owner = tx.prepare_cached("SELECT user_id FROM relay_actors WHERE actor = ?1")?;
    for actor in actors {
        claim.execute(params![actor, user, device])?;
        let bound: String = owner.query_row([actor], |r| r.get(0))?;
        owners.insert(actor.to_string(), bound);
    }
    Ok(owners)
}

/// The actors, as (actor, device), of the devices in `pushers` (user,
/// device) and of every device that pushed to `records`.
pub(super) fn actor_devices(
    conn: &Connection,
    records: &[String],
    pushers: &std::collections::BTreeSet<(String, String)>,
) -> Result<Vec<(String, String)>> {
    let mut found = std::collections::BTreeSet::new();
    let mut of_device = conn.prepare_cached(
        "SELECT actor, device FROM relay_actors WHERE user_id = ?1 AND device = ?2",
    )?;
    let mut add = |user: &str, device: &str| -> Result<()> {
        let rows = of_device.query_map([user, device], |r| Ok((r.get(0)?, r.get(1)?)))?;
        for row in rows {
            found.insert(row?);
        }
        Ok(())
    };
    for (user, device) in pushers {
        add(user, device)?;
    }
    if !records.is_empty() {
        let ids = serde_json::Value::from(records.to_vec()).to_string();
        let mut stmt = conn.prepare_cached(
            "SELECT DISTINCT user_id, device FROM relay_log
             WHERE record_id IN (SELECT value FROM json_each(?1))",
        )?;
        let devices: Vec<(String, String)> = stmt
            .query_map([ids], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (user, device) in devices {
            if !pushers.contains(&(user.clone(), device.clone())) {
                add(&user, &device)?;
            }
        }
    }
    Ok(found.into_iter().collect())
}

/// The actor `user` edits with from `device` in the office UI, made on first use.
pub(super) fn web_actor(tx: &Transaction<'_>, user: &str, device: &str) -> Result<Vec<u8>> {
    let found: Option<Vec<u8>> = tx
        .prepare_cached("SELECT actor FROM relay_web_actors WHERE user_id = ?1 AND device = ?2")?
        .query_row([user, device], |r| r.get(0))
        .optional()?;
    if let Some(actor) = found {
        return Ok(actor);
    }
    let actor = rand::random::<[u8; 16]>().to_vec();
    tx.execute(
        "INSERT INTO relay_web_actors (user_id, device, actor) VALUES (?1, ?2, ?3)",
        params![user, device, actor],
    )?;
    Ok(actor)
}

// ----- the log -----------------------------------------------------------

pub(super) fn head(conn: &Connection) -> Result<u64> {
    Ok(conn
        .prepare_cached("SELECT coalesce(max(seq), 0) FROM relay_log")?
        .query_row([], |r| r.get::<_, i64>(0))? as u64)
}

pub(super) fn logged(conn: &Connection, hashes: &[[u8; 32]]) -> Result<HashSet<[u8; 32]>> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM relay_log WHERE hash = ?1")?;
    let mut found = HashSet::new();
    for hash in hashes {
        if stmt.exists([hash])? {
            found.insert(*hash);
        }
    }
    Ok(found)
}

pub(super) fn append(
    tx: &Transaction<'_>,
    user: &str,
    device: &str,
    rows: &[LogRow<'_>],
) -> Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO relay_log (record_id, hash, territory, prev_territory, device, user_id, bytes,
             received_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let now = crate::relay::now_ms();
    for row in rows {
        insert.execute(params![
            row.record_id,
            row.hash,
            row.territory,
            row.moved_from,
            device,
            user,
            row.bytes,
            now
        ])?;
    }
    Ok(())
}

/// The device that pushed a change, for history.
/// The device that pushed a logged change, and when the relay received it.
pub(super) fn logged_of(conn: &Connection, hash: &[u8]) -> Result<Option<(String, Option<i64>)>> {
    Ok(conn
        .prepare_cached("SELECT device, received_at FROM relay_log WHERE hash = ?1")?
        .query_row([hash], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// SQL narrowing `column` to `scope` (always true for all territories),
/// with its parameter: a JSON array bound as `?2`.
fn scope_filter(scope: &Scope, column: &str) -> (String, String) {
    match scope {
        Scope::All => ("?2 IS NOT NULL".into(), "[]".into()),
        Scope::Territories(t) => (
            format!("{column} IN (SELECT value FROM json_each(?2))"),
            territories_json(t),
        ),
    }
}

pub(super) fn entries_after(
    conn: &Connection,
    scope: &Scope,
    seq: u64,
    limit: usize,
) -> Result<Vec<LogEntry>> {
    let (now, _) = scope_filter(scope, "territory");
    let (moved, territories) = scope_filter(scope, "prev_territory");
    let sql = format!(
        "SELECT seq, record_id, territory, prev_territory, device, bytes, user_id FROM relay_log
         WHERE seq > ?1 AND ({now} OR {moved}) ORDER BY seq LIMIT {limit}"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt
        .query_map(params![seq as i64, territories], |r| {
            Ok(LogEntry {
                seq: r.get::<_, i64>(0)? as u64,
                record_id: r.get(1)?,
                territory: r.get(2)?,
                prev_territory: r.get(3)?,
                device: r.get(4)?,
                bytes: r.get(5)?,
                user: r.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Record ids after `after_id` of `territory` ("": all), in id order; with
/// `not_only_from`, only those holding a change from another device.
const BOOT_COLUMNS: &str = "id, record, has_conflicts, stage_history";

/// The projection rows of [`crate::relay::pull::LogSource::bootstrap_batch`].
pub(super) fn bootstrap_rows(
    conn: &Connection,
    territory: &str,
    after_id: &str,
    not_only_from: Option<&str>,
    limit: usize,
) -> Result<Vec<Projection>> {
    // Ordered range scans on records(territory, id), or the id index.
    let not_own = "AND (?3 IS NULL OR EXISTS (SELECT 1 FROM relay_log l
                   WHERE l.record_id = records.id AND l.device != ?3))";
    let sql = if territory.is_empty() {
        format!(
            "SELECT {BOOT_COLUMNS} FROM records WHERE id > ?1 AND ?2 = '' {not_own} ORDER BY id LIMIT {limit}"
        )
    } else {
        format!("SELECT {BOOT_COLUMNS} FROM records WHERE territory = ?2 AND id > ?1 {not_own} ORDER BY id LIMIT {limit}")
    };
    let rows = conn
        .prepare_cached(&sql)?
        .query_map(params![after_id, territory, not_only_from], |r| {
            Ok(Projection {
                record_id: r.get(0)?,
                reading: fieldcrm_core::READING,
                record: r.get(1)?,
                has_conflicts: r.get(2)?,
                stage_history: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

pub(super) fn counts(conn: &Connection) -> Result<(u64, u64)> {
    let count = |sql: &str| {
        conn.query_row(sql, [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
    };
    Ok((
        count("SELECT count(*) FROM records")?,
        count("SELECT count(*) FROM relay_log")?,
    ))
}

/// Kind, tombstone and territory of a record, from the projection.
pub(super) fn facts(conn: &Connection, id: &str) -> Result<Option<(String, bool, Option<String>)>> {
    Ok(conn
        .prepare_cached("SELECT kind, deleted, territory FROM records WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?)
}

/// The records whose projection holds `id` as a JSON string: every
/// record with a field naming it (and the record itself). A scan, for
/// merges, which are rare.
pub(super) fn referrers(conn: &Connection, id: &str) -> Result<Vec<String>> {
    let quoted = serde_json::to_string(id).expect("a string serialises");
    let ids = conn
        .prepare("SELECT id FROM records WHERE instr(record, ?1) > 0 ORDER BY id")?
        .query_map([quoted], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(ids)
}

/// The configured deal pipeline (JSON), if one was set.
pub(super) fn pipeline_json(conn: &Connection) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT value FROM relay_meta WHERE key = 'pipeline'")?
        .query_row([], |r| r.get(0))
        .optional()?)
}

/// The record's territory as of log position `seq` (its latest entry at or
/// before it); `None` if it had no entry by then.
pub(super) fn territory_at(
    conn: &Connection,
    id: &str,
    seq: u64,
) -> Result<Option<Option<String>>> {
    Ok(conn
        .prepare_cached(
            "SELECT territory FROM relay_log WHERE record_id = ?1 AND seq <= ?2
             ORDER BY seq DESC LIMIT 1",
        )?
        .query_row(params![id, seq as i64], |r| r.get(0))
        .optional()?)
}

// ----- the review queue --------------------------------------------------

fn held_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Held> {
    Ok(Held {
        hash: r.get(0)?,
        record_id: r.get(1)?,
        territory: r.get(2)?,
        user: r.get(3)?,
        device: r.get(4)?,
        bytes: r.get(5)?,
        held_at: r.get(6)?,
        review: Review::parse(&r.get::<_, String>(7)?),
        decided_by: r.get(8)?,
        decided_at: r.get(9)?,
    })
}

pub(super) fn hold(tx: &Transaction<'_>, held: &[Held]) -> Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO relay_review
             (hash, record_id, territory, user_id, device, bytes, held_at, status)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'held')",
    )?;
    for h in held {
        insert.execute(params![
            h.hash,
            h.record_id,
            h.territory,
            h.user,
            h.device,
            h.bytes,
            h.held_at
        ])?;
    }
    Ok(())
}

/// The review rows of these hashes, in the order they were held.
pub(super) fn reviews(conn: &Connection, hashes: &[[u8; 32]]) -> Result<Vec<Held>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {HELD_COLUMNS} FROM relay_review WHERE hash = ?1"
    ))?;
    let mut found = Vec::new();
    for hash in hashes {
        found.extend(stmt.query_row([hash], held_from_row).optional()?);
    }
    Ok(found)
}

/// Changes still held, in the order they were held, in `scope`.
pub(super) fn held(conn: &Connection, scope: &Scope) -> Result<Vec<Held>> {
    let (filter, territories) = scope_filter(scope, "territory");
    let sql = format!(
        "SELECT {HELD_COLUMNS} FROM relay_review WHERE status = 'held' AND {filter} ORDER BY seq"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    // scope_filter binds its parameter as ?2.
    let rows = stmt
        .query_map(params![0, territories], held_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub(super) fn decide(
    tx: &Transaction<'_>,
    hash: &[u8; 32],
    review: Review,
    by: &str,
    at: i64,
) -> Result<()> {
    tx.prepare_cached(
        "UPDATE relay_review SET status = ?2, decided_by = nullif(?3, ''), decided_at = nullif(?4, 0)
         WHERE hash = ?1",
    )?
    .execute(params![hash, review.as_str(), by, at])?;
    Ok(())
}
