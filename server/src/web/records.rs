//! Record lists, record pages (fields, related records, activity timeline,
//! field history, conflicts) and the create / edit / delete / restore /
//! resolve actions.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use fieldcrm_core::{Edit, FieldType, Fields, Kind, ListQuery, Record, SortBy, Value};
use maud::{html, Markup};
use serde::Deserialize;

use super::form::{self, Choices, Errors};
use super::layout::{self, field_label, kind_path, kind_title, page, record_link, Nav};
use super::names::{self, Names};
use super::session::Post;
use super::settings;
use super::timeline;
use super::zone::Zone;
use super::{blocking, log_advanced, PageError, Session};
use crate::relay::{access, office, EditRefusal, RecordDetail, RelayStore, User};
use crate::AppState;

const PAGE_SIZE: usize = 50;
const DAY_MS: i64 = 86_400_000;

pub(super) fn kind_of(path: &str) -> Result<Kind, PageError> {
    layout::kind_from_path(path)
        .ok_or_else(|| PageError::new(StatusCode::NOT_FOUND, format!("no page {path:?}")))
}

/// A list's filters, as its query string carries them.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct ListParams {
    pub q: String,
    pub owner: String,
    pub territory: String,
    /// A deal's stage, a lead's or case's status.
    pub stage: String,
    /// Cases: their priority.
    pub priority: String,
    /// Activities and cases: overdue, today or week.
    pub due: String,
    pub sort: String,
    pub desc: bool,
    pub deleted: bool,
    pub conflicts: bool,
    pub page: usize,
    /// Custom field filters (`custom.tier=gold`), read from the raw query
    /// by [`ListParams::with_custom`].
    #[serde(skip)]
    pub custom: Vec<(String, String)>,
}

fn some(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// The sort a list has until the user picks one: activities soonest due
/// first, everything else by name.
fn default_sort(kind: Kind) -> &'static str {
    match kind {
        Kind::Activity => "due_at",
        _ => "name",
    }
}

impl ListParams {
    /// These filters with the custom field ones the query string carries.
    pub fn with_custom(mut self, raw: Option<&str>) -> Self {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(raw.unwrap_or("")).unwrap_or_default();
        self.custom = pairs
            .into_iter()
            .filter(|(k, v)| k.starts_with(fieldcrm_core::CUSTOM_PREFIX) && !v.trim().is_empty())
            .collect();
        self
    }

    /// The sort in effect: the one asked for, or the list's default.
    fn sort_key(&self, kind: Kind) -> &str {
        match self.sort.as_str() {
            "" => default_sort(kind),
            asked => asked,
        }
    }

    /// The list query these filters ask for (territories are narrowed later).
    pub fn query(&self, kind: Kind, now: i64, zone: &Zone) -> Result<ListQuery, PageError> {
        let sort = match self.sort_key(kind) {
            "name" => SortBy::Name,
            "updated_at" => SortBy::UpdatedAt,
            "created_at" => SortBy::CreatedAt,
            "amount" => SortBy::Amount,
            "close_date" => SortBy::CloseDate,
            "due_at" => SortBy::DueAt,
            "stage" => SortBy::Stage,
            other => {
                return Err(PageError::bad_request(format!(
                    "a list cannot be sorted by “{other}”"
                )))
            }
        };
        let due_before = match self.due.as_str() {
            "" => None,
            "overdue" => Some(now),
            "today" => Some(zone.end_of_day_at(now) + 1),
            "week" => Some(now + 7 * DAY_MS),
            other => {
                return Err(PageError::bad_request(format!(
                    "due filter {other:?} is not overdue, today or week"
                )))
            }
        };
        Ok(ListQuery {
            kind: Some(kind),
            owner: some(&self.owner),
            territories: some(&self.territory).into_iter().collect(),
            stage: some(&self.stage),
            field_is: some(&self.priority)
                .map(|p| ("priority".to_string(), p))
                .into_iter()
                .chain(self.custom.iter().cloned())
                .collect(),
            due_before,
            include_deleted: self.deleted,
            only_conflicts: self.conflicts,
            sort,
            descending: self.desc,
            limit: PAGE_SIZE,
            offset: self.page.saturating_mul(PAGE_SIZE),
            ..Default::default()
        })
    }

    pub(super) fn with_page(&self, page: usize) -> String {
        let mut pairs: Vec<(&str, String)> = vec![
            ("q", self.q.clone()),
            ("owner", self.owner.clone()),
            ("territory", self.territory.clone()),
            ("stage", self.stage.clone()),
            ("priority", self.priority.clone()),
            ("due", self.due.clone()),
            ("sort", self.sort.clone()),
        ];
        pairs.retain(|(_, v)| !v.is_empty());
        pairs.extend(self.custom.iter().map(|(k, v)| (k.as_str(), v.clone())));
        for (flag, on) in [
            ("desc", self.desc),
            ("deleted", self.deleted),
            ("conflicts", self.conflicts),
        ] {
            if on {
                pairs.push((flag, "true".into()));
            }
        }
        if page > 0 {
            pairs.push(("page", page.to_string()));
        }
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    }
}

pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp() * 1000
}

/// Most search hits a list pages through (best first).
pub const SEARCH_HITS: usize = fieldcrm_core::MAX_PAGE;

/// The page of records a list shows, and how many match in all: a search
/// (the best [`SEARCH_HITS`] matches among the filtered records) or a
/// filtered, sorted list; both honour `q.offset` and `q.limit`.
pub fn find(
    relay: &dyn RelayStore,
    user: &User,
    p: &ListParams,
    q: ListQuery,
) -> crate::relay::Result<(Vec<Record>, usize)> {
    let page = if p.q.trim().is_empty() {
        office::list(relay, user, q)?
    } else {
        // The best SEARCH_HITS matches, a page at a time.
        let within = SEARCH_HITS.saturating_sub(q.offset);
        let limit = q.limit.min(within).max(1);
        let mut page =
            office::search_page(relay, user, &p.q, ListQuery { limit, ..q }, SEARCH_HITS)?;
        page.records.truncate(within);
        page
    };
    Ok((page.records, page.total))
}

fn columns(kind: Kind) -> &'static [&'static str] {
    kind.list_columns()
}

/// How far a device's time may be from the relay's before the history
/// shows both: offline edits are received late, so only a change stamped
/// *after* it arrived, or long before, tells of a wrong clock. 5 minutes
/// either way keeps ordinary drift quiet; late syncs show as "behind".
const CLOCK_SLACK_MS: i64 = 5 * 60_000;

