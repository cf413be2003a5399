//! Persistence of record documents: a base (bytes Automerge loads whole: the
//! compacted document, or a new record's first change) plus the changes made
//! or received since. Documents are loaded one at a time, on demand.

use rusqlite::{params, Connection, OptionalExtension};

use crate::doc::{ParsedChange, RecordDoc};
use crate::error::{Error, Result};
use crate::model::{
    check_config_change, check_received, check_time, check_write_rules, Kind, Record, Rules,
};

/// Fold a document's changes into its snapshot once it has this many.
pub(crate) const COMPACT_AFTER: usize = 32;

/// A record's document as a store holds it, loaded for one write: the
/// document, the changes stored beside its base, and the changes received
/// since it was loaded (which the store writes when it saves it).
#[derive(Debug)]
pub struct StoredDoc {
    pub(crate) doc: RecordDoc,
    pub(crate) stored_changes: Vec<[u8; 32]>,
    pub(crate) fresh: Vec<ParsedChange>,
    pub(crate) is_new: bool,
    /// The record as [`StoredDoc::receive`] left it, so saving need not read it again.
    pub(crate) received: Option<Record>,
}

/// What received changes did to a record: as it was, and as it is now.
#[derive(Debug, Clone)]
pub struct Received {
    /// `None` when the changes created it.
    pub before: Option<Record>,
    pub after: Record,
}

impl StoredDoc {
    /// A record the store does not hold yet.
    pub fn new(id: &str) -> StoredDoc {
        StoredDoc {
            doc: RecordDoc::empty(id),
            stored_changes: Vec::new(),
            fresh: Vec::new(),
            is_new: true,
            received: None,
        }
    }

    /// A record a store keeps as one compacted document (bytes Automerge
    /// loads whole).
    pub fn from_compacted(id: &str, bytes: &[u8]) -> Result<StoredDoc> {
        Ok(StoredDoc {
            doc: RecordDoc::load(id, Some(bytes), [])?,
            stored_changes: Vec::new(),
            fresh: Vec::new(),
            is_new: false,
            received: None,
        })
    }

    pub fn id(&self) -> &str {
        self.doc.id()
    }

    pub fn doc(&mut self) -> &mut RecordDoc {
        &mut self.doc
    }

    pub fn into_doc(self) -> RecordDoc {
        self.doc
    }

    /// Whether the store does not hold this record yet.
    pub fn is_new(&self) -> bool {
        self.is_new
    }

    /// Whether `hash` is known: applied, or stored and waiting for dependencies.
    pub fn knows(&mut self, hash: &[u8; 32]) -> bool {
        self.stored_changes.contains(hash) || self.doc.has_change(hash)
    }

    /// An independent copy to try changes on.
    pub fn fork(&mut self) -> StoredDoc {
        StoredDoc {
            doc: self.doc.fork(),
            stored_changes: self.stored_changes.clone(),
            fresh: self.fresh.clone(),
            is_new: self.is_new,
            received: self.received.clone(),
        }
    }

    /// Applies changes as a relay must: each must apply now (no missing
    /// dependencies), be stamped in milliseconds, keep the record's identity,
    /// and leave every field it touched valid under `rules`. On an error,
    /// this copy may be part-changed: drop it (try on a [`fork`](Self::fork)).
    pub fn receive(&mut self, changes: Vec<ParsedChange>, rules: &Rules<'_>) -> Result<Received> {
        let before = match self.doc.kind()? {
            Some(_) => Some(self.doc.read()?),
            None => None,
        };
        let heads = self.doc.heads();
        let mut fresh: Vec<ParsedChange> = Vec::with_capacity(changes.len());
        for change in changes {
            let hash = change.hash();
            if !self.knows(&hash) && !fresh.iter().any(|c| c.hash() == hash) {
                check_time(change.time())?;
                fresh.push(change);
            }
        }
        self.doc.apply_remote(fresh.clone())?;
        let waiting = fresh
            .iter()
            .filter(|c| !self.doc.has_change(&c.hash()))
            .count();
        if waiting > 0 {
            return Err(Error::MissingDependencies {
                doc: self.id().to_string(),
                count: waiting,
            });
        }
        let Some(kind) = self.doc.kind()? else {
            return Err(Error::MalformedChange {
                doc: self.id().to_string(),
                reason: "a record's first change must create it (set its id, type and fields)"
                    .into(),
            });
        };
        let touched = self.doc.touched_since(&heads)?;
        check_received(kind, before.is_none(), &touched, rules)?;
        check_write_rules(
            rules.config,
            kind,
            before.as_ref(),
            &touched,
            rules.standing,
        )?;
        let after = self.doc.read()?;
        if kind == Kind::Config {
            if self.id() != crate::model::CONFIG_ID {
                return Err(Error::Refused(format!(
                    "the organisation configuration is the record {:?}; there is no other",
                    crate::model::CONFIG_ID
                )));
            }
            check_config_change(before.as_ref(), &after, &touched)?;
        }
        self.fresh.extend(fresh);
        self.received = Some(after.clone());
        Ok(Received { before, after })
    }

