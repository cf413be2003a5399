//! A realistic demo dataset: two territories, reps in each, a manager, an
//! office user and an admin, and records made on the reps' (temporary) devices and pushed
//! through the same path real devices use.

use fieldcrm_core::protocol::RecordBytes;
use fieldcrm_core::{fields, Kind, Store, Value};

use crate::auth::hash_password;
use crate::relay::{RelayError, RelayStore, Result, Role, User};

/// Password of every demo user.
pub const DEMO_PASSWORD: &str = "fieldcrm-demo";

/// (user, role, territories)
pub const DEMO_USERS: &[(&str, Role, &[&str])] = &[
    ("ann", Role::Rep, &["north"]),
    ("bob", Role::Rep, &["north"]),
    ("sam", Role::Rep, &["south"]),
    ("maria", Role::Manager, &["north", "south"]),
    ("olivia", Role::Office, &[]),
    ("alex", Role::Admin, &[]),
];

const COMPANIES: &[(&str, &str, &str)] = &[
    ("Northwind Traders", "Retail", "Leeds"),
    ("Acme Steel", "Manufacturing", "Sheffield"),
    ("Harbour Logistics", "Logistics", "Hull"),
    ("Moorland Dairy", "Agriculture", "York"),
    ("Pennine Energy", "Energy", "Bradford"),
    ("Riverside Clinic", "Healthcare", "Durham"),
    ("Solent Marine", "Logistics", "Southampton"),
    ("Downs Vineyards", "Agriculture", "Lewes"),
    ("Channel Foods", "Retail", "Brighton"),
    ("Wessex Build", "Construction", "Salisbury"),
    ("Cornish Tin Works", "Manufacturing", "Truro"),
    ("Exe Valley Hotels", "Hospitality", "Exeter"),
];
const PEOPLE: &[(&str, &str, &str)] = &[
    ("Ada", "Lovelace", "Head of Procurement"),
    ("Grace", "Hopper", "Operations Manager"),
    ("Alan", "Turing", "CFO"),
    ("Katherine", "Johnson", "Buyer"),
    ("Tim", "Berners-Lee", "Owner"),
    ("Hedy", "Lamarr", "Store Manager"),
];
const STAGES: &[&str] = &[
    "lead",
    "qualified",
    "proposal",
    "negotiation",
    "won",
    "lost",
];

/// Whether the relay holds no users yet (the demo only seeds an empty relay).
pub fn is_empty(relay: &dyn RelayStore) -> Result<bool> {
    Ok(relay.list_users()?.is_empty())
}

