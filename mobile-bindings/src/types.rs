//! FFI-shaped types and their conversions from core types. Reads come back
//! as one typed record per kind; writes take a map of dotted field paths to
//! values, validated by the core (see docs/data-model.md).

use std::collections::HashMap;

use fieldcrm_core as core;
use fieldcrm_core::{Kind, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum RecordKind {
    Account,
    Contact,
    Deal,
    Activity,
    Lead,
    Case,
    /// The catalogue (every device holds it; the office changes it).
    Product,
    Price,
    /// An order or quote with its lines (`orderTotals`, `addOrderLine`).
    Order,
    /// The organisation configuration's own record (read it with
    /// `configuration()`; admins change it in the office).
    Configuration,
}

impl From<RecordKind> for Kind {
    fn from(k: RecordKind) -> Self {
        match k {
            RecordKind::Account => Kind::Account,
            RecordKind::Contact => Kind::Contact,
            RecordKind::Deal => Kind::Deal,
            RecordKind::Activity => Kind::Activity,
            RecordKind::Lead => Kind::Lead,
            RecordKind::Case => Kind::Case,
            RecordKind::Product => Kind::Product,
            RecordKind::Price => Kind::Price,
            RecordKind::Order => Kind::Order,
            RecordKind::Configuration => Kind::Config,
        }
    }
}

impl From<Kind> for RecordKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Account => RecordKind::Account,
            Kind::Contact => RecordKind::Contact,
            Kind::Deal => RecordKind::Deal,
            Kind::Activity => RecordKind::Activity,
            Kind::Lead => RecordKind::Lead,
            Kind::Case => RecordKind::Case,
            Kind::Product => RecordKind::Product,
            Kind::Price => RecordKind::Price,
            Kind::Order => RecordKind::Order,
            Kind::Config => RecordKind::Configuration,
        }
    }
}

/// A field value. `Null` clears an optional field.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum FieldValue {
    Null,
    Bool { value: bool },
    Int { value: i64 },
    Float { value: f64 },
    Text { value: String },
}

impl From<FieldValue> for Value {
    fn from(v: FieldValue) -> Self {
        match v {
            FieldValue::Null => Value::Null,
            FieldValue::Bool { value } => Value::Bool(value),
            FieldValue::Int { value } => Value::Int(value),
            FieldValue::Float { value } => Value::Float(value),
            FieldValue::Text { value } => Value::Text(value),
        }
    }
}

impl From<Value> for FieldValue {
    fn from(v: Value) -> Self {
        match v {
            Value::Null => FieldValue::Null,
            Value::Bool(value) => FieldValue::Bool { value },
            Value::Int(value) => FieldValue::Int { value },
            Value::Float(value) => FieldValue::Float { value },
            Value::Text(value) => FieldValue::Text { value },
        }
    }
}

/// Duplicate rules with the app's default country code for phones.
pub fn match_rules(default_country_code: Option<String>) -> core::duplicates::MatchRules {
    core::duplicates::MatchRules {
        default_country_code: default_country_code.filter(|c| !c.trim().is_empty()),
        ..Default::default()
    }
}

pub fn to_fields(fields: HashMap<String, FieldValue>) -> core::Fields {
    fields.into_iter().map(|(k, v)| (k, v.into())).collect()
}

