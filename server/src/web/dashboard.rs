//! The dashboard: the open pipeline per currency with its weighted
//! forecast by close month, what was won and lost this quarter, the
//! pipeline as it stood at a past date, activities due and overdue, and
//! records per user. Figures come from `fieldcrm_core::PipelineReport`;
//! this module only lays them out.

use std::sync::Arc;

use axum::extract::{Query, State};
use fieldcrm_core::{
    ByCurrency, Kind, ListQuery, OwnerCount, PipelineReport, SortBy, Totals, CASE_PRIORITIES,
};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, page, record_link, Nav};
use super::records::now_ms;
use super::{blocking, PageError, Session};
use crate::relay::{office, RelayError, RelayStore, User};
use crate::AppState;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DashboardParams {
    /// A past date (YYYY-MM-DD): also show the pipeline as it stood then.
    at: String,
}

fn currency_name(code: &str) -> &str {
    if code.is_empty() {
        "no currency"
    } else {
        code
    }
}

/// `2026-12` as "Dec 2026".
fn month_name(month: &str) -> String {
    const NAMES: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    match month.split_once('-') {
        Some((year, m)) => match m.parse::<usize>() {
            Ok(m @ 1..=12) => format!("{} {year}", NAMES[m - 1]),
            _ => month.to_string(),
        },
        None => month.to_string(),
    }
}

fn money(minor: i64, currency: &str) -> String {
    format!("{} {currency}", layout::amount(minor))
        .trim()
        .to_string()
}

/// One table per currency: the open stages with count, amount, weighted
/// amount and a bar, and a total row.
fn open_pipeline(report: &PipelineReport, label: &str) -> Markup {
    if report.open.is_empty() {
        return html! { p.muted { "No open deals." } };
    }
    html! {
        @for (currency, total) in &report.open {
            @let rows: Vec<(&str, i64, Totals)> = report.stages.iter()
                .filter(|s| s.outcome == fieldcrm_core::StageOutcome::Open)
                .map(|s| (s.stage.as_str(), s.probability, s.currencies.get(currency).copied().unwrap_or_default()))
                .collect();
            @let max = rows.iter().map(|r| r.2.amount).max().unwrap_or(0).max(1);
            div.scroll {
                table.bars aria-label=(format!("{label} in {}", currency_name(currency))) data-currency=(currency) {
                    caption { @if currency.is_empty() { "Deals without a currency" } @else { "In " (currency) } }
                    thead { tr { th { "Stage" } th.num { "Deals" } th.num { "Value" } th.num { "Weighted" } th { span.sr-only { "Share" } } } }
                    tbody { @for (stage, probability, t) in &rows {
                        tr data-stage=(stage) {
                            td { (stage) " " span.muted { (probability) "%" } }
                            td.num.count { (t.count) }
                            td.num.sum { (layout::amount(t.amount)) }
                            td.num.weighted { (layout::amount(t.weighted())) }
                            // An SVG bar: the CSP allows no inline style attributes.
                            td.bar { svg viewBox="0 0 100 1" preserveAspectRatio="none" aria-hidden="true" {
                                rect width=(if t.amount > 0 { (t.amount * 100 / max).max(1) } else { 0 }) height="1" {}
                            } }
                        }
                    } }
                    tfoot { tr.total {
                        th { "Total open" } td.num.count { (total.count) }
                        td.num.sum { (money(total.amount, currency)) }
                        td.num.weighted { (money(total.weighted(), currency)) } td {}
                    } }
                }
            }
        }
    }
}

