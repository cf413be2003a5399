//! Orders and quotes: an account's order with line items (decision 0010).
//!
//! The lines are the order document's map `lines`, one key per line (its
//! id), each a small JSON object. Two people adding lines at once add two
//! keys, so both are kept; changing one line never touches another. A
//! removed line is `null` (a removal and a concurrent edit of the line then
//! show as a conflict on it). Totals are derived, never stored.

use serde::{Deserialize, Serialize};

use super::{Record, Value};
use crate::error::{Error, Result};

/// The map of an order's lines.
pub const LINES: &str = "lines";
/// Where an order is; a rep changes it only while it is a draft.
pub const ORDER_STATUSES: &[&str] = &["draft", "submitted", "confirmed", "delivered", "cancelled"];
/// Largest JSON of one line.
const MAX_LINE: usize = 1024;

/// One line of an order, as stored (`lines.<id>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderLine {
    pub product_id: String,
    /// Units ordered, more than 0 (fractions for goods sold by weight).
    pub quantity: f64,
    /// Minor units per unit, from the price book when the line was added.
    pub unit_price: i64,
    /// Percent off, 0 to 100.
    #[serde(default)]
    pub discount: f64,
    /// Where the line sits (smaller first).
    #[serde(default)]
    pub position: i64,
}

impl OrderLine {
    /// Reads and checks the line stored at `path`.
    pub fn parse(path: &str, json: &str) -> Result<OrderLine> {
        let line: OrderLine = super::json_entry(path, json, MAX_LINE, "an order line")?;
        line.check(path)?;
        Ok(line)
    }

    fn check(&self, path: &str) -> Result<()> {
        if !(self.quantity.is_finite() && self.quantity > 0.0) {
            return Err(Error::invalid(
                path,
                self.quantity,
                "a quantity is more than 0",
            ));
        }
        if !(0.0..=100.0).contains(&self.discount) {
            return Err(Error::invalid(
                path,
                self.discount,
                "a discount is 0 to 100 percent",
            ));
        }
        if self.unit_price < 0 {
            return Err(Error::invalid(
                path,
                self.unit_price,
                "a unit price is not negative",
            ));
        }
        if self.product_id.trim().is_empty() {
            return Err(Error::invalid(path, "\"\"", "a line names its product"));
        }
        Ok(())
    }

    /// The JSON a line is stored as.
    pub fn to_value(&self) -> Value {
        Value::Text(serde_json::to_string(self).expect("lines serialise"))
    }

    /// Quantity × unit price, before the discount, in minor units.
    pub fn gross(&self) -> i64 {
        (self.quantity * self.unit_price as f64).round() as i64
    }

    /// The line's total after its discount, in minor units.
    pub fn total(&self) -> i64 {
        (self.gross() as f64 * (1.0 - self.discount / 100.0)).round() as i64
    }
}

/// An order's totals, derived from its lines (minor units of its currency).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderTotals {
    /// The live lines, by position, with their ids.
    pub lines: Vec<(String, OrderLine)>,
    /// Before discounts.
    pub gross_lines: i64,
    pub discount: i64,
    /// After discounts, before tax.
    pub net: i64,
    pub tax: i64,
    /// What the customer pays.
    pub gross: i64,
}

/// The live lines of `order` (by position, then id) and its totals at its
/// `tax_percent`.
pub fn order_totals(order: &Record) -> OrderTotals {
    let prefix = format!("{LINES}.");
    let mut lines: Vec<(String, OrderLine)> = order
        .fields
        .iter()
        .filter_map(|(path, v)| {
            let id = path.strip_prefix(&prefix)?;
            let line = OrderLine::parse(path, v.as_str()?).ok()?;
            Some((id.to_string(), line))
        })
        .collect();
    lines.sort_by(|a, b| (a.1.position, &a.0).cmp(&(b.1.position, &b.0)));
    let gross_lines: i64 = lines.iter().map(|(_, l)| l.gross()).sum();
    let net: i64 = lines.iter().map(|(_, l)| l.total()).sum();
    let tax_percent = match order.get("tax_percent") {
        Some(Value::Int(p)) => *p as f64,
        Some(Value::Float(p)) => *p,
        _ => 0.0,
    };
    let tax = (net as f64 * tax_percent / 100.0).round() as i64;
    OrderTotals {
        lines,
        gross_lines,
        discount: gross_lines - net,
        net,
        tax,
        gross: net + tax,
    }
}

