//! A rep's route for a day: their open visits in the order that shortens
//! the drive (the same computation a device makes), with arrival times
//! and a small map of the stops drawn here (no map service).

use std::sync::Arc;

use axum::extract::{Query, State};
use fieldcrm_core::{Route, RouteOptions};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{page, Nav};
use super::records::choices;
use super::{blocking, PageError, Session};
use crate::relay::office;
use crate::AppState;

const DAY_MS: i64 = 24 * 3_600_000;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RouteParams {
    pub owner: String,
    /// YYYY-MM-DD in the user's time zone (default today).
    pub day: String,
}

pub async fn route(
    State(state): State<Arc<AppState>>,
    session: Session,
    Query(params): Query<RouteParams>,
) -> Result<Markup, PageError> {
    let zone = session.zone.clone();
    let day = match params.day.trim() {
        "" => zone.today().to_string(),
        d => d.to_string(),
    };
    let start = zone
        .parse(&format!("{day}T00:00"))
        .map_err(|_| PageError::bad_request(format!("“{day}” is not a date like 2026-03-31")))?;
    let owner = match params.owner.trim() {
        "" => session.user.id.clone(),
        o => o.to_string(),
    };
    let user = session.user.clone();
    let who = owner.clone();
    let (route, owners) = blocking(&state, move |relay| {
        // The day starts at 8 in the morning, at the first stop.
        let options = RouteOptions {
            start_at: start + 8 * 3_600_000,
            ..Default::default()
        };
        let route = office::day_route(relay, &user, &who, start, start + DAY_MS, &options)?;
        Ok((route, choices(relay, &user)?.owners))
    })
    .await?;
    let body = html! {
        form.filters method="get" action="/route" {
            select name="owner" aria-label="Rep" {
                @for o in &owners { option value=(o) selected[*o == owner] { (o) } }
            }
            input type="date" name="day" value=(day) aria-label="Day";
            button type="submit" { "Show" }
        }
        p { a href=(format!("/visits?owner={owner}&week={day}")) { "This week's visits: planned and done, time on site" } }
        p.muted { "Open visits of the day in the order that shortens the drive (straight-line distances at 50 km/h, 30 minutes at each stop, starting at 8:00). The rep's app computes the same route offline, and the rep may reorder it there." }
        @if route.legs.is_empty() {
            p { "No open visits with a place on this day." }
        } @else {
            (map(&route))
            table.route {
                thead { tr { th { "#" } th { "Visit" } th { "Arrive" } th { "Leave" } th { "Drive" } } }
                tbody { @for (i, leg) in route.legs.iter().enumerate() { tr {
                    td { (i + 1) }
                    td { a href=(format!("/r/{}", leg.stop.id)) { (leg.stop.name) } }
                    td { (session.zone.time(leg.arrive_at)) }
                    td { (session.zone.time(leg.leave_at)) }
                    td { (format!("{:.1} km", leg.distance_km)) }
                } } }
            }
            p { "In all " (format!("{:.1} km", route.total_km)) " of driving." }
        }
        @if !route.unplaced.is_empty() {
            p.warn { (route.unplaced.len()) " visit(s) have no place (their account has no latitude and longitude) and are not on the route: "
                @for id in &route.unplaced { a href=(format!("/r/{id}")) { "visit" } " " } }
        }
    };
    Ok(page(&session, "Route", Nav::Route, body))
}

/// The stops as a small SVG plot: north up, the route as a line, each stop
/// numbered in order.
fn map(route: &Route) -> Markup {
    let (w, h, pad): (f64, f64, f64) = (400.0, 260.0, 20.0);
    let lats = route.legs.iter().map(|l| l.stop.lat);
    let lons = route.legs.iter().map(|l| l.stop.lon);
    let (min_lat, max_lat) = lats.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (min_lon, max_lon) = lons.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    // One scale for both axes (longitude shrunk by the latitude's cosine).
    let squeeze = ((min_lat + max_lat) / 2.0).to_radians().cos().max(0.01);
    let span = ((max_lon - min_lon) * squeeze)
        .max(max_lat - min_lat)
        .max(1e-6);
    let scale = ((w - 2.0 * pad).min(h - 2.0 * pad)) / span;
    let xy = |lat: f64, lon: f64| {
        (
            pad + (lon - min_lon) * squeeze * scale,
            pad + (max_lat - lat) * scale,
        )
    };
    let points: Vec<(f64, f64)> = route
        .legs
        .iter()
        .map(|l| xy(l.stop.lat, l.stop.lon))
        .collect();
    let line = points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect::<Vec<_>>()
        .join(" ");
    html! {
        svg.route-map viewBox=(format!("0 0 {w} {h}")) role="img" aria-label="Map of the day's stops in order" {
            polyline points=(line) fill="none" stroke="currentColor" stroke-width="2" {}
            @for (i, ((x, y), leg)) in points.iter().zip(&route.legs).enumerate() {
                g {
                    title { (i + 1) ". " (leg.stop.name) }
                    circle cx=(format!("{x:.1}")) cy=(format!("{y:.1}")) r="9" fill="white" stroke="currentColor" stroke-width="2" {}
                    text x=(format!("{x:.1}")) y=(format!("{:.1}", y + 4.0)) text-anchor="middle" font-size="11" { (i + 1) }
                }
            }
        }
    }
}
