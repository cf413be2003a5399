//! The one push algorithm, shared by every relay store (as [`super::pull`]
//! is): a store answers the storage questions of [`PushStore`] inside one
//! transaction, and decides nothing.
//!
//! For each pushed change, in order:
//! 1. at most [`MAX_CHANGE_BYTES`], one well-formed Automerge change, signed
//!    (its message) as the signed-in user;
//! 2. already in the log: acknowledged, nothing stored;
//! 3. its actor is bound to this user (an unbound one is bound now) —
//!    another user's actor is refused;
//! 4. grouped with the other changes of its record (first-appearance order,
//!    so an account created in a push is known to the contacts after it);
//! 5. the record, if stored, must be in the user's territories;
//! 6. received into the record's document: every change must apply now,
//!    be stamped in milliseconds, keep the record's identity, and leave
//!    every field it touched valid under the data model, with references
//!    to live records the user can see, owners that are users and
//!    territories that exist (`fieldcrm_core::StoredDoc::receive`);
//! 7. the record after it must be in the user's territories;
//! 8. if a record's changes fail together, each is tried alone, in order,
//!    so every change gets its own answer; one refused for a reference
//!    (with its record's changes after it) is tried once more after the
//!    rest of the push, which may hold the record it names;
//! 9. accepted records are saved and their changes appended to the log,
//!    the first of a record's entries carrying a move;
//! 10. a change to a merged tombstone, or one linking to it, made before
//!     its device heard of the merge, is followed up ([`super::merge`]):
//!     carried onto the survivor, or re-pointed to it.
//!
//! Office edits ([`edit`]) are drafted as the office user and pushed
//! through the same steps.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};

use fieldcrm_core::protocol::{Cursor, RecordBytes, Rejection};
use fieldcrm_core::{
    draft_on, Author, Config, Directory, Edit, Kind, ParsedChange, Pipeline, Record, Rules,
    StoredDoc, CONFIG_ID,
};

use super::access;
use super::review::{Held, Review};
use super::{EditOutcome, EditRefusal, PushOutcome, Refusal, RelayError, Result, User};

/// Largest single change a device may push.
pub const MAX_CHANGE_BYTES: usize = 1 << 20;

/// What a reference check needs of a stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFacts {
    pub kind: Kind,
    pub deleted: bool,
    pub territory: Option<String>,
}

impl RecordFacts {
    fn of(record: &Record) -> Self {
        RecordFacts {
            kind: record.kind,
            deleted: record.deleted,
            territory: record.text("territory").map(String::from),
        }
    }
}

/// One log entry a push appends.
#[derive(Debug)]
pub struct LogRow<'a> {
    pub record_id: &'a str,
    pub hash: [u8; 32],
    /// The record's territory after the change.
    pub territory: Option<&'a str>,
    /// Set on the first entry of a change that moved the record.
    pub moved_from: Option<&'a str>,
    pub bytes: &'a [u8],
}

/// What the pushing device knew when it made its changes (its cursor):
/// a change to a record that left the user's territories since is held for
/// review rather than refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct Known<'a> {
    /// The log position the device had seen.
    pub seq: u64,
    /// The territories the device's data covered (`["*"]`: all).
    pub view: Option<&'a [String]>,
}

impl<'a> Known<'a> {
    /// A pusher that knew nothing (the office UI, the demo, a review).
    pub fn nothing() -> Known<'static> {
        Known::default()
    }

    /// What a device's cursor says it knew.
    pub fn from_cursor(cursor: &'a fieldcrm_core::protocol::Cursor) -> Known<'a> {
        Known {
            seq: cursor
                .seq
                .max(cursor.bootstrap.as_ref().map_or(0, |b| b.start_seq)),
            view: cursor.view.as_deref(),
        }
    }

    /// Whether the device had a record of `territory` in view.
    fn had(&self, territory: Option<&str>) -> bool {
        self.view.is_some_and(|v| {
            v.iter()
                .any(|t| t == access::ALL || Some(t.as_str()) == territory)
        })
    }
}

