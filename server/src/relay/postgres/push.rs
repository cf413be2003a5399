//! The PostgreSQL store's answers to the push algorithm's storage
//! questions, in a few statements per chunk of records whatever the push's
//! size: one query each for known changes and actor owners, one locking
//! every document of the push in record-id order (so two relays never
//! deadlock); then per chunk one query for the documents and one statement
//! each for the documents, the projection rows and, last, the log.

use std::collections::{HashMap, HashSet};

use fieldcrm_core::{search_columns, Kind, Pipeline, Record, StoredDoc, Value};
use postgres::Transaction;

use super::statements::{Cached, Statements};
use super::{LogNotice, CHANNEL, LOG_LOCK};
use crate::relay::push::{Accepted, LogRow, PushStore, RecordFacts};
use crate::relay::review::{Held, Review, HELD_COLUMNS};
use crate::relay::{RelayError, Result};

/// A push, a group of pushes or an office edit inside one PostgreSQL
/// transaction.
pub(super) struct PgPush<'a, 'b> {
    pub tx: Cached<'a, 'b>,
    /// Rows made so that a new record has a row to lock; those still empty
    /// at the end are removed by [`PgPush::finish`].
    placeholders: Vec<String>,
    /// Log rows of what was saved, appended by [`PgPush::finish`]: the log
    /// lock is then held only from the append to the commit, not while a
    /// group's pushes are checked.
    log: Vec<OwnedLogRow>,
}

/// A [`LogRow`] kept until the transaction's end, with its pusher.
struct OwnedLogRow {
    user: String,
    device: String,
    record_id: String,
    hash: [u8; 32],
    territory: Option<String>,
    moved_from: Option<String>,
    bytes: Vec<u8>,
}

impl<'a, 'b> PgPush<'a, 'b> {
    pub fn new(tx: &'a mut Transaction<'b>, statements: &'a mut Statements) -> Self {
        PgPush {
            tx: Cached::new(tx, statements),
            placeholders: Vec::new(),
            log: Vec::new(),
        }
    }

    /// Appends the saved changes to the log and removes the placeholder
    /// rows of records nothing was stored for. Call last before commit.
    pub fn finish(mut self) -> Result<()> {
        if !self.placeholders.is_empty() {
            self.tx.execute(
                "DELETE FROM relay_documents WHERE id = ANY($1) AND snapshot = ''",
                &[&self.placeholders],
            )?;
        }
        append_log(&mut self.tx, &self.log)
    }
}

impl PushStore for PgPush<'_, '_> {
    fn logged(&mut self, hashes: &[[u8; 32]]) -> Result<HashSet<[u8; 32]>> {
        let hashes: Vec<&[u8]> = hashes.iter().map(|h| &h[..]).collect();
        let rows = self.tx.query(
            "SELECT hash FROM relay_log WHERE hash = ANY($1)",
            &[&hashes],
        )?;
        Ok(rows
            .iter()
            .filter_map(|r| r.get::<_, Vec<u8>>(0).try_into().ok())
            .collect())
    }