/// What every record has.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct RecordMeta {
    pub id: String,
    pub deleted: bool,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub created_by: String,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Address {
    pub street: Option<String>,
    pub city: Option<String>,
    pub postcode: Option<String>,
    pub country: Option<String>,
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Account {
    pub meta: RecordMeta,
    pub name: String,
    pub industry: Option<String>,
    pub phone: Option<String>,
    pub website: Option<String>,
    pub address: Address,
    pub geo: Option<GeoPoint>,
    pub owner: String,
    pub territory: String,
    pub notes: String,
    pub custom: HashMap<String, FieldValue>,
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Contact {
    pub meta: RecordMeta,
    pub account_id: String,
    pub first_name: String,
    pub last_name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub title: Option<String>,
    pub owner: String,
    pub territory: String,
    pub notes: String,
    pub custom: HashMap<String, FieldValue>,
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Deal {
    pub meta: RecordMeta,
    pub account_id: String,
    pub contact_id: Option<String>,
    pub name: String,
    pub stage: String,
    /// Minor units (cents).
    pub amount: Option<i64>,
    pub currency: Option<String>,
    /// `YYYY-MM-DD`.
    pub close_date: Option<String>,
    pub probability: Option<i64>,
    pub owner: String,
    pub territory: String,
    pub notes: String,
    pub custom: HashMap<String, FieldValue>,
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Activity {
    pub meta: RecordMeta,
    /// call, meeting, visit, task or note.
    pub activity_kind: String,
    pub subject: String,
    pub body: String,
    pub due_at: Option<i64>,
    pub done: bool,
    pub related_to: Option<String>,
    pub location: Option<GeoPoint>,
    /// A visit's purpose, check-in and check-out (`checkIn`, `checkOut`).
    pub purpose: Option<String>,
    pub checked_in_at: Option<i64>,
    pub check_in_position: Option<GeoPoint>,
    pub checked_out_at: Option<i64>,
    pub check_out_position: Option<GeoPoint>,
    /// How the visit went: successful, follow_up, no_decision, not_met, cancelled.
    pub outcome: Option<String>,
    pub owner: String,
    pub territory: String,
    pub custom: HashMap<String, FieldValue>,
}

/// A record of any kind, with every field by its dotted path
/// (`address.city`, `custom.tier`): what an app shows for a kind it has
/// no typed record for (leads, cases, and kinds to come).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct GenericRecord {
    pub meta: RecordMeta,
    pub kind: RecordKind,
    /// The record's display name (a contact's full name, a case's subject).
    pub name: String,
    pub fields: HashMap<String, FieldValue>,
}

impl From<&core::Record> for GenericRecord {
    fn from(r: &core::Record) -> Self {
        GenericRecord {
            meta: Read(r).meta(),
            kind: r.kind.into(),
            name: r.display_name(),
            fields: r
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into()))
                .collect(),
        }
    }
}

/// A record that may be the same as the one checked (`findDuplicates`).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct DuplicateCandidate {
    pub record: GenericRecord,
    /// 0..1: how sure.
    pub score: f64,
    /// Each reason in words: "same email", "similar names (94% alike) at the same account".
    pub evidence: Vec<String>,
}

impl From<core::duplicates::Candidate> for DuplicateCandidate {
    fn from(c: core::duplicates::Candidate) -> Self {
        DuplicateCandidate {
            record: (&c.record).into(),
            score: c.why.score,
            evidence: c.why.evidence,
        }
    }
}

/// How to convert a lead (`convertLead`).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct LeadConversion {
    /// Join this existing account instead of creating one from the lead's company.
    #[uniffi(default = None)]
    pub account_id: Option<String>,
    /// Also create a deal of this name, in the pipeline's first stage.
    #[uniffi(default = None)]
    pub deal_name: Option<String>,
}

impl From<LeadConversion> for core::Conversion {
    fn from(c: LeadConversion) -> Self {
        core::Conversion {
            account_id: c.account_id,
            deal_name: c.deal_name,
        }
    }
}

/// What a lead became.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ConvertedLead {
    pub lead: GenericRecord,
    pub account: Account,
    pub contact: Contact,
    pub deal: Option<Deal>,
    pub moved_activities: u64,
}

impl From<core::Converted> for ConvertedLead {
    fn from(c: core::Converted) -> Self {
        ConvertedLead {
            lead: (&c.lead).into(),
            account: account(&c.account),
            contact: contact(&c.contact),
            deal: c.deal.as_ref().map(deal),
            moved_activities: c.moved_activities as u64,
        }
    }
}

/// A record of any kind: typed for accounts, contacts, deals and
/// activities; `Other` (every field by path) for the rest.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum CrmRecord {
    Account { account: Account },
    Contact { contact: Contact },
    Deal { deal: Deal },
    Activity { activity: Activity },
    Other { record: GenericRecord },
}

/// Field access on a core record, for the conversions below.
struct Read<'a>(&'a core::Record);

