//! The device store's SQLite schema and its migrations, tracked with
//! `PRAGMA user_version`. Each step runs in its own transaction; a database
//! newer than this build is refused rather than guessed at.

use rusqlite::{Connection, Transaction};

use crate::error::{Error, Result};

/// The schema version this build creates and understands. 2 added the
/// outbox's refusal code, field and intent, and deferred evictions; 3 a
/// deal's currency and probability as columns, and the covering indexes
/// dashboards read (deal figures, records per owner, records in conflict);
/// 4 a deal's stage history as a column, so stage analysis reads rows; 5
/// the device behind each actor, for history, and a covering index of the
/// live deals' stage histories; 6 an index of the prices of a product in a
/// currency (the price book holds four or more per product); 7 the blobs
/// of attachments on this device; 8 which records name which blob.
pub const VERSION: i64 = 8;

/// The complete schema at [`VERSION`], for fresh stores.
const CREATE: &str = include_str!("sql/create_v8.sql");

/// Connection settings that are not stored in the file.
pub(crate) fn prepare(conn: &Connection, durable: bool) -> Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // NORMAL in WAL mode survives a process crash (every committed
    // transaction is in the WAL); FULL also survives power loss by syncing
    // the WAL at each commit.
    conn.pragma_update(None, "synchronous", if durable { "FULL" } else { "NORMAL" })?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // 16 MiB of page cache (SQLite's default is 2 MiB): a bounded amount,
    // whatever the record count, that keeps index pages of large stores hot.
    conn.pragma_update(None, "cache_size", -16 * 1024)?;
    // Checkpoint (which syncs the database file) every 16 MiB of WAL rather
    // than every 4 MiB: checkpoints dominated the cost of small commits.
    conn.pragma_update(None, "wal_autocheckpoint", 4096)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

/// Brings the database at `path` to [`VERSION`], one step at a time.
pub(crate) fn migrate(conn: &mut Connection, path: &str) -> Result<()> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > VERSION {
        return Err(Error::SchemaTooNew {
            path: path.to_string(),
            found,
            supported: VERSION,
        });
    }
    if found == 0 {
        let tx = conn.transaction()?;
        if has_foreign_tables(&tx)? {
            return Err(Error::NotAStore {
                path: path.to_string(),
                reason: "it is a SQLite database with other tables".into(),
            });
        }
        tx.execute_batch(CREATE)?;
        tx.pragma_update(None, "user_version", VERSION)?;
        tx.commit()?;
        return Ok(());
    }
    for from in found..VERSION {
        let tx = conn.transaction()?;
        upgrade_from(&tx, from)?;
        tx.pragma_update(None, "user_version", from + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// One migration step: schema `from` to `from + 1`. Add an arm per version
/// and freeze the old schema under `sql/tests/` for the migration tests.
fn upgrade_from(tx: &Transaction<'_>, from: i64) -> Result<()> {
    match from {
        1 => tx.execute_batch(
            "ALTER TABLE outbox ADD COLUMN code TEXT;
             ALTER TABLE outbox ADD COLUMN field TEXT;
             ALTER TABLE outbox ADD COLUMN intent TEXT;
             ALTER TABLE outbox ADD COLUMN refused_at INTEGER;
             CREATE INDEX outbox_doc ON outbox (doc_id);
             -- v1 kept refused changes with a reason only.
             UPDATE outbox SET code = 'refused' WHERE rejected IS NOT NULL;
             CREATE TABLE deferred_evictions (record_id TEXT PRIMARY KEY) WITHOUT ROWID;",
        )?,
        2 => tx.execute_batch(
            "ALTER TABLE records ADD COLUMN currency TEXT;
             ALTER TABLE records ADD COLUMN probability INTEGER;
             UPDATE records SET currency = json_extract(record, '$.fields.currency'),
                 probability = json_extract(record, '$.fields.probability')
             WHERE kind = 'deal';
             CREATE INDEX records_deal_figures ON records (stage, currency, close_date, probability, amount, territory, kind, deleted)
                 WHERE kind = 'deal' AND deleted = 0;
             CREATE INDEX records_owner_kind ON records (owner, kind, territory, deleted) WHERE deleted = 0;
             CREATE INDEX records_conflicts ON records (territory, kind, deleted, has_conflicts) WHERE has_conflicts = 1;",
        )?,
        3 => {
            tx.execute_batch("ALTER TABLE records ADD COLUMN stage_history TEXT;")?;
            fill_stage_histories(tx)?;
        }
        4 => tx.execute_batch(
            "CREATE TABLE actor_devices (actor TEXT PRIMARY KEY, device TEXT NOT NULL) WITHOUT ROWID;
             CREATE INDEX records_deal_stages ON records (territory, id, stage_history, kind, deleted)
                 WHERE kind = 'deal' AND deleted = 0;",
        )?,
        5 => tx.execute_batch(
            "CREATE INDEX records_price_product ON records (json_extract(record, '$.fields.product_id'), json_extract(record, '$.fields.currency'))
                 WHERE kind = 'price';",
        )?,
        6 => tx.execute_batch(
            "CREATE TABLE blobs (
                 sha256    TEXT PRIMARY KEY,
                 size      INTEGER NOT NULL,
                 uploaded  INTEGER NOT NULL,
                 last_used INTEGER NOT NULL
             ) WITHOUT ROWID;
             CREATE INDEX blobs_uploaded ON blobs (uploaded, last_used);",
        )?,
        7 => tx.execute_batch(
            "CREATE TABLE attachment_refs (
                 sha256     TEXT NOT NULL,
                 record_id  TEXT NOT NULL,
                 media_type TEXT NOT NULL,
                 size       INTEGER NOT NULL,
                 PRIMARY KEY (sha256, record_id)
             ) WITHOUT ROWID;
             CREATE INDEX attachment_refs_record ON attachment_refs (record_id);
             INSERT OR IGNORE INTO attachment_refs (sha256, record_id, media_type, size)
                 SELECT json_extract(f.value, '$.sha256'), r.id, json_extract(f.value, '$.media_type'),
                     json_extract(f.value, '$.size')
                 FROM records r, json_each(r.record, '$.fields') f
                 WHERE f.key LIKE 'attachments.%' AND json_valid(f.value)
                     AND json_extract(f.value, '$.sha256') IS NOT NULL
                     AND json_extract(f.value, '$.media_type') IS NOT NULL
                     AND json_extract(f.value, '$.size') IS NOT NULL;",
        )?,
        _ => unreachable!("no migration from schema version {from}: VERSION is {VERSION}"),
    }
    Ok(())
}

