//! The review queue: nothing a rep did while authorised is lost to a later
//! revocation. A pushed change that the access policy now refuses, but that
//! was made while its device still had the record in view (its territory
//! was in the device's view, as of the device's cursor), is not refused: it
//! is *held*. An office or manager user then accepts it — it is applied and
//! logged as its author's change, through the one push path, under the
//! decider's access — or discards it. The device keeps sending held changes
//! at every sync and learns the outcome from the answer: acknowledged
//! (accepted), `held_for_review` (still waiting) or `discarded`.

use fieldcrm_core::protocol::RecordBytes;
use fieldcrm_core::{FieldChange, ParsedChange, RecordDoc};

use super::access::{self, Scope};
use super::push::{self, PushStore};
use super::{RelayError, Result, Role, User};

/// Where a held change stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Review {
    Held,
    Accepted,
    Discarded,
}

impl Review {
    /// The stored status; anything unknown reads as held (never lost).
    pub fn parse(status: &str) -> Review {
        match status {
            "accepted" => Review::Accepted,
            "discarded" => Review::Discarded,
            _ => Review::Held,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Review::Held => "held",
            Review::Accepted => "accepted",
            Review::Discarded => "discarded",
        }
    }
}

/// The columns of the review queue's table, in the order stores read them.
pub const HELD_COLUMNS: &str =
    "hash, record_id, territory, user_id, device, bytes, held_at, status, decided_by, decided_at";

/// One change in the review queue, as stored.
#[derive(Debug, Clone)]
pub struct Held {
    pub hash: [u8; 32],
    pub record_id: String,
    /// The record's territory (at the relay) when the change was held.
    pub territory: Option<String>,
    /// Its author (the change's message).
    pub user: String,
    pub device: String,
    pub bytes: Vec<u8>,
    /// When the relay held it (ms since the epoch, relay clock).
    pub held_at: i64,
    pub review: Review,
    pub decided_by: Option<String>,
    pub decided_at: Option<i64>,
}

/// A held change as the office UI shows it.
#[derive(Debug, Clone)]
pub struct HeldChange {
    pub held: Held,
    /// The record's display name now.
    pub record_name: String,
    /// When its author made it (the change's own time).
    pub made_at: i64,
    /// The fields it changes, from what (as its author saw it) to what.
    pub fields: Vec<FieldChange>,
}

/// Who may decide on held changes of `territory`: office and admin users,
/// and managers of that territory.
pub fn may_decide(user: &User, territory: Option<&str>) -> bool {
    match user.role {
        Role::Office | Role::Admin => true,
        Role::Manager => access::sees(user, territory),
        Role::Rep => false,
    }
}

/// What a decision did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    Accepted,
    Discarded,
    /// Accepting failed: the change (no longer) fits the data model or
    /// the decider's territories. It stays held.
    Refused(String),
}

/// Accepts (`accept`) or discards the held changes `hashes` as `decider`.
/// (A decision back to `Held`, after a failed acceptance, is recorded with
/// an empty decider and time 0, which the stores keep as none.)
/// Accepting pushes them, in the order they were held, as their author
/// from their device, under the decider's access.
pub fn decide<S: PushStore>(
    store: &mut S,
    decider: &User,
    hashes: &[[u8; 32]],
    accept: bool,
    now: i64,
) -> Result<Vec<Decided>> {
    let rows = store.reviews(hashes)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if !may_decide(decider, row.territory.as_deref()) {
            return Err(RelayError::NotFound(format!(
                "no held change {} you may decide on",
                hex::encode(row.hash)
            )));
        }
        if row.review != Review::Held {
            out.push(match row.review {
                Review::Accepted => Decided::Accepted,
                _ => Decided::Discarded,
            });
            continue;
        }
        if !accept {
            store.decide_review(&row.hash, Review::Discarded, &decider.id, now)?;
            out.push(Decided::Discarded);
            continue;
        }
        let as_author = User {
            id: row.user.clone(),
            role: decider.role,
            territories: decider.territories.clone(),
        };
        let change = RecordBytes {
            record_id: row.record_id.clone(),
            bytes: row.bytes.clone(),
        };
        // Accepted first, so the push takes it instead of holding it again.
        store.decide_review(&row.hash, Review::Accepted, &decider.id, now)?;
        let pushed = push::push(
            store,
            &as_author,
            &row.device,
            &push::Known::nothing(),
            std::slice::from_ref(&change),
        )?;
        match pushed.rejected.into_iter().next() {
            Some(r) => {
                store.decide_review(&row.hash, Review::Held, "", 0)?;
                out.push(Decided::Refused(r.reason));
            }
            None => out.push(Decided::Accepted),
        }
    }
    Ok(out)
}

/// Describes held changes (already narrowed to what the viewer may
/// decide): the record's current document, `snapshot(id)`, with each held
/// change applied in order, tells what it changes.
pub fn describe(
    held: Vec<Held>,
    snapshot: &mut dyn FnMut(&str) -> Result<Option<Vec<u8>>>,
) -> Result<Vec<HeldChange>> {
    let mut out = Vec::with_capacity(held.len());
    let mut current: Option<(String, RecordDoc)> = None;
    for row in held {
        if current.as_ref().is_none_or(|(id, _)| *id != row.record_id) {
            let doc = match snapshot(&row.record_id)? {
                Some(bytes) => RecordDoc::load(&row.record_id, Some(&bytes), [])?,
                None => RecordDoc::empty(&row.record_id),
            };
            current = Some((row.record_id.clone(), doc));
        }
        let Some((_, doc)) = current.as_mut() else {
            continue;
        };
        let parsed = ParsedChange::parse(&row.record_id, &row.bytes)?;
        let made_at = parsed.time();
        doc.apply_remote(vec![parsed])?;
        let fields = doc
            .change_effect(&row.hash)?
            .map(|(_, f)| f)
            .unwrap_or_default();
        let record_name = doc
            .read()
            .map(|r| r.display_name())
            .unwrap_or_else(|_| row.record_id.clone());
        out.push(HeldChange {
            held: row,
            record_name,
            made_at,
            fields,
        });
    }
    Ok(out)
}

/// The held changes `user` may decide on.
pub fn scope_for(user: &User) -> Option<Scope> {
    match user.role {
        Role::Rep => None,
        _ => Some(access::scope(user)),
    }
}
