//! One change's edit of a long text, kept so it can be made again exactly.
//!
//! A change re-made on a copy that moved on since (a rebase after a
//! refusal, a retried refused change) must put its text where its author
//! put it. Diffing the text before and after the change cannot say where:
//! typing "[a1]" in front of "[a]" reads as inserting "1][a" after "[a"
//! just as well, and merged with someone else's typing at the front the two
//! come out interleaved. So the edit is kept by the characters it touched:
//! what it deleted, and what it inserted after which character, each named
//! by its Automerge cursor, which every copy sharing that history knows.

use std::collections::{HashMap, HashSet};

use automerge::{Automerge, ChangeHash, ObjId, ObjType, ReadDoc, ROOT};
use serde::{Deserialize, Serialize};

/// What one change did to long text field `field`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TextEdit {
    pub field: String,
    /// The characters it deleted.
    pub deleted: Vec<String>,
    /// What it inserted, in the order of the text.
    pub inserted: Vec<Run>,
}

/// Characters inserted together, after one character that was there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Run {
    /// The character they follow (`None`: the start of the text).
    pub after: Option<String>,
    pub text: String,
    /// Each inserted character's cursor, so a later change's edit that
    /// names them can still be placed once they are made again.
    pub ids: Vec<String>,
}

/// Characters made again under new cursors: old cursor -> new one. Kept
/// while a record's changes are re-made, one after another.
pub(crate) type Renamed = HashMap<String, String>;

/// An edit placed on the text as it is now.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Placed {
    /// The text with the edit made.
    pub text: String,
    /// Where each inserted character landed in `text`, with its old cursor.
    inserted: Vec<(usize, String)>,
}

/// The text object of root field `field` at `heads` (now when `None`).
fn text_obj(doc: &Automerge, field: &str, heads: Option<&[ChangeHash]>) -> Option<ObjId> {
    let got = match heads {
        Some(heads) => doc.get_at(ROOT, field, heads),
        None => doc.get(ROOT, field),
    };
    match got {
        Ok(Some((automerge::Value::Object(ObjType::Text), id))) => Some(id),
        _ => None,
    }
}

/// Each character of `obj` at `heads` with its cursor.
fn characters(
    doc: &Automerge,
    obj: &ObjId,
    heads: Option<&[ChangeHash]>,
) -> Option<Vec<(String, char)>> {
    let text = match heads {
        Some(heads) => doc.text_at(obj, heads),
        None => doc.text(obj),
    }
    .ok()?;
    text.chars()
        .enumerate()
        .map(|(i, c)| {
            let cursor = doc.get_cursor(obj, i, heads).ok()?;
            Some((cursor.to_string(), c))
        })
        .collect()
}

/// What change `hash` did to field `field`, if the field was a text both
/// before and after it (a text it created is all new: its value says it).
pub(crate) fn of_change(doc: &Automerge, hash: &ChangeHash, field: &str) -> Option<TextEdit> {
    let deps = doc.get_change_by_hash(hash)?.deps().to_vec();
    if deps.is_empty() {
        return None;
    }
    let after_heads = [*hash];
    let obj = text_obj(doc, field, Some(&after_heads))?;
    if text_obj(doc, field, Some(&deps)).as_ref() != Some(&obj) {
        return None;
    }
    let before = characters(doc, &obj, Some(&deps))?;
    let after = characters(doc, &obj, Some(&after_heads))?;
    let was: HashSet<&str> = before.iter().map(|(c, _)| c.as_str()).collect();
    let is: HashSet<&str> = after.iter().map(|(c, _)| c.as_str()).collect();
    let deleted = before
        .iter()
        .filter(|(c, _)| !is.contains(c.as_str()))
        .map(|(c, _)| c.clone())
        .collect();
    let mut inserted: Vec<Run> = Vec::new();
    let mut previous: Option<&str> = None;
    let mut in_run = false;
    for (cursor, ch) in &after {
        if was.contains(cursor.as_str()) {
            in_run = false;
            previous = Some(cursor);
            continue;
        }
        match inserted.last_mut() {
            Some(run) if in_run => {
                run.text.push(*ch);
                run.ids.push(cursor.clone());
            }
            _ => inserted.push(Run {
                after: previous.map(str::to_string),
                text: ch.to_string(),
                ids: vec![cursor.clone()],
            }),
        }
        in_run = true;
    }
    Some(TextEdit {
        field: field.to_string(),
        deleted,
        inserted,
    })
}

/// `edit` made on the text as `doc` holds it now, reading characters
/// re-made earlier by their new names: `None` when the text is not there
/// or a character an insertion follows is gone (then the caller merges by
/// value instead).
pub(crate) fn replay(doc: &Automerge, edit: &TextEdit, renamed: &Renamed) -> Option<Placed> {
    let obj = text_obj(doc, &edit.field, None)?;
    let now = |c: &String| renamed.get(c).cloned().unwrap_or_else(|| c.clone());
    let deleted: HashSet<String> = edit.deleted.iter().map(now).collect();
    // Each character: its cursor now, or (inserted here) its old one.
    let mut text: Vec<(Result<String, String>, char)> = characters(doc, &obj, None)?
        .into_iter()
        .filter(|(c, _)| !deleted.contains(c))
        .map(|(c, ch)| (Ok(c), ch))
        .collect();
    for run in &edit.inserted {
        let at = match &run.after {
            None => 0,
            Some(a) => {
                let a = now(a);
                text.iter().position(|(c, _)| c.as_ref() == Ok(&a))? + 1
            }
        };
        let chars = run.text.chars().zip(run.ids.iter().cloned());
        text.splice(at..at, chars.map(|(ch, id)| (Err(id), ch)));
    }
    let inserted = text
        .iter()
        .enumerate()
        .filter_map(|(i, (c, _))| c.clone().err().map(|old| (i, old)))
        .collect();
    Some(Placed {
        text: text.into_iter().map(|(_, ch)| ch).collect(),
        inserted,
    })
}

