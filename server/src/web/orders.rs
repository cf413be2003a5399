//! An order's lines and totals on its record page, the office's **Add
//! line** (priced from the price book, as a device prices it), and a
//! printable quote (`/r/{id}/print`; the stylesheet's print rules hide the
//! navigation and forms).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use fieldcrm_core::{order_totals, Kind, OrderTotals, Record};
use maud::{html, Markup};

use super::layout::{self, amount, page, record_link, Nav};
use super::names::posted_value;
use super::session::Post;
use super::{blocking, log_advanced, PageError, Session};
use crate::relay::{office, Role};
use crate::AppState;

/// The products an order's lines name, by id.
pub fn products_of(
    relay: &dyn crate::relay::RelayStore,
    user: &crate::relay::User,
    order: &Record,
) -> crate::relay::Result<HashMap<String, Record>> {
    let ids = order_totals(order)
        .lines
        .into_iter()
        .map(|(_, l)| l.product_id);
    office::records_by_id(relay, user, ids)
}

fn lines_table(order: &Record, totals: &OrderTotals, products: &HashMap<String, Record>) -> Markup {
    let currency = order.text("currency").unwrap_or_default();
    let tax = order
        .get("tax_percent")
        .and_then(fieldcrm_core::Value::as_int)
        .unwrap_or(0);
    html! {
        table.records.lines {
            thead { tr { th { "Product" } th.num { "Quantity" } th.num { "Unit price" } th.num { "Discount" } th.num { "Line total" } } }
            tbody { @for (id, line) in &totals.lines { tr data-line=(id) {
                td { @match products.get(&line.product_id) {
                    Some(p) => { (record_link(p)) " " span.muted { (p.text("sku").unwrap_or_default()) } },
                    None => span.muted { "a product you cannot see" },
                } }
                td.num { (line.quantity) @if let Some(unit) = products.get(&line.product_id).and_then(|p| p.text("unit")) { " " (unit) } }
                td.num { (amount(line.unit_price)) }
                td.num { (line.discount) " %" }
                td.num { (amount(line.total())) }
            } } }
            tfoot {
                tr { th colspan="4" { "Before discounts" } td.num { (amount(totals.gross_lines)) } }
                tr { th colspan="4" { "Discounts" } td.num { "−" (amount(totals.discount)) } }
                tr { th colspan="4" { "Net" } td.num { (amount(totals.net)) } }
                tr { th colspan="4" { "Tax (" (tax) " %)" } td.num { (amount(totals.tax)) } }
                tr.total { th colspan="4" { "Total " (currency) } td.num data-total=(totals.gross) { (amount(totals.gross)) } }
            }
        }
    }
}

/// The order section of an order's page.
pub fn section(session: &Session, order: &Record, products: &HashMap<String, Record>) -> Markup {
    let totals = order_totals(order);
    let editable = !order.deleted
        && (order.text("status") == Some("draft")
            || matches!(session.user.role, Role::Office | Role::Admin));
    html! {
        section.order aria-labelledby="lines-h" {
            h2 id="lines-h" { "Lines" }
            @if totals.lines.is_empty() { p.muted { "No lines yet." } }
            @else { (lines_table(order, &totals, products)) }
            p { a href=(format!("/r/{}/print", order.id)) { "Printable " (if order.get("quote") == Some(&fieldcrm_core::Value::Bool(true)) { "quote" } else { "order" }) } }
            @if editable {
                form.record method="post" action=(format!("/r/{}/lines", order.id)) {
                    (layout::csrf(session))
                    div.field { label for="product_id" { "Product" } (super::form::picker("product_id", Some(Kind::Product), "", "", false)) }
                    div.field { label for="quantity" { "Quantity" } input id="quantity" name="quantity" type="number" step="any" min="0" required value="1"; }
                    div.field { label for="discount" { "Discount %" } input id="discount" name="discount" type="number" step="any" min="0" max="100" value="0"; }
                    div.actions { button type="submit" { "Add line" } }
                }
            } @else {
                p.muted { "This order is " (order.text("status").unwrap_or_default()) ": only the office changes it." }
            }
        }
    }
}

pub async fn add_line(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Post(session, posted): Post<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let number = |name: &str, default: f64| -> Result<f64, PageError> {
        match posted_value(&posted, name).filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(v) => v.parse::<f64>().map_err(|_| {
                PageError::bad_request(format!("“{v}” is not a number for the {name}"))
            }),
        }
    };
    let (quantity, discount) = (number("quantity", 1.0)?, number("discount", 0.0)?);
    let user = session.user.clone();
    let order = id.clone();
    let outcome = blocking(&state, move |relay| {
        let product = match posted_value(&posted, "product_id").filter(|v| !v.is_empty()) {
            Some(p) => p,
            None => {
                let typed = posted_value(&posted, "product_id.name").unwrap_or_default();
                match super::names::named(relay, &user, Some(Kind::Product), &typed)?.as_slice() {
                    [one] => one.id.clone(),
                    _ => return Ok(Err(format!("Pick the product from the suggestions (no single product is named “{typed}”)."))),
                }
            }
        };
        Ok(office::add_order_line(relay, &user, &order, &product, quantity, discount)?
            .map_err(|r| r.to_string()))
    })
    .await?;
    match outcome {
        Ok(_) => {
            log_advanced(&state).await;
            Ok(Redirect::to(&format!("/r/{id}")).into_response())
        }
        Err(why) => {
            let body = html! {
                p.error role="alert" { "The line was not added: " (why) }
                p { a href=(format!("/r/{id}")) { "Back to the order" } }
            };
            Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                page(&session, "Not added", Nav::List(Kind::Order), body),
            )
                .into_response())
        }
    }
}

/// The printable quote or order: customer, lines, totals.
pub async fn print(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Markup, PageError> {
    let user = session.user.clone();
    let (order, account, products) = blocking(&state, move |relay| {
        let order = office::record(relay, &user, &id)?.record;
        let account = match order.text("account_id") {
            Some(a) => office::records_by_id(relay, &user, [a.to_string()])?.remove(a),
            None => None,
        };
        let products = products_of(relay, &user, &order)?;
        Ok((order, account, products))
    })
    .await?;
    if order.kind != Kind::Order {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            "only orders and quotes print",
        ));
    }
    let what = if order.get("quote") == Some(&fieldcrm_core::Value::Bool(true)) {
        "Quote"
    } else {
        "Order"
    };
    let totals = order_totals(&order);
    let body = html! {
        article.printable {
            p.muted { (what) " · " (order.text("status").unwrap_or_default()) " · " (session.zone.time(order.updated_at)) }
            @if let Some(a) = &account {
                p { strong { (a.display_name()) } br;
                    @for p in ["address.street", "address.postcode", "address.city", "address.country"] {
                        @if let Some(v) = a.text(p) { (v) br; }
                    }
                }
            }
            (lines_table(&order, &totals, &products))
            p.no-print { a href=(format!("/r/{}", order.id)) { "Back to the order" } }
        }
    };
    Ok(page(
        &session,
        &format!("{what}: {}", order.display_name()),
        Nav::List(Kind::Order),
        body,
    ))
}