fn forecast(report: &PipelineReport, this_month: &str) -> Markup {
    if report.forecast.is_empty() {
        return html! { p.muted { "No open deals." } };
    }
    html! {
        div.scroll { table.forecast aria-label="Forecast by close month" {
            thead { tr { th { "Close month" } th { "Currency" } th.num { "Deals" } th.num { "Value" } th.num { "Weighted" } } }
            tbody { @for month in &report.forecast { @for (currency, t) in &month.currencies {
                @let overdue = month.month.as_deref().is_some_and(|m| m < this_month);
                tr class=[overdue.then_some("overdue")] data-month=(month.month.as_deref().unwrap_or("")) data-currency=(currency) {
                    td { @match &month.month {
                        Some(m) => { (month_name(m)) @if overdue { " " span.badge.warn { "past close date" } } },
                        None => span.muted { "no close date" },
                    } }
                    td { (currency_name(currency)) }
                    td.num.count { (t.count) }
                    td.num.sum { (money(t.amount, currency)) }
                    td.num.weighted { (money(t.weighted(), currency)) }
                }
            } } }
        } }
    }
}

fn closed(label: &str, totals: &ByCurrency, class: &str) -> Markup {
    html! {
        tr class=(class) {
            th { (label) }
            td { @if totals.is_empty() { "none" } @else {
                @for (i, (currency, t)) in totals.iter().enumerate() {
                    @if i > 0 { br; }
                    (t.count) @if t.count == 1 { " deal, " } @else { " deals, " } (money(t.amount, currency))
                }
            } }
        }
    }
}

fn quarter(report: &PipelineReport) -> Markup {
    let count = |t: &ByCurrency| t.values().map(|t| t.count).sum::<usize>();
    let (won, lost) = (count(&report.won), count(&report.lost));
    html! {
        table.quarter aria-label=(format!("Won and lost in {}", report.quarter)) {
            (closed("Won", &report.won, "won"))
            (closed("Lost", &report.lost, "lost"))
            tr { th { "Win rate" } td.rate { @if won + lost == 0 { "—" } @else { (won * 100 / (won + lost)) "% of deals closed" } } }
        }
    }
}

/// Every user with their live records, then one row for records whose
/// owner is no user (imported or typed before owners were checked).
fn per_user(users: &[crate::relay::User], counts: &[OwnerCount]) -> Markup {
    let find = |id: &str| counts.iter().find(|c| c.owner == id);
    let others: Vec<&OwnerCount> = counts
        .iter()
        .filter(|c| !users.iter().any(|u| u.id == c.owner))
        .collect();
    let sum = |f: fn(&OwnerCount) -> usize| others.iter().map(|c| f(c)).sum::<usize>();
    html! {
        div.scroll { table.reps {
            thead { tr { th { "User" } th.num { "Accounts" } th.num { "Contacts" } th.num { "Deals" } th.num { "Activities" } th.num { "Leads" } th.num { "Cases" } } }
            tbody {
                @for u in users {
                    @let c = find(&u.id).cloned().unwrap_or_default();
                    tr { td { a href=(layout::href("/deals", &[("owner", &u.id)])) { (u.id) } " " span.muted { (u.role.as_str()) } }
                        td.num { (c.accounts) } td.num { (c.contacts) } td.num { (c.deals) } td.num { (c.activities) } td.num { (c.leads) } td.num { (c.cases) } }
                }
                @if !others.is_empty() {
                    tr.quiet { td { (others.len()) " owner names that are no user" }
                        td.num { (sum(|c| c.accounts)) } td.num { (sum(|c| c.contacts)) } td.num { (sum(|c| c.deals)) } td.num { (sum(|c| c.activities)) } td.num { (sum(|c| c.leads)) } td.num { (sum(|c| c.cases)) } }
                }
            }
        } }
    }
}

