//! The records as the office UI sees them: every read and edit narrowed to
//! what the signed-in user may see (reps and managers their territories,
//! office and admin everything). Records outside a user's view do not exist
//! for them: reads and edits answer "not found", never "forbidden", so a
//! page cannot probe another territory.

use std::collections::HashMap;

use fieldcrm_core::{
    plan_conversion, Conversion, DealGroups, Edit, Kind, ListQuery, OwnerCount, Page,
    PipelineReport, Record, StageConversion, StageFlow, StageSummary,
};

use super::access::{self, narrow};
use super::review::{self, Decided, HeldChange};
use super::{EditOutcome, EditRefusal, RecordDetail, RelayError, RelayStore, Result, User};

/// The device name office edits are pushed from (shown in field history).
pub const WEB_DEVICE: &str = "web";

pub fn list(store: &dyn RelayStore, user: &User, mut q: ListQuery) -> Result<Page> {
    let Some(territories) = narrow(user, &q.territories) else {
        return Ok(Page {
            records: Vec::new(),
            total: 0,
        });
    };
    q.territories = territories;
    store.list(&q)
}

/// A pair of records of one kind that look like the same one.
#[derive(Debug, Clone)]
pub struct DuplicatePair {
    pub a: Record,
    pub b: Record,
    pub why: fieldcrm_core::duplicates::Match,
}

/// Records scanned per page when looking for duplicates.
const DUPLICATE_SCAN_PAGE: usize = 1000;

/// The likeliest `limit` pairs of duplicates among the live records of
/// `kind` the user can see: every record is read a page at a time and
/// only its normalised signature kept, then pairs sharing an email, a
/// phone or a name's start are compared (`fieldcrm_core::duplicates`).
pub fn duplicate_pairs(
    store: &dyn RelayStore,
    user: &User,
    kind: Kind,
    limit: usize,
) -> Result<Vec<DuplicatePair>> {
    use fieldcrm_core::duplicates::{MatchRules, PairFinder};
    let mut finder = PairFinder::new(MatchRules::default());
    let mut offset = 0;
    loop {
        let q = ListQuery {
            kind: Some(kind),
            sort: fieldcrm_core::SortBy::CreatedAt,
            limit: DUPLICATE_SCAN_PAGE,
            offset,
            ..Default::default()
        };
        let page = list(store, user, q)?;
        for record in &page.records {
            finder.add(record);
        }
        if page.records.len() < DUPLICATE_SCAN_PAGE {
            break;
        }
        offset += DUPLICATE_SCAN_PAGE;
    }
    let pairs = finder.pairs(limit);
    let mut ids: Vec<String> = pairs
        .iter()
        .flat_map(|(a, b, _)| [a.clone(), b.clone()])
        .collect();
    ids.sort();
    ids.dedup();
    let records: HashMap<String, Record> = if ids.is_empty() {
        HashMap::new()
    } else {
        let q = ListQuery {
            limit: ids.len(),
            ids: Some(ids),
            ..Default::default()
        };
        list(store, user, q)?
            .records
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect()
    };
    Ok(pairs
        .into_iter()
        .filter_map(|(a, b, why)| {
            Some(DuplicatePair {
                a: records.get(&a)?.clone(),
                b: records.get(&b)?.clone(),
                why,
            })
        })
        .collect())
}

/// A page of the best matches of `text` among the records `q` selects that
/// the user may see, and how many match (up to `most`).
pub fn search_page(
    store: &dyn RelayStore,
    user: &User,
    text: &str,
    mut q: ListQuery,
    most: usize,
) -> Result<Page> {
    let Some(territories) = narrow(user, &q.territories) else {
        return Ok(Page::default());
    };
    q.territories = territories;
    store.search_page(text, &q, most)
}

pub fn search(
    store: &dyn RelayStore,
    user: &User,
    text: &str,
    kind: Option<Kind>,
    limit: usize,
) -> Result<Vec<Record>> {
    match narrow(user, &[]) {
        Some(territories) => store.search(text, kind, &territories, limit),
        None => Ok(Vec::new()),
    }
}

