//! FieldCRM core: CRM records as Automerge documents in a crash-safe SQLite
//! store, with queries, history, conflicts and the merge primitive sync uses.
//!
//! [`Store`] is the entry point; see `ARCHITECTURE.md` for the map.

pub mod doc;
pub mod error;
pub mod model;

pub use doc::{ChangeMeta, Conflict, ConflictValue, FieldChange, HistoryEntry};
pub use error::{Error, Result};
pub use model::{fields, Fields, Kind, Pipeline, Record, RecordId, Value};
