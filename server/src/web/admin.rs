//! The admin page: users (add, territories, disable or enable, reset
//! password) and territories. Admins only; every action goes through
//! `accounts`, which writes it to the audit log.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};

use super::layout::{self, page, Nav};
use super::session::Post;
use super::{blocking, PageError, Session};
use crate::accounts::{self, Account};
use crate::relay::{RelayStore, Role};
use crate::AppState;

const ROLES: [Role; 4] = [Role::Rep, Role::Manager, Role::Office, Role::Admin];

fn admins_only(session: &Session) -> Result<(), PageError> {
    if session.user.role == Role::Admin {
        Ok(())
    } else {
        Err(PageError::new(
            StatusCode::FORBIDDEN,
            "Only admins manage users and territories.",
        ))
    }
}

/// The form's value for `name`, and every value of a repeated one.
fn one<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.trim())
}

fn all(form: &[(String, String)], name: &str) -> Vec<String> {
    form.iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

fn territory_boxes(all: &[String], chosen: &[String], label: &str) -> Markup {
    html! {
        fieldset.territories {
            legend { (label) }
            @for t in all {
                label.check { input type="checkbox" name="territory" value=(t) checked[chosen.contains(t)]; (t) }
            }
        }
    }
}

pub async fn page_view(
    State(state): State<Arc<AppState>>,
    session: Session,
) -> Result<Markup, PageError> {
    admins_only(&session)?;
    let (users, tree) = blocking(&state, |relay| {
        Ok((accounts::accounts(relay)?, relay.territory_parents()?))
    })
    .await?;
    Ok(render(&session, &users, &tree))
}

fn render(session: &Session, users: &[Account], tree: &[(String, Option<String>)]) -> Markup {
    let territories: Vec<String> = tree.iter().map(|(t, _)| t.clone()).collect();
    let territories = territories.as_slice();
    let body = html! {
        p.muted { "Every change made here is written to the relay's log (target fieldcrm::audit) with your name." }
        p { a href="/admin/configuration" { "Organisation configuration" } ": the deal pipeline, picklists and custom fields every device follows." }
        section aria-labelledby="users-h" {
            h2 id="users-h" { "Users" }
            div.scroll { table.users {
                thead { tr { th { "User" } th { "Role" } th { "Territories" } th { "Status" } th { "Password" } } }
                tbody { @for a in users {
                    @let id = &a.user.id;
                    tr data-user=(id) class=[a.disabled.then_some("disabled")] {
                        td { (id) }
                        td { (a.user.role.as_str()) }
                        td {
                            @if a.user.role.sees_all() { span.muted { "all (" (a.user.role.as_str()) ")" } }
                            @else {
                                form.territories method="post" action=(format!("/admin/users/{id}/territories")) {
                                    (layout::csrf(session))
                                    (territory_boxes(territories, &a.user.territories, &format!("Territories of {id}")))
                                    button.small type="submit" { "Save" }
                                }
                            }
                        }
                        td {
                            @if a.disabled { span.badge.warn { "disabled" } " " }
                            @else { span.badge { "active" } " " }
                            @if id != &session.user.id {
                                @let (action, label) = if a.disabled { ("enable", "Enable") } else { ("disable", "Disable") };
                                (layout::button_form(session, &format!("/admin/users/{id}/{action}"), label, if a.disabled { "small" } else { "small danger" }))
                            }
                        }
                        td {
                            form.inline method="post" action=(format!("/admin/users/{id}/password")) {
                                (layout::csrf(session))
                                input type="password" name="password" minlength="8" autocomplete="new-password" aria-label=(format!("New password for {id}")) placeholder="New password";
                                " " button.small type="submit" { "Reset" }
                            }
                        }
                    }
                } }
            } }
        }
        section aria-labelledby="add-user-h" {
            h2 id="add-user-h" { "Add a user" }
            form.admin method="post" action="/admin/users" {
                (layout::csrf(session))
                label { "Name " input name="name" required maxlength="64" autocomplete="off"; }
                label { "Role " select name="role" { @for r in ROLES { option value=(r.as_str()) { (r.as_str()) } } } }
                (territory_boxes(territories, &[], "Territories (reps and managers)"))
                label { "Password " input type="password" name="password" required minlength="8" autocomplete="new-password"; }
                button type="submit" { "Add user" }
            }
        }
        section aria-labelledby="territories-h" {
            h2 id="territories-h" { "Territories" }
            p.muted { "A user assigned to a territory sees every territory under it (a manager of a region sees its areas). Moving one changes what those users' devices hold at their next sync." }
            table.territories {
                thead { tr { th { "Territory" } th { "Under" } } }
                tbody { @for (t, parent) in tree {
                    tr {
                        td { (t) }
                        td { form.inline method="post" action=(format!("/admin/territories/{t}/parent")) {
                            (layout::csrf(session))
                            select name="parent" aria-label=(format!("Territory {t} sits under")) {
                                option value="" selected[parent.is_none()] { "— (top)" }
                                @for other in territories.iter().filter(|o| *o != t) {
                                    option value=(other) selected[parent.as_deref() == Some(other.as_str())] { (other) }
                                }
                            }
                            " " button type="submit" { "Move" }
                        } }
                    }
                } }
            }
            form.inline method="post" action="/admin/territories" {
                (layout::csrf(session))
                input name="name" required maxlength="64" aria-label="New territory" placeholder="New territory";
                " " button type="submit" { "Add territory" }
            }
        }
    };
    page(session, "Users and territories", Nav::Admin, body)
}

/// Runs one administration action as the signed-in admin, then shows the page.
async fn act(
    state: Arc<AppState>,
    session: Session,
    action: impl FnOnce(&dyn RelayStore, &str) -> crate::relay::Result<()> + Send + 'static,
) -> Result<Response, PageError> {
    admins_only(&session)?;
    let by = session.user.id.clone();
    blocking(&state, move |relay| action(relay, &by)).await?;
    Ok(Redirect::to("/admin").into_response())
}

pub async fn add_user(
    State(state): State<Arc<AppState>>,
    Post(session, form): Post<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let role: Role = one(&form, "role").parse()?;
    let (name, password) = (
        one(&form, "name").to_string(),
        one(&form, "password").to_string(),
    );
    let territories = all(&form, "territory");
    act(state, session, move |relay, by| {
        accounts::add(relay, by, &name, role, &territories, &password)
    })
    .await
}

pub async fn set_territories(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Post(session, form): Post<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let territories = all(&form, "territory");
    act(state, session, move |relay, by| {
        accounts::set_territories(relay, by, &id, &territories)
    })
    .await
}

pub async fn disable(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Post(session, _): Post<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    if id == session.user.id {
        return Err(PageError::bad_request(
            "You cannot disable yourself: ask another admin.",
        ));
    }
    act(state, session, move |relay, by| {
        accounts::set_disabled(relay, by, &id, true)
    })
    .await
}

pub async fn enable(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Post(session, _): Post<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    act(state, session, move |relay, by| {
        accounts::set_disabled(relay, by, &id, false)
    })
    .await
}

pub async fn reset_password(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Post(session, form): Post<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let password = one(&form, "password").to_string();
    act(state, session, move |relay, by| {
        accounts::reset_password(relay, by, &id, &password)
    })
    .await
}

pub async fn set_parent(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Post(session, form): Post<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let parent = Some(one(&form, "parent").trim().to_string()).filter(|p| !p.is_empty());
    act(state, session, move |relay, by| {
        accounts::set_territory_parent(relay, by, &name, parent.as_deref())
    })
    .await
}

pub async fn add_territory(
    State(state): State<Arc<AppState>>,
    Post(session, form): Post<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let name = one(&form, "name").to_string();
    act(state, session, move |relay, by| {
        accounts::add_territory(relay, by, &name)
    })
    .await
}
