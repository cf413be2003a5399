//! Queries over the projection: lists with filters, sort and pagination,
//! full-text search, the pipeline summary and an account with its records.
//! Reads only; every user-supplied value is a bound parameter.

use std::collections::BTreeMap;

use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Connection};
use serde::{Deserialize, Serialize};

use crate::doc::RecordDoc;
use crate::error::{Error, Result};
use crate::forecast::{DealGroups, DealSums, StageFlow};
use crate::model::{Kind, Record};
use crate::store::{projection, Store};

/// Largest page a list or search returns.
pub const MAX_PAGE: usize = 1000;

/// Columns a list can be sorted by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortBy {
    #[default]
    Name,
    UpdatedAt,
    CreatedAt,
    Amount,
    CloseDate,
    DueAt,
    Stage,
}

impl SortBy {
    fn column(self) -> &'static str {
        match self {
            SortBy::Name => "name",
            SortBy::UpdatedAt => "updated_at",
            SortBy::CreatedAt => "created_at",
            SortBy::Amount => "amount",
            SortBy::CloseDate => "close_date",
            SortBy::DueAt => "due_at",
            SortBy::Stage => "stage",
        }
    }
}

/// A filtered, sorted page of records. Unset filters match everything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ListQuery {
    pub kind: Option<Kind>,
    /// Only the records with these ids (`None`: any record). Pages that
    /// show references look up the referenced names this way, in one query.
    pub ids: Option<Vec<String>>,
    pub owner: Option<String>,
    /// Records in any of these territories (empty: all territories).
    pub territories: Vec<String>,
    pub account_id: Option<String>,
    /// Activities related to this record.
    pub related_to: Option<String>,
    /// Only records about this one or about a record that belongs to it:
    /// an account's timeline takes in its contacts' and deals' activities.
    pub about: Option<String>,
    /// A deal's stage, or a lead's or case's status ([`Record::state`]).
    pub stage: Option<String>,
    /// Only records whose field (a dotted path: `priority`, `custom.tier`)
    /// holds exactly this text.
    pub field_is: Vec<(String, String)>,
    /// Only records changed at or after this time (ms since the epoch).
    pub updated_since: Option<i64>,
    /// Only records due before this time and not done: activities, and
    /// cases by their resolve-by time ([`Record::due`]).
    pub due_before: Option<i64>,
    pub include_deleted: bool,
    /// Only records not done: activities not marked done, cases neither
    /// resolved nor closed ([`Record::is_done`]); other kinds all pass.
    pub not_done: bool,
    pub only_conflicts: bool,
    pub sort: SortBy,
    pub descending: bool,
    pub limit: usize,
    pub offset: usize,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            kind: None,
            ids: None,
            owner: None,
            territories: Vec::new(),
            account_id: None,
            related_to: None,
            about: None,
            stage: None,
            field_is: Vec::new(),
            updated_since: None,
            due_before: None,
            include_deleted: false,
            not_done: false,
            only_conflicts: false,
            sort: SortBy::Name,
            descending: false,
            limit: 50,
            offset: 0,
        }
    }
}

impl ListQuery {
    pub fn kind(kind: Kind) -> Self {
        ListQuery {
            kind: Some(kind),
            ..Default::default()
        }
    }

    /// The first `limit` live records of `kind` (`None`: every kind) in
    /// `territories` (empty: all), as a search narrows them.
    pub fn first(kind: Option<Kind>, territories: &[String], limit: usize) -> Self {
        ListQuery {
            kind,
            territories: territories.to_vec(),
            limit,
            ..Default::default()
        }
    }
}

/// One page of results and how many match in all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Page {
    pub records: Vec<Record>,
    pub total: usize,
}

/// Count and amounts of the live deals in one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSummary {
    pub stage: String,
    pub count: usize,
    /// Sum of amounts in minor units, by currency ("" where none is set).
    pub amounts: BTreeMap<String, i64>,
}

/// An account with the records that belong to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountOverview {
    pub account: Record,
    pub contacts: Vec<Record>,
    pub deals: Vec<Record>,
    /// Activities related to the account, its contacts or its deals, by due time.
    pub activities: Vec<Record>,
}

