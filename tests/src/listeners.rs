//! Many devices holding the live event stream open on one relay
//! (`GET /v1/events`): how long a change in one territory takes to wake
//! that territory's devices, that the others stay asleep, and what each
//! idle connection costs the relay in memory and file descriptors.
//!
//! Half the connections are `rep0`'s (territory `t0`), half `rep1`'s
//! (`t1`); `rep0` then makes changes in `t0`. Each connection is a thread
//! with a small stack reading the stream line by line, as a phone's
//! built-in transport does.

use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fieldcrm_core::{HttpTransport, Kind, Store, Value};
use serde_json::{json, Value as Json};

use crate::relay_process::{RelayProcess, PASSWORD};

/// Changes made in `t0`, one after another, each waking its listeners.
const CHANGES: usize = 5;
/// Time left for every listener to hear one change before the next.
const SETTLE: Duration = Duration::from_millis(700);

/// What one listener heard: when each event arrived.
enum Heard {
    Connected,
    Event(usize, Instant),
    Failed(String),
}

/// Runs the phase against `relay` (seeded with at least two reps) with
/// `connections` open streams; `dir` holds rep0's device store.
pub fn phase(
    relay: &RelayProcess,
    dir: &std::path::Path,
    connections: usize,
) -> Result<Json, Box<dyn std::error::Error>> {
    let (_, t0) = HttpTransport::login(&relay.url, "rep0", PASSWORD)?;
    let (_, t1) = HttpTransport::login(&relay.url, "rep1", PASSWORD)?;
    let rss_before = relay.rss_kib();
    let fds_before = relay.open_fds();
    let (tx, rx) = mpsc::channel::<Heard>();
    let opened = Instant::now();
    for i in 0..connections {
        let url = format!("{}/v1/events", relay.url);
        let token = if i % 2 == 0 {
            t0.token.clone()
        } else {
            t1.token.clone()
        };
        let tx = tx.clone();
        std::thread::Builder::new()
            .stack_size(128 << 10)
            .spawn(move || listen(&url, &token, i, tx))?;
    }
    drop(tx);
    let mut connected = 0;
    let mut failures = Vec::new();
    while connected + failures.len() < connections {
        match rx.recv_timeout(Duration::from_secs(60))? {
            Heard::Connected => connected += 1,
            Heard::Failed(e) => failures.push(e),
            Heard::Event(..) => {}
        }
    }
    let open_s = opened.elapsed().as_secs_f64();
    // Idle: let keep-alives and allocations settle before measuring.
    std::thread::sleep(Duration::from_secs(1));
    let rss_idle = relay.rss_kib();
    let fds_idle = relay.open_fds();

    // Events are heard as `data: SEQ`: the first event after `after=0`
    // comes at once if the log holds anything rep0/rep1 may see; the log
    // is empty, so every event heard is a change made below.
    let mut device = Store::open(dir.join("rep0-listeners.db"), "rep0")?;
    let transport = HttpTransport::new(&relay.url, &t0.token);
    let mut sent_at = Vec::new();
    let cpu_before = relay.cpu_time();
    let mut heard: Vec<(usize, usize, Instant)> = Vec::new();
    for k in 0..CHANGES {
        device.create(
            Kind::Account,
            fieldcrm_core::fields([
                ("name", Value::from(format!("Live {k}"))),
                ("territory", "t0".into()),
            ]),
        )?;
        sent_at.push(Instant::now());
        device.sync(&transport, &mut |_| {})?;
        let until = Instant::now() + SETTLE;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(Heard::Event(who, at)) => heard.push((who, k, at)),
                Ok(Heard::Failed(e)) => failures.push(e),
                Ok(Heard::Connected) => {}
                Err(_) => break,
            }
        }
    }
    let cpu = relay.cpu_time().saturating_sub(cpu_before);
    let (mut wake_ms, mut woken_other) = (Vec::new(), 0usize);
    for (who, k, at) in &heard {
        if who % 2 == 1 {
            woken_other += 1;
        } else {
            // Heard after the change it was sent for (a late event counts
            // against the change it arrived after).
            wake_ms.push(at.duration_since(sent_at[*k]).as_secs_f64() * 1e3);
        }
    }
    wake_ms.sort_by(f64::total_cmp);
    let expected = connections.div_ceil(2) * CHANGES;
    let pct = |p: f64| -> Json {
        match wake_ms.len() {
            0 => Json::Null,
            n => json!((wake_ms[((n as f64 * p) as usize).min(n - 1)] * 1000.0).round() / 1000.0),
        }
    };
    let per_conn = |after: u64, before: u64| -> Json {
        match connected {
            0 => Json::Null,
            n => json!(((after.saturating_sub(before)) as f64 / n as f64 * 100.0).round() / 100.0),
        }
    };
    Ok(json!({
        "connections": connections,
        "connected": connected,
        "failures": failures.len(),
        "first_failure": failures.first(),
        "open_s": (open_s * 1000.0).round() / 1000.0,
        "changes": CHANGES,
        "wakes_expected": expected,
        "wakes_heard": wake_ms.len(),
        "wake_p50_ms": pct(0.50),
        "wake_p99_ms": pct(0.99),
        "wake_max_ms": pct(1.0),
        "other_territory_woken": woken_other,
        "relay_rss_idle_kib": rss_idle,
        "relay_kib_per_connection": per_conn(rss_idle, rss_before),
        "relay_fds_idle": fds_idle,
        "relay_fds_per_connection": per_conn(fds_idle, fds_before),
        "relay_cpu_ms_per_change": (cpu.as_secs_f64() * 1e3 / CHANGES as f64 * 100.0).round() / 100.0,
    }))
}

/// One device's stream, until the relay closes it or the phase ends.
fn listen(url: &str, token: &str, who: usize, tx: mpsc::Sender<Heard>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into();
    let answer = agent
        .get(format!("{url}?after=0"))
        .header("Authorization", format!("Bearer {token}"))
        .call();
    let mut answer = match answer {
        Ok(a) => a,
        Err(e) => {
            let _ = tx.send(Heard::Failed(e.to_string()));
            return;
        }
    };
    if tx.send(Heard::Connected).is_err() {
        return;
    }
    let reader = std::io::BufReader::new(answer.body_mut().as_reader());
    for line in reader.lines() {
        let Ok(line) = line else { return };
        if line.starts_with("data:") && tx.send(Heard::Event(who, Instant::now())).is_err() {
            return;
        }
    }
}
