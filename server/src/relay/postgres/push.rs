//! A push on PostgreSQL in a fixed number of round trips, whatever its
//! size: the checks that need no document, then one query each for known
//! changes, actor owners and the documents (locked in record-id order);
//! the merge and access checks in memory; then one statement each for the
//! documents, the projection, the actor bindings and the log.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use fieldcrm_core::doc::RecordDoc;
use fieldcrm_core::protocol::RecordBytes;
use fieldcrm_core::{search_columns, Error as CoreError, ParsedChange, Record, Value};
use postgres::Transaction;

use super::{LogNotice, CHANNEL, LOG_LOCK};
use crate::relay::{check_access, parse_pushed, reject, PushOutcome, RelayError, Result, User};

/// A change that passed every check that needs no document.
struct Checked {
    parsed: ParsedChange,
    hash: [u8; 32],
    actor: String,
}

/// What a record's accepted changes leave to write.
struct Written {
    record: Record,
    snapshot: Vec<u8>,
    has_conflicts: bool,
    /// Log rows in push order: (change, territory after, territory before if moved).
    log: Vec<(usize, Option<String>, Option<String>)>,
}

/// Pushes `changes` inside `tx`; each gets an acknowledgement or a reason.
pub(super) fn push_in(
    tx: &mut Transaction<'_>,
    user: &User,
    device: &str,
    changes: &[RecordBytes],
) -> Result<PushOutcome> {
    let mut out = PushOutcome::default();
    let mut checked: Vec<(String, Checked)> = Vec::new();
    for change in changes {
        match parse_pushed(user, change) {
            Ok(parsed) => checked.push((
                change.record_id.clone(),
                Checked {
                    hash: parsed.hash(),
                    actor: parsed.actor_hex(),
                    parsed,
                },
            )),
            Err(rejection) => out.rejected.push(rejection),
        }
    }
    // Already logged: acknowledge, store nothing.
    let hashes: Vec<&[u8]> = checked.iter().map(|(_, c)| &c.hash[..]).collect();
    let logged: HashSet<Vec<u8>> = tx
        .query(
            "SELECT hash FROM relay_log WHERE hash = ANY($1)",
            &[&hashes],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Actors bound to someone else: refuse.
    let actors: Vec<&str> = checked.iter().map(|(_, c)| c.actor.as_str()).collect();
    let owners: HashMap<String, String> = tx
        .query(
            "SELECT actor, user_id FROM relay_actors WHERE actor = ANY($1)",
            &[&actors],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut todo: Vec<(String, Checked)> = Vec::new();
    for (record_id, c) in checked {
        if logged.contains(&c.hash[..]) {
            out.acks.push(c.hash);
        } else if owners.get(&c.actor).is_some_and(|o| *o != user.id) {
            out.rejected.push(reject(
                Some(c.hash),
                format!("actor {} belongs to another user", c.actor),
            ));
        } else if !todo.iter().any(|(_, t)| t.hash == c.hash) {
            todo.push((record_id, c));
        }
    }
    if todo.is_empty() {
        return Ok(out);
    }
    // Lock every document in record-id order: no deadlocks between relays.
    // A placeholder row gives a new record a row to lock, so two relays
    // creating the same record wait for each other instead of overwriting.
    todo.sort_by(|a, b| a.0.cmp(&b.0));
    let ids: Vec<&str> = {
        let mut ids: Vec<&str> = todo.iter().map(|(id, _)| id.as_str()).collect();
        ids.dedup();
        ids
    };
    tx.execute(
        "INSERT INTO relay_documents (id, snapshot) SELECT unnest($1::text[]), '' ON CONFLICT (id) DO NOTHING",
        &[&ids],
    )?;
    let snapshots: HashMap<String, Vec<u8>> = tx
        .query(
            "SELECT id, snapshot FROM relay_documents WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &[&ids],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();

    let mut written: BTreeMap<String, Written> = BTreeMap::new();
    let mut accepted: Vec<&Checked> = Vec::new();
    for run in todo.chunk_by(|a, b| a.0 == b.0) {
        let record_id = &run[0].0;
        let group: Vec<&Checked> = run.iter().map(|(_, c)| c).collect();
        let snapshot = snapshots.get(record_id).map(Vec::as_slice).unwrap_or(&[]);
        let base = accepted.len();
        match merge(user, record_id, snapshot, &group) {
            Ok(w) => {
                accepted.extend(&group);
                written.insert(record_id.clone(), relabel(w, base));
            }
            Err(_) => {
                // Try each change alone, keeping those that apply.
                let mut current = snapshot.to_vec();
                let mut last: Option<Written> = None;
                for c in &group {
                    match merge(user, record_id, &current, &[c]) {
                        Ok(w) => {
                            let at = accepted.len();
                            accepted.push(c);
                            current = w.snapshot.clone();
                            let mut w = relabel(w, at);
                            if let Some(prev) = last.take() {
                                let mut log = prev.log;
                                log.append(&mut w.log);
                                w.log = log;
                            }
                            last = Some(w);
                        }
                        Err(reason) => out.rejected.push(reject(Some(c.hash), reason)),
                    }
                }
                if let Some(w) = last {
                    written.insert(record_id.clone(), w);
                }
            }
        }
    }
    // New records none of whose changes were accepted leave no row behind.
    let abandoned: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| !written.contains_key(*id))
        .collect();
    if !abandoned.is_empty() {
        tx.execute(
            "DELETE FROM relay_documents WHERE id = ANY($1) AND snapshot = ''",
            &[&abandoned],
        )?;
    }
    if written.is_empty() {
        return Ok(out);
    }
    write_documents(tx, &written)?;
    bind_actors(tx, user, &accepted)?;
    let (appended, territories) = append_log(tx, user, device, &written, &accepted)?;
    out.appended += appended;
    out.territories = Some(territories);
    out.acks.extend(accepted.iter().map(|c| c.hash));
    Ok(out)
}

/// Renumbers a merge's log rows (0-based in its group) to positions in `accepted`.
fn relabel(mut w: Written, base: usize) -> Written {
    for row in &mut w.log {
        row.0 += base;
    }
    w
}

/// Applies `group` to the document stored as `snapshot`, strictly (every
/// change must apply now), and checks the user may hold the record before
/// and after. Nothing is written.
fn merge(
    user: &User,
    record_id: &str,
    snapshot: &[u8],
    group: &[&Checked],
) -> std::result::Result<Written, String> {
    let run = || -> fieldcrm_core::Result<Written> {
        let (mut doc, before) = if snapshot.is_empty() {
            (RecordDoc::empty(record_id), None)
        } else {
            let mut doc = RecordDoc::load(record_id, Some(snapshot), [])?;
            let before = doc.read()?;
            (doc, Some(before))
        };
        let fresh: Vec<ParsedChange> = group
            .iter()
            .filter(|c| !doc.has_change(&c.hash))
            .map(|c| c.parsed.clone())
            .collect();
        if !fresh.is_empty() {
            doc.apply_remote(fresh)?;
        }
        let waiting = group.iter().filter(|c| !doc.has_change(&c.hash)).count();
        if waiting > 0 {
            return Err(CoreError::MissingDependencies {
                doc: record_id.to_string(),
                count: waiting,
            });
        }
        let record = doc.read()?;
        let (was, now) = check_access(user, before.as_ref(), &record)?;
        // The first entry carries the move, so readers learn of it once.
        let mut moved_from = was.filter(|b| Some(b) != now.as_ref());
        let log = (0..group.len())
            .map(|i| (i, now.clone(), moved_from.take()))
            .collect();
        // A record made by one change is stored as that change (the common
        // upload): the smallest document there is, and no save() to run.
        let snapshot = match group {
            [only] if before.is_none() => only.parsed.bytes().to_vec(),
            _ => doc.save(),
        };
        Ok(Written {
            has_conflicts: doc.has_conflicts()?,
            snapshot,
            record,
            log,
        })
    };
    run().map_err(|e| e.to_string())
}

/// One statement for the documents, one for the projection rows.
fn write_documents(tx: &mut Transaction<'_>, written: &BTreeMap<String, Written>) -> Result<()> {
    let ids: Vec<&str> = written.keys().map(String::as_str).collect();
    let snapshots: Vec<&[u8]> = written.values().map(|w| w.snapshot.as_slice()).collect();
    tx.execute(
        "UPDATE relay_documents d SET snapshot = u.snapshot
         FROM unnest($1::text[], $2::bytea[]) AS u(id, snapshot) WHERE d.id = u.id",
        &[&ids, &snapshots],
    )?;
    let rows = ProjectionRows::of(written.values())?;
    tx.execute(
        "INSERT INTO relay_records (id, kind, name, owner, territory, account_id, related_to, stage,
             amount, currency, close_date, due_at, done, deleted, has_conflicts, created_at, updated_at,
             record, search)
         SELECT id, kind, name, owner, territory, account_id, related_to, stage, amount, currency,
             close_date, due_at, done, deleted, has_conflicts, created_at, updated_at, record,
             setweight(to_tsvector('simple', s_name), 'A') || setweight(to_tsvector('simple', s_email), 'B')
             || setweight(to_tsvector('simple', s_phone), 'B') || setweight(to_tsvector('simple', s_notes), 'D')
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
             $8::text[], $9::bigint[], $10::text[], $11::text[], $12::bigint[], $13::boolean[],
             $14::boolean[], $15::boolean[], $16::bigint[], $17::bigint[], $18::text[], $19::text[],
             $20::text[], $21::text[], $22::text[])
             AS u(id, kind, name, owner, territory, account_id, related_to, stage, amount, currency,
                  close_date, due_at, done, deleted, has_conflicts, created_at, updated_at, record,
                  s_name, s_email, s_phone, s_notes)
         ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, name = excluded.name,
             owner = excluded.owner, territory = excluded.territory, account_id = excluded.account_id,
             related_to = excluded.related_to, stage = excluded.stage, amount = excluded.amount,
             currency = excluded.currency, close_date = excluded.close_date, due_at = excluded.due_at,
             done = excluded.done, deleted = excluded.deleted, has_conflicts = excluded.has_conflicts,
             created_at = excluded.created_at, updated_at = excluded.updated_at,
             record = excluded.record, search = excluded.search",
        &[
            &rows.id,
            &rows.kind,
            &rows.name,
            &rows.owner,
            &rows.territory,
            &rows.account_id,
            &rows.related_to,
            &rows.stage,
            &rows.amount,
            &rows.currency,
            &rows.close_date,
            &rows.due_at,
            &rows.done,
            &rows.deleted,
            &rows.has_conflicts,
            &rows.created_at,
            &rows.updated_at,
            &rows.record,
            &rows.search[0],
            &rows.search[1],
            &rows.search[2],
            &rows.search[3],
        ],
    )?;
    Ok(())
}