impl Read<'_> {
    fn opt(&self, path: &str) -> Option<String> {
        self.0.text(path).map(String::from)
    }
    fn text(&self, path: &str) -> String {
        self.opt(path).unwrap_or_default()
    }
    fn int(&self, path: &str) -> Option<i64> {
        self.0.get(path).and_then(Value::as_int)
    }
    fn float(&self, path: &str) -> Option<f64> {
        match self.0.get(path) {
            Some(Value::Float(x)) => Some(*x),
            Some(Value::Int(i)) => Some(*i as f64),
            _ => None,
        }
    }
    fn point(&self, map: &str) -> Option<GeoPoint> {
        self.point_at(&format!("{map}.lat"), &format!("{map}.lon"))
    }
    fn point_at(&self, lat: &str, lon: &str) -> Option<GeoPoint> {
        Some(GeoPoint {
            lat: self.float(lat)?,
            lon: self.float(lon)?,
        })
    }
    fn meta(&self) -> RecordMeta {
        RecordMeta {
            id: self.0.id.clone(),
            deleted: self.0.deleted,
            created_at: self.0.created_at,
            created_by: self.0.created_by.clone(),
            updated_at: self.0.updated_at,
        }
    }
    fn custom(&self) -> HashMap<String, FieldValue> {
        self.0
            .fields
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    k.strip_prefix(core::CUSTOM_PREFIX)?.to_string(),
                    v.clone().into(),
                ))
            })
            .collect()
    }
}

pub fn account(r: &core::Record) -> Account {
    let f = Read(r);
    Account {
        meta: f.meta(),
        name: f.text("name"),
        industry: f.opt("industry"),
        phone: f.opt("phone"),
        website: f.opt("website"),
        address: Address {
            street: f.opt("address.street"),
            city: f.opt("address.city"),
            postcode: f.opt("address.postcode"),
            country: f.opt("address.country"),
        },
        geo: f.point("geo"),
        owner: f.text("owner"),
        territory: f.text("territory"),
        notes: f.text("notes"),
        custom: f.custom(),
    }
}

pub fn contact(r: &core::Record) -> Contact {
    let f = Read(r);
    Contact {
        meta: f.meta(),
        account_id: f.text("account_id"),
        first_name: f.text("first_name"),
        last_name: f.text("last_name"),
        email: f.opt("email"),
        phone: f.opt("phone"),
        title: f.opt("title"),
        owner: f.text("owner"),
        territory: f.text("territory"),
        notes: f.text("notes"),
        custom: f.custom(),
    }
}

pub fn deal(r: &core::Record) -> Deal {
    let f = Read(r);
    Deal {
        meta: f.meta(),
        account_id: f.text("account_id"),
        contact_id: f.opt("contact_id"),
        name: f.text("name"),
        stage: f.text("stage"),
        amount: f.int("amount"),
        currency: f.opt("currency"),
        close_date: f.opt("close_date"),
        probability: f.int("probability"),
        owner: f.text("owner"),
        territory: f.text("territory"),
        notes: f.text("notes"),
        custom: f.custom(),
    }
}

pub fn activity(r: &core::Record) -> Activity {
    let f = Read(r);
    Activity {
        meta: f.meta(),
        activity_kind: f.text("kind"),
        subject: f.text("subject"),
        body: f.text("body"),
        due_at: f.int("due_at"),
        done: matches!(r.get("done"), Some(Value::Bool(true))),
        related_to: f.opt("related_to"),
        location: f.point("location"),
        purpose: f.opt("purpose"),
        checked_in_at: f.int("checked_in_at"),
        check_in_position: f.point_at("checkin_lat", "checkin_lon"),
        checked_out_at: f.int("checked_out_at"),
        check_out_position: f.point_at("checkout_lat", "checkout_lon"),
        outcome: f.opt("outcome"),
        owner: f.text("owner"),
        territory: f.text("territory"),
        custom: f.custom(),
    }
}