/// A record a push changed, ready to save.
#[derive(Debug)]
pub struct Accepted {
    pub doc: StoredDoc,
    pub record: Record,
}

/// The storage questions a push asks, all inside one transaction.
pub trait PushStore {
    /// Which of `hashes` the log holds already.
    fn logged(&mut self, hashes: &[[u8; 32]]) -> Result<HashSet<[u8; 32]>>;
    /// Binds every actor of `actors` that nobody has yet to `user` and
    /// `device` (an actor bound before devices were kept gets `device` if
    /// `user` pushes with it again), and returns the user each actor is
    /// bound to.
    fn claim_actors(
        &mut self,
        user: &str,
        device: &str,
        actors: &[&str],
    ) -> Result<HashMap<String, String>>;
    /// Holds every record of `ids` (sorted, distinct) for writing until the
    /// transaction ends, new ones included (stores with one writer need do
    /// nothing).
    fn lock(&mut self, ids: &[&str]) -> Result<()>;
    /// The documents of `ids` (already locked), `None` for records the
    /// store does not have.
    fn documents(&mut self, ids: &[&str]) -> Result<Vec<Option<StoredDoc>>>;
    /// A stored record's kind, tombstone and territory.
    fn facts(&mut self, id: &str) -> Result<Option<RecordFacts>>;
    /// The survivor a merged tombstone names (`None`: not merged).
    fn merged_into(&mut self, id: &str) -> Result<Option<String>> {
        Ok(match self.documents(&[id])?.pop().flatten() {
            Some(mut doc) => {
                fieldcrm_core::merge::merged_into(&doc.doc().read()?).map(String::from)
            }
            None => None,
        })
    }
    /// The ids of the records (deleted ones included) that hold `id` in a
    /// field: a superset is fine, callers check each record's fields.
    fn referrers(&mut self, id: &str) -> Result<Vec<String>>;
    fn is_user(&mut self, id: &str) -> Result<bool>;
    fn is_territory(&mut self, name: &str) -> Result<bool>;
    /// The pipeline set before the organisation configuration existed.
    fn base_pipeline(&mut self) -> Result<Pipeline>;
    /// The organisation configuration changes are checked against.
    fn configuration(&mut self) -> Result<Config> {
        let record = match self.documents(&[CONFIG_ID])?.pop().flatten() {
            Some(mut doc) => Some(doc.doc().read()?),
            None => None,
        };
        Ok(Config::new(self.base_pipeline()?, record.as_ref()))
    }
    /// Saves the accepted records, then appends `log` (in order) as pushed
    /// by `user` from `device`.
    fn save(
        &mut self,
        user: &str,
        device: &str,
        accepted: &mut [Accepted],
        log: &[LogRow<'_>],
    ) -> Result<()>;
    /// The Automerge actor `user` edits with from `device` in the office
    /// UI, made on first use and used by nobody else.
    fn web_actor(&mut self, user: &str, device: &str) -> Result<Vec<u8>>;
    /// A stored record's compacted document, as this transaction sees it.
    fn snapshot(&mut self, id: &str) -> Result<Option<Vec<u8>>>;
    /// The record's territory as of log position `seq` (its newest log
    /// entry at or before it); `None` if it had none by then.
    fn territory_at(&mut self, id: &str, seq: u64) -> Result<Option<Option<String>>>;
    /// Puts changes in the review queue (ignoring ones there already).
    fn hold(&mut self, held: &[Held]) -> Result<()>;
    /// The review-queue rows of these hashes, in the order they were held.
    fn reviews(&mut self, hashes: &[[u8; 32]]) -> Result<Vec<Held>>;
    /// Records a decision on a held change.
    fn decide_review(&mut self, hash: &[u8; 32], review: Review, by: &str, at: i64) -> Result<()>;
}

/// A pushed change that passed the checks needing no storage.
struct Pushed {
    record_id: String,
    parsed: ParsedChange,
    hash: [u8; 32],
}

fn rejection(hash: Option<[u8; 32]>, refusal: &Refusal) -> Rejection {
    Rejection {
        hash: hash.map(|h| h.to_vec()).unwrap_or_default(),
        reason: refusal.to_string(),
        code: refusal.code().to_string(),
        field: refusal.field().map(String::from),
    }
}

/// Step 1: size, shape and author.
fn parse(user: &User, change: &RecordBytes) -> std::result::Result<Pushed, Rejection> {
    if change.bytes.len() > MAX_CHANGE_BYTES {
        let refusal = Refusal::TooLarge {
            bytes: change.bytes.len(),
            max: MAX_CHANGE_BYTES,
        };
        return Err(rejection(None, &refusal));
    }
    let parsed = ParsedChange::parse(&change.record_id, &change.bytes)
        .map_err(|e| rejection(None, &Refusal::Invalid(e)))?;
    let hash = parsed.hash();
    if parsed.user() != Some(user.id.as_str()) {
        let refusal = Refusal::WrongAuthor {
            signed_as: parsed.user().unwrap_or_default().to_string(),
            user: user.id.clone(),
        };
        return Err(rejection(Some(hash), &refusal));
    }
    Ok(Pushed {
        record_id: change.record_id.clone(),
        parsed,
        hash,
    })
}

/// Pushes `changes` as `user` from `device` (which knew `known`) into
/// `store`: every change is acknowledged, held for review or refused with
/// a reason.
/// One request's push, as a store's group commit queues it.
#[derive(Debug)]
pub struct PushJob {
    pub user: User,
    pub device: String,
    /// The pushing device's cursor (what it knew: [`Known`]).
    pub known: Cursor,
    pub changes: Vec<RecordBytes>,
}

impl PushJob {
    /// [`push`] of this job's changes.
    pub fn run<S: PushStore>(&self, store: &mut S) -> Result<PushOutcome> {
        push(
            store,
            &self.user,
            &self.device,
            &Known::from_cursor(&self.known),
            &self.changes,
        )
    }
}

pub fn push<S: PushStore>(
    store: &mut S,
    user: &User,
    device: &str,
    known: &Known<'_>,
    changes: &[RecordBytes],
) -> Result<PushOutcome> {
    let mut out = PushOutcome::default();
    let mut seen = HashSet::new();
    let mut pushed = Vec::with_capacity(changes.len());
    // Records with a refused change: the device gets them back to reset.
    let mut refused_records = BTreeSet::new();
    for change in changes {
        match parse(user, change) {
            Ok(p) if seen.insert(p.hash) => pushed.push(p),
            Ok(_) => {} // the same change twice: one answer
            Err(r) => {
                refused_records.insert(change.record_id.clone());
                out.rejected.push(r);
            }
        }
    }
    if pushed.is_empty() {
        return finish(store, user, out, refused_records);
    }
    let hashes: Vec<[u8; 32]> = pushed.iter().map(|p| p.hash).collect();
    let logged = store.logged(&hashes)?;
    pushed.retain(|p| {
        let known = logged.contains(&p.hash);
        if known {
            out.acks.push(p.hash);
        }
        !known
    });
    // Changes in the review queue: say how they stand (an accepted one
    // is being pushed by its review, or is in the log already).
    let remaining: Vec<[u8; 32]> = pushed.iter().map(|p| p.hash).collect();
    let mut reviewed = store.reviews(&remaining)?;
    reviewed.retain(|h| h.review != Review::Accepted);
    if !reviewed.is_empty() {
        pushed.retain(|p| match reviewed.iter().find(|h| h.hash == p.hash) {
            None => true,
            Some(h) => {
                let refusal = match h.review {
                    Review::Discarded => {
                        refused_records.insert(p.record_id.clone());
                        Refusal::Discarded {
                            by: h.decided_by.clone().unwrap_or_default(),
                        }
                    }
                    _ => Refusal::HeldForReview {
                        record: p.record_id.clone(),
                    },
                };
                out.rejected.push(rejection(Some(p.hash), &refusal));
                false
            }
        });
    }
    if pushed.is_empty() {
        return finish(store, user, out, refused_records);
    }
    let actors: Vec<String> = pushed.iter().map(|p| p.parsed.actor_hex()).collect();
    let actor_refs: Vec<&str> = {
        let mut a: Vec<&str> = actors.iter().map(String::as_str).collect();
        a.sort_unstable();
        a.dedup();
        a
    };
    let owners = store.claim_actors(&user.id, device, &actor_refs)?;
    let mut mine = Vec::with_capacity(pushed.len());
    for (p, actor) in pushed.into_iter().zip(actors) {
        match owners.get(&actor) {
            Some(owner) if *owner != user.id => {
                refused_records.insert(p.record_id.clone());
                out.rejected
                    .push(rejection(Some(p.hash), &Refusal::ForeignActor { actor }));
            }
            _ => mine.push(p),
        }
    }
    let groups = group_by_record(mine);
    {
        // Every record of the push, locked in id order before any is read:
        // two relays pushing the same records never deadlock.
        let mut ids: Vec<&str> = groups.iter().map(|g| g[0].record_id.as_str()).collect();
        ids.sort_unstable();
        store.lock(&ids)?;
    }
    let config = store.configuration()?;
    let mut known_here = KnownHere::default();
    let mut groups = groups.into_iter().peekable();
    // Changes that point at a record this push has not stored yet (a lead
    // created, then converted: its last change names the account made
    // after it) are tried again once the rest of the push is in.
    let mut deferred: Vec<Vec<Pushed>> = Vec::new();
    let mut last_pass = false;
    let mut late = Vec::new();
    // A chunk of records at a time: loaded, checked, saved and dropped, so a
    // large push never holds all its documents in memory.
    loop {
        if groups.peek().is_none() {
            if last_pass || deferred.is_empty() {
                break;
            }
            last_pass = true;
            groups = std::mem::take(&mut deferred).into_iter().peekable();
        }
        let chunk: Vec<Vec<Pushed>> = groups.by_ref().take(CHUNK).collect();
        let ids: Vec<&str> = chunk.iter().map(|g| g[0].record_id.as_str()).collect();
        let loaded: HashMap<String, StoredDoc> = ids
            .iter()
            .zip(store.documents(&ids)?)
            .filter_map(|(id, doc)| doc.map(|d| (id.to_string(), d)))
            .collect();
        let (accepted, refused, unseen) = {
            let directory = PushDirectory::new(store, user, &mut known_here);
            let rules = Rules {
                config: &config,
                author: &user.id,
                directory: &directory,
                standing: user.role.standing(),
            };
            let defer = (!last_pass).then_some(&mut deferred);
            receive_all(&directory, &rules, user, chunk, loaded, defer)?
        };
        for (record, r) in refused {
            refused_records.insert(record);
            out.rejected.push(r);
        }
        hold_or_refuse(
            store,
            user,
            device,
            known,
            unseen,
            &mut out,
            &mut refused_records,
        )?;
        // Office edits (a merge, its undo) and the follow-ups themselves
        // are made knowing of every merge.
        if device != super::merge::MERGE_DEVICE && device != super::office::WEB_DEVICE {
            late.extend(late_for_merges(&accepted, &known_here.merged));
        }
        save(store, user, device, accepted, &mut out)?;
    }
    if !late.is_empty() {
        super::merge::follow_up(store, user, late, &known_here.merged, super::now_ms())?;
    }
    finish(store, user, out, refused_records)
}

/// Step 10's work: the accepted records that changed a merged tombstone,
/// or whose fields name one (`merged`: those the reference checks met).
fn late_for_merges(groups: &[AcceptedGroup], merged: &HashSet<String>) -> Vec<super::merge::Late> {
    use super::merge::Late;
    let mut late = Vec::new();
    for g in groups {
        let after = &g.accepted.record;
        match &g.before_record {
            Some(before) if fieldcrm_core::merge::merged_into(before).is_some() => {
                late.push(Late::Tombstone {
                    before: before.clone(),
                    after: after.clone(),
                });
            }
            _ if !merged.is_empty()
                && after
                    .fields
                    .values()
                    .any(|v| v.as_str().is_some_and(|v| merged.contains(v))) =>
            {
                late.push(Late::Links {
                    record: after.clone(),
                });
            }
            _ => {}
        }
    }
    late
}

/// Records checked and saved per round of a push.
const CHUNK: usize = 256;

/// Changes to records the user can no longer see: held for review if the
/// device still had the record in view as of its cursor (the change was
/// made while its author had access), else refused.
fn hold_or_refuse<S: PushStore>(
    store: &mut S,
    user: &User,
    device: &str,
    known: &Known<'_>,
    unseen: Vec<Vec<Pushed>>,
    out: &mut PushOutcome,
    refused_records: &mut BTreeSet<String>,
) -> Result<()> {
    let now = super::now_ms();
    for group in unseen {
        let id = group[0].record_id.clone();
        let then = store.territory_at(&id, known.seq)?;
        let refusal = match then {
            Some(territory) if known.had(territory.as_deref()) => {
                let held: Vec<Held> = group
                    .iter()
                    .map(|p| Held {
                        hash: p.hash,
                        record_id: id.clone(),
                        territory: store.facts(&id).ok().flatten().and_then(|f| f.territory),
                        user: user.id.clone(),
                        device: device.to_string(),
                        bytes: p.parsed.bytes().to_vec(),
                        held_at: now,
                        review: Review::Held,
                        decided_by: None,
                        decided_at: None,
                    })
                    .collect();
                store.hold(&held)?;
                Refusal::HeldForReview { record: id.clone() }
            }
            _ => {
                refused_records.insert(id.clone());
                Refusal::NotYours { record: id.clone() }
            }
        };
        out.rejected
            .extend(group.iter().map(|p| rejection(Some(p.hash), &refusal)));
    }
    Ok(())
}

/// Adds, for every record a change was refused for, the record as the
/// store now has it — or empty bytes when it has none the user may see.
fn finish<S: PushStore>(
    store: &mut S,
    user: &User,
    mut out: PushOutcome,
    refused_records: BTreeSet<String>,
) -> Result<PushOutcome> {
    for id in refused_records {
        let visible = store
            .facts(&id)?
            .is_some_and(|f| access::sees(user, f.territory.as_deref()));
        let bytes = match visible {
            true => store.snapshot(&id)?.unwrap_or_default(),
            false => Vec::new(),
        };
        out.resets.push(RecordBytes {
            record_id: id,
            bytes,
        });
    }
    Ok(out)
}

/// Groups changes by record, keeping each record's order and the order in
/// which records first appear.
fn group_by_record(pushed: Vec<Pushed>) -> Vec<Vec<Pushed>> {
    let mut at: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<Vec<Pushed>> = Vec::new();
    for p in pushed {
        match at.get(&p.record_id) {
            Some(&i) => groups[i].push(p),
            None => {
                at.insert(p.record_id.clone(), groups.len());
                groups.push(vec![p]);
            }
        }
    }
    groups
}

/// A record's changes that were accepted, with their log bytes.
struct AcceptedGroup {
    accepted: Accepted,
    /// The record as stored before the push (`None`: new).
    before_record: Option<Record>,
    before: Option<Option<String>>,
    changes: Vec<Pushed>,
}

/// Accepted groups, each refusal with its record, and the changes of
/// records the user cannot see (held or refused by the caller).
type Received = (
    Vec<AcceptedGroup>,
    Vec<(String, Rejection)>,
    Vec<Vec<Pushed>>,
);

/// Steps 5 to 8 for every record, in memory. With `defer`, a change
/// refused for a reference (and the record's changes after it) goes there
/// instead, to be tried once more at the end of the push.
fn receive_all<S: PushStore>(
    directory: &PushDirectory<'_, S>,
    rules: &Rules<'_>,
    user: &User,
    groups: Vec<Vec<Pushed>>,
    mut loaded: HashMap<String, StoredDoc>,
    mut defer: Option<&mut Vec<Vec<Pushed>>>,
) -> Result<Received> {
    let mut accepted = Vec::with_capacity(groups.len());
    let mut refused = Vec::new();
    let mut unseen = Vec::new();
    for group in groups {
        let id = group[0].record_id.clone();
        let mut doc = loaded.remove(&id).unwrap_or_else(|| StoredDoc::new(&id));
        let before_record = match doc.is_new() {
            true => None,
            false => Some(doc.doc().read()?),
        };
        let before = before_record
            .as_ref()
            .map(|r| r.text("territory").map(String::from));
        if let Some(b) = &before {
            if !access::sees(user, b.as_deref()) {
                unseen.push(group);
                continue;
            }
        }
        let mut attempt = doc.fork();
        let (kept, record) = match receive(&mut attempt, &group, rules, user)? {
            Ok(record) => (group, Some((attempt, record))),
            Err(_) => {
                // Each change alone, in order, on what the earlier ones left.
                let mut current: Option<(StoredDoc, Record)> = None;
                let mut kept = Vec::new();
                let mut changes = group.into_iter();
                while let Some(p) = changes.next() {
                    let base = match &mut current {
                        Some((d, _)) => d,
                        None => &mut doc,
                    };
                    let mut attempt = base.fork();
                    match receive(&mut attempt, std::slice::from_ref(&p), rules, user)? {
                        Ok(record) => {
                            current = Some((attempt, record));
                            kept.push(p);
                        }
                        Err(refusal) if refusal.code() == "bad_reference" && defer.is_some() => {
                            let later = defer.as_deref_mut().expect("checked");
                            later.push(std::iter::once(p).chain(changes.by_ref()).collect());
                        }
                        Err(refusal) => {
                            refused.push((id.clone(), rejection(Some(p.hash), &refusal)))
                        }
                    }
                }
                (kept, current)
            }
        };
        if let Some((doc, record)) = record {
            directory.accepted(&record);
            accepted.push(AcceptedGroup {
                accepted: Accepted { doc, record },
                before_record,
                before,
                changes: kept,
            });
        }
    }
    Ok((accepted, refused, unseen))
}

/// Steps 6 and 7 for some changes of one record. `Ok(Err)`: refused.
fn receive(
    doc: &mut StoredDoc,
    changes: &[Pushed],
    rules: &Rules<'_>,
    user: &User,
) -> Result<std::result::Result<Record, Refusal>> {
    let parsed = changes.iter().map(|p| p.parsed.clone()).collect();
    let received = match doc.receive(parsed, rules) {
        Ok(received) => received,
        Err(e) => return Refusal::from_core(e).map(Err),
    };
    let before = received
        .before
        .as_ref()
        .map(|r| r.text("territory").map(String::from));
    let after = received.after.text("territory");
    Ok(
        access::check_write(user, doc.id(), before.as_ref().map(Option::as_deref), after)
            .map(|()| received.after),
    )
}

/// Step 9.
fn save<S: PushStore>(
    store: &mut S,
    user: &User,
    device: &str,
    groups: Vec<AcceptedGroup>,
    out: &mut PushOutcome,
) -> Result<()> {
    let mut territories = BTreeSet::new();
    let mut accepted = Vec::with_capacity(groups.len());
    let mut changes = Vec::with_capacity(groups.len());
    for g in groups {
        let after = g.accepted.record.text("territory").map(String::from);
        let moved_from = g.before.flatten().filter(|b| Some(b) != after.as_ref());
        territories.extend(after.clone());
        territories.extend(moved_from.clone());
        changes.push((g.changes, after, moved_from));
        accepted.push(g.accepted);
    }
    let mut log = Vec::new();
    for (group, after, moved_from) in &changes {
        for (j, p) in group.iter().enumerate() {
            log.push(LogRow {
                record_id: p.record_id.as_str(),
                hash: p.hash,
                territory: after.as_deref(),
                // The first entry carries the move, so readers learn of it once.
                moved_from: if j == 0 { moved_from.as_deref() } else { None },
                bytes: p.parsed.bytes(),
            });
        }
    }
    let hashes: Vec<[u8; 32]> = log.iter().map(|r| r.hash).collect();
    // `log` borrows `changes`; `accepted` is saved beside it.
    store.save(&user.id, device, &mut accepted, &log)?;
    out.appended += hashes.len();
    out.acks.extend(hashes);
    out.territories = Some(territories);
    Ok(())
}

/// What a push learned that later records of it may ask again: records it
/// accepted (a contact after its account), users and territories.
#[derive(Default)]
struct KnownHere {
    records: HashMap<String, RecordFacts>,
    names: HashMap<(bool, String), bool>,
    /// Merged tombstones references met (step 10 re-points them, to the
    /// survivor at the end of any chain of merges).
    merged: HashSet<String>,
}

/// What the data model's reference, owner and territory checks ask during
/// a push: records the user can see (those accepted earlier in this push
/// first), users and territories (asked once each per push).
struct PushDirectory<'a, S> {
    store: RefCell<&'a mut S>,
    user: &'a User,
    here: RefCell<&'a mut KnownHere>,
}

