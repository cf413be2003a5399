//! Sync protocol v1 wire types (docs/protocol.md), shared by the device's
//! sync client and the relay. Bodies are CBOR; every envelope starts with
//! its `version`, which is checked before anything else is decoded.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const PROTOCOL_VERSION: u32 = 1;
pub const SUPPORTED_VERSIONS: &[u32] = &[1];
/// Content type of request and response bodies.
pub const CONTENT_TYPE: &str = "application/cbor";

/// Where a device is in the relay's log. Every field may be left out: an
/// empty map is the cursor of a device that never synced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cursor {
    /// Log sequence number of the last change seen (0: none yet).
    pub seq: u64,
    /// Set while a bootstrap from compacted documents is under way.
    pub bootstrap: Option<Bootstrap>,
    /// The territories the device's data covers (`["*"]`: all), so the relay
    /// can tell it what to evict and fetch when the user's territories change.
    /// Kept in the cursor, it is saved with the data it describes.
    #[serde(default)]
    pub view: Option<Vec<String>>,
    /// The identity of the relay's log this cursor points into. A relay
    /// restored from a backup has a new one, which tells it that this
    /// device may hold changes it acknowledged but lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

impl Cursor {
    /// A device that has seen nothing of the relay's log yet.
    pub fn is_fresh(&self) -> bool {
        self.seq == 0 && self.bootstrap.is_none()
    }
}

/// Progress of a bootstrap: records are sent territory by territory, in id
/// order within each; afterwards the device continues from the log position
/// `start_seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bootstrap {
    /// The territory being sent ("" for users who see all of them).
    #[serde(default)]
    pub territory: String,
    pub after_id: String,
    pub start_seq: u64,
    /// The territories this bootstrap sends, every record of them ("" for
    /// all): territories the user gained. `None`: a first bootstrap, of
    /// all the user's territories, leaving out records this device made.
    #[serde(default)]
    pub only: Option<Vec<String>>,
}

/// `POST /v1/sync` body: push the outbox, pull what the device lacks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub version: u32,
    pub device_id: String,
    pub cursor: Cursor,
    pub push: Vec<RecordBytes>,
    /// Largest response the device wants, in bytes of change data.
    pub max_bytes: u64,
    /// Send the relay's projection of each bootstrap snapshot
    /// ([`SyncResponse::projections`]) so the device need not read the
    /// documents to list them. Left out by older devices.
    #[serde(default)]
    pub projections: bool,
}

/// Bytes (one change, or one compacted document) of one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordBytes {
    pub record_id: String,
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// A pushed change the relay refused; nothing of it was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The change's hash (empty when the bytes were not a change at all).
    #[serde(with = "serde_bytes")]
    pub hash: Vec<u8>,
    /// What was wrong, in words a user can read.
    pub reason: String,
    /// What kind of refusal it is (protocol.md lists the codes).
    #[serde(default)]
    pub code: String,
    /// The field the refusal is about, when it names one.
    #[serde(default)]
    pub field: Option<String>,
}

/// The relay's answer to a [`SyncRequest`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncResponse {
    pub version: u32,
    /// Hashes of pushed changes the relay stored durably (or already had).
    pub acks: Vec<serde_bytes::ByteBuf>,
    /// Pushed changes the relay refused, with the reason; the device keeps them.
    pub rejected: Vec<Rejection>,
    /// Compacted documents (bootstrap, or a record that entered the device's territories).
    pub snapshots: Vec<RecordBytes>,
    /// Changes in log order.
    pub changes: Vec<RecordBytes>,
    /// Records a pushed change was refused for, as the relay has them
    /// (empty bytes: it has none the user may see): the device replaces its
    /// copy with this one and re-makes its later edits on top.
    #[serde(default)]
    pub resets: Vec<RecordBytes>,
    /// Records that left the device's territories: delete them locally.
    pub evict: Vec<String>,
    /// Territories the user no longer has: delete their records locally.
    pub evict_territories: Vec<String>,
    pub cursor: Cursor,
    /// More is waiting: sync again at once.
    pub more: bool,
    /// The device behind each Automerge actor that made changes to the
    /// records in this page, so a device's history can say which device
    /// made each change. Left out by older relays.
    #[serde(default)]
    pub devices: Vec<ActorDevice>,
    /// The relay was restored from a backup since this device last synced
    /// (its cursor named another log, or a position past the log's end):
    /// nothing pushed in this request was looked at, and the cursor starts
    /// over. The device sends again every change its user made here, before
    /// its outbox; the relay acknowledges those it still has.
    #[serde(default)]
    pub restored: bool,
    /// What the user's role lets them change under the write rules
    /// (`rep`, `manager`, `office`, `admin`), so the device refuses at the
    /// call what the relay would refuse. Left out by older relays.
    #[serde(default)]
    pub standing: Option<crate::model::Standing>,
    /// When the request asked for them: what the relay's reading of each
    /// bootstrap snapshot gives, in the snapshots' order (a record may have
    /// none). Counted in `max_bytes` with the snapshots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projections: Vec<Projection>,
}

