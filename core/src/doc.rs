//! One record's Automerge document: everything Automerge-specific lives here,
//! so the rest of the crate speaks in records and fields.
//!
//! Layout of a document's root map:
//! `id`, `type`, `schema`, `created_at` (timestamp), `created_by`, `deleted`,
//! the kind's top-level fields, nested maps (`address`, `geo`, `location`),
//! `custom` (map of custom fields), and long text fields as Automerge Text.
//!
//! Every local edit is one Automerge change whose message is the user id and
//! whose time is milliseconds since the Unix epoch.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{
    ActorId, AutoCommit, Automerge, Change, ChangeHash, ObjId, ObjType, PatchAction, Prop, ReadDoc,
    ScalarValue, ROOT,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{
    FieldType, Fields, Kind, Record, Stored, TouchedField, Value, DOC_SCHEMA_VERSION,
};

mod text_edit;
pub(crate) use text_edit::{Placed, Renamed, TextEdit};

/// Who makes a change and when (milliseconds since the Unix epoch).
#[derive(Debug, Clone)]
pub struct ChangeMeta {
    pub user: String,
    pub time: i64,
}

/// One change in a record's history: who, when, from which device, and
/// which fields went from what to what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Hex change hash.
    pub change: String,
    pub time: i64,
    pub user: String,
    /// Hex Automerge actor id.
    pub actor: String,
    /// The device id behind the actor, when the store knows it
    /// (`Store::history` fills it in).
    #[serde(default)]
    pub device: Option<String>,
    pub fields: Vec<FieldChange>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub old: Value,
    pub new: Value,
}

/// A field with several concurrent values. `values[0]` is the one Automerge
/// picked as the current value; the rest lost but are kept until resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    pub field: String,
    pub values: Vec<ConflictValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictValue {
    pub value: Value,
    pub user: String,
    pub actor: String,
    pub time: i64,
}

/// A change just made on this device.
#[derive(Debug, Clone)]
pub struct LocalChange {
    pub hash: [u8; 32],
    pub bytes: Vec<u8>,
}

/// A change parsed from bytes, with its hash, ready to apply.
#[derive(Debug, Clone)]
pub struct ParsedChange {
    change: Change,
}

impl ParsedChange {
    /// Parses untrusted bytes as exactly one Automerge change.
    pub fn parse(doc_id: &str, bytes: &[u8]) -> Result<Self> {
        let malformed = |reason: String| Error::MalformedChange {
            doc: doc_id.to_string(),
            reason,
        };
        // The parser is not written for hostile input; never let a panic in it escape.
        let change = catch_unwind(|| Change::from_bytes(bytes.to_vec()))
            .map_err(|_| malformed("the change decoder rejected the bytes".into()))?
            .map_err(|e| malformed(e.to_string()))?;
        Ok(ParsedChange { change })
    }

    pub fn hash(&self) -> [u8; 32] {
        self.change.hash().0
    }

    pub fn bytes(&self) -> &[u8] {
        self.change.raw_bytes()
    }

    pub fn time(&self) -> i64 {
        self.change.timestamp()
    }

    /// Hex actor id of the device that made the change.
    pub fn actor_hex(&self) -> String {
        self.change.actor_id().to_hex_string()
    }

    /// The hashes of the changes this one builds on.
    pub fn deps(&self) -> Vec<[u8; 32]> {
        self.change.deps().iter().map(|h| h.0).collect()
    }

    /// The user the change claims to be from (its message).
    pub fn user(&self) -> Option<&str> {
        self.change.message().map(String::as_str)
    }
}

/// A record's document held in memory while it is read or edited.
#[derive(Debug)]
pub struct RecordDoc {
    id: String,
    doc: AutoCommit,
}

impl RecordDoc {
    /// A document that holds no change yet (a record only heard of by id).
    pub fn empty(id: &str) -> Self {
        RecordDoc {
            id: id.to_string(),
            doc: AutoCommit::new(),
        }
    }

    /// Creates a record document with one change. `fields` must be validated.
    pub fn create(
        id: &str,
        kind: Kind,
        fields: &Fields,
        actor: &[u8],
        meta: &ChangeMeta,
    ) -> Result<(Self, LocalChange)> {
        let mut doc = AutoCommit::new().with_actor(ActorId::from(actor));
        let am = |e: automerge::AutomergeError| corrupt(id, e);
        doc.put(ROOT, "id", id).map_err(am)?;
        doc.put(ROOT, "type", kind.as_str()).map_err(am)?;
        doc.put(ROOT, "schema", DOC_SCHEMA_VERSION).map_err(am)?;
        doc.put(ROOT, "created_at", ScalarValue::Timestamp(meta.time))
            .map_err(am)?;
        doc.put(ROOT, "created_by", meta.user.as_str())
            .map_err(am)?;
        doc.put(ROOT, "deleted", false).map_err(am)?;
        // Nested maps and text objects exist from the first change, so two
        // devices never create competing objects for the same field. Not
        // `attachments`: few records get one, and every document would
        // carry the empty map (about 4% more work to load and apply); the
        // first attachment makes it, and two made at once are settled as
        // `competing_object` (decision 0011).
        let lazy = crate::model::attachment::ATTACHMENTS;
        let maps = crate::model::nested_maps(kind).chain(kind.open_maps().iter().copied());
        for map in maps.filter(|m| *m != lazy) {
            doc.put_object(ROOT, map, ObjType::Map).map_err(am)?;
        }
        for spec in kind.fields() {
            if spec.ty == FieldType::LongText {
                doc.put_object(ROOT, spec.path, ObjType::Text).map_err(am)?;
            }
        }
        let mut record = RecordDoc {
            id: id.to_string(),
            doc,
        };
        for (path, value) in fields {
            record.write_field(kind, path, value)?;
        }
        let change = record
            .commit(meta)?
            .ok_or_else(|| corrupt(id, "creating the record made no change"))?;
        Ok((record, change))
    }

    /// Loads a document from its stored snapshot and incremental changes.
    /// Changes whose dependencies are missing are held back until they arrive.
    pub fn load<'a>(
        id: &str,
        snapshot: Option<&[u8]>,
        changes: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self> {
        let mut doc = match snapshot {
            Some(bytes) if !bytes.is_empty() => catch_unwind(|| AutoCommit::load(bytes))
                .map_err(|_| corrupt(id, "snapshot decoder failed"))?
                .map_err(|e| corrupt(id, e))?,
            _ => AutoCommit::new(),
        };
        let parsed = changes
            .into_iter()
            .map(|b| ParsedChange::parse(id, b).map(|p| p.change))
            .collect::<Result<Vec<_>>>()?;
        doc.apply_changes(parsed).map_err(|e| corrupt(id, e))?;
        Ok(RecordDoc {
            id: id.to_string(),
            doc,
        })
    }

    /// Parses and validates a compacted document received from elsewhere.
    pub fn from_snapshot(id: &str, bytes: &[u8]) -> Result<Self> {
        let doc = catch_unwind(|| AutoCommit::load(bytes))
            .map_err(|_| malformed(id, "the document decoder rejected the bytes"))?
            .map_err(|e| malformed(id, e))?;
        let mut record = RecordDoc {
            id: id.to_string(),
            doc,
        };
        if record.doc.get_heads().is_empty() {
            return Err(malformed(id, "the document holds no changes"));
        }
        record.check_identity(None, "the snapshot")?;
        Ok(record)
    }

