//! Who may change which field, beyond what the data model allows: rules
//! checked for every change the relay receives — a device's push and an
//! office edit alike, both through `StoredDoc::receive` — after the data
//! model's own checks. A refused change is refused on its own, with the
//! rule's reason, and handled by the device as any refused change.

use serde::{Deserialize, Serialize};

use super::{Config, Kind, Record, StageOutcome, TouchedField};

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
    /// Only while the record, before the change, is a won or lost deal or
    /// an order past its draft.
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
        kind: Kind::Product,
        covers: Covered::Record,
        once_closed: false,
        at_least: Standing::Office,
        reason: "only the office changes the product catalogue",
    },
    WriteRule {
        kind: Kind::Price,
        covers: Covered::Record,
        once_closed: false,
        at_least: Standing::Office,
        reason: "only the office changes the price book",
    },
    WriteRule {
        kind: Kind::Order,
        covers: Covered::Record,
        once_closed: true,
        at_least: Standing::Office,
        reason: "a submitted order is the office's to change",
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
/// (`None`: the change creates it) against the rules in code
/// ([`WRITE_RULES`]) and those the configuration defines (retired ones
/// aside).
pub fn check_write_rules(
    config: &Config,
    kind: Kind,
    before: Option<&Record>,
    touched: &[TouchedField],
    standing: Standing,
) -> Result<()> {
    // A deal is closed once won or lost, an order once past its draft.
    let closed = match kind {
        Kind::Order => before.is_some_and(super::order::is_submitted),
        _ => before
            .and_then(Record::state)
            .is_some_and(|s| config.pipeline().outcome(s) != StageOutcome::Open),
    };
    let in_code = WRITE_RULES.iter().map(|r| {
        let covers = match r.covers {
            Covered::Fields(fields) => Some(fields.iter().map(|f| f.to_string()).collect()),
            Covered::Record => None,
        };
        (
            r.kind,
            covers,
            r.once_closed,
            r.at_least,
            r.reason.to_string(),
        )
    });
    let defined = config
        .write_rules()
        .iter()
        .filter(|r| !r.entry.retired)
        .map(|r| {
            let e = &r.entry;
            (
                r.kind,
                Some(e.fields.clone()),
                e.closed_only,
                e.at_least,
                e.reason.clone(),
            )
        });
    for (rule_kind, covers, once_closed, at_least, reason) in in_code.chain(defined) {
        if rule_kind != kind || standing >= at_least || (once_closed && !closed) {
            continue;
        }
        let field = match covers {
            None => touched.first(),
            Some(fields) if before.is_some() => touched.iter().find(|t| fields.contains(&t.path)),
            Some(_) => None,
        };
        if let Some(field) = field {
            return Err(Error::NotAllowed {
                field: field.path.clone(),
                reason,
            });
        }
    }
    Ok(())
}