/// The unit price (minor units) `prices` (price book entries of one
/// product and currency) give on `day` (`YYYY-MM-DD`): of the entries valid
/// then, the one that starts latest.
pub fn best_price<'a>(prices: impl IntoIterator<Item = &'a Record>, day: &str) -> Option<i64> {
    prices
        .into_iter()
        .filter(|p| !p.deleted)
        .filter_map(|p| {
            let from = p.text("valid_from").unwrap_or("");
            let to = p.text("valid_to").unwrap_or("9999-12-31");
            let amount = p.get("unit_price").and_then(Value::as_int)?;
            (from <= day && day <= to).then_some((from, amount))
        })
        .max_by(|a, b| a.0.cmp(b.0))
        .map(|(_, amount)| amount)
}

/// The calendar day of `ms` (UTC), as price book dates are written.
pub fn day_of(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let d = at.date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// The field that adds a line to `order` after its last one: a new line
/// id's path and the line's stored value.
pub fn new_line(
    order: &Record,
    product_id: &str,
    quantity: f64,
    unit_price: i64,
    discount: f64,
) -> (String, Value) {
    let last = order_totals(order)
        .lines
        .iter()
        .map(|(_, l)| l.position)
        .max();
    let line = OrderLine {
        product_id: product_id.to_string(),
        quantity,
        unit_price,
        discount,
        position: last.unwrap_or(0) + 10,
    };
    (format!("{LINES}.{}", uuid::Uuid::now_v7()), line.to_value())
}

/// Whether the order is past its draft: then only the office changes it.
pub fn is_submitted(order: &Record) -> bool {
    order.text("status").is_some_and(|s| s != "draft")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{fields, Kind};

    #[test]
    fn totals_come_from_the_live_lines_and_bad_lines_are_named() {
        let line = |q: f64, price: i64, discount: f64, position: i64| OrderLine {
            product_id: "p".into(),
            quantity: q,
            unit_price: price,
            discount,
            position,
        };
        let mut f = fields([
            ("currency", Value::from("EUR")),
            ("tax_percent", Value::Int(19)),
        ]);
        f.insert("lines.b".into(), line(3.0, 1000, 10.0, 20).to_value());
        f.insert("lines.a".into(), line(2.0, 250, 0.0, 10).to_value());
        f.insert("lines.c".into(), Value::Null);
        let order = Record {
            id: "o".into(),
            kind: Kind::Order,
            fields: f,
            deleted: false,
            created_at: 0,
            created_by: "ann".into(),
            updated_at: 0,
            schema: 1,
        };
        let t = order_totals(&order);
        assert_eq!(
            t.lines.iter().map(|l| l.0.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!((t.gross_lines, t.discount, t.net), (3500, 300, 3200));
        assert_eq!((t.tax, t.gross), (608, 3808));
        for (json, says) in [
            (
                r#"{"product_id":"p","quantity":0,"unit_price":1}"#,
                "more than 0",
            ),
            (
                r#"{"product_id":"p","quantity":1,"unit_price":1,"discount":120}"#,
                "0 to 100",
            ),
            (
                r#"{"product_id":"p","quantity":1,"unit_price":-1}"#,
                "not negative",
            ),
            (r#"{"product_id":"p","qty":1}"#, "not an order line"),
        ] {
            let err = OrderLine::parse("lines.x", json).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
    }
}