/// The records with `ids` that the user may see, deleted ones included, by
/// id: pages show a reference by its record's name. An id the user cannot
/// see is left out exactly like an id of no record.
pub fn records_by_id(
    store: &dyn RelayStore,
    user: &User,
    ids: impl IntoIterator<Item = String>,
) -> Result<std::collections::HashMap<String, Record>> {
    let ids: Vec<String> = ids.into_iter().collect();
    let mut found = std::collections::HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let q = ListQuery {
            ids: Some(chunk.to_vec()),
            include_deleted: true,
            limit: chunk.len(),
            ..Default::default()
        };
        for record in list(store, user, q)?.records {
            found.insert(record.id.clone(), record);
        }
    }
    Ok(found)
}

fn not_found(id: &str) -> RelayError {
    RelayError::NotFound(format!("no record with id {id:?}"))
}

/// A record with its history and conflicts, if the user may see it.
pub fn record(store: &dyn RelayStore, user: &User, id: &str) -> Result<RecordDetail> {
    match store.record(id)? {
        Some(detail) if access::sees(user, detail.record.text("territory")) => Ok(detail),
        _ => Err(not_found(id)),
    }
}

/// A record as it stood at `time`, if the user may see it now.
pub fn record_at(store: &dyn RelayStore, user: &User, id: &str, time: i64) -> Result<Record> {
    record(store, user, id)?;
    store.record_at(id, time)
}

/// The records a record's page lists beside it.
#[derive(Debug, Default)]
pub struct Related {
    pub account: Option<Record>,
    pub contacts: Vec<Record>,
    pub deals: Vec<Record>,
    /// Activities about the record (an account: also about its contacts
    /// and deals), soonest due first.
    pub activities: Vec<Record>,
    /// For an activity: the record it is about.
    pub subject: Option<Record>,
}

pub fn related(store: &dyn RelayStore, user: &User, record: &Record) -> Result<Related> {
    let page = |q: ListQuery| -> Result<Vec<Record>> {
        Ok(list(store, user, ListQuery { limit: 200, ..q })?.records)
    };
    let visible = |id: Option<&str>| -> Result<Option<Record>> {
        Ok(match id {
            Some(id) => record_if_visible(store, user, id)?,
            None => None,
        })
    };
    let activities = page(ListQuery {
        kind: Some(Kind::Activity),
        about: Some(record.id.clone()),
        sort: fieldcrm_core::SortBy::DueAt,
        ..Default::default()
    })?;
    let mut related = Related {
        activities,
        ..Default::default()
    };
    match record.kind {
        Kind::Account => {
            let of_account = |kind| ListQuery {
                kind: Some(kind),
                account_id: Some(record.id.clone()),
                ..Default::default()
            };
            related.contacts = page(of_account(Kind::Contact))?;
            related.deals = page(of_account(Kind::Deal))?;
        }
        Kind::Contact | Kind::Deal | Kind::Case | Kind::Order => {
            related.account = visible(record.text("account_id"))?;
            related.contacts = visible(record.text("contact_id"))?.into_iter().collect();
        }
        Kind::Activity => related.subject = visible(record.text("related_to"))?,
        Kind::Price => related.subject = visible(record.text("product_id"))?,
        Kind::Config | Kind::Product => {}
        Kind::Lead => {
            related.account = visible(record.text("converted_account_id"))?;
            related.contacts = visible(record.text("converted_contact_id"))?
                .into_iter()
                .collect();
            related.deals = visible(record.text("converted_deal_id"))?
                .into_iter()
                .collect();
        }
    }
    Ok(related)
}

