//! Slow and stuck clients: one that never finishes its headers and ones
//! that never finish their body (sync, sign-in, office import) are cut off
//! after the request timeout, and the relay keeps answering everyone else
//! meanwhile.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{seed_users, Device, Relay};

/// Reads until the server closes the connection (or `limit` passes).
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn stuck_clients_are_cut_off_and_others_are_served_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    seed_users(&data);
    let relay = Relay::start_serving(&data, &["--request-timeout", "2"]);
    let addr = relay.url.trim_start_matches("http://").to_string();
    let mut ann = Device::new(dir.path(), &relay, "ann");

    // Headers that never end.
    let mut headers = TcpStream::connect(&addr).unwrap();
    headers
        .write_all(b"POST /v1/sync HTTP/1.1\r\nHost: relay\r\nContent-Type: app")
        .unwrap();
    // A body that never arrives in full.
    let mut body = TcpStream::connect(&addr).unwrap();
    body.write_all(
        b"POST /v1/login HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"username\":",
    )
    .unwrap();
    // The same on the office UI's sign-in and (signed in) import; the
    // session cookie holds an ordinary relay token.
    let (_, login) =
        fieldcrm_core::HttpTransport::login(&relay.url, "olivia", common::PASSWORD).unwrap();
    let web_bodies: Vec<TcpStream> = ["/login", "/import/run"]
        .iter()
        .map(|path| {
            let mut slow = TcpStream::connect(&addr).unwrap();
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: relay\r\nCookie: fieldcrm_session={}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n_csrf=",
                login.token
            );
            slow.write_all(head.as_bytes()).unwrap();
            slow
        })
        .collect();

    // Meanwhile a device syncs as usual.
    ann.store
        .create(
            fieldcrm_core::Kind::Account,
            fieldcrm_core::fields([("name", "Busy day"), ("territory", "north")]),
        )
        .unwrap();
    assert_eq!(ann.sync().total.acked, 1);

    let (answer, waited) = read_until_closed(&mut body, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(waited < Duration::from_secs(5), "cut off after {waited:?}");
    let (answer, waited) = read_until_closed(&mut headers, Duration::from_secs(10));
    assert!(
        waited < Duration::from_secs(5),
        "headers cut off after {waited:?}"
    );
    assert!(!answer.contains("200 OK"), "{answer:?}");
    for mut slow in web_bodies {
        let (answer, waited) = read_until_closed(&mut slow, Duration::from_secs(10));
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
        assert!(waited < Duration::from_secs(5), "cut off after {waited:?}");
    }

    // Still serving.
    assert_eq!(ann.sync().total.acked, 0);
    let health = healthz(&format!("{}/healthz", relay.url));
    assert_eq!(health, "ok");
}

fn healthz(url: &str) -> String {
    let mut stream =
        TcpStream::connect(url.trim_start_matches("http://").split('/').next().unwrap()).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(5));
    answer
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}
