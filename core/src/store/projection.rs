//! The query projection: one row per record with typed columns for
//! filtering and sorting, the record as JSON, and its full-text entry.
//! Derived from the documents; [`crate::Store::rebuild_projection`] remakes it.

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::doc::RecordDoc;
use crate::error::{Error, Result};
use crate::model::{Kind, Record, SearchRole, Value};

/// How a document is read into its projection row: the record's JSON,
/// `has_conflicts` and the stage history. A relay ships its rows with the
/// reading they were made by, and a device uses them only if it reads
/// documents the same way. Raise it when any of the three changes meaning
/// (and have stores rewrite their rows).
pub const READING: u32 = 1;

/// Brings a record's projection row up to date with its document. Returns
/// the record, or `None` if the document's creating change has not arrived.
pub(crate) fn write(conn: &Connection, doc: &mut RecordDoc) -> Result<Option<Record>> {
    SearchEntries::written_after(conn, |search| write_into(conn, doc, search))
}

/// [`write`], leaving the full-text entry in `search` for the caller to
/// write once its batch's other writes are done.
pub(crate) fn write_into(
    conn: &Connection,
    doc: &mut RecordDoc,
    search: &mut SearchEntries,
) -> Result<Option<Record>> {
    let Some(kind) = doc.kind()? else {
        return Ok(None);
    };
    let record = doc.read()?;
    let has_conflicts = doc.has_conflicts()?;
    let stages = stage_history(doc, kind)?;
    let json = record_json(&record)?;
    upsert(
        conn,
        &record,
        &json,
        has_conflicts,
        stages.as_deref(),
        search,
    )?;
    Ok(Some(record))
}

/// Writes the projection row of a record already read from its document.
pub(crate) fn write_record(
    conn: &Connection,
    doc: &mut RecordDoc,
    record: &Record,
    has_conflicts: bool,
    search: &mut SearchEntries,
) -> Result<()> {
    let stages = stage_history(doc, record.kind)?;
    let json = record_json(record)?;
    upsert(
        conn,
        record,
        &json,
        has_conflicts,
        stages.as_deref(),
        search,
    )
}

fn record_json(record: &Record) -> Result<String> {
    serde_json::to_string(record).map_err(|e| Error::CorruptDocument {
        doc: record.id.clone(),
        reason: e.to_string(),
    })
}

/// Full-text entries waiting to be written, by projection rowid (the last
/// one of a row wins). FTS5 writes its pending entries out at every
/// statement savepoint, which most writes open, so an entry written
/// between other writes becomes an index segment of its own, to be merged
/// later: a batch (a sync page, a pushed chunk) writes its entries after
/// everything else, and FTS5 writes them as one segment at commit.
#[derive(Default)]
pub(crate) struct SearchEntries(std::collections::BTreeMap<i64, [String; 4]>);

impl SearchEntries {
    /// Runs `f` with an empty batch, then writes what it gathered.
    pub(crate) fn written_after<R>(
        conn: &Connection,
        f: impl FnOnce(&mut SearchEntries) -> Result<R>,
    ) -> Result<R> {
        let mut search = SearchEntries::default();
        let out = f(&mut search)?;
        search.write(conn)?;
        Ok(out)
    }

    /// Writes the entries that differ from what the index holds.
    pub(crate) fn write(self, conn: &Connection) -> Result<()> {
        for (rowid, columns) in self.0 {
            // Most edits (a stage, an amount, a note's date) leave the
            // searchable text as it was; rewriting the entry anyway costs a
            // tokenisation and an index delete and insert.
            let indexed: Option<[Option<String>; 4]> = conn
                .prepare_cached(
                    "SELECT name, email, phone, notes FROM records_fts WHERE rowid = ?1",
                )?
                .query_row([rowid], |r| {
                    Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?])
                })
                .optional()?;
            if let Some(indexed) = &indexed {
                if indexed
                    .iter()
                    .zip(&columns)
                    .all(|(old, new)| old.as_ref() == Some(new))
                {
                    continue;
                }
                conn.prepare_cached("DELETE FROM records_fts WHERE rowid = ?1")?
                    .execute([rowid])?;
            }
            let [name, email, phone, notes] = columns;
            conn.prepare_cached(
                "INSERT INTO records_fts (rowid, name, email, phone, notes) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![rowid, name, email, phone, notes])?;
        }
        Ok(())
    }
}

/// A deal's stage history as projections keep it, so stage analysis reads
/// rows rather than documents: JSON `[[ms, "stage"], ...]`, oldest first
/// (see [`crate::stage_timeline`]). `None` for other kinds.
pub fn stage_history(doc: &mut RecordDoc, kind: Kind) -> Result<Option<String>> {
    if kind != Kind::Deal {
        return Ok(None);
    }
    let timeline = crate::query::stage_timeline(doc)?;
    serde_json::to_string(&timeline)
        .map(Some)
        .map_err(|e| Error::CorruptDocument {
            doc: doc.id().to_string(),
            reason: e.to_string(),
        })
}

