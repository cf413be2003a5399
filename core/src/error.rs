//! The one error type of `fieldcrm-core`. Variants name what went wrong and
//! carry the offending value, so a caller can show the user a precise message.

use crate::model::Kind;

/// Everything a core call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown record kind {0:?} (expected account, contact, deal, activity, lead or case)")]
    UnknownKind(String),

    #[error("unknown field {field:?} for a {kind}")]
    UnknownField { kind: Kind, field: String },

    #[error("field {field:?} of a {kind} is required")]
    MissingField { kind: Kind, field: String },

    #[error("invalid value for field {field:?}: {value} ({reason})")]
    InvalidValue {
        field: String,
        value: String,
        reason: String,
    },

    #[error("value for field {field:?} is {len} bytes, more than the limit of {max}")]
    OversizeValue {
        field: String,
        len: usize,
        max: usize,
    },

    #[error("field {field:?} refers to {target:?}, which is not {expected}")]
    BadReference {
        field: String,
        target: String,
        expected: String,
    },

    /// The change made an object (a map) where the record already has one,
    /// made at the same time elsewhere: what it put inside would be hidden.
    /// A device makes such a change again inside the record's own object.
    #[error("field {field:?} is a map the record has already (made at the same time on another device, or replaced): what the change put in it would be hidden, so it is made again inside the record's own {field:?}")]
    CompetingObject { field: String },

    #[error("change time {time} is implausible: {reason}")]
    ImplausibleTime { time: i64, reason: String },

    /// A write rule keeps this writer from changing the field.
    #[error("you may not change {field:?}: {reason}")]
    NotAllowed { field: String, reason: String },

    #[error("no record with id {0:?}")]
    NotFound(String),

    #[error("record {id:?} did not exist at time {time}")]
    NotYetCreated { id: String, time: i64 },

    #[error("record {id:?} is in territory {territory:?}, which is no longer one of yours")]
    NotYours { id: String, territory: String },

    #[error("record {0:?} is deleted; restore it before editing")]
    Deleted(String),

    #[error("malformed change bytes for record {doc:?}: {reason}")]
    MalformedChange { doc: String, reason: String },

    /// `what` names the offender: "change <hash>" or "the snapshot".
    #[error("{what} does not belong to record {doc:?}: {reason}")]
    ForeignChange {
        doc: String,
        what: String,
        reason: String,
    },

    #[error("{count} change(s) for record {doc:?} depend on changes the receiver does not have")]
    MissingDependencies { doc: String, count: usize },

    #[error("refused: {0}")]
    Refused(String),

    #[error("record document {doc:?} is corrupt: {reason}")]
    CorruptDocument { doc: String, reason: String },

    #[error("invalid pipeline: {0}")]
    InvalidPipeline(String),

    #[error("invalid query: {0}")]
    InvalidQuery(String),

    #[error("{path}: line {line}: {reason}")]
    Import {
        path: String,
        line: usize,
        reason: String,
    },

    #[error("the store at {path:?} has schema version {found}, newer than this build understands ({supported}); upgrade the app")]
    SchemaTooNew {
        path: String,
        found: i64,
        supported: i64,
    },

    #[error("{path:?} is not a FieldCRM store: {reason}")]
    NotAStore { path: String, reason: String },

    #[error("{0}")]
    Protocol(String),

    #[error(
        "unsupported protocol version {got}; this side speaks {}",
        join(supported)
    )]
    UnsupportedVersion { got: u32, supported: Vec<u32> },

    #[error("sync failed: {message}")]
    Transport {
        /// HTTP status when the relay answered, `None` for network failures.
        status: Option<u16>,
        message: String,
    },

    #[error("the store was closed; open it again")]
    Closed,

    /// The disk holding the store has no room left: the action was not
    /// saved, nothing saved before is lost, and it works again once there
    /// is space.
    #[error("storage full: the disk holding the store has no room left, so this was not saved (nothing saved before is lost); free some space and try again")]
    StorageFull,

    #[error("storage error: {0}")]
    Sqlite(rusqlite::Error),

    #[error("I/O error: {0}")]
    Io(std::io::Error),
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => Error::StorageFull,
            _ => Error::Sqlite(e),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::StorageFull => Error::StorageFull,
            _ => Error::Io(e),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn join(versions: &[u32]) -> String {
    versions
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Error {
    /// The field an error is about, when it names one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::UnknownField { field, .. }
            | Error::MissingField { field, .. }
            | Error::InvalidValue { field, .. }
            | Error::OversizeValue { field, .. }
            | Error::BadReference { field, .. }
            | Error::NotAllowed { field, .. }
            | Error::CompetingObject { field } => Some(field),
            _ => None,
        }
    }

    /// A short, stable name for the kind of error (protocol.md lists the
    /// ones a relay sends in rejections).
    pub fn code(&self) -> &'static str {
        match self {
            Error::UnknownKind(_) => "unknown_kind",
            Error::UnknownField { .. } => "unknown_field",
            Error::MissingField { .. } => "missing_field",
            Error::InvalidValue { .. } => "invalid_value",
            Error::OversizeValue { .. } => "oversize_value",
            Error::BadReference { .. } => "bad_reference",
            Error::NotAllowed { .. } => "not_allowed",
            Error::CompetingObject { .. } => "competing_object",
            Error::ImplausibleTime { .. } => "implausible_time",
            Error::NotFound(_) | Error::NotYetCreated { .. } => "not_found",
            Error::Deleted(_) => "deleted",
            Error::NotYours { .. } => "not_yours",
            Error::MalformedChange { .. } => "malformed_change",
            Error::ForeignChange { .. } => "foreign_change",
            Error::MissingDependencies { .. } => "missing_dependencies",
            Error::Refused(_) => "refused",
            Error::CorruptDocument { .. } => "corrupt_document",
            Error::InvalidPipeline(_) => "invalid_pipeline",
            Error::InvalidQuery(_) => "invalid_query",
            Error::Import { .. } => "import",
            Error::SchemaTooNew { .. } => "schema_too_new",
            Error::NotAStore { .. } => "not_a_store",
            Error::Protocol(_) => "malformed",
            Error::UnsupportedVersion { .. } => "unsupported_version",
            Error::Transport { .. } => "transport",
            Error::Closed => "closed",
            Error::StorageFull => "storage_full",
            Error::Sqlite(_) => "storage",
            Error::Io(_) => "io",
        }
    }

    /// A failure of the storage, not of the input: it fails the whole
    /// action (a push, a rebase) rather than refusing one change.
    pub fn is_storage(&self) -> bool {
        matches!(
            self,
            Error::Sqlite(_) | Error::Io(_) | Error::StorageFull | Error::CorruptDocument { .. }
        )
    }

    pub(crate) fn invalid(field: &str, value: impl std::fmt::Display, reason: &str) -> Self {
        Error::InvalidValue {
            field: field.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}
