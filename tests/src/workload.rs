//! Workload W1 (DESIGN §8): a rep's territory of N records, deterministic
//! from a seed: 20% accounts, 60% contacts, 20% deals, realistic values.

use fieldcrm_core::{fields, Fields, Kind, NewRecord, Store, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const FIRST: &[&str] = &[
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Margaret",
    "Ken",
    "Radia",
    "Linus",
    "Frances",
    "John",
    "Katherine",
    "Tim",
    "Hedy",
    "Dennis",
    "Sophie",
    "Niklaus",
    "Joan",
    "Claude",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Hamilton",
    "Thompson",
    "Perlman",
    "Torvalds",
    "Allen",
    "McCarthy",
    "Johnson",
    "Berners-Lee",
    "Lamarr",
    "Ritchie",
    "Wilson",
    "Wirth",
    "Clarke",
    "Shannon",
];
const COMPANY: &[&str] = &[
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Wonka",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Hooli",
    "Vandelay",
    "Aperture",
    "Gringotts",
    "Oceanic",
    "Monarch",
    "Massive",
    "Dunder",
    "Prestige",
    "Nakatomi",
];
const SUFFIX: &[&str] = &[
    "Ltd", "GmbH", "SA", "Inc", "Group", "Holdings", "& Co", "BV",
];
const INDUSTRY: &[&str] = &[
    "Manufacturing",
    "Retail",
    "Logistics",
    "Healthcare",
    "Energy",
    "Finance",
    "Agriculture",
    "Construction",
    "Hospitality",
    "Software",
];
const CITY: &[(&str, &str, f64, f64)] = &[
    ("Leeds", "GB", 53.80, -1.55),
    ("Lyon", "FR", 45.76, 4.84),
    ("Porto", "PT", 41.15, -8.61),
    ("Gdansk", "PL", 54.35, 18.65),
    ("Utrecht", "NL", 52.09, 5.12),
    ("Graz", "AT", 47.07, 15.44),
];
const STREET: &[&str] = &[
    "High Street",
    "Station Road",
    "Church Lane",
    "Mill Road",
    "Market Square",
];
const TITLE: &[&str] = &[
    "Buyer",
    "Head of Procurement",
    "CFO",
    "Operations Manager",
    "Owner",
    "Store Manager",
];
const STAGES: &[&str] = &[
    "lead",
    "qualified",
    "proposal",
    "negotiation",
    "won",
    "lost",
];

/// One record to create; contacts and deals name their account by its
/// position among the workload's accounts.
#[derive(Debug, Clone)]
pub struct Planned {
    pub kind: Kind,
    pub fields: Fields,
    pub account: Option<usize>,
}

/// The W1 records for `n` and `seed`: all accounts first, then contacts and
/// deals of those accounts. `territory` and `owners` describe the rep's patch.
pub fn w1(n: usize, seed: u64, territory: &str, owners: &[&str]) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let accounts = (n / 5).max(1);
    let deals = n / 5;
    let contacts = n.saturating_sub(accounts + deals);
    let mut out = Vec::with_capacity(n);
    for i in 0..accounts {
        let (city, country, lat, lon) = CITY[rng.gen_range(0..CITY.len())];
        let name = format!(
            "{} {} {}",
            pick(&mut rng, COMPANY),
            pick(&mut rng, SUFFIX),
            i
        );
        let f = fields([
            ("name", Value::from(name.clone())),
            ("industry", pick(&mut rng, INDUSTRY).into()),
            ("phone", phone(&mut rng).into()),
            ("website", format!("www.{}.example", slug(&name)).into()),
            (
                "address.street",
                format!("{} {}", rng.gen_range(1..300), pick(&mut rng, STREET)).into(),
            ),
            ("address.city", city.into()),
            (
                "address.postcode",
                format!("{:05}", rng.gen_range(1000..99999)).into(),
            ),
            ("address.country", country.into()),
            ("geo.lat", Value::Float(lat + rng.gen_range(-0.2..0.2))),
            ("geo.lon", Value::Float(lon + rng.gen_range(-0.2..0.2))),
            ("owner", pick(&mut rng, owners).into()),
            ("territory", territory.into()),
        ]);
        out.push(Planned {
            kind: Kind::Account,
            fields: f,
            account: None,
        });
    }
    for i in 0..contacts {
        let account = rng.gen_range(0..accounts);
        let (first, last) = (pick(&mut rng, FIRST), pick(&mut rng, LAST));
        let f = fields([
            ("first_name", Value::from(first)),
            ("last_name", last.into()),
            (
                "email",
                format!(
                    "{}.{}{}@{}.example",
                    first.to_lowercase(),
                    slug(last),
                    i,
                    pick(&mut rng, COMPANY).to_lowercase()
                )
                .into(),
            ),
            ("phone", phone(&mut rng).into()),
            ("title", pick(&mut rng, TITLE).into()),
            ("owner", pick(&mut rng, owners).into()),
            ("territory", territory.into()),
        ]);
        out.push(Planned {
            kind: Kind::Contact,
            fields: f,
            account: Some(account),
        });
    }
    for i in 0..deals {
        let account = rng.gen_range(0..accounts);
        let f = fields([
            (
                "name",
                Value::from(format!("{} renewal {}", pick(&mut rng, INDUSTRY), i)),
            ),
            ("stage", pick(&mut rng, STAGES).into()),
            ("amount", Value::Int(rng.gen_range(10..500) * 10_000)),
            ("currency", "EUR".into()),
            (
                "close_date",
                format!(
                    "2027-{:02}-{:02}",
                    rng.gen_range(1..13),
                    rng.gen_range(1..29)
                )
                .into(),
            ),
            ("probability", Value::Int(rng.gen_range(0..=10) * 10)),
            ("owner", pick(&mut rng, owners).into()),
            ("territory", territory.into()),
        ]);
        out.push(Planned {
            kind: Kind::Deal,
            fields: f,
            account: Some(account),
        });
    }
    out
}

