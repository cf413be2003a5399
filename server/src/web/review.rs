//! The review queue: changes reps made while they had access that arrived
//! after it was taken away (relay/review.rs). Office and admin users see
//! all of them, managers those of their territories; reps none.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, field_label, page, Nav};
use super::session::Post;
use super::{blocking, log_advanced, PageError, Session};
use crate::relay::office;
use crate::relay::review::{self, Decided, HeldChange};
use crate::AppState;

fn no_reviews() -> PageError {
    PageError::new(
        StatusCode::FORBIDDEN,
        "only office, admin and manager users review held changes",
    )
}

pub async fn queue(
    State(state): State<Arc<AppState>>,
    session: Session,
) -> Result<Markup, PageError> {
    if review::scope_for(&session.user).is_none() {
        return Err(no_reviews());
    }
    let user = session.user.clone();
    let held = blocking(&state, move |relay| office::review_queue(relay, &user)).await?;
    Ok(render(&session, &held, None))
}

fn render(session: &Session, held: &[HeldChange], notice: Option<&str>) -> Markup {
    let records = held.chunk_by(|a, b| a.held.record_id == b.held.record_id);
    let body = html! {
        p.hint {
            "Changes reps made while a record was in their territories, that reached the relay after it no longer was. "
            "Accept to apply them as their author's; discard to drop them. The rep's device learns the outcome at its next sync."
        }
        @if let Some(notice) = notice { p.notice role="status" { (notice) } }
        @if held.is_empty() { p { "Nothing is waiting for review." } }
        @for changes in records {
            @let first = &changes[0];
            section.review {
                h2 {
                    a href=(format!("/r/{}", first.held.record_id)) {
                        @if first.record_name.is_empty() { "(unnamed)" } @else { (first.record_name) }
                    }
                    " · " (first.held.territory.as_deref().unwrap_or("no territory"))
                }
                table {
                    thead { tr { th { "By" } th { "Device" } th { "Made" } th { "Held" } th { "Changes" } } }
                    tbody { @for c in changes {
                        tr {
                            td { (c.held.user) }
                            td { (c.held.device) }
                            td { (session.zone.time(c.made_at)) }
                            td { (session.zone.time(c.held.held_at)) }
                            td { ul { @for f in &c.fields {
                                li { (field_label(&f.field)) ": " (f.old.to_string()) " → " (f.new.to_string()) }
                            } } }
                        }
                    } }
                }
                div.actions {
                    form.inline method="post" action=(format!("/review/{}", first.held.record_id)) {
                        (layout::csrf(session))
                        input type="hidden" name="decision" value="accept";
                        button type="submit" { "Accept" }
                    }
                    form.inline method="post" action=(format!("/review/{}", first.held.record_id)) {
                        (layout::csrf(session))
                        input type="hidden" name="decision" value="discard";
                        button.danger type="submit" { "Discard" }
                    }
                }
            }
        }
    };
    page(session, "Review", Nav::Review, body)
}

#[derive(Debug, Deserialize)]
pub struct Decision {
    decision: String,
}

pub async fn decide(
    State(state): State<Arc<AppState>>,
    Path(record_id): Path<String>,
    Post(session, form): Post<Decision>,
) -> Result<Response, PageError> {
    if review::scope_for(&session.user).is_none() {
        return Err(no_reviews());
    }
    let accept = match form.decision.as_str() {
        "accept" => true,
        "discard" => false,
        other => {
            return Err(PageError::bad_request(format!(
                "unknown decision {other:?} (accept or discard)"
            )))
        }
    };
    let user = session.user.clone();
    let (decided, held) = blocking(&state, move |relay| {
        let decided = office::decide_record(relay, &user, &record_id, accept)?;
        Ok((decided, office::review_queue(relay, &user)?))
    })
    .await?;
    if let Some(why) = decided.iter().find_map(|d| match d {
        Decided::Refused(why) => Some(why.clone()),
        _ => None,
    }) {
        let notice = format!("Could not accept: {why}");
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            render(&session, &held, Some(&notice)),
        )
            .into_response());
    }
    if accept {
        log_advanced(&state).await;
    }
    Ok(Redirect::to("/review").into_response())
}
