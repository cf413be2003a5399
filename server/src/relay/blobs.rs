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

/// The part of a blob a user may have and asked for, before any byte is
/// read ([`open`]); read it a piece at a time ([`READ_PIECE`]).
#[derive(Debug, Clone)]
pub struct BlobSpan {
    pub sha: String,
    pub media_type: String,
    pub size: u64,
    pub start: u64,
    /// Bytes from `start` on.
    pub len: u64,
}

/// How much of a blob a download, or the check of a finished upload, reads
/// from storage at a time: memory per transfer stays at this, whatever the
/// file's size.
pub const READ_PIECE: u64 = 1 << 20;

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

/// How much of a file's start its type is told from.
const SNIFF_BYTES: usize = 64 << 10;

/// Checks a fully received upload: its hash, and its bytes against a type
/// an attachment naming it declares. Reads it a step at a time, keeping
/// only its start (for the type) and whether it is all UTF-8 (for text).
fn verify(store: &dyn RelayStore, sha: &str, size: u64, refs: &[BlobRef]) -> Result<()> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut head = Vec::new();
    let mut text = Utf8Stream::default();
    let mut at = 0;
    while at < size {
        let chunk = store.read_blob(sha, at, READ_PIECE.min(size - at))?;
        if chunk.is_empty() {
            return Err(RelayError::Storage(format!(
                "blob {sha} ended at {at} of {size} bytes"
            )));
        }
        at += chunk.len() as u64;
        hasher.update(&chunk);
        let room = SNIFF_BYTES.saturating_sub(head.len()).min(chunk.len());
        head.extend_from_slice(&chunk[..room]);
        text.feed(&chunk);
    }
    let found = hex::encode(hasher.finalize());
    if found != sha {
        return Err(RelayError::Invalid(format!(
            "the bytes uploaded are not blob {sha} (their SHA-256 is {found}); \
             they were discarded: upload the file again from the start"
        )));
    }
    let all_text = text.finish();
    let mut last = None;
    for r in refs {
        let is_text = matches!(r.media_type.as_str(), "text/plain" | "text/csv");
        let checked = if is_text && !all_text {
            Err(format!(
                "the file's content is not UTF-8 text, not {}",
                r.media_type
            ))
        } else {
            // A start cut inside a character is still text.
            let head = match std::str::from_utf8(&head) {
                Err(e) if is_text && e.error_len().is_none() => &head[..e.valid_up_to()],
                _ => &head[..],
            };
            attachment::check_content("media_type", &r.media_type, head).map_err(|e| e.to_string())
        };
        match checked {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(RelayError::Invalid(format!(
        "blob {sha} is not what its attachment says it is ({}); it was discarded",
        last.unwrap_or_default()
    )))
}

/// Whether bytes fed in pieces are UTF-8, a character split between two
/// pieces included.
#[derive(Default)]
struct Utf8Stream {
    carry: Vec<u8>,
    bad: bool,
}

impl Utf8Stream {
    fn feed(&mut self, piece: &[u8]) {
        if self.bad {
            return;
        }
        let mut joined = std::mem::take(&mut self.carry);
        joined.extend_from_slice(piece);
        match std::str::from_utf8(&joined) {
            Ok(_) => {}
            // Cut inside a character: the rest comes with the next piece.
            Err(e) if e.error_len().is_none() => self.carry = joined[e.valid_up_to()..].to_vec(),
            Err(_) => self.bad = true,
        }
    }

    fn finish(self) -> bool {
        !self.bad && self.carry.is_empty()
    }
}

/// Blob `sha`'s bytes that `range` picks, for a user who may see a record
/// naming it (read whole: for ranges a device asks, a piece at a time).
pub fn download(
    store: &dyn RelayStore,
    user: &User,
    sha: &str,
    range: impl FnOnce(u64) -> Result<Option<(u64, u64)>>,
) -> Result<BlobBytes> {
    let span = open(store, user, sha, range)?;
    Ok(BlobBytes {
        bytes: store.read_blob(sha, span.start, span.len)?,
        media_type: span.media_type,
        size: span.size,
        start: span.start,
    })
}

/// Blob `sha`, for a user who may see a record naming it: the part
/// `range` picks once the size is known (`start`, inclusive `end`; `None`:
/// all of it).
pub fn open(
    store: &dyn RelayStore,
    user: &User,
    sha: &str,
    range: impl FnOnce(u64) -> Result<Option<(u64, u64)>>,
) -> Result<BlobSpan> {
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
    Ok(BlobSpan {
        sha: sha.to_string(),
        media_type: refs[0].media_type.clone(),
        size,
        start,
        len: end - start + 1,
    })
}

/// Removes blobs and unfinished uploads no record has named for `grace_ms`
/// (the relay's clock). A blob named again meanwhile is kept. Returns how
/// many went.
pub fn collect_garbage(store: &dyn RelayStore, grace_ms: i64) -> Result<usize> {
    store.collect_blobs(super::now_ms(), grace_ms)
}

#[cfg(test)]
mod tests {
    use super::Utf8Stream;

    #[test]
    fn utf8_split_between_pieces_is_text_and_a_bad_byte_is_not() {
        let text = "Lieferschein: 12 Kästen, unterschrieben – J. Doe".as_bytes();
        for cut in 0..text.len() {
            let mut stream = Utf8Stream::default();
            stream.feed(&text[..cut]);
            stream.feed(&text[cut..]);
            assert!(stream.finish(), "cut at {cut}");
        }
        let mut stream = Utf8Stream::default();
        stream.feed(b"ok \xff then more");
        assert!(!stream.finish());
        let mut stream = Utf8Stream::default();
        stream.feed(&"ä".as_bytes()[..1]);
        assert!(!stream.finish(), "ends inside a character");
    }
}
