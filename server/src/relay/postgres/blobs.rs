//! The PostgreSQL relay's blobs: in the database, so every relay process
//! on it serves every blob with no shared folder to mount, and one backup
//! (`pg_dump`) holds records and files together (decision 0011).
//!
//! `relay_blobs` has a row per blob (its size, the bytes received, whether
//! it is whole and verified, when no record named it any more);
//! `relay_blob_chunks` its bytes, one row per uploaded chunk, keyed by
//! where the chunk starts. An append locks the blob's row, so two relays
//! taking chunks of one blob at once cannot interleave.

use postgres::GenericClient;

use crate::relay::blobs::{BlobRef, Held};
use crate::relay::{RelayError, Result};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS relay_blob_refs (
    sha256     TEXT NOT NULL,
    record_id  TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size       BIGINT NOT NULL,
    PRIMARY KEY (sha256, record_id)
);
CREATE INDEX IF NOT EXISTS relay_blob_refs_record ON relay_blob_refs (record_id);
CREATE TABLE IF NOT EXISTS relay_blobs (
    sha256      TEXT PRIMARY KEY,
    received    BIGINT NOT NULL,
    whole       BOOLEAN NOT NULL,
    updated_at  BIGINT NOT NULL,
    orphaned_at BIGINT
);
CREATE TABLE IF NOT EXISTS relay_blob_chunks (
    sha256 TEXT NOT NULL REFERENCES relay_blobs (sha256) ON DELETE CASCADE,
    start  BIGINT NOT NULL,
    data   BYTEA NOT NULL,
    PRIMARY KEY (sha256, start)
);
";

/// Fills `relay_blob_refs` from the stored records (upgrading to schema 8).
pub(super) const FILL_REFS: &str = "
INSERT INTO relay_blob_refs (sha256, record_id, media_type, size)
SELECT f.value::jsonb->>'sha256', r.id, f.value::jsonb->>'media_type', (f.value::jsonb->>'size')::bigint
FROM relay_records r, jsonb_each_text(r.record::jsonb->'fields') f
WHERE f.key LIKE 'attachments.%' AND f.value LIKE '{%'
ON CONFLICT DO NOTHING;
";

pub(super) fn refs(conn: &mut impl GenericClient, sha: &str) -> Result<Vec<BlobRef>> {
    Ok(conn
        .query(
            "SELECT a.record_id, r.territory, a.media_type, a.size
             FROM relay_blob_refs a JOIN relay_records r ON r.id = a.record_id
             WHERE a.sha256 = $1",
            &[&sha],
        )?
        .iter()
        .map(|r| BlobRef {
            record_id: r.get(0),
            territory: r.get(1),
            media_type: r.get(2),
            size: r.get::<_, i64>(3) as u64,
        })
        .collect())
}

pub(super) fn held(conn: &mut impl GenericClient, sha: &str) -> Result<Held> {
    let row = conn.query_opt(
        "SELECT received, whole FROM relay_blobs WHERE sha256 = $1",
        &[&sha],
    )?;
    Ok(match row {
        None => Held::Nothing,
        Some(r) if r.get::<_, bool>(1) => Held::Whole(r.get::<_, i64>(0) as u64),
        Some(r) => Held::Partial(r.get::<_, i64>(0) as u64),
    })
}

pub(super) fn append(
    conn: &mut impl GenericClient,
    sha: &str,
    offset: u64,
    bytes: &[u8],
    now: i64,
) -> Result<u64> {
    let mut tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO relay_blobs (sha256, received, whole, updated_at) VALUES ($1, 0, false, $2)
         ON CONFLICT (sha256) DO NOTHING",
        &[&sha, &now],
    )?;
    let row = tx.query_one(
        "SELECT received, whole FROM relay_blobs WHERE sha256 = $1 FOR UPDATE",
        &[&sha],
    )?;
    let received = row.get::<_, i64>(0) as u64;
    if row.get::<_, bool>(1) || received != offset {
        return Err(RelayError::WrongOffset {
            sha256: sha.to_string(),
            received,
        });
    }
    let end = offset + bytes.len() as u64;
    tx.execute(
        "INSERT INTO relay_blob_chunks (sha256, start, data) VALUES ($1, $2, $3)",
        &[&sha, &(offset as i64), &bytes],
    )?;
    tx.execute(
        "UPDATE relay_blobs SET received = $2, updated_at = $3 WHERE sha256 = $1",
        &[&sha, &(end as i64), &now],
    )?;
    tx.commit()?;
    Ok(end)
}

pub(super) fn read(
    conn: &mut impl GenericClient,
    sha: &str,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>> {
    let end = offset + len;
    let rows = conn.query(
        "SELECT start, data FROM relay_blob_chunks
         WHERE sha256 = $1 AND start < $3 AND start + length(data) > $2 ORDER BY start",
        &[&sha, &(offset as i64), &(end as i64)],
    )?;
    let mut bytes = Vec::with_capacity(len.min(64 << 20) as usize);
    for row in rows {
        let start = row.get::<_, i64>(0) as u64;
        let data: &[u8] = row.get(1);
        let from = offset.saturating_sub(start) as usize;
        let to = ((end - start) as usize).min(data.len());
        bytes.extend_from_slice(&data[from..to]);
    }
    Ok(bytes)
}

pub(super) fn seal(conn: &mut impl GenericClient, sha: &str, size: u64) -> Result<()> {
    conn.execute(
        "UPDATE relay_blobs SET whole = true WHERE sha256 = $1 AND received = $2",
        &[&sha, &(size as i64)],
    )?;
    Ok(())
}

pub(super) fn drop_partial(conn: &mut impl GenericClient, sha: &str) -> Result<()> {
    conn.execute(
        "DELETE FROM relay_blobs WHERE sha256 = $1 AND NOT whole",
        &[&sha],
    )?;
    Ok(())
}

/// See [`crate::relay::RelayStore::collect_blobs`].
pub(super) fn collect(conn: &mut impl GenericClient, now: i64, grace_ms: i64) -> Result<usize> {
    let mut tx = conn.transaction()?;
    // Named again: no longer an orphan.
    tx.execute(
        "UPDATE relay_blobs b SET orphaned_at = NULL WHERE orphaned_at IS NOT NULL
             AND EXISTS (SELECT 1 FROM relay_blob_refs a WHERE a.sha256 = b.sha256)",
        &[],
    )?;
    tx.execute(
        "UPDATE relay_blobs b SET orphaned_at = $1 WHERE whole AND orphaned_at IS NULL
             AND NOT EXISTS (SELECT 1 FROM relay_blob_refs a WHERE a.sha256 = b.sha256)",
        &[&now],
    )?;
    let removed = tx.execute(
        "DELETE FROM relay_blobs WHERE (whole AND orphaned_at <= $1) OR (NOT whole AND updated_at <= $1)",
        &[&(now - grace_ms)],
    )?;
    tx.commit()?;
    Ok(removed as usize)
}