/// Writes every deal's stage history from its document, 500 at a time.
fn fill_stage_histories(tx: &Transaction<'_>) -> Result<()> {
    let mut after = String::new();
    loop {
        let ids: Vec<String> = tx
            .prepare_cached(
                "SELECT id FROM records WHERE kind = 'deal' AND id > ?1 ORDER BY id LIMIT 500",
            )?
            .query_map([&after], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let Some(last) = ids.last().cloned() else {
            return Ok(());
        };
        for id in ids {
            if let Some(mut stored) = super::documents::load(tx, &id)? {
                let history = super::projection::stage_history(&mut stored.doc, crate::Kind::Deal)?;
                tx.prepare_cached("UPDATE records SET stage_history = ?2 WHERE id = ?1")?
                    .execute(rusqlite::params![id, history])?;
            }
        }
        after = last;
    }
}

fn has_foreign_tables(conn: &Connection) -> Result<bool> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
        [],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The schema as SQLite reports it, for comparing databases: each
    /// table's columns (an `ALTER TABLE` writes a table's SQL text
    /// differently from a `CREATE` of the same columns) and every other
    /// object's SQL.
    pub(crate) fn dump(conn: &Connection) -> Vec<(String, String)> {
        let mut stmt = conn
            .prepare(
                "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name",
            )
            .unwrap();
        let objects: Vec<(String, String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        objects
            .into_iter()
            .map(|(kind, name, sql)| {
                let shape = if kind == "table" && !sql.contains("VIRTUAL") {
                    let mut cols = conn
                        .prepare(&format!(
                            "SELECT name, type, \"notnull\", pk FROM pragma_table_info('{name}')"
                        ))
                        .unwrap();
                    cols.query_map([], |r| {
                        Ok(format!(
                            "{} {} {} {}",
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?
                        ))
                    })
                    .unwrap()
                    .map(|c| c.unwrap())
                    .collect::<Vec<_>>()
                    .join(", ")
                } else {
                    sql.split_whitespace().collect::<Vec<_>>().join(" ")
                };
                (name, shape)
            })
            .collect()
    }

    fn open(dir: &tempfile::TempDir, name: &str) -> (Connection, String) {
        let path = dir.path().join(name).to_string_lossy().into_owned();
        let conn = Connection::open(&path).unwrap();
        prepare(&conn, false).unwrap();
        (conn, path)
    }

    #[test]
    fn frozen_v8_schema_matches_a_fresh_database() {
        let dir = tempfile::tempdir().unwrap();
        let (mut fresh, path) = open(&dir, "fresh.db");
        migrate(&mut fresh, &path).unwrap();
        let (frozen, _) = open(&dir, "frozen.db");
        frozen
            .execute_batch(include_str!("sql/tests/create_schema_v8.sql"))
            .unwrap();
        assert_eq!(dump(&fresh), dump(&frozen));
    }

    #[test]
    fn a_v5_store_upgrades_to_v6_and_finds_prices_by_the_new_index() {
        let dir = tempfile::tempdir().unwrap();
        let (mut old, path) = open(&dir, "v5.db");
        old.execute_batch(include_str!("sql/tests/create_schema_v5.sql"))
            .unwrap();
        old.pragma_update(None, "user_version", 5).unwrap();
        migrate(&mut old, &path).unwrap();
        let (mut fresh, fresh_path) = open(&dir, "fresh.db");
        migrate(&mut fresh, &fresh_path).unwrap();
        assert_eq!(dump(&old), dump(&fresh));
        let plan: String = old
            .query_row(
                &format!("EXPLAIN QUERY PLAN {}", super::super::orders::PRICES_OF),
                ["p", "EUR"],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("records_price_product"), "{plan}");
    }

    #[test]
    fn a_v7_store_upgrades_to_v8_with_the_attachments_its_records_name() {
        let dir = tempfile::tempdir().unwrap();
        let (mut old, path) = open(&dir, "v7.db");
        old.execute_batch(include_str!("sql/tests/create_schema_v7.sql"))
            .unwrap();
        old.pragma_update(None, "user_version", 7).unwrap();
        let sha = "ab".repeat(32);
        let meta = format!(
            r#"{{"name":"card.jpg","media_type":"image/jpeg","size":13,"sha256":"{sha}","added_by":"ann","added_at":1}}"#
        );
        let record = serde_json::json!({
            "id": "c1", "kind": "contact", "deleted": false, "created_at": 1, "created_by": "ann",
            "updated_at": 1, "schema": 1,
            "fields": { "name": "Jane", "attachments.a1": meta, "attachments.a2": null },
        });
        old.execute(
            "INSERT INTO records (id, kind, name, deleted, has_conflicts, created_at, updated_at, record)
             VALUES ('c1', 'contact', 'Jane', 0, 0, 1, 1, ?1)",
            [record.to_string()],
        )
        .unwrap();
        migrate(&mut old, &path).unwrap();
        let refs: Vec<(String, String, String, i64)> = old
            .prepare("SELECT sha256, record_id, media_type, size FROM attachment_refs")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(refs, [(sha, "c1".into(), "image/jpeg".into(), 13)]);
        let (mut fresh, fresh_path) = open(&dir, "fresh.db");
        migrate(&mut fresh, &fresh_path).unwrap();
        assert_eq!(dump(&old), dump(&fresh));
    }

    #[test]
    fn a_v3_store_upgrades_to_v4_with_each_deals_stage_history_read_from_its_document() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.db");
        {
            let mut store = crate::Store::open(&path, "ann").unwrap();
            let account = store
                .create(
                    crate::Kind::Account,
                    crate::fields([("name", "Acme"), ("territory", "north")]),
                )
                .unwrap();
            let deal = store
                .create(
                    crate::Kind::Deal,
                    crate::fields([
                        ("account_id", crate::Value::from(account.id.as_str())),
                        ("name", crate::Value::from("Big")),
                        ("stage", crate::Value::from("lead")),
                        ("territory", crate::Value::from("north")),
                    ]),
                )
                .unwrap();
            store
                .update(
                    &deal.id,
                    crate::fields([("stage", crate::Value::from("qualified"))]),
                )
                .unwrap();
        }
        // What a v3 file looks like: the same rows without the column.
        let (mut old, path_str) = {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "DROP INDEX records_deal_stages; DROP INDEX records_price_product; DROP TABLE blobs;
                 DROP TABLE attachment_refs;
                 ALTER TABLE records DROP COLUMN stage_history;
                 DROP TABLE actor_devices; PRAGMA user_version = 3;",
            )
            .unwrap();
            (conn, path.to_string_lossy().into_owned())
        };
        migrate(&mut old, &path_str).unwrap();
        let history: String = old
            .query_row(
                "SELECT stage_history FROM records WHERE kind = 'deal'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let stages: Vec<String> = super::super::projection::parse_stage_history(Some(&history))
            .unwrap()
            .into_iter()
            .map(|(_, stage)| stage)
            .collect();
        assert_eq!(stages, ["lead", "qualified"]);
        let (mut fresh, fresh_path) = open(&dir, "fresh.db");
        migrate(&mut fresh, &fresh_path).unwrap();
        assert_eq!(dump(&old), dump(&fresh));
    }

    #[test]
    fn a_v2_store_upgrades_to_v3_with_its_deals_figures_filled_in() {
        let dir = tempfile::tempdir().unwrap();
        let (mut old, path) = open(&dir, "v2.db");
        old.execute_batch(include_str!("sql/tests/create_schema_v2.sql"))
            .unwrap();
        old.pragma_update(None, "user_version", 2).unwrap();
        old.execute(
            "INSERT INTO records (id, kind, name, stage, amount, deleted, has_conflicts, created_at, updated_at, record)
             VALUES ('d', 'deal', 'Big', 'lead', 100, 0, 0, 1, 1,
                     '{\"fields\":{\"currency\":\"EUR\",\"probability\":30}}')",
            [],
        )
        .unwrap();
        migrate(&mut old, &path).unwrap();
        let (mut fresh, fresh_path) = open(&dir, "fresh.db");
        migrate(&mut fresh, &fresh_path).unwrap();
        assert_eq!(dump(&old), dump(&fresh));
        let (currency, probability): (String, i64) = old
            .query_row("SELECT currency, probability FROM records", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((currency.as_str(), probability), ("EUR", 30));
    }

    #[test]
    fn a_v1_store_upgrades_to_the_current_schema_keeping_its_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let (mut old, path) = open(&dir, "v1.db");
        old.execute_batch(include_str!("sql/tests/create_schema_v1.sql"))
            .unwrap();
        old.pragma_update(None, "user_version", 1).unwrap();
        old.execute(
            "INSERT INTO outbox (doc_id, hash, bytes, rejected) VALUES ('r', x'01', x'02', 'outside yours')",
            [],
        )
        .unwrap();
        migrate(&mut old, &path).unwrap();
        let (mut fresh, fresh_path) = open(&dir, "fresh.db");
        migrate(&mut fresh, &fresh_path).unwrap();
        assert_eq!(dump(&old), dump(&fresh));
        let code: String = old
            .query_row("SELECT code FROM outbox", [], |r| r.get(0))
            .unwrap();
        assert_eq!(code, "refused");
    }

    #[test]
    fn migrating_is_idempotent_and_sets_user_version() {
        let dir = tempfile::tempdir().unwrap();
        let (mut conn, path) = open(&dir, "s.db");
        migrate(&mut conn, &path).unwrap();
        let before = dump(&conn);
        migrate(&mut conn, &path).unwrap();
        assert_eq!(dump(&conn), before);
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, VERSION);
    }

    #[test]
    fn refuses_a_newer_database_and_a_foreign_one() {
        let dir = tempfile::tempdir().unwrap();
        let (mut conn, path) = open(&dir, "new.db");
        conn.pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        let err = migrate(&mut conn, &path).unwrap_err();
        assert!(matches!(err, Error::SchemaTooNew { found, .. } if found == VERSION + 1));

        let (mut other, path) = open(&dir, "other.db");
        other
            .execute("CREATE TABLE photos (id INTEGER)", [])
            .unwrap();
        let err = migrate(&mut other, &path).unwrap_err();
        assert!(matches!(err, Error::NotAStore { .. }), "{err}");
    }
}
