//! The one access policy. Reps and managers see and change the records of
//! their territories; office and admin users see and change all of them.
//! Every path that decides what a user may see or write asks here: the push
//! (before and after a change), pulls and bootstraps (which territories,
//! what a log entry becomes), territory changes (what a device evicts and
//! fetches), live push (whom a change wakes) and the office UI (lists,
//! searches, record pages). Stores turn [`Scope`] into SQL; they decide
//! nothing themselves. Territories form a tree: a user assigned to one
//! sees every territory under it ([`with_descendants`], applied once, by
//! `RelayStore::in_effect`, to every signed-in user). Everyone also sees
//! [`SHARED_TERRITORY`], where the organisation configuration sits; what
//! they may change there the write rules say (admins only).

use std::collections::BTreeSet;

use fieldcrm_core::SHARED_TERRITORY;

use super::{Refusal, User};

/// What a user's queries cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every territory (office and admin).
    All,
    /// These territories, sorted (possibly none).
    Territories(Vec<String>),
}

impl Scope {
    /// Whether a record in `territory` is in this scope (a record without
    /// one only in [`Scope::All`]).
    pub fn sees(&self, territory: Option<&str>) -> bool {
        match self {
            Scope::All => true,
            Scope::Territories(mine) => territory.is_some_and(|t| mine.iter().any(|m| m == t)),
        }
    }
}

/// The territories `user`'s queries cover: theirs and the shared one.
pub fn scope(user: &User) -> Scope {
    if user.role.sees_all() {
        Scope::All
    } else {
        let mut t = user.territories.clone();
        t.push(SHARED_TERRITORY.to_string());
        t.sort();
        t.dedup();
        Scope::Territories(t)
    }
}

/// The territories records can be put in by `user`: `None` for every
/// one (office and admin), else theirs (the shared one is not for records).
pub fn record_territories(user: &User) -> Option<Vec<String>> {
    match scope(user) {
        Scope::All => None,
        Scope::Territories(mut t) => {
            t.retain(|t| t != SHARED_TERRITORY);
            Some(t)
        }
    }
}

/// Whether `user` may see and change a record in `territory` (a record
/// without one is visible to office and admin only; every user sees the
/// shared territory's).
pub fn sees(user: &User, territory: Option<&str>) -> bool {
    user.role.sees_all()
        || territory
            .is_some_and(|t| t == SHARED_TERRITORY || user.territories.iter().any(|m| m == t))
}

/// The territories a user's devices hold, as the cursor records them:
/// theirs, sorted, or `["*"]` for all.
pub fn view(user: &User) -> Vec<String> {
    match scope(user) {
        Scope::All => vec![ALL.to_string()],
        Scope::Territories(t) => t,
    }
}

/// `assigned` and every territory under them in the tree `parents` gives
/// (name, parent), sorted and without repeats.
pub fn with_descendants(assigned: &[String], parents: &[(String, Option<String>)]) -> Vec<String> {
    let mut seen: BTreeSet<String> = assigned.iter().cloned().collect();
    let mut frontier: Vec<String> = assigned.to_vec();
    while let Some(t) = frontier.pop() {
        for (child, _) in parents
            .iter()
            .filter(|(_, p)| p.as_deref() == Some(t.as_str()))
        {
            if seen.insert(child.clone()) {
                frontier.push(child.clone());
            }
        }
    }
    seen.into_iter().collect()
}

/// The view entry that stands for every territory.
pub const ALL: &str = "*";

/// Checks a change to a record that was in `before` (`None`: the change
/// creates it) and is in `after` once the change applies.
pub fn check_write(
    user: &User,
    record: &str,
    before: Option<Option<&str>>,
    after: Option<&str>,
) -> Result<(), Refusal> {
    if let Some(before) = before {
        if !sees(user, before) {
            return Err(Refusal::NotYours {
                record: record.to_string(),
            });
        }
    }
    if !sees(user, after) {
        return Err(Refusal::OutsideTerritory {
            record: record.to_string(),
            territory: after.unwrap_or_default().to_string(),
        });
    }
    Ok(())
}

/// What a log entry the user's query returned becomes for their device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The change itself.
    Change,
    /// The record entered the user's territories: its whole document.
    Snapshot,
    /// The record left them: the device drops it.
    Evict,
    /// Neither before nor after is visible.
    Nothing,
}

/// A log entry of a record now in `territory`, moved from `moved_from`,
/// for a user of `scope`.
pub fn delivery(scope: &Scope, territory: Option<&str>, moved_from: Option<&str>) -> Delivery {
    let now = scope.sees(territory);
    let before = moved_from.is_none_or(|p| scope.sees(Some(p)));
    match (before, now) {
        (true, true) => Delivery::Change,
        (false, true) => Delivery::Snapshot,
        (true, false) if moved_from.is_some() || territory.is_some() => Delivery::Evict,
        _ => Delivery::Nothing,
    }
}

/// The territories a bootstrap walks, in order: `""` stands for all.
pub fn bootstrap_territories(user: &User) -> Vec<String> {
    match scope(user) {
        Scope::All => vec![String::new()],
        Scope::Territories(t) => t,
    }
}

/// What a device whose data covers `before` must do now that the user's
/// view is `view(user)`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ViewChange {
    /// Territories whose records the device drops.
    pub lost: Vec<String>,
    /// Territories it must fetch.
    pub gained: Vec<String>,
}

