//! A refused change never forks a record (docs/decisions/0004-refused-changes.md).
//!
//! Automerge changes are immutable and every later edit of a record depends
//! on the earlier ones, so a change the relay refuses cannot simply be
//! dropped: the device's copy would keep it, and everything after it would
//! be refused too. Instead the device *rebases* the record: it replaces its
//! copy with the relay's (which the relay sends with the refusal) and
//! re-makes its later edits on top as fresh changes, from their *intent*
//! (the fields each set, the text it wrote) rather than their bytes. The
//! refused change is kept with its intent, unsent, until the user retries
//! it (re-made on the current record) or discards it.

use std::collections::HashMap;

use rusqlite::Transaction;
use serde::{Deserialize, Serialize};

use super::{
    apply_snapshot_in, create_in, documents, edit_in, evict_in, outbox, set_deleted_on,
    update_fields, Store, Writer,
};
use crate::doc::{merge_text, FieldChange, Renamed, TextEdit};
use crate::error::{Error, Result};
use crate::model::{FieldType, Fields, Kind, Record, Value};
use crate::protocol::Rejection;

/// What a local change meant to do, kept so it can be made again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Intent {
    pub kind: Kind,
    /// It created the record.
    pub creates: bool,
    /// Each field it changed, from what (as its author saw it) to what;
    /// the tombstone as `deleted`.
    pub fields: Vec<FieldChange>,
    /// Its edits of long texts, by the characters they touched, so they
    /// are made again where they were typed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub text: Vec<TextEdit>,
}

/// A change the relay refused, as the app shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefusedChange {
    /// Pass it to [`Store::retry_refused`] or [`Store::discard_refused`].
    pub id: i64,
    pub record_id: String,
    /// `None` when what it did is not known (refused before this version).
    pub kind: Option<Kind>,
    /// It created the record.
    pub creates: bool,
    /// The fields it set, from what to what (the tombstone as `deleted`).
    pub fields: Vec<FieldChange>,
    /// Why, in words a user can read.
    pub reason: String,
    /// The relay's (or the device's) refusal code (docs/protocol.md).
    pub code: String,
    /// The field the refusal is about, when it names one.
    pub field: Option<String>,
    /// When the device learned of it (ms since the epoch).
    pub refused_at: Option<i64>,
}

/// A refusal as the relay sent it, by change hash.
pub(crate) type Refusals<'a> = HashMap<[u8; 32], &'a Rejection>;

/// The intent of change `hash` of record `id`, read from its document.
fn intent_of(doc: Option<&mut documents::StoredDoc>, hash: &[u8; 32]) -> Result<Option<Intent>> {
    let Some(doc) = doc else { return Ok(None) };
    let Some(kind) = doc.doc().kind()? else {
        return Ok(None);
    };
    let Some((creates, fields)) = doc.doc().change_effect(hash)? else {
        return Ok(None);
    };
    let text = fields
        .iter()
        .filter(|f| is_long_text(kind, &f.field))
        .filter_map(|f| doc.doc().text_edit(hash, &f.field))
        .collect();
    Ok(Some(Intent {
        kind,
        creates,
        fields,
        text,
    }))
}

fn is_long_text(kind: Kind, field: &str) -> bool {
    kind.field(field)
        .is_some_and(|s| s.ty == FieldType::LongText)
}

