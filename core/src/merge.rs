//! Merging a duplicate into the record that survives it, as plain field
//! edits every store makes the same way (docs/data-model.md, "Merging
//! duplicates"; decision 0009).
//!
//! A merge writes the survivor's new values, re-points every record that
//! names the duplicate, and leaves the duplicate a tombstone whose
//! `merged_into` names the survivor. The tombstone keeps its fields, so an
//! offline edit of it that arrives later can be carried onto the survivor
//! ([`carry`]) and the merge can be undone.

use crate::error::{Error, Result};
use crate::model::{FieldType, Fields, Kind, Record, Value};

/// The kinds that can be merged: those duplicates are looked for in.
pub const MERGEABLE: &[Kind] = &[Kind::Account, Kind::Contact, Kind::Lead];

/// On the tombstone: the survivor's id.
pub const MERGED_INTO: &str = "merged_into";
/// On the tombstone: when the merge was made (ms since the epoch).
pub const MERGED_AT: &str = "merged_at";
/// On the tombstone: who made it.
pub const MERGED_BY: &str = "merged_by";
/// On the tombstone: the survivor's heads right after the merge (hex,
/// comma-separated): while the survivor still has exactly these, nobody
/// has changed it since, and the merge can be undone.
pub const MERGED_HEADS: &str = "merged_heads";

const MERGE_FIELDS: [&str; 4] = [MERGED_INTO, MERGED_AT, MERGED_BY, MERGED_HEADS];

/// Where long texts of both records are joined.
const JOIN: &str = "\n\n";

/// Fields a merge never takes from the duplicate: where the survivor
/// lives is its own, and the merge's bookkeeping is the tombstone's.
fn never_taken(path: &str) -> bool {
    path == "territory" || MERGE_FIELDS.contains(&path)
}

fn is_long_text(kind: Kind, path: &str) -> bool {
    kind.field(path)
        .is_some_and(|s| s.ty == FieldType::LongText)
}

fn blank(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::Text(s)) => s.trim().is_empty(),
        Some(_) => false,
    }
}

/// The survivor a tombstone was merged into, if it was.
pub fn merged_into(record: &Record) -> Option<&str> {
    record.text(MERGED_INTO).filter(|_| record.deleted)
}

/// What merging a duplicate does to its survivor.
#[derive(Debug, Clone, PartialEq)]
pub struct MergePlan {
    /// The survivor's fields that change, with their new values.
    pub survivor: Fields,
    /// The fields whose value comes from the duplicate (joined long texts
    /// included), for the page that confirms the merge.
    pub taken: Vec<String>,
}

/// Plans merging `duplicate` into `survivor`. By default the survivor keeps
/// its values and fills its blanks from the duplicate, and long texts
/// (notes) keep both, the duplicate's after the survivor's; every field of
/// `take` gets the duplicate's value instead. Refused for records of
/// different kinds or of a kind that is not merged, a record merged with
/// itself, a deleted record, and a field of `take` the duplicate does not
/// set or a merge never takes.
pub fn plan_merge(survivor: &Record, duplicate: &Record, take: &[String]) -> Result<MergePlan> {
    let refuse = |why: String| Err(Error::Refused(why));
    if survivor.kind != duplicate.kind {
        return refuse(format!(
            "a {} cannot be merged into a {}",
            duplicate.kind, survivor.kind
        ));
    }
    if !MERGEABLE.contains(&survivor.kind) {
        return refuse(format!(
            "{} are not merged (accounts, contacts and leads are)",
            survivor.kind.plural()
        ));
    }
    if survivor.id == duplicate.id {
        return refuse("a record cannot be merged into itself".into());
    }
    for (record, role) in [(survivor, "record to keep"), (duplicate, "duplicate")] {
        if let Some(into) = merged_into(record) {
            return refuse(format!(
                "the {role} {:?} was merged into {into:?} already",
                record.display_name()
            ));
        }
        if record.deleted {
            return refuse(format!("the {role} {:?} is deleted", record.display_name()));
        }
    }
    for path in take {
        if never_taken(path) {
            return Err(Error::InvalidValue {
                field: path.clone(),
                value: "take".into(),
                reason: "a merge keeps the survivor's own value of this field".into(),
            });
        }
        if blank(duplicate.get(path)) {
            return Err(Error::InvalidValue {
                field: path.clone(),
                value: "take".into(),
                reason: "the duplicate has no value to take".into(),
            });
        }
    }
    let kind = survivor.kind;
    let mut plan = MergePlan {
        survivor: Fields::new(),
        taken: Vec::new(),
    };
    for (path, theirs) in &duplicate.fields {
        if never_taken(path) || blank(Some(theirs)) {
            continue;
        }
        let ours = survivor.get(path);
        let chosen = take.contains(path);
        let new = if is_long_text(kind, path) && !chosen {
            let (ours, theirs) = (ours.and_then(Value::as_str), theirs.as_str());
            match (ours, theirs) {
                (_, None) => None,
                (None, Some(t)) => Some(Value::from(t)),
                (Some(o), Some(t)) if o.contains(t) => None,
                (Some(o), Some(t)) if o.trim().is_empty() => Some(Value::from(t)),
                (Some(o), Some(t)) => Some(Value::from(format!("{o}{JOIN}{t}"))),
            }
        } else if chosen || blank(ours) {
            Some(theirs.clone())
        } else {
            None
        };
        if let Some(new) = new.filter(|n| Some(n) != ours) {
            plan.survivor.insert(path.clone(), new);
            plan.taken.push(path.clone());
        }
    }
    Ok(plan)
}

