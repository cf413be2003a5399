//! Merging two records that are one (`/r/{id}/merge`): the record kept is
//! shown beside its duplicate, field by field; the user ticks the fields
//! whose value comes from the duplicate and merges (relay/merge.rs does
//! it). The tombstone's page offers **Undo merge** while the kept record is
//! unchanged since.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use fieldcrm_core::merge::{plan_merge, MERGEABLE};
use fieldcrm_core::{FieldType, Kind, Record, Value};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, field_label, page, record_link, Nav};
use super::names::{self, posted_value, Names};
use super::session::Post;
use super::{blocking, log_advanced, PageError, Session};
use crate::relay::{office, Role};
use crate::AppState;

/// Whether the user may merge: a merge re-points records of every
/// territory, so it is the office's.
pub fn may_merge(session: &Session) -> bool {
    matches!(session.user.role, Role::Office | Role::Admin)
}

#[derive(Debug, Deserialize)]
pub struct With {
    /// The duplicate's id (the picker's hidden field).
    #[serde(default)]
    with: String,
    /// The duplicate's name, typed without script.
    #[serde(default, rename = "with.name")]
    with_name: String,
}

fn refused_page(session: &Session, back: &str, why: &str) -> Response {
    let body = html! {
        p.error role="alert" { (why) }
        p { a href=(back) { "Back" } }
    };
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        page(session, "Not merged", Nav::Dashboard, body),
    )
        .into_response()
}

/// The comparison of the kept record and its duplicate, or the form that
/// picks the duplicate.
pub async fn form(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(id): Path<String>,
    Query(with): Query<With>,
) -> Result<Response, PageError> {
    if !may_merge(&session) {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "only office and admin users merge records",
        ));
    }
    let user = session.user.clone();
    let (keep, duplicate, names) = blocking(&state, move |relay| {
        let keep = office::record(relay, &user, &id)?.record;
        let duplicate = if !with.with.is_empty() {
            Some(Ok(office::record(relay, &user, &with.with)?.record))
        } else if !with.with_name.trim().is_empty() {
            let found = names::named(relay, &user, Some(keep.kind), &with.with_name)?;
            Some(match found.as_slice() {
                [one] => Ok(one.clone()),
                [] => Err(format!(
                    "You have no {} named “{}”.",
                    keep.kind.as_str(),
                    with.with_name.trim()
                )),
                many => Err(format!(
                    "{} {} are named “{}”: pick one from the suggestions.",
                    many.len(),
                    keep.kind.plural(),
                    with.with_name.trim()
                )),
            })
        } else {
            None
        };
        let shown: Vec<(Kind, String, Value)> = [
            Some(&keep),
            duplicate.as_ref().and_then(|d| d.as_ref().ok()),
        ]
        .into_iter()
        .flatten()
        .flat_map(|r| r.fields.iter().map(|(p, v)| (r.kind, p.clone(), v.clone())))
        .collect();
        let names = Names::of(
            relay,
            &user,
            shown.iter().map(|(k, p, v)| (*k, p.as_str(), v)),
        )?;
        Ok((keep, duplicate, names))
    })
    .await?;
    let kind = keep.kind;
    if !MERGEABLE.contains(&kind) {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            format!("{} are not merged", kind.plural()),
        ));
    }
    let title = format!("Merge into {}", keep.display_name());
    let pick = html! {
        form.record method="get" action=(format!("/r/{}/merge", keep.id)) {
            div.field {
                label for="with" { "The duplicate to merge into this " (kind.as_str()) }
                (super::form::picker("with", Some(kind), "", "", false))
            }
            div.actions { button type="submit" { "Compare" } }
        }
    };
    let body = match duplicate {
        None => html! { (pick) },
        Some(Err(why)) => html! { p.error role="alert" { (why) } (pick) },
        Some(Ok(duplicate)) => compare(&session, &keep, &duplicate, &names),
    };
    Ok(page(&session, &title, Nav::List(kind), body).into_response())
}