/// Live records one owner holds, per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerCount {
    pub owner: String,
    pub accounts: usize,
    pub contacts: usize,
    pub deals: usize,
    pub activities: usize,
    #[serde(default)]
    pub leads: usize,
    #[serde(default)]
    pub cases: usize,
}

/// Adds `count` deals worth `amount` (minor units of `currency`) to
/// `stage`'s entry; a stage no longer in the pipeline is listed last.
pub(crate) fn add_to_summary(
    summary: &mut Vec<StageSummary>,
    stage: String,
    currency: String,
    count: usize,
    amount: i64,
) {
    let i = match summary.iter().position(|s| s.stage == stage) {
        Some(i) => i,
        None => {
            // A stage no longer in the pipeline: listed last.
            summary.push(StageSummary {
                stage,
                count: 0,
                amounts: BTreeMap::new(),
            });
            summary.len() - 1
        }
    };
    summary[i].count += count;
    *summary[i].amounts.entry(currency).or_default() += amount;
}

/// One empty entry per stage of `pipeline`, in order.
pub fn empty_summary(pipeline: &crate::model::Pipeline) -> Vec<StageSummary> {
    pipeline
        .stages()
        .iter()
        .map(|s| StageSummary {
            stage: s.clone(),
            count: 0,
            amounts: BTreeMap::new(),
        })
        .collect()
}

/// WHERE clause and its parameters.
#[derive(Default)]
struct Filter {
    clauses: Vec<String>,
    params: Vec<SqlValue>,
}

impl Filter {
    fn add(&mut self, clause: &str, value: impl Into<SqlValue>) {
        self.params.push(value.into());
        self.clauses
            .push(clause.replace('?', &format!("?{}", self.params.len())));
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }
}

fn list_filter(q: &ListQuery) -> Filter {
    let mut f = Filter::default();
    if let Some(kind) = q.kind {
        f.add("kind = ?", kind.as_str().to_string());
    }
    if let Some(ids) = &q.ids {
        f.add(
            "id IN (SELECT value FROM json_each(?))",
            serde_json::Value::from(ids.clone()).to_string(),
        );
    }
    if let Some(owner) = &q.owner {
        f.add("owner = ?", owner.clone());
    }
    if !q.territories.is_empty() {
        f.add(
            "territory IN (SELECT value FROM json_each(?))",
            serde_json::Value::from(q.territories.clone()).to_string(),
        );
    }
    if let Some(account) = &q.account_id {
        f.add("account_id = ?", account.clone());
    }
    if let Some(related) = &q.related_to {
        f.add("related_to = ?", related.clone());
    }
    if let Some(about) = &q.about {
        f.add(
            "(related_to = ? OR related_to IN (SELECT id FROM records WHERE account_id = ?))",
            about.clone(),
        );
    }
    if let Some(stage) = &q.stage {
        f.add("stage = ?", stage.clone());
    }
    for (path, value) in &q.field_is {
        // The path is checked to be letters, digits, `_` and `.` only.
        f.add(
            &format!("json_extract(record, '$.fields.\"{path}\"') = ?"),
            value.clone(),
        );
    }
    if let Some(since) = q.updated_since {
        f.add("updated_at >= ?", since);
    }
    if let Some(before) = q.due_before {
        f.add("due_at < ? AND coalesce(done, 0) = 0", before);
    }
    if !q.include_deleted {
        f.clauses.push("deleted = 0".into());
    }
    if q.not_done {
        f.clauses.push("coalesce(done, 0) = 0".into());
    }
    if q.only_conflicts {
        f.clauses.push("has_conflicts = 1".into());
    }
    f
}

/// An offset SQL can take (a huge page number in a URL must be a clear
/// error, not a storage error).
pub fn check_offset(offset: usize) -> Result<i64> {
    i64::try_from(offset)
        .ok()
        .filter(|o| *o <= i64::from(u32::MAX))
        .ok_or_else(|| Error::InvalidQuery(format!("offset {offset} is too large")))
}

/// Field filters name fields by path only (they are written into SQL).
pub fn check_field_filters(q: &ListQuery) -> Result<()> {
    for (path, _) in &q.field_is {
        let ok = !path.is_empty()
            && path.len() <= 64
            && path
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
        if !ok {
            return Err(Error::InvalidQuery(format!(
                "{path:?} is not a field to filter by"
            )));
        }
    }
    Ok(())
}