/// The tombstone's fields a merge writes (before deleting it).
pub fn tombstone_fields(survivor: &str, by: &str, at: i64, survivor_heads: &[[u8; 32]]) -> Fields {
    let heads: Vec<String> = survivor_heads.iter().map(hex::encode).collect();
    [
        (MERGED_INTO, Value::from(survivor)),
        (MERGED_AT, Value::from(at)),
        (MERGED_BY, Value::from(by)),
        (MERGED_HEADS, Value::from(heads.join(","))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The survivor's heads a tombstone recorded at its merge.
pub fn merged_heads(tombstone: &Record) -> Vec<[u8; 32]> {
    tombstone
        .text(MERGED_HEADS)
        .unwrap_or_default()
        .split(',')
        .filter_map(|h| hex::decode(h).ok()?.try_into().ok())
        .collect()
}

/// The tombstone's fields undoing a merge clears (after restoring it).
pub fn cleared_merge_fields() -> Fields {
    MERGE_FIELDS
        .iter()
        .map(|k| (k.to_string(), Value::Null))
        .collect()
}

/// The fields of `record` that name `id` (references, custom ones
/// included: a record id in a field is a reference to it).
pub fn fields_naming(record: &Record, id: &str) -> Vec<String> {
    record
        .fields
        .iter()
        .filter(|(path, value)| {
            value.as_str() == Some(id) && !MERGE_FIELDS.contains(&path.as_str())
        })
        .map(|(path, _)| path.clone())
        .collect()
}

/// What a change made to a merged tombstone means for its survivor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Carry {
    /// Edits that apply cleanly: the survivor still holds what the
    /// tombstone held (or nothing), so the new value goes on top.
    pub clean: Fields,
    /// Edits that meet another value on the survivor: left for a person
    /// to decide.
    pub review: Fields,
}

impl Carry {
    pub fn is_empty(&self) -> bool {
        self.clean.is_empty() && self.review.is_empty()
    }
}

/// Splits the field changes a late change made to a merged tombstone
/// (`before` to `after`) into those that carry cleanly onto `survivor` and
/// those that need review. A long text edit carries when the survivor's
/// text still holds the tombstone's old text (a merge appends it there):
/// that part is replaced by the new text.
pub fn carry(before: &Record, after: &Record, survivor: &Record) -> Carry {
    let mut carry = Carry::default();
    let paths: std::collections::BTreeSet<&String> =
        before.fields.keys().chain(after.fields.keys()).collect();
    for path in paths {
        let (old, new) = (before.get(path), after.get(path));
        if old == new || never_taken(path) {
            continue;
        }
        let new = new.cloned().unwrap_or(Value::Null);
        let ours = survivor.get(path);
        if is_long_text(after.kind, path) {
            let (ours_text, old_text) = (
                ours.and_then(Value::as_str).unwrap_or_default(),
                old.and_then(Value::as_str).unwrap_or_default(),
            );
            let new_text = new.as_str().unwrap_or_default();
            let joined = if old_text.is_empty() {
                match ours_text.is_empty() {
                    true => Some(new_text.to_string()),
                    false => Some(format!("{ours_text}{JOIN}{new_text}")),
                }
            } else if ours_text.contains(old_text) {
                Some(ours_text.replacen(old_text, new_text, 1))
            } else {
                None
            };
            match joined {
                Some(text) => carry.clean.insert(path.clone(), Value::from(text)),
                None => carry.review.insert(path.clone(), new),
            };
        } else if ours == old || blank(ours) {
            if ours != Some(&new) {
                carry.clean.insert(path.clone(), new);
            }
        } else if ours != Some(&new) {
            carry.review.insert(path.clone(), new);
        }
    }
    carry
}

impl crate::Store {
    /// The record `id` stands for now: itself, or the survivor it was
    /// merged into (following merges of merges). An app that opens a
    /// merged record shows this one instead.
    pub fn survivor_of(&self, id: &str) -> Result<String> {
        let mut at = self.get(id)?;
        for _ in 0..16 {
            let Some(next) = merged_into(&at).map(String::from) else {
                break;
            };
            match self.get(&next) {
                Ok(record) => at = record,
                // The survivor is in a territory this device does not hold.
                Err(Error::NotFound(_)) => return Ok(next),
                Err(e) => return Err(e),
            }
        }
        Ok(at.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fields;

    fn record(id: &str, kind: Kind, pairs: &[(&str, &str)]) -> Record {
        Record {
            id: id.into(),
            kind,
            fields: fields(pairs.iter().copied()),
            deleted: false,
            created_at: 0,
            created_by: "ann".into(),
            updated_at: 0,
            schema: 1,
        }
    }

    fn acme(id: &str, pairs: &[(&str, &str)]) -> Record {
        let mut r = record(
            id,
            Kind::Account,
            &[("name", "Acme GmbH"), ("territory", "north")],
        );
        r.fields.extend(fields(pairs.iter().copied()));
        r
    }

    #[test]
    fn the_survivor_keeps_its_values_fills_blanks_and_keeps_both_notes() {
        let s = acme("s", &[("phone", "+49 1"), ("notes", "from ann")]);
        let d = acme(
            "d",
            &[
                ("phone", "+49 2"),
                ("website", "acme.de"),
                ("notes", "from sam"),
            ],
        );
        let plan = plan_merge(&s, &d, &[]).unwrap();
        assert_eq!(
            plan.survivor,
            fields([("website", "acme.de"), ("notes", "from ann\n\nfrom sam")])
        );
        assert_eq!(plan.taken, ["notes", "website"]);
        // Chosen fields take the duplicate's value; the territory never.
        let plan = plan_merge(&s, &d, &["phone".into()]).unwrap();
        assert_eq!(plan.survivor.get("phone"), Some(&Value::from("+49 2")));
        let err = plan_merge(&s, &d, &["territory".into()]).unwrap_err();
        assert!(err.to_string().contains("territory"), "{err}");
        let err = plan_merge(&s, &d, &["industry".into()]).unwrap_err();
        assert!(err.to_string().contains("no value to take"), "{err}");
    }

    #[test]
    fn merging_is_refused_across_kinds_with_itself_and_for_tombstones() {
        let s = acme("s", &[]);
        let contact = record("c", Kind::Contact, &[("first_name", "Jane")]);
        assert!(plan_merge(&s, &contact, &[]).is_err());
        assert!(plan_merge(&s, &s, &[]).is_err());
        let deal = record("x", Kind::Deal, &[]);
        let err = plan_merge(&deal, &record("y", Kind::Deal, &[]), &[]).unwrap_err();
        assert!(err.to_string().contains("deals are not merged"), "{err}");
        let mut gone = acme("d", &[(MERGED_INTO, "t")]);
        gone.deleted = true;
        let err = plan_merge(&s, &gone, &[]).unwrap_err();
        assert!(
            err.to_string().contains("merged into \"t\" already"),
            "{err}"
        );
    }

    #[test]
    fn a_late_edit_of_the_tombstone_carries_where_the_survivor_agrees() {
        // The merge gave the survivor the duplicate's website and notes.
        let survivor = acme(
            "s",
            &[
                ("phone", "+49 1"),
                ("website", "acme.de"),
                ("notes", "ann\n\nsam"),
            ],
        );
        let before = acme(
            "d",
            &[("phone", "+49 2"), ("website", "acme.de"), ("notes", "sam")],
        );
        let after = acme(
            "d",
            &[
                ("phone", "+49 3"),
                ("website", "acme.com"),
                ("industry", "tools"),
                ("notes", "sam, called back"),
            ],
        );
        let carry = carry(&before, &after, &survivor);
        assert_eq!(
            carry.clean,
            fields([
                ("industry", "tools"),
                ("notes", "ann\n\nsam, called back"),
                ("website", "acme.com"),
            ])
        );
        // The survivor kept its own phone: the rep's new one is for review.
        assert_eq!(carry.review, fields([("phone", "+49 3")]));
    }

    #[test]
    fn references_and_heads_round_trip() {
        let c = record(
            "c",
            Kind::Contact,
            &[("account_id", "d"), ("custom.partner", "d")],
        );
        assert_eq!(fields_naming(&c, "d"), ["account_id", "custom.partner"]);
        let heads = [[7u8; 32], [9u8; 32]];
        let mut t = acme("d", &[]);
        t.fields.extend(tombstone_fields("s", "olivia", 5, &heads));
        assert_eq!(merged_heads(&t), heads);
        assert_eq!(merged_into(&t), None, "a live record is not merged");
        t.deleted = true;
        assert_eq!(merged_into(&t), Some("s"));
    }
}
