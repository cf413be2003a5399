//! Lead conversion: one user action, in one transaction, offline. The lead
//! becomes an account (or joins one the user picked), a contact on it and,
//! if asked, a deal; its open and done activities move to the contact; the
//! lead is marked `converted` with links to what it became.
//!
//! Every step is an ordinary local change, pushed in the order made (the
//! account before the contact that points at it), so the relay checks
//! each as it would any edit. Two devices converting the same lead
//! offline both keep their records: the lead's `converted_*` links then
//! conflict like any concurrent edit (resolve picks one), and the extra
//! account and contact stay, as any duplicate would (docs/data-model.md).

use rusqlite::Transaction;
use serde::{Deserialize, Serialize};

use super::{create_in, documents, edit_in, update_fields, Store, Writer};
use crate::error::{Error, Result};
use crate::model::{Fields, Kind, Record, RecordId, Value};

/// How to convert a lead.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Conversion {
    /// Join this existing account instead of creating one from the lead's
    /// company.
    #[serde(default)]
    pub account_id: Option<RecordId>,
    /// Also create a deal of this name, in the pipeline's first stage.
    #[serde(default)]
    pub deal_name: Option<String>,
}

/// What a conversion made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Converted {
    /// The lead, now `converted`, with its links.
    pub lead: Record,
    pub account: Record,
    pub contact: Record,
    pub deal: Option<Record>,
    /// Activities moved from the lead to the contact.
    pub moved_activities: usize,
}

impl Store {
    /// Converts lead `id` (see the module docs). Refused, changing
    /// nothing, if it is not a live lead or was converted already.
    pub fn convert_lead(&mut self, id: &str, how: Conversion) -> Result<Converted> {
        let (tx, w) = self.begin()?;
        let converted = convert_in(&tx, &w, id, how)?;
        tx.commit()?;
        Ok(converted)
    }
}

fn convert_in(
    tx: &Transaction<'_>,
    w: &Writer<'_>,
    id: &str,
    how: Conversion,
) -> Result<Converted> {
    let lead = documents::load(tx, id)?
        .ok_or_else(|| Error::NotFound(id.to_string()))?
        .doc()
        .read()?;
    if lead.kind != Kind::Lead {
        return Err(Error::invalid(
            "id",
            id,
            &format!("is a {}, not a lead", lead.kind),
        ));
    }
    if lead.deleted {
        return Err(Error::Deleted(id.to_string()));
    }
    if lead.text("status") == Some("converted") {
        return Err(Error::invalid(
            "status",
            "converted",
            "this lead was converted already; open the contact it became",
        ));
    }
    let copy = |fields: &mut Fields, from: &str, to: &str| {
        if let Some(v) = lead.get(from).filter(|v| !v.is_null()) {
            fields.insert(to.to_string(), v.clone());
        }
    };
    let mut common = Fields::new();
    copy(&mut common, "owner", "owner");
    copy(&mut common, "territory", "territory");
    let name = lead.text("name").unwrap_or_default().trim().to_string();

    let account = match &how.account_id {
        Some(account_id) => {
            let account = documents::load(tx, account_id)?
                .ok_or_else(|| Error::NotFound(account_id.clone()))?
                .doc()
                .read()?;
            if account.kind != Kind::Account || account.deleted {
                return Err(Error::invalid(
                    "account_id",
                    account_id,
                    "is not a live account",
                ));
            }
            account
        }
        None => {
            let mut fields = common.clone();
            let company = lead.text("company").map(str::trim).unwrap_or("");
            let account_name = if company.is_empty() { &name } else { company };
            fields.insert("name".into(), Value::from(account_name));
            create_in(tx, w, None, Kind::Account, fields)?
        }
    };

    let (first, last) = split_name(&name);
    let mut fields = common.clone();
    fields.insert("account_id".into(), Value::from(account.id.as_str()));
    fields.insert("first_name".into(), Value::from(first));
    fields.insert("last_name".into(), Value::from(last));
    for path in ["email", "phone", "title"] {
        copy(&mut fields, path, path);
    }
    let contact = create_in(tx, w, None, Kind::Contact, fields)?;

    let deal = match how.deal_name.as_deref().map(str::trim) {
        Some("") => {
            return Err(Error::MissingField {
                kind: Kind::Deal,
                field: "name".into(),
            })
        }
        Some(deal_name) => {
            let mut fields = common.clone();
            fields.insert("name".into(), Value::from(deal_name));
            fields.insert("account_id".into(), Value::from(account.id.as_str()));
            fields.insert("contact_id".into(), Value::from(contact.id.as_str()));
            let first_stage = w.pipeline.stages().first().cloned().unwrap_or_default();
            fields.insert("stage".into(), Value::from(first_stage));
            Some(create_in(tx, w, None, Kind::Deal, fields)?)
        }
        None => None,
    };

    let activities: Vec<String> = tx
        .prepare_cached(
            "SELECT id FROM records WHERE kind = 'activity' AND related_to = ?1 AND deleted = 0",
        )?
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for activity in &activities {
        let to_contact = crate::model::fields([("related_to", contact.id.as_str())]);
        edit_in(tx, w, activity, |tx, w, doc, kind| {
            update_fields(tx, w, doc, kind, to_contact)
        })?;
    }

    let mut marks = crate::model::fields([
        ("status", Value::from("converted")),
        ("converted_account_id", Value::from(account.id.as_str())),
        ("converted_contact_id", Value::from(contact.id.as_str())),
        ("converted_at", Value::Int(w.meta.time)),
    ]);
    if let Some(deal) = &deal {
        marks.insert("converted_deal_id".into(), Value::from(deal.id.as_str()));
    }
    let lead = edit_in(tx, w, id, |tx, w, doc, kind| {
        update_fields(tx, w, doc, kind, marks)
    })?;
    Ok(Converted {
        lead,
        account,
        contact,
        deal,
        moved_activities: activities.len(),
    })
}

/// "Ada King Lovelace" → ("Ada King", "Lovelace"). A contact needs both, so
/// a one-word name is the last name, with "-" as the first (edit it later).
fn split_name(name: &str) -> (String, String) {
    match name.trim().rsplit_once(char::is_whitespace) {
        Some((first, last)) => (first.trim().to_string(), last.to_string()),
        None => ("-".to_string(), name.trim().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_first_and_last() {
        assert_eq!(
            split_name("Ada Lovelace"),
            ("Ada".into(), "Lovelace".into())
        );
        assert_eq!(
            split_name(" Ada King  Lovelace "),
            ("Ada King".into(), "Lovelace".into())
        );
        assert_eq!(split_name("Cher"), ("-".into(), "Cher".into()));
    }
}