impl<'a, S: PushStore> PushDirectory<'a, S> {
    fn new(store: &'a mut S, user: &'a User, here: &'a mut KnownHere) -> Self {
        PushDirectory {
            store: RefCell::new(store),
            user,
            here: RefCell::new(here),
        }
    }

    fn accepted(&self, record: &Record) {
        self.here
            .borrow_mut()
            .records
            .insert(record.id.clone(), RecordFacts::of(record));
    }

    fn name(&self, is_user: bool, name: &str) -> fieldcrm_core::Result<bool> {
        let key = (is_user, name.to_string());
        if let Some(known) = self.here.borrow().names.get(&key) {
            return Ok(*known);
        }
        let mut store = self.store.borrow_mut();
        let found = if is_user {
            store.is_user(name)
        } else {
            store.is_territory(name)
        }
        .map_err(storage)?;
        self.here.borrow_mut().names.insert(key, found);
        Ok(found)
    }
}

/// A storage failure inside a data-model check: it must fail the push, not
/// refuse the change, so it travels as a core storage error, carrying the
/// relay's own error (so a lost database connection still says 503).
pub(super) fn storage(e: RelayError) -> fieldcrm_core::Error {
    match e {
        RelayError::Core(core) => core,
        other => fieldcrm_core::Error::Io(std::io::Error::other(other)),
    }
}