/// Projection rows as columns, for one `unnest` insert.
#[derive(Default)]
struct ProjectionRows {
    id: Vec<String>,
    kind: Vec<&'static str>,
    name: Vec<String>,
    owner: Vec<Option<String>>,
    territory: Vec<Option<String>>,
    account_id: Vec<Option<String>>,
    related_to: Vec<Option<String>>,
    stage: Vec<Option<String>>,
    amount: Vec<Option<i64>>,
    currency: Vec<Option<String>>,
    close_date: Vec<Option<String>>,
    due_at: Vec<Option<i64>>,
    done: Vec<Option<bool>>,
    deleted: Vec<bool>,
    has_conflicts: Vec<bool>,
    created_at: Vec<i64>,
    updated_at: Vec<i64>,
    record: Vec<String>,
    search: [Vec<String>; 4],
}

impl ProjectionRows {
    fn of<'a>(written: impl Iterator<Item = &'a Written>) -> Result<Self> {
        let mut rows = ProjectionRows::default();
        for w in written {
            let r = &w.record;
            let text = |p: &str| r.text(p).map(String::from);
            let int = |p: &str| r.get(p).and_then(Value::as_int);
            rows.id.push(r.id.clone());
            rows.kind.push(r.kind.as_str());
            rows.name.push(r.display_name());
            rows.owner.push(text("owner"));
            rows.territory.push(text("territory"));
            rows.account_id.push(text("account_id"));
            rows.related_to.push(text("related_to"));
            rows.stage.push(text("stage"));
            rows.amount.push(int("amount"));
            rows.currency.push(text("currency"));
            rows.close_date.push(text("close_date"));
            rows.due_at.push(int("due_at"));
            rows.done.push(match r.get("done") {
                Some(Value::Bool(b)) => Some(*b),
                _ => None,
            });
            rows.deleted.push(r.deleted);
            rows.has_conflicts.push(w.has_conflicts);
            rows.created_at.push(r.created_at);
            rows.updated_at.push(r.updated_at);
            rows.record.push(serde_json::to_string(r).map_err(|e| {
                RelayError::Invalid(format!("record {} cannot be stored: {e}", r.id))
            })?);
            for (column, text) in rows.search.iter_mut().zip(search_columns(r)) {
                column.push(text);
            }
        }
        Ok(rows)
    }
}

