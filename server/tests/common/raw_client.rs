//! A third-party client that writes records with raw Automerge, as one
//! written from docs/protocol.md alone (or a hostile one) would: nothing
//! stops it from writing what FieldCRM's own core never would.

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, AutoCommit, ObjType, ReadDoc, ScalarValue, ROOT};
use fieldcrm_core::protocol::RecordBytes;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One record's document in a raw client's hands.
pub struct RawRecord {
    pub id: String,
    doc: AutoCommit,
    user: String,
}

impl RawRecord {
    /// A new account as the data model describes it (the same layout the
    /// core writes), not yet committed: add fields, then [`commit`](Self::commit).
    pub fn account(user: &str, name: &str, territory: &str) -> RawRecord {
        let mut r = RawRecord::blank(user, "account");
        r.put("name", name);
        r.put("owner", user);
        r.put("territory", territory);
        r
    }

    /// A new deal of `account`.
    pub fn deal(user: &str, account: &str, territory: &str) -> RawRecord {
        let mut r = RawRecord::blank(user, "deal");
        r.put("name", "Big deal");
        r.put("account_id", account);
        r.put("stage", "lead");
        r.put("owner", user);
        r.put("territory", territory);
        r
    }

    /// The metadata and nested maps of a `kind` record, no fields.
    pub fn blank(user: &str, kind: &str) -> RawRecord {
        let id = uuid::Uuid::now_v7().to_string();
        let mut doc = AutoCommit::new().with_actor(ActorId::random());
        doc.put(ROOT, "id", id.as_str()).unwrap();
        doc.put(ROOT, "type", kind).unwrap();
        doc.put(ROOT, "schema", 1).unwrap();
        doc.put(ROOT, "created_at", ScalarValue::Timestamp(now_ms()))
            .unwrap();
        doc.put(ROOT, "created_by", user).unwrap();
        doc.put(ROOT, "deleted", false).unwrap();
        for map in ["address", "geo", "custom"] {
            if kind == "account" || map == "custom" {
                doc.put_object(ROOT, map, ObjType::Map).unwrap();
            }
        }
        if kind != "activity" {
            doc.put_object(ROOT, "notes", ObjType::Text).unwrap();
        }
        RawRecord {
            id,
            doc,
            user: user.to_string(),
        }
    }

    /// A record another party holds, loaded from its compacted document.
    pub fn load(id: &str, user: &str, snapshot: &[u8]) -> RawRecord {
        RawRecord {
            id: id.to_string(),
            doc: AutoCommit::load(snapshot)
                .unwrap()
                .with_actor(ActorId::random()),
            user: user.to_string(),
        }
    }

    /// Writes a root field.
    pub fn put(&mut self, key: &str, value: impl Into<ScalarValue>) -> &mut Self {
        self.doc.put(ROOT, key, value).unwrap();
        self
    }

    /// Writes a field of a nested map (`address`, `geo`, `custom`).
    pub fn put_in(&mut self, map: &str, key: &str, value: impl Into<ScalarValue>) -> &mut Self {
        let (_, obj) = self.doc.get(ROOT, map).unwrap().unwrap();
        self.doc.put(&obj, key, value).unwrap();
        self
    }

    /// Puts a new object at a root key (a Text where a string belongs, a
    /// second Text over the first, a map over a map).
    pub fn put_object(&mut self, key: &str, kind: ObjType, text: &str) -> &mut Self {
        let obj = self.doc.put_object(ROOT, key, kind).unwrap();
        if kind == ObjType::Text {
            self.doc.splice_text(&obj, 0, 0, text).unwrap();
        }
        self
    }

    /// Commits what was written as one change stamped `time` (ms unless
    /// a test says otherwise), signed as the client's user.
    pub fn commit_at(&mut self, time: i64) -> RecordBytes {
        let options = CommitOptions::default()
            .with_message(self.user.clone())
            .with_time(time);
        self.doc.commit_with(options);
        RecordBytes {
            record_id: self.id.clone(),
            bytes: self
                .doc
                .get_last_local_change()
                .expect("a change was written")
                .raw_bytes()
                .to_vec(),
        }
    }

    pub fn commit(&mut self) -> RecordBytes {
        self.commit_at(now_ms())
    }

    /// An independent copy, for writing a concurrent change.
    pub fn fork(&mut self) -> RawRecord {
        RawRecord {
            id: self.id.clone(),
            doc: self.doc.fork().with_actor(ActorId::random()),
            user: self.user.clone(),
        }
    }

    /// Takes in changes another copy made.
    pub fn merge(&mut self, other: &mut RawRecord) {
        self.doc.merge(&mut other.doc).unwrap();
    }
}
