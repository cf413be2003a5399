//! The day's route: a rep's planned visits in an order that shortens the
//! drive, with the distance of each leg and when the rep gets there.
//!
//! Distances are great-circle (haversine) kilometres: no map service is
//! needed, every platform computes the same answer offline, and for the
//! handful of stops of a day the order it gives is close to the road one.
//! The order is found by nearest neighbour from the start, then improved
//! by 2-opt (reversing any stretch whose reversal shortens the path) until
//! nothing improves: a few hundred microseconds for 20 stops, and within a
//! few percent of the best order on such small days, where nearest
//! neighbour alone often leaves a crossing. The rep may give their own
//! order instead ([`follow`]).

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::{Kind, Record, Value};
use crate::query::ListQuery;
use crate::store::Store;

/// One place to visit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stop {
    /// The visit (an activity) this stop is.
    pub id: String,
    pub name: String,
    pub lat: f64,
    pub lon: f64,
}

/// How the day is driven.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteOptions {
    /// Where the day starts (home, the office); `None`: at the first stop.
    pub start: Option<(f64, f64)>,
    /// When the day starts, ms since the epoch.
    pub start_at: i64,
    /// Average driving speed, km/h.
    pub speed_kmh: f64,
    /// Time spent at each stop, minutes.
    pub visit_minutes: i64,
}

impl Default for RouteOptions {
    fn default() -> Self {
        RouteOptions {
            start: None,
            start_at: 0,
            speed_kmh: 50.0,
            visit_minutes: 30,
        }
    }
}

/// A stop as the route reaches it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leg {
    pub stop: Stop,
    /// From the start or the previous stop.
    pub distance_km: f64,
    pub arrive_at: i64,
    pub leave_at: i64,
}

/// The day in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub legs: Vec<Leg>,
    pub total_km: f64,
    /// Visits with no position to route by (their account has no `geo`).
    pub unplaced: Vec<String>,
}

/// Great-circle distance in kilometres.
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    const EARTH_KM: f64 = 6371.0;
    let (la1, lo1, la2, lo2) = (
        a.0.to_radians(),
        a.1.to_radians(),
        b.0.to_radians(),
        b.1.to_radians(),
    );
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * EARTH_KM * h.sqrt().min(1.0).asin()
}

/// The stops in an order that shortens the drive (see the module).
pub fn plan(stops: Vec<Stop>, options: &RouteOptions) -> Route {
    let points: Vec<(f64, f64)> = stops.iter().map(|s| (s.lat, s.lon)).collect();
    let order = two_opt(
        nearest_neighbour(&points, options.start),
        &points,
        options.start,
    );
    let mut stops: Vec<Option<Stop>> = stops.into_iter().map(Some).collect();
    follow(
        order.into_iter().filter_map(|i| stops[i].take()).collect(),
        options,
    )
}

/// The stops in the order given (the rep's own), with distances and times.
pub fn follow(stops: Vec<Stop>, options: &RouteOptions) -> Route {
    let mut at = options.start;
    let mut clock = options.start_at;
    let mut route = Route::default();
    let speed = options.speed_kmh.max(1.0);
    for stop in stops {
        let here = (stop.lat, stop.lon);
        let distance_km = at.map_or(0.0, |from| distance_km(from, here));
        let arrive_at = clock + (distance_km / speed * 3_600_000.0).round() as i64;
        let leave_at = arrive_at + options.visit_minutes.max(0) * 60_000;
        route.total_km += distance_km;
        route.legs.push(Leg {
            stop,
            distance_km,
            arrive_at,
            leave_at,
        });
        at = Some(here);
        clock = leave_at;
    }
    route
}

fn path_km(order: &[usize], points: &[(f64, f64)], start: Option<(f64, f64)>) -> f64 {
    let mut at = start;
    let mut total = 0.0;
    for &i in order {
        if let Some(from) = at {
            total += distance_km(from, points[i]);
        }
        at = Some(points[i]);
    }
    total
}