impl From<&core::Record> for CrmRecord {
    fn from(r: &core::Record) -> Self {
        match r.kind {
            Kind::Account => CrmRecord::Account {
                account: account(r),
            },
            Kind::Contact => CrmRecord::Contact {
                contact: contact(r),
            },
            Kind::Deal => CrmRecord::Deal { deal: deal(r) },
            Kind::Activity => CrmRecord::Activity {
                activity: activity(r),
            },
            Kind::Lead | Kind::Case | Kind::Config | Kind::Product | Kind::Price | Kind::Order => {
                CrmRecord::Other { record: r.into() }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum SortField {
    Name,
    UpdatedAt,
    CreatedAt,
    Amount,
    CloseDate,
    DueAt,
    Stage,
}

/// A list filter on one field: records whose `path` holds exactly `value`.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct FieldEquals {
    pub path: String,
    pub value: String,
}

/// Filters for `list`; every field has a default, so `ListFilter()` lists
/// the first 50 live records of every kind by name, and
/// `ListFilter(kind = DEAL, stage = "won")` narrows it. Unset filters
/// match everything.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ListFilter {
    #[uniffi(default = None)]
    pub kind: Option<RecordKind>,
    /// Only these records: a list screen looks up the names of the
    /// accounts its rows reference in one call.
    #[uniffi(default = None)]
    pub ids: Option<Vec<String>>,
    #[uniffi(default = None)]
    pub owner: Option<String>,
    #[uniffi(default = [])]
    pub territories: Vec<String>,
    #[uniffi(default = None)]
    pub account_id: Option<String>,
    /// Activities related to this record.
    #[uniffi(default = None)]
    pub related_to: Option<String>,
    /// Activities about this record or a record that belongs to it (an
    /// account's contacts and deals): an account's whole timeline.
    #[uniffi(default = None)]
    pub about: Option<String>,
    /// A deal's stage, or a lead's or case's status.
    #[uniffi(default = None)]
    pub stage: Option<String>,
    /// Fields (dotted paths) that must hold exactly these texts, e.g.
    /// `FieldEquals("priority", "high")` or `FieldEquals("custom.tier", "gold")`.
    #[uniffi(default = [])]
    pub field_is: Vec<FieldEquals>,
    #[uniffi(default = None)]
    pub updated_since: Option<i64>,
    #[uniffi(default = None)]
    pub due_before: Option<i64>,
    #[uniffi(default = false)]
    pub include_deleted: bool,
    /// Only activities not done and cases neither resolved nor closed.
    #[uniffi(default = false)]
    pub not_done: bool,
    #[uniffi(default = false)]
    pub only_conflicts: bool,
    /// By name when unset.
    #[uniffi(default = None)]
    pub sort: Option<SortField>,
    #[uniffi(default = false)]
    pub descending: bool,
    /// 1 to 1000.
    #[uniffi(default = 50)]
    pub limit: u32,
    #[uniffi(default = 0)]
    pub offset: u32,
}

impl From<ListFilter> for core::ListQuery {
    fn from(f: ListFilter) -> Self {
        core::ListQuery {
            kind: f.kind.map(Into::into),
            ids: f.ids,
            owner: f.owner,
            territories: f.territories,
            account_id: f.account_id,
            related_to: f.related_to,
            about: f.about,
            stage: f.stage,
            field_is: f.field_is.into_iter().map(|e| (e.path, e.value)).collect(),
            updated_since: f.updated_since,
            due_before: f.due_before,
            include_deleted: f.include_deleted,
            not_done: f.not_done,
            only_conflicts: f.only_conflicts,
            sort: match f.sort.unwrap_or(SortField::Name) {
                SortField::Name => core::SortBy::Name,
                SortField::UpdatedAt => core::SortBy::UpdatedAt,
                SortField::CreatedAt => core::SortBy::CreatedAt,
                SortField::Amount => core::SortBy::Amount,
                SortField::CloseDate => core::SortBy::CloseDate,
                SortField::DueAt => core::SortBy::DueAt,
                SortField::Stage => core::SortBy::Stage,
            },
            descending: f.descending,
            limit: f.limit as usize,
            offset: f.offset as usize,
        }
    }
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct RecordPage {
    pub records: Vec<CrmRecord>,
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct StageSummary {
    pub stage: String,
    pub count: u64,
    /// Minor units by currency ("" where none is set).
    pub amounts: HashMap<String, i64>,
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct AccountOverview {
    pub account: Account,
    pub contacts: Vec<Contact>,
    pub deals: Vec<Deal>,
    pub activities: Vec<Activity>,
}

impl From<core::AccountOverview> for AccountOverview {
    fn from(o: core::AccountOverview) -> Self {
        AccountOverview {
            account: account(&o.account),
            contacts: o.contacts.iter().map(contact).collect(),
            deals: o.deals.iter().map(deal).collect(),
            activities: o.activities.iter().map(activity).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct FieldChange {
    pub field: String,
    pub old: FieldValue,
    pub new: FieldValue,
}

/// One change of a record: who, when, from which device, what.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct HistoryEntry {
    pub change: String,
    pub time: i64,
    pub user: String,
    /// The Automerge actor id (hex) the change was made with.
    pub actor: String,
    /// The id of the device that made the change: this device's own, or as
    /// the relay reported it; `null` until a sync has said.
    pub device: Option<String>,
    pub fields: Vec<FieldChange>,
}

impl From<core::HistoryEntry> for HistoryEntry {
    fn from(h: core::HistoryEntry) -> Self {
        HistoryEntry {
            change: h.change,
            time: h.time,
            user: h.user,
            actor: h.actor,
            device: h.device,
            fields: h.fields.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<core::FieldChange> for FieldChange {
    fn from(f: core::FieldChange) -> Self {
        FieldChange {
            field: f.field,
            old: f.old.into(),
            new: f.new.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct ConflictValue {
    pub value: FieldValue,
    pub user: String,
    pub actor: String,
    pub time: i64,
}

/// A field with competing values; `values[0]` is the one shown now.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Conflict {
    pub field: String,
    pub values: Vec<ConflictValue>,
}

impl From<core::Conflict> for Conflict {
    fn from(c: core::Conflict) -> Self {
        Conflict {
            field: c.field,
            values: c
                .values
                .into_iter()
                .map(|v| ConflictValue {
                    value: v.value.into(),
                    user: v.user,
                    actor: v.actor,
                    time: v.time,
                })
                .collect(),
        }
    }
}

/// Sync totals so far (reported after every round and at the end).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct SyncStatus {
    pub rounds: u32,
    pub pushed: u64,
    pub acked: u64,
    /// Changes the relay refused that stay refused (see `refusedChanges`).
    pub rejected: u64,
    /// Changes the relay holds for an office user's review.
    pub held: u64,
    /// Records reset to the relay's copy, later edits re-made on top.
    pub rebased: u64,
    pub received_changes: u64,
    pub received_snapshots: u64,
    pub evicted: u64,
    /// Own changes queued again because the relay was restored from a
    /// backup (it acknowledges those it still has).
    pub requeued: u64,
    pub outbox_pending: u64,
    pub cursor: u64,
    pub more: bool,
}

impl From<&core::SyncProgress> for SyncStatus {
    fn from(p: &core::SyncProgress) -> Self {
        SyncStatus {
            rounds: p.round as u32,
            pushed: p.total.pushed as u64,
            acked: p.total.acked as u64,
            rejected: p.total.rejected as u64,
            held: p.total.held as u64,
            rebased: p.total.rebased as u64,
            received_changes: p.total.changes as u64,
            received_snapshots: p.total.snapshots as u64,
            evicted: p.total.evicted as u64,
            requeued: p.total.requeued as u64,
            outbox_pending: p.outbox_pending as u64,
            cursor: p.cursor,
            more: p.total.more,
        }
    }
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct OutboxStatus {
    /// Waiting to be sent.
    pub pending: u64,
    /// Held by the relay for an office user's review (sent again at every sync).
    pub held: u64,
    /// Refused: kept until retried or discarded (`refusedChanges`).
    pub rejected: u64,
}

/// What happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ChangeKind {
    Created,
    Updated,
    Deleted,
    Restored,
    /// Gone from this device (it left the user's territories).
    Evicted,
}

/// A record one write changed.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct RecordChange {
    pub id: String,
    pub kind: RecordKind,
    pub change: ChangeKind,
    /// Whether a field of it holds competing values now.
    pub conflicted: bool,
}

impl From<&core::RecordChange> for RecordChange {
    fn from(c: &core::RecordChange) -> Self {
        RecordChange {
            id: c.id.clone(),
            kind: c.kind.into(),
            change: match c.change {
                core::ChangeKind::Created => ChangeKind::Created,
                core::ChangeKind::Updated => ChangeKind::Updated,
                core::ChangeKind::Deleted => ChangeKind::Deleted,
                core::ChangeKind::Restored => ChangeKind::Restored,
                core::ChangeKind::Evicted => ChangeKind::Evicted,
            },
            conflicted: c.conflicted,
        }
    }
}

/// How background sync stands.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum SyncState {
    /// Up to date; `pending` local changes made since wait to be sent.
    Idle {
        pending: u64,
    },
    Syncing,
    /// The relay cannot be reached or answered with an error; retried in `retry_in_ms`.
    Offline {
        reason: String,
        retry_in_ms: u64,
    },
    /// The relay no longer accepts the sign-in; nothing was deleted. Sign in
    /// again (`login`) and `startSync` again.
    SignedOut {
        reason: String,
    },
    Stopped,
}

impl From<&core::SyncState> for SyncState {
    fn from(s: &core::SyncState) -> Self {
        match s {
            core::SyncState::Idle { pending } => SyncState::Idle {
                pending: *pending as u64,
            },
            core::SyncState::Syncing => SyncState::Syncing,
            core::SyncState::Offline {
                reason,
                retry_in_ms,
            } => SyncState::Offline {
                reason: reason.clone(),
                retry_in_ms: *retry_in_ms,
            },
            core::SyncState::SignedOut { reason } => SyncState::SignedOut {
                reason: reason.clone(),
            },
            core::SyncState::Stopped => SyncState::Stopped,
        }
    }
}

/// A local change the relay refused. The record itself is as the relay has
/// it; this keeps what the change meant to do, until the user retries or
/// discards it.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct RefusedChange {
    /// Pass it to `retryRefused` or `discardRefused`.
    pub id: i64,
    pub record_id: String,
    /// `None` when what it did is not known.
    pub kind: Option<RecordKind>,
    /// It created the record.
    pub creates: bool,
    /// The fields it set, from what to what (the tombstone as `deleted`).
    pub fields: Vec<FieldChange>,
    /// Why, in words to show the user.
    pub reason: String,
    /// The refusal's code (docs/protocol.md), e.g. `invalid_value`, `discarded`.
    pub code: String,
    /// The field the refusal is about, when it names one.
    pub field: Option<String>,
    /// When the device learned of it (ms since the epoch).
    pub refused_at: Option<i64>,
}

impl From<core::RefusedChange> for RefusedChange {
    fn from(r: core::RefusedChange) -> Self {
        RefusedChange {
            id: r.id,
            record_id: r.record_id,
            kind: r.kind.map(Into::into),
            creates: r.creates,
            fields: r.fields.into_iter().map(Into::into).collect(),
            reason: r.reason,
            code: r.code,
            field: r.field,
            refused_at: r.refused_at,
        }
    }
}

/// The organisation configuration as this device last received it: what
/// forms offer and what the core validates against (`configuration()`).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct OrgConfiguration {
    /// Deal stages in order, retired ones included (deals may sit in them).
    pub stages: Vec<StageInfo>,
    pub picklists: Vec<Picklist>,
    /// Custom fields of every kind, in order, retired ones included.
    pub custom_fields: Vec<CustomFieldInfo>,
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct StageInfo {
    pub name: String,
    /// "open", "won" or "lost".
    pub outcome: String,
    /// Percent a deal in it counts at.
    pub probability: i64,
    /// Offered to no-one, still valid.
    pub retired: bool,
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Picklist {
    pub name: String,
    pub values: Vec<PicklistValue>,
}

#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct PicklistValue {
    /// What the record stores.
    pub value: String,
    /// What a form shows.
    pub label: String,
    pub retired: bool,
}

/// One custom field: set it as `custom.<name>` in `create`/`update`.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct CustomFieldInfo {
    pub kind: RecordKind,
    pub name: String,
    /// The record path: `custom.<name>`.
    pub path: String,
    pub label: String,
    /// text, number, integer, money, date, boolean, picklist or reference.
    pub field_type: String,
    /// The picklist a picklist field takes its values from.
    pub picklist: Option<String>,
    /// The kind a reference field points at (`None`: any).
    pub refers_to: Option<RecordKind>,
    pub required: bool,
    pub searchable: bool,
    pub retired: bool,
}

impl From<&core::Config> for OrgConfiguration {
    fn from(c: &core::Config) -> Self {
        let pipeline = c.pipeline();
        OrgConfiguration {
            stages: pipeline
                .stages()
                .iter()
                .map(|s| StageInfo {
                    name: s.clone(),
                    outcome: match pipeline.outcome(s) {
                        core::StageOutcome::Open => "open",
                        core::StageOutcome::Won => "won",
                        core::StageOutcome::Lost => "lost",
                    }
                    .into(),
                    probability: pipeline.probability(s),
                    retired: pipeline.is_retired(s),
                })
                .collect(),
            picklists: c
                .picklists()
                .iter()
                .map(|(name, values)| Picklist {
                    name: name.clone(),
                    values: values
                        .iter()
                        .map(|v| PicklistValue {
                            value: v.value.clone(),
                            label: v.label.clone(),
                            retired: v.retired,
                        })
                        .collect(),
                })
                .collect(),
            custom_fields: c
                .custom_fields()
                .iter()
                .map(|f| CustomFieldInfo {
                    kind: f.kind.into(),
                    name: f.name.clone(),
                    path: f.path(),
                    label: f.entry.label.clone(),
                    field_type: f.entry.ty.as_str().into(),
                    picklist: f.entry.picklist.clone(),
                    refers_to: f.entry.refers_to.map(Into::into),
                    required: f.entry.required,
                    searchable: f.entry.searchable,
                    retired: f.entry.retired,
                })
                .collect(),
        }
    }
}

/// A file on a record (`attachments`); its bytes are a blob named by
/// `sha256` (`blob`).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct AttachmentView {
    pub attachment_id: String,
    pub name: String,
    pub media_type: String,
    pub size: u64,
    pub sha256: String,
    pub added_by: String,
    /// ms since the epoch.
    pub added_at: i64,
    pub caption: Option<String>,
    /// A small JPEG (longest side 128 px) of a picture, made by the device
    /// that added it: here before the file is, for lists.
    pub thumbnail: Option<Vec<u8>>,
}

impl AttachmentView {
    pub(crate) fn new(id: String, a: core::Attachment) -> Self {
        AttachmentView {
            thumbnail: a.thumbnail_jpeg(),
            attachment_id: id,
            name: a.name,
            media_type: a.media_type,
            size: a.size,
            sha256: a.sha256,
            added_by: a.added_by,
            added_at: a.added_at,
            caption: a.caption,
        }
    }
}

/// Which way a file moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum TransferDirection {
    Upload,
    Download,
}

/// A chunk of a file's upload or download moved (`BlobListener`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct BlobTransfer {
    pub sha256: String,
    pub direction: TransferDirection,
    /// Bytes the relay (upload) or this device (download) holds so far.
    pub done: u64,
    pub total: u64,
}

impl From<&core::BlobProgress> for BlobTransfer {
    fn from(p: &core::BlobProgress) -> Self {
        BlobTransfer {
            sha256: p.sha256.clone(),
            direction: match p.direction {
                core::BlobDirection::Upload => TransferDirection::Upload,
                core::BlobDirection::Download => TransferDirection::Download,
            },
            done: p.done,
            total: p.total,
        }
    }
}

/// One line of an order (`orderTotals`).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct OrderLineView {
    pub line_id: String,
    pub product_id: String,
    pub quantity: f64,
    /// Minor units, from the price book when the line was added.
    pub unit_price: i64,
    pub discount: f64,
    /// After the discount, minor units.
    pub total: i64,
}

/// An order's lines and totals, derived (minor units of its currency).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct OrderSummary {
    pub lines: Vec<OrderLineView>,
    pub currency: String,
    pub discount: i64,
    pub net: i64,
    pub tax: i64,
    pub gross: i64,
}

impl From<&core::Record> for OrderSummary {
    fn from(order: &core::Record) -> Self {
        let t = core::order_totals(order);
        OrderSummary {
            lines: t
                .lines
                .iter()
                .map(|(id, l)| OrderLineView {
                    line_id: id.clone(),
                    product_id: l.product_id.clone(),
                    quantity: l.quantity,
                    unit_price: l.unit_price,
                    discount: l.discount,
                    total: l.total(),
                })
                .collect(),
            currency: order.text("currency").unwrap_or_default().to_string(),
            discount: t.discount,
            net: t.net,
            tax: t.tax,
            gross: t.gross,
        }
    }
}

/// What `checkIn` did.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct VisitCheckIn {
    pub visit: Activity,
    /// Metres from where the visit takes place, when both are known.
    pub distance_m: Option<f64>,
    /// Set when farther than the radius: show it; the check-in stands.
    pub warning: Option<String>,
}

impl From<core::CheckIn> for VisitCheckIn {
    fn from(c: core::CheckIn) -> Self {
        VisitCheckIn {
            visit: activity(&c.visit),
            distance_m: c.distance_m,
            warning: c.warning,
        }
    }
}

/// The report `checkOut` asks for.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct VisitReportInput {
    /// successful, follow_up, no_decision, not_met or cancelled.
    pub outcome: String,
    #[uniffi(default = "")]
    pub notes: String,
    /// The next step, as a task on the same customer due at `next_step_due_at`.
    #[uniffi(default = None)]
    pub next_step: Option<String>,
    #[uniffi(default = None)]
    pub next_step_due_at: Option<i64>,
}

