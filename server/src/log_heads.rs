//! How far the log has advanced, per territory, so an event stream wakes a
//! device only for changes its user may see. With 200 devices connected, a
//! rep's push used to wake all 200, each to pull nothing.

use std::collections::{BTreeSet, HashMap};

use crate::relay::access::{self, Scope};
use crate::relay::User;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogHeads {
    /// The newest sequence number.
    newest: u64,
    /// For each territory, a sequence number at or after the newest change
    /// that touched it (before or after a move).
    by_territory: HashMap<String, u64>,
    /// The newest sequence number reached by changes whose territories are
    /// not known (office edits, other relays, and what was logged before
    /// this process started): it wakes everyone.
    unknown: u64,
}

impl LogHeads {
    /// Heads at start-up: everything up to `newest` counts as unknown.
    pub fn starting_at(newest: u64) -> LogHeads {
        LogHeads {
            newest,
            by_territory: HashMap::new(),
            unknown: newest,
        }
    }

    /// The log reached `newest` with changes in `territories` (`None`: not
    /// known). Heads never move back. Returns whether anything moved.
    pub fn advance(&mut self, newest: u64, territories: Option<&BTreeSet<String>>) -> bool {
        let before = (self.newest, self.unknown);
        self.newest = self.newest.max(newest);
        let mut moved = self.newest != before.0;
        match territories {
            None => {
                self.unknown = self.unknown.max(newest);
                moved |= self.unknown != before.1;
            }
            Some(territories) => {
                for t in territories {
                    let head = self.by_territory.entry(t.clone()).or_default();
                    moved |= newest > *head;
                    *head = (*head).max(newest);
                }
            }
        }
        moved
    }

    /// The newest sequence number.
    pub fn newest(&self) -> u64 {
        self.newest
    }

    /// The newest position `user` has reason to sync up to.
    pub fn visible_to(&self, user: &User) -> u64 {
        match access::scope(user) {
            Scope::All => self.newest,
            Scope::Territories(mine) => mine
                .iter()
                .filter_map(|t| self.by_territory.get(t))
                .copied()
                .fold(self.unknown, u64::max),
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

    fn set(ts: &[&str]) -> BTreeSet<String> {
        ts.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn a_rep_sees_advances_in_their_territories_and_unknown_ones() {
        let (north, south) = (user(Role::Rep, &["north"]), user(Role::Rep, &["south"]));
        let office = user(Role::Office, &[]);
        let mut heads = LogHeads::starting_at(10);
        assert_eq!(
            heads.visible_to(&north),
            10,
            "what came before start-up wakes everyone"
        );
        assert!(heads.advance(12, Some(&set(&["north"]))));
        assert_eq!(
            (heads.visible_to(&north), heads.visible_to(&south)),
            (12, 10)
        );
        assert_eq!(heads.visible_to(&office), 12);
        // A move from north to south concerns both.
        assert!(heads.advance(15, Some(&set(&["north", "south"]))));
        assert_eq!(
            (heads.visible_to(&north), heads.visible_to(&south)),
            (15, 15)
        );
        assert!(heads.advance(20, None));
        assert_eq!(
            (heads.visible_to(&north), heads.visible_to(&south)),
            (20, 20)
        );
    }

    #[test]
    fn heads_never_move_back_and_say_when_nothing_moved() {
        let mut heads = LogHeads::starting_at(0);
        assert!(heads.advance(9, Some(&set(&["north"]))));
        // A slower request reporting an older head changes nothing.
        assert!(!heads.advance(7, Some(&set(&["north"]))));
        assert!(!heads.advance(9, Some(&set(&[]))));
        assert_eq!(heads.visible_to(&user(Role::Rep, &["north"])), 9);
        // An older head for another territory still counts for it.
        assert!(heads.advance(8, Some(&set(&["south"]))));
        assert_eq!(heads.visible_to(&user(Role::Rep, &["south"])), 8);
    }
}