fn nearest_neighbour(points: &[(f64, f64)], start: Option<(f64, f64)>) -> Vec<usize> {
    let mut left: Vec<usize> = (0..points.len()).collect();
    let mut order = Vec::with_capacity(points.len());
    let mut at = start;
    while !left.is_empty() {
        let pick = match at {
            None => 0,
            Some(from) => {
                let mut best = 0;
                for (k, &i) in left.iter().enumerate() {
                    if distance_km(from, points[i]) < distance_km(from, points[left[best]]) {
                        best = k;
                    }
                }
                best
            }
        };
        let i = left.remove(pick);
        at = Some(points[i]);
        order.push(i);
    }
    order
}

/// Reverses stretches of the path while that shortens it (an open path:
/// the day does not return to its start).
fn two_opt(mut order: Vec<usize>, points: &[(f64, f64)], start: Option<(f64, f64)>) -> Vec<usize> {
    let mut best = path_km(&order, points, start);
    let mut improved = true;
    while improved {
        improved = false;
        // With a fixed start the first stop may move too; without one the
        // path may begin anywhere.
        for i in 0..order.len() {
            for j in i + 1..order.len() {
                order[i..=j].reverse();
                let km = path_km(&order, points, start);
                if km + 1e-9 < best {
                    best = km;
                    improved = true;
                } else {
                    order[i..=j].reverse();
                }
            }
        }
    }
    order
}

/// The query for `owner`'s open visits due before `to` (any store lists
/// them with it; keep those due at or after the day's start).
pub fn visits_query(owner: &str, to: i64) -> ListQuery {
    ListQuery {
        kind: Some(Kind::Activity),
        owner: Some(owner.to_string()),
        field_is: vec![("kind".into(), "visit".into())],
        due_before: Some(to),
        limit: crate::MAX_PAGE,
        ..Default::default()
    }
}

/// The day's route of `visits` (from [`visits_query`]) due at or after
/// `from`, for any storage: `get` finds the records they are about (their
/// accounts, for the position). In `order` first (visit ids: the rep's own
/// order); the rest planned on from where it ends. `get` fails in the
/// caller's own error type (a relay's storage error stays one).
pub fn day_route_of<E>(
    visits: Vec<Record>,
    get: &dyn Fn(&str) -> std::result::Result<Option<Record>, E>,
    from: i64,
    options: &RouteOptions,
    order: &[String],
) -> std::result::Result<Route, E> {
    let mut stops = Vec::new();
    let mut unplaced = Vec::new();
    for visit in visits.into_iter().filter(|v| v.due() >= Some(from)) {
        match place_of(&visit, get)? {
            Some((lat, lon)) => stops.push(Stop {
                name: visit.display_name(),
                id: visit.id,
                lat,
                lon,
            }),
            None => unplaced.push(visit.id),
        }
    }
    let (mut chosen, rest): (Vec<Stop>, Vec<Stop>) =
        stops.into_iter().partition(|s| order.contains(&s.id));
    chosen.sort_by_key(|s| order.iter().position(|id| *id == s.id));
    let from_last = RouteOptions {
        start: chosen.last().map(|s| (s.lat, s.lon)).or(options.start),
        ..options.clone()
    };
    chosen.extend(plan(rest, &from_last).legs.into_iter().map(|l| l.stop));
    let mut route = follow(chosen, options);
    route.unplaced = unplaced;
    Ok(route)
}

