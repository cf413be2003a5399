//! The SQLite store's answers to the push algorithm's storage questions,
//! inside the group commit's transaction.

use std::collections::{HashMap, HashSet};

use fieldcrm_core::{Kind, Pipeline, StoreTx, StoredDoc};

use super::tables;
use crate::relay::push::{Accepted, LogRow, PushStore, RecordFacts};
use crate::relay::review::{Held, Review};
use crate::relay::{RelayError, Result};

pub(super) struct SqlitePush<'a, 'conn> {
    pub tx: &'a StoreTx<'conn>,
}

impl PushStore for SqlitePush<'_, '_> {
    fn logged(&mut self, hashes: &[[u8; 32]]) -> Result<HashSet<[u8; 32]>> {
        tables::logged(self.tx.sql(), hashes)
    }

    fn claim_actors(
        &mut self,
        user: &str,
        device: &str,
        actors: &[&str],
    ) -> Result<HashMap<String, String>> {
        tables::claim_actors(self.tx.sql(), user, device, actors)
    }

    fn lock(&mut self, _: &[&str]) -> Result<()> {
        // One writer at a time: what is read stays as read until commit.
        Ok(())
    }

    fn documents(&mut self, ids: &[&str]) -> Result<Vec<Option<StoredDoc>>> {
        ids.iter().map(|id| Ok(self.tx.load_doc(id)?)).collect()
    }

    fn facts(&mut self, id: &str) -> Result<Option<RecordFacts>> {
        tables::facts(self.tx.sql(), id)?
            .map(|(kind, deleted, territory)| {
                Ok(RecordFacts {
                    kind: kind.parse::<Kind>()?,
                    deleted,
                    territory,
                })
            })
            .transpose()
    }

    fn referrers(&mut self, id: &str) -> Result<Vec<String>> {
        tables::referrers(self.tx.sql(), id)
    }

    fn is_user(&mut self, id: &str) -> Result<bool> {
        tables::is_user(self.tx.sql(), id)
    }

    fn is_territory(&mut self, name: &str) -> Result<bool> {
        tables::is_territory(self.tx.sql(), name)
    }

    fn base_pipeline(&mut self) -> Result<Pipeline> {
        pipeline(self.tx.sql())
    }

    fn save(
        &mut self,
        user: &str,
        device: &str,
        accepted: &mut [Accepted],
        log: &[LogRow<'_>],
    ) -> Result<()> {
        self.tx.save_docs(accepted.iter_mut().map(|a| &mut a.doc))?;
        tables::append(self.tx.sql(), user, device, log)
    }

    fn web_actor(&mut self, user: &str, device: &str) -> Result<Vec<u8>> {
        tables::web_actor(self.tx.sql(), user, device)
    }

    fn snapshot(&mut self, id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.tx.snapshot(id)?)
    }

    fn territory_at(&mut self, id: &str, seq: u64) -> Result<Option<Option<String>>> {
        tables::territory_at(self.tx.sql(), id, seq)
    }

    fn hold(&mut self, held: &[Held]) -> Result<()> {
        tables::hold(self.tx.sql(), held)
    }

    fn reviews(&mut self, hashes: &[[u8; 32]]) -> Result<Vec<Held>> {
        tables::reviews(self.tx.sql(), hashes)
    }

    fn decide_review(&mut self, hash: &[u8; 32], review: Review, by: &str, at: i64) -> Result<()> {
        tables::decide(self.tx.sql(), hash, review, by, at)
    }
}

/// The configured deal pipeline, or the default one.
pub(super) fn pipeline(conn: &rusqlite::Connection) -> Result<Pipeline> {
    match tables::pipeline_json(conn)? {
        None => Ok(Pipeline::default()),
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| RelayError::Storage(format!("the stored pipeline is unreadable: {e}"))),
    }
}