    /// Whether `bytes` are exactly one whole Automerge chunk, a document or
    /// an uncompressed change, with a valid checksum — what a relay's
    /// compacted document is (a record made by one change is that change) —
    /// checked without decoding it (a SHA-256, no Automerge parse).
    pub fn is_one_chunk(bytes: &[u8]) -> bool {
        use sha2::{Digest, Sha256};
        const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
        const DOCUMENT: u8 = 0;
        const CHANGE: u8 = 1;
        let Some((header, rest)) = bytes.split_first_chunk::<9>() else {
            return false;
        };
        if header[..4] != MAGIC || !matches!(header[8], DOCUMENT | CHANGE) {
            return false;
        }
        // The length (unsigned LEB128) must cover exactly what follows it.
        let (mut len, mut shift, mut used) = (0u64, 0u32, 0usize);
        for &b in rest.iter().take(10) {
            len |= u64::from(b & 0x7f) << shift;
            used += 1;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        if used == 0 || rest[used - 1] & 0x80 != 0 || len != (rest.len() - used) as u64 {
            return false;
        }
        // The checksum: the first 4 bytes of the SHA-256 of type, length, data.
        Sha256::digest(&bytes[8..])[..4] == header[4..8]
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The record's kind; `None` while the creating change has not arrived.
    pub fn kind(&mut self) -> Result<Option<Kind>> {
        kind_of(self.doc.document(), &self.id)
    }

    pub fn has_change(&mut self, hash: &[u8; 32]) -> bool {
        self.doc.get_change_by_hash(&ChangeHash(*hash)).is_some()
    }

    pub fn heads(&mut self) -> Vec<[u8; 32]> {
        self.doc.get_heads().into_iter().map(|h| h.0).collect()
    }

    /// Hashes of changes this document needs but does not have.
    pub fn missing_deps(&mut self) -> Vec<[u8; 32]> {
        self.doc
            .get_missing_deps(&[])
            .into_iter()
            .map(|h| h.0)
            .collect()
    }

    /// Compacted bytes of the whole document (applied changes only).
    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save()
    }

    /// Bytes of every change not covered by `heads`, oldest first.
    pub fn changes_since(&mut self, heads: &[[u8; 32]]) -> Vec<Vec<u8>> {
        let heads: Vec<ChangeHash> = heads.iter().map(|h| ChangeHash(*h)).collect();
        self.doc
            .get_changes(&heads)
            .into_iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect()
    }

    /// The changes `user` made (their message) with an actor `mine`
    /// accepts, oldest first in a causal order, as (hash, bytes).
    pub fn changes_made_by(
        &mut self,
        user: &str,
        mine: impl Fn(&str) -> bool,
    ) -> Vec<([u8; 32], Vec<u8>)> {
        self.doc
            .get_changes(&[])
            .into_iter()
            .filter(|c| {
                c.message().is_some_and(|m| m == user) && mine(&c.actor_id().to_hex_string())
            })
            .map(|c| (c.hash().0, c.raw_bytes().to_vec()))
            .collect()
    }

    /// Applies remote changes. Fails, leaving the caller to discard this
    /// in-memory document, if a change breaks the record's identity (another
    /// record's change, a change of kind) or cannot be applied.
    pub fn apply_remote(&mut self, changes: Vec<ParsedChange>) -> Result<()> {
        let kind_before = self.kind()?;
        let what = match changes.as_slice() {
            [one] => format!("change {}", one.change.hash()),
            many => format!(
                "changes {}",
                many.iter()
                    .map(|c| c.change.hash().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let changes: Vec<Change> = changes.into_iter().map(|p| p.change).collect();
        catch_unwind(AssertUnwindSafe(|| self.doc.apply_changes(changes)))
            .map_err(|_| malformed(&self.id, "applying the change failed"))?
            .map_err(|e| Error::ForeignChange {
                doc: self.id.clone(),
                what: what.clone(),
                reason: e.to_string(),
            })?;
        self.check_identity(kind_before, &what)
    }

    /// An independent copy to try changes on.
    pub fn fork(&mut self) -> RecordDoc {
        RecordDoc {
            id: self.id.clone(),
            doc: self.doc.fork(),
        }
    }

    /// The fields that changes since `before` (heads) touched, each with
    /// every value it holds now and how it is stored. Deeper paths than
    /// `map.key` are cut to three segments: no field lives there.
    pub fn touched_since(&mut self, before: &[[u8; 32]]) -> Result<Vec<TouchedField>> {
        let before: Vec<ChangeHash> = before.iter().map(|h| ChangeHash(*h)).collect();
        // Since nothing, every field is touched: walking the document finds
        // what the diff's patches would name, without the diff.
        if before.is_empty() {
            return self.every_field();
        }
        let touched = self.touched_paths(&before)?;
        self.fields_at(touched)
    }

    /// The values now at `paths`.
    fn fields_at(&mut self, paths: BTreeMap<String, bool>) -> Result<Vec<TouchedField>> {
        let doc = self.doc.document();
        let reader = Reader::now(doc, &self.id);
        let mut maps = HashMap::new();
        paths
            .into_iter()
            .map(|(path, replaces_object)| {
                Ok(TouchedField {
                    now: reader.stored_values(&path, &mut maps)?,
                    path,
                    replaces_object,
                })
            })
            .collect()
    }

    /// Every field of the document's visible maps with its values, paths
    /// cut to three segments as [`RecordDoc::touched_paths`] cuts them, in
    /// path order; none replaces an object. One pass over the document.
    fn every_field(&mut self) -> Result<Vec<TouchedField>> {
        let doc = self.doc.document();
        let reader = Reader::now(doc, &self.id);
        let mut fields = Vec::new();
        let mut maps = vec![(ROOT, String::new(), 1)];
        while let Some((obj, prefix, depth)) = maps.pop() {
            for key in doc.keys(&obj) {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                let all = doc
                    .get_all(&obj, key.as_str())
                    .map_err(|e| corrupt(&self.id, e))?;
                // Automerge's winner is the last of the concurrent values:
                // readers see first, and descend into, that one.
                if let Some((automerge::Value::Object(ObjType::Map | ObjType::Table), id)) =
                    all.last().filter(|_| depth < 3)
                {
                    maps.push((id.clone(), path.clone(), depth + 1));
                }
                let mut now = Vec::with_capacity(all.len());
                for (value, id) in all.into_iter().rev() {
                    now.push(reader.stored(value, &id)?);
                }
                fields.push(TouchedField {
                    path,
                    now,
                    replaces_object: false,
                });
            }
        }
        fields.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(fields)
    }

    /// The paths changes since `before` touched (from Automerge's diff),
    /// each with whether an object was put where one stood before.
    fn touched_paths(&mut self, before: &[ChangeHash]) -> Result<BTreeMap<String, bool>> {
        let after = self.doc.get_heads();
        let patches = catch_unwind(AssertUnwindSafe(|| self.doc.diff(before, &after)))
            .map_err(|_| malformed(&self.id, "the changes could not be compared"))?;
        // path -> whether an object was put where one stood before
        let mut touched: BTreeMap<String, bool> = BTreeMap::new();
        for patch in &patches {
            let mut path: Vec<String> = patch.path.iter().map(|(_, p)| prop_name(p)).collect();
            let key = match &patch.action {
                PatchAction::PutMap { key, .. } | PatchAction::DeleteMap { key } => {
                    Some(key.clone())
                }
                PatchAction::Conflict {
                    prop: prop @ Prop::Map(_),
                }
                | PatchAction::Increment {
                    prop: prop @ Prop::Map(_),
                    ..
                } => Some(prop_name(prop)),
                // Inside a text or list: the object's own path.
                _ => None,
            };
            path.extend(key);
            path.truncate(3);
            if path.is_empty() {
                continue;
            }
            let puts_object = matches!(
                &patch.action,
                PatchAction::PutMap {
                    value: (automerge::Value::Object(_), _),
                    ..
                }
            );
            let path = path.join(".");
            let replaces =
                puts_object && !before.is_empty() && self.held_object_at(&path, before)?;
            *touched.entry(path).or_default() |= replaces;
        }
        // An object put concurrently with another at the same root key may
        // lose to it and show in no patch, its contents hidden: two devices
        // that each made a map a record lacked. Found by the conflict.
        if !before.is_empty() {
            for key in self.competing_objects(before)? {
                touched.insert(key, true);
            }
        }
        Ok(touched)
    }

    /// Root keys that hold more than one object now but did not at `before`.
    fn competing_objects(&mut self, before: &[ChangeHash]) -> Result<Vec<String>> {
        let id = self.id.clone();
        let doc = self.doc.document();
        let objects = |key: &str, heads: Option<&[ChangeHash]>| -> Result<usize> {
            let all = match heads {
                Some(h) => doc.get_all_at(ROOT, key, h),
                None => doc.get_all(ROOT, key),
            }
            .map_err(|e| corrupt(&id, e))?;
            Ok(all
                .iter()
                .filter(|(v, _)| matches!(v, automerge::Value::Object(_)))
                .count())
        };
        let mut competing = Vec::new();
        for key in doc.keys(ROOT) {
            if objects(&key, None)? > 1 && objects(&key, Some(before))? <= 1 {
                competing.push(key);
            }
        }
        Ok(competing)
    }

    fn held_object_at(&mut self, path: &str, heads: &[ChangeHash]) -> Result<bool> {
        let reader = Reader::at(self.doc.document(), heads, &self.id);
        Ok(reader
            .stored_values(path, &mut HashMap::new())?
            .iter()
            .any(|v| matches!(v, Stored::Map | Stored::List | Stored::Text(_))))
    }

    /// Merges another copy of this record (e.g. a bootstrap snapshot).
    pub fn merge(&mut self, mut other: RecordDoc) -> Result<()> {
        let kind_before = self.kind()?;
        catch_unwind(AssertUnwindSafe(|| self.doc.merge(&mut other.doc)))
            .map_err(|_| malformed(&self.id, "merging the document failed"))?
            .map_err(|e| malformed(&self.id, e))?;
        self.check_identity(kind_before, "the snapshot")
    }

    /// A document belongs to one record: exactly one `id` equal to ours and
    /// one `type` that never changes.
    fn check_identity(&mut self, kind_before: Option<Kind>, what: &str) -> Result<()> {
        let id = self.id.as_str();
        let doc = self.doc.document();
        let foreign = |reason: String| Error::ForeignChange {
            doc: id.to_string(),
            what: what.to_string(),
            reason,
        };
        let ids = doc.get_all(ROOT, "id").map_err(|e| corrupt(id, e))?;
        if ids.is_empty() && doc.get_heads().is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = ids
            .iter()
            .map(|(v, _)| v.to_str().unwrap_or("?").to_string())
            .collect();
        if ids.len() != 1 || ids[0] != id {
            return Err(foreign(format!(
                "the document would claim record id {}",
                ids.iter()
                    .map(|i| format!("{i:?}"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            )));
        }
        let types = doc.get_all(ROOT, "type").map_err(|e| corrupt(id, e))?;
        if types.len() != 1 {
            return Err(foreign("the change gives the record a second type".into()));
        }
        let kind = kind_of(doc, id)?;
        if let (Some(was), Some(now)) = (kind_before, kind) {
            if was != now {
                return Err(foreign(format!("the change turns a {was} into a {now}")));
            }
        }
        Ok(())
    }

    /// Writes validated field values and commits them as one change.
    /// Returns the change bytes, or `None` if nothing changed.
    pub fn update(
        &mut self,
        actor: &[u8],
        kind: Kind,
        fields: &Fields,
        meta: &ChangeMeta,
    ) -> Result<Option<LocalChange>> {
        // All reads before the first write: reading closes the open transaction.
        let mut to_write = Vec::new();
        for (path, value) in fields {
            let (current, conflicted) = self.field_state(path)?;
            if conflicted || current != *value {
                to_write.push((path, value));
            }
        }
        self.doc.set_actor(ActorId::from(actor));
        for (path, value) in to_write {
            self.write_field(kind, path, value)?;
        }
        self.commit(meta)
    }

    /// Replaces `delete` characters at `pos` (Unicode code points) of a long
    /// text field with `insert`, as one change.
    pub fn splice_text(
        &mut self,
        actor: &[u8],
        field: &str,
        pos: usize,
        delete: usize,
        insert: &str,
        meta: &ChangeMeta,
    ) -> Result<Option<LocalChange>> {
        self.doc.set_actor(ActorId::from(actor));
        let text = self.text_obj(field)?;
        let len = self.doc.length(&text);
        if pos > len || delete > len - pos {
            return Err(Error::invalid(
                field,
                format!("splice at {pos} deleting {delete}"),
                &format!("outside the text of length {len}"),
            ));
        }
        self.doc
            .splice_text(&text, pos, delete as isize, insert)
            .map_err(|e| corrupt(&self.id, e))?;
        self.commit(meta)
    }

    pub fn set_deleted(
        &mut self,
        actor: &[u8],
        deleted: bool,
        meta: &ChangeMeta,
    ) -> Result<Option<LocalChange>> {
        self.doc.set_actor(ActorId::from(actor));
        self.doc
            .put(ROOT, "deleted", deleted)
            .map_err(|e| corrupt(&self.id, e))?;
        self.commit(meta)
    }

    fn commit(&mut self, meta: &ChangeMeta) -> Result<Option<LocalChange>> {
        let options = CommitOptions::default()
            .with_message(meta.user.clone())
            .with_time(meta.time);
        if self.doc.commit_with(options).is_none() {
            return Ok(None);
        }
        Ok(self.doc.get_last_local_change().map(|c| LocalChange {
            hash: c.hash().0,
            bytes: c.raw_bytes().to_vec(),
        }))
    }

    fn text_obj(&mut self, field: &str) -> Result<ObjId> {
        match self
            .doc
            .get(ROOT, field)
            .map_err(|e| corrupt(&self.id, e))?
        {
            Some((automerge::Value::Object(ObjType::Text), id)) => Ok(id),
            _ => Ok(self
                .doc
                .put_object(ROOT, field, ObjType::Text)
                .map_err(|e| corrupt(&self.id, e))?),
        }
    }

    /// The map holding `path`'s last segment, created if a foreign document lacks it.
    fn parent_for_write(&mut self, path: &str) -> Result<(ObjId, String)> {
        let (map, key) = split_path(path);
        let Some(map) = map else {
            return Ok((ROOT, key.to_string()));
        };
        let existing = self.doc.get(ROOT, map).map_err(|e| corrupt(&self.id, e))?;
        let obj = match existing {
            Some((automerge::Value::Object(ObjType::Map), id)) => id,
            _ => self
                .doc
                .put_object(ROOT, map, ObjType::Map)
                .map_err(|e| corrupt(&self.id, e))?,
        };
        Ok((obj, key.to_string()))
    }

    fn write_field(&mut self, kind: Kind, path: &str, value: &Value) -> Result<()> {
        let ty = kind.field(path).map(|s| s.ty);
        if ty == Some(FieldType::LongText) {
            let text = self.text_obj(path)?;
            let new = value.as_str().unwrap_or("");
            return self
                .doc
                .update_text(&text, new)
                .map_err(|e| corrupt(&self.id, e));
        }
        let (obj, key) = self.parent_for_write(path)?;
        let scalar = match (value, ty) {
            (Value::Null, _) => ScalarValue::Null,
            (Value::Int(t), Some(FieldType::Timestamp)) => ScalarValue::Timestamp(*t),
            (Value::Int(i), _) => ScalarValue::Int(*i),
            (Value::Float(x), _) => ScalarValue::F64(*x),
            (Value::Bool(b), _) => ScalarValue::Boolean(*b),
            (Value::Text(s), _) => ScalarValue::Str(s.as_str().into()),
        };
        self.doc
            .put(&obj, key, scalar)
            .map_err(|e| corrupt(&self.id, e))
    }

    /// Current value of a field and whether it has competing values.
    fn field_state(&mut self, path: &str) -> Result<(Value, bool)> {
        let reader = Reader::now(self.doc.document(), &self.id);
        let conflicted = reader.all_values(path)?.len() > 1;
        Ok((reader.field(path)?.unwrap_or(Value::Null), conflicted))
    }

    /// The record as it is now.
    pub fn read(&mut self) -> Result<Record> {
        let doc = self.doc.document();
        let kind = kind_of(doc, &self.id)?.ok_or_else(|| Error::NotFound(self.id.clone()))?;
        let updated_at = doc
            .get_changes(&[])
            .iter()
            .map(|c| c.timestamp())
            .max()
            .unwrap_or(0);
        Reader::now(doc, &self.id).record(kind, updated_at)
    }

    /// The record as it stood at `time`: made of the changes stamped at or
    /// before it whose dependencies are also included.
    pub fn read_at_time(&mut self, time: i64) -> Result<Record> {
        let doc = self.doc.document();
        let kind = kind_of(doc, &self.id)?.ok_or_else(|| Error::NotFound(self.id.clone()))?;
        let mut included: HashSet<ChangeHash> = HashSet::new();
        let mut depended: HashSet<ChangeHash> = HashSet::new();
        let mut latest = 0;
        for change in doc.get_changes(&[]) {
            if change.timestamp() <= time && change.deps().iter().all(|d| included.contains(d)) {
                included.insert(change.hash());
                depended.extend(change.deps().iter().copied());
                latest = latest.max(change.timestamp());
            }
        }
        if included.is_empty() {
            return Err(Error::NotYetCreated {
                id: self.id.clone(),
                time,
            });
        }
        let heads: Vec<ChangeHash> = included.difference(&depended).copied().collect();
        Reader::at(doc, &heads, &self.id).record(kind, latest)
    }

    /// Every change with the fields it changed, oldest first.
    pub fn history(&mut self) -> Result<Vec<HistoryEntry>> {
        let doc = self.doc.document();
        let id = self.id.as_str();
        let kind = kind_of(doc, id)?.ok_or_else(|| Error::NotFound(id.to_string()))?;
        let state_at = |heads: &[ChangeHash]| Reader::at(doc, heads, id).history_fields(kind);
        // State after each change, so a linear history reads each state once.
        let mut after_states: HashMap<ChangeHash, Fields> = HashMap::new();
        let mut entries = Vec::new();
        for change in causal_order(doc) {
            let before = match change.deps() {
                [] => Fields::new(),
                [single] if after_states.contains_key(single) => after_states[single].clone(),
                deps => state_at(deps)?,
            };
            let after = state_at(&[change.hash()])?;
            let fields = field_changes(&before, &after);
            entries.push(HistoryEntry {
                change: change.hash().to_string(),
                time: change.timestamp(),
                user: change.message().cloned().unwrap_or_default(),
                actor: change.actor_id().to_hex_string(),
                device: None,
                fields,
            });
            after_states.insert(change.hash(), after);
        }
        Ok(entries)
    }

    /// The values one field took, oldest first, with the time of the change
    /// that set each: an entry wherever a change (in [`causal_order`])
    /// leaves the field different from the entry before. Cheaper than
    /// [`RecordDoc::history`]: only that field is read. For flows such as a
    /// deal's stages.
    pub fn field_timeline(&mut self, path: &str) -> Result<Vec<(i64, Value)>> {
        let doc = self.doc.document();
        let id = self.id.as_str();
        let mut timeline: Vec<(i64, Value)> = Vec::new();
        for change in causal_order(doc) {
            let heads = [change.hash()];
            let value = Reader::at(doc, &heads, id)
                .field(path)?
                .unwrap_or(Value::Null);
            if timeline.last().is_none_or(|(_, last)| *last != value) {
                timeline.push((change.timestamp(), value));
            }
        }
        Ok(timeline)
    }

    /// What one change of this document did, as its author saw it: whether
    /// it created the record, and each field it changed from what to what
    /// (the tombstone as `deleted`). `None` if the document lacks it.
    pub fn change_effect(&mut self, hash: &[u8; 32]) -> Result<Option<(bool, Vec<FieldChange>)>> {
        let doc = self.doc.document();
        let id = self.id.as_str();
        let Some(kind) = kind_of(doc, id)? else {
            return Ok(None);
        };
        let Some(change) = doc.get_change_by_hash(&ChangeHash(*hash)) else {
            return Ok(None);
        };
        let deps = change.deps().to_vec();
        let creates = deps.is_empty();
        let before = if creates {
            Fields::new()
        } else {
            Reader::at(doc, &deps, id).history_fields(kind)?
        };
        let after = Reader::at(doc, &[ChangeHash(*hash)], id).history_fields(kind)?;
        Ok(Some((creates, field_changes(&before, &after))))
    }

    /// What change `hash` did to long text `field`, by the characters it
    /// touched (`None` if it did not edit an existing text there).
    pub(crate) fn text_edit(&mut self, hash: &[u8; 32], field: &str) -> Option<TextEdit> {
        text_edit::of_change(self.doc.document(), &ChangeHash(*hash), field)
    }

    /// `edit` placed on its field as it is now, `None` when it cannot be
    /// placed exactly (see [`text_edit::replay`]).
    pub(crate) fn replay_text(&mut self, edit: &TextEdit, renamed: &Renamed) -> Option<Placed> {
        text_edit::replay(self.doc.document(), edit, renamed)
    }

    /// After `placed` was written to `field`: the new names of the
    /// characters it inserted.
    pub(crate) fn learn_names(&mut self, field: &str, placed: &Placed, renamed: &mut Renamed) {
        text_edit::learn_names(self.doc.document(), field, placed, renamed)
    }

    /// Fields that currently hold competing concurrent values.
    pub fn conflicts(&mut self) -> Result<Vec<Conflict>> {
        let doc = self.doc.document();
        let kind = kind_of(doc, &self.id)?.ok_or_else(|| Error::NotFound(self.id.clone()))?;
        let reader = Reader::now(doc, &self.id);
        let mut conflicts = Vec::new();
        for path in reader.field_paths(kind)? {
            let all = reader.all_values(&path)?;
            if all.len() < 2 {
                continue;
            }
            let mut values = Vec::new();
            for (value, opid) in all {
                let change = doc
                    .hash_for_opid(&opid)
                    .and_then(|h| doc.get_change_by_hash(&h));
                values.push(ConflictValue {
                    value,
                    user: change
                        .and_then(|c| c.message().cloned())
                        .unwrap_or_default(),
                    actor: change
                        .map(|c| c.actor_id().to_hex_string())
                        .unwrap_or_default(),
                    time: change.map(|c| c.timestamp()).unwrap_or_default(),
                });
            }
            // Automerge's winner first, so values[0] matches what `read` shows.
            let winner = reader.field(&path)?.unwrap_or(Value::Null);
            if let Some(i) = values.iter().position(|v| v.value == winner) {
                values.swap(0, i);
            }
            conflicts.push(Conflict {
                field: path,
                values,
            });
        }
        Ok(conflicts)
    }

    /// Whether any field has competing values (cheap enough for projections).
    pub fn has_conflicts(&mut self) -> Result<bool> {
        let doc = self.doc.document();
        let Some(kind) = kind_of(doc, &self.id)? else {
            return Ok(false);
        };
        let reader = Reader::now(doc, &self.id);
        for path in reader.field_paths(kind)? {
            if reader.all_values(&path)?.len() > 1 {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn kind_of(doc: &Automerge, id: &str) -> Result<Option<Kind>> {
    match doc.get(ROOT, "type").map_err(|e| corrupt(id, e))? {
        None => Ok(None),
        Some((v, _)) => match v.to_str() {
            Some(s) => s
                .parse()
                .map(Some)
                .map_err(|_| corrupt(id, format!("unknown type {s:?}"))),
            None => Err(corrupt(id, "type is not text")),
        },
    }
}

/// Reads a document now or at given heads.
struct Reader<'a> {
    doc: &'a Automerge,
    heads: Option<&'a [ChangeHash]>,
    id: &'a str,
}

impl<'a> Reader<'a> {
    fn now(doc: &'a Automerge, id: &'a str) -> Self {
        Reader {
            doc,
            heads: None,
            id,
        }
    }

    fn at(doc: &'a Automerge, heads: &'a [ChangeHash], id: &'a str) -> Self {
        Reader {
            doc,
            heads: Some(heads),
            id,
        }
    }

    fn get(&self, obj: &ObjId, key: &str) -> Result<Option<(automerge::Value<'_>, ObjId)>> {
        match self.heads {
            None => self.doc.get(obj, key),
            Some(h) => self.doc.get_at(obj, key, h),
        }
        .map_err(|e| corrupt(self.id, e))
    }

    fn map_obj(&self, name: &str) -> Result<Option<ObjId>> {
        Ok(match self.get(&ROOT, name)? {
            Some((automerge::Value::Object(ObjType::Map), id)) => Some(id),
            _ => None,
        })
    }

    fn field(&self, path: &str) -> Result<Option<Value>> {
        let (map, key) = split_path(path);
        let obj = match map {
            None => ROOT,
            Some(m) => match self.map_obj(m)? {
                Some(o) => o,
                None => return Ok(None),
            },
        };
        let Some((value, id)) = self.get(&obj, key)? else {
            return Ok(None);
        };
        self.convert(value, &id)
    }

    fn all_values(&self, path: &str) -> Result<Vec<(Value, ObjId)>> {
        let (map, key) = split_path(path);
        let obj = match map {
            None => ROOT,
            Some(m) => match self.map_obj(m)? {
                Some(o) => o,
                None => return Ok(Vec::new()),
            },
        };
        let all = match self.heads {
            None => self.doc.get_all(&obj, key),
            Some(h) => self.doc.get_all_at(&obj, key, h),
        }
        .map_err(|e| corrupt(self.id, e))?;
        let mut out = Vec::new();
        for (value, id) in all {
            if let Some(v) = self.convert(value, &id)? {
                out.push((v, id));
            }
        }
        Ok(out)
    }

    /// Every value at `path` (`key` or `map.key`) as stored, the winner
    /// first. `maps` remembers the nested maps already looked up.
    fn stored_values(
        &self,
        path: &str,
        maps: &mut HashMap<String, Option<ObjId>>,
    ) -> Result<Vec<Stored>> {
        let (obj, key) = match path.rsplit_once('.') {
            None => (ROOT, path),
            Some((parent, key)) => {
                let obj = match maps.get(parent) {
                    Some(found) => found.clone(),
                    None => {
                        let found = self.object_at(parent)?;
                        maps.insert(parent.to_string(), found.clone());
                        found
                    }
                };
                match obj {
                    Some(obj) => (obj, key),
                    None => return Ok(Vec::new()),
                }
            }
        };
        let all = match self.heads {
            None => self.doc.get_all(&obj, key),
            Some(h) => self.doc.get_all_at(&obj, key, h),
        }
        .map_err(|e| corrupt(self.id, e))?;
        // Automerge's winner is the last of the concurrent values.
        let mut values = Vec::with_capacity(all.len());
        for (value, id) in all.into_iter().rev() {
            values.push(self.stored(value, &id)?);
        }
        Ok(values)
    }

    /// The map object at a dotted path of maps, if there is one.
    fn object_at(&self, path: &str) -> Result<Option<ObjId>> {
        let mut obj = ROOT;
        for key in path.split('.') {
            match self.get(&obj, key)? {
                Some((automerge::Value::Object(ObjType::Map | ObjType::Table), id)) => obj = id,
                _ => return Ok(None),
            }
        }
        Ok(Some(obj))
    }

    fn stored(&self, value: automerge::Value<'_>, id: &ObjId) -> Result<Stored> {
        Ok(match value {
            automerge::Value::Object(ObjType::Text) => Stored::Text(
                match self.heads {
                    None => self.doc.text(id),
                    Some(h) => self.doc.text_at(id, h),
                }
                .map_err(|e| corrupt(self.id, e))?,
            ),
            automerge::Value::Object(ObjType::Map | ObjType::Table) => Stored::Map,
            automerge::Value::Object(ObjType::List) => Stored::List,
            automerge::Value::Scalar(s) => match s.as_ref() {
                ScalarValue::Str(s) => Stored::Str(s.to_string()),
                ScalarValue::Int(i) => Stored::Int(*i),
                ScalarValue::Uint(u) => match i64::try_from(*u) {
                    Ok(i) => Stored::Int(i),
                    Err(_) => Stored::Other("an integer too large to store"),
                },
                ScalarValue::F64(x) => Stored::Float(*x),
                ScalarValue::Boolean(b) => Stored::Bool(*b),
                ScalarValue::Timestamp(t) => Stored::Timestamp(*t),
                ScalarValue::Null => Stored::Null,
                ScalarValue::Counter(_) => Stored::Other("a counter"),
                ScalarValue::Bytes(_) => Stored::Other("bytes"),
                ScalarValue::Unknown { .. } => Stored::Other("a value of unknown type"),
            },
        })
    }

    fn convert(&self, value: automerge::Value<'_>, id: &ObjId) -> Result<Option<Value>> {
        Ok(match value {
            automerge::Value::Object(ObjType::Text) => Some(Value::Text(
                match self.heads {
                    None => self.doc.text(id),
                    Some(h) => self.doc.text_at(id, h),
                }
                .map_err(|e| corrupt(self.id, e))?,
            )),
            automerge::Value::Object(_) => None,
            automerge::Value::Scalar(s) => match s.as_ref() {
                ScalarValue::Str(s) => Some(Value::Text(s.to_string())),
                ScalarValue::Int(i) => Some(Value::Int(*i)),
                ScalarValue::Uint(u) => Some(Value::Int(i64::try_from(*u).unwrap_or(i64::MAX))),
                ScalarValue::F64(x) => Some(Value::Float(*x)),
                ScalarValue::Boolean(b) => Some(Value::Bool(*b)),
                ScalarValue::Timestamp(t) => Some(Value::Int(*t)),
                ScalarValue::Counter(c) => Some(Value::Int(i64::from(c))),
                ScalarValue::Null => Some(Value::Null),
                ScalarValue::Bytes(_) | ScalarValue::Unknown { .. } => None,
            },
        })
    }

    /// Paths of the built-in fields plus the keys present in the kind's
    /// open maps (`custom.<name>`; the configuration's entries).
    fn field_paths(&self, kind: Kind) -> Result<Vec<String>> {
        let mut paths: Vec<String> = kind.fields().iter().map(|f| f.path.to_string()).collect();
        for map in kind.open_maps() {
            if let Some(obj) = self.map_obj(map)? {
                let keys = match self.heads {
                    None => self.doc.keys(&obj).collect::<Vec<_>>(),
                    Some(h) => self.doc.keys_at(&obj, h).collect::<Vec<_>>(),
                };
                paths.extend(keys.into_iter().map(|k| format!("{map}.{k}")));
            }
        }
        Ok(paths)
    }

    fn fields(&self, kind: Kind) -> Result<Fields> {
        let mut fields = Fields::new();
        for path in self.field_paths(kind)? {
            match self.field(&path)? {
                None | Some(Value::Null) => {}
                Some(Value::Text(s))
                    if s.is_empty()
                        && kind
                            .field(&path)
                            .is_some_and(|f| f.ty == FieldType::LongText) => {}
                Some(v) => {
                    fields.insert(path, v);
                }
            }
        }
        Ok(fields)
    }

    /// Fields plus the tombstone, which history reports like a field.
    fn history_fields(&self, kind: Kind) -> Result<Fields> {
        let mut fields = self.fields(kind)?;
        if let Some(Value::Bool(true)) = self.field("deleted")? {
            fields.insert("deleted".into(), Value::Bool(true));
        }
        Ok(fields)
    }

    fn record(&self, kind: Kind, updated_at: i64) -> Result<Record> {
        let text = |p: &str| -> Result<String> {
            Ok(self
                .field(p)?
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default())
        };
        let int =
            |p: &str| -> Result<i64> { Ok(self.field(p)?.and_then(|v| v.as_int()).unwrap_or(0)) };
        Ok(Record {
            id: self.id.to_string(),
            kind,
            fields: self.fields(kind)?,
            deleted: matches!(self.field("deleted")?, Some(Value::Bool(true))),
            created_at: int("created_at")?,
            created_by: text("created_by")?,
            updated_at,
            schema: int("schema")?,
        })
    }
}

/// Each field whose value differs between two states, by name.
fn field_changes(before: &Fields, after: &Fields) -> Vec<FieldChange> {
    let mut fields = Vec::new();
    for key in before
        .keys()
        .chain(after.keys().filter(|k| !before.contains_key(*k)))
    {
        let old = before.get(key).cloned().unwrap_or(Value::Null);
        let new = after.get(key).cloned().unwrap_or(Value::Null);
        if old != new {
            fields.push(FieldChange {
                field: key.clone(),
                old,
                new,
            });
        }
    }
    fields.sort_by(|a, b| a.field.cmp(&b.field));
    fields
}

/// Merges two edits of one text the way Automerge merges concurrent text
/// edits: `mine` and `theirs` both started from `base`; the result keeps
/// what each inserted and drops what each deleted.
pub(crate) fn merge_text(base: &str, mine: &str, theirs: &str) -> String {
    if mine == base {
        return theirs.to_string();
    }
    if theirs == base {
        return mine.to_string();
    }
    let merged = || -> std::result::Result<String, automerge::AutomergeError> {
        let mut a = AutoCommit::new();
        let text = a.put_object(ROOT, "t", ObjType::Text)?;
        a.update_text(&text, base)?;
        a.commit();
        let mut b = a.fork();
        a.update_text(&text, mine)?;
        b.update_text(&text, theirs)?;
        a.merge(&mut b)?;
        a.text(&text)
    };
    // Plain text in, plain text out: Automerge cannot fail on it; if it
    // did, the user's own text is the safer answer.
    merged().unwrap_or_else(|_| mine.to_string())
}

fn prop_name(prop: &Prop) -> String {
    match prop {
        Prop::Map(key) => key.clone(),
        Prop::Seq(index) => index.to_string(),
    }
}

fn split_path(path: &str) -> (Option<&str>, &str) {
    match path.split_once('.') {
        Some((map, key)) => (Some(map), key),
        None => (None, path),
    }
}

fn corrupt(id: &str, reason: impl std::fmt::Display) -> Error {
    Error::CorruptDocument {
        doc: id.to_string(),
        reason: reason.to_string(),
    }
}

fn malformed(id: &str, reason: impl std::fmt::Display) -> Error {
    Error::MalformedChange {
        doc: id.to_string(),
        reason: reason.to_string(),
    }
}

/// The document's changes, each after its dependencies, concurrent ones by
/// time and then hash. Automerge's own order of concurrent changes depends
/// on how the document was put together (loaded whole, or change by
/// change), so two stores holding the same changes could read a history
/// or a stage timeline in different orders; this one is the same anywhere.
fn causal_order(doc: &Automerge) -> Vec<&Change> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let changes = doc.get_changes(&[]);
    let index: HashMap<ChangeHash, usize> = changes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.hash(), i))
        .collect();
    let mut waiting: Vec<usize> = vec![0; changes.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); changes.len()];
    for (i, change) in changes.iter().enumerate() {
        for dep in change.deps() {
            if let Some(&d) = index.get(dep) {
                waiting[i] += 1;
                dependents[d].push(i);
            }
        }
    }
    let key = |i: usize| Reverse((changes[i].timestamp(), changes[i].hash(), i));
    let mut ready: BinaryHeap<_> = (0..changes.len())
        .filter(|&i| waiting[i] == 0)
        .map(key)
        .collect();
    let mut order = Vec::with_capacity(changes.len());
    while let Some(Reverse((_, _, i))) = ready.pop() {
        order.push(changes[i]);
        for &next in &dependents[i] {
            waiting[next] -= 1;
            if waiting[next] == 0 {
                ready.push(key(next));
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fields;

    const A: &[u8] = &[1; 16];
    const B: &[u8] = &[2; 16];

    fn meta(user: &str, time: i64) -> ChangeMeta {
        ChangeMeta {
            user: user.into(),
            time,
        }
    }

    fn account() -> (RecordDoc, LocalChange) {
        let f = fields([("name", "Acme"), ("owner", "ann"), ("territory", "north")]);
        RecordDoc::create("acc-1", Kind::Account, &f, A, &meta("ann", 1_000)).unwrap()
    }

    fn copy(doc: &mut RecordDoc) -> RecordDoc {
        let bytes = doc.save();
        RecordDoc::from_snapshot(doc.id(), &bytes).unwrap()
    }

    fn parsed(id: &str, change: &LocalChange) -> Vec<ParsedChange> {
        vec![ParsedChange::parse(id, &change.bytes).unwrap()]
    }

    #[test]
    fn every_field_is_what_a_diff_from_nothing_touches() {
        let f = fields([
            ("name", Value::from("Acme")),
            ("owner", Value::from("ann")),
            ("territory", Value::from("north")),
            ("address.city", Value::from("Leeds")),
            ("address.street", Value::from("1 Mill Lane")),
            ("custom.visits", Value::from(3)),
            ("notes", Value::from("Long-standing customer")),
        ]);
        let (mut doc, _) =
            RecordDoc::create("acc-9", Kind::Account, &f, A, &meta("ann", 1_000)).unwrap();
        let from_diff = |doc: &mut RecordDoc| {
            let paths = doc.touched_paths(&[]).unwrap();
            doc.fields_at(paths).unwrap()
        };
        assert_eq!(doc.every_field().unwrap(), from_diff(&mut doc));
        // Several changes, one of them made elsewhere at once: the same.
        let mut other = copy(&mut doc);
        doc.update(
            A,
            Kind::Account,
            &fields([("address.city", "York")]),
            &meta("ann", 2_000),
        )
        .unwrap();
        let theirs = other
            .update(
                B,
                Kind::Account,
                &fields([("address.city", "Hull"), ("custom.tier", "gold")]),
                &meta("bob", 2_000),
            )
            .unwrap()
            .unwrap();
        doc.apply_remote(parsed("acc-9", &theirs)).unwrap();
        let every = doc.every_field().unwrap();
        let city = every.iter().find(|f| f.path == "address.city").unwrap();
        assert_eq!(city.now.len(), 2, "both concurrent values: {city:?}");
        assert!(every.iter().any(|f| f.path == "custom.tier"));
        assert_eq!(every, from_diff(&mut doc));
    }

    #[test]
    fn one_chunk_is_told_from_anything_else_without_decoding() {
        let (mut doc, change) = account();
        assert!(RecordDoc::is_one_chunk(&change.bytes), "a change chunk");
        let saved = doc.save();
        assert!(RecordDoc::is_one_chunk(&saved));
        assert!(
            RecordDoc::from_snapshot(doc.id(), &change.bytes).is_ok(),
            "what the check takes, Automerge loads"
        );
        assert!(!RecordDoc::is_one_chunk(&[]));
        assert!(!RecordDoc::is_one_chunk(&saved[..saved.len() - 1]));
        let mut longer = saved.clone();
        longer.push(0);
        assert!(!RecordDoc::is_one_chunk(&longer), "bytes after the chunk");
        let mut two = saved.clone();
        two.extend_from_slice(&saved);
        assert!(!RecordDoc::is_one_chunk(&two), "two chunks");
        for at in [0, 4, 8, saved.len() / 2, saved.len() - 1] {
            let mut flipped = saved.clone();
            flipped[at] ^= 0x40;
            assert!(!RecordDoc::is_one_chunk(&flipped), "byte {at} changed");
        }
    }

    #[test]
    fn create_writes_metadata_and_fields_in_one_change() {
        let (mut doc, change) = account();
        assert!(!change.bytes.is_empty());
        assert_eq!(doc.changes_since(&[]).len(), 1);
        let r = doc.read().unwrap();
        assert_eq!(r.kind, Kind::Account);
        assert_eq!(r.text("name"), Some("Acme"));
        assert_eq!(r.created_by, "ann");
        assert_eq!(r.created_at, 1_000);
        assert_eq!(r.schema, DOC_SCHEMA_VERSION);
        assert!(!r.deleted);
        assert!(!r.fields.contains_key("notes"), "empty text is unset");
    }

    #[test]
    fn history_and_timelines_read_in_one_order_however_the_changes_arrived() {
        let (mut a, _) = account();
        let mut b = copy(&mut a);
        let ca = a
            .update(
                A,
                Kind::Account,
                &fields([("phone", "+1 555 0100")]),
                &meta("ann", 2_000),
            )
            .unwrap()
            .unwrap();
        let cb = b
            .update(
                B,
                Kind::Account,
                &fields([("phone", "+1 555 0200")]),
                &meta("bob", 1_000),
            )
            .unwrap()
            .unwrap();
        a.apply_remote(parsed("acc-1", &cb)).unwrap();
        b.apply_remote(parsed("acc-1", &ca)).unwrap();
        // Also a copy loaded whole, as a bootstrap receives it.
        let mut whole = copy(&mut a);
        let order = |d: &mut RecordDoc| -> Vec<String> {
            d.history().unwrap().into_iter().map(|h| h.user).collect()
        };
        // Concurrent changes by time: bob's (1,000) before ann's (2,000).
        assert_eq!(order(&mut a)[1..], ["bob", "ann"]);
        assert_eq!(order(&mut a), order(&mut b));
        assert_eq!(order(&mut a), order(&mut whole));
        let timeline = a.field_timeline("phone").unwrap();
        assert_eq!(timeline, b.field_timeline("phone").unwrap());
        assert_eq!(timeline, whole.field_timeline("phone").unwrap());
    }

    #[test]
    fn concurrent_edits_to_different_fields_both_survive() {
        let (mut a, _) = account();
        let mut b = copy(&mut a);
        let ca = a
            .update(
                A,
                Kind::Account,
                &fields([("phone", "+1 555 0100")]),
                &meta("ann", 2_000),
            )
            .unwrap()
            .unwrap();
        let cb = b
            .update(
                B,
                Kind::Account,
                &fields([("address.city", "Leeds")]),
                &meta("bob", 2_001),
            )
            .unwrap()
            .unwrap();
        a.apply_remote(parsed("acc-1", &cb)).unwrap();
        b.apply_remote(parsed("acc-1", &ca)).unwrap();
        assert_eq!(a.read().unwrap(), b.read().unwrap());
        let r = a.read().unwrap();
        assert_eq!(r.text("phone"), Some("+1 555 0100"));
        assert_eq!(r.text("address.city"), Some("Leeds"));
        assert!(a.conflicts().unwrap().is_empty());
    }

    #[test]
    fn same_field_conflict_is_visible_and_resolution_supersedes_it() {
        let (mut a, _) = account();
        let mut b = copy(&mut a);
        let ca = a
            .update(
                A,
                Kind::Account,
                &fields([("phone", "111 111")]),
                &meta("ann", 2_000),
            )
            .unwrap()
            .unwrap();
        let cb = b
            .update(
                B,
                Kind::Account,
                &fields([("phone", "222 222")]),
                &meta("bob", 2_000),
            )
            .unwrap()
            .unwrap();
        a.apply_remote(parsed("acc-1", &cb)).unwrap();
        b.apply_remote(parsed("acc-1", &ca)).unwrap();
        let conflicts = a.conflicts().unwrap();
        assert_eq!(conflicts, b.conflicts().unwrap());
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].field, "phone");
        let mut users: Vec<_> = conflicts[0]
            .values
            .iter()
            .map(|v| v.user.as_str())
            .collect();
        users.sort();
        assert_eq!(users, ["ann", "bob"]);
        assert_eq!(
            Some(&conflicts[0].values[0].value),
            a.read().unwrap().get("phone")
        );

        // Resolving with the value that already wins still writes a superseding change.
        let winner = conflicts[0].values[0].value.clone();
        let fix = a
            .update(
                A,
                Kind::Account,
                &fields([("phone", winner.clone())]),
                &meta("ann", 3_000),
            )
            .unwrap()
            .unwrap();
        b.apply_remote(parsed("acc-1", &fix)).unwrap();
        assert!(a.conflicts().unwrap().is_empty());
        assert!(b.conflicts().unwrap().is_empty());
        assert_eq!(b.read().unwrap().get("phone"), Some(&winner));
    }

    #[test]
    fn text_merges_character_wise() {
        let (mut a, _) = account();
        a.update(
            A,
            Kind::Account,
            &fields([("notes", "hello world")]),
            &meta("ann", 2),
        )
        .unwrap();
        let mut b = copy(&mut a);
        let ca = a
            .splice_text(A, "notes", 0, 5, "HELLO", &meta("ann", 3))
            .unwrap()
            .unwrap();
        let cb = b
            .splice_text(B, "notes", 11, 0, "!", &meta("bob", 3))
            .unwrap()
            .unwrap();
        a.apply_remote(parsed("acc-1", &cb)).unwrap();
        b.apply_remote(parsed("acc-1", &ca)).unwrap();
        assert_eq!(a.read().unwrap().text("notes"), Some("HELLO world!"));
        assert_eq!(b.read().unwrap().text("notes"), Some("HELLO world!"));
        let err = a
            .splice_text(A, "notes", 50, 1, "x", &meta("ann", 4))
            .unwrap_err();
        assert!(
            err.to_string().contains("outside the text of length 12"),
            "{err}"
        );
    }

    #[test]
    fn history_lists_each_change_with_old_and_new_values() {
        let (mut a, _) = account();
        a.update(
            A,
            Kind::Account,
            &fields([("name", "Acme Ltd"), ("industry", "Steel")]),
            &meta("ann", 2_000),
        )
        .unwrap();
        a.set_deleted(A, true, &meta("ann", 3_000)).unwrap();
        let h = a.history().unwrap();
        assert_eq!(h.len(), 3, "{h:#?}");
        assert_eq!(h[0].user, "ann");
        assert_eq!(h[0].actor, hex(A));
        assert!(h[0]
            .fields
            .iter()
            .any(|f| f.field == "name" && f.old == Value::Null && f.new == Value::from("Acme")));
        assert_eq!(
            h[1].fields,
            vec![
                FieldChange {
                    field: "industry".into(),
                    old: Value::Null,
                    new: "Steel".into()
                },
                FieldChange {
                    field: "name".into(),
                    old: "Acme".into(),
                    new: "Acme Ltd".into()
                },
            ]
        );
        assert_eq!(
            h[2].fields,
            vec![FieldChange {
                field: "deleted".into(),
                old: Value::Null,
                new: true.into()
            }]
        );
    }

    #[test]
    fn read_at_time_shows_the_past() {
        let (mut a, _) = account();
        a.update(
            A,
            Kind::Account,
            &fields([("name", "Acme Ltd")]),
            &meta("ann", 5_000),
        )
        .unwrap();
        assert_eq!(a.read_at_time(1_000).unwrap().text("name"), Some("Acme"));
        assert_eq!(a.read_at_time(4_999).unwrap().text("name"), Some("Acme"));
        assert_eq!(
            a.read_at_time(5_000).unwrap().text("name"),
            Some("Acme Ltd")
        );
        assert!(matches!(
            a.read_at_time(999),
            Err(Error::NotYetCreated { .. })
        ));
    }

    #[test]
    fn changes_of_another_record_are_refused() {
        let (mut a, _) = account();
        let f = fields([("name", "Other"), ("owner", "ann"), ("territory", "north")]);
        let (_, other) = RecordDoc::create("acc-2", Kind::Account, &f, B, &meta("bob", 1)).unwrap();
        let err = a.apply_remote(parsed("acc-1", &other)).unwrap_err();
        assert!(matches!(err, Error::ForeignChange { .. }), "{err}");
    }

    #[test]
    fn out_of_order_changes_wait_for_their_dependencies() {
        let (mut a, create) = account();
        let c1 = a
            .update(
                A,
                Kind::Account,
                &fields([("industry", "Steel")]),
                &meta("ann", 2),
            )
            .unwrap()
            .unwrap();
        let c2 = a
            .update(
                A,
                Kind::Account,
                &fields([("industry", "Iron")]),
                &meta("ann", 3),
            )
            .unwrap()
            .unwrap();
        let mut b = RecordDoc::empty("acc-1");
        b.apply_remote(parsed("acc-1", &c2)).unwrap();
        b.apply_remote(parsed("acc-1", &c1)).unwrap();
        assert_eq!(b.kind().unwrap(), None);
        assert_eq!(b.missing_deps().len(), 1);
        b.apply_remote(parsed("acc-1", &create)).unwrap();
        assert_eq!(b.read().unwrap().text("industry"), Some("Iron"));
        assert!(b.missing_deps().is_empty());
    }

    #[test]
    fn malformed_bytes_are_rejected_by_parse() {
        let (_, create) = account();
        assert!(ParsedChange::parse("x", b"not a change").is_err());
        let create = create.bytes;
        assert!(ParsedChange::parse("x", &create[..create.len() - 3]).is_err());
        let mut extra = create.clone();
        extra.extend_from_slice(b"junk");
        let err = ParsedChange::parse("x", &extra).unwrap_err();
        assert!(err.to_string().contains("leftover data"), "{err}");
    }

    #[test]
    fn text_edits_merge_as_if_concurrent() {
        assert_eq!(merge_text("hello", "hello world", "hello"), "hello world");
        assert_eq!(merge_text("hello", "hello", "Hello"), "Hello");
        // The relay lost " world" (refused); my later "!" stays.
        assert_eq!(merge_text("hello world", "hello world!", "hello"), "hello!");
        assert_eq!(merge_text("abc", "xabc", "abcy"), "xabcy");
    }

    #[test]
    fn a_changes_effect_names_its_fields() {
        let (mut a, create) = account();
        let change = a
            .update(
                A,
                Kind::Account,
                &fields([("phone", "+1 555")]),
                &meta("ann", 2),
            )
            .unwrap()
            .unwrap();
        let (creates, fields) = a.change_effect(&change.hash).unwrap().unwrap();
        assert!(!creates);
        assert_eq!(
            fields,
            vec![FieldChange {
                field: "phone".into(),
                old: Value::Null,
                new: "+1 555".into()
            }]
        );
        let (creates, fields) = a.change_effect(&create.hash).unwrap().unwrap();
        assert!(creates);
        assert!(fields.iter().any(|f| f.field == "name"));
        assert!(a.change_effect(&[0; 32]).unwrap().is_none());
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
