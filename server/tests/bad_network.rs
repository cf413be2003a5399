//! Bad networks: devices sync through a loopback proxy that, per
//! connection, delays, drops the request, drops the response after the
//! relay processed the request, truncates the response, or sends the
//! request twice. Every sync completes or fails with a clear error, and
//! retries over a good network converge with nothing lost or duplicated.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{all_records, seed_users, Device, Relay, PASSWORD};
use fieldcrm_core::{fields, HttpTransport, Kind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Fault {
    Pass,
    Delay,
    DropRequest,
    DropResponse,
    TruncateResponse,
    DuplicateRequest,
}

/// One HTTP/1.1 message (headers + Content-Length body), or `None` at EOF.
fn read_message(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
        head.extend_from_slice(line.as_bytes());
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    head.extend(body);
    Some(head)
}

/// Sends one request to the relay on a fresh connection and returns its response.
fn relay_round_trip(relay: &str, request: &[u8]) -> Option<Vec<u8>> {
    let mut upstream = TcpStream::connect(relay).ok()?;
    upstream.write_all(request).ok()?;
    read_message(&mut BufReader::new(upstream))
}

/// Starts the proxy; returns its address and the record of faults injected.
fn start_proxy(
    relay: String,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> (String, Arc<Mutex<Vec<Fault>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let injected = Arc::new(Mutex::new(Vec::new()));
    let log = injected.clone();
    std::thread::spawn(move || {
        let mut rng = StdRng::seed_from_u64(seed);
        for client in listener.incoming() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let Ok(client) = client else { continue };
            let fault = match rng.gen_range(0..10) {
                0..=3 => Fault::Pass,
                4 => Fault::Delay,
                5 => Fault::DropRequest,
                6 | 7 => Fault::DropResponse,
                8 => Fault::TruncateResponse,
                _ => Fault::DuplicateRequest,
            };
            let delay = Duration::from_millis(rng.gen_range(20..150));
            let relay = relay.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(client.try_clone().unwrap());
                let mut client = client;
                // One request per connection: the proxy closes after answering.
                let Some(request) = read_message(&mut reader) else {
                    return;
                };
                log.lock().unwrap().push(fault);
                let answer = match fault {
                    Fault::DropRequest => None,
                    Fault::Delay => {
                        std::thread::sleep(delay);
                        relay_round_trip(&relay, &request)
                    }
                    Fault::DuplicateRequest => {
                        relay_round_trip(&relay, &request);
                        relay_round_trip(&relay, &request)
                    }
                    _ => relay_round_trip(&relay, &request),
                };
                match (fault, answer) {
                    (Fault::DropResponse, _) | (_, None) => {}
                    (Fault::TruncateResponse, Some(a)) => {
                        let _ = client.write_all(&a[..a.len() / 2]);
                    }
                    (_, Some(a)) => {
                        let _ = client.write_all(&a);
                    }
                }
                let _ = client.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (addr, injected)
}

#[test]
fn syncs_over_a_faulty_network_fail_clearly_and_retries_converge() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    seed_users(&data);
    let relay = Relay::start(&data);
    let stop = Arc::new(AtomicBool::new(false));
    let (proxy, injected) = start_proxy(
        relay.url.trim_start_matches("http://").to_string(),
        9,
        stop.clone(),
    );

    let mut ann = Device::new(dir.path(), &relay, "ann");
    let mut bob = Device::new(dir.path(), &relay, "bob");
    // Both talk to the relay through the proxy.
    let via_proxy = |user: &str| {
        HttpTransport::login(&relay.url, user, PASSWORD)
            .map(|(_, l)| HttpTransport::new(&proxy, &l.token))
            .unwrap()
    };
    ann.transport = via_proxy("ann");
    bob.transport = via_proxy("bob");

    let mut rng = StdRng::seed_from_u64(3);
    let (mut ok, mut failed) = (0, 0);
    for round in 0..30 {
        for (i, device) in [&mut ann, &mut bob].into_iter().enumerate() {
            device
                .store
                .create(
                    Kind::Account,
                    fields([
                        ("name", format!("R{round} D{i}")),
                        ("territory", "north".into()),
                    ]),
                )
                .unwrap();
            let known = all_records(&device.store);
            let target = &known[rng.gen_range(0..known.len())];
            device
                .store
                .update(&target.id, fields([("industry", format!("I{round}.{i}"))]))
                .unwrap();
            match device.store.sync(&device.transport, &mut |_| {}) {
                Ok(_) => ok += 1,
                Err(e) => {
                    failed += 1;
                    let message = e.to_string();
                    assert!(
                        message.starts_with("sync failed:"),
                        "a clear sync error, not {message:?}"
                    );
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);

    // Good network again: retries converge.
    ann.reconnect(&relay);
    bob.reconnect(&relay);
    for _ in 0..2 {
        ann.sync();
        bob.sync();
    }
    assert_eq!(ann.store.outbox_status().unwrap().pending, 0);
    assert_eq!(bob.store.outbox_status().unwrap().pending, 0);
    let records = all_records(&ann.store);
    assert_eq!(records, all_records(&bob.store));
    assert_eq!(records.len(), 60, "every created record arrived once");
    let changes: usize = records
        .iter()
        .map(|r| ann.store.history(&r.id).unwrap().len())
        .sum();
    assert_eq!(
        changes, 120,
        "60 creations and 60 edits, none applied twice"
    );

    let faults = injected.lock().unwrap().clone();
    for f in [
        Fault::DropRequest,
        Fault::DropResponse,
        Fault::TruncateResponse,
        Fault::DuplicateRequest,
    ] {
        assert!(faults.contains(&f), "{f:?} was injected");
    }
    assert!(ok > 0 && failed > 0, "{ok} syncs passed, {failed} failed");
    eprintln!(
        "{} connections, {ok} syncs completed, {failed} failed cleanly",
        faults.len()
    );
}
