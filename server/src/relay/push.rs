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
//!    so every change gets its own answer;
//! 9. accepted records are saved and their changes appended to the log,
//!    the first of a record's entries carrying a move.
//!
//! Office edits ([`edit`]) are drafted as the office user and pushed
//! through the same steps.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};

use fieldcrm_core::protocol::{RecordBytes, Rejection};
use fieldcrm_core::{
    draft_on, Author, Directory, Edit, Kind, ParsedChange, Pipeline, Record, Rules, StoredDoc,
};

use super::access;
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
    /// Binds every actor of `actors` that nobody has yet to `user`, and
    /// returns the user each actor is bound to.
    fn claim_actors(&mut self, user: &str, actors: &[&str]) -> Result<HashMap<String, String>>;
    /// The documents of `ids` (sorted, distinct), held for writing until
    /// the transaction ends; `None` for records the store does not have.
    fn documents(&mut self, ids: &[&str]) -> Result<Vec<Option<StoredDoc>>>;
    /// A stored record's kind, tombstone and territory.
    fn facts(&mut self, id: &str) -> Result<Option<RecordFacts>>;
    fn is_user(&mut self, id: &str) -> Result<bool>;
    fn is_territory(&mut self, name: &str) -> Result<bool>;
    /// The deal pipeline stages are checked against.
    fn pipeline(&mut self) -> Result<Pipeline>;
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

/// Pushes `changes` as `user` from `device` into `store`: every change is
/// acknowledged or refused with a reason.
pub fn push<S: PushStore>(
    store: &mut S,
    user: &User,
    device: &str,
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
    let owners = store.claim_actors(&user.id, &actor_refs)?;
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
    let mut ids: Vec<&str> = groups.iter().map(|g| g[0].record_id.as_str()).collect();
    ids.sort_unstable();
    let loaded: HashMap<String, StoredDoc> = ids
        .iter()
        .zip(store.documents(&ids)?)
        .filter_map(|(id, doc)| doc.map(|d| (id.to_string(), d)))
        .collect();
    let pipeline = store.pipeline()?;
    let (accepted, refused) = {
        let directory = PushDirectory::new(store, user);
        let rules = Rules {
            pipeline: &pipeline,
            author: &user.id,
            directory: &directory,
        };
        receive_all(&directory, &rules, user, groups, loaded)?
    };
    for (record, r) in refused {
        refused_records.insert(record);
        out.rejected.push(r);
    }
    save(store, user, device, accepted, &mut out)?;
    finish(store, user, out, refused_records)
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
    before: Option<Option<String>>,
    changes: Vec<Pushed>,
}

/// Accepted groups, and each refusal with its record.
type Received = (Vec<AcceptedGroup>, Vec<(String, Rejection)>);

/// Steps 5 to 8 for every record, in memory.
fn receive_all<S: PushStore>(
    directory: &PushDirectory<'_, S>,
    rules: &Rules<'_>,
    user: &User,
    groups: Vec<Vec<Pushed>>,
    mut loaded: HashMap<String, StoredDoc>,
) -> Result<Received> {
    let mut accepted = Vec::with_capacity(groups.len());
    let mut refused = Vec::new();
    for group in groups {
        let id = group[0].record_id.clone();
        let mut doc = loaded.remove(&id).unwrap_or_else(|| StoredDoc::new(&id));
        let before = if doc.is_new() {
            None
        } else {
            Some(doc.doc().read()?.text("territory").map(String::from))
        };
        if let Some(Err(refusal)) = before
            .as_ref()
            .map(|b| access::check_write(user, &id, Some(b.as_deref()), b.as_deref()))
        {
            refused.extend(
                group
                    .iter()
                    .map(|p| (id.clone(), rejection(Some(p.hash), &refusal))),
            );
            continue;
        }
        let mut attempt = doc.fork();
        let (kept, record) = match receive(&mut attempt, &group, rules, user)? {
            Ok(record) => (group, Some((attempt, record))),
            Err(_) => {
                // Each change alone, in order, on what the earlier ones left.
                let mut current: Option<(StoredDoc, Record)> = None;
                let mut kept = Vec::new();
                for p in group {
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
                before,
                changes: kept,
            });
        }
    }
    Ok((accepted, refused))
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

/// What the data model's reference, owner and territory checks ask during
/// a push: records the user can see (those accepted earlier in this push
/// first), users and territories (asked once each per push).
struct PushDirectory<'a, S> {
    store: RefCell<&'a mut S>,
    user: &'a User,
    this_push: RefCell<HashMap<String, RecordFacts>>,
    names: RefCell<HashMap<(bool, String), bool>>,
}

impl<'a, S: PushStore> PushDirectory<'a, S> {
    fn new(store: &'a mut S, user: &'a User) -> Self {
        PushDirectory {
            store: RefCell::new(store),
            user,
            this_push: RefCell::default(),
            names: RefCell::default(),
        }
    }

    fn accepted(&self, record: &Record) {
        self.this_push
            .borrow_mut()
            .insert(record.id.clone(), RecordFacts::of(record));
    }

    fn name(&self, is_user: bool, name: &str) -> fieldcrm_core::Result<bool> {
        let key = (is_user, name.to_string());
        if let Some(known) = self.names.borrow().get(&key) {
            return Ok(*known);
        }
        let mut store = self.store.borrow_mut();
        let found = if is_user {
            store.is_user(name)
        } else {
            store.is_territory(name)
        }
        .map_err(storage)?;
        self.names.borrow_mut().insert(key, found);
        Ok(found)
    }
}

/// A storage failure inside a data-model check: it must fail the push, not
/// refuse the change, so it travels as a core storage error.
fn storage(e: RelayError) -> fieldcrm_core::Error {
    match e {
        RelayError::Core(core) => core,
        other => fieldcrm_core::Error::Io(std::io::Error::other(other.to_string())),
    }
}

impl<S: PushStore> Directory for PushDirectory<'_, S> {
    fn record(&self, id: &str) -> fieldcrm_core::Result<Option<(Kind, bool)>> {
        let here = self.this_push.borrow().get(id).cloned();
        let facts = match here {
            Some(f) => Some(f),
            None => self.store.borrow_mut().facts(id).map_err(storage)?,
        };
        // A record the user cannot see answers as one that does not exist.
        Ok(facts
            .filter(|f| access::sees(self.user, f.territory.as_deref()))
            .map(|f| (f.kind, f.deleted)))
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
    let pipeline = store.pipeline()?;
    edits
        .into_iter()
        .map(|edit| edit_one(store, user, device, &author, &pipeline, edit, now))
        .collect()
}

fn edit_one<S: PushStore>(
    store: &mut S,
    user: &User,
    device: &str,
    author: &Author,
    pipeline: &Pipeline,
    edit: Edit,
    now: i64,
) -> Result<EditOutcome> {
    let target = match &edit {
        Edit::Create { .. } => None,
        Edit::Update { id, .. } | Edit::Delete { id } | Edit::Restore { id } => Some(id.clone()),
    };
    let not_found = |id: &str| EditRefusal::NotFound(format!("no record with id {id:?}"));
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
        let directory = PushDirectory::new(store, user);
        let lookup = |id: &str| directory.record(id);
        draft_on(doc, author, now, pipeline, &lookup, edit)
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
    let pushed = push(store, user, device, std::slice::from_ref(&change))?;
    Ok(match pushed.rejected.into_iter().next() {
        Some(r) => Err(EditRefusal::Refused {
            field: r.field,
            code: r.code,
            message: r.reason,
        }),
        None => Ok(draft.record),
    })
}
