//! Slows down password guessing without letting anyone lock a user out.
//!
//! Failed sign-ins are counted per (client address, username) and per
//! client address. Past a few free failures each further attempt must wait
//! twice as long as the last (1 s, 2 s, 4 s … up to five minutes), so
//! guessing one password from one place, or trying many names from one
//! place, slows to a crawl, while the same user signing in from anywhere
//! else is not affected. A client's count is forgotten after a quiet spell.
//! Decision: docs/decisions/0006-web-security.md.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use crate::AppState;

/// Failures a client may make for one username before waiting.
pub const FREE_PER_USER: u32 = 5;
/// Failures a client may make over all usernames before waiting.
pub const FREE_PER_CLIENT: u32 = 20;
/// The first wait; each further failure doubles it.
const FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest wait between attempts.
pub const LONGEST_WAIT: Duration = Duration::from_secs(300);
/// A count is forgotten this long after its last failure.
const FORGET_AFTER: Duration = Duration::from_secs(900);
/// Bounds memory under a flood of made-up names or addresses.
const MAX_TRACKED: usize = 100_000;

/// Where a request came from, as far as throttling is concerned. IPv6
/// addresses count by their /64 network: one machine has a whole /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddress(IpAddr);

impl ClientAddress {
    pub fn new(ip: IpAddr) -> Self {
        ClientAddress(match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
            v4 => v4,
        })
    }

    /// Requests served in-process (tests) have no peer address.
    fn unknown() -> Self {
        ClientAddress(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))
    }
}

impl FromRequestParts<Arc<AppState>> for ClientAddress {
    type Rejection = std::convert::Infallible;

    /// The proxy's header when the relay is told to trust one (the last
    /// address in it, which the nearest proxy wrote), else the peer.
    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let forwarded = state
            .options
            .client_address_header
            .as_ref()
            .and_then(|name| parts.headers.get_all(name).iter().next_back())
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok());
        let peer = parts
            .extensions
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        Ok(forwarded
            .or(peer)
            .map_or_else(ClientAddress::unknown, ClientAddress::new))
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    /// How long from `now` until another attempt is allowed.
    fn wait(&self, free: u32, now: Instant) -> Duration {
        if self.count < free {
            return Duration::ZERO;
        }
        let doublings = (self.count - free).min(16);
        let wait = (FIRST_WAIT * 2u32.pow(doublings)).min(LONGEST_WAIT);
        wait.saturating_sub(now.saturating_duration_since(self.last))
    }

    fn forgotten(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last) >= FORGET_AFTER
    }
}

#[derive(Debug, Default)]
struct Counts {
    per_user: HashMap<(ClientAddress, String), Failures>,
    per_client: HashMap<ClientAddress, Failures>,
}

/// Failed sign-ins by client and by (client, username).
#[derive(Debug, Default)]
pub struct LoginThrottle {
    counts: Mutex<Counts>,
}

fn key(username: &str) -> String {
    username.trim().to_lowercase()
}

fn record<K: Eq + std::hash::Hash>(map: &mut HashMap<K, Failures>, key: K, now: Instant) {
    if map.len() >= MAX_TRACKED {
        map.retain(|_, f| !f.forgotten(now));
        if map.len() >= MAX_TRACKED {
            // Still full of live entries: the per-client count keeps working.
            return;
        }
    }
    let entry = map.entry(key).or_insert(Failures {
        count: 0,
        last: now,
    });
    if entry.forgotten(now) {
        entry.count = 0;
    }
    entry.count += 1;
    entry.last = now;
}

impl LoginThrottle {
    /// `Err(wait)` while `client` must wait before trying `username` again.
    pub fn check(&self, client: ClientAddress, username: &str) -> Result<(), Duration> {
        self.check_at(client, username, Instant::now())
    }

    pub fn failed(&self, client: ClientAddress, username: &str) {
        self.failed_at(client, username, Instant::now())
    }

