//! The README's story with the reference client: two reps' devices (two
//! store files) edit the same account offline, sync through a real relay,
//! see the conflict, one settles it, both converge; a change the relay
//! refuses is listed and discarded; signing out with work waiting asks.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use fieldcrm_server::relay::sqlite::SqliteRelay;

/// A relay with the demo data, served on an ephemeral port; returns its URL.
fn relay(dir: &Path) -> String {
    let store = Arc::new(SqliteRelay::open(&dir.join("relay")).unwrap());
    fieldcrm_server::demo::seed(&*store).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            fieldcrm_server::serve(store, listener, std::future::pending())
                .await
                .unwrap();
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

/// Runs `fieldcrm --store <store> args...`; returns (success, stdout + stderr).
fn fieldcrm(store: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fieldcrm"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env("FIELDCRM_PASSWORD", fieldcrm_server::demo::DEMO_PASSWORD)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn ok(store: &Path, args: &[&str]) -> String {
    let (success, text) = fieldcrm(store, args);
    assert!(success, "fieldcrm {args:?} failed: {text}");
    text
}

#[test]
fn two_reps_edit_offline_converge_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let url = relay(dir.path());
    let (ann, bob) = (dir.path().join("ann.db"), dir.path().join("bob.db"));
    assert!(ok(&ann, &["login", &url, "ann"]).contains("signed in as ann"));
    ok(&bob, &["login", &url, "bob"]);
    ok(&ann, &["sync"]);
    ok(&bob, &["sync"]);

    let found: serde_json::Value = serde_json::from_str(&ok(
        &ann,
        &["--json", "search", "Northwind", "--kind", "account"],
    ))
    .unwrap();
    let id = found[0]["id"].as_str().unwrap().to_string();
    // Both offline, the same field.
    ok(&ann, &["edit", &id, "phone=+44 113 496 0001"]);
    ok(
        &bob,
        &["edit", &id, "phone=+44 113 496 0002", "industry=Retail"],
    );
    ok(&ann, &["sync"]);
    ok(&bob, &["sync"]);
    ok(&ann, &["sync"]);
    let conflicts = ok(&ann, &["conflicts", &id]);
    assert!(
        conflicts.contains("+44 113 496 0001") && conflicts.contains("+44 113 496 0002"),
        "{conflicts}"
    );
    ok(&ann, &["resolve", &id, "phone", "+44 113 496 0003"]);
    ok(&ann, &["sync"]);
    ok(&bob, &["sync"]);
    let (a, b) = (
        ok(&ann, &["--json", "show", &id]),
        ok(&bob, &["--json", "show", &id]),
    );
    assert_eq!(a, b, "both devices hold the same record");
    let record: serde_json::Value = serde_json::from_str(&a).unwrap();
    assert_eq!(record["fields"]["phone"], "+44 113 496 0003");
    assert_eq!(record["fields"]["industry"], "Retail");
    assert!(ok(&bob, &["conflicts", &id]).contains("no conflicts"));

    // A change the relay refuses: listed, the record back to the relay's.
    ok(&ann, &["edit", &id, "owner=nobody-here"]);
    assert!(ok(&ann, &["sync"]).contains("1 refused"));
    let refused = ok(&ann, &["refused"]);
    assert!(refused.contains("no such user"), "{refused}");
    let shown: serde_json::Value =
        serde_json::from_str(&ok(&ann, &["--json", "show", &id])).unwrap();
    assert_eq!(shown["fields"]["owner"], "ann");
    let (signed_out, why) = fieldcrm(&ann, &["logout"]);
    assert!(!signed_out && why.contains("1 refused"), "{why}");
    ok(&ann, &["refused", "discard", "1"]);
    assert!(ok(&ann, &["logout"]).contains("signed out"));
    assert!(!ann.exists(), "the store left the device");

    // Bad input gets a clear error, not a crash.
    let (success, text) = fieldcrm(&bob, &["create", "deal", "name=X"]);
    assert!(
        !success && text.contains("\"account_id\" of a deal is required"),
        "{text}"
    );
    let (success, text) = fieldcrm(&bob, &["edit", &id, "geo.lat=north"]);
    assert!(
        !success && text.contains("\"north\" is not a number"),
        "{text}"
    );
}
