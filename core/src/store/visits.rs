//! Visits at customers (docs/data-model.md, "Visits"): an activity of kind
//! `visit` is planned (`due_at`, `purpose`), checked in (time and the
//! device's position, with a warning — never a refusal — when that is far
//! from where the visit should happen) and checked out with a short report
//! (outcome, notes, and the next step as a follow-up task). Each step is
//! one user action in one transaction, offline, made of ordinary changes
//! that sync and merge like any edit.
//!
//! One visit is in progress per rep on a device: checking in while another
//! is open is refused, naming it. Two devices of the same rep can still
//! each have one open while offline; the office's visits page shows both.

use rusqlite::Transaction;
use serde::{Deserialize, Serialize};

use super::{create_in, edit_in, update_fields, Store, Writer};
use crate::error::{Error, Result};
use crate::model::{Fields, Kind, Record, Value, VISIT_OUTCOMES};
use crate::route::{distance_km, place_of};

/// How far from the customer (metres) a check-in may be before it warns.
pub const DEFAULT_CHECK_IN_RADIUS_M: f64 = 250.0;

/// What checking in did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckIn {
    pub visit: Record,
    /// Metres from where the visit should happen, when both are known.
    pub distance_m: Option<f64>,
    /// Set when the position is farther than the radius (the check-in
    /// stands; the app shows it).
    pub warning: Option<String>,
}

/// The next step a check-out plans: a task on the same customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NextStep {
    pub subject: String,
    /// When it is due (ms since the epoch).
    pub due_at: i64,
}

/// The short report a check-out asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisitReport {
    /// One of [`VISIT_OUTCOMES`].
    pub outcome: String,
    /// Added to the visit's body (Automerge Text, merged by characters).
    #[serde(default)]
    pub notes: String,
    #[serde(default)]
    pub next_step: Option<NextStep>,
}

/// What checking out did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckOut {
    pub visit: Record,
    /// The task the next step became.
    pub follow_up: Option<Record>,
    /// From check-in to check-out.
    pub minutes_on_site: i64,
}

fn position(fields: &mut Fields, prefix: &str, at: Option<(f64, f64)>) {
    if let Some((lat, lon)) = at {
        fields.insert(format!("{prefix}_lat"), Value::Float(lat));
        fields.insert(format!("{prefix}_lon"), Value::Float(lon));
    }
}

use super::documents::read;

/// The visit `id`, live and not done, or why it cannot be visited.
fn open_visit(tx: &Transaction<'_>, id: &str) -> Result<Record> {
    let visit = read(tx, id)?.ok_or_else(|| Error::NotFound(id.to_string()))?;
    if visit.kind != Kind::Activity || visit.text("kind") != Some("visit") {
        return Err(Error::invalid("id", id, "is not a visit"));
    }
    if visit.deleted {
        return Err(Error::Deleted(id.to_string()));
    }
    Ok(visit)
}