/// "3 h ahead", "2 years behind": a device clock's error in words.
fn clock_off(ms: i64) -> String {
    let words = layout::span_in_words(ms.abs());
    format!("{words} {}", if ms > 0 { "ahead" } else { "behind" })
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(kind): Path<String>,
    Query(params): Query<ListParams>,
    RawQuery(raw): RawQuery,
) -> Result<Markup, PageError> {
    let params = params.with_custom(raw.as_deref());
    let kind = kind_of(&kind)?;
    let query = params.query(kind, now_ms(), &session.zone)?;
    let user = session.user.clone();
    let p = params.clone();
    let (records, total, choices, names) = blocking(&state, move |relay| {
        let (records, total) = find(relay, &user, &p, query)?;
        let names = Names::of_records(relay, &user, &records)?;
        Ok((records, total, choices(relay, &user)?, names))
    })
    .await?;
    let title = kind_title(kind);
    let path = kind_path(kind);
    let searching = !params.q.trim().is_empty();
    let sorts: &[(&str, &str)] = match kind {
        Kind::Deal => &[
            ("name", "Name"),
            ("amount", "Amount"),
            ("close_date", "Close date"),
            ("stage", "Stage"),
            ("updated_at", "Last change"),
        ],
        Kind::Activity => &[
            ("due_at", "Due"),
            ("name", "Subject"),
            ("updated_at", "Last change"),
        ],
        Kind::Case => &[
            ("name", "Subject"),
            ("due_at", "Resolve by"),
            ("stage", "Status"),
            ("updated_at", "Last change"),
            ("created_at", "Opened"),
        ],
        _ => &[
            ("name", "Name"),
            ("updated_at", "Last change"),
            ("created_at", "Created"),
        ],
    };
    let body = html! {
        form.filters method="get" action=(format!("/{path}")) {
            input type="search" name="q" value=(params.q) placeholder=(format!("Search {}", title.to_lowercase())) aria-label="Search";
            input name="owner" value=(params.owner) placeholder="Owner" aria-label="Owner" list="owner-choices" autocomplete="off";
            datalist id="owner-choices" { @for u in &choices.owners { option value=(u) {} } }
            select name="territory" aria-label="Territory" {
                option value="" { "All territories" }
                @for t in &choices.territories { option value=(t) selected[*t == params.territory] { (t) } }
            }
            @if kind == Kind::Deal {
                select name="stage" aria-label="Stage" {
                    option value="" { "All stages" }
                    @for s in choices.config.pipeline().stages() { option value=(s) selected[*s == params.stage] { (s) } }
                }
            }
            @if let Some(FieldType::Choice(statuses)) = kind.field("status").map(|f| f.ty) {
                select name="stage" aria-label="Status" {
                    option value="" { "Any status" }
                    @for s in statuses { option value=(s) selected[*s == params.stage] { (s) } }
                }
            }
            @if let Some(FieldType::Picklist(list)) = kind.field("priority").map(|f| f.ty) {
                select name="priority" aria-label="Priority" {
                    option value="" { "Any priority" }
                    @for p in choices.config.picklist(list) { option value=(p.value) selected[p.value == params.priority] { (p.label) } }
                }
            }
            @for def in choices.config.custom_fields_of(kind).filter(|f| !f.entry.retired) {
                @let path = def.path();
                @let chosen = params.custom.iter().find(|(k, _)| *k == path).map_or("", |(_, v)| v.as_str());
                @match (def.entry.ty, &def.entry.picklist) {
                    (fieldcrm_core::CustomType::Picklist, Some(list)) => {
                        select name=(path) aria-label=(def.entry.label) {
                            option value="" { "Any " (def.entry.label.to_lowercase()) }
                            @for v in choices.config.picklist(list) { option value=(v.value) selected[v.value == chosen] { (v.label) } }
                        }
                    }
                    (fieldcrm_core::CustomType::Text, _) => {
                        input name=(path) value=(chosen) placeholder=(def.entry.label) aria-label=(def.entry.label);
                    }
                    _ => {}
                }
            }
            @if kind == Kind::Activity || kind == Kind::Case {
                select name="due" aria-label="Due" {
                    @for (v, label) in [("", "Any due date"), ("overdue", "Overdue"), ("today", "Due by end of today"), ("week", "Due within 7 days")] {
                        option value=(v) selected[v == params.due] { (label) }
                    }
                }
            }
            select name="sort" aria-label="Sort by" disabled[searching] {
                @for (v, label) in sorts { option value=(v) selected[*v == params.sort_key(kind)] { "Sort: " (label) } }
            }
            label.check { input type="checkbox" name="desc" value="true" checked[params.desc]; "Descending" }
            label.check { input type="checkbox" name="conflicts" value="true" checked[params.conflicts]; "Conflicts only" }
            label.check { input type="checkbox" name="deleted" value="true" checked[params.deleted]; "Include deleted" }
            button type="submit" { "Apply" }
        }
        div.saved {
            @let saved: Vec<_> = session.prefs.filters(kind).collect();
            @if !saved.is_empty() { span.muted { "Saved:" } (settings::chips(&session, kind, &saved)) }
            (settings::save_form(&session, kind, &params.with_page(0)))
        }
        div.actions {
            a.button href=(format!("/{path}/new")) { "New " (kind.as_str()) }
            a href=(format!("/{path}/export.csv?{}", params.with_page(0))) { "Export CSV" }
            @if fieldcrm_core::duplicates::has_rules(kind) { a href=(format!("/{path}/duplicates")) { "Possible duplicates" } }
            span.count { (total) " " (title.to_lowercase()) @if searching { " found" @if total >= SEARCH_HITS { " (the best " (SEARCH_HITS) " matches)" } } }
        }
        (bulk_form(&session, kind, &choices))
        table.records {
            thead { tr {
                th { span.sr-only { "Select" } }
                (column_header(&params, kind, "name", if kind == Kind::Activity { "Subject" } else { "Name" }))
                @for c in columns(kind) { (column_header(&params, kind, c, &field_label(c))) }
            } }
            tbody {
                @for r in &records {
                    tr class=[r.deleted.then_some("deleted")] {
                        td { @if !r.deleted { input type="checkbox" name="id" value=(r.id) form="bulk" aria-label=(format!("Select {}", r.display_name())); } }
                        td { (record_link(r)) @if r.deleted { " " span.badge { "deleted" } } }
                        @for c in columns(kind) {
                            td { @if *c == "amount" { (layout::money(r)) } @else if let Some(v) = r.get(c) { (names.value(kind, c, v, &session.zone)) } }
                        }
                    }
                }
                @if records.is_empty() && params.page == 0 { tr { td colspan="7" { "Nothing matches." } } }
            }
        }
        (pages(&params, path, total))
    };
    Ok(page(&session, &title, Nav::List(kind), body))
}

/// The bar above a list that changes the ticked records at once: owner,
/// stage (deals), or delete. The rows' boxes belong to this form.
fn bulk_form(session: &Session, kind: Kind, choices: &Choices) -> Markup {
    html! {
        form.bulk id="bulk" method="post" action=(format!("/{}/bulk", kind_path(kind))) {
            (layout::csrf(session))
            span.muted { "With the ticked rows:" }
            select name="action" aria-label="Change" {
                option value="owner" { "Give to owner…" }
                @if kind == Kind::Deal { option value="stage" { "Move to stage…" } }
                option value="delete" { "Delete" }
            }
            input name="owner" list="owner-choices" placeholder="Owner" aria-label="New owner" autocomplete="off";
            @if kind == Kind::Deal {
                select name="stage" aria-label="New stage" { @for s in choices.config.pipeline().active_stages() { option value=(s) { (s) } } }
            }
            button.small type="submit" { "Apply to ticked" }
        }
    }
}

/// Most records one bulk change takes (a list page shows 50).
const BULK_MAX: usize = 500;

