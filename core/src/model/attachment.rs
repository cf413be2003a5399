//! Attachments: files on any record (decision 0011).
//!
//! What a file is — its name, media type, size, SHA-256, who added it and
//! when, a caption, a thumbnail of a picture — is record data: the record's map `attachments`, one
//! key per attachment, each a small JSON object. So adding, renaming and
//! removing merge and show in history like any edit (two reps attaching at
//! once add two keys). The bytes are a blob named by their hash, stored
//! and sent apart from the documents (`store/blobs.rs`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The map of a record's attachments.
pub const ATTACHMENTS: &str = "attachments";
/// The largest file, by default (a relay may set its own).
pub const MAX_ATTACHMENT_BYTES: u64 = 25 * 1024 * 1024;
/// What may be attached: photos, scans and documents. Checked against the
/// bytes themselves where the type can be told from them.
pub const MEDIA_TYPES: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/heic",
    "application/pdf",
    "text/plain",
    "text/csv",
];
/// Largest JSON of one attachment's metadata (a thumbnail's base64 is
/// most of it).
const MAX_JSON: usize = 16 * 1024;
const MAX_NAME: usize = 255;
const MAX_CAPTION: usize = 1000;

/// One attachment, as stored (`attachments.<id>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// The file's name, as the user knows it (`card.jpg`).
    pub name: String,
    /// One of [`MEDIA_TYPES`].
    pub media_type: String,
    /// Bytes.
    pub size: u64,
    /// The bytes' SHA-256, lower-case hex: the blob's name.
    pub sha256: String,
    pub added_by: String,
    /// ms since the epoch.
    pub added_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// A small JPEG of a picture, base64 (`thumbnail::make`), made where
    /// the file was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<String>,
}

impl Attachment {
    /// The metadata of `bytes` attached now by `added_by`: hash, size and,
    /// for a picture, its thumbnail. `media_type` must already have been
    /// checked against the bytes ([`check_content`]).
    pub fn describe(
        name: &str,
        media_type: &str,
        bytes: &[u8],
        added_by: &str,
        added_at: i64,
        caption: Option<&str>,
    ) -> Attachment {
        Attachment {
            name: name.trim().to_string(),
            media_type: media_type.to_string(),
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
            added_by: added_by.to_string(),
            added_at,
            caption: caption
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty()),
            thumbnail: super::thumbnail::make(media_type, bytes),
        }
    }

    /// The thumbnail's JPEG bytes, if it has one.
    pub fn thumbnail_jpeg(&self) -> Option<Vec<u8>> {
        self.thumbnail.as_deref().and_then(super::thumbnail::decode)
    }

    /// Reads and checks the attachment stored at `path`.
    pub fn parse(path: &str, json: &str) -> Result<Attachment> {
        let attachment: Attachment = super::json_entry(path, json, MAX_JSON, "an attachment")?;
        attachment.check(path)?;
        Ok(attachment)
    }

    /// The stored JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    fn check(&self, path: &str) -> Result<()> {
        check_name(path, &self.name)?;
        if !MEDIA_TYPES.contains(&self.media_type.as_str()) {
            return Err(Error::invalid(
                path,
                &self.media_type,
                &format!("attachments are one of {}", MEDIA_TYPES.join(", ")),
            ));
        }
        if self.size == 0 || self.size > MAX_ATTACHMENT_BYTES {
            return Err(Error::invalid(
                path,
                self.size,
                &format!("a file is 1 byte to {} MiB", MAX_ATTACHMENT_BYTES >> 20),
            ));
        }
        if !is_sha256(&self.sha256) {
            return Err(Error::invalid(
                path,
                &self.sha256,
                "a SHA-256 is 64 lower-case hex digits",
            ));
        }
        if self
            .caption
            .as_ref()
            .is_some_and(|c| c.chars().count() > MAX_CAPTION)
        {
            return Err(Error::invalid(
                path,
                "caption",
                &format!("a caption is at most {MAX_CAPTION} characters"),
            ));
        }
        if self.thumbnail.is_some() && self.thumbnail_jpeg().is_none() {
            return Err(Error::invalid(
                path,
                "thumbnail",
                &format!(
                    "a thumbnail is a JPEG of at most {} KiB, in base64",
                    super::thumbnail::MAX_THUMBNAIL_BYTES >> 10
                ),
            ));
        }
        Ok(())
    }
}

