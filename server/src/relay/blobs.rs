//! Attachment blobs at the relay (decision 0011): the rules, once, over
//! the storage each [`RelayStore`] provides.
//!
//! A blob is named by its SHA-256 and reachable only through the records
//! that name it: a user may upload or fetch blob `sha` only if a record
//! they may see has an attachment with that hash (the same access policy
//! as the record; knowing a hash gives nothing). Uploads are resumable
//! (each chunk appends at the offset the relay says it holds, stored
//! durably before it is acknowledged), bounded by the size the attachment
//! declares and the relay's limit, and verified when the last byte
//! arrives: the hash must match and the bytes must be of the declared type
//! (sniffed, not trusted). Only then does the blob count as held. Blobs no
//! record names any more are removed after a grace period
//! ([`collect_garbage`]).

use super::{access, RelayError, RelayStore, Result, User};
use fieldcrm_core::attachment;
pub use fieldcrm_core::protocol::BlobStatus;

/// Largest chunk one upload request may carry (clients send 1 MiB).
pub const MAX_CHUNK_BYTES: usize = 8 << 20;
/// Bytes read at a time when checking a finished upload.
const READ_STEP: u64 = 1 << 20;
/// How long a blob no record names is kept before it is removed: longer
/// than any device stays offline with a pending change naming it would be
/// unusual, and such a device still holds the blob and uploads it again.
pub const DEFAULT_GRACE_MS: i64 = 7 * 24 * 3600 * 1000;

/// A record naming a blob, as the access check needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    pub record_id: String,
    pub territory: Option<String>,
    /// The attachment's declared media type and size.
    pub media_type: String,
    pub size: u64,
}

/// How much of a blob the relay holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    Nothing,
    /// An upload under way: this many bytes, stored durably.
    Partial(u64),
    /// The whole blob, verified.
    Whole(u64),
}

/// A blob's bytes to send (a range of them).
#[derive(Debug)]
pub struct BlobBytes {
    pub media_type: String,
    pub size: u64,
    /// Where `bytes` starts in the blob.
    pub start: u64,
    pub bytes: Vec<u8>,
}

/// The records `user` may see that name blob `sha`; none is "not found",
/// whether the blob exists or not.
fn visible_refs(store: &dyn RelayStore, user: &User, sha: &str) -> Result<Vec<BlobRef>> {
    if !attachment::is_sha256(sha) {
        return Err(RelayError::Invalid(format!(
            "{sha:?} is not a blob name: a SHA-256 is 64 lower-case hex digits"
        )));
    }
    let refs: Vec<BlobRef> = store
        .blob_refs(sha)?
        .into_iter()
        .filter(|r| access::sees(user, r.territory.as_deref()))
        .collect();
    if refs.is_empty() {
        return Err(RelayError::NotFound(format!(
            "no attachment you may see names blob {sha}"
        )));
    }
    Ok(refs)
}

fn status_of(sha: &str, size: u64, held: Held) -> BlobStatus {
    let (received, complete) = match held {
        Held::Nothing => (0, false),
        Held::Partial(n) => (n, false),
        Held::Whole(n) => (n, true),
    };
    BlobStatus {
        sha256: sha.to_string(),
        size,
        received,
        complete,
    }
}

/// How far blob `sha` has come, for a user who may see it.
pub fn status(store: &dyn RelayStore, user: &User, sha: &str) -> Result<BlobStatus> {
    let refs = visible_refs(store, user, sha)?;
    Ok(status_of(sha, refs[0].size, store.blob_held(sha)?))
}