impl<S: PushStore> Directory for PushDirectory<'_, S> {
    fn record(&self, id: &str) -> fieldcrm_core::Result<Option<(Kind, bool)>> {
        let here = self.here.borrow().records.get(id).cloned();
        let facts = match here {
            Some(f) => Some(f),
            None => self.store.borrow_mut().facts(id).map_err(storage)?,
        };
        // A record the user cannot see answers as one that does not exist.
        let Some(facts) = facts.filter(|f| access::sees(self.user, f.territory.as_deref())) else {
            return Ok(None);
        };
        // A merged tombstone stands for its survivor: a link to it is
        // taken, then re-pointed (step 10).
        if facts.deleted && !self.here.borrow().merged.contains(id) {
            let into = self.store.borrow_mut().merged_into(id).map_err(storage)?;
            if into.is_some() {
                self.here.borrow_mut().merged.insert(id.to_string());
            }
        }
        let merged = self.here.borrow().merged.contains(id);
        Ok(Some((facts.kind, facts.deleted && !merged)))
    }

    fn is_user(&self, id: &str) -> fieldcrm_core::Result<bool> {
        self.name(true, id)
    }

    fn is_territory(&self, name: &str) -> fieldcrm_core::Result<bool> {
        self.name(false, name)
    }
}

/// Makes each office edit as `user` (with their web actor for `device`)
/// and pushes it: one outcome per edit, in order.
pub fn edit<S: PushStore>(
    store: &mut S,
    user: &User,
    device: &str,
    edits: Vec<Edit>,
    now: i64,
) -> Result<Vec<EditOutcome>> {
    let author = Author {
        user: user.id.clone(),
        actor: store.web_actor(&user.id, device)?,
    };
    let config = store.configuration()?;
    edits
        .into_iter()
        .map(|edit| edit_one(store, user, device, &author, &config, edit, now))
        .collect()
}

