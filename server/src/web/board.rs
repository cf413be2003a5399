//! The pipeline board: deals by stage, moved between stages.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use fieldcrm_core::{Edit, Kind, ListQuery, SortBy, StageSummary};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, page, record_link, Nav};
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
