//! Attachment bytes on the device (decision 0011): content-addressed blob
//! files in a folder beside the store (`<store>.blobs/<sha256>`), and the
//! `blobs` table saying which are here, which still wait for upload, and
//! when each was last used.
//!
//! Crash safety: a blob is written to a temporary file, synced, renamed to
//! its hash and the folder synced, all *before* the transaction that adds
//! its row and the record's metadata commits. A kill at any instant leaves
//! either no reference (at most a stray file, cleared by
//! [`Store::evict_blobs`]) or a reference to a complete blob. A blob counts
//! as here only with its row and its file, and is checked against its hash
//! when read.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension};

use super::Store;
use crate::error::{Error, Result};
use crate::model::attachment::{self, Attachment, ATTACHMENTS};
use crate::model::{fields, Record, Value};

/// Sync state key: the kinds whose attachments download eagerly.
const PREFETCH: &str = "blob_prefetch";
/// Sync state key: the device's blob cache limit.
const CACHE_LIMIT: &str = "blob_cache_limit";
/// The blob cache limit unless an app sets its own.
pub const DEFAULT_BLOB_CACHE: u64 = 512 << 20;

/// The folder of a store's blobs.
pub(crate) fn folder(store_path: &str) -> PathBuf {
    PathBuf::from(format!("{store_path}.blobs"))
}

/// Names of partial downloads in the blob folder: `.part-<sha256>`.
const PARTIAL_PREFIX: &str = ".part-";

pub use attachment::sha256_hex;

/// Writes `bytes` as blob `sha` in `dir` durably (nothing if it is there).
fn write_blob(dir: &Path, sha: &str, bytes: &[u8]) -> Result<()> {
    fs::create_dir_all(dir)?;
    let target = dir.join(sha);
    // Here already, whole (a stray file of a crash may be kept: it was
    // renamed only once complete, but check rather than trust it).
    if fs::read(&target).is_ok_and(|held| sha256_hex(&held) == sha) {
        return Ok(());
    }
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, &target)?;
    // The rename is durable once the folder is synced.
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// A file checked against its declared type and described (hash, size,
/// a picture's thumbnail): the slow part of attaching, done without the
/// store ([`Store::attach_prepared`] writes it).
#[derive(Debug)]
pub struct PreparedFile {
    meta: Attachment,
    bytes: Vec<u8>,
}

impl PreparedFile {
    /// `bytes` as file `name` of `media_type`, with an optional caption.
    pub fn new(
        name: &str,
        media_type: &str,
        bytes: Vec<u8>,
        caption: Option<&str>,
    ) -> Result<PreparedFile> {
        attachment::check_name("name", name)?;
        if bytes.is_empty() || bytes.len() as u64 > attachment::MAX_ATTACHMENT_BYTES {
            return Err(Error::invalid(
                "bytes",
                bytes.len(),
                &format!(
                    "a file is 1 byte to {} MiB",
                    attachment::MAX_ATTACHMENT_BYTES >> 20
                ),
            ));
        }
        attachment::check_content("media_type", media_type, &bytes)?;
        // Who and when are set by the store that attaches it.
        let meta = Attachment::describe(name, media_type, &bytes, "", 0, caption);
        Ok(PreparedFile { meta, bytes })
    }

    /// The file at `path`, named as it is.
    pub fn read(
        path: impl AsRef<Path>,
        media_type: &str,
        caption: Option<&str>,
    ) -> Result<PreparedFile> {
        let path = path.as_ref();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::invalid("path", path.display(), "a file path"))?
            .to_string();
        let size = fs::metadata(path)?.len();
        if size > attachment::MAX_ATTACHMENT_BYTES {
            return Err(Error::invalid(
                "path",
                format!("{} ({size} bytes)", path.display()),
                &format!(
                    "a file is at most {} MiB",
                    attachment::MAX_ATTACHMENT_BYTES >> 20
                ),
            ));
        }
        PreparedFile::new(&name, media_type, fs::read(path)?, caption)
    }
}

impl Store {
    fn blob_dir(&self) -> PathBuf {
        folder(&self.path)
    }

    /// Where a download of blob `sha256` under way is kept.
    pub(crate) fn partial_blob_path(&self, sha256: &str) -> PathBuf {
        self.blob_dir().join(format!("{PARTIAL_PREFIX}{sha256}"))
    }