/// A record as the relay's projection holds it, beside the snapshot it was
/// read from: a device stores it as its own projection row instead of
/// reading the document (docs/decisions/0012-bootstrap-projections.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Projection {
    pub record_id: String,
    /// How the record was read from the document ([`crate::READING`]); a
    /// device of another reading reads the document itself.
    pub reading: u32,
    /// The record as JSON (the projection's `record` column).
    pub record: String,
    /// Whether the document holds concurrent values of a field.
    pub has_conflicts: bool,
    /// A deal's stage history (JSON `[[ms, "stage"], ...]`).
    #[serde(default)]
    pub stage_history: Option<String>,
}

/// An Automerge actor (hex) and the device id that pushed with it first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorDevice {
    pub actor: String,
    pub device: String,
}

/// `POST /v1/login` body (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// `POST /v1/login` answer (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginResponse {
    pub token: String,
    pub user: String,
    pub role: String,
    pub territories: Vec<String>,
}

/// How far a blob has come at the relay: the JSON answer of
/// `GET /v1/blobs/{sha256}/status` and of every upload chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobStatus {
    pub sha256: String,
    /// The size the attachment declares.
    pub size: u64,
    /// Bytes the relay holds: where the next chunk starts.
    pub received: u64,
    /// Held whole and verified: nothing more to send.
    pub complete: bool,
}

/// Error body of every failed request (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

#[derive(Deserialize)]
struct VersionProbe {
    version: u32,
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail, and our types always serialise.
    ciborium::into_writer(value, &mut out).expect("CBOR encoding into memory cannot fail");
    out
}

/// Decodes an envelope, checking its version first.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T> {
    let probe: VersionProbe = ciborium::from_reader(bytes).map_err(malformed)?;
    if !SUPPORTED_VERSIONS.contains(&probe.version) {
        return Err(Error::UnsupportedVersion {
            got: probe.version,
            supported: SUPPORTED_VERSIONS.to_vec(),
        });
    }
    ciborium::from_reader(bytes).map_err(malformed)
}

/// A decoding error in words (ciborium's own display is its debug text).
fn malformed(e: ciborium::de::Error<std::io::Error>) -> Error {
    use ciborium::de::Error as De;
    let what = match e {
        De::Io(_) => "the body ends in the middle of a value".to_string(),
        De::Syntax(at) => format!("not CBOR (at byte {at})"),
        De::Semantic(Some(at), msg) => format!("{msg} (at byte {at})"),
        De::Semantic(None, msg) => msg,
        De::RecursionLimitExceeded => "values nested too deeply".to_string(),
    };
    Error::Protocol(format!("malformed envelope: {what}"))
}

/// A 32-byte change hash from the wire.
pub fn hash_from(bytes: &[u8]) -> Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| Error::Protocol(format!("a change hash is 32 bytes, not {}", bytes.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let req = SyncRequest {
            version: PROTOCOL_VERSION,
            device_id: "d1".into(),
            cursor: Cursor {
                seq: 7,
                bootstrap: Some(Bootstrap {
                    territory: "north".into(),
                    after_id: "x".into(),
                    start_seq: 9,
                    only: Some(vec!["north".into()]),
                }),
                view: Some(vec!["north".into()]),
                log: Some("0b6f5c1e-log".into()),
            },
            push: vec![RecordBytes {
                record_id: "r".into(),
                bytes: vec![1, 2, 3],
            }],
            max_bytes: 1 << 20,
            projections: true,
        };
        assert_eq!(decode::<SyncRequest>(&encode(&req)).unwrap(), req);
    }

    #[test]
    fn an_empty_map_is_the_empty_cursor() {
        #[derive(Serialize)]
        struct Bare {
            version: u32,
            device_id: String,
            cursor: std::collections::BTreeMap<String, u32>,
            push: Vec<RecordBytes>,
            max_bytes: u64,
        }
        let req: SyncRequest = decode(&encode(&Bare {
            version: 1,
            device_id: "d".into(),
            cursor: Default::default(),
            push: vec![],
            max_bytes: 10,
        }))
        .unwrap();
        assert_eq!(req.cursor, Cursor::default());
    }

    #[test]
    fn unknown_versions_and_garbage_get_clear_errors() {
        #[derive(Serialize)]
        struct Future {
            version: u32,
            hologram: bool,
        }
        let err = decode::<SyncRequest>(&encode(&Future {
            version: 9,
            hologram: true,
        }))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported protocol version 9; this side speaks 1"
        );
        let err = decode::<SyncRequest>(b"\xff\x00garbage").unwrap_err();
        assert!(err.to_string().starts_with("malformed envelope"), "{err}");
        let err = decode::<SyncRequest>(&encode(&VersionOnly { version: 1 })).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed envelope: missing field `device_id`"
        );
        let mut cut = encode(&VersionOnly { version: 1 });
        cut.push(0x78); // a text string whose length never comes
        let err = decode::<SyncRequest>(&cut).unwrap_err();
        assert!(
            !err.to_string().contains("Io(") && !err.to_string().contains("Semantic("),
            "{err}"
        );
    }

    #[derive(Serialize)]
    struct VersionOnly {
        version: u32,
    }
}
