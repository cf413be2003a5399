//! `/{kind}/duplicates`: the likeliest pairs of accounts, contacts or
//! leads that are one and the same, with why each pair looks alike
//! (rules in `fieldcrm_core::duplicates`). Read on demand, so a pair two
//! reps made offline shows as soon as the second one has synced.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use fieldcrm_core::Record;
use maud::{html, Markup};

use super::layout::{kind_path, kind_title, page, record_link, Nav};
use super::records::kind_of;
use super::{blocking, PageError, Session};
use crate::relay::office;
use crate::AppState;

/// Pairs shown, likeliest first.
const PAIRS: usize = 100;

pub async fn page_view(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(kind): Path<String>,
) -> Result<Markup, PageError> {
    let kind = kind_of(&kind)?;
    if !fieldcrm_core::duplicates::has_rules(kind) {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            format!("{} are not checked for duplicates", kind.plural()),
        ));
    }
    let user = session.user.clone();
    let pairs = blocking(&state, move |relay| {
        office::duplicate_pairs(relay, &user, kind, PAIRS)
    })
    .await?;
    let title = format!("Possible duplicate {}", kind.plural());
    let body = html! {
        p.muted { "Pairs that share an email or a phone, or whose names are alike "
            "(at the same account, in the same city, at the same company). "
            @if super::merge::may_merge(&session) { "Merge keeps one and points everything at it." } @else { "Office users merge them." } }
        @if pairs.is_empty() {
            p.empty { "No likely duplicates among the " (kind.plural()) " you can see." }
        } @else {
            div.scroll { table.records.duplicates {
                thead { tr { th { "Record" } th { "Looks like" } th { "Why" } th.num { "Likely" } @if super::merge::may_merge(&session) { th { span.visually-hidden { "Merge" } } } } }
                tbody { @for p in &pairs {
                    tr {
                        td { (record_link(&p.a)) br; span.muted { (details(&p.a)) } }
                        td { (record_link(&p.b)) br; span.muted { (details(&p.b)) } }
                        td.why { (p.why.evidence.join("; ")) }
                        td.num { ((p.why.score * 100.0).round()) "%" }
                        @if super::merge::may_merge(&session) {
                            td { a href=(format!("/r/{}/merge?with={}", p.a.id, p.b.id)) { "Merge…" } }
                        }
                    }
                } }
            } }
        }
        p { a href=(format!("/{}", kind_path(kind))) { "Back to " (kind_title(kind).to_lowercase()) } }
    };
    Ok(page(&session, &title, Nav::List(kind), body))
}

/// What tells the pair apart at a glance: email, phone, city, company.
fn details(r: &Record) -> String {
    ["email", "phone", "address.city", "company"]
        .iter()
        .filter_map(|p| r.text(p).filter(|v| !v.is_empty()))
        .collect::<Vec<_>>()
        .join(" · ")
}
