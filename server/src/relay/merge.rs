//! Merging duplicates at the relay, and what the push path does for the
//! devices that learn of a merge late (decision 0009).
//!
//! [`merge`] and [`unmerge`] run in one store transaction: the records are
//! locked and read there, so the check and the edits see the same state,
//! and every edit goes through the one push path as an office edit (kept
//! all together or, at the first refusal, not at all).
//!
//! [`follow_up`] runs at the end of every device push that touched a
//! merged tombstone or linked to one: an edit of the tombstone is carried
//! onto the survivor (or held for review where the survivor holds another
//! value), and a new link is re-pointed to the survivor. Those edits are
//! the pushing user's, made from the device [`MERGE_DEVICE`].

use std::collections::HashSet;

use fieldcrm_core::merge::{self as plan, Carry};
use fieldcrm_core::{draft_on, Author, Edit, Fields, Record, Value};

use super::push::{self, PushStore};
use super::review::{Held, Review};
use super::{EditRefusal, Refusal, Result, Role, User};

/// The device name of the edits the relay makes for a merge's late
/// arrivals (shown in field history and on the review page).
pub const MERGE_DEVICE: &str = "merge";

/// Longest chain of merges followed to the record that survives them all.
const MOST_MERGES: usize = 16;

type Outcome<T> = Result<std::result::Result<T, EditRefusal>>;

fn refused(code: &str, message: String) -> EditRefusal {
    EditRefusal::Refused {
        field: None,
        code: code.into(),
        message,
    }
}

fn not_found(id: &str) -> EditRefusal {
    EditRefusal::NotFound(format!("no record with id {id:?}"))
}

/// Only office and admin users merge: a merge re-points records in every
/// territory.
fn may_merge(user: &User) -> std::result::Result<(), EditRefusal> {
    match user.role {
        Role::Office | Role::Admin => Ok(()),
        _ => Err(refused(
            "not_allowed",
            "only office and admin users merge records".into(),
        )),
    }
}

/// The record `id` as this transaction sees it, if `user` may see it.
fn visible<S: PushStore>(store: &mut S, user: &User, id: &str) -> Result<Option<Record>> {
    let Some(mut doc) = store.documents(&[id])?.pop().flatten() else {
        return Ok(None);
    };
    let record = doc.doc().read()?;
    Ok(super::access::sees(user, record.text("territory")).then_some(record))
}

fn heads<S: PushStore>(store: &mut S, id: &str) -> Result<Vec<[u8; 32]>> {
    Ok(match store.documents(&[id])?.pop().flatten() {
        Some(mut doc) => doc.doc().heads(),
        None => Vec::new(),
    })
}

/// The office edits of `edits`, all kept or none (the caller's
/// transaction rolls back on a refusal).
fn edit_all<S: PushStore>(
    store: &mut S,
    user: &User,
    edits: Vec<Edit>,
    now: i64,
) -> Outcome<Vec<Record>> {
    let outcomes = push::edit(store, user, super::office::WEB_DEVICE, edits, now)?;
    Ok(push::all_or_none(outcomes))
}

/// What a merge did.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub survivor: Record,
    /// The survivor's fields that took the duplicate's value.
    pub taken: Vec<String>,
    /// How many records were re-pointed from the duplicate to the survivor.
    pub repointed: usize,
}

/// Merges `duplicate_id` into `survivor_id` as `user`: the survivor takes
/// the values `core::merge::plan_merge` gives it, every record naming the
/// duplicate is re-pointed, and the duplicate becomes a tombstone naming
/// the survivor. Merging a pair merged already answers as that merge did.
pub fn merge<S: PushStore>(
    store: &mut S,
    user: &User,
    survivor_id: &str,
    duplicate_id: &str,
    take: &[String],
    now: i64,
) -> Outcome<Merged> {
    if let Err(r) = may_merge(user) {
        return Ok(Err(r));
    }
    let mut ids = [survivor_id, duplicate_id];
    ids.sort_unstable();
    store.lock(&ids)?;
    let Some(survivor) = visible(store, user, survivor_id)? else {
        return Ok(Err(not_found(survivor_id)));
    };
    let Some(duplicate) = visible(store, user, duplicate_id)? else {
        return Ok(Err(not_found(duplicate_id)));
    };
    if plan::merged_into(&duplicate) == Some(survivor_id) {
        // The same merge, made a moment ago by someone else: one result.
        return Ok(Ok(Merged {
            survivor,
            taken: Vec::new(),
            repointed: 0,
        }));
    }
    let planned = match plan::plan_merge(&survivor, &duplicate, take) {
        Ok(p) => p,
        Err(e) => return Ok(Err(Refusal::from_core(e)?.into())),
    };
    let mut edits = Vec::new();
    if !planned.survivor.is_empty() {
        edits.push(Edit::Update {
            id: survivor_id.into(),
            fields: planned.survivor,
        });
    }
    if let Err(r) = edit_all(store, user, edits, now)? {
        return Ok(Err(r));
    }
    let survivor_heads = heads(store, survivor_id)?;
    let mut edits = Vec::new();
    for id in store.referrers(duplicate_id)? {
        if id == survivor_id || id == duplicate_id {
            continue;
        }
        // A deleted record keeps its link: it names a tombstone that
        // names the survivor.
        let Some(record) = visible(store, user, &id)?.filter(|r| !r.deleted) else {
            continue;
        };
        let fields: Fields = plan::fields_naming(&record, duplicate_id)
            .into_iter()
            .map(|path| (path, Value::from(survivor_id)))
            .collect();
        if !fields.is_empty() {
            edits.push(Edit::Update { id, fields });
        }
    }
    let repointed = edits.len();
    edits.push(Edit::Update {
        id: duplicate_id.into(),
        fields: plan::tombstone_fields(survivor_id, &user.id, now, &survivor_heads),
    });
    edits.push(Edit::Delete {
        id: duplicate_id.into(),
    });
    if let Err(r) = edit_all(store, user, edits, now)? {
        return Ok(Err(r));
    }
    let survivor = visible(store, user, survivor_id)?.unwrap_or(survivor);
    Ok(Ok(Merged {
        survivor,
        taken: planned.taken,
        repointed,
    }))
}