/// Replaces record `id` with the relay's copy (`relay` empty: the relay has
/// none the user may see) and re-makes its waiting changes on top: the
/// ones refused in `refusals` stay refused with their intent; every other
/// one is made again as a fresh change, or refused with the reason if its
/// intent no longer holds. Returns how many changes it kept refused.
pub(crate) fn rebase(
    tx: &Transaction<'_>,
    w: &Writer<'_>,
    id: &str,
    relay: &[u8],
    refusals: &Refusals<'_>,
) -> Result<usize> {
    let mut old = documents::load(tx, id)?;
    let mut work = Vec::new();
    for entry in outbox::of_record(tx, id)? {
        // Held ones wait for their review, unless it just ended; those
        // refused before keep their intent already.
        if entry.rejected.is_some() && !refusals.contains_key(&entry.hash) {
            continue;
        }
        let intent = intent_of(old.as_mut(), &entry.hash)?;
        work.push((entry, intent));
    }
    evict_in(tx, id)?;
    if !relay.is_empty() {
        apply_snapshot_in(tx, id, relay)?;
    }
    let mut refused_creation: Option<String> = None;
    let mut kept = 0;
    // Text re-made by one change is named anew; later ones follow it.
    let mut renamed = Renamed::new();
    for (entry, intent) in work {
        let json = intent
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let mut refuse = |reason: &str, code: &str, field: Option<&str>| {
            kept += 1;
            outbox::refuse(
                tx,
                &entry.hash,
                reason,
                code,
                field,
                json.as_deref(),
                w.meta.time,
            )
        };
        match refusals.get(&entry.hash) {
            // Refused for how it was made, not for what it meant (it built
            // on a refused change, or made a map the record has): made
            // again below.
            Some(r) if !REMADE_CODES.contains(&r.code.as_str()) => {
                if intent.as_ref().is_some_and(|i| i.creates) {
                    refused_creation = Some(r.reason.clone());
                }
                refuse(&r.reason, &r.code, r.field.as_deref())?;
            }
            // Not refused itself, or only for building on a refused one.
            _ => match intent {
                None => {
                    refuse(
                        "the change could not be read back to make it again",
                        "unreadable",
                        None,
                    )?;
                }
                Some(intent) => match remake(tx, w, id, &intent, &mut renamed) {
                    Ok(_) => {
                        outbox::remove(tx, entry.seq)?;
                    }
                    // The relay has no such record (one restored from a
                    // backup lost it, until its maker's device sends it
                    // again): made again by itself when the record comes.
                    Err(Error::NotFound(_)) if relay.is_empty() && refused_creation.is_none() => {
                        refuse(WAITS_REASON, outbox::WAITS_FOR_RECORD, None)?;
                    }
                    Err(Error::NotFound(_)) if refused_creation.is_some() => {
                        let why = format!(
                            "the record it edits was not created: {}",
                            refused_creation.as_deref().unwrap_or_default()
                        );
                        refuse(&why, "depends_on_refused", None)?;
                    }
                    Err(e) if is_storage(&e) => return Err(e),
                    Err(e) => {
                        refuse(&e.to_string(), e.code(), e.field())?;
                    }
                },
            },
        }
    }
    Ok(kept)
}

/// Refusal codes of changes that are made again, not kept refused.
const REMADE_CODES: &[&str] = &["missing_dependencies", "competing_object"];

/// Why a change waits for its record.
const WAITS_REASON: &str = "the relay does not have the record this edits (yet): it is made again \
     when the record comes back, or discard it";

/// Makes again the changes that waited for record `id` (see
/// [`outbox::WAITS_FOR_RECORD`]), now that the device has it. One that no
/// longer holds on the record as it is becomes an ordinary refusal.
pub(crate) fn remake_waiting(tx: &Transaction<'_>, w: &Writer<'_>, id: &str) -> Result<usize> {
    let mut made = 0;
    let mut renamed = Renamed::new();
    for waiting in outbox::waiting_for_record(tx, id)? {
        let Some(intent) = waiting
            .intent
            .as_deref()
            .and_then(|json| serde_json::from_str::<Intent>(json).ok())
        else {
            continue;
        };
        match remake(tx, w, id, &intent, &mut renamed) {
            Ok(_) => {
                outbox::remove(tx, waiting.seq)?;
                made += 1;
            }
            Err(e) if is_storage(&e) => return Err(e),
            // Heard of, but not all here yet: wait on.
            Err(Error::NotFound(_) | Error::NotYetCreated { .. }) => {}
            Err(e) => outbox::set_refusal(tx, waiting.seq, &e.to_string(), e.code(), e.field())?,
        }
    }
    Ok(made)
}

fn is_storage(e: &Error) -> bool {
    e.is_storage()
}

