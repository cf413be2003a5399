//! FieldCRM core: CRM records as Automerge documents in a crash-safe SQLite
//! store, with queries, history, conflicts and the merge primitive sync uses.
//!
//! [`Store`] is the entry point; `ARCHITECTURE.md` at the repository root
//! is the map.

pub mod doc;
pub mod error;
pub mod model;
pub mod query;
pub mod store;

pub use doc::{ChangeMeta, Conflict, ConflictValue, FieldChange, HistoryEntry, LocalChange};
pub use error::{Error, Result};
pub use model::{fields, Fields, Kind, Pipeline, Record, RecordId, Value};
pub use query::{AccountOverview, ListQuery, Page, SortBy, StageSummary};
pub use store::{ApplyOutcome, NewRecord, OutboxEntry, OutboxStatus, Store, StoreOptions};