impl From<VisitReportInput> for core::VisitReport {
    fn from(r: VisitReportInput) -> Self {
        core::VisitReport {
            outcome: r.outcome,
            notes: r.notes,
            next_step: r.next_step.map(|subject| core::NextStep {
                subject,
                due_at: r.next_step_due_at.unwrap_or_default(),
            }),
        }
    }
}

/// What `checkOut` did.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct VisitCheckOut {
    pub visit: Activity,
    pub follow_up: Option<Activity>,
    pub minutes_on_site: i64,
}

impl From<core::CheckOut> for VisitCheckOut {
    fn from(c: core::CheckOut) -> Self {
        VisitCheckOut {
            visit: activity(&c.visit),
            follow_up: c.follow_up.as_ref().map(activity),
            minutes_on_site: c.minutes_on_site,
        }
    }
}

/// How the day is driven (`dayRoute`).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct DayRouteOptions {
    /// Where the day starts (home, the office); both `None`: at the first stop.
    #[uniffi(default = None)]
    pub start_lat: Option<f64>,
    #[uniffi(default = None)]
    pub start_lon: Option<f64>,
    /// When the day starts, ms since the epoch.
    pub start_at: i64,
    /// Average driving speed, km/h.
    #[uniffi(default = 50.0)]
    pub speed_kmh: f64,
    /// Time at each stop, minutes.
    #[uniffi(default = 30)]
    pub visit_minutes: i64,
}