    /// Makes blobs of other people's attachments on records of `kinds`
    /// download at every sync ([`Store::prefetch_blobs`]); empty: only
    /// when opened ([`Store::fetch_blob`]).
    pub fn set_blob_prefetch(&mut self, kinds: &[crate::model::Kind]) -> Result<()> {
        let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        self.set_sync_state(PREFETCH, &names.join(","))
    }

    /// Bytes of blobs this device keeps before evicting the least recently
    /// used ones the relay holds ([`DEFAULT_BLOB_CACHE`] unless set).
    pub fn blob_cache_limit(&self) -> Result<u64> {
        Ok(self
            .sync_state(CACHE_LIMIT)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_BLOB_CACHE))
    }

    /// Sets [`Store::blob_cache_limit`] (used after each background sync).
    pub fn set_blob_cache_limit(&mut self, bytes: u64) -> Result<()> {
        self.set_sync_state(CACHE_LIMIT, &bytes.to_string())
    }

    /// Blobs named by records of the prefetched kinds that are not here.
    pub fn blobs_to_prefetch(&self) -> Result<Vec<String>> {
        let kinds = self.sync_state(PREFETCH)?.unwrap_or_default();
        if kinds.is_empty() {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT a.sha256 FROM attachment_refs a JOIN records r ON r.id = a.record_id
             WHERE r.deleted = 0 AND instr(',' || ?1 || ',', ',' || r.kind || ',') > 0
                 AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.sha256 = a.sha256)
             ORDER BY a.sha256",
        )?;
        let rows = stmt
            .query_map([kinds], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Attaches `bytes` to record `record_id` as file `name` of
    /// `media_type` (checked against the bytes: an HTML page named `.jpg`
    /// is refused), with an optional caption. One user action: the blob is
    /// stored durably, then the metadata change committed and the upload
    /// queued. The same bytes attached twice are stored once. Returns the
    /// attachment's id and the record.
    pub fn add_attachment(
        &mut self,
        record_id: &str,
        name: &str,
        media_type: &str,
        bytes: &[u8],
        caption: Option<&str>,
    ) -> Result<(String, Record)> {
        let file = PreparedFile::new(name, media_type, bytes.to_vec(), caption)?;
        self.attach_prepared(record_id, file)
    }

    /// [`Store::add_attachment`] of the file at `path`, named as it is.
    pub fn add_attachment_file(
        &mut self,
        record_id: &str,
        path: impl AsRef<Path>,
        media_type: &str,
        caption: Option<&str>,
    ) -> Result<(String, Record)> {
        let file = PreparedFile::read(path, media_type, caption)?;
        self.attach_prepared(record_id, file)
    }

    /// [`Store::add_attachment`] of a file already checked and described,
    /// so that a store shared by threads is held only for the write.
    pub fn attach_prepared(
        &mut self,
        record_id: &str,
        file: PreparedFile,
    ) -> Result<(String, Record)> {
        let PreparedFile { mut meta, bytes } = file;
        // The record must be here (and editable) before anything is written.
        self.get(record_id)?;
        meta.added_by = self.user.clone();
        meta.added_at = (self.clock)();
        let sha = meta.sha256.clone();
        write_blob(&self.blob_dir(), &sha, &bytes)?;
        let id = uuid::Uuid::now_v7().to_string();
        let path = format!("{ATTACHMENTS}.{id}");
        let now = meta.added_at;
        let record = self.edit(record_id, |tx, w, doc, kind| {
            // Not yet sent, even if fetched before: the relay may have
            // dropped it since no record named it, and only after this
            // change reaches it does a record name it again.
            tx.prepare_cached(
                "INSERT INTO blobs (sha256, size, uploaded, last_used) VALUES (?1, ?2, 0, ?3)
                 ON CONFLICT (sha256) DO UPDATE SET last_used = excluded.last_used, uploaded = 0",
            )?
            .execute(params![sha, meta.size as i64, now])?;
            super::update_fields(tx, w, doc, kind, fields([(path.as_str(), meta.to_json())]))
        })?;
        Ok((id, record))
    }

    /// Record `record_id`'s attachments, by id, oldest first.
    pub fn attachments(&self, record_id: &str) -> Result<Vec<(String, Attachment)>> {
        Ok(attachments_of(&self.get(record_id)?))
    }

    /// Sets (or clears) an attachment's caption.
    pub fn caption_attachment(
        &mut self,
        record_id: &str,
        attachment_id: &str,
        caption: Option<&str>,
    ) -> Result<Record> {
        let (_, mut meta) = self
            .attachments(record_id)?
            .into_iter()
            .find(|(id, _)| id == attachment_id)
            .ok_or_else(|| Error::NotFound(format!("attachment {attachment_id}")))?;
        meta.caption = caption.map(str::to_string).filter(|c| !c.is_empty());
        let path = format!("{ATTACHMENTS}.{attachment_id}");
        self.update(record_id, fields([(path.as_str(), meta.to_json())]))
    }

    /// Takes an attachment off its record (its blob stays while any record
    /// on this device names it, and until evicted).
    pub fn remove_attachment(&mut self, record_id: &str, attachment_id: &str) -> Result<Record> {
        if !self
            .attachments(record_id)?
            .iter()
            .any(|(id, _)| id == attachment_id)
        {
            return Err(Error::NotFound(format!("attachment {attachment_id}")));
        }
        let path = format!("{ATTACHMENTS}.{attachment_id}");
        self.update(record_id, fields([(path.as_str(), Value::Null)]))
    }

    /// The bytes of blob `sha256` if this device has them (checked against
    /// the hash; a damaged file is dropped and reported missing).
    pub fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        if !attachment::is_sha256(sha256) {
            return Err(Error::invalid("sha256", sha256, "64 lower-case hex digits"));
        }
        let known: Option<i64> = self
            .conn
            .prepare_cached("SELECT uploaded FROM blobs WHERE sha256 = ?1")?
            .query_row([sha256], |r| r.get(0))
            .optional()?;
        if known.is_none() {
            return Ok(None);
        }
        let file = self.blob_dir().join(sha256);
        let bytes = match fs::read(&file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if sha256_hex(&bytes) != sha256 {
            fs::remove_file(&file)?;
            return Ok(None);
        }
        self.conn
            .prepare_cached("UPDATE blobs SET last_used = ?2 WHERE sha256 = ?1")?
            .execute(params![sha256, (self.clock)()])?;
        Ok(Some(bytes))
    }

    /// Stores a blob fetched from the relay, after checking it is `sha256`.
    pub fn put_blob(&mut self, sha256: &str, bytes: &[u8]) -> Result<()> {
        if sha256_hex(bytes) != sha256 {
            return Err(Error::invalid(
                "sha256",
                sha256,
                "the bytes received are not this blob (their hash differs)",
            ));
        }
        write_blob(&self.blob_dir(), sha256, bytes)?;
        self.conn
            .prepare_cached(
                "INSERT INTO blobs (sha256, size, uploaded, last_used) VALUES (?1, ?2, 1, ?3)
                 ON CONFLICT (sha256) DO UPDATE SET last_used = excluded.last_used",
            )?
            .execute(params![sha256, bytes.len() as i64, (self.clock)()])?;
        Ok(())
    }

    /// Blobs added here that the relay has not confirmed yet, oldest first.
    pub fn blobs_to_upload(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT sha256 FROM blobs WHERE uploaded = 0 ORDER BY last_used")?;
        let rows = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Marks blob `sha256` as held by the relay: from now on it may be
    /// evicted from this device.
    pub fn blob_uploaded(&mut self, sha256: &str) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE blobs SET uploaded = 1 WHERE sha256 = ?1")?
            .execute([sha256])?;
        Ok(())
    }

    /// Keeps this device's blobs within `limit` bytes by removing the
    /// least recently used ones the relay holds — never one still waiting
    /// for upload — and clears files no row names (left by a crash).
    /// Returns how many blobs it removed.
    pub fn evict_blobs(&mut self, limit: u64) -> Result<usize> {
        let dir = self.blob_dir();
        let tx = self.conn.transaction()?;
        let mut removed = 0;
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                // A download under way continues from its partial file.
                let known = name.starts_with(PARTIAL_PREFIX)
                    || attachment::is_sha256(&name)
                        && tx
                            .prepare_cached("SELECT 1 FROM blobs WHERE sha256 = ?1")?
                            .exists([&name])?;
                if !known {
                    fs::remove_file(entry.path())?;
                }
            }
        }
        let total: i64 =
            tx.query_row("SELECT coalesce(sum(size), 0) FROM blobs", [], |r| r.get(0))?;
        let mut over = total - limit as i64;
        let lru: Vec<(String, i64)> = tx
            .prepare(
                "SELECT sha256, size FROM blobs WHERE uploaded = 1 ORDER BY last_used, sha256",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (sha, size) in lru {
            if over <= 0 {
                break;
            }
            tx.execute("DELETE FROM blobs WHERE sha256 = ?1", [&sha])?;
            match fs::remove_file(dir.join(&sha)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            over -= size;
            removed += 1;
        }
        tx.commit()?;
        Ok(removed)
    }
}

