//! FieldCRM core: CRM records as Automerge documents in a crash-safe SQLite
//! store, with queries, history, conflicts and the merge primitive sync uses.
//!
//! [`Store`] is the entry point; `ARCHITECTURE.md` at the repository root
//! is the map. The modules are private: what this crate offers is the list
//! below, and nothing else is part of its contract. [`protocol`] is public
//! as a module because it is the wire format other programs speak.

mod doc;
pub mod duplicates;
mod error;
mod forecast;
pub mod merge;
mod model;
pub mod protocol;
mod query;
mod route;
mod shared;
mod store;
mod sync;

pub use doc::{
    ChangeMeta, Conflict, ConflictValue, FieldChange, HistoryEntry, LocalChange, ParsedChange,
    RecordDoc,
};
pub use error::{Error, Result};
pub use forecast::{
    ByCurrency, DealGroups, DealSums, ForecastMonth, PipelineReport, StageConversion, StageFigures,
    StageFlow, Totals,
};
pub use model::attachment::{self, Attachment, MAX_ATTACHMENT_BYTES, MEDIA_TYPES};
pub use model::order::{
    best_price, day_of, new_line, order_totals, OrderLine, OrderTotals, LINES, ORDER_STATUSES,
};
pub use model::{
    check_time, fields, normalize_value, parse_amount, parse_datetime, validate_custom_name,
    value_from_text, Config, ConfigEntry, ConfigRule, Covered, CustomField, CustomType, Directory,
    FieldEntry, FieldSpec, FieldType, Fields, Kind, PickEntry, PickValue, Pipeline, Record,
    RecordId, RuleEntry, Rules, SearchRole, StageEntry, StageOutcome, StageSettings, Standing,
    Value, WriteRule, ACTIVITY_KINDS, BUILT_IN_PICKLISTS, CASE_PRIORITIES, CASE_STATUSES,
    CONFIG_ID, CONFIG_MAPS, CUSTOM_PREFIX, LEAD_SOURCES, LEAD_STATUSES, MAX_LONG_TEXT, MAX_TEXT,
    SHARED_TERRITORY, VISIT_OUTCOMES, WRITE_RULES,
};
pub use query::{
    check_field_filters, check_offset, empty_summary, stage_timeline, AccountOverview, ListQuery,
    OwnerCount, Page, SortBy, StageSummary, MAX_PAGE,
};
pub use route::{
    day_route_of, distance_km, follow, plan, visits_query, Leg, Route, RouteOptions, Stop,
};
pub use shared::{ChangeListener, SharedStore, SyncObserver};
pub use store::blobs::{attachments_of, sha256_hex, PreparedFile};
pub use store::visits::{CheckIn, CheckOut, NextStep, VisitReport, DEFAULT_CHECK_IN_RADIUS_M};
pub use store::{
    draft_on, parse_stage_history, plan_conversion, search_columns, stage_history,
    validate_fields_with, ApplyOutcome, Author, ChangeKind, Conversion, ConversionPlan, Converted,
    Draft, Edit, LookupRecord, NewRecord, OutboxEntry, OutboxStatus, Received, RecordChange,
    RefusedChange, Store, StoreOptions, StoreTx, StoredDoc, READING,
};
#[cfg(feature = "http")]
pub use sync::HttpTransport;
pub use sync::{
    BlobDirection, BlobProgress, BlobUploads, RoundReport, SyncProgress, SyncState, Transport,
    DEFAULT_MAX_BYTES, UPLOAD_CHUNK,
};
