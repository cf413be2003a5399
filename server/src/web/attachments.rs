//! Attachments on a record's page: each file with its caption, who added
//! it, the thumbnail a picture carries in its metadata (shown before the
//! file itself has arrived) and a download link; add, caption and remove. Files are
//! served through the same rules as a device's download (relay/blobs.rs):
//! only to users who may see the record, as a download with sniffing off
//! and a sandboxing policy, images alone shown inline. An added file takes
//! a device's path too: the attachment is an ordinary edit of the record,
//! the bytes an upload the relay verifies (hash and type) before keeping.

use std::sync::Arc;

use axum::extract::{Multipart, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use fieldcrm_core::{attachments_of, Attachment, Edit, Record, Value};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout;
use super::session::{check_csrf_value, Post};
use super::{blocking, log_advanced, PageError, Session};
use crate::relay::{blobs, office};
use crate::AppState;

fn size_text(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / f64::from(1 << 20)),
        b if b >= 1 << 10 => format!("{:.0} KB", b as f64 / 1024.0),
        b => format!("{b} bytes"),
    }
}

/// The attachments section of a record's page.
pub fn section(session: &Session, record: &Record) -> Markup {
    let files = attachments_of(record);
    let editable = !record.deleted;
    html! {
        section.attachments aria-labelledby="files-h" {
            h2 id="files-h" { "Attachments" }
            @if files.is_empty() { p.muted { "No files yet." } }
            ul.files {
                @for (id, a) in &files {
                    @let href = format!("/r/{}/files/{id}", record.id);
                    li.file {
                        @if a.thumbnail.is_some() {
                            a href=(format!("{href}?inline=1")) {
                                img.thumb src=(format!("{href}/thumb")) alt=(a.caption.as_deref().unwrap_or(&a.name)) loading="lazy";
                            }
                        }
                        a href=(href) download=(a.name) { (a.name) }
                        " · " (size_text(a.size)) " · " (a.added_by) ", " (session.zone.time(a.added_at))
                        @if let Some(c) = &a.caption { br; span.caption { (c) } }
                        @if editable {
                            form.caption method="post" action=(format!("{href}/caption")) {
                                (layout::csrf(session))
                                label.sr-only for=(format!("caption-{id}")) { "Caption of " (a.name) }
                                input id=(format!("caption-{id}")) name="caption" type="text" maxlength="1000" value=(a.caption.as_deref().unwrap_or("")) placeholder="Caption";
                                button type="submit" { "Save caption" }
                            }
                            " " (layout::button_form(session, &format!("{href}/remove"), "Remove", "danger"))
                        }
                    }
                }
            }
            @if editable {
                form.record method="post" enctype="multipart/form-data" action=(format!("/r/{}/files", record.id)) {
                    (layout::csrf(session))
                    div.field { label for="file" { "File" } input id="file" name="file" type="file" required; }
                    div.field { label for="caption" { "Caption" } input id="caption" name="caption" type="text" maxlength="1000"; }
                    div.actions { button type="submit" { "Attach" } }
                }
            }
        }
    }
}

/// The attachment `aid` of record `id`, if the user may see the record.
fn attachment_of(
    relay: &dyn crate::relay::RelayStore,
    user: &crate::relay::User,
    id: &str,
    aid: &str,
) -> crate::relay::Result<Attachment> {
    let record = office::record(relay, user, id)?.record;
    attachments_of(&record)
        .into_iter()
        .find(|(a, _)| a == aid)
        .map(|(_, a)| a)
        .ok_or_else(|| crate::relay::RelayError::NotFound(format!("no attachment {aid} on {id}")))
}

#[derive(Debug, Deserialize)]
pub struct FileQuery {
    #[serde(default)]
    inline: Option<u8>,
}

/// `GET /r/{id}/files/{aid}`: the file (`?inline=1`: an image shown in the page).
pub async fn file(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((id, aid)): Path<(String, String)>,
    Query(q): Query<FileQuery>,
) -> Result<Response, PageError> {
    let user = session.user.clone();
    let (meta, span) = blocking(&state, move |relay| {
        let meta = attachment_of(relay, &user, &id, &aid)?;
        let span = blobs::open(relay, &user, &meta.sha256, |_| Ok(None))?;
        Ok((meta, span))
    })
    .await?;
    let body = crate::api::blob_body(state, span.clone());
    let mut response = crate::api::blob_response(&span, q.inline == Some(1), body);
    // The name the user knows, for the saved file (quoted, ASCII only).
    let safe: String = meta
        .name
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || " .-_()".contains(c) {
                true => c,
                false => '_',
            },
        )
        .collect();
    if q.inline != Some(1) {
        if let Ok(v) = format!("attachment; filename=\"{safe}\"").parse() {
            response
                .headers_mut()
                .insert(axum::http::header::CONTENT_DISPOSITION, v);
        }
    }
    Ok(response.into_response())
}