/// A record's attachments from its fields, by id, oldest first (ids are
/// UUIDv7: their order is the order they were added).
pub fn attachments_of(record: &Record) -> Vec<(String, Attachment)> {
    // Fields are sorted: the attachments are one run of keys.
    const PREFIX: &str = "attachments.";
    debug_assert_eq!(PREFIX, format!("{ATTACHMENTS}."));
    record
        .fields
        .range::<str, _>((
            std::ops::Bound::Included(PREFIX),
            std::ops::Bound::Unbounded,
        ))
        .take_while(|(k, _)| k.starts_with(PREFIX))
        .filter_map(|(k, v)| {
            let id = k.strip_prefix(PREFIX)?;
            let json = v.as_str()?;
            Some((id.to_string(), Attachment::parse(k, json).ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    const JPEG: &[u8] = &[
        0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F', 0, 1, 2,
    ];

    fn contact(store: &mut Store) -> String {
        store
            .create(
                Kind::Account,
                fields([("name", "Acme GmbH"), ("territory", "north")]),
            )
            .unwrap()
            .id
    }

    fn rows(store: &Store) -> i64 {
        store
            .conn
            .query_row("SELECT count(*) FROM blobs", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn an_attachment_is_metadata_on_the_record_and_a_blob_beside_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("ann.db"), "ann").unwrap();
        let jane = contact(&mut store);
        let (id, record) = store
            .add_attachment(&jane, "card.jpg", "image/jpeg", JPEG, Some("Business card"))
            .unwrap();
        let [(listed, meta)] = attachments_of(&record).try_into().unwrap();
        assert_eq!(listed, id);
        assert_eq!(
            (meta.size, meta.added_by.as_str()),
            (JPEG.len() as u64, "ann")
        );
        assert_eq!(meta.sha256, sha256_hex(JPEG));
        assert_eq!(store.blob(&meta.sha256).unwrap().as_deref(), Some(JPEG));
        assert!(dir.path().join("ann.db.blobs").join(&meta.sha256).exists());
        assert_eq!(
            store.blobs_to_upload().unwrap(),
            std::slice::from_ref(&meta.sha256)
        );
        assert_eq!(store.outbox_status().unwrap().pending, 2, "create + attach");

        // The same photo again: a second attachment, one blob.
        store
            .add_attachment(&jane, "card again.jpg", "image/jpeg", JPEG, None)
            .unwrap();
        assert_eq!(store.attachments(&jane).unwrap().len(), 2);
        assert_eq!(rows(&store), 1);

        // Caption and removal are ordinary edits.
        let record = store
            .caption_attachment(&jane, &id, Some("Jane's card"))
            .unwrap();
        let (_, meta) = &attachments_of(&record)[0];
        assert_eq!(meta.caption.as_deref(), Some("Jane's card"));
        store.remove_attachment(&jane, &id).unwrap();
        assert_eq!(store.attachments(&jane).unwrap().len(), 1);
        let err = store.remove_attachment(&jane, &id).unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err}");
        // The header alone is no picture: no thumbnail.
        assert!(store.attachments(&jane).unwrap()[0].1.thumbnail.is_none());
    }

    #[test]
    fn a_photo_gets_a_thumbnail_in_its_metadata_that_outlives_a_caption_edit() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("ann.db"), "ann").unwrap();
        let jane = contact(&mut store);
        let photo = crate::model::thumbnail::sample_photo(800, 1000, image::ImageFormat::Jpeg);
        let (id, _) = store
            .add_attachment(&jane, "shelf.jpg", "image/jpeg", &photo, None)
            .unwrap();
        store
            .caption_attachment(&jane, &id, Some("Aisle 4"))
            .unwrap();
        let [(_, meta)] = store.attachments(&jane).unwrap().try_into().unwrap();
        let thumb = image::load_from_memory(&meta.thumbnail_jpeg().unwrap()).unwrap();
        assert_eq!((thumb.width(), thumb.height()), (102, 128));
        assert_eq!(meta.caption.as_deref(), Some("Aisle 4"));
    }

    #[test]
    fn a_disguised_or_oversize_file_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("ann.db"), "ann").unwrap();
        let jane = contact(&mut store);
        let html = b"<!DOCTYPE html><script>steal()</script>";
        let err = store
            .add_attachment(&jane, "photo.jpg", "image/jpeg", html, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not image/jpeg"), "{err}");
        let big = vec![b'a'; attachment::MAX_ATTACHMENT_BYTES as usize + 1];
        let err = store
            .add_attachment(&jane, "big.txt", "text/plain", &big, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("25 MiB"), "{err}");
        let err = store
            .add_attachment(&jane, "../x.jpg", "image/jpeg", JPEG, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("file name"), "{err}");
        assert!(store.attachments(&jane).unwrap().is_empty());
        assert_eq!(rows(&store), 0);
        assert!(!dir.path().join("ann.db.blobs").exists());
    }

    #[test]
    fn what_a_crash_leaves_never_counts_as_a_blob_and_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("ann.db"), "ann").unwrap();
        let jane = contact(&mut store);
        let blobs = dir.path().join("ann.db.blobs");
        fs::create_dir_all(&blobs).unwrap();
        // Killed mid-write: a half temporary file. Killed after the rename,
        // before the commit: a whole file no row or record names.
        fs::write(blobs.join(".tmp-1234"), &JPEG[..4]).unwrap();
        let sha = sha256_hex(JPEG);
        fs::write(blobs.join(&sha), JPEG).unwrap();
        assert_eq!(store.blob(&sha).unwrap(), None, "no row: not here");
        assert!(store.blobs_to_upload().unwrap().is_empty());
        assert_eq!(store.evict_blobs(u64::MAX).unwrap(), 0);
        assert_eq!(
            fs::read_dir(&blobs).unwrap().count(),
            0,
            "stray files cleared"
        );
        // The user's retry works as if nothing happened.
        store
            .add_attachment(&jane, "card.jpg", "image/jpeg", JPEG, None)
            .unwrap();
        assert_eq!(store.blob(&sha).unwrap().as_deref(), Some(JPEG));
        // A damaged file is not served.
        fs::write(blobs.join(&sha), b"garbage").unwrap();
        assert_eq!(store.blob(&sha).unwrap(), None);
    }

    #[test]
    fn eviction_keeps_within_the_limit_least_recently_used_first_and_never_an_unsent_blob() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("ann.db"), "ann").unwrap();
        let jane = contact(&mut store);
        let texts: Vec<Vec<u8>> = (0..4)
            .map(|i| format!("delivery note {i:04}").into_bytes())
            .collect();
        let shas: Vec<String> = texts.iter().map(|t| sha256_hex(t)).collect();
        // Three fetched from the relay, one made here and not yet sent.
        for t in &texts[..3] {
            store.put_blob(&sha256_hex(t), t).unwrap();
        }
        store
            .add_attachment(&jane, "mine.txt", "text/plain", &texts[3], None)
            .unwrap();
        let err = store
            .put_blob(&shas[0], b"other bytes")
            .unwrap_err()
            .to_string();
        assert!(err.contains("hash differs"), "{err}");
        // Use the first again: the second is now the least recently used.
        std::thread::sleep(std::time::Duration::from_millis(3));
        store.blob(&shas[0]).unwrap().unwrap();
        let size = texts[0].len() as u64;
        assert_eq!(store.evict_blobs(2 * size).unwrap(), 2);
        assert!(store.blob(&shas[1]).unwrap().is_none());
        assert!(store.blob(&shas[2]).unwrap().is_none());
        assert!(store.blob(&shas[0]).unwrap().is_some());
        // Limit 0: everything the relay holds goes; the unsent one stays.
        store.evict_blobs(0).unwrap();
        assert!(store.blob(&shas[0]).unwrap().is_none());
        assert_eq!(
            store.blob(&shas[3]).unwrap().as_deref(),
            Some(&texts[3][..])
        );
        store.blob_uploaded(&shas[3]).unwrap();
        assert_eq!(store.evict_blobs(0).unwrap(), 1);
        assert!(store.blobs_to_upload().unwrap().is_empty());
    }
}
