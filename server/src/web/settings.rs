//! A user's own settings page (time zone, saved filters) and the forms
//! that save and remove a list's filter. The rules live in `preferences`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use fieldcrm_core::Kind;
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, kind_path, kind_title, page, Nav};
use super::session::Post;
use super::{blocking, zone, PageError, Session};
use crate::preferences::{self, SavedFilter};
use crate::AppState;

pub async fn page_view(session: Session) -> Markup {
    let names = zone::names();
    let chosen = session.prefs.time_zone.as_deref().unwrap_or("");
    let body = html! {
        section aria-labelledby="zone-h" {
            h2 id="zone-h" { "Time zone" }
            p { "Times are shown, and typed into forms and imports, in " strong.zone { (session.zone.name()) } ". Records keep them in UTC, so everyone sees the same moment in their own zone." }
            form.inline method="post" action="/settings" {
                (layout::csrf(&session))
                select name="time_zone" aria-label="Time zone" {
                    option value="" selected[chosen.is_empty()] { "My browser's time zone" }
                    @for n in &names { option value=(n) selected[n == chosen] { (n) } }
                }
                " " button type="submit" { "Save" }
            }
        }
        section aria-labelledby="filters-h" {
            h2 id="filters-h" { "Saved filters" }
            @if session.prefs.filters.is_empty() {
                p.muted { "None yet. Set a list's filters, then save them under a name beside the list." }
            }
            @for kind in Kind::ALL {
                @let saved: Vec<&SavedFilter> = session.prefs.filters(kind).collect();
                @if !saved.is_empty() {
                    h3 { (kind_title(kind)) }
                    (chips(&session, kind, &saved))
                }
            }
        }
    };
    page(&session, "Your settings", Nav::Settings, body)
}

/// Saved filters as links, each with a button that removes it.
pub fn chips(session: &Session, kind: Kind, saved: &[&SavedFilter]) -> Markup {
    let path = kind_path(kind);
    html! {
        ul.saved-filters {
            @for f in saved {
                li {
                    a href=(format!("/{path}?{}", f.query)) { (f.name) }
                    form.inline method="post" action=(format!("/{path}/filters/remove")) {
                        (layout::csrf(session))
                        input type="hidden" name="name" value=(f.name);
                        button.link type="submit" aria-label=(format!("Remove saved filter {}", f.name)) { "×" }
                    }
                }
            }
        }
    }
}

/// The form beside a list that saves its filters under a name.
pub fn save_form(session: &Session, kind: Kind, query: &str) -> Markup {
    html! {
        form.inline.save-filter method="post" action=(format!("/{}/filters", kind_path(kind))) {
            (layout::csrf(session))
            input type="hidden" name="query" value=(query);
            input name="name" required maxlength="60" placeholder="Name these filters" aria-label="Name for these filters";
            " " button.small type="submit" { "Save filter" }
        }
    }
}

#[derive(Deserialize)]
pub struct ZoneForm {
    #[serde(default)]
    time_zone: String,
}

pub async fn save_zone(
    State(state): State<Arc<AppState>>,
    Post(session, form): Post<ZoneForm>,
) -> Result<Response, PageError> {
    let user = session.user.id.clone();
    blocking(&state, move |relay| {
        let name = Some(form.time_zone.trim()).filter(|n| !n.is_empty());
        preferences::set_time_zone(relay, &user, name)
    })
    .await?;
    Ok(Redirect::to("/settings").into_response())
}

#[derive(Deserialize)]
pub struct FilterForm {
    name: String,
    #[serde(default)]
    query: String,
}

fn list_kind(path: &str) -> Result<Kind, PageError> {
    layout::kind_from_path(path)
        .ok_or_else(|| PageError::bad_request(format!("there is no list “{path}”")))
}

pub async fn save_filter(
    State(state): State<Arc<AppState>>,
    Path(path): Path<String>,
    Post(session, form): Post<FilterForm>,
) -> Result<Response, PageError> {
    let kind = list_kind(&path)?;
    // Only a list's own filters are kept: the query is read back as list
    // parameters, so a saved filter can never point anywhere else.
    let params: super::records::ListParams = serde_urlencoded::from_str(&form.query)
        .map_err(|_| PageError::bad_request("These are not a list's filters."))?;
    let query = params.with_page(0);
    let back = format!("/{path}?{query}");
    let user = session.user.id.clone();
    blocking(&state, move |relay| {
        preferences::save_filter(relay, &user, kind, &form.name, &query)
    })
    .await?;
    Ok(Redirect::to(&back).into_response())
}

pub async fn remove_filter(
    State(state): State<Arc<AppState>>,
    Path(path): Path<String>,
    Post(session, form): Post<FilterForm>,
) -> Result<Response, PageError> {
    let kind = list_kind(&path)?;
    let user = session.user.id.clone();
    blocking(&state, move |relay| {
        preferences::delete_filter(relay, &user, kind, &form.name)
    })
    .await?;
    Ok(Redirect::to(&format!("/{path}")).into_response())
}