/// Stores `bytes` at `offset` of blob `sha` for `user`, who must see a
/// record naming it. `limit` is the relay's largest blob. The chunk is
/// durable when this returns; the last one also verifies the whole blob
/// (hash and type), which on failure is discarded for a fresh start.
pub fn upload(
    store: &dyn RelayStore,
    user: &User,
    sha: &str,
    offset: u64,
    bytes: &[u8],
    limit: u64,
) -> Result<BlobStatus> {
    let refs = visible_refs(store, user, sha)?;
    let size = refs[0].size;
    if size > limit {
        return Err(RelayError::Invalid(format!(
            "blob {sha} is {size} bytes; this relay takes files of at most {} MiB",
            limit >> 20
        )));
    }
    if bytes.len() > MAX_CHUNK_BYTES {
        return Err(RelayError::Invalid(format!(
            "a chunk is at most {} MiB; send the blob in smaller pieces",
            MAX_CHUNK_BYTES >> 20
        )));
    }
    let received = match store.blob_held(sha)? {
        // Held already (the same photo from another rep): nothing to store.
        held @ Held::Whole(_) => return Ok(status_of(sha, size, held)),
        Held::Partial(n) => n,
        Held::Nothing => 0,
    };
    if offset != received {
        return Err(RelayError::WrongOffset {
            sha256: sha.to_string(),
            received,
        });
    }
    if offset + bytes.len() as u64 > size {
        return Err(RelayError::Invalid(format!(
            "the chunk at {offset} runs past the end of blob {sha}, whose attachment declares {size} bytes"
        )));
    }
    if bytes.is_empty() && offset < size {
        return Err(RelayError::Invalid(
            "an upload chunk holds at least 1 byte".into(),
        ));
    }
    let received = store.append_blob(sha, offset, bytes)?;
    if received < size {
        return Ok(status_of(sha, size, Held::Partial(received)));
    }
    if let Err(e) = verify(store, sha, size, &refs) {
        store.drop_partial(sha)?;
        return Err(e);
    }
    store.seal_blob(sha, size)?;
    Ok(status_of(sha, size, Held::Whole(size)))
}

/// Checks a fully received upload: its hash, and its bytes against a type
/// an attachment naming it declares.
fn verify(store: &dyn RelayStore, sha: &str, size: u64, refs: &[BlobRef]) -> Result<()> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut bytes = Vec::with_capacity(size as usize);
    let mut at = 0;
    while at < size {
        let chunk = store.read_blob(sha, at, READ_STEP.min(size - at))?;
        if chunk.is_empty() {
            return Err(RelayError::Storage(format!(
                "blob {sha} ended at {at} of {size} bytes"
            )));
        }
        at += chunk.len() as u64;
        hasher.update(&chunk);
        bytes.extend_from_slice(&chunk);
    }
    let found = hex::encode(hasher.finalize());
    if found != sha {
        return Err(RelayError::Invalid(format!(
            "the bytes uploaded are not blob {sha} (their SHA-256 is {found}); \
             they were discarded: upload the file again from the start"
        )));
    }
    let mut last = None;
    for r in refs {
        match attachment::check_content("media_type", &r.media_type, &bytes) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    let reason = last.map_or_else(String::new, |e| e.to_string());
    Err(RelayError::Invalid(format!(
        "blob {sha} is not what its attachment says it is ({reason}); it was discarded"
    )))
}

/// Blob `sha`, for a user who may see a record naming it: the bytes
/// `range` picks once the size is known (`start`, inclusive `end`; `None`:
/// all of them).
pub fn download(
    store: &dyn RelayStore,
    user: &User,
    sha: &str,
    range: impl FnOnce(u64) -> Result<Option<(u64, u64)>>,
) -> Result<BlobBytes> {
    let refs = visible_refs(store, user, sha)?;
    let Held::Whole(size) = store.blob_held(sha)? else {
        return Err(RelayError::NotFound(format!(
            "blob {sha} has not been uploaded yet (the device that attached it sends it when it syncs)"
        )));
    };
    let (start, end) = range(size)?.unwrap_or((0, size.saturating_sub(1)));
    if start > end || end >= size {
        return Err(RelayError::Invalid(format!(
            "bytes {start}-{end} are not within blob {sha} of {size} bytes"
        )));
    }
    let bytes = store.read_blob(sha, start, end - start + 1)?;
    Ok(BlobBytes {
        media_type: refs[0].media_type.clone(),
        size,
        start,
        bytes,
    })
}

/// Removes blobs and unfinished uploads no record has named for `grace_ms`
/// (the relay's clock). A blob named again meanwhile is kept. Returns how
/// many went.
pub fn collect_garbage(store: &dyn RelayStore, grace_ms: i64) -> Result<usize> {
    store.collect_blobs(super::now_ms(), grace_ms)
}