/// Where a visit happens: its own `location`, else the `geo` of the
/// account it is about (directly, or through a contact's or deal's).
pub(crate) fn place_of<E>(
    visit: &Record,
    get: &dyn Fn(&str) -> std::result::Result<Option<Record>, E>,
) -> std::result::Result<Option<(f64, f64)>, E> {
    let point = |r: &Record, map: &str| match (
        r.get(&format!("{map}.lat")),
        r.get(&format!("{map}.lon")),
    ) {
        (Some(Value::Float(lat)), Some(Value::Float(lon))) => Some((*lat, *lon)),
        _ => None,
    };
    if let Some(p) = point(visit, "location") {
        return Ok(Some(p));
    }
    let Some(about) = visit.text("related_to").map(get).transpose()?.flatten() else {
        return Ok(None);
    };
    if about.kind == Kind::Account {
        return Ok(point(&about, "geo"));
    }
    Ok(
        match about.text("account_id").map(get).transpose()?.flatten() {
            Some(account) => point(&account, "geo"),
            None => None,
        },
    )
}

impl Store {
    /// `owner`'s visits planned from `from` to `to` (ms) and not done, as
    /// the day's route ([`day_route_of`]).
    pub fn day_route(
        &self,
        owner: &str,
        from: i64,
        to: i64,
        options: &RouteOptions,
        order: &[String],
    ) -> Result<Route> {
        let visits = self.list(&visits_query(owner, to))?.records;
        let get = |id: &str| match self.get(id) {
            Ok(r) => Ok(Some(r)),
            Err(crate::Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        };
        day_route_of(visits, &get, from, options, order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stop(id: &str, lat: f64, lon: f64) -> Stop {
        Stop {
            id: id.into(),
            name: id.into(),
            lat,
            lon,
        }
    }

    #[test]
    fn distances_are_great_circle_kilometres() {
        let london = (51.5074, -0.1278);
        let paris = (48.8566, 2.3522);
        let d = distance_km(london, paris);
        assert!((d - 343.5).abs() < 1.0, "{d}");
        assert_eq!(distance_km(london, london), 0.0);
    }

    #[test]
    fn stops_on_a_line_are_visited_along_it_with_times() {
        // Shuffled points 0.1° of longitude apart on the equator (~11 km).
        let stops: Vec<Stop> = [3, 0, 4, 1, 2]
            .iter()
            .map(|i| stop(&format!("s{i}"), 0.0, f64::from(*i) * 0.1))
            .collect();
        let options = RouteOptions {
            start: Some((0.0, -0.1)),
            start_at: 1_800_000_000_000,
            speed_kmh: 60.0,
            visit_minutes: 30,
        };
        let route = plan(stops, &options);
        let ids: Vec<&str> = route.legs.iter().map(|l| l.stop.id.as_str()).collect();
        assert_eq!(ids, ["s0", "s1", "s2", "s3", "s4"]);
        assert!((route.total_km - 55.6).abs() < 0.5, "{}", route.total_km);
        // ~11.1 km at 60 km/h is ~11 minutes; then 30 minutes on site.
        let first = &route.legs[0];
        assert!((first.arrive_at - options.start_at - 667_170).abs() < 100);
        assert_eq!(first.leave_at - first.arrive_at, 30 * 60_000);
        assert!((route.legs[1].arrive_at - first.leave_at - 667_170).abs() < 100);
    }

    /// Every order of `n` items (small n).
    fn permutations(n: usize) -> Vec<Vec<usize>> {
        if n == 0 {
            return vec![Vec::new()];
        }
        let mut out = Vec::new();
        for p in permutations(n - 1) {
            for at in 0..=p.len() {
                let mut q = p.clone();
                q.insert(at, n - 1);
                out.push(q);
            }
        }
        out
    }

    #[test]
    fn two_opt_improves_on_nearest_neighbour_and_comes_close_to_the_best() {
        let mut seed: u64 = 42;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as f64 / f64::from(u32::MAX >> 1)
        };
        let (mut improved, mut ratio_sum) = (0, 0.0);
        let orders = permutations(6);
        for _ in 0..40 {
            let points: Vec<(f64, f64)> = (0..6).map(|_| (51.0 + next(), -1.0 + next())).collect();
            let start = Some((51.0 + next(), -1.0 + next()));
            let nn = nearest_neighbour(&points, start);
            let better = two_opt(nn.clone(), &points, start);
            let (a, b) = (
                path_km(&nn, &points, start),
                path_km(&better, &points, start),
            );
            assert!(b <= a + 1e-9, "{b} > {a}");
            improved += usize::from(b + 1e-9 < a);
            let best = orders
                .iter()
                .map(|o| path_km(o, &points, start))
                .fold(f64::INFINITY, f64::min);
            ratio_sum += b / best;
        }
        assert!(
            improved > 0,
            "2-opt never improved a nearest-neighbour path"
        );
        let mean = ratio_sum / 40.0;
        assert!(
            mean < 1.05,
            "2-opt paths are {mean:.3}× the best on average"
        );
    }

    #[test]
    fn twenty_stops_take_well_under_five_milliseconds() {
        let stops: Vec<Stop> = (0..20)
            .map(|i| {
                let x = f64::from(i);
                stop(
                    &format!("s{i}"),
                    51.0 + (x * 7.3) % 1.0,
                    -1.0 + (x * 3.7) % 1.0,
                )
            })
            .collect();
        let started = std::time::Instant::now();
        let route = plan(stops, &RouteOptions::default());
        let took = started.elapsed();
        assert_eq!(route.legs.len(), 20);
        // Debug builds are slower than release; the budget is for both.
        assert!(took < std::time::Duration::from_millis(5), "{took:?}");
    }

    #[test]
    fn a_reps_day_is_their_open_visits_placed_by_their_accounts() {
        use crate::model::fields;
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("ann.db"), "ann").unwrap();
        let day = 1_800_000_000_000;
        let visit = |store: &mut Store, name: &str, lon: Option<f64>, due: i64| {
            let mut f = fields([("name", Value::from(name)), ("territory", "north".into())]);
            if let Some(lon) = lon {
                f.insert("geo.lat".into(), Value::Float(0.0));
                f.insert("geo.lon".into(), Value::Float(lon));
            }
            let account = store.create(Kind::Account, f).unwrap();
            store
                .create(
                    Kind::Activity,
                    fields([
                        ("kind", Value::from("visit")),
                        ("subject", format!("Visit {name}").into()),
                        ("related_to", account.id.as_str().into()),
                        ("due_at", Value::Int(due)),
                        ("territory", "north".into()),
                    ]),
                )
                .unwrap()
                .id
        };
        let far = visit(&mut store, "Far", Some(0.3), day + 3_600_000);
        let near = visit(&mut store, "Near", Some(0.1), day + 7_200_000);
        let mid = visit(&mut store, "Mid", Some(0.2), day + 1_000);
        let nowhere = visit(&mut store, "Nowhere", None, day + 2_000);
        visit(&mut store, "Tomorrow", Some(0.15), day + 30 * 3_600_000);
        let options = RouteOptions {
            start: Some((0.0, 0.0)),
            start_at: day,
            ..Default::default()
        };
        let end = day + 24 * 3_600_000;
        let route = store.day_route("ann", day, end, &options, &[]).unwrap();
        let ids: Vec<&str> = route.legs.iter().map(|l| l.stop.id.as_str()).collect();
        assert_eq!(ids, [&near, &mid, &far]);
        assert_eq!(route.unplaced, [nowhere]);
        // The rep's own order first; the rest planned after it.
        let mine = store
            .day_route("ann", day, end, &options, std::slice::from_ref(&far))
            .unwrap();
        let ids: Vec<&str> = mine.legs.iter().map(|l| l.stop.id.as_str()).collect();
        assert_eq!(ids, [&far, &mid, &near]);
        assert!(mine.total_km > route.total_km);
        // A visit checked off leaves the day.
        store.update(&mid, fields([("done", true)])).unwrap();
        let left = store.day_route("ann", day, end, &options, &[]).unwrap();
        assert_eq!(left.legs.len(), 2);
    }
}
