//! The relay's errors: [`RelayError`] for calls that fail, [`Refusal`] for
//! one pushed change the relay will not take (an answer, sent to the device
//! as a rejection, not a failure), [`EditRefusal`] for an office edit.

/// A relay call that failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A core error: its own message; how it maps to HTTP is decided once,
    /// in `crate::error`.
    #[error(transparent)]
    Core(#[from] fieldcrm_core::Error),
    #[error("relay storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("relay storage error: {0}")]
    Postgres(#[from] ::postgres::Error),
    #[error("relay storage unavailable: {0}")]
    Pool(#[from] r2d2::Error),
    /// A storage failure reported to several requests at once (a group
    /// commit that failed).
    #[error("relay storage error: {0}")]
    Storage(String),
    /// The relay's disk is full (also when reported to a whole group commit).
    #[error("the relay's storage is full")]
    StorageFull,
    /// Input the caller got wrong: a flag, a name, a field of a request.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// A user, or another named thing, that exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// An upload chunk that does not start where the relay's copy ends.
    #[error("blob {sha256}: the relay holds {received} bytes; send the chunk starting there")]
    WrongOffset { sha256: String, received: u64 },
}

pub type Result<T, E = RelayError> = std::result::Result<T, E>;

impl RelayError {
    /// Whether the relay's disk is full: nothing of the call was stored,
    /// nothing stored before is lost, and it works again once an operator
    /// frees space.
    pub fn is_storage_full(&self) -> bool {
        match self {
            RelayError::StorageFull | RelayError::Core(fieldcrm_core::Error::StorageFull) => true,
            RelayError::Sqlite(e) => e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull),
            _ => false,
        }
    }

    /// Whether the store is away rather than failing: no connection could
    /// be had, or the database connection was lost (a restart, a failover,
    /// a cut network; SQLSTATE class 08 or 57P01..57P03). Callers should
    /// try again; it is said as 503, not as a relay bug.
    pub fn is_unavailable(&self) -> bool {
        match self {
            RelayError::Pool(_) => true,
            RelayError::Postgres(e) => {
                e.is_closed()
                    || e.code().is_some_and(|c| {
                        let code = c.code();
                        code.starts_with("08") || ["57P01", "57P02", "57P03"].contains(&code)
                    })
                    || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
            }
            // A relay error that crossed the core's data-model checks as a
            // storage failure (see `push::storage`).
            RelayError::Core(fieldcrm_core::Error::Io(io)) => io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<RelayError>())
                .is_some_and(RelayError::is_unavailable),
            _ => false,
        }
    }
}

impl RelayError {
    /// This failure as told to each push of a group commit that failed.
    pub(crate) fn for_each_of_a_group(&self) -> RelayError {
        if self.is_storage_full() {
            RelayError::StorageFull
        } else {
            RelayError::Storage(self.to_string())
        }
    }
}

/// Why the relay refused one pushed change. Nothing of it is stored.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("change of {bytes} bytes exceeds the limit of {max}")]
    TooLarge { bytes: usize, max: usize },
    #[error("change is signed as user {signed_as:?}, but you are {user:?}")]
    WrongAuthor { signed_as: String, user: String },
    #[error("actor {actor} belongs to another user")]
    ForeignActor { actor: String },
    /// The record exists, in a territory the user does not have.
    #[error("record {record} is not in your territories")]
    NotYours { record: String },
    /// The record left the user's territories after the device last
    /// synced: the change waits for an office user's decision.
    #[error("held for review: record {record} is no longer in your territories; an office user will accept or discard this change")]
    HeldForReview { record: String },
    /// An office user discarded the held change.
    #[error("discarded on review by {by}")]
    Discarded { by: String },
    /// The change would move the record out of the user's territories.
    #[error("record {record} would move to territory {territory:?}, outside yours")]
    OutsideTerritory { record: String, territory: String },
    /// The data model refuses what the change leaves (the field and value
    /// are named as a device's own validation names them), or the change
    /// cannot be applied (malformed, another record's, missing dependencies).
    #[error(transparent)]
    Invalid(fieldcrm_core::Error),
}

impl Refusal {
    /// The rejection code protocol.md lists.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::TooLarge { .. } => "too_large",
            Refusal::WrongAuthor { .. } => "wrong_author",
            Refusal::ForeignActor { .. } => "foreign_actor",
            Refusal::NotYours { .. } => "not_yours",
            Refusal::HeldForReview { .. } => "held_for_review",
            Refusal::Discarded { .. } => "discarded",
            Refusal::OutsideTerritory { .. } => "outside_territory",
            Refusal::Invalid(e) => e.code(),
        }
    }

    /// The field the refusal is about, when it names one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Refusal::OutsideTerritory { .. } => Some("territory"),
            Refusal::Invalid(e) => e.field(),
            _ => None,
        }
    }

    /// Storage failures are not refusals: they fail the whole push.
    pub(crate) fn from_core(e: fieldcrm_core::Error) -> std::result::Result<Refusal, RelayError> {
        if e.is_storage() {
            Err(RelayError::Core(e))
        } else {
            Ok(Refusal::Invalid(e))
        }
    }
}

/// Why an office edit was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditRefusal {
    /// The record does not exist, or not for this user.
    #[error("{0}")]
    NotFound(String),
    /// The edit is invalid or not allowed; `field` is the one it is about.
    #[error("{message}")]
    Refused {
        field: Option<String>,
        /// The rejection code (protocol.md).
        code: String,
        message: String,
    },
}

impl From<Refusal> for EditRefusal {
    fn from(r: Refusal) -> Self {
        EditRefusal::Refused {
            field: r.field().map(String::from),
            code: r.code().to_string(),
            message: r.to_string(),
        }
    }
}

impl From<fieldcrm_core::Error> for EditRefusal {
    fn from(e: fieldcrm_core::Error) -> Self {
        match e {
            fieldcrm_core::Error::NotFound(_) => EditRefusal::NotFound(e.to_string()),
            e => EditRefusal::Refused {
                field: e.field().map(String::from),
                code: e.code().to_string(),
                message: e.to_string(),
            },
        }
    }
}

impl From<EditRefusal> for RelayError {
    fn from(e: EditRefusal) -> Self {
        match e {
            EditRefusal::NotFound(m) => RelayError::NotFound(m),
            EditRefusal::Refused { message, .. } => RelayError::Invalid(message),
        }
    }
}
