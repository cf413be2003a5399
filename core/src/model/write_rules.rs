//! Who may change which field, beyond what the data model allows: rules
//! checked for every change the relay receives — a device's push and an
//! office edit alike, both through `StoredDoc::receive` — after the data
//! model's own checks. A refused change is refused on its own, with the
//! rule's reason, and handled by the device as any refused change.

use serde::{Deserialize, Serialize};

use super::{Kind, Pipeline, Record, StageOutcome, TouchedField};

/// Which fields a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Covered {
    /// These fields, of a record that exists.
    Fields(&'static [&'static str]),
    /// The whole record, its creation included.
    Record,
}
use crate::error::{Error, Result};

/// How far a writer's say goes, least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Standing {
    Rep,
    Manager,
    Office,
    Admin,
}

/// One rule: these fields of this kind, when the record is in this state,
/// are changed only by writers of at least this standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteRule {
    pub kind: Kind,
    pub covers: Covered,
    /// Only while the record, before the change, is a won or lost deal.
    pub once_closed: bool,
    pub at_least: Standing,
    /// Said to the writer it refuses.
    pub reason: &'static str,
}

/// The rules in force.
pub const WRITE_RULES: &[WriteRule] = &[
    WriteRule {
        kind: Kind::Deal,
        covers: Covered::Fields(&["amount", "stage", "close_date", "currency"]),
        once_closed: true,
        at_least: Standing::Manager,
        reason: "only managers and the office change a won or lost deal's amount, currency, stage or close date",
    },
    WriteRule {
        kind: Kind::Config,
        covers: Covered::Record,
        once_closed: false,
        at_least: Standing::Admin,
        reason: "only admins change the organisation configuration",
    },
];

/// Checks a change that touched `touched` of a record that was `before`
/// (`None`: the change creates it) against `rules`.
pub fn check_write_rules(
    rules: &[WriteRule],
    kind: Kind,
    before: Option<&Record>,
    touched: &[TouchedField],
    standing: Standing,
    pipeline: &Pipeline,
) -> Result<()> {
    let closed = before
        .and_then(Record::state)
        .is_some_and(|s| pipeline.outcome(s) != StageOutcome::Open);
    for rule in rules
        .iter()
        .filter(|r| r.kind == kind && standing < r.at_least)
    {
        if rule.once_closed && !closed {
            continue;
        }
        let field = match rule.covers {
            Covered::Record => touched.first(),
            Covered::Fields(fields) if before.is_some() => {
                touched.iter().find(|t| fields.contains(&t.path.as_str()))
            }
            Covered::Fields(_) => None,
        };
        if let Some(field) = field {
            return Err(Error::NotAllowed {
                field: field.path.clone(),
                reason: rule.reason.to_string(),
            });
        }
    }
    Ok(())
}
