//! The one error type apps see: flat, stable variants whose message says
//! what was wrong. Kotlin: `CrmException.InvalidInput` etc.; Swift: `CrmError`.

use fieldcrm_core::Error as Core;

#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum CrmError {
    /// A value, field, kind, id or reference the core refused.
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    NotFound(String),
    /// The store file: unreadable, not a store, newer than this app, an I/O
    /// failure, or the disk is full (the message says which).
    #[error("{0}")]
    Storage(String),
    /// Talking to the relay failed or it answered with an error.
    #[error("{0}")]
    Sync(String),
    /// `sync()` needs `login()` first, or the relay no longer accepts the
    /// sign-in (signed out elsewhere, or the user was disabled). Nothing on
    /// the device was deleted: sign in again to send what waits.
    #[error("{0}")]
    NotSignedIn(String),
    /// Signing out would delete changes that were not sent, are held for
    /// review or were refused; the message says how many.
    #[error("{0}")]
    PendingChanges(String),
    /// The handle was closed.
    #[error("{0}")]
    Closed(String),
    /// An error raised by the app's own callback (transport or listener).
    #[error("{0}")]
    Host(String),
    /// Something FieldCRM did not expect (a bug): not the app's input.
    /// The message says what; please report it.
    #[error("{0}")]
    Unexpected(String),
}

impl From<Core> for CrmError {
    fn from(e: Core) -> Self {
        let message = e.to_string();
        match e {
            Core::NotFound(_) | Core::NotYetCreated { .. } => CrmError::NotFound(message),
            Core::Closed => CrmError::Closed(message),
            Core::Sqlite(_)
            | Core::Io(_)
            | Core::StorageFull
            | Core::CorruptDocument { .. }
            | Core::NotAStore { .. }
            | Core::SchemaTooNew { .. } => CrmError::Storage(message),
            Core::Transport {
                status: Some(401), ..
            } => CrmError::NotSignedIn(format!(
                "{message}; nothing on this device was deleted: sign in again to send what waits"
            )),
            Core::Transport { .. } | Core::Protocol(_) | Core::UnsupportedVersion { .. } => {
                CrmError::Sync(message)
            }
            Core::NotYours { .. }
            | Core::NotAllowed { .. }
            | Core::Refused(_)
            | Core::ImplausibleTime { .. }
            | Core::MissingDependencies { .. }
            | Core::CompetingObject { .. } => CrmError::InvalidInput(message),
            Core::UnknownKind(_)
            | Core::UnknownField { .. }
            | Core::MissingField { .. }
            | Core::InvalidValue { .. }
            | Core::OversizeValue { .. }
            | Core::BadReference { .. }
            | Core::Deleted(_)
            | Core::InvalidPipeline(_)
            | Core::InvalidQuery(_)
            | Core::Import { .. }
            | Core::MalformedChange { .. }
            | Core::ForeignChange { .. } => CrmError::InvalidInput(message),
        }
    }
}

impl From<uniffi::UnexpectedUniFFICallbackError> for CrmError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        CrmError::Host(e.reason)
    }
}
