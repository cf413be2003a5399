//! Backup and restore of the embedded store.
//!
//! [`backup`] copies the relay's file with `VACUUM INTO`, which reads one
//! consistent snapshot inside one read transaction: syncs go on while it
//! runs (WAL), and the copy is the store as it was at one moment.
//! [`restore`] puts a copy back while no relay serves the folder, and keeps
//! the store it replaces beside it. A restored store gets a new log
//! identity, so every device whose cursor names the old one queues again
//! the changes the restored relay may lack (docs/protocol.md, "Restored
//! relays").

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::tables::{self, SCHEMA_VERSION};
use crate::relay::{RelayError, Result};

/// The relay's file in its data folder.
pub(super) const FILE: &str = "relay.db";

/// What a backup wrote.
#[derive(Debug)]
pub struct BackupReport {
    pub path: PathBuf,
    /// The last log sequence number the copy holds.
    pub head: u64,
    pub bytes: u64,
    /// Where the attachment blobs went (`<path>.blobs/`), and how many.
    pub blobs_path: PathBuf,
    pub blobs: usize,
}

/// What a restore did.
#[derive(Debug)]
pub struct RestoreReport {
    /// The last log sequence number of the restored store.
    pub head: u64,
    /// Where the replaced store was moved (none if the folder had none).
    pub kept: Option<PathBuf>,
}

/// Held by `serve` for as long as it serves a data folder (an advisory
/// lock on `relay.lock`, released by the system when the process ends,
/// however it ends), so that `restore` cannot replace the store under a
/// running relay, and two relays cannot serve one folder.
#[derive(Debug)]
pub struct ServeLock {
    _file: File,
}

impl ServeLock {
    pub fn acquire(dir: &Path) -> Result<ServeLock> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, "create", e))?;
        let path = dir.join("relay.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_error(&path, "open", e))?;
        match file.try_lock() {
            Ok(()) => Ok(ServeLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(RelayError::Invalid(format!(
                "a relay is serving {} (it holds relay.lock); stop it first",
                dir.display()
            ))),
            Err(TryLockError::Error(e)) => Err(io_error(&path, "lock", e)),
        }
    }
}

/// Writes a consistent copy of the store in `dir` to `dest` (a new file)
/// while the relay may be serving. The copy is written to `dest.partial`,
/// synced to disk, then renamed, so `dest` is never half a backup.
pub fn backup(dir: &Path, dest: &Path) -> Result<BackupReport> {
    let source = dir.join(FILE);
    if !source.exists() {
        return Err(RelayError::Invalid(format!(
            "there is no relay store in {} ({FILE} is missing)",
            dir.display()
        )));
    }
    if dest.exists() {
        return Err(RelayError::Invalid(format!(
            "{} exists already; back up to a new file",
            dest.display()
        )));
    }
    let folder = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        return Err(RelayError::Invalid(format!(
            "cannot back up to {}: there is no folder {}",
            dest.display(),
            folder.display()
        )));
    }
    let partial = with_suffix(dest, ".partial");
    remove_if_exists(&partial)?;
    let conn = open(&source, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    schema_of(&conn, &source)?;
    let target = partial
        .to_str()
        .ok_or_else(|| RelayError::Invalid(format!("{} is not a UTF-8 path", partial.display())))?;
    conn.execute("VACUUM INTO ?1", [target])?;
    drop(conn);
    let head = {
        let copy = open(&partial, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        tables::renew_log_id(&copy)?;
        tables::head(&copy)?
    };
    sync_file(&partial)?;
    // The blobs the copy names, before the copy appears: blobs are only
    // added or, long after no record names them, removed.
    let blobs_path = with_suffix(dest, ".blobs");
    let blobs = super::blob_files::copy_blobs(&super::blob_files::folder(dir), &blobs_path)?;
    std::fs::rename(&partial, dest).map_err(|e| io_error(dest, "rename to", e))?;
    sync_parent(dest)?;
    let bytes = std::fs::metadata(dest)
        .map_err(|e| io_error(dest, "read", e))?
        .len();
    Ok(BackupReport {
        path: dest.to_path_buf(),
        head,
        bytes,
        blobs_path,
        blobs,
    })
}

/// Replaces the store in `dir` with the backup `from`, while no relay
/// serves `dir`. The backup is checked first (SQLite's integrity check, a
/// relay store of a schema this build knows); the replaced store is moved
/// to `dir/replaced-<time>/`, never deleted.
pub fn restore(dir: &Path, from: &Path) -> Result<RestoreReport> {
    if !from.is_file() {
        return Err(RelayError::Invalid(format!(
            "there is no backup file {}",
            from.display()
        )));
    }
    let _lock = ServeLock::acquire(dir)?;
    {
        let conn = open(from, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let version = schema_of(&conn, from)?;
        if version > SCHEMA_VERSION {
            return Err(RelayError::Invalid(format!(
                "{} was made by a newer FieldCRM (relay schema {version}, this build knows {SCHEMA_VERSION}); upgrade the server first",
                from.display()
            )));
        }
        let check: String = conn.query_row("PRAGMA integrity_check(1)", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(RelayError::Invalid(format!(
                "{} is damaged ({check}); restore another backup",
                from.display()
            )));
        }
    }
    // The backup's blobs join those here (any extra ones are collected
    // as garbage once no record names them).
    super::blob_files::copy_blobs(
        &with_suffix(from, ".blobs"),
        &super::blob_files::folder(dir),
    )?;
    let incoming = dir.join(format!("{FILE}.restoring"));
    remove_if_exists(&incoming)?;
    std::fs::copy(from, &incoming).map_err(|e| io_error(&incoming, "write", e))?;
    let head = {
        let conn = open(&incoming, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        tables::renew_log_id(&conn)?;
        tables::head(&conn)?
    };
    sync_file(&incoming)?;
    let current = dir.join(FILE);
    let kept = if current.exists() {
        let stamp = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ");
        let kept = dir.join(format!("replaced-{stamp}"));
        std::fs::create_dir(&kept).map_err(|e| io_error(&kept, "create", e))?;
        // The write-ahead log belongs with its file: moved together they
        // stay the store they were.
        for name in [
            FILE.to_string(),
            format!("{FILE}-wal"),
            format!("{FILE}-shm"),
        ] {
            let path = dir.join(&name);
            if path.exists() {
                std::fs::rename(&path, kept.join(&name)).map_err(|e| io_error(&path, "move", e))?;
            }
        }
        Some(kept)
    } else {
        None
    };
    std::fs::rename(&incoming, &current).map_err(|e| io_error(&current, "rename to", e))?;
    sync_parent(&current)?;
    Ok(RestoreReport { head, kept })
}

fn open(path: &Path, flags: OpenFlags) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| RelayError::Invalid(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(Duration::from_secs(30))?;
    Ok(conn)
}

/// The relay schema version of the store at `path`, or a clear error when
/// it is not a FieldCRM relay store.
fn schema_of(conn: &Connection, path: &Path) -> Result<i64> {
    let not_ours =
        || RelayError::Invalid(format!("{} is not a FieldCRM relay store", path.display()));
    let version: Option<String> = conn
        .query_row(
            "SELECT value FROM relay_meta WHERE key = 'schema'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|_| not_ours())?;
    version.and_then(|v| v.parse().ok()).ok_or_else(not_ours)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(path, "remove", e)),
        _ => Ok(()),
    }
}

fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_error(path, "sync", e))
}