/// The user's visit checked in and not out, other than `except`.
fn in_progress(tx: &Transaction<'_>, user: &str, except: Option<&str>) -> Result<Option<Record>> {
    let ids: Vec<String> = tx
        .prepare_cached(
            "SELECT id FROM records WHERE owner = ?1 AND kind = 'activity' AND deleted = 0
               AND json_extract(record, '$.fields.checked_in_at') IS NOT NULL
               AND json_extract(record, '$.fields.checked_out_at') IS NULL",
        )?
        .query_map([user], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for id in ids.into_iter().filter(|id| Some(id.as_str()) != except) {
        if let Some(visit) = read(tx, &id)? {
            return Ok(Some(visit));
        }
    }
    Ok(None)
}

impl Store {
    /// Checks in at visit `id` now, at `at` (latitude, longitude) when the
    /// device knows it. Warns when `at` is more than `radius_m` from the
    /// visit's place (its own location, or its account's). Refused for a
    /// visit checked in already and while another visit is in progress.
    pub fn check_in(&mut self, id: &str, at: Option<(f64, f64)>, radius_m: f64) -> Result<CheckIn> {
        let (tx, w) = self.begin()?;
        let done = check_in_at(&tx, &w, id, at, radius_m)?;
        tx.commit()?;
        Ok(done)
    }

    /// Checks out of visit `id` now, at `at`, with `report`: the visit gets
    /// its outcome and notes and is done; the next step becomes a task on
    /// the same customer. One transaction.
    pub fn check_out(
        &mut self,
        id: &str,
        at: Option<(f64, f64)>,
        report: VisitReport,
    ) -> Result<CheckOut> {
        let (tx, w) = self.begin()?;
        let done = check_out_at(&tx, &w, id, at, report)?;
        tx.commit()?;
        Ok(done)
    }

    /// The signed-in user's visit checked in and not out, if any.
    pub fn visit_in_progress(&self) -> Result<Option<Record>> {
        let tx = self.conn.unchecked_transaction()?;
        in_progress(&tx, &self.user, None)
    }
}

fn check_in_at(
    tx: &Transaction<'_>,
    w: &Writer<'_>,
    id: &str,
    at: Option<(f64, f64)>,
    radius_m: f64,
) -> Result<CheckIn> {
    let visit = open_visit(tx, id)?;
    if visit.get("checked_in_at").is_some_and(|v| !v.is_null()) {
        return Err(Error::invalid(
            "checked_in_at",
            id,
            "this visit is checked in already",
        ));
    }
    if visit.is_done() == Some(true) {
        return Err(Error::invalid("done", id, "this visit is done"));
    }
    if let Some(open) = in_progress(tx, w.user, Some(id))? {
        return Err(Error::invalid(
            "checked_in_at",
            open.display_name(),
            "another visit is in progress; check out of it first",
        ));
    }
    let get = |rid: &str| read(tx, rid);
    let place = place_of(&visit, &get)?;
    let distance_m = match (place, at) {
        (Some(p), Some(a)) => Some(distance_km(p, a) * 1000.0),
        _ => None,
    };
    let warning = distance_m.filter(|d| *d > radius_m).map(|d| {
        format!(
            "you are {} from where “{}” takes place, more than {} m away",
            metres(d),
            visit.display_name(),
            radius_m.round()
        )
    });
    let mut fields = crate::model::fields([("checked_in_at", Value::Int(w.meta.time))]);
    position(&mut fields, "checkin", at);
    let visit = edit_in(tx, w, id, |tx, w, doc, kind| {
        update_fields(tx, w, doc, kind, fields)
    })?;
    Ok(CheckIn {
        visit,
        distance_m,
        warning,
    })
}

fn metres(d: f64) -> String {
    match d {
        d if d >= 10_000.0 => format!("{:.0} km", d / 1000.0),
        d if d >= 1000.0 => format!("{:.1} km", d / 1000.0),
        d => format!("{d:.0} m"),
    }
}

fn check_out_at(
    tx: &Transaction<'_>,
    w: &Writer<'_>,
    id: &str,
    at: Option<(f64, f64)>,
    report: VisitReport,
) -> Result<CheckOut> {
    let visit = open_visit(tx, id)?;
    let Some(checked_in) = visit.get("checked_in_at").and_then(Value::as_int) else {
        return Err(Error::invalid(
            "checked_in_at",
            id,
            "check in before checking out",
        ));
    };
    if visit.get("checked_out_at").is_some_and(|v| !v.is_null()) {
        return Err(Error::invalid(
            "checked_out_at",
            id,
            "this visit is checked out already",
        ));
    }
    let outcome = report.outcome.trim();
    if !VISIT_OUTCOMES.contains(&outcome) {
        return Err(Error::invalid(
            "outcome",
            outcome,
            &format!("a visit's outcome is one of {}", VISIT_OUTCOMES.join(", ")),
        ));
    }
    let mut fields = crate::model::fields([
        ("checked_out_at", Value::Int(w.meta.time)),
        ("outcome", Value::from(outcome)),
        ("done", Value::Bool(true)),
    ]);
    position(&mut fields, "checkout", at);
    let notes = report.notes.trim();
    if !notes.is_empty() {
        let body = visit.text("body").unwrap_or_default().trim_end();
        let body = match body.is_empty() {
            true => notes.to_string(),
            false => format!("{body}\n\n{notes}"),
        };
        fields.insert("body".into(), Value::from(body));
    }
    let follow_up = match report.next_step {
        Some(next) => {
            let mut task = crate::model::fields([
                ("kind", Value::from("task")),
                ("subject", Value::from(next.subject.as_str())),
                ("due_at", Value::Int(next.due_at)),
            ]);
            for path in ["related_to", "territory"] {
                if let Some(v) = visit.get(path).filter(|v| !v.is_null()) {
                    task.insert(path.to_string(), v.clone());
                }
            }
            Some(task)
        }
        None => None,
    };
    let visit = edit_in(tx, w, id, |tx, w, doc, kind| {
        update_fields(tx, w, doc, kind, fields)
    })?;
    let follow_up = match follow_up {
        Some(task) => Some(create_in(tx, w, None, Kind::Activity, task)?),
        None => None,
    };
    Ok(CheckOut {
        visit,
        follow_up,
        minutes_on_site: (w.meta.time - checked_in).max(0) / 60_000,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::model::fields;
    use crate::StoreOptions;

    const NINE: i64 = 1_764_061_200_000; // 2025-11-25 09:00 UTC

    fn store(dir: &tempfile::TempDir) -> (Store, Arc<AtomicI64>) {
        let clock = Arc::new(AtomicI64::new(NINE));
        let c = clock.clone();
        let options = StoreOptions {
            durable: false,
            clock: Arc::new(move || c.load(Ordering::SeqCst)),
        };
        let store = Store::open_with(dir.path().join("ann.db"), "ann", options).unwrap();
        (store, clock)
    }

    fn customer(store: &mut Store, name: &str, lat: f64, lon: f64) -> String {
        let account = store
            .create(
                Kind::Account,
                fields([
                    ("name", Value::from(name)),
                    ("territory", "north".into()),
                    ("geo.lat", Value::Float(lat)),
                    ("geo.lon", Value::Float(lon)),
                ]),
            )
            .unwrap();
        store
            .create(
                Kind::Activity,
                fields([
                    ("kind", Value::from("visit")),
                    ("subject", Value::from(format!("Visit {name}"))),
                    ("purpose", "restock".into()),
                    ("related_to", account.id.as_str().into()),
                    ("due_at", Value::Int(NINE)),
                    ("territory", "north".into()),
                ]),
            )
            .unwrap()
            .id
    }

    #[test]
    fn a_visit_is_checked_in_with_a_warning_when_far_and_out_with_a_report() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, clock) = store(&dir);
        let acme = customer(&mut store, "Acme", 52.52, 13.405);
        let bolt = customer(&mut store, "Bolt", 52.50, 13.30);
        // 0.001° of latitude is about 111 m: near enough.
        let near = store
            .check_in(&acme, Some((52.521, 13.405)), 250.0)
            .unwrap();
        assert!(near.warning.is_none(), "{near:?}");
        assert!((near.distance_m.unwrap() - 111.2).abs() < 1.0);
        assert_eq!(near.visit.get("checked_in_at"), Some(&Value::Int(NINE)));
        assert_eq!(store.visit_in_progress().unwrap().unwrap().id, acme);
        // One visit at a time, and never twice.
        let err = store.check_in(&bolt, None, 250.0).unwrap_err().to_string();
        assert!(
            err.contains("another visit is in progress") && err.contains("Visit Acme"),
            "{err}"
        );
        let err = store.check_in(&acme, None, 250.0).unwrap_err().to_string();
        assert!(err.contains("checked in already"), "{err}");
        let err = store
            .check_out(
                &acme,
                None,
                VisitReport {
                    outcome: "great".into(),
                    notes: String::new(),
                    next_step: None,
                },
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("one of successful"), "{err}");

        clock.store(NINE + 45 * 60_000, Ordering::SeqCst);
        let report = VisitReport {
            outcome: "follow_up".into(),
            notes: "Shelf half empty; wants a quote".into(),
            next_step: Some(NextStep {
                subject: "Send the quote".into(),
                due_at: NINE + 86_400_000,
            }),
        };
        let out = store
            .check_out(&acme, Some((52.5211, 13.405)), report)
            .unwrap();
        assert_eq!(out.minutes_on_site, 45);
        let visit = &out.visit;
        assert_eq!(visit.text("outcome"), Some("follow_up"));
        assert_eq!(visit.get("done"), Some(&Value::Bool(true)));
        assert_eq!(visit.text("body"), Some("Shelf half empty; wants a quote"));
        assert!(matches!(visit.get("checkout_lat"), Some(Value::Float(_))));
        let task = out.follow_up.unwrap();
        assert_eq!(
            (task.text("kind"), task.text("subject")),
            (Some("task"), Some("Send the quote"))
        );
        assert_eq!(task.text("related_to"), visit.text("related_to"));
        assert!(store.visit_in_progress().unwrap().is_none());
        let err = store
            .check_out(
                &acme,
                None,
                VisitReport {
                    outcome: "successful".into(),
                    notes: String::new(),
                    next_step: None,
                },
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("checked out already"), "{err}");

        // Far from the customer: a warning, and the check-in stands.
        let far = store.check_in(&bolt, Some((52.52, 13.405)), 250.0).unwrap();
        assert!(
            far.warning
                .as_deref()
                .unwrap()
                .contains("7.4 km from where “Visit Bolt” takes place"),
            "{far:?}"
        );
        // Every step was an ordinary change, waiting to sync.
        assert_eq!(store.outbox_status().unwrap().pending, 8);
    }

    #[test]
    fn only_visits_are_checked_in_and_out_after_in() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = store(&dir);
        let acme = customer(&mut store, "Acme", 0.0, 0.0);
        let call = store
            .create(
                Kind::Activity,
                fields([
                    ("kind", "call"),
                    ("subject", "Call"),
                    ("territory", "north"),
                ]),
            )
            .unwrap();
        let err = store
            .check_in(&call.id, None, 250.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a visit"), "{err}");
        let report = VisitReport {
            outcome: "successful".into(),
            notes: String::new(),
            next_step: None,
        };
        let err = store
            .check_out(&acme, None, report)
            .unwrap_err()
            .to_string();
        assert!(err.contains("check in before checking out"), "{err}");
        let err = store.check_in("nope", None, 250.0).unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err}");
    }
}
