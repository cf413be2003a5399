//! The built-in fields of each kind (DESIGN §2), as data.

use super::Kind;

/// What a field holds and how it is validated and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// Short single-line text.
    Text,
    Email,
    Phone,
    Url,
    /// Integer amount in minor units (cents).
    Amount,
    /// Integer 0..=100.
    Percent,
    Latitude,
    Longitude,
    Bool,
    /// Milliseconds since the Unix epoch, stored as an Automerge timestamp.
    Timestamp,
    /// Calendar date `YYYY-MM-DD`.
    Date,
    /// ISO 4217 code, three upper-case letters.
    Currency,
    /// Id of another record, optionally of one kind.
    Ref(Option<Kind>),
    /// Any finite number (custom fields).
    Number,
    /// Any integer (custom fields).
    Integer,
    /// A stage of the configured deal pipeline.
    Stage,
    /// A value of the named picklist of the organisation configuration.
    Picklist(&'static str),
    /// One of a fixed list of values (an activity's kind, a lead's status).
    Choice(&'static [&'static str]),
    /// Long text kept as Automerge Text and merged character-wise.
    LongText,
}

/// Which full-text column a field feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchRole {
    None,
    Name,
    Email,
    Phone,
    Notes,
}

/// One built-in field of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    /// Dotted path, e.g. `address.city`.
    pub path: &'static str,
    pub ty: FieldType,
    pub required: bool,
    pub search: SearchRole,
    /// Written by an action (a lead's conversion), not typed in a form;
    /// valid in any change all the same.
    pub by_action: bool,
}

const fn f(path: &'static str, ty: FieldType) -> FieldSpec {
    FieldSpec {
        path,
        ty,
        required: false,
        search: SearchRole::None,
        by_action: false,
    }
}

const fn req(path: &'static str, ty: FieldType) -> FieldSpec {
    FieldSpec {
        required: true,
        ..f(path, ty)
    }
}

const fn searched(spec: FieldSpec, search: SearchRole) -> FieldSpec {
    FieldSpec { search, ..spec }
}

const fn by_action(spec: FieldSpec) -> FieldSpec {
    FieldSpec {
        by_action: true,
        ..spec
    }
}

use FieldType as T;
use SearchRole as S;

const ACCOUNT: &[FieldSpec] = &[
    searched(req("name", T::Text), S::Name),
    f("industry", T::Text),
    searched(f("phone", T::Phone), S::Phone),
    f("website", T::Url),
    f("address.street", T::Text),
    f("address.city", T::Text),
    f("address.postcode", T::Text),
    f("address.country", T::Text),
    f("geo.lat", T::Latitude),
    f("geo.lon", T::Longitude),
    req("owner", T::Text),
    req("territory", T::Text),
    searched(f("notes", T::LongText), S::Notes),
    // Set by a merge on the duplicate it tombstones (core merge.rs).
    by_action(f("merged_into", T::Ref(Some(Kind::Account)))),
    by_action(f("merged_at", T::Timestamp)),
    by_action(f("merged_by", T::Text)),
    by_action(f("merged_heads", T::Text)),
];

const CONTACT: &[FieldSpec] = &[
    req("account_id", T::Ref(Some(Kind::Account))),
    searched(req("first_name", T::Text), S::Name),
    searched(req("last_name", T::Text), S::Name),
    searched(f("email", T::Email), S::Email),
    searched(f("phone", T::Phone), S::Phone),
    f("title", T::Text),
    req("owner", T::Text),
    req("territory", T::Text),
    searched(f("notes", T::LongText), S::Notes),
    // Set by a merge on the duplicate it tombstones (core merge.rs).
    by_action(f("merged_into", T::Ref(Some(Kind::Contact)))),
    by_action(f("merged_at", T::Timestamp)),
    by_action(f("merged_by", T::Text)),
    by_action(f("merged_heads", T::Text)),
];

const DEAL: &[FieldSpec] = &[
    req("account_id", T::Ref(Some(Kind::Account))),
    f("contact_id", T::Ref(Some(Kind::Contact))),
    searched(req("name", T::Text), S::Name),
    req("stage", T::Stage),
    f("amount", T::Amount),
    f("currency", T::Currency),
    f("close_date", T::Date),
    f("probability", T::Percent),
    req("owner", T::Text),
    req("territory", T::Text),
    searched(f("notes", T::LongText), S::Notes),
];

const ACTIVITY: &[FieldSpec] = &[
    req("kind", T::Choice(ACTIVITY_KINDS)),
    searched(req("subject", T::Text), S::Name),
    searched(f("body", T::LongText), S::Notes),
    f("due_at", T::Timestamp),
    f("done", T::Bool),
    f("related_to", T::Ref(None)),
    f("location.lat", T::Latitude),
    f("location.lon", T::Longitude),
    // Visits (core store/visits.rs): why, then check-in and check-out.
    f("purpose", T::Text),
    by_action(f("checked_in_at", T::Timestamp)),
    by_action(f("checkin_lat", T::Latitude)),
    by_action(f("checkin_lon", T::Longitude)),
    by_action(f("checked_out_at", T::Timestamp)),
    by_action(f("checkout_lat", T::Latitude)),
    by_action(f("checkout_lon", T::Longitude)),
    by_action(f("outcome", T::Choice(VISIT_OUTCOMES))),
    req("owner", T::Text),
    req("territory", T::Text),
];