/// Makes a rename in the folder durable.
fn sync_parent(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    sync_file(parent)
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> RelayError {
    if e.raw_os_error() == Some(28) {
        return RelayError::StorageFull;
    }
    RelayError::Invalid(format!("cannot {what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_relay_cannot_serve_a_folder_and_restore_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let lock = ServeLock::acquire(dir.path()).unwrap();
        let again = ServeLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(again.contains("a relay is serving"), "{again}");
        let backup = dir.path().join("x.db");
        std::fs::write(&backup, b"").unwrap();
        let refused = restore(dir.path(), &backup).unwrap_err().to_string();
        assert!(refused.contains("stop it first"), "{refused}");
        let missing = restore(dir.path(), &dir.path().join("nope.db"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("there is no backup file"), "{missing}");
        drop(lock);
        ServeLock::acquire(dir.path()).unwrap();
    }

    fn log_id_of(path: &Path) -> String {
        Connection::open(path)
            .unwrap()
            .query_row(
                "SELECT value FROM relay_meta WHERE key = 'log_id'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    }

    #[test]
    fn a_backup_is_the_store_with_a_new_log_identity_and_a_restore_keeps_what_it_replaced() {
        use crate::relay::sqlite::SqliteRelay;
        use crate::relay::RelayStore;
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let relay = SqliteRelay::open(&live).unwrap();
        relay.add_territory("north").unwrap();
        let original = relay.log_id().to_string();
        let dest = dir.path().join("backup.db");
        let done = backup(&live, &dest).unwrap();
        assert_eq!(done.head, 0);
        assert!(dest.exists() && !with_suffix(&dest, ".partial").exists());
        let copied = log_id_of(&dest);
        assert_ne!(copied, original);
        let again = backup(&live, &dest).unwrap_err().to_string();
        assert!(again.contains("exists already"), "{again}");

        // Into an empty folder: nothing to keep.
        let fresh = dir.path().join("fresh");
        assert!(restore(&fresh, &dest).unwrap().kept.is_none());
        let restored = SqliteRelay::open(&fresh).unwrap();
        assert_eq!(restored.territories().unwrap(), ["north"]);
        assert!(![original.as_str(), copied.as_str()].contains(&restored.log_id()));
        drop(restored);

        // Over the live store (its relay stopped): it is kept, whole.
        relay.add_territory("south").unwrap();
        drop(relay);
        let kept = restore(&live, &dest).unwrap().kept.unwrap();
        let old = SqliteRelay::open(&kept).unwrap();
        assert_eq!(old.territories().unwrap(), ["north", "south"]);
        assert_eq!(old.log_id(), original);
        assert_eq!(
            SqliteRelay::open(&live).unwrap().territories().unwrap(),
            ["north"]
        );
    }

    #[test]
    fn only_a_relay_store_is_backed_up_or_restored() {
        let dir = tempfile::tempdir().unwrap();
        let missing = backup(dir.path(), &dir.path().join("b.db"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("relay.db is missing"), "{missing}");
        crate::relay::sqlite::SqliteRelay::open(dir.path()).unwrap();
        let nowhere = backup(dir.path(), &dir.path().join("no/such/folder/b.db"))
            .unwrap_err()
            .to_string();
        assert!(nowhere.contains("there is no folder"), "{nowhere}");
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let into = tempfile::tempdir().unwrap();
        let refused = restore(into.path(), &other).unwrap_err().to_string();
        assert!(refused.contains("not a FieldCRM relay store"), "{refused}");
        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, b"not a database at all, just text").unwrap();
        let refused = restore(into.path(), &garbage).unwrap_err().to_string();
        assert!(refused.contains("garbage.db"), "{refused}");
        assert!(!into.path().join(FILE).exists());
    }
}
