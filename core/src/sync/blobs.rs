//! Moving attachment blobs between the device and the relay (decision
//! 0011), after the records: record sync never waits for a file.
//!
//! Uploads send each blob made here in chunks of [`UPLOAD_CHUNK`] from
//! where the relay says it stands, so a dropped connection costs at most
//! one chunk; a blob counts as sent only when the relay says it holds it
//! whole and verified. Downloads fetch ranges of the same size into a
//! partial file beside the store, continue from its length, and check the
//! hash before the blob counts as here.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Transport;
use crate::error::{Error, Result};
use crate::store::blobs::sha256_hex;

/// Bytes per upload chunk and per download range.
pub const UPLOAD_CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobDirection {
    Upload,
    Download,
}

/// Told after every chunk of a blob's transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobProgress {
    pub sha256: String,
    pub direction: BlobDirection,
    /// Bytes the relay (upload) or the device (download) holds so far.
    pub done: u64,
    pub total: u64,
}

/// What one pass of uploads did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobUploads {
    /// Blobs the relay now holds (sent, or held already: the same photo
    /// from someone else).
    pub uploaded: usize,
    pub bytes_sent: u64,
    /// Blobs left queued: the relay has no record naming them yet (the
    /// change is held or refused), it refused the bytes, or the file here
    /// is damaged. Tried again at the next sync.
    pub waiting: usize,
}

/// The device side of a transfer: a [`crate::Store`], or a shared store
/// that locks it only around each step, never across the network.
pub(crate) trait BlobSide {
    fn queued(&self) -> Result<Vec<String>>;
    fn bytes(&self, sha: &str) -> Result<Option<Vec<u8>>>;
    fn uploaded(&self, sha: &str) -> Result<()>;
    fn fetched(&self, sha: &str, bytes: &[u8]) -> Result<()>;
    /// Where a download under way is kept.
    fn partial_path(&self, sha: &str) -> PathBuf;
}

fn status_is(e: &Error, code: u16) -> bool {
    matches!(e, Error::Transport { status: Some(s), .. } if *s == code)
}

/// Sends every queued blob the relay lacks; `Ok` with nothing done when
/// the transport carries no blobs.
pub(crate) fn upload_all(
    side: &dyn BlobSide,
    transport: &dyn Transport,
    progress: &mut dyn FnMut(&BlobProgress),
) -> Result<BlobUploads> {
    let mut report = BlobUploads::default();
    for sha in side.queued()? {
        match upload_one(side, transport, &sha, progress) {
            Ok(Some(sent)) => {
                side.uploaded(&sha)?;
                report.uploaded += 1;
                report.bytes_sent += sent;
            }
            Ok(None) => return Ok(report),
            // Not named by a record the relay has (yet), or refused.
            Err(e) if status_is(&e, 404) || status_is(&e, 400) => report.waiting += 1,
            Err(Error::NotFound(_)) => report.waiting += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

/// Bytes sent for blob `sha`, once the relay holds it; `None`: the
/// transport carries no blobs.
fn upload_one(
    side: &dyn BlobSide,
    transport: &dyn Transport,
    sha: &str,
    progress: &mut dyn FnMut(&BlobProgress),
) -> Result<Option<u64>> {
    let Some(mut status) = transport.blob_status(sha)? else {
        return Ok(None);
    };
    if status.complete {
        return Ok(Some(0));
    }
    let bytes = side
        .bytes(sha)?
        .ok_or_else(|| Error::NotFound(format!("blob {sha} (damaged on this device)")))?;
    let mut sent = 0;
    let mut raced = 0;
    while !status.complete {
        let at = status.received.min(bytes.len() as u64) as usize;
        let end = (at + UPLOAD_CHUNK).min(bytes.len());
        match transport.put_blob_chunk(sha, at as u64, &bytes[at..end]) {
            Ok(now) => {
                sent += (end - at) as u64;
                status = now;
            }
            // Another upload of the same blob moved on meanwhile.
            Err(e) if status_is(&e, 409) && raced < 3 => {
                raced += 1;
                status = transport.blob_status(sha)?.ok_or(e)?;
            }
            Err(e) => return Err(e),
        }
        progress(&BlobProgress {
            sha256: sha.to_string(),
            direction: BlobDirection::Upload,
            done: status.received,
            total: status.size,
        });
    }
    Ok(Some(sent))
}

/// Blob `sha`: from the device if here, else fetched from the relay
/// (continuing a download an earlier attempt left), checked and kept.
pub(crate) fn fetch(
    side: &dyn BlobSide,
    transport: &dyn Transport,
    sha: &str,
    progress: &mut dyn FnMut(&BlobProgress),
) -> Result<Vec<u8>> {
    if let Some(bytes) = side.bytes(sha)? {
        return Ok(bytes);
    }
    let status = transport
        .blob_status(sha)?
        .ok_or_else(|| Error::Protocol("this transport carries no blobs".into()))?;
    if !status.complete {
        return Err(Error::NotFound(format!(
            "blob {sha}: the relay does not hold it yet (the device that attached it sends it when it syncs)"
        )));
    }
    let part = side.partial_path(sha);
    if let Some(dir) = part.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut have = fs::read(&part).unwrap_or_default();
    if have.len() as u64 > status.size {
        have.clear();
    }
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&part)?;
    file.set_len(have.len() as u64)?;
    use std::io::Seek;
    file.seek(std::io::SeekFrom::End(0))?;
    while (have.len() as u64) < status.size {
        let from = have.len() as u64;
        let len = (UPLOAD_CHUNK as u64).min(status.size - from);
        let chunk = transport.get_blob_range(sha, from, len)?;
        if chunk.is_empty() || chunk.len() as u64 > len {
            return Err(Error::Protocol(format!(
                "the relay sent {} bytes of blob {sha} for a range of {len}",
                chunk.len()
            )));
        }
        file.write_all(&chunk)?;
        have.extend_from_slice(&chunk);
        progress(&BlobProgress {
            sha256: sha.to_string(),
            direction: BlobDirection::Download,
            done: have.len() as u64,
            total: status.size,
        });
    }
    drop(file);
    let _ = fs::remove_file(&part);
    if sha256_hex(&have) != sha {
        return Err(Error::Protocol(format!(
            "the bytes received are not blob {sha} (their hash differs); fetch it again"
        )));
    }
    side.fetched(sha, &have)?;
    Ok(have)
}

/// A store used from one thread.
struct Local<'a>(std::cell::RefCell<&'a mut crate::Store>);

impl BlobSide for Local<'_> {
    fn queued(&self) -> Result<Vec<String>> {
        self.0.borrow().blobs_to_upload()
    }
    fn bytes(&self, sha: &str) -> Result<Option<Vec<u8>>> {
        self.0.borrow().blob(sha)
    }
    fn uploaded(&self, sha: &str) -> Result<()> {
        self.0.borrow_mut().blob_uploaded(sha)
    }
    fn fetched(&self, sha: &str, bytes: &[u8]) -> Result<()> {
        self.0.borrow_mut().put_blob(sha, bytes)
    }
    fn partial_path(&self, sha: &str) -> PathBuf {
        self.0.borrow().partial_blob_path(sha)
    }
}

