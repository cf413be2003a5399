//! Persistence of record documents: a base (bytes Automerge loads whole: the
//! compacted document, or a new record's first change) plus the changes made
//! or received since. Documents are loaded one at a time, on demand.

use rusqlite::{params, Connection, OptionalExtension};

use crate::doc::RecordDoc;
use crate::error::Result;

/// Fold a document's changes into its snapshot once it has this many.
pub(crate) const COMPACT_AFTER: usize = 32;

/// A document as loaded, with the hashes of its stored incremental changes.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub doc: RecordDoc,
    pub stored_changes: Vec<[u8; 32]>,
}

impl Loaded {
    /// Whether `hash` is known: applied, or stored and waiting for dependencies.
    pub fn knows(&mut self, hash: &[u8; 32]) -> bool {
        self.stored_changes.contains(hash) || self.doc.has_change(hash)
    }
}

pub(crate) fn load(conn: &Connection, id: &str) -> Result<Option<Loaded>> {
    let snapshot: Option<Vec<u8>> = conn
        .prepare_cached("SELECT snapshot FROM documents WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    let Some(snapshot) = snapshot else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached("SELECT hash, bytes FROM doc_changes WHERE doc_id = ?1")?;
    let rows = stmt
        .query_map([id], |r| {
            Ok((r.get::<_, [u8; 32]>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let doc = RecordDoc::load(id, Some(&snapshot), rows.iter().map(|(_, b)| b.as_slice()))?;
    Ok(Some(Loaded {
        doc,
        stored_changes: rows.into_iter().map(|(h, _)| h).collect(),
    }))
}

pub(crate) fn add_change(conn: &Connection, id: &str, hash: &[u8; 32], bytes: &[u8]) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO doc_changes (doc_id, hash, bytes) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![id, hash, bytes])?;
    Ok(())
}

/// Stores the base of a record this store did not have: a received
/// snapshot as-is, or the first change of a record.
pub(crate) fn insert(conn: &Connection, id: &str, snapshot: &[u8]) -> Result<()> {
    conn.prepare_cached("INSERT INTO documents (id, snapshot) VALUES (?1, ?2)")?
        .execute(params![id, snapshot])?;
    Ok(())
}

/// Replaces the snapshot with the document's current state and drops the
/// stored changes it now contains; changes still waiting for dependencies stay.
pub(crate) fn compact(conn: &Connection, loaded: &mut Loaded) -> Result<()> {
    let id = loaded.doc.id().to_string();
    let snapshot = loaded.doc.save();
    conn.prepare_cached("UPDATE documents SET snapshot = ?2 WHERE id = ?1")?
        .execute(params![id, snapshot])?;
    let mut delete =
        conn.prepare_cached("DELETE FROM doc_changes WHERE doc_id = ?1 AND hash = ?2")?;
    let mut kept = Vec::new();
    for hash in std::mem::take(&mut loaded.stored_changes) {
        if loaded.doc.has_change(&hash) {
            delete.execute(params![id, hash])?;
        } else {
            kept.push(hash);
        }
    }
    loaded.stored_changes = kept;
    Ok(())
}

/// Ids of all documents, in id order, a page at a time (`after` = last id seen).
pub(crate) fn ids_after(conn: &Connection, after: &str, limit: usize) -> Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT id FROM documents WHERE id > ?1 ORDER BY id LIMIT ?2")?;
    let ids = stmt
        .query_map(params![after, limit as i64], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(ids)
}

/// The stored base if it is the whole document (no incremental changes).
pub(crate) fn compact_snapshot(conn: &Connection, id: &str) -> Result<Option<Vec<u8>>> {
    Ok(conn
        .prepare_cached(
            "SELECT snapshot FROM documents d WHERE id = ?1
             AND NOT EXISTS (SELECT 1 FROM doc_changes c WHERE c.doc_id = d.id)",
        )?
        .query_row([id], |r| r.get(0))
        .optional()?)
}