/// Binds new actors to `user`; refuses the push if another user's push
/// bound one of them a moment ago (the retry then gets a clear rejection).
fn bind_actors(tx: &mut Transaction<'_>, user: &User, accepted: &[&Checked]) -> Result<()> {
    let mut actors: Vec<&str> = accepted.iter().map(|c| c.actor.as_str()).collect();
    actors.sort_unstable();
    actors.dedup();
    tx.execute(
        "INSERT INTO relay_actors (actor, user_id) SELECT unnest($1::text[]), $2
         ON CONFLICT (actor) DO NOTHING",
        &[&actors, &user.id],
    )?;
    let taken = tx.query(
        "SELECT actor FROM relay_actors WHERE actor = ANY($1) AND user_id <> $2",
        &[&actors, &user.id],
    )?;
    if let Some(row) = taken.first() {
        let actor: String = row.get(0);
        return Err(RelayError::Invalid(format!(
            "actor {actor} belongs to another user"
        )));
    }
    Ok(())
}

/// Appends the accepted changes to the log under the log lock, in push
/// order, and tells every relay. Returns how many rows were new and the
/// territories they touched.
fn append_log(
    tx: &mut Transaction<'_>,
    user: &User,
    device: &str,
    written: &BTreeMap<String, Written>,
    accepted: &[&Checked],
) -> Result<(usize, BTreeSet<String>)> {
    let mut rows: Vec<(usize, &str, &Option<String>, &Option<String>)> = written
        .iter()
        .flat_map(|(id, w)| w.log.iter().map(move |(i, t, p)| (*i, id.as_str(), t, p)))
        .collect();
    rows.sort_by_key(|r| r.0);
    let record_ids: Vec<&str> = rows.iter().map(|r| r.1).collect();
    let hashes: Vec<&[u8]> = rows.iter().map(|r| &accepted[r.0].hash[..]).collect();
    let territories: Vec<&Option<String>> = rows.iter().map(|r| r.2).collect();
    let moved: Vec<&Option<String>> = rows.iter().map(|r| r.3).collect();
    let bytes: Vec<&[u8]> = rows.iter().map(|r| accepted[r.0].parsed.bytes()).collect();
    // From here to commit no other push can take log numbers (module docs).
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOG_LOCK])?;
    let appended = tx.execute(
        "INSERT INTO relay_log (seq, record_id, hash, territory, prev_territory, device, user_id, bytes)
         SELECT nextval('relay_log_seq'), r, h, t, p, $6, $7, b
         FROM unnest($1::text[], $2::bytea[], $3::text[], $4::text[], $5::bytea[]) WITH ORDINALITY
             AS u(r, h, t, p, b, n)
         ORDER BY n
         ON CONFLICT (hash) DO NOTHING",
        &[&record_ids, &hashes, &territories, &moved, &bytes, &device, &user.id],
    )?;
    let touched: BTreeSet<String> = rows
        .iter()
        .flat_map(|r| [r.2, r.3])
        .flatten()
        .cloned()
        .collect();
    let told: Option<Vec<&String>> = LogNotice::fitting(&touched).map(|t| t.iter().collect());
    tx.execute(
        "SELECT pg_notify($1, json_build_object(
             'head', (SELECT max(seq) FROM relay_log), 'territories', $2::text[])::text)",
        &[&CHANNEL, &told],
    )?;
    Ok((appended as usize, touched))
}
