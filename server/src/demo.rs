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
    let dir = tempfile_dir()?;
    let mut total = 0;
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
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(total)
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
