//! A record page's activity timeline: every activity about the record (an
//! account's takes in its contacts' and deals' too), with its body, what it
//! is about and who owns it; a task is marked done in one click, and a call
//! or visit that just happened is logged in one form.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use fieldcrm_core::{fields, Edit, Fields, Kind, Record, Value};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, record_link};
use super::names::Names;
use super::records::{now_ms, simple_edit};
use super::session::Post;
use super::zone::Zone;
use super::{blocking, log_advanced, PageError, Session};
use crate::relay::office;
use crate::AppState;

/// What the quick form logs: the activity kinds of the data model.
const LOGGED_KINDS: [(&str, &str); 5] = [
    ("call", "Call"),
    ("visit", "Visit"),
    ("meeting", "Meeting"),
    ("note", "Note"),
    ("task", "Task to do"),
];

fn when(activity: &Record, zone: &Zone) -> String {
    match activity.get("due_at").and_then(Value::as_int) {
        Some(due) => zone.time(due),
        // A logged call or note has no due time: when it was logged.
        None => format!("logged {}", zone.time(activity.created_at)),
    }
}

fn is_done(activity: &Record) -> bool {
    activity.get("done") == Some(&Value::Bool(true))
}

/// The timeline section of `record`'s page.
pub fn section(session: &Session, record: &Record, activities: &[Record], names: &Names) -> Markup {
    let now = now_ms();
    html! {
        section aria-labelledby="timeline-h" {
            h2 id="timeline-h" { "Activity timeline" }
            @if record.kind == Kind::Account {
                p.muted { "Activities about this account, its contacts and its deals." }
            }
            @if activities.is_empty() { p.muted { "No activities yet." } }
            ol.timeline { @for a in activities {
                @let overdue = !is_done(a) && a.get("due_at").and_then(Value::as_int).is_some_and(|t| t < now);
                li class=[if is_done(a) { Some("done") } else if overdue { Some("overdue") } else { None }] data-id=(a.id) {
                    div.line {
                        span.when { (when(a, &session.zone)) }
                        " " span.badge { (a.text("kind").unwrap_or("")) }
                        " " (record_link(a))
                        @if let Some(about) = a.text("related_to").filter(|r| *r != record.id) {
                            " " span.muted { "on " } (names.link(about))
                        }
                        " " span.muted { "· " (a.text("owner").unwrap_or("")) }
                        @if is_done(a) { " " span.badge { "done" } }
                        @else if !record.deleted {
                            " " form.inline method="post" action=(format!("/r/{}/done", a.id)) {
                                (layout::csrf(session))
                                input type="hidden" name="back" value=(record.id);
                                button.small type="submit" aria-label=(format!("Mark {} done", a.display_name())) { "Mark done" }
                            }
                        }
                    }
                    @if let Some(body) = a.text("body").filter(|b| !b.trim().is_empty()) {
                        div.longtext.body { (body) }
                    }
                }
            } }
            @if !record.deleted && record.kind != Kind::Activity {
                (log_form(session, record))
            }
        }
    }
}

fn log_form(session: &Session, record: &Record) -> Markup {
    html! {
        details.log open[false] {
            summary { "Log a call, visit or note" }
            form.log method="post" action=(format!("/r/{}/log", record.id)) {
                (layout::csrf(session))
                label { "What " select name="kind" { @for (v, label) in LOGGED_KINDS { option value=(v) { (label) } } } }
                label { "Subject " input name="subject" required maxlength="200"; }
                label.wide { "Notes " textarea name="body" rows="3" {} }
                p.muted { "Calls, visits, meetings and notes are logged as done, now. A task stays open until marked done." }
                button type="submit" { "Log it" }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct LogForm {
    kind: String,
    subject: String,
    #[serde(default)]
    body: String,
}

/// Logs an activity about the record, as the signed-in user, in the
/// record's territory: done now, or (a task) open.
pub async fn log(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Post(session, form): Post<LogForm>,
) -> Result<Response, PageError> {
    if form.subject.trim().is_empty() {
        return Err(PageError::bad_request(
            "Say in a few words what the activity was (the subject is empty).",
        ));
    }
    let user = session.user.clone();
    let about = id.clone();
    blocking(&state, move |relay| {
        let record = office::record(relay, &user, &about)?.record;
        let mut values: Fields = fields([
            ("kind", Value::from(form.kind.as_str())),
            ("subject", Value::from(form.subject.trim())),
            ("related_to", Value::from(record.id.as_str())),
            ("owner", Value::from(user.id.as_str())),
            (
                "territory",
                Value::from(record.text("territory").unwrap_or_default()),
            ),
        ]);
        if !form.body.trim().is_empty() {
            values.insert("body".into(), Value::from(form.body.trim()));
        }
        if form.kind != "task" {
            values.insert("done".into(), Value::Bool(true));
            values.insert("due_at".into(), Value::Int(now_ms()));
        }
        office::edit_one(
            relay,
            &user,
            Edit::Create {
                kind: Kind::Activity,
                fields: values,
            },
        )
    })
    .await?;
    log_advanced(&state).await;
    Ok(Redirect::to(&format!("/r/{id}")).into_response())
}

#[derive(Debug, Deserialize)]
pub struct DoneForm {
    /// The record whose page the button was on.
    #[serde(default)]
    back: String,
}

/// Marks an activity done and goes back to the page the button was on
/// (a record id; anything else goes to the activity itself).
pub async fn done(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Post(session, form): Post<DoneForm>,
) -> Result<Response, PageError> {
    let plain_id = !form.back.is_empty()
        && form
            .back
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    let back = format!("/r/{}", if plain_id { &form.back } else { &id });
    let edit = Edit::Update {
        id,
        fields: fields([("done", Value::Bool(true))]),
    };
    simple_edit(state, session, edit, back).await
}
