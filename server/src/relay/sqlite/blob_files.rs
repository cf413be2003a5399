//! The embedded relay's blobs: files in the data folder.
//!
//! `blobs/<sha256>` is a whole, verified blob; `blobs/partial/<sha256>` an
//! upload under way, whose length is what the relay holds (each chunk is
//! synced before it is acknowledged). A verified upload is renamed into
//! place and the folder synced: a blob file is never half a blob. Which
//! blobs no record names, and since when, is kept in the table
//! `relay_blob_orphans` for garbage collection.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use rusqlite::{params, Connection};

use crate::relay::blobs::{BlobRef, Held};
use crate::relay::{RelayError, Result};

/// A data folder's blob folders.
#[derive(Debug)]
pub(super) struct BlobFiles {
    whole: PathBuf,
    partial: PathBuf,
    /// Held while a chunk is appended, an upload sealed or dropped, or
    /// garbage collected: the file length checked is the one written to.
    writing: Mutex<()>,
}

fn io(path: &Path, what: &str, e: std::io::Error) -> RelayError {
    if e.raw_os_error() == Some(28) {
        // ENOSPC: answered as "storage full", like a full database.
        return RelayError::StorageFull;
    }
    RelayError::Storage(format!("cannot {what} {}: {e}", path.display()))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, "sync", e))
}

impl BlobFiles {
    pub(super) fn in_folder(dir: &Path) -> Result<BlobFiles> {
        let whole = folder(dir);
        let partial = whole.join("partial");
        fs::create_dir_all(&partial).map_err(|e| io(&partial, "create", e))?;
        Ok(BlobFiles {
            whole,
            partial,
            writing: Mutex::new(()),
        })
    }

    fn writing(&self) -> MutexGuard<'_, ()> {
        self.writing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blob names are checked by the rules (64 hex digits) before any of
    /// these is called; this keeps a path from ever leaving the folder.
    fn name(sha: &str) -> Result<&str> {
        if fieldcrm_core::attachment::is_sha256(sha) {
            Ok(sha)
        } else {
            Err(RelayError::Invalid(format!("{sha:?} is not a blob name")))
        }
    }

    pub(super) fn held(&self, sha: &str) -> Result<Held> {
        let name = Self::name(sha)?;
        let len = |p: PathBuf| fs::metadata(p).ok().map(|m| m.len());
        Ok(
            match (len(self.whole.join(name)), len(self.partial.join(name))) {
                (Some(n), _) => Held::Whole(n),
                (None, Some(n)) => Held::Partial(n),
                (None, None) => Held::Nothing,
            },
        )
    }