/// Undoes the merge that made `tombstone_id` a tombstone, as `user`, while
/// nobody has changed the survivor since: the tombstone is restored, the
/// survivor's fields the merge set go back to what they were, and the
/// records that were re-pointed from it point at it again. Returns the
/// restored record.
pub fn unmerge<S: PushStore>(
    store: &mut S,
    user: &User,
    tombstone_id: &str,
    now: i64,
) -> Outcome<Record> {
    if let Err(r) = may_merge(user) {
        return Ok(Err(r));
    }
    let Some(tombstone) = visible(store, user, tombstone_id)? else {
        return Ok(Err(not_found(tombstone_id)));
    };
    let Some(survivor_id) = plan::merged_into(&tombstone).map(String::from) else {
        return Ok(Err(refused(
            "invalid_value",
            format!(
                "{:?} was not merged into another record",
                tombstone.display_name()
            ),
        )));
    };
    let mut ids = [survivor_id.as_str(), tombstone_id];
    ids.sort_unstable();
    store.lock(&ids)?;
    let Some(mut survivor_doc) = store.documents(&[survivor_id.as_str()])?.pop().flatten() else {
        return Ok(Err(not_found(&survivor_id)));
    };
    let now_heads = survivor_doc.doc().heads();
    if now_heads != plan::merged_heads(&tombstone) {
        return Ok(Err(refused(
            "invalid_value",
            format!(
                "{:?} was changed after the merge, so the merge can no longer be undone; \
                 restore the duplicate and edit both by hand instead",
                survivor_doc.doc().read()?.display_name()
            ),
        )));
    }
    // The merge's own change of the survivor, if it made one: the newest,
    // stamped with the merge's time by the one who merged.
    let merged_at = tombstone.get(plan::MERGED_AT).and_then(Value::as_int);
    let merged_by = tombstone.text(plan::MERGED_BY).unwrap_or_default();
    let mut reverted = Fields::new();
    if let [head] = now_heads.as_slice() {
        let by_merge = survivor_doc.doc().history()?.last().is_some_and(|h| {
            h.change == hex::encode(head) && Some(h.time) == merged_at && h.user == merged_by
        });
        if by_merge {
            if let Some((_, changes)) = survivor_doc.doc().change_effect(head)? {
                reverted.extend(changes.into_iter().map(|c| (c.field, c.old)));
            }
        }
    }
    let mut edits = vec![
        Edit::Restore {
            id: tombstone_id.into(),
        },
        Edit::Update {
            id: tombstone_id.into(),
            fields: plan::cleared_merge_fields(),
        },
    ];
    if !reverted.is_empty() {
        edits.push(Edit::Update {
            id: survivor_id.clone(),
            fields: reverted,
        });
    }
    for id in store.referrers(&survivor_id)? {
        if id == tombstone_id {
            continue;
        }
        let Some(mut doc) = store.documents(&[id.as_str()])?.pop().flatten() else {
            continue;
        };
        let record = doc.doc().read()?;
        if record.deleted {
            continue;
        }
        let mut back = Fields::new();
        for path in plan::fields_naming(&record, &survivor_id) {
            let timeline = doc.doc().field_timeline(&path)?;
            let before = timeline.len().checked_sub(2).map(|i| &timeline[i].1);
            if before.and_then(Value::as_str) == Some(tombstone_id) {
                back.insert(path, Value::from(tombstone_id));
            }
        }
        if !back.is_empty() {
            edits.push(Edit::Update { id, fields: back });
        }
    }
    match edit_all(store, user, edits, now)? {
        Ok(_) => Ok(visible(store, user, tombstone_id)?.ok_or_else(|| not_found(tombstone_id))),
        Err(r) => Ok(Err(r)),
    }
}

/// A device's change that a merge it had not heard of concerns.
#[derive(Debug)]
pub(super) enum Late {
    /// A change of a merged tombstone (the record before and after it).
    Tombstone { before: Record, after: Record },
    /// A record whose fields now name merged tombstones.
    Links { record: Record },
}