/// Changes the ticked records through the same edit path as one at a
/// time: each is checked (access, the data model) and refused on its own.
pub async fn bulk(
    State(state): State<Arc<AppState>>,
    Path(kind): Path<String>,
    Post(session, form): Post<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let kind = kind_of(&kind)?;
    let value = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map_or(String::new(), |(_, v)| v.trim().to_string())
    };
    let ids: Vec<String> = form
        .iter()
        .filter(|(k, _)| k == "id")
        .map(|(_, v)| v.clone())
        .collect();
    if ids.is_empty() {
        return Err(PageError::bad_request("Tick the records to change first."));
    }
    if ids.len() > BULK_MAX {
        return Err(PageError::bad_request(format!(
            "At most {BULK_MAX} records change at once; you ticked {}.",
            ids.len()
        )));
    }
    let action = value("action");
    let change: Box<dyn Fn(String) -> Edit + Send> = match action.as_str() {
        "owner" if !value("owner").is_empty() => {
            let owner = value("owner");
            Box::new(move |id| Edit::Update {
                id,
                fields: fieldcrm_core::fields([("owner", owner.as_str())]),
            })
        }
        "owner" => return Err(PageError::bad_request("Say who the new owner is.")),
        "stage" if kind == Kind::Deal => {
            let stage = value("stage");
            Box::new(move |id| Edit::Update {
                id,
                fields: fieldcrm_core::fields([("stage", stage.as_str())]),
            })
        }
        "delete" => Box::new(|id| Edit::Delete { id }),
        other => {
            return Err(PageError::bad_request(format!(
                "“{other}” is not a change this list makes"
            )))
        }
    };
    let user = session.user.clone();
    let edits: Vec<Edit> = ids.iter().cloned().map(change).collect();
    let outcomes = blocking(&state, move |relay| office::edit(relay, &user, edits)).await?;
    log_advanced(&state).await;
    let refused: Vec<(&String, String)> = ids
        .iter()
        .zip(&outcomes)
        .filter_map(|(id, o)| o.as_ref().err().map(|e| (id, e.to_string())))
        .collect();
    let changed = outcomes.len() - refused.len();
    let path = kind_path(kind);
    let body = html! {
        p.summary { strong.changed { (changed) } " changed, " strong.refused { (refused.len()) } " refused." }
        @if !refused.is_empty() {
            table.refused {
                thead { tr { th { "Record" } th { "Why not" } } }
                tbody { @for (id, why) in &refused { tr { td { a href=(format!("/r/{id}")) { (id) } } td { (why) } } } }
            }
        }
        p { a href=(format!("/{path}")) { "Back to " (kind_title(kind).to_lowercase()) } }
    };
    Ok(page(&session, "Bulk change", Nav::List(kind), body).into_response())
}

/// A list column's header: a link that sorts by it (again: the other
/// way round) where the list can be sorted by it and is not a search,
/// which is best match first.
fn column_header(params: &ListParams, kind: Kind, column: &str, label: &str) -> Markup {
    let key = match column {
        "name" | "amount" | "close_date" | "stage" | "due_at" => column,
        _ => return html! { th { (label) } },
    };
    if !params.q.trim().is_empty() {
        return html! { th { (label) } };
    }
    let current = params.sort_key(kind) == key;
    let mut next = params.clone();
    next.sort = key.to_string();
    next.desc = current && !params.desc;
    let order = if params.desc {
        "descending"
    } else {
        "ascending"
    };
    html! {
        th aria-sort=[current.then_some(order)] {
            a href=(format!("/{}?{}", kind_path(kind), next.with_page(0))) {
                (label) @if current { (if params.desc { " ▼" } else { " ▲" }) }
            }
        }
    }
}

/// Page links under a list: previous, the first and last pages, the pages
/// around this one, next; and a plain word where the page asked for is
/// past the end.
fn pages(params: &ListParams, path: &str, total: usize) -> Markup {
    let count = total.div_ceil(PAGE_SIZE).max(1);
    let here = params.page;
    let link = |page: usize| format!("/{path}?{}", params.with_page(page));
    if here >= count {
        return html! {
            p.notice role="status" {
                "There is no page " (here + 1) ": these " (total) " records make "
                (count) @if count == 1 { " page" } @else { " pages" } ". "
                a href=(link(count - 1)) { "Go to the last page" }
            }
        };
    }
    let mut shown: Vec<usize> = vec![0, count - 1];
    shown.extend(here.saturating_sub(2)..=(here + 2).min(count - 1));
    shown.sort_unstable();
    shown.dedup();
    let first = here * PAGE_SIZE + 1;
    let last = ((here + 1) * PAGE_SIZE).min(total);
    html! {
        nav.pages aria-label="Pages" {
            @if here > 0 { a rel="prev" href=(link(here - 1)) { "← Previous" } }
            @for (i, page) in shown.iter().enumerate() {
                @if i > 0 && shown[i - 1] + 1 < *page { span.gap { "…" } }
                @if *page == here { span.current aria-current="page" { (page + 1) } }
                @else { a href=(link(*page)) { (page + 1) } }
            }
            @if here + 1 < count { a rel="next" href=(link(here + 1)) { "Next →" } }
            @if total > 0 { span.muted { (first) "–" (last) " of " (total) } }
        }
    }
}

