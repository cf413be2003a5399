//! The pipeline board (deals by stage, moved between stages) and the
//! dashboard (pipeline value by stage, now and at a past date; activities
//! due this week; records per rep).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use fieldcrm_core::{Edit, Kind, ListQuery, SortBy, StageSummary};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, page, record_link, Nav};
use super::records::now_ms;
use super::session::Post;
use super::{blocking, log_advanced, PageError, Session};
use crate::relay::office;
use crate::AppState;

/// Cards shown per stage column.
const CARDS_PER_STAGE: usize = 100;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BoardParams {
    territory: String,
    owner: String,
}

fn totals(stage: &StageSummary) -> String {
    let amounts: Vec<String> = stage
        .amounts
        .iter()
        .filter(|(_, minor)| **minor != 0)
        .map(|(currency, minor)| {
            format!("{} {currency}", layout::amount(*minor))
                .trim()
                .to_string()
        })
        .collect();
    if amounts.is_empty() {
        "0.00".into()
    } else {
        amounts.join(" + ")
    }
}

pub async fn pipeline(
    State(state): State<Arc<AppState>>,
    session: Session,
    Query(params): Query<BoardParams>,
) -> Result<Markup, PageError> {
    let user = session.user.clone();
    let territory = (!params.territory.is_empty()).then(|| params.territory.clone());
    let owner = (!params.owner.is_empty()).then(|| params.owner.clone());
    let (summary, columns, territories) = blocking(&state, move |relay| {
        let summary = office::pipeline_summary(relay, &user, territory.as_deref(), None)?;
        let mut columns = Vec::new();
        for stage in &summary {
            let deals = office::list(
                relay,
                &user,
                ListQuery {
                    kind: Some(Kind::Deal),
                    stage: Some(stage.stage.clone()),
                    territories: territory.iter().cloned().collect(),
                    owner: owner.clone(),
                    sort: SortBy::Amount,
                    descending: true,
                    limit: CARDS_PER_STAGE,
                    ..Default::default()
                },
            )?;
            columns.push(deals);
        }
        let territories = super::records::choices(relay, &user)?.territories;
        Ok((summary, columns, territories))
    })
    .await?;
    let stages: Vec<&str> = summary.iter().map(|s| s.stage.as_str()).collect();
    let body = html! {
        form.filters method="get" action="/pipeline" {
            select name="territory" aria-label="Territory" {
                option value="" { "All territories" }
                @for t in &territories { option value=(t) selected[*t == params.territory] { (t) } }
            }
            input name="owner" value=(params.owner) placeholder="Owner" aria-label="Owner";
            button type="submit" { "Apply" }
        }
        div.board {
            @for (stage, deals) in summary.iter().zip(&columns) {
                section.stage data-stage=(stage.stage) {
                    header {
                        h2 { (stage.stage) }
                        p.total { span.count { (stage.count) @if stage.count == 1 { " deal" } @else { " deals" } } " · " span.sum { (totals(stage)) } }
                    }
                    @for deal in &deals.records {
                        article.card draggable="true" data-id=(deal.id) {
                            (record_link(deal))
                            p { (layout::money(deal)) " · " (deal.text("owner").unwrap_or("")) }
                            form.move method="post" action="/pipeline/move" {
                                (layout::csrf(&session))
                                input type="hidden" name="id" value=(deal.id);
                                select name="stage" aria-label=(format!("Stage of {}", deal.display_name())) {
                                    @for s in &stages { option value=(s) selected[*s == stage.stage] { (s) } }
                                }
                                button type="submit" { "Move" }
                            }
                        }
                    }
                    @if deals.total > deals.records.len() {
                        p.more { a href=(layout::href("/deals", &[("stage", &stage.stage)])) { (deals.total - deals.records.len()) " more…" } }
                    }
                }
            }
        }
    };
    Ok(page(&session, "Pipeline", Nav::Pipeline, body))
}

#[derive(Debug, Deserialize)]
pub struct MoveDeal {
    id: String,
    stage: String,
}

