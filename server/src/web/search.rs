//! Search across every kind from the box in the page header: the best
//! matches of each kind, each with a link to the whole result in that
//! kind's list.

use std::sync::Arc;

use axum::extract::{Query, State};
use fieldcrm_core::Kind;
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, kind_path, kind_title, page, record_link, Nav};
use super::records::SEARCH_HITS;
use super::{blocking, PageError, Session};
use crate::relay::office;
use crate::AppState;

/// Hits shown per kind; the kind's list pages through the rest.
const PER_KIND: usize = 8;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SearchParams {
    q: String,
}

pub async fn search(
    State(state): State<Arc<AppState>>,
    session: Session,
    Query(params): Query<SearchParams>,
) -> Result<Markup, PageError> {
    let text = params.q.trim().to_string();
    let user = session.user.clone();
    let wanted = text.clone();
    let found = blocking(&state, move |relay| {
        let mut found = Vec::new();
        if wanted.is_empty() {
            return Ok(found);
        }
        for kind in Kind::ALL {
            let hits = office::search(relay, &user, &wanted, Some(kind), SEARCH_HITS)?;
            let total = hits.len();
            let shown: Vec<_> = hits.into_iter().take(PER_KIND).collect();
            found.push((kind, shown, total));
        }
        Ok(found)
    })
    .await?;
    let all = found.iter().map(|(_, _, total)| total).sum::<usize>();
    let body = html! {
        form.filters method="get" action="/search" role="search" {
            input type="search" name="q" value=(params.q) placeholder="Names, emails, phones, notes" aria-label="Search everything" autofocus;
            button type="submit" { "Search" }
        }
        @if text.is_empty() {
            p.muted { "Type a name, an email, a phone number or words from notes: every kind of record you can see is searched." }
        } @else if all == 0 {
            p { "Nothing matches “" (text) "”." }
        } @else {
            div.grid {
                @for (kind, hits, total) in found.iter().filter(|(_, _, total)| *total > 0) {
                    section.results data-kind=(kind.as_str()) aria-labelledby=(format!("{}-h", kind.as_str())) {
                        h2 id=(format!("{}-h", kind.as_str())) { (kind_title(*kind)) " " span.count { (total) @if *total >= SEARCH_HITS { "+" } } }
                        ul.hits { @for r in hits {
                            li { (record_link(r)) " " span.muted { (detail(r)) } }
                        } }
                        @if *total > hits.len() {
                            p { a href=(layout::href(&format!("/{}", kind_path(*kind)), &[("q", &text)])) { "All " (total) " matching " (kind_title(*kind).to_lowercase()) " →" } }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&session, "Search", Nav::Search, body))
}

/// A hint under a hit that tells two same-named records apart.
fn detail(r: &fieldcrm_core::Record) -> String {
    let parts: Vec<&str> = ["email", "address.city", "stage", "kind", "territory"]
        .iter()
        .filter_map(|f| r.text(f))
        .filter(|v| !v.is_empty())
        .take(2)
        .collect();
    parts.join(" · ")
}