/// The record that survives every merge from `id` on.
fn survivor_of<S: PushStore>(store: &mut S, id: &str) -> Result<String> {
    let mut at = id.to_string();
    for _ in 0..MOST_MERGES {
        match store.merged_into(&at)? {
            Some(next) => at = next,
            None => break,
        }
    }
    Ok(at)
}

/// Carries the late changes of a push by `user` onto the survivors:
/// each as an edit of `user`'s from [`MERGE_DEVICE`], through the push
/// path; an edit that meets another value on the survivor, or that the
/// user may not make there, is held for review instead.
pub(super) fn follow_up<S: PushStore>(
    store: &mut S,
    user: &User,
    late: Vec<Late>,
    merged: &HashSet<String>,
    now: i64,
) -> Result<()> {
    for item in late {
        match item {
            Late::Tombstone { before, after } => {
                let survivor_id = survivor_of(store, &before.id)?;
                if !after.deleted {
                    // Restored offline before its author heard of the merge:
                    // the tombstone stays one, the survivor is the record.
                    push::edit(
                        store,
                        user,
                        MERGE_DEVICE,
                        vec![Edit::Delete {
                            id: after.id.clone(),
                        }],
                        now,
                    )?;
                }
                let Some(survivor) = store
                    .documents(&[survivor_id.as_str()])?
                    .pop()
                    .flatten()
                    .map(|mut d| d.doc().read())
                    .transpose()?
                else {
                    continue;
                };
                let carry = plan::carry(&before, &after, &survivor);
                carry_onto(store, user, &survivor_id, carry, now)?;
            }
            Late::Links { record } => {
                let mut fields = Fields::new();
                for (path, value) in &record.fields {
                    let Some(target) = value.as_str().filter(|v| merged.contains(*v)) else {
                        continue;
                    };
                    if path == plan::MERGED_INTO {
                        continue;
                    }
                    fields.insert(path.clone(), Value::from(survivor_of(store, target)?));
                }
                if fields.is_empty() {
                    continue;
                }
                let edit = Edit::Update {
                    id: record.id.clone(),
                    fields,
                };
                if let Some(Err(refusal)) =
                    push::edit(store, user, MERGE_DEVICE, vec![edit], now)?.pop()
                {
                    // The link stays on the tombstone, which still names its
                    // survivor; nothing the device sent is lost.
                    tracing::warn!(record = %record.id, %refusal, "could not re-point a link to a merged record");
                }
            }
        }
    }
    Ok(())
}

fn carry_onto<S: PushStore>(
    store: &mut S,
    user: &User,
    survivor_id: &str,
    carry: Carry,
    now: i64,
) -> Result<()> {
    if carry.is_empty() {
        return Ok(());
    }
    let mut review = carry.review;
    if !carry.clean.is_empty() {
        let edit = Edit::Update {
            id: survivor_id.into(),
            fields: carry.clean.clone(),
        };
        if let Some(Err(_)) = push::edit(store, user, MERGE_DEVICE, vec![edit], now)?.pop() {
            // Not the user's to make there (another territory, a write
            // rule): a person decides.
            review.extend(carry.clean);
        }
    }
    if review.is_empty() {
        return Ok(());
    }
    let Some(mut doc) = store.documents(&[survivor_id])?.pop().flatten() else {
        return Ok(());
    };
    let territory = doc.doc().read()?.text("territory").map(String::from);
    // A fresh actor per held change: two held changes of one record must
    // never share an actor's sequence number, whichever is accepted first.
    let author = Author {
        user: user.id.clone(),
        actor: uuid::Uuid::new_v4().as_bytes().to_vec(),
    };
    let config = store.configuration()?;
    let draft = {
        // References as the relay sees them all: the held change is
        // checked again, under its decider's access, when it is accepted.
        let cell = std::cell::RefCell::new(&mut *store);
        let find = |id: &str| -> fieldcrm_core::Result<Option<(fieldcrm_core::Kind, bool)>> {
            let facts = cell.borrow_mut().facts(id).map_err(push::storage)?;
            Ok(facts.map(|f| (f.kind, f.deleted)))
        };
        draft_on(
            Some(doc.into_doc()),
            &author,
            now,
            &config,
            &find,
            Edit::Update {
                id: survivor_id.into(),
                fields: review,
            },
        )
    };
    let draft = match draft {
        Ok(Some(draft)) => draft,
        Ok(None) => return Ok(()),
        Err(e) if e.is_storage() => return Err(e.into()),
        Err(e) => {
            tracing::warn!(record = survivor_id, error = %e, "a late edit of a merged record does not fit its survivor");
            return Ok(());
        }
    };
    let bytes = draft.change.bytes;
    let hash = fieldcrm_core::ParsedChange::parse(survivor_id, &bytes)?.hash();
    store.hold(&[Held {
        hash,
        record_id: survivor_id.into(),
        territory,
        user: user.id.clone(),
        device: MERGE_DEVICE.into(),
        bytes,
        held_at: now,
        review: Review::Held,
        decided_by: None,
        decided_at: None,
    }])
}
