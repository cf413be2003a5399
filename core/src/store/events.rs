//! Which records changed, for apps that redraw what changed. Once an app
//! asks for it ([`Store::track_changes`]), temporary triggers on this
//! connection note every write to the query projection — the one table
//! every local edit, received change, snapshot, rebase and eviction goes
//! through — in a temporary table that rolls back with its transaction.
//! [`Store::take_changes`] hands out one entry per record, so a batch is
//! what whole transactions did, never field by field.

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::Store;
use crate::error::Result;
use crate::model::Kind;

/// What happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Created,
    Updated,
    /// Now carries the tombstone.
    Deleted,
    Restored,
    /// Gone from this device (it left the user's territories).
    Evicted,
}

/// One record a batch of transactions changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordChange {
    pub id: String,
    pub kind: Kind,
    pub change: ChangeKind,
    /// Whether a field of it holds competing values now.
    pub conflicted: bool,
}

const TRACK: &str = "
CREATE TEMP TABLE IF NOT EXISTS record_events (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL, kind TEXT NOT NULL, op TEXT NOT NULL,
    was_deleted INTEGER, deleted INTEGER, has_conflicts INTEGER
);
CREATE TEMP TRIGGER IF NOT EXISTS record_inserted AFTER INSERT ON main.records BEGIN
    INSERT INTO record_events (id, kind, op, deleted, has_conflicts)
    VALUES (NEW.id, NEW.kind, 'insert', NEW.deleted, NEW.has_conflicts);
END;
CREATE TEMP TRIGGER IF NOT EXISTS record_updated AFTER UPDATE ON main.records BEGIN
    INSERT INTO record_events (id, kind, op, was_deleted, deleted, has_conflicts)
    VALUES (NEW.id, NEW.kind, 'update', OLD.deleted, NEW.deleted, NEW.has_conflicts);
END;
CREATE TEMP TRIGGER IF NOT EXISTS record_deleted AFTER DELETE ON main.records BEGIN
    INSERT INTO record_events (id, kind, op, was_deleted)
    VALUES (OLD.id, OLD.kind, 'delete', OLD.deleted);
END;
";

/// One noted write.
struct Event {
    id: String,
    kind: String,
    op: String,
    was_deleted: Option<bool>,
    deleted: Option<bool>,
    has_conflicts: Option<bool>,
}

impl Store {
    /// From now on, note which records each transaction changes (for
    /// [`Store::take_changes`]). Costs one small insert per record written.
    pub fn track_changes(&mut self) -> Result<()> {
        self.conn.execute_batch(TRACK)?;
        Ok(())
    }

    /// The records changed by the transactions committed since the last
    /// call, one entry per record, in the order they were first changed.
    /// Empty unless [`Store::track_changes`] was called.
    pub fn take_changes(&mut self) -> Result<Vec<RecordChange>> {
        let tracking: bool = self
            .conn
            .prepare_cached(
                "SELECT count(*) > 0 FROM temp.sqlite_master WHERE name = 'record_events'",
            )?
            .query_row([], |r| r.get(0))?;
        if !tracking {
            return Ok(Vec::new());
        }
        let events = read_events(&self.conn)?;
        self.conn
            .prepare_cached("DELETE FROM temp.record_events")?
            .execute([])?;
        Ok(coalesce(events))
    }
}

fn read_events(conn: &Connection) -> Result<Vec<Event>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, kind, op, was_deleted, deleted, has_conflicts FROM temp.record_events ORDER BY seq",
    )?;
    let events = stmt
        .query_map([], |r| {
            Ok(Event {
                id: r.get(0)?,
                kind: r.get(1)?,
                op: r.get(2)?,
                was_deleted: r.get(3)?,
                deleted: r.get(4)?,
                has_conflicts: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(events)
}

/// One entry per record: what its first and last write say happened.
fn coalesce(events: Vec<Event>) -> Vec<RecordChange> {
    // id -> (first write's op and tombstone before it, last write)
    let mut by_id: std::collections::HashMap<String, (String, Option<bool>, Event)> =
        Default::default();
    let mut order: Vec<String> = Vec::new();
    for e in events {
        match by_id.get_mut(&e.id) {
            Some((_, _, last)) => *last = e,
            None => {
                order.push(e.id.clone());
                by_id.insert(e.id.clone(), (e.op.clone(), e.was_deleted, e));
            }
        }
    }
    order
        .into_iter()
        .filter_map(|id| {
            let (first_op, was_deleted, last) = by_id.remove(&id)?;
            let kind: Kind = last.kind.parse().ok()?;
            let change = match (first_op.as_str(), last.op.as_str()) {
                // Made and gone in one batch: nothing to show.
                ("insert", "delete") => return None,
                (_, "delete") => ChangeKind::Evicted,
                ("insert", _) => ChangeKind::Created,
                _ => match (was_deleted, last.deleted) {
                    (Some(false), Some(true)) => ChangeKind::Deleted,
                    (Some(true), Some(false)) => ChangeKind::Restored,
                    _ => ChangeKind::Updated,
                },
            };
            Some(RecordChange {
                id,
                kind,
                change,
                conflicted: last.has_conflicts.unwrap_or(false),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fields;

    #[test]
    fn each_record_once_per_batch_with_what_happened() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("s.db"), "ann").unwrap();
        let before = store
            .create(
                Kind::Account,
                fields([("name", "Before"), ("territory", "n")]),
            )
            .unwrap();
        assert!(store.take_changes().unwrap().is_empty(), "not tracking yet");
        store.track_changes().unwrap();

        let a = store
            .create(Kind::Account, fields([("name", "A"), ("territory", "n")]))
            .unwrap();
        store.update(&a.id, fields([("phone", "123 456")])).unwrap();
        store
            .update(&before.id, fields([("phone", "654 321")]))
            .unwrap();
        let changes = store.take_changes().unwrap();
        assert_eq!(
            changes
                .iter()
                .map(|c| (c.id.as_str(), c.change))
                .collect::<Vec<_>>(),
            [
                (a.id.as_str(), ChangeKind::Created),
                (before.id.as_str(), ChangeKind::Updated)
            ]
        );
        assert!(store.take_changes().unwrap().is_empty(), "handed out once");

        store.delete(&a.id).unwrap();
        assert_eq!(store.take_changes().unwrap()[0].change, ChangeKind::Deleted);
        store.restore(&a.id).unwrap();
        assert_eq!(
            store.take_changes().unwrap()[0].change,
            ChangeKind::Restored
        );
        store.evict(std::slice::from_ref(&a.id)).unwrap();
        assert_eq!(store.take_changes().unwrap()[0].change, ChangeKind::Evicted);
        // A failed edit changes nothing, so it reports nothing.
        assert!(store.update(&before.id, fields([("email", "x")])).is_err());
        assert!(store.take_changes().unwrap().is_empty());
    }
}