/// A stored stage history; `None` if it is missing or unreadable (then the
/// document is read instead).
pub fn parse_stage_history(json: Option<&str>) -> Option<Vec<(i64, String)>> {
    serde_json::from_str(json?).ok()
}

/// Writes a record's projection row, its JSON as given (also the row a
/// relay shipped, see [`READING`]); its full-text entry goes to `search`.
pub(crate) fn upsert(
    conn: &Connection,
    record: &Record,
    json: &str,
    has_conflicts: bool,
    stage_history: Option<&str>,
    search: &mut SearchEntries,
) -> Result<()> {
    let text = |p: &str| record.text(p);
    let int = |p: &str| record.get(p).and_then(Value::as_int);
    conn.prepare_cached(
            "INSERT INTO records (id, kind, name, owner, territory, account_id, related_to, stage,
                 amount, close_date, due_at, done, deleted, has_conflicts, created_at, updated_at, record,
                 currency, probability, stage_history)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)
             ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, name = excluded.name,
                 owner = excluded.owner, territory = excluded.territory,
                 account_id = excluded.account_id, related_to = excluded.related_to,
                 stage = excluded.stage, amount = excluded.amount, close_date = excluded.close_date,
                 due_at = excluded.due_at, done = excluded.done, deleted = excluded.deleted,
                 has_conflicts = excluded.has_conflicts, created_at = excluded.created_at,
                 updated_at = excluded.updated_at, record = excluded.record,
                 currency = excluded.currency, probability = excluded.probability,
                 stage_history = excluded.stage_history",
        )?
        .execute(
            params![
                record.id,
                record.kind.as_str(),
                record.display_name(),
                text("owner"),
                text("territory"),
                text("account_id"),
                text("related_to"),
                record.state(),
                int("amount"),
                text("close_date"),
                record.due(),
                record.is_done(),
                record.deleted,
                has_conflicts,
                record.created_at,
                record.updated_at,
                json,
                text("currency"),
                int("probability"),
                stage_history,
            ],
        )?;
    let rowid: i64 = conn
        .prepare_cached("SELECT rowid FROM records WHERE id = ?1")?
        .query_row([&record.id], |r| r.get(0))?;
    write_attachment_refs(conn, record)?;
    search.0.insert(rowid, search_columns(record));
    Ok(())
}

/// Which blobs `record` names, as `attachment_refs` keeps them. A record
/// that lost its attachments (a refused map) must lose its rows too, so
/// the old rows go whatever the record holds now.
fn write_attachment_refs(conn: &Connection, record: &Record) -> Result<()> {
    conn.prepare_cached("DELETE FROM attachment_refs WHERE record_id = ?1")?
        .execute([&record.id])?;
    for (_, meta) in super::blobs::attachments_of(record) {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO attachment_refs (sha256, record_id, media_type, size)
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            meta.sha256,
            record.id,
            meta.media_type,
            meta.size as i64
        ])?;
    }
    Ok(())
}

/// A record's full-text entry: names, emails, phones (as written and as
/// bare digits) and notes, in that order. Any store's search indexes these.
pub fn search_columns(record: &Record) -> [String; 4] {
    let column = |role: SearchRole| -> String {
        record
            .kind
            .fields()
            .iter()
            .filter(|f| f.search == role)
            .filter_map(|f| record.text(f.path))
            .collect::<Vec<_>>()
            .join(" ")
    };
    [
        column(SearchRole::Name),
        column(SearchRole::Email),
        phone_terms(&column(SearchRole::Phone)),
        column(SearchRole::Notes),
    ]
}

/// Phone numbers are indexed as written and as bare digits, so "0207946"
/// finds "+44 20 7946 0958" and so does "7946".
fn phone_terms(phones: &str) -> String {
    let digits: Vec<String> = phones
        .split(|c: char| c.is_ascii_alphabetic())
        .map(|p| p.chars().filter(char::is_ascii_digit).collect::<String>())
        .filter(|d| !d.is_empty())
        .collect();
    format!("{phones} {}", digits.join(" "))
}

/// Reads the `record` JSON column of a projection row.
pub(crate) fn record_from_row(row: &Row<'_>, column: &str) -> rusqlite::Result<Record> {
    let json: String = row.get(column)?;
    serde_json::from_str(&json).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(crate) fn clear(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "DELETE FROM records; DELETE FROM records_fts; DELETE FROM attachment_refs;",
    )?;
    Ok(())
}
