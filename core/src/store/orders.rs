//! Order lines on a device, offline (docs/data-model.md, "Orders"): a line
//! takes its unit price from the price book as it stands when the line is
//! added; each line is its own key of the order's `lines` map, so lines
//! added or changed on two devices at once all stay.

use rusqlite::Transaction;

use super::{edit_in, update_fields, Store};
use crate::error::{Error, Result};
use crate::model::order::{best_price, day_of, new_line, OrderLine, LINES};
use crate::model::{Fields, Kind, Record, Value};

use super::documents::read_existing as read;

fn live(record: Record, kind: Kind, field: &str) -> Result<Record> {
    if record.kind != kind {
        return Err(Error::invalid(
            field,
            &record.id,
            &format!("is not a {kind}"),
        ));
    }
    if record.deleted {
        return Err(Error::Deleted(record.id));
    }
    Ok(record)
}

/// The unit price (minor units) of `product` in `currency` on `day`.
/// The prices of product ?1 in currency ?2 (by index `records_price_product`).
pub(crate) const PRICES_OF: &str = "SELECT id FROM records
     WHERE json_extract(record, '$.fields.product_id') = ?1
       AND json_extract(record, '$.fields.currency') = ?2
       AND kind = 'price' AND deleted = 0";

pub(crate) fn price_in(
    tx: &Transaction<'_>,
    product: &str,
    currency: &str,
    day: &str,
) -> Result<Option<i64>> {
    let ids: Vec<String> = tx
        .prepare_cached(PRICES_OF)?
        .query_map([product, currency], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let prices = ids
        .iter()
        .map(|id| read(tx, id))
        .collect::<Result<Vec<_>>>()?;
    Ok(best_price(&prices, day))
}

impl Store {
    /// Adds a line to order `order_id`: `quantity` of `product_id` at its
    /// price book price in the order's currency today, `discount` percent
    /// off. Returns the line's id and the order. Refused for a product that
    /// is deleted or not active, one with no price in the order's currency
    /// today, a quantity not above 0, a discount outside 0–100, and (for a
    /// rep) an order past its draft.
    pub fn add_order_line(
        &mut self,
        order_id: &str,
        product_id: &str,
        quantity: f64,
        discount: f64,
    ) -> Result<(String, Record)> {
        let (tx, w) = self.begin()?;
        let order = live(read(&tx, order_id)?, Kind::Order, "order_id")?;
        let product = live(read(&tx, product_id)?, Kind::Product, "product_id")?;
        if product.get("active") == Some(&Value::Bool(false)) {
            return Err(Error::invalid(
                "product_id",
                product.display_name(),
                "this product is no longer sold",
            ));
        }
        let currency = order.text("currency").unwrap_or_default().to_string();
        let day = day_of(w.meta.time);
        let Some(unit_price) = price_in(&tx, product_id, &currency, &day)? else {
            return Err(Error::invalid(
                "product_id",
                product.display_name(),
                &format!("the price book has no {currency} price for it on {day}"),
            ));
        };
        let (path, value) = new_line(&order, product_id, quantity, unit_price, discount);
        let line_id = path[LINES.len() + 1..].to_string();
        let fields: Fields = [(path, value)].into();
        let order = edit_in(&tx, &w, order_id, |tx, w, doc, kind| {
            update_fields(tx, w, doc, kind, fields)
        })?;
        tx.commit()?;
        Ok((line_id, order))
    }

    /// Changes a line's quantity and/or discount (the other line fields,
    /// and every other line, stay as they are).
    pub fn set_order_line(
        &mut self,
        order_id: &str,
        line_id: &str,
        quantity: Option<f64>,
        discount: Option<f64>,
    ) -> Result<Record> {
        let path = format!("{LINES}.{line_id}");
        let (tx, w) = self.begin()?;
        let order = live(read(&tx, order_id)?, Kind::Order, "order_id")?;
        let Some(json) = order.text(&path) else {
            return Err(Error::NotFound(format!(
                "line {line_id} of order {order_id}"
            )));
        };
        let mut line = OrderLine::parse(&path, json)?;
        line.quantity = quantity.unwrap_or(line.quantity);
        line.discount = discount.unwrap_or(line.discount);
        let fields: Fields = [(path, line.to_value())].into();
        let order = edit_in(&tx, &w, order_id, |tx, w, doc, kind| {
            update_fields(tx, w, doc, kind, fields)
        })?;
        tx.commit()?;
        Ok(order)
    }

    /// Removes a line (it becomes `null`).
    pub fn remove_order_line(&mut self, order_id: &str, line_id: &str) -> Result<Record> {
        let path = format!("{LINES}.{line_id}");
        let (tx, w) = self.begin()?;
        let order = live(read(&tx, order_id)?, Kind::Order, "order_id")?;
        if order.text(&path).is_none() {
            return Err(Error::NotFound(format!(
                "line {line_id} of order {order_id}"
            )));
        }
        let fields: Fields = [(path, Value::Null)].into();
        let order = edit_in(&tx, &w, order_id, |tx, w, doc, kind| {
            update_fields(tx, w, doc, kind, fields)
        })?;
        tx.commit()?;
        Ok(order)
    }

    /// The unit price (minor units) of a product in `currency` on `day`
    /// (`YYYY-MM-DD`), from the price book this device holds.
    pub fn price_of(&self, product_id: &str, currency: &str, day: &str) -> Result<Option<i64>> {
        let tx = self.conn.unchecked_transaction()?;
        price_in(&tx, product_id, currency, day)
    }
}