impl BlobSide for crate::SharedStore {
    fn queued(&self) -> Result<Vec<String>> {
        self.read(|s| s.blobs_to_upload())
    }
    fn bytes(&self, sha: &str) -> Result<Option<Vec<u8>>> {
        // Reading a blob marks it used (eviction order): a write.
        self.write_blobs(|s| s.blob(sha))
    }
    fn uploaded(&self, sha: &str) -> Result<()> {
        self.write_blobs(|s| s.blob_uploaded(sha))
    }
    fn fetched(&self, sha: &str, bytes: &[u8]) -> Result<()> {
        self.write_blobs(|s| s.put_blob(sha, bytes))
    }
    fn partial_path(&self, sha: &str) -> PathBuf {
        self.read(|s| Ok(s.partial_blob_path(sha)))
            .unwrap_or_default()
    }
}

impl crate::Store {
    /// Sends the blobs of attachments made here that the relay lacks
    /// (after a sync, so the relay has the records naming them).
    pub fn upload_blobs(
        &mut self,
        transport: &dyn Transport,
        progress: &mut dyn FnMut(&BlobProgress),
    ) -> Result<BlobUploads> {
        upload_all(&Local(self.into()), transport, progress)
    }

    /// Blob `sha256`'s bytes: from this device, or downloaded from the
    /// relay (resuming an interrupted download) and kept here.
    pub fn fetch_blob(
        &mut self,
        transport: &dyn Transport,
        sha256: &str,
        progress: &mut dyn FnMut(&BlobProgress),
    ) -> Result<Vec<u8>> {
        fetch(&Local(self.into()), transport, sha256, progress)
    }

    /// Downloads the blobs of [`crate::Store::blobs_to_prefetch`], then
    /// keeps the device's blobs under `cache_limit` bytes. Returns how
    /// many it downloaded.
    pub fn prefetch_blobs(
        &mut self,
        transport: &dyn Transport,
        cache_limit: u64,
        progress: &mut dyn FnMut(&BlobProgress),
    ) -> Result<usize> {
        let wanted = self.blobs_to_prefetch()?;
        for sha in &wanted {
            self.fetch_blob(transport, sha, progress)?;
        }
        self.evict_blobs(cache_limit)?;
        Ok(wanted.len())
    }
}

impl crate::SharedStore {
    /// [`crate::Store::upload_blobs`], holding the store only between chunks.
    pub fn upload_blobs(
        &self,
        transport: &dyn Transport,
        progress: &mut dyn FnMut(&BlobProgress),
    ) -> Result<BlobUploads> {
        upload_all(self, transport, progress)
    }

    /// [`crate::Store::fetch_blob`], holding the store only between ranges.
    pub fn fetch_blob(
        &self,
        transport: &dyn Transport,
        sha256: &str,
        progress: &mut dyn FnMut(&BlobProgress),
    ) -> Result<Vec<u8>> {
        fetch(self, transport, sha256, progress)
    }

    /// [`crate::Store::prefetch_blobs`], holding the store only between ranges.
    pub fn prefetch_blobs(
        &self,
        transport: &dyn Transport,
        cache_limit: u64,
        progress: &mut dyn FnMut(&BlobProgress),
    ) -> Result<usize> {
        let wanted = self.read(|s| s.blobs_to_prefetch())?;
        for sha in &wanted {
            fetch(self, transport, sha, progress)?;
        }
        self.write_blobs(|s| s.evict_blobs(cache_limit))?;
        Ok(wanted.len())
    }
}