fn record_if_visible(store: &dyn RelayStore, user: &User, id: &str) -> Result<Option<Record>> {
    match record(store, user, id) {
        Ok(detail) => Ok(Some(detail.record)),
        Err(RelayError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Live deals in the user's view (optionally one territory), now or as
/// they stood at `at`, grouped for dashboards.
pub fn deal_groups(
    store: &dyn RelayStore,
    user: &User,
    territory: Option<&str>,
    at: Option<i64>,
) -> Result<DealGroups> {
    let asked: Vec<String> = territory.map(String::from).into_iter().collect();
    match narrow(user, &asked) {
        Some(territories) => store.deal_groups(&territories, at),
        None => Ok(DealGroups::default()),
    }
}

/// Live deals per stage in the user's view (optionally one territory), now
/// or as they stood at `at`.
pub fn pipeline_summary(
    store: &dyn RelayStore,
    user: &User,
    territory: Option<&str>,
    at: Option<i64>,
) -> Result<Vec<StageSummary>> {
    let groups = deal_groups(store, user, territory, at)?;
    Ok(groups.stage_summary(&store.pipeline()?))
}

/// The dashboard's deal figures in the user's view, for `today`'s quarter.
pub fn pipeline_report(
    store: &dyn RelayStore,
    user: &User,
    at: Option<i64>,
    today: time::Date,
) -> Result<PipelineReport> {
    let groups = deal_groups(store, user, None, at)?;
    Ok(PipelineReport::new(&store.pipeline()?, &groups, today))
}

/// How the live deals in the user's view moved through the stages.
pub fn stage_conversions(store: &dyn RelayStore, user: &User) -> Result<Vec<StageConversion>> {
    let pipeline = store.pipeline()?;
    match narrow(user, &[]) {
        Some(territories) => Ok(store.stage_flow(&territories)?.conversions(&pipeline)),
        None => Ok(StageFlow::default().conversions(&pipeline)),
    }
}

pub fn owner_counts(store: &dyn RelayStore, user: &User) -> Result<Vec<OwnerCount>> {
    match narrow(user, &[]) {
        Some(territories) => store.owner_counts(&territories),
        None => Ok(Vec::new()),
    }
}

/// Converts a lead the user can see, as the office user: the plan a device
/// makes too (`fieldcrm_core::plan_conversion`), made as office edits that
/// stand or fall together. Returns the new contact's id, or why nothing
/// was kept.
pub fn convert_lead(
    store: &dyn RelayStore,
    user: &User,
    lead_id: &str,
    how: Conversion,
) -> Result<std::result::Result<String, EditRefusal>> {
    let refused = |e: fieldcrm_core::Error| EditRefusal::from(super::Refusal::Invalid(e));
    let Some(lead) = record_if_visible(store, user, lead_id)? else {
        return Ok(Err(EditRefusal::NotFound(not_found(lead_id).to_string())));
    };
    let existing = match &how.account_id {
        Some(id) => match record_if_visible(store, user, id)? {
            Some(account) => Some(account),
            None => return Ok(Err(EditRefusal::NotFound(not_found(id).to_string()))),
        },
        None => None,
    };
    let activities = list(
        store,
        user,
        ListQuery {
            kind: Some(Kind::Activity),
            related_to: Some(lead_id.to_string()),
            limit: 1000,
            ..Default::default()
        },
    )?
    .records
    .into_iter()
    .map(|r| r.id)
    .collect();
    let pipeline = store.pipeline()?;
    let first_stage = pipeline.stages().first().cloned().unwrap_or_default();
    let plan = match plan_conversion(
        &lead,
        &how,
        existing.as_ref(),
        &first_stage,
        activities,
        super::now_ms(),
    ) {
        Ok(plan) => plan,
        Err(e) if e.is_storage() => return Err(e.into()),
        Err(e) => return Ok(Err(refused(e))),
    };
    let contact_id = plan.contact.0.clone();
    let mut edits = Vec::new();
    let create = |(id, fields): (String, fieldcrm_core::Fields), kind| Edit::CreateWithId {
        id,
        kind,
        fields,
    };
    if let Some(account) = plan.account {
        edits.push(create(account, Kind::Account));
    }
    edits.push(create(plan.contact, Kind::Contact));
    if let Some(deal) = plan.deal {
        edits.push(create(deal, Kind::Deal));
    }
    for (id, fields) in plan.activities {
        edits.push(Edit::Update { id, fields });
    }
    edits.push(Edit::Update {
        id: lead.id.clone(),
        fields: plan.lead,
    });
    Ok(store
        .edit_together(user, WEB_DEVICE, edits)?
        .map(|_| contact_id))
}

/// `owner`'s day's route, from `from` to `to`, as the user may see it:
/// the same computation a device makes (`fieldcrm_core::day_route_of`).
pub fn day_route(
    store: &dyn RelayStore,
    user: &User,
    owner: &str,
    from: i64,
    to: i64,
    options: &fieldcrm_core::RouteOptions,
) -> Result<fieldcrm_core::Route> {
    let visits = list(store, user, fieldcrm_core::visits_query(owner, to))?.records;
    let get = |id: &str| record_if_visible(store, user, id);
    fieldcrm_core::day_route_of(visits, &get, from, options, &[])
}

/// Writes one entry of the organisation configuration as `user` (the
/// write rules let only admins), creating the configuration record with
/// its first entry. Devices receive it at their next sync.
pub fn set_config_entry(
    store: &dyn RelayStore,
    user: &User,
    entry: &fieldcrm_core::ConfigEntry,
) -> Result<EditOutcome> {
    use fieldcrm_core::{Value, CONFIG_ID, SHARED_TERRITORY};
    let update = || Edit::Update {
        id: CONFIG_ID.into(),
        fields: entry.to_fields(),
    };
    if store.document(CONFIG_ID)?.is_some() {
        return try_edit(store, user, update());
    }
    let mut fields = entry.to_fields();
    fields.insert("name".into(), Value::from("Organisation configuration"));
    fields.insert("territory".into(), Value::from(SHARED_TERRITORY));
    let created = try_edit(
        store,
        user,
        Edit::CreateWithId {
            id: CONFIG_ID.into(),
            kind: Kind::Config,
            fields,
        },
    )?;
    match created {
        // Another admin made it meanwhile: this entry goes on top.
        Err(_) if store.document(CONFIG_ID)?.is_some() => try_edit(store, user, update()),
        outcome => Ok(outcome),
    }
}

/// Makes the edits as `user`; edits of records the user cannot see are
/// refused as not found, the rest are checked again by the push path.
pub fn edit(store: &dyn RelayStore, user: &User, edits: Vec<Edit>) -> Result<Vec<EditOutcome>> {
    let mut allowed = Vec::with_capacity(edits.len());
    let mut refused = Vec::new();
    for (i, edit) in edits.into_iter().enumerate() {
        let target = match &edit {
            Edit::Create { .. } | Edit::CreateWithId { .. } => None,
            Edit::Update { id, .. } | Edit::Delete { id } | Edit::Restore { id } => Some(id),
        };
        match target {
            Some(id) if record_if_visible(store, user, id)?.is_none() => {
                refused.push((i, EditRefusal::NotFound(not_found(id).to_string())));
            }
            _ => allowed.push(edit),
        }
    }
    let mut done = store.edit(user, WEB_DEVICE, allowed)?.into_iter();
    let total = done.len() + refused.len();
    let mut refused = refused.into_iter().peekable();
    Ok((0..total)
        .map(|i| match refused.next_if(|(at, _)| *at == i) {
            Some((_, reason)) => Err(reason),
            None => done.next().unwrap_or_else(|| {
                Err(EditRefusal::NotFound("the edit produced no outcome".into()))
            }),
        })
        .collect())
}

/// One edit and what became of it (a refusal is an answer, not a failure).
pub fn try_edit(store: &dyn RelayStore, user: &User, change: Edit) -> Result<EditOutcome> {
    edit(store, user, vec![change])?
        .pop()
        .ok_or_else(|| RelayError::Storage("the edit produced no outcome".into()))
}

/// One edit; a refusal is an error.
pub fn edit_one(store: &dyn RelayStore, user: &User, change: Edit) -> Result<Record> {
    Ok(try_edit(store, user, change)??)
}

/// The held changes `user` may decide on, with what each changes, oldest
/// first. Reps may not review: they get none.
pub fn review_queue(store: &dyn RelayStore, user: &User) -> Result<Vec<HeldChange>> {
    let Some(scope) = review::scope_for(user) else {
        return Ok(Vec::new());
    };
    let held = store.held_changes(&scope)?;
    review::describe(held, &mut |id| store.document(id))
}

/// Accepts or discards the held changes of one record (all of them, in the
/// order they were held: later ones build on earlier ones).
pub fn decide_record(
    store: &dyn RelayStore,
    user: &User,
    record_id: &str,
    accept: bool,
) -> Result<Vec<Decided>> {
    let Some(scope) = review::scope_for(user) else {
        return Err(RelayError::NotFound(
            "no held changes you may decide on".into(),
        ));
    };
    let hashes: Vec<[u8; 32]> = store
        .held_changes(&scope)?
        .into_iter()
        .filter(|h| h.record_id == record_id)
        .map(|h| h.hash)
        .collect();
    if hashes.is_empty() {
        return Err(RelayError::NotFound(format!(
            "no held changes of record {record_id:?} you may decide on"
        )));
    }
    store.decide(user, &hashes, accept)
}

/// Merges `duplicate` into `survivor` as `user` (office and admin users;
/// relay/merge.rs): kept whole or not at all.
pub fn merge(
    store: &dyn RelayStore,
    user: &User,
    survivor: &str,
    duplicate: &str,
    take: &[String],
) -> Result<std::result::Result<super::merge::Merged, EditRefusal>> {
    store.merge(user, survivor, duplicate, take)
}

/// Undoes the merge that tombstoned `tombstone`, while its survivor is
/// unchanged since.
pub fn unmerge(
    store: &dyn RelayStore,
    user: &User,
    tombstone: &str,
) -> Result<std::result::Result<Record, EditRefusal>> {
    store.unmerge(user, tombstone)
}

/// The tombstones merged into `id` that the user may see, newest first.
pub fn merged_from(store: &dyn RelayStore, user: &User, id: &str) -> Result<Vec<Record>> {
    let q = ListQuery {
        field_is: vec![(fieldcrm_core::merge::MERGED_INTO.into(), id.into())],
        include_deleted: true,
        sort: fieldcrm_core::SortBy::UpdatedAt,
        descending: true,
        limit: 200,
        ..Default::default()
    };
    Ok(list(store, user, q)?.records)
}

/// Adds a line to an order as `user` (an office edit through the push
/// path): `quantity` of `product_id` at the price book's price in the
/// order's currency today, `discount` percent off — the same rules a
/// device's `add_order_line` follows.
pub fn add_order_line(
    store: &dyn RelayStore,
    user: &User,
    order_id: &str,
    product_id: &str,
    quantity: f64,
    discount: f64,
) -> Result<EditOutcome> {
    use fieldcrm_core::{best_price, day_of, new_line, Value};
    let refused = |message: String| {
        Ok(Err(EditRefusal::Refused {
            field: Some("product_id".into()),
            code: "invalid_value".into(),
            message,
        }))
    };
    let Some(order) = record_if_visible(store, user, order_id)?.filter(|o| o.kind == Kind::Order)
    else {
        return Ok(Err(EditRefusal::NotFound(not_found(order_id).to_string())));
    };
    let product = match record_if_visible(store, user, product_id)? {
        Some(p) if p.kind == Kind::Product && !p.deleted => p,
        _ => return refused(format!("there is no product with id {product_id:?}")),
    };
    if product.get("active") == Some(&Value::Bool(false)) {
        return refused(format!("“{}” is no longer sold", product.display_name()));
    }
    let currency = order.text("currency").unwrap_or_default().to_string();
    let prices = list(
        store,
        user,
        ListQuery {
            kind: Some(Kind::Price),
            field_is: vec![
                ("product_id".into(), product_id.into()),
                ("currency".into(), currency.clone()),
            ],
            limit: 500,
            ..Default::default()
        },
    )?
    .records;
    let day = day_of(super::now_ms());
    let Some(unit_price) = best_price(&prices, &day) else {
        return refused(format!(
            "the price book has no {currency} price for “{}” on {day}",
            product.display_name()
        ));
    };
    let (path, value) = new_line(&order, product_id, quantity, unit_price, discount);
    try_edit(
        store,
        user,
        Edit::Update {
            id: order_id.into(),
            fields: [(path, value)].into(),
        },
    )
}
