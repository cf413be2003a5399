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

use super::{create_in, edit_in, update_fields, Store, Writer};
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

/// What a conversion makes, decided once for every store: the device
/// applies it as local edits, the relay's office as office edits.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversionPlan {
    /// The account to create, unless the lead joins an existing one.
    pub account: Option<(RecordId, Fields)>,
    pub account_id: RecordId,
    pub contact: (RecordId, Fields),
    pub deal: Option<(RecordId, Fields)>,
    /// Each activity of the lead, moved to the contact.
    pub activities: Vec<(RecordId, Fields)>,
    /// What the lead gets: `converted`, the links and the time.
    pub lead: Fields,
}

/// Plans converting `lead` (see the module docs): into `existing`, the
/// account the user picked, if any; a deal (if asked) in `first_stage`;
/// `activities` (the lead's live ones) moved. Refused for a record that is
/// not a live, unconverted lead, an `existing` that is not a live account,
/// or a blank deal name.
pub fn plan_conversion(
    lead: &Record,
    how: &Conversion,
    existing: Option<&Record>,
    first_stage: &str,
    activities: Vec<RecordId>,
    now: i64,
) -> Result<ConversionPlan> {
    if lead.kind != Kind::Lead {
        return Err(Error::invalid(
            "id",
            &lead.id,
            &format!("is a {}, not a lead", lead.kind),
        ));
    }
    if lead.deleted {
        return Err(Error::Deleted(lead.id.clone()));
    }
    if lead.text("status") == Some("converted") {
        return Err(Error::invalid(
            "status",
            "converted",
            "this lead was converted already; open the contact it became",
        ));
    }
    if let Some(account) = existing {
        if account.kind != Kind::Account || account.deleted {
            return Err(Error::invalid(
                "account_id",
                &account.id,
                "is not a live account",
            ));
        }
    }
    let deal_name = match how.deal_name.as_deref().map(str::trim) {
        Some("") => {
            return Err(Error::MissingField {
                kind: Kind::Deal,
                field: "name".into(),
            })
        }
        other => other,
    };
    let new_id = || uuid::Uuid::now_v7().to_string();
    let copy = |fields: &mut Fields, from: &str, to: &str| {
        if let Some(v) = lead.get(from).filter(|v| !v.is_null()) {
            fields.insert(to.to_string(), v.clone());
        }
    };
    let mut common = Fields::new();
    copy(&mut common, "owner", "owner");
    copy(&mut common, "territory", "territory");
    let name = lead.text("name").unwrap_or_default().trim().to_string();

    let (account, account_id) = match existing {
        Some(a) => (None, a.id.clone()),
        None => {
            let mut fields = common.clone();
            let company = lead.text("company").map(str::trim).unwrap_or("");
            let account_name = if company.is_empty() { &name } else { company };
            fields.insert("name".into(), Value::from(account_name));
            let id = new_id();
            (Some((id.clone(), fields)), id)
        }
    };

    let (first, last) = split_name(&name);
    let mut contact = common.clone();
    contact.insert("account_id".into(), Value::from(account_id.as_str()));
    contact.insert("first_name".into(), Value::from(first));
    contact.insert("last_name".into(), Value::from(last));
    for path in ["email", "phone", "title"] {
        copy(&mut contact, path, path);
    }
    let contact_id = new_id();

    let deal = deal_name.map(|deal_name| {
        let mut fields = common.clone();
        fields.insert("name".into(), Value::from(deal_name));
        fields.insert("account_id".into(), Value::from(account_id.as_str()));
        fields.insert("contact_id".into(), Value::from(contact_id.as_str()));
        fields.insert("stage".into(), Value::from(first_stage));
        (new_id(), fields)
    });

    let activities = activities
        .into_iter()
        .map(|id| {
            let fields = crate::model::fields([("related_to", contact_id.as_str())]);
            (id, fields)
        })
        .collect();
    let mut marks = crate::model::fields([
        ("status", Value::from("converted")),
        ("converted_account_id", Value::from(account_id.as_str())),
        ("converted_contact_id", Value::from(contact_id.as_str())),
        ("converted_at", Value::Int(now)),
    ]);
    if let Some((deal_id, _)) = &deal {
        marks.insert("converted_deal_id".into(), Value::from(deal_id.as_str()));
    }
    Ok(ConversionPlan {
        account,
        account_id,
        contact: (contact_id, contact),
        deal,
        activities,
        lead: marks,
    })
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

use super::documents::read_existing as read;

fn convert_in(
    tx: &Transaction<'_>,
    w: &Writer<'_>,
    id: &str,
    how: Conversion,
) -> Result<Converted> {
    let lead = read(tx, id)?;
    let existing = how.account_id.as_deref().map(|a| read(tx, a)).transpose()?;
    let activities: Vec<String> = tx
        .prepare_cached(
            "SELECT id FROM records WHERE kind = 'activity' AND related_to = ?1 AND deleted = 0",
        )?
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let first_stage = w
        .config
        .pipeline()
        .active_stages()
        .next()
        .cloned()
        .unwrap_or_default();
    let plan = plan_conversion(
        &lead,
        &how,
        existing.as_ref(),
        &first_stage,
        activities,
        w.meta.time,
    )?;
    let account = match (existing, plan.account) {
        (Some(existing), _) => existing,
        (None, Some((account_id, fields))) => {
            create_in(tx, w, Some(&account_id), Kind::Account, fields)?
        }
        (None, None) => return Err(Error::NotFound(plan.account_id)),
    };
    let (contact_id, fields) = plan.contact;
    let contact = create_in(tx, w, Some(&contact_id), Kind::Contact, fields)?;
    let deal = match plan.deal {
        Some((deal_id, fields)) => Some(create_in(tx, w, Some(&deal_id), Kind::Deal, fields)?),
        None => None,
    };
    let moved_activities = plan.activities.len();
    for (activity, fields) in plan.activities {
        edit_in(tx, w, &activity, |tx, w, doc, kind| {
            update_fields(tx, w, doc, kind, fields)
        })?;
    }
    let marks = plan.lead;
    let lead = edit_in(tx, w, id, |tx, w, doc, kind| {
        update_fields(tx, w, doc, kind, marks)
    })?;
    Ok(Converted {
        lead,
        account,
        contact,
        deal,
        moved_activities,
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
