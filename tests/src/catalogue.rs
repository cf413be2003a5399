//! The catalogue phase of the benchmark: the office uploads a product
//! catalogue and price book (kept in the territory every device holds),
//! then a rep's fresh device bootstraps it. The rep's own territory is
//! empty, so the bootstrap's time and bytes are what the catalogue adds to
//! any rep's first sync. Also times a price lookup and a 20-stop route.

use std::path::Path;
use std::time::{Duration, Instant};

use fieldcrm_core::{
    fields, plan, HttpTransport, Kind, NewRecord, RouteOptions, Stop, Store, Value,
    SHARED_TERRITORY,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value as Json};

use crate::relay_process::{self, RelayProcess};

type Error = Box<dyn std::error::Error>;

/// Prices per product: four currencies or validity periods each.
pub const PRICES_PER_PRODUCT: usize = 4;

/// Runs the phase against a fresh relay (`database`: PostgreSQL, else
/// SQLite in `dir`); `products` products and four prices each.
pub fn phase(dir: &Path, products: usize, database: Option<&str>) -> Result<Json, Error> {
    let relay = RelayProcess::start_with(&dir.join("relay-catalogue"), 1, database)?;
    let pw = relay_process::PASSWORD;
    let (to, _) = HttpTransport::login(&relay.url, relay_process::OFFICE, pw)?;
    let mut office = Store::open(dir.join("device-office.db"), relay_process::OFFICE)?;
    // Learns its standing first: the catalogue is the office's to write.
    office.sync(&to, &mut |_| {})?;
    let t = Instant::now();
    let ids = office.create_many((0..products).map(product))?;
    office.create_many(ids.iter().enumerate().flat_map(|(i, id)| prices(i, id)))?;
    let create_s = t.elapsed();
    let t = Instant::now();
    let up = office.sync(&to, &mut |_| {})?;
    let upload_s = t.elapsed();
    if up.total.rejected > 0 {
        return Err(format!("the relay refused {} catalogue changes", up.total.rejected).into());
    }
    let (bytes_up, _) = to.bytes();

    let (tr, _) = HttpTransport::login(&relay.url, "rep0", pw)?;
    let mut rep = Store::open(dir.join("device-catalogue.db"), "rep0")?;
    let t = Instant::now();
    let down = rep.sync(&tr, &mut |_| {})?;
    let bootstrap_s = t.elapsed();
    let (_, bytes_down) = tr.bytes();
    let records = rep
        .list(&fieldcrm_core::ListQuery {
            limit: 1,
            ..Default::default()
        })?
        .total;
    let expected = products * (1 + PRICES_PER_PRODUCT);
    if records != expected {
        return Err(format!("the rep's device holds {records} records, not {expected}").into());
    }
    let lookup = median(200, |i| {
        let id = &ids[i % ids.len()];
        let price = rep.price_of(id, "EUR", "2026-06-01").ok().flatten();
        assert!(price.is_some(), "product {id} has a price in EUR");
    });
    let route = median(50, |i| {
        std::hint::black_box(plan(stops(20, i as u64), &RouteOptions::default()));
    });
    Ok(json!({
        "products": products,
        "prices": products * PRICES_PER_PRODUCT,
        "office_create_s": secs(create_s),
        "upload_s": secs(upload_s),
        "bytes_up": bytes_up,
        "bootstrap_s": secs(bootstrap_s),
        "bootstrap_rounds": down.round,
        "bytes_down": bytes_down,
        "bytes_down_per_record": bytes_down / expected.max(1) as u64,
        "bootstrap_records_per_s": (expected as f64 / bootstrap_s.as_secs_f64()).round(),
        "price_lookup_ms": ms(lookup),
        "route_20_stops_ms": ms(route),
    }))
}

fn product(i: usize) -> NewRecord {
    NewRecord {
        kind: Kind::Product,
        fields: fields([
            ("sku", Value::from(format!("SKU-{i:05}"))),
            ("name", Value::from(format!("Product {i}"))),
            (
                "description",
                Value::from(format!("Case of 12, line {}", i % 40)),
            ),
            ("unit", Value::from("case")),
            ("active", Value::Bool(true)),
            ("territory", Value::from(SHARED_TERRITORY)),
        ]),
    }
}

/// A product's prices: EUR for the year and a second half-year price,
/// GBP and USD.
fn prices(i: usize, product: &str) -> impl Iterator<Item = NewRecord> + '_ {
    let base = 500 + (i as i64 % 97) * 25;
    [
        ("EUR", base, "2026-01-01", "2026-12-31"),
        ("EUR", base + 50, "2027-01-01", "2027-12-31"),
        ("GBP", base * 9 / 10, "2026-01-01", "2027-12-31"),
        ("USD", base * 11 / 10, "2026-01-01", "2027-12-31"),
    ]
    .into_iter()
    .map(move |(currency, amount, from, to)| NewRecord {
        kind: Kind::Price,
        fields: fields([
            ("product_id", Value::from(product)),
            ("currency", Value::from(currency)),
            ("unit_price", Value::Int(amount)),
            ("valid_from", Value::from(from)),
            ("valid_to", Value::from(to)),
            ("territory", Value::from(SHARED_TERRITORY)),
        ]),
    })
}

/// `n` visits scattered over a region about 100 km across.
fn stops(n: usize, seed: u64) -> Vec<Stop> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| Stop {
            id: format!("v{i}"),
            name: format!("Stop {i}"),
            lat: 52.0 + rng.gen::<f64>(),
            lon: 13.0 + rng.gen::<f64>() * 1.5,
        })
        .collect()
}

/// The median time of `runs` calls of `f` (given the run's number).
fn median(runs: usize, mut f: impl FnMut(usize)) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1000.0
}
