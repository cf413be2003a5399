//! FieldCRM core: CRM records as Automerge documents in a crash-safe SQLite
//! store, with queries, history, conflicts and the merge primitive sync uses.
//!
//! [`Store`] is the entry point; `ARCHITECTURE.md` at the repository root
//! is the map.

pub mod doc;
pub mod error;
pub mod model;
pub mod protocol;
pub mod query;
pub mod store;
pub mod sync;

pub use doc::ParsedChange;
pub use doc::{ChangeMeta, Conflict, ConflictValue, FieldChange, HistoryEntry, LocalChange};
pub use error::{Error, Result};
pub use model::{fields, FieldType, Fields, Kind, Pipeline, Record, RecordId, Value};
pub use query::{AccountOverview, ListQuery, OwnerCount, Page, SortBy, StageSummary};
pub use store::{
    draft_on, search_columns, validate_fields_with, ApplyOutcome, Author, Draft, Edit,
    LookupRecord, NewRecord, OutboxEntry, OutboxStatus, Store, StoreOptions, StoreTx,
};
#[cfg(feature = "http")]
pub use sync::HttpTransport;
pub use sync::{RoundReport, SyncProgress, Transport};
