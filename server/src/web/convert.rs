//! Converting a lead from its page: the same plan a device makes
//! (`fieldcrm_core::plan_conversion`), kept whole or not at all.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use fieldcrm_core::{Conversion, Kind, Record};
use maud::{html, Markup};

use super::layout::{self, page, Nav};
use super::names::{self, posted_value};
use super::session::Post;
use super::{blocking, log_advanced, PageError, Session};
use crate::relay::office;
use crate::AppState;

/// The **Convert** form of a lead that is not converted yet.
pub fn form(session: &Session, lead: &Record) -> Markup {
    html! {
        section.convert aria-labelledby="convert-h" {
            h2 id="convert-h" { "Convert" }
            p.muted { "Makes an account (or joins the one you pick), a contact from this lead and, if you name one, a deal; the lead's activities move to the contact." }
            form.record method="post" action=(format!("/r/{}/convert", lead.id)) {
                (layout::csrf(session))
                div.field {
                    label for="account_id" { "Existing account (leave empty for a new one named after the company)" }
                    (super::form::picker("account_id", Some(Kind::Account), "", "", false))
                }
                div.field {
                    label for="deal_name" { "Deal name (leave empty for no deal)" }
                    input id="deal_name" name="deal_name" type="text" value="";
                }
                div.actions { button type="submit" { "Convert" } }
            }
        }
    }
}

pub async fn convert(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Post(session, posted): Post<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let user = session.user.clone();
    let lead_id = id.clone();
    let outcome = blocking(&state, move |relay| {
        // The picker posts the chosen id; without script, the typed name.
        let account_id = match posted_value(&posted, "account_id").filter(|v| !v.is_empty()) {
            Some(id) => Some(id),
            None => match posted_value(&posted, "account_id.name").filter(|v| !v.is_empty()) {
                Some(typed) => match names::named(relay, &user, Some(Kind::Account), &typed)?.as_slice() {
                    [one] => Some(one.id.clone()),
                    [] => return Ok(Err(format!("You have no account named “{typed}”. Type part of its name and pick it from the suggestions."))),
                    many => return Ok(Err(format!("{} accounts are named “{typed}”. Pick the one you mean from the suggestions.", many.len()))),
                },
                None => None,
            },
        };
        let how = Conversion {
            account_id,
            deal_name: posted_value(&posted, "deal_name").filter(|v| !v.is_empty()),
        };
        Ok(office::convert_lead(relay, &user, &lead_id, how)?.map_err(|r| r.to_string()))
    })
    .await?;
    match outcome {
        Ok(contact) => {
            log_advanced(&state).await;
            Ok(Redirect::to(&format!("/r/{contact}")).into_response())
        }
        Err(why) => {
            let body = html! {
                p.error role="alert" { "The lead was not converted: " (why) }
                p { a href=(format!("/r/{id}")) { "Back to the lead" } }
            };
            Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                page(&session, "Not converted", Nav::List(Kind::Lead), body),
            )
                .into_response())
        }
    }
}
