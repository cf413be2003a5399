//! FieldCRM for iOS and Android: uniffi bindings over `fieldcrm-core`.
//!
//! A thin shell (see ARCHITECTURE.md): FFI-shaped types and conversions
//! (`types`), one flat error (`error`), and the `CrmStore` handle
//! (`handle`) whose methods each call one core function. No business logic
//! lives here. Generated Kotlin, Swift and Python come from
//! `scripts/bindings.sh`; docs/mobile.md shows how apps use them.

mod error;
mod handle;
mod types;

pub use error::CrmError;
pub use handle::{BlobListener, CrmStore, HostTransport, SyncListener};
pub use types::*;

uniffi::setup_scaffolding!();
