//! `/visits`: a week of visits per rep — planned against done, when each
//! was checked in and out, the time on site, how it went, and check-ins
//! that were far from the customer or overlap another one still open.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use fieldcrm_core::{Kind, ListQuery, Record, SortBy, Value};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{page, record_link, Nav};
use super::names::Names;
use super::records::choices;
use super::{blocking, PageError, Session};
use crate::relay::office;
use crate::AppState;

const DAY_MS: i64 = 24 * 3_600_000;
/// Visits read per page, newest planned first, until the week's start.
const PAGE: usize = 500;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct VisitParams {
    /// One rep (empty: everyone the user sees).
    pub owner: String,
    /// Any day of the week, YYYY-MM-DD in the user's time zone (default today).
    pub week: String,
}

/// The visits of `owner` (or everyone visible) planned in `[from, to)`,
/// soonest first, read a page at a time from the latest planned.
fn week_of_visits(
    relay: &dyn crate::relay::RelayStore,
    user: &crate::relay::User,
    owner: Option<String>,
    from: i64,
    to: i64,
) -> crate::relay::Result<Vec<Record>> {
    let mut found = Vec::new();
    let mut offset = 0;
    loop {
        let q = ListQuery {
            kind: Some(Kind::Activity),
            owner: owner.clone(),
            field_is: vec![("kind".into(), "visit".into())],
            sort: SortBy::DueAt,
            descending: true,
            limit: PAGE,
            offset,
            ..Default::default()
        };
        let page = office::list(relay, user, q)?.records;
        let done = page.len() < PAGE || page.iter().any(|v| v.due().is_some_and(|d| d < from));
        found.extend(
            page.into_iter()
                .filter(|v| v.due().is_some_and(|d| (from..to).contains(&d))),
        );
        if done {
            break;
        }
        offset += PAGE;
    }
    found.reverse();
    Ok(found)
}

fn at(v: &Record, path: &str) -> Option<i64> {
    v.get(path).and_then(Value::as_int)
}

/// Minutes from check-in to check-out.
fn on_site(v: &Record) -> Option<i64> {
    Some((at(v, "checked_out_at")? - at(v, "checked_in_at")?).max(0) / 60_000)
}

fn hours(minutes: i64) -> String {
    format!("{}:{:02}", minutes / 60, minutes % 60)
}

pub async fn visits(
    State(state): State<Arc<AppState>>,
    session: Session,
    Query(params): Query<VisitParams>,
) -> Result<Markup, PageError> {
    let zone = session.zone.clone();
    let day = match params.week.trim() {
        "" => zone.today(),
        d => time::Date::parse(d, time::macros::format_description!("[year]-[month]-[day]"))
            .map_err(|_| PageError::bad_request(format!("“{d}” is not a date like 2026-03-30")))?,
    };
    let monday = day - time::Duration::days(day.weekday().number_days_from_monday().into());
    let start = zone
        .parse(&format!("{monday}T00:00"))
        .map_err(PageError::bad_request)?;
    let end = start + 7 * DAY_MS;
    let owner = Some(params.owner.trim().to_string()).filter(|o| !o.is_empty());
    let user = session.user.clone();
    let who = owner.clone();
    let (visits, names, owners) = blocking(&state, move |relay| {
        let visits = week_of_visits(relay, &user, who, start, end)?;
        let names = Names::of(
            relay,
            &user,
            visits.iter().filter_map(|v| {
                v.get("related_to")
                    .map(|r| (Kind::Activity, "related_to", r))
            }),
        )?;
        Ok((visits, names, choices(relay, &user)?.owners))
    })
    .await?;
    let mut per_rep: BTreeMap<&str, (usize, usize, i64)> = BTreeMap::new();
    for v in &visits {
        let row = per_rep
            .entry(v.text("owner").unwrap_or_default())
            .or_default();
        row.0 += 1;
        if at(v, "checked_out_at").is_some() {
            row.1 += 1;
            row.2 += on_site(v).unwrap_or(0);
        }
    }
    let now = crate::relay::now_ms();
    let status = |v: &Record| -> &'static str {
        match (at(v, "checked_in_at"), at(v, "checked_out_at")) {
            (_, Some(_)) => "done",
            (Some(_), None) => "in progress",
            (None, None) if v.due().is_some_and(|d| d < now) => "missed",
            _ => "planned",
        }
    };
    let title = format!("Visits, week of {monday}");
    let body = html! {
        form.filters method="get" action="/visits" {
            select name="owner" aria-label="Rep" {
                option value="" { "Every rep" }
                @for o in &owners { option value=(o) selected[owner.as_deref() == Some(o.as_str())] { (o) } }
            }
            input type="date" name="week" value=(day) aria-label="A day of the week";
            button type="submit" { "Show" }
        }
        p {
            a href=(format!("/visits?owner={}&week={}", owner.as_deref().unwrap_or(""), monday - time::Duration::days(7))) { "← previous week" }
            " · "
            a href=(format!("/visits?owner={}&week={}", owner.as_deref().unwrap_or(""), monday + time::Duration::days(7))) { "next week →" }
        }
        @if visits.is_empty() {
            p.empty { "No visits planned this week." }
        } @else {
            table.records.summary {
                thead { tr { th { "Rep" } th.num { "Planned" } th.num { "Done" } th.num { "Time on site" } } }
                tbody { @for (rep, (planned, done, minutes)) in &per_rep { tr {
                    td { (rep) } td.num { (planned) } td.num { (done) } td.num { (hours(*minutes)) }
                } } }
            }
            div.scroll { table.records.visits {
                thead { tr { th { "Planned" } th { "Visit" } th { "Customer" } th { "Rep" } th { "Checked in" } th { "Checked out" } th.num { "On site" } th { "Outcome" } th { "Status" } } }
                tbody { @for v in &visits { tr data-status=(status(v)) {
                    td { (v.due().map(|d| zone.time(d)).unwrap_or_default()) }
                    td { (record_link(v)) @if let Some(p) = v.text("purpose") { br; span.muted { (p) } } }
                    td { @if let Some(r) = v.get("related_to") { (names.value(Kind::Activity, "related_to", r, &zone)) } }
                    td { (v.text("owner").unwrap_or_default()) }
                    td { (at(v, "checked_in_at").map(|t| zone.time(t)).unwrap_or_default()) }
                    td { (at(v, "checked_out_at").map(|t| zone.time(t)).unwrap_or_default()) }
                    td.num { (on_site(v).map(hours).unwrap_or_default()) }
                    td { (v.text("outcome").unwrap_or_default().replace('_', " ")) }
                    td { (status(v)) }
                } } }
            } }
        }
    };
    Ok(page(&session, &title, Nav::Route, body))
}