/// The records of edits made together, or the first refusal among them
/// (then the store rolls back the transaction: none of them is kept).
pub(crate) fn all_or_none(
    outcomes: Vec<EditOutcome>,
) -> std::result::Result<Vec<Record>, EditRefusal> {
    outcomes.into_iter().collect()
}

fn edit_one<S: PushStore>(
    store: &mut S,
    user: &User,
    device: &str,
    author: &Author,
    config: &Config,
    edit: Edit,
    now: i64,
) -> Result<EditOutcome> {
    let target = match &edit {
        Edit::Create { .. } => None,
        Edit::CreateWithId { id, .. } => {
            store.lock(&[id.as_str()])?;
            if store.documents(&[id.as_str()])?.pop().flatten().is_some() {
                return Ok(Err(EditRefusal::Refused {
                    field: Some("id".into()),
                    code: "invalid_value".into(),
                    message: format!("a record with id {id:?} exists already"),
                }));
            }
            None
        }
        Edit::Update { id, .. } | Edit::Delete { id } | Edit::Restore { id } => Some(id.clone()),
    };
    let not_found = |id: &str| EditRefusal::NotFound(format!("no record with id {id:?}"));
    if let Some(id) = &target {
        // The draft's actor sequence must follow the stored document.
        store.lock(&[id.as_str()])?;
    }
    let doc = match &target {
        Some(id) => match store.documents(&[id.as_str()])?.pop().flatten() {
            Some(mut doc) => {
                if !access::sees(user, doc.doc().read()?.text("territory")) {
                    return Ok(Err(not_found(id)));
                }
                Some(doc.into_doc())
            }
            None => return Ok(Err(not_found(id))),
        },
        None => None,
    };
    let drafted = {
        let mut here = KnownHere::default();
        let directory = PushDirectory::new(store, user, &mut here);
        let lookup = |id: &str| directory.record(id);
        draft_on(doc, author, now, config, &lookup, edit)
    };
    let draft = match drafted {
        Ok(Some(draft)) => draft,
        Ok(None) => {
            // Nothing to change: the record as it is.
            let id = target.unwrap_or_default();
            return Ok(match store.documents(&[id.as_str()])?.pop().flatten() {
                Some(mut doc) => Ok(doc.doc().read()?),
                None => Err(not_found(&id)),
            });
        }
        Err(e) => return Refusal::from_core(e).map(|r| Err(r.into())),
    };
    let change = RecordBytes {
        record_id: draft.record_id.clone(),
        bytes: draft.change.bytes.clone(),
    };
    let pushed = push(
        store,
        user,
        device,
        &Known::nothing(),
        std::slice::from_ref(&change),
    )?;
    Ok(match pushed.rejected.into_iter().next() {
        Some(r) => Err(EditRefusal::Refused {
            field: r.field,
            code: r.code,
            message: r.reason,
        }),
        None => Ok(draft.record),
    })
}
