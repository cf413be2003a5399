//! Drafts: changes made on behalf of another author and returned, not stored.
//!
//! The relay's office UI edits records as the signed-in office user, with
//! that user's own Automerge actor, not as the relay. It drafts the change
//! here, then sends it through the same push path a device's change takes
//! (validation, access control, actor binding, the log), so a browser edit
//! is indistinguishable from a device's and reaches every device by sync.

use rusqlite::Connection;

use super::{documents, lookup_in, validate_fields_with, LookupRecord, Store};
use crate::doc::{ChangeMeta, LocalChange, RecordDoc};
use crate::error::{Error, Result};
use crate::model::{validate_id, Config, Fields, Kind, Record, RecordId, Value};

/// Who makes a drafted change: a user and the Automerge actor they edit with.
/// The actor must be used by this author alone (one writer per actor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    pub user: String,
    pub actor: Vec<u8>,
}

/// One edit to draft.
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    Create {
        kind: Kind,
        fields: Fields,
    },
    /// A creation whose id the caller chose, so later edits of one batch
    /// can point at it (a lead's conversion).
    CreateWithId {
        id: RecordId,
        kind: Kind,
        fields: Fields,
    },
    Update {
        id: RecordId,
        fields: Fields,
    },
    Delete {
        id: RecordId,
    },
    Restore {
        id: RecordId,
    },
}

/// A change made but not stored, and the record as it would be after it.
#[derive(Debug, Clone)]
pub struct Draft {
    pub record_id: RecordId,
    pub change: LocalChange,
    pub record: Record,
}

impl Store {
    /// Makes `edit` as `author` against the stored record, validating it as
    /// a local edit would, and returns the change without storing it.
    /// `Ok(None)`: the edit changes nothing (same values, already deleted...).
    pub fn draft(&self, author: &Author, edit: Edit) -> Result<Option<Draft>> {
        draft_in(self.conn(), self.config(), author, (self.clock)(), edit)
    }
}

pub(super) fn draft_in(
    conn: &Connection,
    config: &Config,
    author: &Author,
    time: i64,
    edit: Edit,
) -> Result<Option<Draft>> {
    let doc = match &edit {
        Edit::Create { .. } | Edit::CreateWithId { .. } => None,
        Edit::Update { id, .. } | Edit::Delete { id } | Edit::Restore { id } => {
            validate_id("id", id)?;
            documents::load(conn, id)?.map(|loaded| loaded.doc)
        }
    };
    draft_on(doc, author, time, config, &|id| lookup_in(conn, id), edit)
}

/// Drafts `edit` on `doc` (the record's document, `None` when creating or
/// when the record does not exist) for any storage: `lookup` resolves the
/// references the edit makes. Stores nothing.
pub fn draft_on(
    doc: Option<RecordDoc>,
    author: &Author,
    time: i64,
    config: &Config,
    lookup: LookupRecord<'_>,
    edit: Edit,
) -> Result<Option<Draft>> {
    let meta = ChangeMeta {
        user: author.user.clone(),
        time,
    };
    let existing = |id: &RecordId, doc: Option<RecordDoc>| -> Result<(RecordDoc, Kind)> {
        let mut doc = doc.ok_or_else(|| Error::NotFound(id.clone()))?;
        let kind = doc.kind()?.ok_or_else(|| Error::NotFound(id.clone()))?;
        Ok((doc, kind))
    };
    let create = |id: RecordId, kind: Kind, mut fields: Fields| -> Result<_> {
        validate_id("id", &id)?;
        if kind.field("owner").is_some() {
            fields
                .entry("owner".into())
                .or_insert_with(|| Value::from(author.user.as_str()));
        }
        let fields = validate_fields_with(lookup, kind, fields, config, true)?;
        let (doc, change) = RecordDoc::create(&id, kind, &fields, &author.actor, &meta)?;
        Ok((id, doc, Some(change)))
    };
    let (id, mut doc, change) = match edit {
        Edit::Create { kind, fields } => create(uuid::Uuid::now_v7().to_string(), kind, fields)?,
        Edit::CreateWithId { id, kind, fields } => create(id, kind, fields)?,
        Edit::Update { id, fields } => {
            let (mut doc, kind) = existing(&id, doc)?;
            if doc.read()?.deleted {
                return Err(Error::Deleted(id));
            }
            let fields = validate_fields_with(lookup, kind, fields, config, false)?;
            let change = doc.update(&author.actor, kind, &fields, &meta)?;
            (id, doc, change)
        }
        Edit::Delete { id } => {
            let (mut doc, _) = existing(&id, doc)?;
            let change = if doc.read()?.deleted {
                None
            } else {
                doc.set_deleted(&author.actor, true, &meta)?
            };
            (id, doc, change)
        }
        Edit::Restore { id } => {
            let (mut doc, _) = existing(&id, doc)?;
            let change = if doc.read()?.deleted {
                doc.set_deleted(&author.actor, false, &meta)?
            } else {
                None
            };
            (id, doc, change)
        }
    };
    let Some(change) = change else {
        return Ok(None);
    };
    let record = doc.read()?;
    Ok(Some(Draft {
        record_id: id,
        change,
        record,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fields;

    fn office() -> Author {
        Author {
            user: "olivia".into(),
            actor: vec![7; 16],
        }
    }

    #[test]
    fn a_draft_is_made_by_its_author_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut relay = Store::open(dir.path().join("r.db"), "relay").unwrap();
        let draft = relay
            .draft(
                &office(),
                Edit::Create {
                    kind: Kind::Account,
                    fields: fields([("name", "Acme"), ("territory", "north")]),
                },
            )
            .unwrap()
            .unwrap();
        assert_eq!(draft.record.text("owner"), Some("olivia"));
        assert_eq!(draft.record.created_by, "olivia");
        assert!(matches!(
            relay.get(&draft.record_id),
            Err(Error::NotFound(_))
        ));
        assert_eq!(relay.outbox_status().unwrap().pending, 0);

        // Applied like a device's change, it is the author's, not the store's.
        relay
            .apply_changes(&draft.record_id, std::slice::from_ref(&draft.change.bytes))
            .unwrap();
        let history = relay.history(&draft.record_id).unwrap();
        assert_eq!(history[0].user, "olivia");
        assert_eq!(history[0].actor, "07".repeat(16));

        let id = draft.record_id.clone();
        let update = |fields: Fields| {
            relay.draft(
                &office(),
                Edit::Update {
                    id: id.clone(),
                    fields,
                },
            )
        };
        assert!(update(fields([("name", "Acme")])).unwrap().is_none());
        let renamed = update(fields([("name", "Acme Ltd")])).unwrap().unwrap();
        assert_eq!(renamed.record.text("name"), Some("Acme Ltd"));
        let err = update(fields([("website", "not a url")])).unwrap_err();
        assert!(err.to_string().contains("website"), "{err}");
        let err = relay
            .draft(&office(), Edit::Delete { id: "nope".into() })
            .unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err}");
        assert!(relay
            .draft(&office(), Edit::Restore { id: id.clone() })
            .unwrap()
            .is_none());
        let deleted = relay
            .draft(&office(), Edit::Delete { id })
            .unwrap()
            .unwrap();
        assert!(deleted.record.deleted);
    }
}