/// Seeds users, territories and records; returns the number of records.
pub fn seed(relay: &dyn RelayStore) -> Result<usize> {
    for t in ["north", "south"] {
        relay.add_territory(t)?;
    }
    let hash = hash_password(DEMO_PASSWORD)?;
    for (id, role, territories) in DEMO_USERS {
        let territories: Vec<String> = territories.iter().map(|t| t.to_string()).collect();
        relay.add_user(id, &hash, *role, &territories)?;
    }
    configure(relay)?;
    let products = catalogue(relay)?;
    let mut total = 2 * products.len();
    let dir = tempfile_dir()?;
    for (rep, territory, companies) in [
        ("ann", "north", &COMPANIES[..6]),
        ("sam", "south", &COMPANIES[6..]),
    ] {
        let mut device = Store::open(dir.join(format!("{rep}.db")), rep)?;
        let mut first_account = None;
        for (i, (name, industry, city)) in companies.iter().enumerate() {
            let account = device.create(
                Kind::Account,
                fields([
                    ("name", Value::from(*name)),
                    ("industry", (*industry).into()),
                    ("address.city", (*city).into()),
                    ("address.country", "GB".into()),
                    ("phone", format!("+44 1{i}3 496 0{i}{i}{i}").into()),
                    (
                        "website",
                        format!("www.{}.example", name.to_lowercase().replace(' ', "")).into(),
                    ),
                    ("territory", territory.into()),
                    ("custom.tier", TIERS[i % TIERS.len()].0.into()),
                ]),
            )?;
            first_account.get_or_insert_with(|| account.id.clone());
            for (j, (first, last, title)) in PEOPLE.iter().enumerate().skip(i % 3).take(3) {
                device.create(
                    Kind::Contact,
                    fields([
                        ("account_id", Value::from(account.id.as_str())),
                        ("first_name", (*first).into()),
                        ("last_name", (*last).into()),
                        ("title", (*title).into()),
                        (
                            "email",
                            format!(
                                "{}.{}@{}.example",
                                first.to_lowercase(),
                                last.to_lowercase(),
                                i
                            )
                            .into(),
                        ),
                        ("phone", format!("+44 7700 900{i}{j}{j}").into()),
                        ("territory", territory.into()),
                    ]),
                )?;
            }
            let deal = device.create(
                Kind::Deal,
                fields([
                    ("account_id", Value::from(account.id.as_str())),
                    ("name", format!("{name} — annual supply").into()),
                    ("stage", STAGES[i % STAGES.len()].into()),
                    ("amount", Value::Int(((i as i64) + 1) * 1_250_000)),
                    ("currency", "GBP".into()),
                    ("close_date", format!("2027-0{}-15", 1 + i % 9).into()),
                    ("probability", Value::Int(((i as i64) * 20) % 100)),
                    ("territory", territory.into()),
                ]),
            )?;
            device.create(
                Kind::Activity,
                fields([
                    ("kind", Value::from(["call", "visit", "meeting"][i % 3])),
                    ("subject", format!("Follow up on {name}").into()),
                    ("body", "Discuss volumes for next quarter.".into()),
                    ("related_to", deal.id.as_str().into()),
                    ("done", Value::Bool(i % 2 == 0)),
                    ("territory", territory.into()),
                ]),
            )?;
        }
        leads_and_cases(&mut device, rep, territory, first_account.as_deref())?;
        let accounts = companies_ids(&device)?;
        todays_visits(&mut device, territory, &accounts)?;
        let changes: Vec<RecordBytes> = device
            .outbox(0, 100_000, false)?
            .into_iter()
            .map(|e| RecordBytes {
                record_id: e.record_id,
                bytes: e.bytes,
            })
            .collect();
        let changes_of: Vec<String> = changes.iter().map(|c| c.record_id.clone()).collect();
        let user = User {
            id: rep.to_string(),
            role: Role::Rep,
            territories: vec![territory.to_string()],
        };
        let pushed = relay.push(
            &user,
            &format!("demo-{rep}"),
            &fieldcrm_core::protocol::Cursor::default(),
            changes,
        )?;
        if let Some(r) = pushed.rejected.first() {
            return Err(RelayError::Invalid(format!(
                "demo data was refused: {}",
                r.reason
            )));
        }
        let records: std::collections::HashSet<&str> =
            changes_of.iter().map(String::as_str).collect();
        total += records.len();
        if let Some(account) = &first_account {
            total += order(relay, &user, account, &products)?;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(total)
}

/// The catalogue the office keeps: products with a GBP price each.
fn catalogue(relay: &dyn RelayStore) -> Result<Vec<String>> {
    use fieldcrm_core::{Edit, SHARED_TERRITORY};
    let office = User {
        id: "olivia".into(),
        role: Role::Office,
        territories: Vec::new(),
    };
    let make = |kind: Kind, f: fieldcrm_core::Fields| -> Result<String> {
        Ok(crate::relay::office::edit_one(relay, &office, Edit::Create { kind, fields: f })?.id)
    };
    let mut ids = Vec::new();
    for (sku, name, unit, pence) in [
        ("TEA-100", "Breakfast tea, 100 bags", "box", 450),
        ("COF-1KG", "Coffee beans, 1 kg", "bag", 1899),
        ("CUP-12", "Paper cups, 12 oz, 50", "pack", 725),
        ("MILK-1L", "Oat milk, 1 l", "carton", 189),
    ] {
        let product = make(
            Kind::Product,
            fields([
                ("sku", Value::from(sku)),
                ("name", name.into()),
                ("unit", unit.into()),
                ("active", true.into()),
                ("territory", SHARED_TERRITORY.into()),
            ]),
        )?;
        make(
            Kind::Price,
            fields([
                ("product_id", Value::from(product.as_str())),
                ("currency", "GBP".into()),
                ("unit_price", Value::Int(pence)),
                ("valid_from", "2025-01-01".into()),
                ("territory", SHARED_TERRITORY.into()),
            ]),
        )?;
        ids.push(product);
    }
    Ok(ids)
}

/// A rep's draft order on their first account, with two lines priced from
/// the price book (office edits as the rep, through the push path).
fn order(relay: &dyn RelayStore, rep: &User, account: &str, products: &[String]) -> Result<usize> {
    use crate::relay::office;
    let refused =
        |e: crate::relay::EditRefusal| RelayError::Invalid(format!("demo order was refused: {e}"));
    let order = office::edit_one(
        relay,
        rep,
        fieldcrm_core::Edit::Create {
            kind: Kind::Order,
            fields: fields([
                ("account_id", Value::from(account)),
                ("name", "Monthly restock".into()),
                ("currency", "GBP".into()),
                ("tax_percent", Value::Int(20)),
                ("territory", rep.territories[0].as_str().into()),
            ]),
        },
    )?
    .id;
    for (product, quantity) in products.iter().take(2).zip([12.0, 4.0]) {
        office::add_order_line(relay, rep, &order, product, quantity, 0.0)?.map_err(refused)?;
    }
    Ok(1)
}

/// The accounts a demo device made, oldest first.
fn companies_ids(device: &Store) -> Result<Vec<String>> {
    let q = fieldcrm_core::ListQuery {
        kind: Some(Kind::Account),
        sort: fieldcrm_core::SortBy::CreatedAt,
        limit: 100,
        ..Default::default()
    };
    Ok(device.list(&q)?.records.into_iter().map(|r| r.id).collect())
}

/// Three visits planned for today (10:00, 12:00 and 15:00 UTC) at the
/// rep's first accounts, for the day's route and the visits page.
fn todays_visits(device: &mut Store, territory: &str, accounts: &[String]) -> Result<()> {
    let day = 86_400_000;
    let midnight = crate::relay::now_ms().div_euclid(day) * day;
    for (account, hour) in accounts.iter().zip([10, 12, 15]) {
        device.create(
            Kind::Activity,
            fields([
                ("kind", Value::from("visit")),
                ("subject", "Restock visit".into()),
                ("purpose", "check the shelves, take the order".into()),
                ("related_to", account.as_str().into()),
                ("due_at", Value::Int(midnight + hour * 3_600_000)),
                ("territory", territory.into()),
            ]),
        )?;
    }
    Ok(())
}

/// The demo's account tiers: a picklist and the custom field that uses it.
const TIERS: [(&str, &str); 3] = [("gold", "Gold"), ("silver", "Silver"), ("bronze", "Bronze")];

/// The organisation configuration the demo starts with, set by its admin:
/// a "Tier" picklist field on accounts.
fn configure(relay: &dyn RelayStore) -> Result<()> {
    use crate::config_entries as entries;
    let admin = User {
        id: "alex".into(),
        role: Role::Admin,
        territories: Vec::new(),
    };
    let set = |make: &dyn Fn(&fieldcrm_core::Config) -> std::result::Result<_, String>| {
        let entry = make(&relay.configuration()?).map_err(RelayError::Invalid)?;
        crate::relay::office::set_config_entry(relay, &admin, &entry)?
            .map(|_| ())
            .map_err(|e| RelayError::Invalid(format!("demo configuration was refused: {e}")))
    };
    for (value, label) in TIERS {
        set(&|c| entries::add_value(c, "tier", value, label))?;
    }
    set(&|c| {
        let tier = entries::NewField {
            label: "Tier".into(),
            ty: fieldcrm_core::CustomType::Picklist,
            picklist: Some("tier".into()),
            refers_to: None,
            required: false,
            searchable: false,
        };
        entries::add_field(c, Kind::Account, "tier", tier)
    })
}

/// Each rep's leads (the first converted, with a deal) and cases (one
/// overdue).
fn leads_and_cases(
    device: &mut Store,
    rep: &str,
    territory: &str,
    account: Option<&str>,
) -> Result<()> {
    let leads = [
        ("Grace Hopper", "Compiler Works", "web", "working"),
        ("Alan Turing", "Bletchley Supplies", "referral", "qualified"),
        ("Mary Somerville", "Tidal Instruments", "event", "new"),
    ];
    for (i, (name, company, source, status)) in leads.into_iter().enumerate() {
        let lead = device.create(
            Kind::Lead,
            fields([
                ("name", Value::from(name)),
                ("company", format!("{company} ({rep})").into()),
                ("source", source.into()),
                ("status", status.into()),
                ("territory", territory.into()),
            ]),
        )?;
        if i == 0 {
            device.convert_lead(
                &lead.id,
                fieldcrm_core::Conversion {
                    account_id: None,
                    deal_name: Some(format!("{company} — pilot")),
                },
            )?;
        }
    }
    let day = 86_400_000;
    let now = crate::relay::now_ms();
    for (subject, priority, resolve_by) in [
        ("Late delivery to the depot", "high", now - 2 * day),
        ("Invoice query", "normal", now + 5 * day),
    ] {
        let mut case = fields([
            ("subject", Value::from(subject)),
            ("priority", priority.into()),
            ("status", "open".into()),
            ("resolve_by", Value::Int(resolve_by)),
            ("territory", territory.into()),
        ]);
        if let Some(account) = account {
            case.insert("account_id".into(), account.into());
        }
        device.create(Kind::Case, case)?;
    }
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("fieldcrm-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| RelayError::Invalid(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_seeds_a_catalogue_visits_for_today_and_orders() {
        let dir = tempfile::tempdir().unwrap();
        let relay = crate::relay::sqlite::SqliteRelay::open(&dir.path().join("relay")).unwrap();
        let total = seed(&relay).unwrap();
        let count = |kind: Kind| {
            let q = fieldcrm_core::ListQuery {
                kind: Some(kind),
                limit: 1,
                ..Default::default()
            };
            relay.list(&q).unwrap().total
        };
        assert_eq!(
            (count(Kind::Product), count(Kind::Price), count(Kind::Order)),
            (4, 4, 2)
        );
        let orders = relay
            .list(&fieldcrm_core::ListQuery {
                kind: Some(Kind::Order),
                limit: 5,
                ..Default::default()
            })
            .unwrap();
        for order in &orders.records {
            let totals = fieldcrm_core::order_totals(order);
            // 12 boxes of tea at 4.50 and 4 bags of coffee at 18.99, 20 % tax.
            assert_eq!(
                (totals.lines.len(), totals.net, totals.gross),
                (2, 12996, 15595)
            );
        }
        let visits = fieldcrm_core::ListQuery {
            kind: Some(Kind::Activity),
            field_is: vec![("purpose".into(), "check the shelves, take the order".into())],
            limit: 10,
            ..Default::default()
        };
        assert_eq!(
            relay.list(&visits).unwrap().total,
            6,
            "three per rep, today"
        );
        assert_eq!(total, 88 + 8 + 6 + 2);
    }
}
