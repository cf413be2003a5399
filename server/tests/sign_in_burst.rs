//! Sign-ins against the real process: a burst cannot exhaust the relay's
//! memory (each Argon2 check takes ~19 MiB, so the relay runs at most one
//! per core at a time and the rest wait their turn), and failed ones slow
//! down the address they come from, not the user everywhere.

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

/// Posts a sign-in from `source` (any 127.x address is this machine).
fn sign_in_from(relay: &Relay, source: [u8; 4], user: &str, password: &str) -> u16 {
    use std::io::{Read, Write};
    let target: std::net::SocketAddr = relay.url.trim_start_matches("http://").parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((source, 0).into()).unwrap();
        socket.connect(target).await.unwrap().into_std().unwrap()
    });
    let mut stream = stream;
    stream.set_nonblocking(false).unwrap();
    let body = serde_json::json!({ "username": user, "password": password }).to_string();
    let request = format!(
        "POST /v1/login HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn failed_sign_ins_slow_down_the_address_they_come_from() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    seed_users(&data);
    let relay = Relay::start(&data);
    for _ in 0..fieldcrm_server::login_throttle::FREE_PER_USER {
        assert_eq!(
            sign_in_from(&relay, [127, 0, 0, 1], "ann", "guess-guess"),
            401
        );
    }
    assert_eq!(sign_in_from(&relay, [127, 0, 0, 1], "ann", PASSWORD), 429);
    assert_eq!(sign_in_from(&relay, [127, 0, 0, 2], "ann", PASSWORD), 200);
}