pub async fn dashboard(
    State(state): State<Arc<AppState>>,
    session: Session,
    Query(params): Query<DashboardParams>,
) -> Result<Markup, PageError> {
    // A date that does not parse is said next to the date box; the rest of
    // the dashboard still shows.
    let (at, at_error) = match params.at.trim() {
        "" => (None, None),
        date => match session.zone.end_of_day(date) {
            Ok(end) => (Some(end), None),
            Err(_) => (
                None,
                Some(format!(
                    "“{date}” is not a date: choose one, or type it as 2026-03-31."
                )),
            ),
        },
    };
    let user = session.user.clone();
    let now = now_ms();
    let today = session.zone.today();
    let this_month = format!("{:04}-{:02}", today.year(), u8::from(today.month()));
    let (report, past, overdue, due, users, counts, cases) = blocking(&state, move |relay| {
        let report = office::pipeline_report(relay, &user, None, today)?;
        let past = match at {
            Some(time) => Some(office::pipeline_report(relay, &user, Some(time), today)?),
            None => None,
        };
        let open = |before: i64, limit: usize| ListQuery {
            kind: Some(Kind::Activity),
            due_before: Some(before),
            sort: SortBy::DueAt,
            limit,
            ..Default::default()
        };
        let overdue = office::list(relay, &user, open(now, 1))?.total;
        let due = office::list(relay, &user, open(now + 7 * 86_400_000, 50))?;
        let users = super::names::owner_choices(relay, &user)?;
        let counts = office::owner_counts(relay, &user)?;
        let cases = open_cases(relay, &user, now)?;
        Ok((report, past, overdue, due, users, counts, cases))
    })
    .await?;
    let body = html! {
        div.grid {
            section aria-labelledby="pipeline-h" {
                h2 id="pipeline-h" { "Open pipeline" }
                p.muted { "Won and lost deals are not in the pipeline. Weighted: each deal's amount × its probability, or its stage's." }
                (open_pipeline(&report, "Open pipeline"))
            }
            section aria-labelledby="forecast-h" {
                h2 id="forecast-h" { "Forecast by close month" }
                (forecast(&report, &this_month))
            }
            section aria-labelledby="quarter-h" {
                h2 id="quarter-h" { "This quarter (" (report.quarter) ")" }
                p.muted { "Deals won or lost with a close date in the quarter." }
                (quarter(&report))
            }
            section aria-labelledby="due-h" {
                h2 id="due-h" { "Activities due this week" }
                p.muted { span.due-count { (due.total) } " open, " span.overdue-count { (overdue) } " of them overdue" }
                ul.due { @for a in &due.records {
                    li class=[(a.get("due_at").and_then(|v| v.as_int()).is_some_and(|t| t < now)).then_some("overdue")] {
                        span.when { (a.get("due_at").map(|v| layout::value(Kind::Activity, "due_at", v, &session.zone)).unwrap_or_default()) }
                        " " (record_link(a)) " · " (a.text("owner").unwrap_or(""))
                    }
                } }
            }
            section aria-labelledby="cases-h" {
                h2 id="cases-h" { "Open cases" }
                p.muted { "Cases neither resolved nor closed, by priority; overdue ones are past their resolve-by time." }
                table.cases aria-label="Open cases by priority" {
                    tbody { @for (priority, n) in &cases.by_priority {
                        tr data-priority=(priority) {
                            th scope="row" { a href=(format!("/cases?priority={priority}")) { (priority) } }
                            td.num { (n) }
                        }
                    } }
                }
                p { span.overdue-cases { (cases.overdue.total) } " overdue" @if cases.overdue.total > 0 { " · " a href="/cases?due=overdue&sort=due_at" { "all of them" } } }
                ul.due { @for c in &cases.overdue.records {
                    li.overdue {
                        span.when { (c.get("resolve_by").map(|v| layout::value(Kind::Case, "resolve_by", v, &session.zone)).unwrap_or_default()) }
                        " " (record_link(c)) " · " (c.text("priority").unwrap_or("")) " · " (c.text("owner").unwrap_or(""))
                    }
                } }
            }
            section aria-labelledby="past-h" {
                h2 id="past-h" { "Pipeline as it stood" }
                form.filters method="get" action="/dashboard" {
                    label { "At the end of " input type="date" name="at" value=(params.at) aria-invalid=[at_error.as_ref().map(|_| "true")] aria-describedby=[at_error.as_ref().map(|_| "at-error")]; }
                    button type="submit" { "Show" }
                }
                @if let Some(error) = &at_error { p.error id="at-error" role="alert" { (error) } }
                @if let Some(past) = &past {
                    h3 { "Open pipeline at the end of " (params.at) }
                    (open_pipeline(past, "Open pipeline at the chosen date"))
                }
            }
            section aria-labelledby="flow-h" {
                h2 id="flow-h" { "How deals move" }
                p { a href="/dashboard/stages" { "Stage conversion and time in each stage" } " — from every deal's stage history." }
            }
            section aria-labelledby="reps-h" {
                h2 id="reps-h" { "Records per user" }
                (per_user(&users, &counts))
            }
        }
    };
    Ok(page(&session, "Dashboard", Nav::Dashboard, body))
}