/// Creates the plan through the batch path (one transaction for the
/// accounts, one for the rest); returns the ids in plan order.
pub fn create_batch(store: &mut Store, plan: &[Planned]) -> fieldcrm_core::Result<Vec<String>> {
    let split = plan
        .iter()
        .position(|p| p.kind != Kind::Account)
        .unwrap_or(plan.len());
    let mut ids = store.create_many(plan[..split].iter().map(|p| NewRecord {
        kind: p.kind,
        fields: p.fields.clone(),
    }))?;
    let rest: Vec<NewRecord> = plan[split..]
        .iter()
        .map(|p| NewRecord {
            kind: p.kind,
            fields: resolve(p, &ids),
        })
        .collect();
    ids.extend(store.create_many(rest)?);
    Ok(ids)
}

/// A planned record's fields, its account named by id.
pub fn resolve(p: &Planned, ids: &[String]) -> Fields {
    let mut fields = p.fields.clone();
    if let Some(i) = p.account {
        fields.insert("account_id".into(), Value::from(ids[i].as_str()));
    }
    fields
}

/// Search terms a user would type for this workload: name and email prefixes.
pub fn search_terms(count: usize, seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    (0..count)
        .map(|i| match i % 3 {
            0 => LAST[rng.gen_range(0..LAST.len())][..4].to_lowercase(),
            1 => format!(
                "{} {}",
                FIRST[rng.gen_range(0..FIRST.len())],
                &LAST[rng.gen_range(0..LAST.len())][..3]
            ),
            _ => COMPANY[rng.gen_range(0..COMPANY.len())].to_lowercase(),
        })
        .collect()
}

fn pick<'a>(rng: &mut StdRng, xs: &[&'a str]) -> &'a str {
    xs[rng.gen_range(0..xs.len())]
}

fn phone(rng: &mut StdRng) -> String {
    format!(
        "+44 {} {:04} {:04}",
        rng.gen_range(20..80),
        rng.gen_range(0..10_000),
        rng.gen_range(0..10_000)
    )
}

fn slug(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn w1_is_deterministic_and_has_the_right_mix() {
        let a = w1(1000, 7, "north", &["ann", "bob"]);
        let b = w1(1000, 7, "north", &["ann", "bob"]);
        assert_eq!(a.len(), 1000);
        assert_eq!(
            format!("{:?}", a[500].fields),
            format!("{:?}", b[500].fields)
        );
        let count = |k| a.iter().filter(|p| p.kind == k).count();
        assert_eq!(
            (
                count(Kind::Account),
                count(Kind::Contact),
                count(Kind::Deal)
            ),
            (200, 600, 200)
        );
        assert_ne!(
            format!("{:?}", w1(10, 8, "n", &["a"])[0].fields),
            format!("{:?}", w1(10, 7, "n", &["a"])[0].fields)
        );
    }
}