    /// A right password clears that name's count for this client; the
    /// client's overall count stays (one success must not hide a spray).
    pub fn succeeded(&self, client: ClientAddress, username: &str) {
        self.lock().per_user.remove(&(client, key(username)));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_at(
        &self,
        client: ClientAddress,
        username: &str,
        now: Instant,
    ) -> Result<(), Duration> {
        let counts = self.lock();
        let user = counts
            .per_user
            .get(&(client, key(username)))
            .map_or(Duration::ZERO, |f| f.wait(FREE_PER_USER, now));
        let all = counts
            .per_client
            .get(&client)
            .map_or(Duration::ZERO, |f| f.wait(FREE_PER_CLIENT, now));
        match user.max(all) {
            Duration::ZERO => Ok(()),
            wait => Err(wait),
        }
    }

    fn failed_at(&self, client: ClientAddress, username: &str, now: Instant) {
        let mut counts = self.lock();
        record(&mut counts.per_user, (client, key(username)), now);
        record(&mut counts.per_client, client, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> ClientAddress {
        ClientAddress::new(s.parse().unwrap())
    }

    #[test]
    fn guessing_one_name_backs_off_for_that_client_only() {
        let throttle = LoginThrottle::default();
        let (attacker, user) = (addr("203.0.113.9"), addr("198.51.100.7"));
        let t0 = Instant::now();
        for _ in 0..FREE_PER_USER {
            assert!(throttle.check_at(attacker, "ann", t0).is_ok());
            throttle.failed_at(attacker, "ann", t0);
        }
        assert_eq!(throttle.check_at(attacker, "ann", t0), Err(FIRST_WAIT));
        assert!(throttle.check_at(attacker, "ann", t0 + FIRST_WAIT).is_ok());
        // Ann herself, elsewhere, is never held up.
        assert!(throttle.check_at(user, "ann", t0).is_ok());
        // Each further failure doubles the wait, up to the longest.
        let mut t = t0 + FIRST_WAIT;
        throttle.failed_at(attacker, "ANN ", t);
        assert_eq!(throttle.check_at(attacker, "ann", t), Err(FIRST_WAIT * 2));
        for _ in 0..20 {
            t += LONGEST_WAIT;
            throttle.failed_at(attacker, "ann", t);
        }
        assert_eq!(throttle.check_at(attacker, "ann", t), Err(LONGEST_WAIT));
        // Forgotten after a quiet spell.
        assert!(throttle.check_at(attacker, "ann", t + FORGET_AFTER).is_ok());
        throttle.failed_at(attacker, "ann", t + FORGET_AFTER);
        assert!(throttle.check_at(attacker, "ann", t + FORGET_AFTER).is_ok());
    }

    #[test]
    fn many_names_from_one_client_back_off_too() {
        let throttle = LoginThrottle::default();
        let sprayer = addr("203.0.113.9");
        let t0 = Instant::now();
        for i in 0..FREE_PER_CLIENT {
            let name = format!("user{i}");
            assert!(throttle.check_at(sprayer, &name, t0).is_ok(), "{name}");
            throttle.failed_at(sprayer, &name, t0);
        }
        assert!(throttle.check_at(sprayer, "someone-new", t0).is_err());
        assert!(throttle
            .check_at(addr("198.51.100.7"), "someone-new", t0)
            .is_ok());
    }

    #[test]
    fn a_right_password_clears_the_names_count() {
        let throttle = LoginThrottle::default();
        let client = addr("192.0.2.1");
        let t0 = Instant::now();
        for _ in 0..FREE_PER_USER {
            throttle.failed_at(client, "ann", t0);
        }
        throttle.succeeded(client, "ann");
        assert!(throttle.check_at(client, "ann", t0).is_ok());
    }

    #[test]
    fn ipv6_clients_count_by_network() {
        assert_eq!(addr("2001:db8::1"), addr("2001:db8::ffff:1"));
        assert_ne!(addr("2001:db8::1"), addr("2001:db8:0:1::1"));
        assert_eq!(addr("::ffff:192.0.2.1"), addr("192.0.2.1"));
    }
}