    /// The bytes a store keeping one compacted document per record writes:
    /// a record made by one change is that change (the smallest document
    /// there is, with no `save` to run), any other the saved document.
    pub fn compacted(&mut self) -> Vec<u8> {
        match self.fresh.as_slice() {
            [only] if self.is_new => only.bytes().to_vec(),
            _ => self.doc.save(),
        }
    }
}

/// Record `id` as its document holds it, if the document is here.
pub(crate) fn read(conn: &Connection, id: &str) -> Result<Option<Record>> {
    match load(conn, id)? {
        Some(mut stored) => Ok(Some(stored.doc().read()?)),
        None => Ok(None),
    }
}

/// Record `id`, or `NotFound`.
pub(crate) fn read_existing(conn: &Connection, id: &str) -> Result<Record> {
    read(conn, id)?.ok_or_else(|| Error::NotFound(id.to_string()))
}

pub(crate) fn load(conn: &Connection, id: &str) -> Result<Option<StoredDoc>> {
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
    Ok(Some(StoredDoc {
        doc,
        stored_changes: rows.into_iter().map(|(h, _)| h).collect(),
        fresh: Vec::new(),
        is_new: false,
        received: None,
    }))
}

/// Writes what was received into `stored` since it was loaded: its changes
/// (a new record made by one change stores that change as its base), the
/// projection, and a compaction once enough changes have gathered.
pub(crate) fn save(conn: &Connection, stored: &mut StoredDoc) -> Result<Option<Record>> {
    super::projection::SearchEntries::written_after(conn, |search| save_into(conn, stored, search))
}

/// [`save`], leaving the full-text entry in `search` (see
/// [`super::projection::SearchEntries`]).
pub(crate) fn save_into(
    conn: &Connection,
    stored: &mut StoredDoc,
    search: &mut super::projection::SearchEntries,
) -> Result<Option<Record>> {
    let fresh = std::mem::take(&mut stored.fresh);
    let id = stored.id().to_string();
    let first_applied = fresh
        .first()
        .is_some_and(|c| stored.doc.has_change(&c.hash()));
    match fresh.as_slice() {
        [] => return Ok(None),
        [only] if stored.is_new && first_applied => insert(conn, &id, only.bytes())?,
        _ => {
            if stored.is_new {
                // An empty base; every received change is stored beside it.
                insert(conn, &id, &[])?;
            }
            for change in &fresh {
                add_change(conn, &id, &change.hash(), change.bytes())?;
                stored.stored_changes.push(change.hash());
            }
        }
    }
    // One change alone cannot hold concurrent values.
    let made_by_one = stored.is_new && fresh.len() == 1;
    stored.is_new = false;
    let record = match stored.received.take() {
        Some(record) => {
            let has_conflicts = !made_by_one && stored.doc.has_conflicts()?;
            super::projection::write_record(conn, &mut stored.doc, &record, has_conflicts, search)?;
            Some(record)
        }
        None => super::projection::write_into(conn, &mut stored.doc, search)?,
    };
    if stored.stored_changes.len() >= COMPACT_AFTER {
        compact(conn, stored)?;
    }
    Ok(record)
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
/// Whether this store holds a document for `id` (without loading it).
pub(crate) fn exists(conn: &Connection, id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM documents WHERE id = ?1")?
        .query_row([id], |_| Ok(()))
        .optional()?
        .is_some())
}

pub(crate) fn insert(conn: &Connection, id: &str, snapshot: &[u8]) -> Result<()> {
    conn.prepare_cached("INSERT INTO documents (id, snapshot) VALUES (?1, ?2)")?
        .execute(params![id, snapshot])?;
    Ok(())
}

/// Replaces the snapshot with the document's current state and drops the
/// stored changes it now contains; changes still waiting for dependencies stay.
pub(crate) fn compact(conn: &Connection, loaded: &mut StoredDoc) -> Result<()> {
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