pub async fn move_deal(
    State(state): State<Arc<AppState>>,
    Post(session, form): Post<MoveDeal>,
) -> Result<Response, PageError> {
    let user = session.user.clone();
    blocking(&state, move |relay| {
        office::edit_one(
            relay,
            &user,
            Edit::Update {
                id: form.id,
                fields: fieldcrm_core::fields([("stage", form.stage)]),
            },
        )
    })
    .await?;
    log_advanced(&state).await;
    Ok(Redirect::to("/pipeline").into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DashboardParams {
    /// A past date (YYYY-MM-DD): also show the pipeline as it stood then.
    at: String,
}

fn stage_bars(summary: &[StageSummary], label: &str) -> Markup {
    let max = summary
        .iter()
        .map(|s| s.amounts.values().sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    html! {
        table.bars aria-label=(label) {
            thead { tr { th { "Stage" } th { "Deals" } th { "Value" } th {} } }
            tbody { @for s in summary {
                @let sum: i64 = s.amounts.values().sum();
                tr data-stage=(s.stage) {
                    td { (s.stage) } td.count { (s.count) } td.sum { (totals(s)) }
                    // An SVG bar: the CSP allows no inline style attributes.
                    td.bar { svg viewBox="0 0 100 1" preserveAspectRatio="none" aria-hidden="true" {
                        rect width=((sum.max(0) * 100 / max).max(1)) height="1" {}
                    } }
                }
            } }
        }
    }
}

pub async fn dashboard(
    State(state): State<Arc<AppState>>,
    session: Session,
    Query(params): Query<DashboardParams>,
) -> Result<Markup, PageError> {
    let at = match params.at.trim() {
        "" => None,
        date => Some(
            fieldcrm_core::parse_datetime(date)
                .map(|midnight| midnight + 86_400_000 - 1)
                .map_err(PageError::bad_request)?,
        ),
    };
    let user = session.user.clone();
    let now = now_ms();
    let (now_summary, past, due, owners) = blocking(&state, move |relay| {
        let now_summary = office::pipeline_summary(relay, &user, None, None)?;
        let past = match at {
            Some(time) => Some(office::pipeline_summary(relay, &user, None, Some(time))?),
            None => None,
        };
        let due = office::list(
            relay,
            &user,
            ListQuery {
                kind: Some(Kind::Activity),
                due_before: Some(now + 7 * 86_400_000),
                sort: SortBy::DueAt,
                limit: 50,
                ..Default::default()
            },
        )?;
        Ok((now_summary, past, due, office::owner_counts(relay, &user)?))
    })
    .await?;
    let body = html! {
        div.grid {
            section aria-labelledby="pipeline-h" {
                h2 id="pipeline-h" { "Pipeline value by stage" }
                (stage_bars(&now_summary, "Pipeline now"))
                form.filters method="get" action="/dashboard" {
                    label { "Pipeline as it stood at the end of " input type="date" name="at" value=(params.at); }
                    button type="submit" { "Show" }
                }
                @if let Some(past) = &past {
                    h3 { "As of " (params.at) }
                    (stage_bars(past, "Pipeline at the chosen date"))
                }
            }
            section aria-labelledby="due-h" {
                h2 id="due-h" { "Activities due this week" }
                p.muted { (due.total) " open, overdue included" }
                ul.due { @for a in &due.records {
                    li class=[(a.get("due_at").and_then(|v| v.as_int()).is_some_and(|t| t < now)).then_some("overdue")] {
                        span.when { (a.get("due_at").map(|v| layout::value(Kind::Activity, "due_at", v)).unwrap_or_default()) }
                        " " (record_link(a)) " · " (a.text("owner").unwrap_or(""))
                    }
                } }
            }
            section aria-labelledby="reps-h" {
                h2 id="reps-h" { "Records per rep" }
                table.reps {
                    thead { tr { th { "Owner" } th { "Accounts" } th { "Contacts" } th { "Deals" } th { "Activities" } } }
                    tbody { @for o in &owners {
                        tr { td { a href=(layout::href("/deals", &[("owner", &o.owner)])) { (o.owner) } } td { (o.accounts) } td { (o.contacts) } td { (o.deals) } td { (o.activities) } }
                    } }
                }
            }
        }
    };
    Ok(page(&session, "Dashboard", Nav::Dashboard, body))
}
