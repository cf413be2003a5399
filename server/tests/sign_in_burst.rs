//! A burst of sign-ins cannot exhaust the relay's memory: each password
//! check (Argon2) takes ~19 MiB, so the relay runs at most one per core at
//! a time and the rest wait their turn.

mod common;

use common::{seed_users, Relay, PASSWORD};
use fieldcrm_core::HttpTransport;

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap()
}

#[test]
fn forty_sign_ins_at_once_all_succeed_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    seed_users(&data);
    let relay = Relay::start(&data);
    let burst: Vec<_> = (0..40)
        .map(|i| {
            let url = relay.url.clone();
            std::thread::spawn(move || {
                let user = ["ann", "bob", "sam", "maria"][i % 4];
                HttpTransport::login(&url, user, PASSWORD).map(|(_, login)| login.user)
            })
        })
        .collect();
    for (i, sign_in) in burst.into_iter().enumerate() {
        let user = sign_in.join().unwrap().expect("every sign-in succeeds");
        assert_eq!(user, ["ann", "bob", "sam", "maria"][i % 4]);
    }
    // Unbounded, 40 Argon2 checks at once would peak near 800 MiB.
    let peak = peak_rss_kib(relay.pid());
    assert!(peak < 300 * 1024, "relay peaked at {} MiB", peak / 1024);
}