    pub(super) fn append(&self, sha: &str, offset: u64, bytes: &[u8]) -> Result<u64> {
        let path = self.partial.join(Self::name(sha)?);
        let _writing = self.writing();
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io(&path, "open", e))?;
        let held = file.metadata().map_err(|e| io(&path, "read", e))?.len();
        if held != offset {
            return Err(RelayError::WrongOffset {
                sha256: sha.to_string(),
                received: held,
            });
        }
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.write_all(bytes))
            .and_then(|_| file.sync_data())
            .map_err(|e| io(&path, "write", e))?;
        if offset == 0 {
            // A new file's name is durable once the folder is synced.
            sync_dir(&self.partial)?;
        }
        Ok(offset + bytes.len() as u64)
    }

    pub(super) fn read(&self, sha: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let name = Self::name(sha)?;
        let path = [self.whole.join(name), self.partial.join(name)]
            .into_iter()
            .find(|p| p.exists())
            .ok_or_else(|| RelayError::NotFound(format!("blob {sha} is not here")))?;
        let mut file = File::open(&path).map_err(|e| io(&path, "open", e))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| io(&path, "read", e))?;
        let mut bytes = Vec::with_capacity(len.min(64 << 20) as usize);
        file.take(len)
            .read_to_end(&mut bytes)
            .map_err(|e| io(&path, "read", e))?;
        Ok(bytes)
    }

    pub(super) fn seal(&self, sha: &str) -> Result<()> {
        let name = Self::name(sha)?;
        let (from, to) = (self.partial.join(name), self.whole.join(name));
        let _writing = self.writing();
        fs::rename(&from, &to).map_err(|e| io(&from, "move", e))?;
        sync_dir(&self.whole)?;
        sync_dir(&self.partial)
    }

    pub(super) fn drop_partial(&self, sha: &str) -> Result<()> {
        let path = self.partial.join(Self::name(sha)?);
        let _writing = self.writing();
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path, "remove", e)),
            _ => Ok(()),
        }
    }

    /// Garbage collection (see the module docs): whole blobs no record
    /// names are marked, and removed once marked for `grace_ms`; uploads
    /// untouched for `grace_ms` are removed. `conn` is the writer's
    /// transaction.
    pub(super) fn collect(&self, conn: &Connection, now: i64, grace_ms: i64) -> Result<usize> {
        let _writing = self.writing();
        let mut removed = 0;
        let names = |dir: &Path| -> Result<Vec<String>> {
            Ok(fs::read_dir(dir)
                .map_err(|e| io(dir, "list", e))?
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect())
        };
        for name in names(&self.whole)? {
            if !fieldcrm_core::attachment::is_sha256(&name) {
                continue;
            }
            let named = conn
                .prepare_cached("SELECT 1 FROM attachment_refs WHERE sha256 = ?1")?
                .exists([&name])?;
            if named {
                conn.prepare_cached("DELETE FROM relay_blob_orphans WHERE sha256 = ?1")?
                    .execute([&name])?;
                continue;
            }
            conn.prepare_cached(
                "INSERT INTO relay_blob_orphans (sha256, since) VALUES (?1, ?2)
                 ON CONFLICT (sha256) DO NOTHING",
            )?
            .execute(params![name, now])?;
            let since: i64 = conn
                .prepare_cached("SELECT since FROM relay_blob_orphans WHERE sha256 = ?1")?
                .query_row([&name], |r| r.get(0))?;
            if since <= now - grace_ms {
                let path = self.whole.join(&name);
                fs::remove_file(&path).map_err(|e| io(&path, "remove", e))?;
                conn.prepare_cached("DELETE FROM relay_blob_orphans WHERE sha256 = ?1")?
                    .execute([&name])?;
                removed += 1;
            }
        }
        let stale = UNIX_EPOCH + Duration::from_millis((now - grace_ms).max(0) as u64);
        for name in names(&self.partial)? {
            let path = self.partial.join(&name);
            let touched = fs::metadata(&path).and_then(|m| m.modified());
            if touched.is_ok_and(|t| t <= stale) {
                fs::remove_file(&path).map_err(|e| io(&path, "remove", e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// The folder of whole blobs in data folder `dir`.
pub(super) fn folder(dir: &Path) -> PathBuf {
    dir.join("blobs")
}

/// Copies the blob files of `from` missing in `dest` (backups: blobs are
/// immutable, so a name present is the same bytes), each through a
/// temporary file, synced, then renamed. Returns how many.
pub(super) fn copy_blobs(from: &Path, dest: &Path) -> Result<usize> {
    if !from.exists() {
        return Ok(0);
    }
    fs::create_dir_all(dest).map_err(|e| io(dest, "create", e))?;
    let mut copied = 0;
    for entry in fs::read_dir(from)
        .map_err(|e| io(from, "list", e))?
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !fieldcrm_core::attachment::is_sha256(&name) || dest.join(&name).exists() {
            continue;
        }
        let tmp = dest.join(format!(".{name}.partial"));
        fs::copy(entry.path(), &tmp).map_err(|e| io(&tmp, "write", e))?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| io(&tmp, "sync", e))?;
        fs::rename(&tmp, dest.join(&name)).map_err(|e| io(&tmp, "move", e))?;
        copied += 1;
    }
    sync_dir(dest)?;
    Ok(copied)
}

/// The records naming blob `sha`, with their territories.
pub(super) fn refs(conn: &Connection, sha: &str) -> Result<Vec<BlobRef>> {
    let mut stmt = conn.prepare_cached(
        "SELECT a.record_id, r.territory, a.media_type, a.size
         FROM attachment_refs a JOIN records r ON r.id = a.record_id WHERE a.sha256 = ?1",
    )?;
    let refs = stmt
        .query_map([sha], |r| {
            Ok(BlobRef {
                record_id: r.get(0)?,
                territory: r.get(1)?,
                media_type: r.get(2)?,
                size: r.get::<_, i64>(3)? as u64,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(refs)
}