/// The fields of both records side by side, with a tick box for each field
/// the duplicate could give.
fn compare(session: &Session, keep: &Record, duplicate: &Record, names: &Names) -> Markup {
    let kind = keep.kind;
    let default = plan_merge(keep, duplicate, &[]);
    let shown = |r: &Record, path: &str| -> Markup {
        match r.get(path) {
            Some(v) => names.value(kind, path, v, &session.zone),
            None => html! {},
        }
    };
    let blank = |v: Option<&Value>| v.is_none_or(|v| v.is_null() || v.as_str() == Some(""));
    let mut paths: Vec<&String> = keep
        .fields
        .keys()
        .chain(duplicate.fields.keys())
        .filter(|p| !p.starts_with("merged_") && p.as_str() != "territory")
        .collect();
    paths.sort();
    paths.dedup();
    html! {
        @match &default {
            Err(e) => p.error role="alert" { "These records cannot be merged: " (e) },
            Ok(_) => p.muted { "The record kept keeps its values and fills its blanks from the duplicate; notes keep both. Tick a field to take the duplicate's value instead. Every record that points at the duplicate (contacts, deals, activities, cases) will point at the record kept, and the duplicate becomes a deleted record that names it, so a device that edits it offline still has its edits carried over. You can undo the merge until someone changes the record kept." },
        }
        p { a href=(format!("/r/{}/merge?with={}", duplicate.id, keep.id)) { "Keep the other one instead" } }
        form.record method="post" action=(format!("/r/{}/merge", keep.id)) {
            (layout::csrf(session))
            input type="hidden" name="duplicate" value=(duplicate.id);
            div.scroll { table.records.merge {
                thead { tr { th { "Field" } th { "Kept: " (record_link(keep)) } th { "Duplicate: " (record_link(duplicate)) } th { "Take the duplicate's" } } }
                tbody { @for path in &paths {
                    @let (ours, theirs) = (keep.get(path), duplicate.get(path));
                    @let long = kind.field(path).is_some_and(|s| s.ty == FieldType::LongText);
                    tr data-field=(path) {
                        th scope="row" { (field_label(path)) }
                        td { (shown(keep, path)) }
                        td { (shown(duplicate, path)) }
                        td {
                            @if !blank(theirs) && theirs != ours {
                                label {
                                    input type="checkbox" name="take" value=(path);
                                    @if long { " instead of keeping both" } @else if blank(ours) { " (fills the blank anyway)" } @else { " instead" }
                                }
                            }
                        }
                    }
                } }
            } }
            div.actions { button type="submit" disabled[default.is_err()] { "Merge" } }
        }
    }
}

/// Merges the posted duplicate into the record of the page.
pub async fn merge(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Post(session, posted): Post<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let duplicate = posted_value(&posted, "duplicate").unwrap_or_default();
    let take: Vec<String> = posted
        .iter()
        .filter(|(k, _)| k == "take")
        .map(|(_, v)| v.clone())
        .collect();
    let user = session.user.clone();
    let keep = id.clone();
    let back = format!("/r/{id}/merge?with={duplicate}");
    let outcome = blocking(&state, move |relay| {
        office::merge(relay, &user, &keep, &duplicate, &take)
    })
    .await?;
    match outcome {
        Ok(_) => {
            log_advanced(&state).await;
            Ok(Redirect::to(&format!("/r/{id}")).into_response())
        }
        Err(why) => Ok(refused_page(
            &session,
            &back,
            &format!("The records were not merged: {why}"),
        )),
    }
}

/// Undoes the merge that made the page's record a tombstone.
pub async fn unmerge(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Post(session, _): Post<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let user = session.user.clone();
    let tombstone = id.clone();
    let outcome = blocking(&state, move |relay| {
        office::unmerge(relay, &user, &tombstone)
    })
    .await?;
    match outcome {
        Ok(_) => {
            log_advanced(&state).await;
            Ok(Redirect::to(&format!("/r/{id}")).into_response())
        }
        Err(why) => Ok(refused_page(
            &session,
            &format!("/r/{id}"),
            &format!("The merge was not undone: {why}"),
        )),
    }
}

/// The record page's line about merges: the survivor a tombstone was
/// merged into (with **Undo merge**), or the records merged into this one.
pub fn banner(session: &Session, record: &Record, merged_from: &[Record], names: &Names) -> Markup {
    use fieldcrm_core::merge::{merged_into, MERGED_AT, MERGED_BY, MERGED_INTO};
    let kind = record.kind;
    html! {
        @if let Some(into) = merged_into(record) {
            div.banner role="status" {
                "This " (kind.as_str()) " was merged into "
                (names.value(kind, MERGED_INTO, &Value::from(into), &session.zone))
                @if let Some(by) = record.text(MERGED_BY) { " by " (by) }
                @if let Some(at) = record.get(MERGED_AT).and_then(Value::as_int) { ", " (session.zone.time(at)) }
                ". "
                @if may_merge(session) {
                    (layout::button_form(session, &format!("/r/{}/unmerge", record.id), "Undo merge", ""))
                }
            }
        } @else if !merged_from.is_empty() {
            p.muted.merged {
                "Merged from: "
                @for (i, r) in merged_from.iter().enumerate() {
                    @if i > 0 { ", " }
                    (record_link(r))
                }
            }
        }
    }
}