/// The dashboard's cases: open ones per priority (most urgent first) and
/// the first overdue ones, soonest due first.
struct OpenCases {
    by_priority: Vec<(&'static str, usize)>,
    overdue: fieldcrm_core::Page,
}

fn open_cases(relay: &dyn RelayStore, user: &User, now: i64) -> Result<OpenCases, RelayError> {
    let cases = || ListQuery {
        kind: Some(Kind::Case),
        not_done: true,
        limit: 1,
        ..Default::default()
    };
    let mut by_priority = Vec::new();
    for priority in CASE_PRIORITIES.iter().rev() {
        let q = ListQuery {
            field_is: vec![("priority".into(), priority.to_string())],
            ..cases()
        };
        by_priority.push((*priority, office::list(relay, user, q)?.total));
    }
    let overdue = office::list(
        relay,
        user,
        ListQuery {
            due_before: Some(now),
            sort: SortBy::DueAt,
            limit: 10,
            ..cases()
        },
    )?;
    Ok(OpenCases {
        by_priority,
        overdue,
    })
}

/// Stage conversion and time in each stage, from the deals' stage
/// histories (kept beside each deal in the store).
pub async fn stages(
    State(state): State<Arc<AppState>>,
    session: Session,
) -> Result<Markup, PageError> {
    let user = session.user.clone();
    let rows = blocking(&state, move |relay| office::stage_conversions(relay, &user)).await?;
    let body = html! {
        section {
            p.muted { "Every stage change is kept in the deal's history, so these figures cover every live deal since it was created. "
                "A deal reached a stage if it was in it or got past it; conversion is the share of deals decided at a stage (moved on or lost there) that moved on; "
                "a stay lasts from entering a stage to entering the next one." }
            div.scroll { table.flow aria-label="Stage conversion" {
                thead { tr { th { "Stage" } th.num { "Reached" } th.num { "Moved on" } th.num { "Lost here" } th.num { "Still here" } th.num { "Conversion" } th.num { "Average stay" } } }
                tbody { @for r in &rows {
                    tr data-stage=(r.stage) {
                        td { (r.stage) }
                        td.num.reached { (r.reached) }
                        td.num.moved { (r.moved_on) }
                        td.num.lost { (r.lost) }
                        td.num.open { (r.open_here) }
                        td.num.conversion { @match r.conversion_percent() { Some(p) => { (p) "%" }, None => "—" } }
                        td.num.stay { @match r.average_stay_ms { Some(ms) => (layout::span_in_words(ms)), None => "—" } }
                    }
                } }
            } }
            p { a href="/dashboard" { "Back to the dashboard" } }
        }
    };
    Ok(page(&session, "Stage conversion", Nav::Dashboard, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_read_as_words() {
        assert_eq!(month_name("2026-12"), "Dec 2026");
        assert_eq!(month_name("2026-01"), "Jan 2026");
        assert_eq!(month_name("2026-13"), "2026-13");
    }

    #[test]
    fn stays_read_in_minutes_hours_or_days() {
        assert_eq!(layout::span_in_words(90_000), "1 min");
        assert_eq!(layout::span_in_words(5 * 3_600_000), "5.0 hours");
        assert_eq!(layout::span_in_words(3 * 86_400_000), "3.0 days");
        assert_eq!(layout::span_in_words(3 * 365 * 86_400_000), "3.0 years");
    }
}