/// How a visit went (its check-out report).
pub const VISIT_OUTCOMES: &[&str] = &[
    "successful",
    "follow_up",
    "no_decision",
    "not_met",
    "cancelled",
];
/// What an activity is.
pub const ACTIVITY_KINDS: &[&str] = &["call", "meeting", "visit", "task", "note"];
/// Where a lead is: `converted` is set by conversion only.
pub const LEAD_STATUSES: &[&str] = &["new", "working", "qualified", "disqualified", "converted"];
/// Where a service case is.
pub const CASE_STATUSES: &[&str] = &["new", "open", "pending", "resolved", "closed"];
/// How urgent a case is, least first (the `case_priority` picklist's
/// first values).
pub const CASE_PRIORITIES: &[&str] = &["low", "normal", "high", "urgent"];
/// Where leads come from (the `lead_source` picklist's first values).
pub const LEAD_SOURCES: &[&str] = &["web", "phone", "event", "referral", "partner", "other"];

const LEAD: &[FieldSpec] = &[
    searched(req("name", T::Text), S::Name),
    searched(f("company", T::Text), S::Name),
    f("title", T::Text),
    searched(f("email", T::Email), S::Email),
    searched(f("phone", T::Phone), S::Phone),
    f("source", T::Picklist("lead_source")),
    req("status", T::Choice(LEAD_STATUSES)),
    // Set by conversion: what the lead became.
    by_action(f("converted_account_id", T::Ref(Some(Kind::Account)))),
    by_action(f("converted_contact_id", T::Ref(Some(Kind::Contact)))),
    by_action(f("converted_deal_id", T::Ref(Some(Kind::Deal)))),
    by_action(f("converted_at", T::Timestamp)),
    req("owner", T::Text),
    req("territory", T::Text),
    searched(f("notes", T::LongText), S::Notes),
    // Set by a merge on the duplicate it tombstones (core merge.rs).
    by_action(f("merged_into", T::Ref(Some(Kind::Lead)))),
    by_action(f("merged_at", T::Timestamp)),
    by_action(f("merged_by", T::Text)),
    by_action(f("merged_heads", T::Text)),
];

const CASE: &[FieldSpec] = &[
    searched(req("subject", T::Text), S::Name),
    f("account_id", T::Ref(Some(Kind::Account))),
    f("contact_id", T::Ref(Some(Kind::Contact))),
    searched(f("description", T::LongText), S::Notes),
    req("status", T::Choice(CASE_STATUSES)),
    req("priority", T::Picklist("case_priority")),
    f("respond_by", T::Timestamp),
    f("resolve_by", T::Timestamp),
    f("responded_at", T::Timestamp),
    f("resolved_at", T::Timestamp),
    req("owner", T::Text),
    req("territory", T::Text),
];

/// The catalogue: products and their price book entries, in the shared
/// territory, changed by the office (a write rule).
const PRODUCT: &[FieldSpec] = &[
    searched(req("sku", T::Text), S::Name),
    searched(req("name", T::Text), S::Name),
    searched(f("description", T::LongText), S::Notes),
    f("unit", T::Text),
    f("active", T::Bool),
    req("owner", T::Text),
    req("territory", T::Text),
];

const PRICE: &[FieldSpec] = &[
    req("product_id", T::Ref(Some(Kind::Product))),
    req("currency", T::Currency),
    req("unit_price", T::Amount),
    f("valid_from", T::Date),
    f("valid_to", T::Date),
    req("owner", T::Text),
    req("territory", T::Text),
];

/// An order or quote; its lines are the map `lines` (`order.rs`).
const ORDER: &[FieldSpec] = &[
    req("account_id", T::Ref(Some(Kind::Account))),
    searched(req("name", T::Text), S::Name),
    f("quote", T::Bool),
    req("status", T::Choice(super::order::ORDER_STATUSES)),
    req("currency", T::Currency),
    f("tax_percent", T::Percent),
    f("deal_id", T::Ref(Some(Kind::Deal))),
    f("visit_id", T::Ref(Some(Kind::Activity))),
    req("owner", T::Text),
    req("territory", T::Text),
    searched(f("notes", T::LongText), S::Notes),
];

/// The configuration record's own fields; its entries live in the maps
/// `stages`, `picklists` and `fields` (see `config.rs`).
const CONFIG: &[FieldSpec] = &[req("name", T::Text), req("territory", T::Text)];

pub(super) fn specs(kind: Kind) -> &'static [FieldSpec] {
    match kind {
        Kind::Account => ACCOUNT,
        Kind::Contact => CONTACT,
        Kind::Deal => DEAL,
        Kind::Activity => ACTIVITY,
        Kind::Lead => LEAD,
        Kind::Case => CASE,
        Kind::Product => PRODUCT,
        Kind::Price => PRICE,
        Kind::Order => ORDER,
        Kind::Config => CONFIG,
    }
}

/// Names of the nested maps a kind's documents hold (`address`, `geo`, ...).
pub(crate) fn nested_maps(kind: Kind) -> impl Iterator<Item = &'static str> {
    let mut seen: Vec<&'static str> = Vec::new();
    for spec in specs(kind) {
        if let Some((map, _)) = spec.path.split_once('.') {
            if !seen.contains(&map) {
                seen.push(map);
            }
        }
    }
    seen.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_owner_and_territory_required() {
        for kind in Kind::ALL {
            for name in ["owner", "territory"] {
                let spec = kind.field(name).unwrap();
                assert!(spec.required, "{kind}.{name}");
            }
        }
    }

    #[test]
    fn nested_maps_are_listed_once() {
        assert_eq!(
            nested_maps(Kind::Account).collect::<Vec<_>>(),
            ["address", "geo"]
        );
        assert_eq!(nested_maps(Kind::Contact).count(), 0);
    }
}