    fn claim_actors(
        &mut self,
        user: &str,
        device: &str,
        actors: &[&str],
    ) -> Result<HashMap<String, String>> {
        // A relay racing to bind the same actor waits for this insert's
        // row lock, then finds this binding: both answer alike.
        self.tx.execute(
            "INSERT INTO relay_actors (actor, user_id, device) SELECT unnest($1::text[]), $2, $3
             ON CONFLICT (actor) DO UPDATE SET device = excluded.device
             WHERE relay_actors.device IS NULL AND relay_actors.user_id = excluded.user_id",
            &[&actors, &user, &device],
        )?;
        let rows = self.tx.query(
            "SELECT actor, user_id FROM relay_actors WHERE actor = ANY($1)",
            &[&actors],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn lock(&mut self, ids: &[&str]) -> Result<()> {
        // A placeholder row gives a new record a row to lock, so two relays
        // creating the same record wait for each other instead of overwriting.
        let made = self.tx.query(
            "INSERT INTO relay_documents (id, snapshot) SELECT unnest($1::text[]), ''
             ON CONFLICT (id) DO NOTHING RETURNING id",
            &[&ids],
        )?;
        self.placeholders
            .extend(made.iter().map(|r| r.get::<_, String>(0)));
        self.tx.query(
            "SELECT id FROM relay_documents WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &[&ids],
        )?;
        Ok(())
    }

    fn documents(&mut self, ids: &[&str]) -> Result<Vec<Option<StoredDoc>>> {
        let rows = self.tx.query(
            "SELECT id, snapshot FROM relay_documents WHERE id = ANY($1)",
            &[&ids],
        )?;
        let mut found: HashMap<String, Vec<u8>> =
            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        ids.iter()
            .map(|id| match found.remove(*id) {
                Some(bytes) if !bytes.is_empty() => {
                    Ok(Some(StoredDoc::from_compacted(id, &bytes)?))
                }
                _ => Ok(None),
            })
            .collect()
    }

    fn referrers(&mut self, id: &str) -> Result<Vec<String>> {
        // A scan, for merges, which are rare.
        let quoted = serde_json::to_string(id).expect("a string serialises");
        let rows = self.tx.query(
            "SELECT id FROM relay_records WHERE strpos(record, $1) > 0 ORDER BY id",
            &[&quoted],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn facts(&mut self, id: &str) -> Result<Option<RecordFacts>> {
        let row = self.tx.query_opt(
            "SELECT kind, deleted, territory FROM relay_records WHERE id = $1",
            &[&id],
        )?;
        row.map(|r| {
            Ok(RecordFacts {
                kind: r.get::<_, String>(0).parse::<Kind>()?,
                deleted: r.get(1),
                territory: r.get(2),
            })
        })
        .transpose()
    }

    fn is_user(&mut self, id: &str) -> Result<bool> {
        Ok(self
            .tx
            .query_opt("SELECT 1 FROM relay_users WHERE id = $1", &[&id])?
            .is_some())
    }

    fn is_territory(&mut self, name: &str) -> Result<bool> {
        Ok(self
            .tx
            .query_opt("SELECT 1 FROM relay_territories WHERE name = $1", &[&name])?
            .is_some())
    }

    fn base_pipeline(&mut self) -> Result<Pipeline> {
        super::pipeline_from(self.tx.query_opt(super::PIPELINE, &[])?)
    }

    fn save(
        &mut self,
        user: &str,
        device: &str,
        accepted: &mut [Accepted],
        log: &[LogRow<'_>],
    ) -> Result<()> {
        write_documents(&mut self.tx, accepted)?;
        self.log.extend(log.iter().map(|r| OwnedLogRow {
            user: user.to_string(),
            device: device.to_string(),
            record_id: r.record_id.to_string(),
            hash: r.hash,
            territory: r.territory.map(String::from),
            moved_from: r.moved_from.map(String::from),
            bytes: r.bytes.to_vec(),
        }));
        Ok(())
    }

    fn snapshot(&mut self, id: &str) -> Result<Option<Vec<u8>>> {
        let row = self.tx.query_opt(
            "SELECT snapshot FROM relay_documents WHERE id = $1 AND snapshot <> ''",
            &[&id],
        )?;
        Ok(row.map(|r| r.get(0)))
    }

    fn territory_at(&mut self, id: &str, seq: u64) -> Result<Option<Option<String>>> {
        let row = self.tx.query_opt(
            "SELECT territory FROM relay_log WHERE record_id = $1 AND seq <= $2
             ORDER BY seq DESC LIMIT 1",
            &[&id, &(seq as i64)],
        )?;
        Ok(row.map(|r| r.get(0)))
    }

    fn hold(&mut self, held: &[Held]) -> Result<()> {
        for h in held {
            self.tx.execute(
                "INSERT INTO relay_review
                     (hash, record_id, territory, user_id, device, bytes, held_at, status)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'held') ON CONFLICT (hash) DO NOTHING",
                &[
                    &&h.hash[..],
                    &h.record_id,
                    &h.territory,
                    &h.user,
                    &h.device,
                    &h.bytes,
                    &h.held_at,
                ],
            )?;
        }
        Ok(())
    }

    fn reviews(&mut self, hashes: &[[u8; 32]]) -> Result<Vec<Held>> {
        let hashes: Vec<&[u8]> = hashes.iter().map(|h| &h[..]).collect();
        let rows = self.tx.query(
            &format!("SELECT {HELD_COLUMNS} FROM relay_review WHERE hash = ANY($1) ORDER BY seq"),
            &[&hashes],
        )?;
        rows.iter().map(held_from_row).collect()
    }

    fn decide_review(&mut self, hash: &[u8; 32], review: Review, by: &str, at: i64) -> Result<()> {
        self.tx.execute(
            "UPDATE relay_review SET status = $2, decided_by = nullif($3, ''), decided_at = nullif($4::bigint, 0)
             WHERE hash = $1",
            &[&&hash[..], &review.as_str(), &by, &at],
        )?;
        Ok(())
    }

    fn web_actor(&mut self, user: &str, device: &str) -> Result<Vec<u8>> {
        let actor = rand::random::<[u8; 16]>().to_vec();
        self.tx.execute(
            "INSERT INTO relay_web_actors (user_id, device, actor) VALUES ($1, $2, $3)
             ON CONFLICT (user_id, device) DO NOTHING",
            &[&user, &device, &actor],
        )?;
        Ok(self
            .tx
            .query_one(
                "SELECT actor FROM relay_web_actors WHERE user_id = $1 AND device = $2",
                &[&user, &device],
            )?
            .get(0))
    }
}

pub(super) fn held_from_row(r: &postgres::Row) -> Result<Held> {
    let hash: Vec<u8> = r.get(0);
    Ok(Held {
        hash: hash
            .try_into()
            .map_err(|_| RelayError::Storage("a held change's hash is not 32 bytes".into()))?,
        record_id: r.get(1),
        territory: r.get(2),
        user: r.get(3),
        device: r.get(4),
        bytes: r.get(5),
        held_at: r.get(6),
        review: Review::parse(&r.get::<_, String>(7)),
        decided_by: r.get(8),
        decided_at: r.get(9),
    })
}

/// One statement for the documents, one for the projection rows.
fn write_documents(tx: &mut Cached<'_, '_>, accepted: &mut [Accepted]) -> Result<()> {
    let ids: Vec<String> = accepted.iter().map(|a| a.record.id.clone()).collect();
    let snapshots: Vec<Vec<u8>> = accepted.iter_mut().map(|a| a.doc.compacted()).collect();
    tx.execute(
        "UPDATE relay_documents d SET snapshot = u.snapshot
         FROM unnest($1::text[], $2::bytea[]) AS u(id, snapshot) WHERE d.id = u.id",
        &[&ids, &snapshots],
    )?;
    let rows = ProjectionRows::of(accepted)?;
    tx.execute(
        "INSERT INTO relay_records (id, kind, name, owner, territory, account_id, related_to, stage,
             amount, currency, close_date, due_at, done, deleted, has_conflicts, created_at, updated_at,
             record, stage_history, search)
         SELECT id, kind, name, owner, territory, account_id, related_to, stage, amount, currency,
             close_date, due_at, done, deleted, has_conflicts, created_at, updated_at, record,
             stage_history, setweight(to_tsvector('simple', s_name), 'A') || setweight(to_tsvector('simple', s_email), 'B')
             || setweight(to_tsvector('simple', s_phone), 'B') || setweight(to_tsvector('simple', s_notes), 'D')
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
             $8::text[], $9::bigint[], $10::text[], $11::text[], $12::bigint[], $13::boolean[],
             $14::boolean[], $15::boolean[], $16::bigint[], $17::bigint[], $18::text[], $19::text[],
             $20::text[], $21::text[], $22::text[], $23::text[])
             AS u(id, kind, name, owner, territory, account_id, related_to, stage, amount, currency,
                  close_date, due_at, done, deleted, has_conflicts, created_at, updated_at, record,
                  s_name, s_email, s_phone, s_notes, stage_history)
         ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, name = excluded.name,
             owner = excluded.owner, territory = excluded.territory, account_id = excluded.account_id,
             related_to = excluded.related_to, stage = excluded.stage, amount = excluded.amount,
             currency = excluded.currency, close_date = excluded.close_date, due_at = excluded.due_at,
             done = excluded.done, deleted = excluded.deleted, has_conflicts = excluded.has_conflicts,
             created_at = excluded.created_at, updated_at = excluded.updated_at,
             record = excluded.record, stage_history = excluded.stage_history,
             search = excluded.search",
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
            &rows.stage_history,
        ],
    )?;
    write_blob_refs(tx, accepted)
}

/// Which blobs the records name (`relay_blob_refs`), replaced whole for
/// each record written: a record that lost its attachments loses its rows.
fn write_blob_refs(tx: &mut Cached<'_, '_>, accepted: &[Accepted]) -> Result<()> {
    let ids: Vec<&str> = accepted.iter().map(|a| a.record.id.as_str()).collect();
    tx.execute(
        "DELETE FROM relay_blob_refs WHERE record_id = ANY($1)",
        &[&ids],
    )?;
    let (mut shas, mut records, mut types, mut sizes) = (vec![], vec![], vec![], vec![]);
    for a in accepted {
        for (_, meta) in fieldcrm_core::attachments_of(&a.record) {
            shas.push(meta.sha256);
            records.push(a.record.id.as_str());
            types.push(meta.media_type);
            sizes.push(meta.size as i64);
        }
    }
    if !shas.is_empty() {
        tx.execute(
            "INSERT INTO relay_blob_refs (sha256, record_id, media_type, size)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
             ON CONFLICT DO NOTHING",
            &[&shas, &records, &types, &sizes],
        )?;
    }
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
    stage_history: Vec<Option<String>>,
}

impl ProjectionRows {
    fn of(accepted: &mut [Accepted]) -> Result<Self> {
        let mut rows = ProjectionRows::default();
        for a in accepted {
            let has_conflicts = a.doc.doc().has_conflicts()?;
            let r: &Record = &a.record;
            let text = |p: &str| r.text(p).map(String::from);
            let int = |p: &str| r.get(p).and_then(Value::as_int);
            rows.id.push(r.id.clone());
            rows.kind.push(r.kind.as_str());
            rows.name.push(r.display_name());
            rows.owner.push(text("owner"));
            rows.territory.push(text("territory"));
            rows.account_id.push(text("account_id"));
            rows.related_to.push(text("related_to"));
            rows.stage.push(r.state().map(String::from));
            rows.amount.push(int("amount"));
            rows.currency.push(text("currency"));
            rows.close_date.push(text("close_date"));
            rows.due_at.push(r.due());
            rows.done.push(r.is_done());
            rows.deleted.push(r.deleted);
            rows.has_conflicts.push(has_conflicts);
            rows.created_at.push(r.created_at);
            rows.updated_at.push(r.updated_at);
            rows.record.push(serde_json::to_string(r).map_err(|e| {
                RelayError::Invalid(format!("record {} cannot be stored: {e}", r.id))
            })?);
            for (column, text) in rows.search.iter_mut().zip(search_columns(r)) {
                column.push(text);
            }
            rows.stage_history
                .push(fieldcrm_core::stage_history(a.doc.doc(), r.kind)?);
        }
        Ok(rows)
    }
}

/// Appends the rows to the log under the log lock, in order, and tells
/// every relay.
fn append_log(tx: &mut Cached<'_, '_>, rows: &[OwnedLogRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&OwnedLogRow) -> &str| -> Vec<&str> { rows.iter().map(f).collect() };
    let (users, devices, record_ids) = (
        column(|r| &r.user),
        column(|r| &r.device),
        column(|r| &r.record_id),
    );
    let hashes: Vec<&[u8]> = rows.iter().map(|r| &r.hash[..]).collect();
    let territories: Vec<Option<&str>> = rows.iter().map(|r| r.territory.as_deref()).collect();
    let moved: Vec<Option<&str>> = rows.iter().map(|r| r.moved_from.as_deref()).collect();
    let bytes: Vec<&[u8]> = rows.iter().map(|r| &r.bytes[..]).collect();
    // From here to commit no other push can take log numbers (module docs).
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOG_LOCK])?;
    tx.execute(
        "INSERT INTO relay_log (seq, record_id, hash, territory, prev_territory, device, user_id, bytes,
             received_at)
         SELECT nextval('relay_log_seq'), r, h, t, p, d, u, b, $8
         FROM unnest($1::text[], $2::bytea[], $3::text[], $4::text[], $5::bytea[], $6::text[],
                     $7::text[]) WITH ORDINALITY AS x(r, h, t, p, b, d, u, n)
         ORDER BY n
         ON CONFLICT (hash) DO NOTHING",
        &[
            &record_ids,
            &hashes,
            &territories,
            &moved,
            &bytes,
            &devices,
            &users,
            &crate::relay::now_ms(),
        ],
    )?;
    let touched: std::collections::BTreeSet<String> = rows
        .iter()
        .flat_map(|r| [r.territory.as_deref(), r.moved_from.as_deref()])
        .flatten()
        .map(String::from)
        .collect();
    let told: Option<Vec<&String>> = LogNotice::fitting(&touched).map(|t| t.iter().collect());
    tx.execute(
        "SELECT pg_notify($1, json_build_object(
             'head', (SELECT max(seq) FROM relay_log), 'territories', $2::text[])::text)",
        &[&CHANNEL, &told],
    )?;
    Ok(())
}
