//! A device checks a record it is about to create against its store.

use fieldcrm_core::duplicates::MatchRules;
use fieldcrm_core::{fields, Kind, Store};

#[test]
fn a_new_contact_that_looks_like_one_the_device_has_is_pointed_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path().join("a.db"), "ann").unwrap();
    let acme = s
        .create(
            Kind::Account,
            fields([("name", "Acme"), ("territory", "north")]),
        )
        .unwrap();
    let contact = |first: &str, last: &str, email: &str, phone: &str| {
        fields([
            ("first_name", first),
            ("last_name", last),
            ("email", email),
            ("phone", phone),
            ("account_id", acme.id.as_str()),
            ("territory", "north"),
        ])
    };
    let ada = s
        .create(
            Kind::Contact,
            contact("Ada", "Lovelace", "ada@engines.example", "+44 20 7946 0000"),
        )
        .unwrap();
    s.create(
        Kind::Contact,
        contact(
            "Charles",
            "Babbage",
            "charles@engines.example",
            "+44 20 7946 9999",
        ),
    )
    .unwrap();
    let uk = MatchRules {
        default_country_code: Some("44".into()),
        ..Default::default()
    };

    // Before creating: another email, the same phone written nationally.
    let found = s
        .find_duplicates(
            Kind::Contact,
            &contact(
                "Ada",
                "Lovelace-King",
                "a.king@other.example",
                "020 7946 0000",
            ),
            &uk,
        )
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].record.id, ada.id);
    assert!(found[0].why.evidence.contains(&"same phone".to_string()));
    // The email with plus-addressing, another name.
    let found = s
        .find_duplicates(
            Kind::Contact,
            &contact("A.", "L.", "Ada+crm@Engines.example", ""),
            &uk,
        )
        .unwrap();
    assert_eq!(found[0].record.id, ada.id);
    assert_eq!(found[0].why.evidence, ["same email"]);
    // Nobody like this.
    let none = s
        .find_duplicates(
            Kind::Contact,
            &contact("Grace", "Hopper", "grace@navy.example", "+1 555 0100 200"),
            &uk,
        )
        .unwrap();
    assert!(none.is_empty(), "{none:?}");

    // After creating: the new record is not its own duplicate.
    let again = s
        .create(
            Kind::Contact,
            contact("Ada", "Lovelace", "ada.lovelace@engines.example", ""),
        )
        .unwrap();
    let found = s.duplicates_of(&again.id, &uk).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].record.id, ada.id);
    assert!(found[0].why.evidence[0].contains("at the same account"));
}