/// After `placed` was written to `field`: learns the new cursors of the
/// characters it inserted (nothing if the text is not what was placed).
pub(crate) fn learn_names(doc: &Automerge, field: &str, placed: &Placed, renamed: &mut Renamed) {
    let Some(obj) = text_obj(doc, field, None) else {
        return;
    };
    if doc.text(&obj).ok().as_deref() != Some(placed.text.as_str()) {
        return;
    }
    for (at, old) in &placed.inserted {
        if let Ok(cursor) = doc.get_cursor(&obj, *at, None) {
            renamed.insert(old.clone(), cursor.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::AutoCommit;

    fn typed(base: &str) -> (AutoCommit, ObjId) {
        let mut doc = AutoCommit::new();
        let obj = doc.put_object(ROOT, "notes", ObjType::Text).unwrap();
        doc.splice_text(&obj, 0, 0, base).unwrap();
        doc.commit();
        (doc, obj)
    }

    #[test]
    fn an_insertion_is_made_again_where_it_was_typed() {
        let (mut mine, obj) = typed("[a]");
        let mut theirs = mine.fork();
        mine.splice_text(&obj, 0, 0, "[a1]").unwrap();
        let hash = mine.commit().unwrap();
        let edit = of_change(mine.document(), &hash, "notes").unwrap();
        assert_eq!(edit.inserted.len(), 1);
        assert_eq!(
            (
                edit.inserted[0].after.as_deref(),
                edit.inserted[0].text.as_str()
            ),
            (None, "[a1]")
        );
        assert!(edit.deleted.is_empty());
        theirs.splice_text(&obj, 0, 0, "[b]").unwrap();
        theirs.commit();
        // A diff would read "1][a" after "[a" and interleave it with "[b]".
        assert_eq!(
            replay(theirs.document(), &edit, &Renamed::new())
                .map(|p| p.text)
                .as_deref(),
            Some("[a1][b][a]")
        );
    }

    #[test]
    fn deletions_and_insertions_in_the_middle_follow_their_characters() {
        let (mut mine, obj) = typed("call Bob on Monday");
        let mut theirs = mine.fork();
        mine.splice_text(&obj, 12, 6, "Friday").unwrap();
        mine.splice_text(&obj, 0, 0, "Please ").unwrap();
        let hash = mine.commit().unwrap();
        let edit = of_change(mine.document(), &hash, "notes").unwrap();
        theirs.splice_text(&obj, 5, 3, "Robert").unwrap();
        theirs.commit();
        assert_eq!(
            replay(theirs.document(), &edit, &Renamed::new())
                .map(|p| p.text)
                .as_deref(),
            Some("Please call Robert on Friday")
        );
    }

    #[test]
    fn an_insertion_after_a_character_someone_deleted_is_not_guessed() {
        let (mut mine, obj) = typed("abc");
        let mut theirs = mine.fork();
        mine.splice_text(&obj, 2, 0, "X").unwrap();
        let hash = mine.commit().unwrap();
        let edit = of_change(mine.document(), &hash, "notes").unwrap();
        theirs.splice_text(&obj, 1, 1, "").unwrap();
        theirs.commit();
        assert_eq!(replay(theirs.document(), &edit, &Renamed::new()), None);
    }

    #[test]
    fn a_text_the_change_created_has_no_edit() {
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "name", "x").unwrap();
        doc.commit();
        let obj = doc.put_object(ROOT, "notes", ObjType::Text).unwrap();
        doc.splice_text(&obj, 0, 0, "new").unwrap();
        let hash = doc.commit().unwrap();
        assert_eq!(of_change(doc.document(), &hash, "notes"), None);
    }

    #[test]
    fn a_later_edit_follows_characters_an_earlier_one_made_again() {
        let (mut mine, obj) = typed("x");
        let mut theirs = mine.fork();
        mine.splice_text(&obj, 1, 0, "hello").unwrap();
        let first = mine.commit().unwrap();
        mine.splice_text(&obj, 6, 0, " world").unwrap();
        let second = mine.commit().unwrap();
        let first = of_change(mine.document(), &first, "notes").unwrap();
        let second = of_change(mine.document(), &second, "notes").unwrap();
        theirs.splice_text(&obj, 1, 0, "y").unwrap();
        theirs.commit();
        let mut renamed = Renamed::new();
        // The second names characters of the first, which are not there yet.
        assert_eq!(replay(theirs.document(), &second, &renamed), None);
        let placed = replay(theirs.document(), &first, &renamed).unwrap();
        theirs.update_text(&obj, &placed.text).unwrap();
        theirs.commit();
        learn_names(theirs.document(), "notes", &placed, &mut renamed);
        assert_eq!(renamed.len(), 5);
        let placed = replay(theirs.document(), &second, &renamed).unwrap();
        assert_eq!(placed.text, "xhello worldy");
    }
}