/// Makes `intent` again as a fresh local change on record `id` as it is
/// now: a creation (with the same id) if the record is not here, else its
/// fields set — long text edits placed by the characters they touched
/// (`renamed` names those re-made by earlier changes), or merged by value
/// when that cannot be — or its tombstone set.
pub(crate) fn remake(
    tx: &Transaction<'_>,
    w: &Writer<'_>,
    id: &str,
    intent: &Intent,
    renamed: &mut Renamed,
) -> Result<Record> {
    if documents::load(tx, id)?.is_none() {
        if !intent.creates {
            return Err(Error::NotFound(id.to_string()));
        }
        let fields: Fields = intent
            .fields
            .iter()
            .filter(|f| f.field != "deleted" && !f.new.is_null())
            .map(|f| (f.field.clone(), f.new.clone()))
            .collect();
        return create_in(tx, w, Some(id), intent.kind, fields);
    }
    let tombstone = intent.fields.iter().find(|f| f.field == "deleted");
    let only_tombstone = intent.fields.iter().all(|f| f.field == "deleted");
    edit_in(tx, w, id, |tx, w, doc, kind| {
        if let (true, Some(t)) = (only_tombstone, tombstone) {
            return set_deleted_on(w, doc, t.new == Value::Bool(true));
        }
        let current = doc.read()?;
        let mut fields = Fields::new();
        let mut placed = Vec::new();
        for f in intent.fields.iter().filter(|f| f.field != "deleted") {
            let exact = intent
                .text
                .iter()
                .find(|t| t.field == f.field)
                .and_then(|t| doc.replay_text(t, renamed));
            let value = match (is_long_text(kind, &f.field), &f.old, &f.new) {
                (true, old, Value::Text(mine)) => Value::Text(match exact {
                    Some(exact) => {
                        let text = exact.text.clone();
                        placed.push((f.field.as_str(), exact));
                        text
                    }
                    // Not placeable by its characters: merged by value.
                    None => merge_text(
                        old.as_str().unwrap_or(""),
                        mine,
                        current.text(&f.field).unwrap_or(""),
                    ),
                }),
                _ => f.new.clone(),
            };
            fields.insert(f.field.clone(), value);
        }
        let change = update_fields(tx, w, doc, kind, fields)?;
        for (field, exact) in &placed {
            doc.learn_names(field, exact, renamed);
        }
        Ok(change)
    })
}

impl Store {
    /// Changes the relay refused, oldest first, with what each meant to do.
    pub fn refused_changes(&self) -> Result<Vec<RefusedChange>> {
        outbox::refused(&self.conn)?
            .into_iter()
            .map(|r| {
                let intent: Option<Intent> = r
                    .intent
                    .as_deref()
                    .map(serde_json::from_str)
                    .transpose()
                    .map_err(|e| Error::Protocol(format!("a stored intent is unreadable: {e}")))?;
                Ok(RefusedChange {
                    id: r.seq,
                    record_id: r.record_id,
                    kind: intent.as_ref().map(|i| i.kind),
                    creates: intent.as_ref().is_some_and(|i| i.creates),
                    fields: intent.map(|i| i.fields).unwrap_or_default(),
                    reason: r.reason,
                    code: r.code,
                    field: r.field,
                    refused_at: r.refused_at,
                })
            })
            .collect()
    }

    /// Drops a refused change for good (the user decided it is not wanted).
    pub fn discard_refused(&mut self, id: i64) -> Result<()> {
        let tx = self.conn.transaction()?;
        outbox::refused_one(&tx, id)?.ok_or_else(|| refused_not_found(id))?;
        outbox::remove(&tx, id)?;
        tx.commit()?;
        Ok(())
    }

    /// Makes a refused change again, as a fresh change on the record as it
    /// is now (after an admin granted a territory, say); it is sent at the
    /// next sync. Fails, keeping it refused, if it is still invalid here.
    pub fn retry_refused(&mut self, id: i64) -> Result<Record> {
        let (tx, w) = self.begin()?;
        let refused = outbox::refused_one(&tx, id)?.ok_or_else(|| refused_not_found(id))?;
        let intent: Intent = match refused.intent.as_deref() {
            Some(json) => serde_json::from_str(json)
                .map_err(|e| Error::Protocol(format!("a stored intent is unreadable: {e}")))?,
            None => {
                return Err(Error::invalid(
                    "id",
                    id,
                    "what this change did was not kept (it was refused before this version); discard it",
                ))
            }
        };
        let record = remake(&tx, &w, &refused.record_id, &intent, &mut Renamed::new())?;
        outbox::remove(&tx, id)?;
        tx.commit()?;
        Ok(record)
    }
}

fn refused_not_found(id: i64) -> Error {
    Error::NotFound(format!("refused change {id}"))
}