/// The SHA-256 of `bytes`, lower-case hex: a blob's name.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// A file name a user would write: no folders, no control characters.
pub fn check_name(path: &str, name: &str) -> Result<()> {
    let bad = name.trim().is_empty()
        || name.chars().count() > MAX_NAME
        || name
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '\\')
        || name == "."
        || name == "..";
    if bad {
        return Err(Error::invalid(
            path,
            format!("{name:?}"),
            &format!(
                "a file name is 1 to {MAX_NAME} characters without / \\ or control characters"
            ),
        ));
    }
    Ok(())
}

pub fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The media type of `bytes` as declared, if the bytes agree: a type the
/// bytes show (a JPEG, a PDF, …) must be the one declared, and text must
/// be UTF-8 text. So an HTML page named `.jpg` is refused.
pub fn check_content(path: &str, declared: &str, bytes: &[u8]) -> Result<()> {
    if !MEDIA_TYPES.contains(&declared) {
        return Err(Error::invalid(
            path,
            declared,
            &format!("attachments are one of {}", MEDIA_TYPES.join(", ")),
        ));
    }
    let sniffed = infer::get(bytes).map(|t| t.mime_type());
    let agrees = match declared {
        "text/plain" | "text/csv" => sniffed.is_none() && is_text(bytes),
        _ => sniffed == Some(declared),
    };
    if !agrees {
        return Err(Error::invalid(
            path,
            declared,
            &format!(
                "the file's content is {}, not {declared}",
                sniffed.unwrap_or(if is_text(bytes) {
                    "text"
                } else {
                    "of an unknown type"
                })
            ),
        ));
    }
    Ok(())
}

/// UTF-8 text that does not look like markup a browser would run.
fn is_text(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let head = text
        .trim_start()
        .get(..64.min(text.trim_start().len()))
        .unwrap_or("");
    let head = head.to_ascii_lowercase();
    !["<!doctype", "<html", "<script", "<svg", "<?xml"]
        .iter()
        .any(|m| head.starts_with(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F', 0];

    fn card() -> Attachment {
        Attachment {
            name: "card.jpg".into(),
            media_type: "image/jpeg".into(),
            size: 11,
            sha256: "a".repeat(64),
            added_by: "ann".into(),
            added_at: 1,
            caption: Some("Jane's card".into()),
            thumbnail: None,
        }
    }

    #[test]
    fn metadata_round_trips_and_bad_metadata_is_named() {
        let json = card().to_json();
        assert_eq!(Attachment::parse("attachments.x", &json).unwrap(), card());
        let bad = |a: Attachment| {
            Attachment::parse("attachments.x", &a.to_json())
                .unwrap_err()
                .to_string()
        };
        assert!(bad(Attachment {
            name: "../etc".into(),
            ..card()
        })
        .contains("file name"));
        assert!(bad(Attachment {
            media_type: "text/html".into(),
            ..card()
        })
        .contains("one of"));
        assert!(bad(Attachment {
            size: MAX_ATTACHMENT_BYTES + 1,
            ..card()
        })
        .contains("25 MiB"));
        assert!(bad(Attachment {
            sha256: "XYZ".into(),
            ..card()
        })
        .contains("SHA-256"));
        assert!(bad(Attachment {
            thumbnail: Some("PGh0bWw+".into()),
            ..card()
        })
        .contains("thumbnail"));
        let err = Attachment::parse("attachments.x", r#"{"name":"a"}"#).unwrap_err();
        assert!(err.to_string().contains("not an attachment"), "{err}");
    }

    #[test]
    fn content_must_be_what_it_is_declared_to_be() {
        check_content("f", "image/jpeg", JPEG).unwrap();
        check_content("f", "text/plain", b"Delivered 12 cases").unwrap();
        let html = b"<!DOCTYPE html><script>alert(1)</script>";
        let err = check_content("f", "image/jpeg", html)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not image/jpeg"), "{err}");
        let err = check_content("f", "text/plain", html)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not text/plain"), "{err}");
        let err = check_content("f", "application/pdf", JPEG)
            .unwrap_err()
            .to_string();
        assert!(err.contains("image/jpeg, not application/pdf"), "{err}");
        let err = check_content("f", "text/html", b"x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("one of"), "{err}");
    }
}