/// `known` lists every territory (asked only when a device that held all
/// of them now holds fewer).
pub fn view_change(
    user: &User,
    before: &[String],
    known: impl FnOnce() -> super::Result<Vec<String>>,
) -> super::Result<ViewChange> {
    let now = view(user);
    if before == now.as_slice() {
        return Ok(ViewChange::default());
    }
    let had_all = before.iter().any(|t| t == ALL);
    let has_all = now.iter().any(|t| t == ALL);
    let lost = match (had_all, has_all) {
        (_, true) => Vec::new(),
        (true, false) => known()?.into_iter().filter(|t| !now.contains(t)).collect(),
        (false, false) => before
            .iter()
            .filter(|t| !now.contains(t))
            .cloned()
            .collect(),
    };
    let gained = match (had_all, has_all) {
        (true, _) => Vec::new(),
        (false, true) => vec![ALL.to_string()],
        (false, false) => now
            .iter()
            .filter(|t| !before.contains(t))
            .cloned()
            .collect(),
    };
    Ok(ViewChange { lost, gained })
}

/// The territories a query for `user` may cover, given the ones asked for
/// (empty: all they may see). `None`: nothing at all. For office and admin
/// an empty answer means every territory.
pub fn narrow(user: &User, asked: &[String]) -> Option<Vec<String>> {
    match scope(user) {
        Scope::All => Some(asked.to_vec()),
        Scope::Territories(mine) => {
            let allowed: Vec<String> = if asked.is_empty() {
                mine
            } else {
                asked.iter().filter(|t| mine.contains(t)).cloned().collect()
            };
            // An empty list would mean "every territory" to a store.
            (!allowed.is_empty()).then_some(allowed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::Role;

    fn user(role: Role, territories: &[&str]) -> User {
        User::sample("u", role, territories)
    }

    #[test]
    fn reps_see_their_territories_office_sees_all() {
        let rep = user(Role::Rep, &["north"]);
        assert!(sees(&rep, Some("north")));
        assert!(!sees(&rep, Some("south")));
        assert!(!sees(&rep, None));
        let office = user(Role::Office, &[]);
        assert!(sees(&office, Some("south")) && sees(&office, None));
        assert_eq!(view(&office), ["*"]);
        assert_eq!(
            view(&user(Role::Manager, &["south", "north"])),
            [SHARED_TERRITORY, "north", "south"]
        );
        // Everyone sees the organisation configuration's territory.
        assert!(sees(&rep, Some(SHARED_TERRITORY)));
        assert_eq!(record_territories(&rep), Some(vec!["north".to_string()]));
    }

    #[test]
    fn writes_are_checked_before_and_after() {
        let rep = user(Role::Rep, &["north"]);
        check_write(&rep, "r", None, Some("north")).unwrap();
        check_write(&rep, "r", Some(Some("north")), Some("north")).unwrap();
        assert!(matches!(
            check_write(&rep, "r", Some(Some("south")), Some("north")),
            Err(Refusal::NotYours { .. })
        ));
        let err = check_write(&rep, "r", Some(Some("north")), Some("south")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "record r would move to territory \"south\", outside yours"
        );
    }

    #[test]
    fn log_entries_become_changes_snapshots_or_evictions() {
        let rep = scope(&user(Role::Rep, &["north"]));
        assert_eq!(delivery(&rep, Some("north"), None), Delivery::Change);
        assert_eq!(
            delivery(&rep, Some("north"), Some("south")),
            Delivery::Snapshot
        );
        assert_eq!(
            delivery(&rep, Some("south"), Some("north")),
            Delivery::Evict
        );
        assert_eq!(delivery(&rep, Some("south"), None), Delivery::Evict);
        assert_eq!(
            delivery(&rep, Some("south"), Some("east")),
            Delivery::Nothing
        );
        let office = scope(&user(Role::Office, &[]));
        assert_eq!(
            delivery(&office, Some("south"), Some("north")),
            Delivery::Change
        );
    }

    #[test]
    fn view_changes_name_what_was_lost_and_gained() {
        let rep = user(Role::Rep, &["north", "west"]);
        let known = || Ok(vec!["north".into(), "south".into(), "west".into()]);
        let shared = SHARED_TERRITORY.to_string();
        let change = view_change(
            &rep,
            &[shared.clone(), "north".into(), "south".into()],
            known,
        )
        .unwrap();
        assert_eq!(change.lost, ["south"]);
        assert_eq!(change.gained, ["west"]);
        // A device from before the shared territory fetches it.
        let upgraded = view_change(&rep, &["north".into(), "west".into()], known).unwrap();
        assert_eq!(upgraded.gained, std::slice::from_ref(&shared));
        let from_all = view_change(&rep, &["*".into()], known).unwrap();
        assert_eq!(from_all.lost, ["south"]);
        assert!(from_all.gained.is_empty());
        let same = view_change(&rep, &[shared, "north".into(), "west".into()], known).unwrap();
        assert_eq!(same, ViewChange::default());
        let office = user(Role::Office, &[]);
        let to_all = view_change(&office, &["north".into()], known).unwrap();
        assert_eq!(
            (to_all.lost.len(), to_all.gained.as_slice()),
            (0, &["*".to_string()][..])
        );
    }

    #[test]
    fn narrowing_never_widens_a_view() {
        let rep = user(Role::Rep, &["north"]);
        let shared = SHARED_TERRITORY.to_string();
        assert_eq!(
            narrow(&rep, &[]),
            Some(vec![shared.clone(), "north".into()])
        );
        assert_eq!(narrow(&rep, &["south".into()]), None);
        assert_eq!(narrow(&user(Role::Rep, &[]), &[]), Some(vec![shared]));
        let office = user(Role::Office, &[]);
        assert_eq!(narrow(&office, &[]), Some(vec![]));
        assert_eq!(
            narrow(&office, &["south".into()]),
            Some(vec!["south".into()])
        );
    }
}