/// Every record in the user's view with conflicting values, most recently
/// changed first: the navigation's "Conflicts" count links here.
pub async fn conflicts(
    State(state): State<Arc<AppState>>,
    session: Session,
) -> Result<Markup, PageError> {
    let user = session.user.clone();
    let found = blocking(&state, move |relay| {
        let q = ListQuery {
            only_conflicts: true,
            sort: SortBy::UpdatedAt,
            descending: true,
            limit: 200,
            ..Default::default()
        };
        office::list(relay, &user, q)
    })
    .await?;
    let body = html! {
        p.muted { "These records hold values changed at the same time on different devices. Open one to keep the right value." }
        @if found.records.is_empty() { p { "No conflicts." } }
        @else {
            p.count { (found.total) " records" @if found.total > found.records.len() { " (the " (found.records.len()) " changed last are shown)" } }
            div.scroll { table.records {
                thead { tr { th { "Record" } th { "Kind" } th { "Territory" } th { "Last change" } } }
                tbody { @for r in &found.records { tr {
                    td { (record_link(r)) } td { (r.kind.as_str()) }
                    td { (r.text("territory").unwrap_or("")) } td { (session.zone.time(r.updated_at)) }
                } } }
            } }
        }
    };
    Ok(page(&session, "Conflicts", Nav::Conflicts, body))
}

/// What a form's selects offer this user.
pub fn choices(relay: &dyn RelayStore, user: &User) -> crate::relay::Result<Choices> {
    let territories = match access::record_territories(user) {
        None => relay.territories()?,
        Some(mine) => mine,
    };
    Ok(Choices {
        config: relay.configuration()?,
        territories,
        owners: names::owner_choices(relay, user)?
            .into_iter()
            .map(|u| u.id)
            .collect(),
    })
}

fn form_page(
    session: &Session,
    kind: Kind,
    action: &str,
    title: &str,
    values: &BTreeMap<String, String>,
    errors: &Errors,
    choices: &Choices,
) -> Markup {
    let body = html! {
        form.record method="post" action=(action) novalidate {
            (layout::csrf(session))
            @if let Some(problem) = errors.get("") { p.error role="alert" { (problem) } }
            (form::inputs(kind, values, errors, choices))
            div.actions { button type="submit" { "Save" } a href=(action) { "Cancel" } }
        }
    };
    page(session, title, Nav::List(kind), body)
}

pub async fn new_form(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(kind): Path<String>,
    Query(prefill): Query<BTreeMap<String, String>>,
) -> Result<Markup, PageError> {
    let kind = kind_of(&kind)?;
    let user = session.user.clone();
    let (choices, mut values) = blocking(&state, move |relay| {
        let mut values = prefill;
        names::fill_picker_names(relay, &user, kind, &mut values)?;
        Ok((choices(relay, &user)?, values))
    })
    .await?;
    values
        .entry("owner".into())
        .or_insert_with(|| session.user.id.clone());
    for (path, value) in kind.creation_defaults() {
        values
            .entry(path.to_string())
            .or_insert_with(|| value.to_string());
    }
    if let [only] = choices.territories.as_slice() {
        values
            .entry("territory".into())
            .or_insert_with(|| only.clone());
    }
    if kind == Kind::Deal {
        if let Some(first) = choices.config.pipeline().active_stages().next() {
            values
                .entry("stage".into())
                .or_insert_with(|| first.clone());
        }
    }
    let title = format!("New {}", kind.as_str());
    Ok(form_page(
        &session,
        kind,
        &format!("/{}", kind_path(kind)),
        &title,
        &values,
        &Errors::new(),
        &choices,
    ))
}

/// Puts a refusal next to the field it is about, if the form shows it.
fn place_error(errors: &mut Errors, kind: Kind, refusal: EditRefusal) {
    let field = match &refusal {
        EditRefusal::Refused {
            field: Some(field), ..
        } if kind.field(field).is_some() => field.clone(),
        _ => String::new(),
    };
    errors.insert(field, refusal.to_string());
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    Path(kind): Path<String>,
    Post(session, posted): Post<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let kind = kind_of(&kind)?;
    let user = session.user.clone();
    let zone = session.zone.clone();
    let (outcome, choices) = blocking(&state, move |relay| {
        let mut posted = posted;
        let picked = names::resolve_pickers(relay, &user, kind, &mut posted)?;
        let config = relay.configuration()?;
        let (fields, mut errors) = form::parse(kind, &posted, &config, true, &zone);
        errors.extend(picked);
        let outcome = if errors.is_empty() {
            Ok(office::try_edit(
                relay,
                &user,
                Edit::Create { kind, fields },
            )?)
        } else {
            Err((errors, posted))
        };
        Ok((outcome, choices(relay, &user)?))
    })
    .await?;
    let (mut errors, posted) = match outcome {
        Ok(Ok(record)) => {
            log_advanced(&state).await;
            return Ok(Redirect::to(&format!("/r/{}", record.id)).into_response());
        }
        Ok(Err(reason)) => {
            let mut errors = Errors::new();
            place_error(&mut errors, kind, reason);
            (errors, None)
        }
        Err((errors, posted)) => (errors, Some(posted)),
    };
    if errors.is_empty() {
        errors.insert(String::new(), "the record could not be saved".into());
    }
    let values = posted
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k != "_csrf")
        .collect();
    let title = format!("New {}", kind.as_str());
    let markup = form_page(
        &session,
        kind,
        &format!("/{}", kind_path(kind)),
        &title,
        &values,
        &errors,
        &choices,
    );
    Ok((StatusCode::UNPROCESSABLE_ENTITY, markup).into_response())
}