fn check_limit(limit: usize) -> Result<i64> {
    if limit == 0 || limit > MAX_PAGE {
        return Err(Error::InvalidQuery(format!(
            "limit {limit} must be between 1 and {MAX_PAGE}"
        )));
    }
    Ok(limit as i64)
}

fn query_records(conn: &Connection, sql: &str, params: Vec<SqlValue>) -> Result<Vec<Record>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let records = stmt
        .query_map(params_from_iter(params), |r| {
            projection::record_from_row(r, "record")
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(records)
}

/// Turns what a user typed into an FTS5 query: each word a quoted prefix
/// term, all required. Nothing the user types is FTS syntax.
fn fts_query(text: &str) -> Option<String> {
    let terms: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .take(16)
        .map(|t| format!("\"{t}\"*"))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

impl Store {
    /// Records matching `q`, one page at a time.
    pub fn list(&self, q: &ListQuery) -> Result<Page> {
        let limit = check_limit(q.limit)?;
        let offset = check_offset(q.offset)?;
        check_field_filters(q)?;
        let f = list_filter(q);
        let total: i64 = self
            .conn()
            .prepare_cached(&format!("SELECT count(*) FROM records {}", f.sql()))?
            .query_row(params_from_iter(f.params.iter()), |r| r.get(0))?;
        let order = if q.descending { "DESC" } else { "ASC" };
        let column = q.sort.column();
        // Records without the value last; the columns every record has need
        // no such term, which would keep SQLite from walking their index.
        let nulls_last = match q.sort {
            SortBy::Name | SortBy::UpdatedAt | SortBy::CreatedAt => String::new(),
            _ => format!("{column} IS NULL, "),
        };
        let sql = format!(
            "SELECT record FROM records {} ORDER BY {nulls_last}{column} {order}, id {order} LIMIT {limit} OFFSET {offset}",
            f.sql(),
        );
        let records = query_records(self.conn(), &sql, f.params)?;
        Ok(Page {
            records,
            total: total as usize,
        })
    }

    /// Full-text search over names, emails, phones and notes, best first.
    /// Words match as prefixes and all must match; `kind` narrows the search.
    pub fn search(&self, text: &str, kind: Option<Kind>, limit: usize) -> Result<Vec<Record>> {
        self.search_in(text, kind, &[], limit)
    }

    /// [`Store::search`] narrowed to records of `territories` (empty: all).
    pub fn search_in(
        &self,
        text: &str,
        kind: Option<Kind>,
        territories: &[String],
        limit: usize,
    ) -> Result<Vec<Record>> {
        Ok(self
            .search_page(text, &ListQuery::first(kind, territories, limit), 0)?
            .records)
    }

    /// A page of the best matches of `text` among the records `q` selects
    /// (its filters, `offset` and `limit`; its sort is the match's rank),
    /// and how many match, counted up to `most` (0: not counted, `total`
    /// is the page's length). Only the page's records are read, so a
    /// search matching most records costs its ranking, not their JSON.
    pub fn search_page(&self, text: &str, q: &ListQuery, most: usize) -> Result<Page> {
        let limit = check_limit(q.limit)?;
        let offset = check_offset(q.offset)?;
        check_field_filters(q)?;
        let Some(fts) = fts_query(text) else {
            return Ok(Page::default());
        };
        // The list's clauses name only `records` columns, so they read the
        // same beside the full-text table. CROSS JOIN keeps the full-text
        // match the outer loop: left to itself, SQLite may walk the records
        // of a kind and run the match once per record (a count of 40,000
        // accounts took 0.9 s that way, 1 ms this way).
        let mut f = list_filter(q);
        f.add("records_fts MATCH ?", fts);
        let from = "FROM records_fts CROSS JOIN records ON records.rowid = records_fts.rowid";
        let sql = format!(
            "SELECT records.record {from} {} ORDER BY bm25(records_fts, 10.0, 5.0, 5.0, 1.0)
             LIMIT {limit} OFFSET {offset}",
            f.sql()
        );
        let records = query_records(self.conn(), &sql, f.params.clone())?;
        let total = if most == 0 {
            records.len()
        } else {
            let sql = format!(
                "SELECT count(*) FROM (SELECT 1 {from} {} LIMIT {most})",
                f.sql()
            );
            let n: i64 = self
                .conn()
                .prepare_cached(&sql)?
                .query_row(params_from_iter(f.params), |r| r.get(0))?;
            n as usize
        };
        Ok(Page { records, total })
    }

    /// Live records per owner and kind in `territories` (empty: all), by owner.
    pub fn owner_counts(&self, territories: &[String]) -> Result<Vec<OwnerCount>> {
        let f = list_filter(&ListQuery {
            territories: territories.to_vec(),
            ..Default::default()
        });
        let sql = format!(
            "SELECT coalesce(owner, ''), kind, count(*) FROM records {} GROUP BY owner, kind ORDER BY owner, kind",
            f.sql()
        );
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let rows = stmt
            .query_map(params_from_iter(f.params), |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut out: Vec<OwnerCount> = Vec::new();
        for (owner, kind, n) in rows {
            if out.last().is_none_or(|o| o.owner != owner) {
                out.push(OwnerCount {
                    owner,
                    ..Default::default()
                });
            }
            let last = out.last_mut().expect("pushed above");
            match kind.parse::<Kind>() {
                Ok(Kind::Account) => last.accounts = n as usize,
                Ok(Kind::Contact) => last.contacts = n as usize,
                Ok(Kind::Deal) => last.deals = n as usize,
                Ok(Kind::Activity) => last.activities = n as usize,
                Ok(Kind::Lead) => last.leads = n as usize,
                Ok(Kind::Case) => last.cases = n as usize,
                Ok(Kind::Config | Kind::Product | Kind::Price | Kind::Order) | Err(_) => {}
            }
        }
        Ok(out)
    }

    /// The deals as they stood at `time` (ms since the epoch), grouped for
    /// [`crate::PipelineReport`]: each deal read from its document as of
    /// then, so later edits, moves and deletes do not count. Walks the deals
    /// a page at a time; `territories` (empty: all) applies to each deal's
    /// territory at that time.
    pub fn deal_groups_at(&self, territories: &[String], time: i64) -> Result<DealGroups> {
        let mut groups = DealGroups::default();
        let mut after = String::new();
        loop {
            let ids: Vec<String> = self
                .conn()
                .prepare_cached(
                    "SELECT id FROM records WHERE kind = 'deal' AND id > ?1 AND created_at <= ?2 ORDER BY id LIMIT 500",
                )?
                .query_map(rusqlite::params![after, time], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let Some(last) = ids.last().cloned() else {
                break;
            };
            for id in ids {
                let deal = match self.record_at(&id, time) {
                    Ok(deal) => deal,
                    Err(Error::NotYetCreated { .. }) => continue,
                    Err(e) => return Err(e),
                };
                let in_view = territories.is_empty()
                    || deal
                        .text("territory")
                        .is_some_and(|t| territories.iter().any(|mine| mine == t));
                if !deal.deleted && in_view {
                    groups.add_deal(&deal);
                }
            }
            after = last;
        }
        Ok(groups)
    }

    /// How the live deals in `territories` (empty: all) moved through the
    /// stages, from each deal's stage history as its projection row keeps
    /// it (the document is read only for a row without one), one row at a
    /// time, so memory stays flat however many there are.
    pub fn stage_flow(&self, territories: &[String]) -> Result<StageFlow> {
        // One pass over the covering partial index `records_deal_stages`
        // (`kind` and `deleted` written out so SQLite may use it), streamed.
        let mut sql = "SELECT id, stage_history FROM records INDEXED BY records_deal_stages
                       WHERE kind = 'deal' AND deleted = 0"
            .to_string();
        let mut params = Vec::new();
        if !territories.is_empty() {
            sql += " AND territory IN (SELECT value FROM json_each(?1))";
            params.push(serde_json::Value::from(territories.to_vec()).to_string());
        }
        let mut flow = StageFlow::default();
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let mut rows = stmt.query(params_from_iter(params))?;
        while let Some(row) = rows.next()? {
            let history: Option<String> = row.get(1)?;
            let timeline = match projection::parse_stage_history(history.as_deref()) {
                Some(timeline) => timeline,
                None => stage_timeline(&mut self.load(&row.get::<_, String>(0)?)?)?,
            };
            flow.add_deal(self.pipeline(), &timeline);
        }
        Ok(flow)
    }

    /// The pipeline as it stood at `time`: see [`Store::deal_groups_at`].
    pub fn pipeline_summary_at(
        &self,
        territories: &[String],
        time: i64,
    ) -> Result<Vec<StageSummary>> {
        Ok(self
            .deal_groups_at(territories, time)?
            .stage_summary(self.pipeline()))
    }

    /// Live deals (optionally one owner's) grouped for
    /// [`crate::PipelineReport`].
    pub fn deal_groups(&self, owner: Option<&str>, territories: &[String]) -> Result<DealGroups> {
        // `kind` and `deleted` written out, not bound: only then may SQLite
        // read the covering partial index `records_deal_figures` (named,
        // since the planner would rather look deals up by kind, row by row).
        let mut f = list_filter(&ListQuery {
            owner: owner.map(String::from),
            territories: territories.to_vec(),
            include_deleted: true,
            ..Default::default()
        });
        f.clauses.push("kind = 'deal' AND deleted = 0".into());
        let sql = format!(
            "SELECT coalesce(stage, ''), coalesce(currency, ''), substr(close_date, 1, 7),
                    count(*), coalesce(sum(amount), 0),
                    coalesce(sum(amount * probability), 0),
                    coalesce(sum(CASE WHEN probability IS NULL THEN amount END), 0)
             FROM records INDEXED BY records_deal_figures {} GROUP BY 1, 2, 3",
            f.sql()
        );
        let mut stmt = self.conn().prepare_cached(&sql)?;
        let mut rows = stmt.query(params_from_iter(f.params))?;
        let mut groups = DealGroups::default();
        while let Some(r) = rows.next()? {
            let sums = DealSums {
                count: r.get::<_, i64>(3)? as usize,
                amount: r.get(4)?,
                amount_times_own_probability: r.get::<_, i64>(5)? as i128,
                amount_without_probability: r.get(6)?,
            };
            groups.add(
                &r.get::<_, String>(0)?,
                &r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?.as_deref(),
                sums,
            );
        }
        Ok(groups)
    }

    /// Live deals per stage of the pipeline, in pipeline order (stages that
    /// are no longer in the pipeline come last).
    pub fn pipeline_summary(
        &self,
        owner: Option<&str>,
        territories: &[String],
    ) -> Result<Vec<StageSummary>> {
        Ok(self
            .deal_groups(owner, territories)?
            .stage_summary(self.pipeline()))
    }

    /// An account with its contacts, deals and activities (live records only).
    pub fn account_overview(&self, account_id: &str) -> Result<AccountOverview> {
        let account = self.get(account_id)?;
        if account.kind != Kind::Account {
            return Err(Error::BadReference {
                field: "account_id".into(),
                target: account_id.into(),
                expected: "an account".into(),
            });
        }
        let by_account = |kind: Kind| {
            query_records(
                self.conn(),
                "SELECT record FROM records WHERE account_id = ?1 AND kind = ?2 AND deleted = 0 ORDER BY name, id",
                vec![account_id.to_string().into(), kind.as_str().to_string().into()],
            )
        };
        let contacts = by_account(Kind::Contact)?;
        let deals = by_account(Kind::Deal)?;
        let activities = query_records(
            self.conn(),
            "SELECT record FROM records WHERE kind = 'activity' AND deleted = 0 AND (related_to = ?1
                OR related_to IN (SELECT id FROM records WHERE account_id = ?1))
             ORDER BY due_at IS NULL, due_at, id",
            vec![account_id.to_string().into()],
        )?;
        Ok(AccountOverview {
            account,
            contacts,
            deals,
            activities,
        })
    }
}

/// A deal's stages, oldest first, with the time it entered each.
pub fn stage_timeline(doc: &mut RecordDoc) -> Result<Vec<(i64, String)>> {
    Ok(doc
        .field_timeline("stage")?
        .into_iter()
        .filter_map(|(time, stage)| stage.as_str().map(|s| (time, s.to_string())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts_query_quotes_every_term() {
        assert_eq!(fts_query("ada love"), Some("\"ada\"* \"love\"*".into()));
        assert_eq!(
            fts_query("x\" OR 1=1; DROP TABLE records --"),
            Some("\"x\"* \"OR\"* \"1\"* \"1\"* \"DROP\"* \"TABLE\"* \"records\"*".into())
        );
        assert_eq!(fts_query("  -- ;; "), None);
    }
}