impl From<DayRouteOptions> for core::RouteOptions {
    fn from(o: DayRouteOptions) -> Self {
        core::RouteOptions {
            start: o.start_lat.zip(o.start_lon),
            start_at: o.start_at,
            speed_kmh: o.speed_kmh,
            visit_minutes: o.visit_minutes,
        }
    }
}

/// One stop of the day, as the route reaches it.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct RouteStop {
    /// The visit (an activity).
    pub visit_id: String,
    pub name: String,
    pub lat: f64,
    pub lon: f64,
    /// From the start or the previous stop.
    pub distance_km: f64,
    pub arrive_at: i64,
    pub leave_at: i64,
}

/// The day's visits in order (`dayRoute`).
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct DayRoute {
    pub stops: Vec<RouteStop>,
    pub total_km: f64,
    /// Visits with no position (their account has no geo).
    pub unplaced: Vec<String>,
}

impl From<core::Route> for DayRoute {
    fn from(r: core::Route) -> Self {
        DayRoute {
            stops: r
                .legs
                .into_iter()
                .map(|l| RouteStop {
                    visit_id: l.stop.id,
                    name: l.stop.name,
                    lat: l.stop.lat,
                    lon: l.stop.lon,
                    distance_km: l.distance_km,
                    arrive_at: l.arrive_at,
                    leave_at: l.leave_at,
                })
                .collect(),
            total_km: r.total_km,
            unplaced: r.unplaced,
        }
    }
}