/// `GET /r/{id}/files/{aid}/thumb`: the picture's thumbnail, from the
/// record's metadata (so it shows while the file is still on its way).
pub async fn thumbnail(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path((id, aid)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let user = session.user.clone();
    let jpeg = blocking(&state, move |relay| {
        attachment_of(relay, &user, &id, &aid)?
            .thumbnail_jpeg()
            .ok_or_else(|| crate::relay::RelayError::NotFound(format!("no thumbnail of {aid}")))
    })
    .await?;
    let thumb = blobs::BlobSpan {
        sha: String::new(),
        media_type: "image/jpeg".into(),
        size: jpeg.len() as u64,
        start: 0,
        len: jpeg.len() as u64,
    };
    Ok(crate::api::blob_response(&thumb, true, jpeg.into()))
}

#[derive(Debug, Deserialize)]
pub struct CaptionForm {
    #[serde(default)]
    caption: String,
}

/// `POST /r/{id}/files/{aid}/caption` (`caption`; empty clears it).
pub async fn caption(
    State(state): State<Arc<AppState>>,
    Path((id, aid)): Path<(String, String)>,
    Post(session, form): Post<CaptionForm>,
) -> Result<Response, PageError> {
    let user = session.user.clone();
    let back = format!("/r/{id}");
    blocking(&state, move |relay| {
        let mut meta = attachment_of(relay, &user, &id, &aid)?;
        meta.caption = Some(form.caption.trim().to_string()).filter(|c| !c.is_empty());
        let edit = Edit::Update {
            id,
            fields: fieldcrm_core::fields([(
                format!("attachments.{aid}").as_str(),
                meta.to_json(),
            )]),
        };
        office::edit_one(relay, &user, edit)
    })
    .await?;
    log_advanced(&state).await;
    Ok(Redirect::to(&back).into_response())
}

/// `POST /r/{id}/files/{aid}/remove`.
pub async fn remove(
    State(state): State<Arc<AppState>>,
    Path((id, aid)): Path<(String, String)>,
    Post(session, _): Post<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let back = format!("/r/{id}");
    let edit = Edit::Update {
        id,
        fields: fieldcrm_core::fields([(format!("attachments.{aid}").as_str(), Value::Null)]),
    };
    super::records::simple_edit(state, session, edit, back).await
}

/// `POST /r/{id}/files` (multipart: `_csrf`, `file`, `caption`): attaches
/// the file as a device does — the metadata as an edit, then the bytes as
/// a verified upload; a file the relay refuses takes its attachment away.
pub async fn add(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(id): Path<String>,
    mut multipart: Multipart,
) -> Result<Response, PageError> {
    let (mut csrf, mut caption, mut file) = (String::new(), String::new(), None);
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| PageError::bad_request(format!("unreadable upload: {e}")))?
    {
        match field.name() {
            Some("_csrf") => csrf = field.text().await.unwrap_or_default(),
            Some("caption") => caption = field.text().await.unwrap_or_default(),
            Some("file") => {
                let name = field.file_name().unwrap_or("file").to_string();
                let declared = field.content_type().unwrap_or("").to_string();
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|e| PageError::bad_request(format!("unreadable upload: {e}")))?;
                file = Some((name, declared, bytes));
            }
            _ => {}
        }
    }
    check_csrf_value(&session, &csrf)?;
    let (name, declared, bytes) = file
        .filter(|(_, _, b)| !b.is_empty())
        .ok_or_else(|| PageError::bad_request("choose a file to attach"))?;
    // Browsers guess a type from the name; the bytes decide (as on a device).
    let media_type = fieldcrm_core::MEDIA_TYPES
        .iter()
        .find(|t| fieldcrm_core::attachment::check_content("file", t, &bytes).is_ok())
        .ok_or_else(|| {
            // Say what the bytes are when the browser's guess is a type we take.
            let known = fieldcrm_core::MEDIA_TYPES.contains(&declared.as_str());
            let why = match fieldcrm_core::attachment::check_content("file", &declared, &bytes) {
                Err(fieldcrm_core::Error::InvalidValue { reason, .. }) if known => {
                    format!("{reason}; ")
                }
                _ => String::new(),
            };
            PageError::bad_request(format!(
                "{name} ({declared}) is not a file that can be attached: {why}attachments are {}",
                fieldcrm_core::MEDIA_TYPES.join(", ")
            ))
        })?
        .to_string();
    let user = session.user.clone();
    let limit = state.options.max_blob_bytes;
    let back = format!("/r/{id}");
    blocking(&state, move |relay| {
        let meta = Attachment::describe(
            &name,
            &media_type,
            &bytes,
            &user.id,
            super::records::now_ms(),
            Some(&caption),
        );
        let aid = uuid::Uuid::now_v7().to_string();
        let path = format!("attachments.{aid}");
        let attach = |value: Value| Edit::Update {
            id: id.clone(),
            fields: fieldcrm_core::fields([(path.as_str(), value)]),
        };
        office::edit_one(relay, &user, attach(Value::from(meta.to_json())))?;
        let mut at = 0;
        let sent = loop {
            let end = (at + blobs::MAX_CHUNK_BYTES).min(bytes.len());
            match blobs::upload(
                relay,
                &user,
                &meta.sha256,
                at as u64,
                &bytes[at..end],
                limit,
            ) {
                Ok(s) if s.complete => break Ok(()),
                Ok(s) => at = s.received as usize,
                // Someone else's upload of the same file got further.
                Err(crate::relay::RelayError::WrongOffset { received, .. })
                    if received as usize > at =>
                {
                    at = received as usize
                }
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = sent {
            office::edit_one(relay, &user, attach(Value::Null))?;
            return Err(e);
        }
        Ok(())
    })
    .await?;
    log_advanced(&state).await;
    Ok(Redirect::to(&back).into_response())
}