pub async fn edit_form(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Markup, PageError> {
    let user = session.user.clone();
    let zone = session.zone.clone();
    let (record, choices, values) = blocking(&state, move |relay| {
        let record = office::record(relay, &user, &id)?.record;
        let choices = choices(relay, &user)?;
        let mut values = form::form_values(record.kind, &record.fields, &choices.config, &zone);
        names::fill_picker_names(relay, &user, record.kind, &mut values)?;
        Ok((record, choices, values))
    })
    .await?;
    let title = format!("Edit {}", record.display_name());
    Ok(form_page(
        &session,
        record.kind,
        &format!("/r/{}", record.id),
        &title,
        &values,
        &Errors::new(),
        &choices,
    ))
}

/// Only the fields whose value differs: saving a form must not resolve a
/// conflict on a field nobody touched.
fn changed(record: &Record, fields: Fields) -> Fields {
    fields
        .into_iter()
        .filter(|(path, value)| record.get(path).unwrap_or(&Value::Null) != value)
        .collect()
}

pub async fn update(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Post(session, posted): Post<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let user = session.user.clone();
    let zone = session.zone.clone();
    let record_id = id.clone();
    let (outcome, kind, choices) = blocking(&state, move |relay| {
        let record = office::record(relay, &user, &id)?.record;
        let mut posted = posted;
        let picked = names::resolve_pickers(relay, &user, record.kind, &mut posted)?;
        let config = relay.configuration()?;
        let (fields, mut errors) = form::parse(record.kind, &posted, &config, false, &zone);
        errors.extend(picked);
        let fields = changed(&record, fields);
        let outcome = if !errors.is_empty() {
            Err((errors, posted))
        } else if fields.is_empty() {
            Ok(Ok(record.clone()))
        } else {
            let update = Edit::Update {
                id: id.clone(),
                fields,
            };
            Ok(office::try_edit(relay, &user, update)?)
        };
        Ok((outcome, record.kind, choices(relay, &user)?))
    })
    .await?;
    let (mut errors, posted) = match outcome {
        Ok(Ok(_)) => {
            log_advanced(&state).await;
            return Ok(Redirect::to(&format!("/r/{record_id}")).into_response());
        }
        Ok(Err(reason)) => {
            let mut errors = Errors::new();
            place_error(&mut errors, kind, reason);
            (errors, Vec::new())
        }
        Err((errors, posted)) => (errors, posted),
    };
    if errors.is_empty() {
        errors.insert(String::new(), "the record could not be saved".into());
    }
    let values = posted.into_iter().filter(|(k, _)| k != "_csrf").collect();
    let markup = form_page(
        &session,
        kind,
        &format!("/r/{record_id}"),
        "Edit",
        &values,
        &errors,
        &choices,
    );
    Ok((StatusCode::UNPROCESSABLE_ENTITY, markup).into_response())
}

pub(super) async fn simple_edit(
    state: Arc<AppState>,
    session: Session,
    edit: Edit,
    back: String,
) -> Result<Response, PageError> {
    let user = session.user.clone();
    blocking(&state, move |relay| office::edit_one(relay, &user, edit)).await?;
    log_advanced(&state).await;
    Ok(Redirect::to(&back).into_response())
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Post(session, _): Post<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let back = format!("/r/{id}");
    simple_edit(state, session, Edit::Delete { id }, back).await
}

pub async fn restore(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Post(session, _): Post<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let back = format!("/r/{id}");
    simple_edit(state, session, Edit::Restore { id }, back).await
}

#[derive(Debug, Deserialize)]
pub struct Resolve {
    field: String,
    /// The chosen value as JSON.
    value: String,
}

/// Keeps one of a conflict's competing values (writing it supersedes all).
pub async fn resolve(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Post(session, form): Post<Resolve>,
) -> Result<Response, PageError> {
    let value: Value = serde_json::from_str(&form.value).map_err(|e| {
        PageError::bad_request(format!("unreadable value for {:?}: {e}", form.field))
    })?;
    let back = format!("/r/{id}");
    let edit = Edit::Update {
        id,
        fields: fieldcrm_core::fields([(form.field, value)]),
    };
    simple_edit(state, session, edit, back).await
}

pub async fn show(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Markup, PageError> {
    let user = session.user.clone();
    let (detail, related, names, config, merged_from, products) = blocking(&state, move |relay| {
        let detail = office::record(relay, &user, &id)?;
        let related = office::related(relay, &user, &detail.record)?;
        let merged_from = match fieldcrm_core::merge::MERGEABLE.contains(&detail.record.kind) {
            true => office::merged_from(relay, &user, &id)?,
            false => Vec::new(),
        };
        let kind = detail.record.kind;
        // Every id the page shows: fields, history (old and new) and conflicts.
        let shown = detail
            .record
            .fields
            .iter()
            .map(|(path, value)| (path.as_str(), value))
            .chain(detail.history.iter().flat_map(|entry| {
                entry.fields.iter().flat_map(|change| {
                    [
                        (change.field.as_str(), &change.old),
                        (change.field.as_str(), &change.new),
                    ]
                })
            }))
            .chain(
                detail
                    .conflicts
                    .iter()
                    .flat_map(|c| c.values.iter().map(move |v| (c.field.as_str(), &v.value))),
            )
            .map(|(path, value)| (kind, path, value))
            .chain(
                related
                    .activities
                    .iter()
                    .filter_map(|a| a.get("related_to"))
                    .map(|v| (Kind::Activity, "related_to", v)),
            );
        let names = Names::of(relay, &user, shown)?;
        let products = match detail.record.kind {
            Kind::Order => super::orders::products_of(relay, &user, &detail.record)?,
            _ => Default::default(),
        };
        Ok((
            detail,
            related,
            names,
            relay.configuration()?,
            merged_from,
            products,
        ))
    })
    .await?;
    let RecordDetail {
        record,
        history,
        devices,
        received,
        conflicts,
    } = &detail;
    let kind = record.kind;
    // The device's time, and the relay's when the device's clock was off.
    let when = |entry: &fieldcrm_core::HistoryEntry| -> Markup {
        let made = session.zone.time(entry.time);
        match received.get(&entry.change) {
            Some(&at) if (at - entry.time).abs() > CLOCK_SLACK_MS => html! {
                (made) br; span.muted.received { "received " (session.zone.time(at)) " (the device's clock was " (clock_off(entry.time - at)) ")" }
            },
            _ => html! { (made) },
        }
    };
    let device = |change: &str, actor: &str| -> String {
        match devices.get(change) {
            Some(d) if d == office::WEB_DEVICE => "web".into(),
            // Device ids are UUIDv7: the leading digits are a timestamp
            // that devices made the same day share; the tail tells them apart.
            // (Characters, not bytes: a device names itself.)
            Some(d) => {
                let skip = d.chars().count().saturating_sub(8);
                format!("…{}", d.chars().skip(skip).collect::<String>())
            }
            None => format!("actor {}", actor.chars().take(8).collect::<String>()),
        }
    };
    let conflicted: Vec<&str> = conflicts.iter().map(|c| c.field.as_str()).collect();
    let custom: Vec<(&String, &Value)> = record
        .fields
        .iter()
        .filter(|(k, _)| k.starts_with("custom."))
        .collect();
    let title = match record.display_name() {
        name if name.is_empty() => format!("({})", kind.as_str()),
        name => name,
    };
    let body = html! {
        p.kind { (kind.as_str()) " · created " (session.zone.time(record.created_at)) " by " (record.created_by) " · last change " (session.zone.time(record.updated_at)) }
        (super::merge::banner(&session, record, &merged_from, &names))
        @if kind == Kind::Config {
            div.actions { a.button href="/admin/configuration" { "Change it on the configuration page" } }
        } @else if fieldcrm_core::merge::merged_into(record).is_some() {
        } @else if record.deleted {
            div.banner role="status" { "This " (kind.as_str()) " is deleted. " (layout::button_form(&session, &format!("/r/{}/restore", record.id), "Restore", "")) }
        } @else {
            div.actions {
                a.button href=(format!("/r/{}/edit", record.id)) { "Edit" }
                (layout::button_form(&session, &format!("/r/{}/delete", record.id), "Delete", "danger"))
                @if kind != Kind::Activity {
                    a href=(layout::href("/activities/new", &[("related_to", &record.id), ("territory", record.text("territory").unwrap_or(""))])) { "Log activity" }
                }
                @if fieldcrm_core::merge::MERGEABLE.contains(&kind) && super::merge::may_merge(&session) {
                    a href=(format!("/r/{}/merge", record.id)) { "Merge a duplicate into this" }
                }
            }
            @if kind == Kind::Lead && record.text("status") != Some("converted") {
                (super::convert::form(&session, record))
            }
        }
        @if kind == Kind::Order {
            (super::orders::section(&session, record, &products))
        }
        @if kind != Kind::Config {
            (super::attachments::section(&session, record))
        }
        @if !conflicts.is_empty() {
            section.conflicts aria-labelledby="conflicts-h" {
                h2 id="conflicts-h" { "Conflicts" }
                p { "These fields were changed at the same time on different devices. The first value is shown now; pick the one to keep." }
                @for c in conflicts {
                    div.conflict data-field=(c.field) {
                        h3 { (field_label(&c.field)) }
                        ul { @for v in &c.values {
                            li {
                                strong { (names.value(kind, &c.field, &v.value, &session.zone)) }
                                " — " (v.user) ", " (session.zone.time(v.time)) ", from "
                                @match history.iter().find(|e| e.actor == v.actor) {
                                    Some(e) => span title=(v.actor) { (device(&e.change, &e.actor)) },
                                    None => span title=(v.actor) { "an unknown device" },
                                }
                                form.inline method="post" action=(format!("/r/{}/resolve", record.id)) {
                                    (layout::csrf(&session))
                                    input type="hidden" name="field" value=(c.field);
                                    input type="hidden" name="value" value=(serde_json::to_string(&v.value).unwrap_or_default());
                                    button type="submit" { "Keep this" }
                                }
                            }
                        } }
                    }
                }
            }
        }
        section aria-labelledby="fields-h" {
            h2 id="fields-h" { "Fields" }
            dl.fields {
                @for spec in kind.fields().iter().filter(|s| !s.path.starts_with("merged_")) {
                    @if let Some(v) = record.get(spec.path).filter(|v| !v.is_null()) {
                        dt { (field_label(spec.path)) @if conflicted.contains(&spec.path) { " " span.badge.warn { "conflict" } } }
                        dd data-field=(spec.path) {
                            @match spec.ty {
                                fieldcrm_core::FieldType::Ref(_) => (names.value(kind, spec.path, v, &session.zone)),
                                fieldcrm_core::FieldType::Amount => (layout::money(record)),
                                fieldcrm_core::FieldType::LongText => div.longtext { (layout::value(kind, spec.path, v, &session.zone)) },
                                _ => (layout::value(kind, spec.path, v, &session.zone)),
                            }
                        }
                    }
                }
                @for (k, v) in &custom {
                    @let name = k.trim_start_matches("custom.");
                    @let def = config.custom_field(kind, name);
                    dt { (def.map_or(name, |d| d.entry.label.as_str())) @if conflicted.contains(&k.as_str()) { " " span.badge.warn { "conflict" } } }
                    dd data-field=(k) {
                        // A picklist value by its label.
                        @match (def.and_then(|d| d.entry.picklist.as_deref()), v.as_str()) {
                            (Some(list), Some(value)) => (config.picklist(list).iter().find(|p| p.value == value).map_or(value, |p| p.label.as_str())),
                            _ => (layout::value(kind, k, v, &session.zone)),
                        }
                    }
                }
                @if kind == Kind::Config {
                    @for (k, v) in record.fields.iter().filter(|(k, _)| k.contains('.')) {
                        dt { code { (k) } @if conflicted.contains(&k.as_str()) { " " span.badge.warn { "conflict" } } }
                        dd data-field=(k) { code { (v.as_str().unwrap_or_default()) } }
                    }
                }
            }
        }
        @if let Some(account) = &related.account { section { h2 { "Account" } p { (record_link(account)) } } }
        @if let Some(subject) = &related.subject { section { h2 { "About" } p { (record_link(subject)) " (" (subject.kind.as_str()) ")" } } }
        @if !related.contacts.is_empty() {
            section { h2 { "Contacts" } ul { @for c in &related.contacts { li { (record_link(c)) " " (c.text("email").unwrap_or("")) } } } }
        }
        @if !related.deals.is_empty() {
            section { h2 { "Deals" } ul { @for d in &related.deals { li { (record_link(d)) " · " (d.text("stage").unwrap_or("")) " · " (layout::money(d)) } } } }
        }
        @if kind != Kind::Config { (timeline::section(&session, record, &related.activities, &names)) }
        section aria-labelledby="history-h" {
            h2 id="history-h" { "Field history" }
            table.history {
                thead { tr { th { "When" } th { "Who" } th { "Device" } th { "Field" } th { "Old" } th { "New" } } }
                tbody {
                    @for entry in history.iter().rev() {
                        @for change in &entry.fields {
                            tr {
                                td { (when(entry)) }
                                td { (entry.user) }
                                td title=(entry.actor) { (device(&entry.change, &entry.actor)) }
                                td { (field_label(&change.field)) }
                                td.old { (names.value(kind, &change.field, &change.old, &session.zone)) }
                                td.new { (names.value(kind, &change.field, &change.new, &session.zone)) }
                            }
                        }
                        @if entry.fields.is_empty() {
                            // A change that leaves every value as shown: keeping the
                            // displayed side of a conflict, or writing a value again.
                            tr.quiet {
                                td { (when(entry)) }
                                td { (entry.user) }
                                td title=(entry.actor) { (device(&entry.change, &entry.actor)) }
                                td colspan="3" { "no visible value changed (a conflict resolved by keeping the value shown, or a value written again)" }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&session, &title, Nav::List(kind), body))
}
