//! CSV export of any list (streamed a page at a time, with a byte-order
//! mark and formula-like cells neutralised) and CSV import of accounts and
//! contacts: upload, map columns to fields, import, and a report of every
//! rejected row with its reason.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use fieldcrm_core::{Edit, Fields, Kind, ListQuery, Record, Value};
use maud::{html, Markup};
use serde::Deserialize;

use super::form::typed_value;
use super::layout::{self, field_label, kind_path, page, Nav};
use super::names::{self, Names};
use super::records::{find, now_ms, ListParams};
use super::session::{check_csrf_value, Post};
use super::zone::Zone;
use super::{blocking, log_advanced, PageError, Session};
use crate::relay::{office, RelayStore, User};
use crate::AppState;

/// Rows per export page and per import batch.
const BATCH: usize = 500;
/// Mapping target that finds the record a row refers to by its name (a
/// contact's account, a price's product: [`by_name_field`]).
const BY_NAME: &str = "by_name";

/// The column beside a reference's id that holds its record's name
/// (`account_id` → `account_name`).
fn name_column(path: &str) -> String {
    format!("{}_name", path.strip_suffix("_id").unwrap_or(path))
}

fn export_header(kind: Kind) -> Vec<String> {
    let mut header = vec!["id".to_string()];
    for spec in kind.fields() {
        header.push(spec.path.to_string());
        if names::is_reference(kind, spec.path) {
            header.push(name_column(spec.path));
        }
    }
    header.extend(["created_at", "updated_at", "deleted"].map(String::from));
    header
}

/// Custom fields exported at most, as columns after the model's fields.
const MAX_CUSTOM_COLUMNS: usize = 200;

/// One record as a CSV row: amounts as decimals, times as UTC ISO 8601,
/// references as the id and the referenced record's name, then the
/// `custom` columns (`custom.tier`).
fn export_row(record: &Record, names: &Names, custom: &[String]) -> Vec<String> {
    let kind = record.kind;
    let iso = |ms: i64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    };
    let mut row = vec![record.id.clone()];
    for spec in kind.fields() {
        row.push(match (record.get(spec.path), spec.ty) {
            (None | Some(Value::Null), _) => String::new(),
            (Some(Value::Int(ms)), fieldcrm_core::FieldType::Timestamp) => iso(*ms),
            (Some(Value::Int(minor)), fieldcrm_core::FieldType::Amount) => {
                layout::amount(*minor).replace(',', "")
            }
            (Some(Value::Text(s)), _) => s.clone(),
            (Some(other), _) => other.to_string(),
        });
        if names::is_reference(kind, spec.path) {
            let id = record.text(spec.path).unwrap_or("");
            row.push(names.name(id).unwrap_or_default());
        }
    }
    row.extend([
        iso(record.created_at),
        iso(record.updated_at),
        record.deleted.to_string(),
    ]);
    row.extend(custom.iter().map(|path| match record.get(path) {
        None | Some(Value::Null) => String::new(),
        Some(Value::Text(s)) => s.clone(),
        Some(other) => other.to_string(),
    }));
    row
}

/// Characters that make a spreadsheet read a cell as a formula (`=`, `+`,
/// `-`, `@`) or that some strip before doing so (tab, CR).
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// A cell a spreadsheet would run as a formula (`=HYPERLINK(...)`) gets a
/// leading `'`, which makes it text; plain numbers such as `-12.50` stay
/// numbers. Import takes the `'` off again ([`unneutralised`]).
fn neutralised(cell: String) -> String {
    let number = {
        let digits = cell.strip_prefix(['-', '+']).unwrap_or(&cell);
        !digits.is_empty()
            && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
            && digits.matches('.').count() <= 1
            && !digits.starts_with('.')
    };
    if cell.starts_with(FORMULA_STARTS) && !number {
        format!("'{cell}")
    } else {
        cell
    }
}

/// An exported cell as it was before [`neutralised`].
fn unneutralised(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(FORMULA_STARTS) => rest,
        _ => cell,
    }
}

fn csv_bytes(rows: impl IntoIterator<Item = Vec<String>>) -> Result<Vec<u8>, String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for row in rows {
        let row = row.into_iter().map(neutralised);
        writer.write_record(row).map_err(|e| e.to_string())?;
    }
    writer.into_inner().map_err(|e| e.to_string())
}

/// Spreadsheet programs read a CSV file as UTF-8 only when it starts with
/// a byte-order mark; without it "Müller — Köln" comes out garbled.
const BOM: &str = "\u{feff}";

/// Streams the list as CSV, page by page: memory stays one page whatever the size.
pub async fn export(
    State(state): State<Arc<AppState>>,
    session: Session,
    Path(kind): Path<String>,
    Query(params): Query<ListParams>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Response, PageError> {
    let params = params.with_custom(raw.as_deref());
    let kind = layout::kind_from_path(&kind)
        .ok_or_else(|| PageError::new(StatusCode::NOT_FOUND, format!("no list {kind:?}")))?;
    let mut query = params.query(kind, now_ms(), &session.zone)?;
    query.limit = BATCH;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let relay = state.relay.clone();
    let user = session.user.clone();
    tokio::task::spawn_blocking(move || {
        let send = |chunk: Result<Vec<u8>, String>| {
            tx.blocking_send(chunk.map_err(std::io::Error::other))
                .is_ok()
        };
        // Calls `each` with every page of the list and its names, until it
        // says stop; an error goes to the download.
        let pages = |each: &mut dyn FnMut(&[Record], &Names) -> bool| {
            let mut offset = 0;
            loop {
                let q = ListQuery {
                    offset,
                    ..query.clone()
                };
                let found = find(&*relay, &user, &params, q).and_then(|(records, _)| {
                    let names = Names::of_records(&*relay, &user, &records)?;
                    Ok((records, names))
                });
                let (records, names) = match found {
                    Ok(found) => found,
                    Err(e) => {
                        send(Err(e.to_string()));
                        return false;
                    }
                };
                if records.is_empty() || !each(&records, &names) {
                    return true;
                }
                if records.len() < BATCH {
                    return true;
                }
                offset += records.len();
            }
        };
        // Custom fields differ per record: a first pass finds the columns.
        let mut custom = std::collections::BTreeSet::new();
        let listed = pages(&mut |records, _| {
            for record in records {
                for path in record.fields.keys() {
                    if path.starts_with(fieldcrm_core::CUSTOM_PREFIX)
                        && custom.len() < MAX_CUSTOM_COLUMNS
                    {
                        custom.insert(path.clone());
                    }
                }
            }
            true
        });
        if !listed {
            return;
        }
        let custom: Vec<String> = custom.into_iter().collect();
        let mut header = export_header(kind);
        header.extend(custom.iter().cloned());
        let header = csv_bytes([header]).map(|bytes| [BOM.as_bytes(), &bytes].concat());
        if !send(header) {
            return;
        }
        pages(&mut |records, names| {
            send(csv_bytes(
                records.iter().map(|r| export_row(r, names, &custom)),
            ))
        });
    });
    let filename = format!("fieldcrm-{}.csv", kind_path(kind));
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response())
}

fn import_kinds() -> [Kind; 9] {
    Kind::ALL
}

/// The field a column given as another record's name fills, and that
/// record's kind: a contact's or deal's account, what an activity is
/// about, a price's product (by name or SKU).
fn by_name_field(kind: Kind) -> Option<(&'static str, Kind)> {
    match kind {
        Kind::Contact | Kind::Deal | Kind::Case | Kind::Order => {
            Some(("account_id", Kind::Account))
        }
        Kind::Activity => Some(("related_to", Kind::Account)),
        Kind::Price => Some(("product_id", Kind::Product)),
        Kind::Account | Kind::Lead | Kind::Config | Kind::Product => None,
    }
}

/// How the mapping page names a by-name column.
fn by_name_label(field: &str, parent: Kind) -> String {
    match parent {
        Kind::Product => format!("{} (a product's name or SKU)", field_label(field)),
        _ => format!("{} (an account's name)", field_label(field)),
    }
}

pub async fn import_page(session: Session) -> Markup {
    let body = html! {
        p { "Import records of any kind — accounts, contacts, deals, activities, the product catalogue and its prices, … — from a CSV file with a header row (as a spreadsheet saves it). Next you choose which column goes to which field; common column names (City, Country, Job title, Company, E-mail, Product, SKU, …) are recognised." }
        form.record method="post" action="/import" enctype="multipart/form-data" {
            (layout::csrf(&session))
            div.field { label for="kind" { "Records" }
                select id="kind" name="kind" { @for k in import_kinds() { option value=(k.as_str()) { (layout::kind_title(k)) } } } }
            div.field { label for="file" { "CSV file" } input id="file" type="file" name="file" accept=".csv,text/csv" required; }
            div.actions { button type="submit" { "Next: map columns" } }
        }
    };
    page(&session, "Import", Nav::Import, body)
}

fn parse_kind(raw: &str) -> Result<Kind, PageError> {
    raw.parse::<Kind>()
        .ok()
        .filter(|k| import_kinds().contains(k))
        .ok_or_else(|| {
            PageError::bad_request(format!(
                "cannot import “{raw}”: choose one of the kinds of record listed"
            ))
        })
}

/// A file's header, its first rows and how many rows it has.
struct Preview {
    header: Vec<String>,
    samples: Vec<Vec<String>>,
    rows: usize,
}

/// Reads the header and a few rows; refuses what is not CSV.
fn preview(text: &str) -> Result<Preview, PageError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| PageError::bad_request(format!("not a readable CSV file: {e}")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if header.iter().all(String::is_empty) {
        return Err(PageError::bad_request("the CSV file has no header row"));
    }
    let mut samples = Vec::new();
    let mut rows = 0;
    for row in reader.records() {
        let row =
            row.map_err(|e| PageError::bad_request(format!("not a readable CSV file: {e}")))?;
        if samples.len() < 3 {
            samples.push(row.iter().map(String::from).collect());
        }
        rows += 1;
    }
    Ok(Preview {
        header,
        samples,
        rows,
    })
}

/// Column names spreadsheets and other CRMs use for a field (compared
/// without case, spaces or punctuation). A field's own name and label match
/// first; a synonym applies only to kinds that have the field.
const SYNONYMS: &[(&str, &[&str])] = &[
    ("address.city", &["city", "town"]),
    ("address.country", &["country"]),
    (
        "address.postcode",
        &["postcode", "postalcode", "zip", "zipcode"],
    ),
    ("address.street", &["street", "address", "streetaddress"]),
    ("title", &["jobtitle", "position"]),
    ("email", &["emailaddress", "mail"]),
    ("phone", &["phonenumber", "telephone", "tel", "mobile"]),
    ("website", &["web", "url", "homepage"]),
    ("first_name", &["givenname", "forename"]),
    ("last_name", &["surname", "familyname"]),
    ("industry", &["sector"]),
    ("amount", &["value", "dealvalue"]),
    ("close_date", &["expectedclose", "closingdate"]),
    ("subject", &["title", "summary"]),
    ("due_at", &["due", "duedate", "date"]),
    ("kind", &["type", "activitytype"]),
    ("notes", &["description", "comments", "comment"]),
    ("body", &["notes", "description", "details"]),
    ("owner", &["assignedto"]),
];

/// Headers that name an account: the account's own name on an account,
/// the account a contact or deal belongs to, what an activity is about.
const ACCOUNT_NAMES: &[&str] = &[
    "account",
    "accountname",
    "company",
    "companyname",
    "organisation",
    "organization",
    "relatedto",
];

/// Headers that name a price's product.
const PRODUCT_NAMES: &[&str] = &["product", "productname", "sku", "item", "article"];

fn norm(s: &str) -> String {
    s.to_lowercase()
        .replace([' ', '-', '.', '_', '/', '(', ')'], "")
}

/// A column of custom field values, as exports write them: `custom.tier`.
fn custom_column(header: &str) -> Option<&str> {
    let name = header.strip_prefix(fieldcrm_core::CUSTOM_PREFIX)?;
    fieldcrm_core::validate_custom_name(name).ok().map(|_| name)
}

/// The field a column header most likely means ("First name" → first_name,
/// "City" → address.city, "Company" → the account by name).
fn guess(kind: Kind, header: &str) -> String {
    let h = norm(header);
    let has = |path: &str| kind.field(path).is_some();
    // "Account" on a contact is its account's name, not a raw id column.
    if ACCOUNT_NAMES.contains(&h.as_str()) {
        return match kind {
            Kind::Account => "name".into(),
            _ => BY_NAME.into(),
        };
    }
    if kind == Kind::Price && PRODUCT_NAMES.contains(&h.as_str()) {
        return BY_NAME.into();
    }
    if let Some(exact) = kind
        .fields()
        .iter()
        .map(|s| s.path)
        .find(|p| norm(p) == h || norm(&field_label(p)) == h)
    {
        return exact.to_string();
    }
    if custom_column(header).is_some() {
        return header.to_string();
    }
    if kind == Kind::Deal && ["dealname", "opportunity", "opportunityname"].contains(&h.as_str()) {
        return "name".into();
    }
    SYNONYMS
        .iter()
        .find(|(path, names)| has(path) && names.contains(&h.as_str()))
        .map(|(path, _)| path.to_string())
        .unwrap_or_default()
}

/// Step 2: the column mapping, with the file carried along.
pub async fn import_preview(
    State(state): State<Arc<AppState>>,
    session: Session,
    mut multipart: Multipart,
) -> Result<Response, PageError> {
    let (mut csrf, mut kind, mut text) = (String::new(), String::new(), None);
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| PageError::bad_request(format!("unreadable upload: {e}")))?
    {
        let name = field.name().unwrap_or("").to_string();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| PageError::bad_request(format!("unreadable upload: {e}")))?;
        let as_text = || {
            String::from_utf8(bytes.to_vec()).map_err(|e| {
                PageError::bad_request(format!(
                    "the file is not UTF-8 text (byte {})",
                    e.utf8_error().valid_up_to()
                ))
            })
        };
        match name.as_str() {
            "_csrf" => csrf = as_text()?,
            "kind" => kind = as_text()?,
            // Spreadsheets save UTF-8 CSV with a byte-order mark.
            "file" => text = Some(as_text()?.trim_start_matches('\u{feff}').to_string()),
            _ => {}
        }
    }
    check_csrf_value(&session, &csrf)?;
    let kind = parse_kind(&kind)?;
    let text = text.ok_or_else(|| PageError::bad_request("choose a CSV file to import"))?;
    let Preview {
        header,
        samples,
        rows,
    } = preview(&text)?;
    let mut targets: Vec<(String, String)> = vec![(String::new(), "— skip —".into())];
    if let Some((field, parent)) = by_name_field(kind) {
        targets.push((BY_NAME.into(), by_name_label(field, parent)));
    }
    targets.extend(
        kind.fields()
            .iter()
            .map(|s| (s.path.to_string(), field_label(s.path))),
    );
    let user = session.user.clone();
    let choices = blocking(&state, move |relay| super::records::choices(relay, &user)).await?;
    let (territories, config) = (choices.territories, choices.config);
    // The custom fields the configuration defines, then ad-hoc columns.
    let defined: Vec<(String, String)> = config
        .custom_fields_of(kind)
        .filter(|f| !f.entry.retired)
        .map(|f| (f.path(), format!("{} (custom)", f.entry.label)))
        .collect();
    targets.extend(defined.iter().cloned());
    targets.extend(header.iter().filter_map(|h| {
        let name = custom_column(h)?;
        let defined = defined.iter().any(|(p, _)| p == h);
        (!defined).then(|| (h.clone(), format!("Custom field {name}")))
    }));
    // A column named as a defined field's label fills it.
    let guess = |kind: Kind, h: &str| match guess(kind, h) {
        found if !found.is_empty() => found,
        _ => defined
            .iter()
            .find(|(_, label)| norm(label.trim_end_matches(" (custom)")) == norm(h))
            .map(|(path, _)| path.clone())
            .unwrap_or_default(),
    };
    let body = html! {
        p { (rows) " rows. Choose the field each column fills; columns left on “skip” are not imported. Owner defaults to you." }
        form.record method="post" action="/import/run" {
            (layout::csrf(&session))
            input type="hidden" name="kind" value=(kind.as_str());
            textarea hidden name="csv" { (text) }
            table.mapping {
                thead { tr { th { "Column" } th { "Examples" } th { "Field" } } }
                tbody { @for (i, h) in header.iter().enumerate() {
                    @let chosen = guess(kind, h);
                    tr {
                        td { (h) }
                        td.muted { (samples.iter().filter_map(|r| r.get(i)).cloned().collect::<Vec<_>>().join(" · ")) }
                        td { select name=(format!("map_{i}")) aria-label=(format!("Field for column {h}")) {
                            @for (value, label) in &targets { option value=(value) selected[*value == chosen] { (label) } }
                        } }
                    }
                } }
            }
            div.field { label for="default_territory" { "Territory for rows that name none" }
                select id="default_territory" name="default_territory" {
                    @if territories.len() != 1 { option value="" { "— none: such rows are rejected —" } }
                    @for t in &territories { option value=(t) { (t) } }
                }
            }
            @if kind != Kind::Activity {
                label.check { input type="checkbox" name="skip_duplicates" value="true" checked; (duplicate_rule(kind)) }
            }
            div.actions { button type="submit" { "Import" } }
        }
    };
    Ok(page(
        &session,
        &format!("Import {}", layout::kind_title(kind).to_lowercase()),
        Nav::Import,
        body,
    )
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct ImportForm {
    kind: String,
    csv: String,
    #[serde(default)]
    default_territory: String,
    #[serde(default)]
    skip_duplicates: Option<String>,
    #[serde(flatten)]
    mapping: HashMap<String, String>,
}

/// What a row looks like a duplicate of.
enum Like {
    /// A record the user has: its id and name.
    Existing(String, String),
    /// An earlier line of the file.
    Row(usize),
}

struct Duplicate {
    line: usize,
    like: Like,
    skipped: bool,
}

/// What a row is like: a record the user has (a link), or an earlier line.
fn like_cell(like: &Like) -> Markup {
    html! {
        @match like {
            Like::Existing(id, name) => { "“" a href=(format!("/r/{id}")) { (name) } "”, which you have" },
            Like::Row(first) => { "line " (first) " of this file" },
        }
    }
}

/// A row that looks like another record or row without being the same by
/// key: imported, with the evidence.
struct Similar {
    line: usize,
    like: Like,
    why: String,
}

fn duplicate_rule(kind: Kind) -> &'static str {
    match kind {
        Kind::Account => "Skip rows with the name of an account you have, or of an earlier row",
        Kind::Contact => "Skip rows with the email of a contact you have, or of an earlier row (without an email: the same name at the same account)",
        Kind::Deal => "Skip rows with the name of a deal you have at the same account, or of an earlier row",
        Kind::Lead => "Skip rows with the email of a lead you have, or of an earlier row (without an email: the same name at the same company)",
        Kind::Product => "Skip rows with the SKU of a product you have, or of an earlier row",
        Kind::Price => "Skip rows with the product, currency and start of a price you have, or of an earlier row",
        Kind::Activity | Kind::Case | Kind::Config | Kind::Order => "",
    }
}

/// What makes two records of `kind` the same one for an import: an
/// account's name; a contact's email (else name and account); a deal's
/// name and account. Activities have none.
fn duplicate_key(kind: Kind, fields: &Fields) -> Option<String> {
    let text = |path: &str| {
        fields
            .get(path)
            .and_then(Value::as_str)
            .map(|s| s.trim().to_lowercase())
            .filter(|s| !s.is_empty())
    };
    let with_account = |name: Option<String>| {
        name.map(|n| format!("{n}\u{0}{}", text("account_id").unwrap_or_default()))
    };
    match kind {
        Kind::Account => text("name"),
        Kind::Contact => text("email").map(|e| format!("@{e}")).or_else(|| {
            let name = format!(
                "{} {}",
                text("first_name").unwrap_or_default(),
                text("last_name").unwrap_or_default()
            );
            with_account(Some(name.trim().to_string()).filter(|n| !n.is_empty()))
        }),
        Kind::Deal => with_account(text("name")),
        Kind::Lead => text("email").map(|e| format!("@{e}")).or_else(|| {
            text("name").map(|n| format!("{n}\u{0}{}", text("company").unwrap_or_default()))
        }),
        Kind::Product => text("sku"),
        Kind::Price => text("product_id").map(|p| {
            format!(
                "{p}\u{0}{}\u{0}{}",
                text("currency").unwrap_or_default(),
                text("valid_from").unwrap_or_default()
            )
        }),
        Kind::Activity | Kind::Case | Kind::Config | Kind::Order => None,
    }
}

/// The records of `kind` in the user's view by duplicate key, read a page
/// at a time (only the keys are kept).
/// What an import compares its rows with: the records of the kind the
/// user has, by exact key (skipped when asked) and by likeness (core
/// duplicate rules: similar names, the same email or phone), with their
/// names. Only keys, match signatures and names are kept, not records.
struct Existing {
    keys: HashMap<String, (String, String)>,
    likeness: fieldcrm_core::duplicates::PairFinder,
    names: HashMap<String, String>,
}

fn existing(relay: &dyn RelayStore, user: &User, kind: Kind) -> crate::relay::Result<Existing> {
    let mut existing = Existing {
        keys: HashMap::new(),
        likeness: fieldcrm_core::duplicates::PairFinder::new(Default::default()),
        names: HashMap::new(),
    };
    let alike = fieldcrm_core::duplicates::has_rules(kind);
    if kind == Kind::Activity {
        return Ok(existing);
    }
    let mut offset = 0;
    loop {
        let q = ListQuery {
            kind: Some(kind),
            limit: 1000,
            offset,
            ..Default::default()
        };
        let page = office::list(relay, user, q)?;
        let n = page.records.len();
        for r in page.records {
            if let Some(key) = duplicate_key(kind, &r.fields) {
                existing
                    .keys
                    .entry(key)
                    .or_insert((r.id.clone(), r.display_name()));
            }
            if alike {
                existing.likeness.add(&r);
                existing.names.insert(r.id.clone(), r.display_name());
            }
        }
        if n < 1000 {
            return Ok(existing);
        }
        offset += n;
    }
}

/// The id a row stands under among the records it is compared with.
fn row_id(line: usize) -> String {
    format!("line:{line}")
}

/// Records of `parent` in the user's view by lower-case name (and a
/// product's by its SKU too), for a by-name column.
fn named(
    relay: &dyn RelayStore,
    user: &User,
    parent: Kind,
) -> crate::relay::Result<HashMap<String, Vec<String>>> {
    let mut names: HashMap<String, Vec<String>> = HashMap::new();
    let mut offset = 0;
    loop {
        let page = office::list(
            relay,
            user,
            ListQuery {
                kind: Some(parent),
                limit: 1000,
                offset,
                ..Default::default()
            },
        )?;
        let n = page.records.len();
        for r in page.records {
            let sku = r.text("sku").filter(|_| parent == Kind::Product);
            if let Some(sku) = sku.map(str::to_lowercase) {
                names.entry(sku).or_default().push(r.id.clone());
            }
            let entry = names.entry(r.display_name().to_lowercase()).or_default();
            if !entry.contains(&r.id) {
                entry.push(r.id);
            }
        }
        if n < 1000 {
            return Ok(names);
        }
        offset += n;
    }
}

/// One CSV row as fields, or why it cannot be.
fn row_fields(
    kind: Kind,
    columns: &[(usize, String)],
    row: &csv::StringRecord,
    named: &HashMap<String, Vec<String>>,
    default_territory: Option<&str>,
    config: &fieldcrm_core::Config,
    zone: &Zone,
) -> Result<Fields, String> {
    let mut fields = Fields::new();
    for (i, target) in columns {
        let raw = unneutralised(row.get(*i).unwrap_or("").trim()).trim();
        if raw.is_empty() {
            continue;
        }
        if target == BY_NAME {
            let Some((field, parent)) = by_name_field(kind) else {
                return Err(format!("{} refer to no record by name", kind.plural()));
            };
            let id = match named.get(&raw.to_lowercase()).map(Vec::as_slice) {
                Some([one]) => one.clone(),
                Some([]) | None => return Err(format!("no {parent} named {raw:?}")),
                Some(many) => {
                    return Err(format!(
                        "{} {} are named {raw:?}; use {parent} ids",
                        many.len(),
                        parent.plural()
                    ))
                }
            };
            fields.insert(field.into(), Value::Text(id));
            continue;
        }
        if let Some(name) = custom_column(target) {
            // A defined field's text as its type; an ad-hoc one's as text.
            let value = match config.custom_field(kind, name) {
                Some(def) => typed_value(def.field_type(), raw, zone)
                    .map_err(|e| format!("{}: {e}", def.entry.label))?,
                None => Value::Text(raw.to_string()),
            };
            fields.insert(target.clone(), value);
            continue;
        }
        let spec = kind
            .field(target)
            .ok_or_else(|| format!("unknown field {target:?}"))?;
        let value =
            typed_value(spec.ty, raw, zone).map_err(|e| format!("{}: {e}", field_label(target)))?;
        fields.insert(target.clone(), value);
    }
    if let Some(t) = default_territory {
        fields
            .entry("territory".into())
            .or_insert_with(|| Value::from(t));
    }
    Ok(fields)
}

/// Step 3: import and report.
pub async fn import_run(
    State(state): State<Arc<AppState>>,
    Post(session, form): Post<ImportForm>,
) -> Result<Response, PageError> {
    let kind = parse_kind(&form.kind)?;
    let mut columns: Vec<(usize, String)> = form
        .mapping
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("map_")?.parse().ok()?, v.clone())))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    columns.sort();
    if columns.is_empty() {
        return Err(PageError::bad_request("map at least one column to a field"));
    }
    let user = session.user.clone();
    let zone = session.zone.clone();
    let (imported, rejected, duplicates, similar) = blocking(&state, move |relay| {
        let named = match by_name_field(kind) {
            Some((_, parent)) => named(relay, &user, parent)?,
            None => HashMap::new(),
        };
        let default_territory = match crate::relay::access::record_territories(&user) {
            _ if !form.default_territory.trim().is_empty() => {
                Some(form.default_territory.trim().to_string())
            }
            Some(mine) if mine.len() == 1 => mine.into_iter().next(),
            _ => None,
        };
        let skip_duplicates = form.skip_duplicates.is_some();
        let config = relay.configuration()?;
        let Existing {
            keys: existing,
            mut likeness,
            names,
        } = existing(relay, &user, kind)?;
        let mut similar: Vec<Similar> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut duplicates: Vec<Duplicate> = Vec::new();
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(form.csv.as_bytes());
        let mut imported = 0usize;
        let mut rejected: Vec<(usize, String)> = Vec::new();
        let mut batch: Vec<(usize, Edit)> = Vec::new();
        let flush = |batch: &mut Vec<(usize, Edit)>,
                     imported: &mut usize,
                     rejected: &mut Vec<(usize, String)>|
         -> crate::relay::Result<()> {
            let lines: Vec<usize> = batch.iter().map(|(line, _)| *line).collect();
            let edits = batch.drain(..).map(|(_, e)| e).collect();
            for (line, outcome) in lines.into_iter().zip(office::edit(relay, &user, edits)?) {
                match outcome {
                    Ok(_) => *imported += 1,
                    Err(reason) => rejected.push((line, reason.to_string())),
                }
            }
            Ok(())
        };
        for (index, row) in reader.records().enumerate() {
            let line = index + 2; // line 1 is the header
            let row = match row {
                Ok(row) => row,
                Err(e) => {
                    rejected.push((line, format!("unreadable row: {e}")));
                    continue;
                }
            };
            match row_fields(
                kind,
                &columns,
                &row,
                &named,
                default_territory.as_deref(),
                &config,
                &zone,
            ) {
                Ok(fields) => {
                    let key = duplicate_key(kind, &fields);
                    let like = key.as_ref().and_then(|key| match existing.get(key) {
                        Some((id, name)) => Some(Like::Existing(id.clone(), name.clone())),
                        None => seen.get(key).map(|first| Like::Row(*first)),
                    });
                    if let Some(key) = key {
                        seen.entry(key).or_insert(line);
                    }
                    let skipped = like.is_some() && skip_duplicates;
                    if like.is_none() {
                        // Not the same by key: perhaps alike (a warning only).
                        if let Some((id, why)) =
                            likeness.matches_of(kind, &fields).into_iter().next()
                        {
                            let like = match id.strip_prefix("line:") {
                                Some(n) => Like::Row(n.parse().unwrap_or_default()),
                                None => Like::Existing(
                                    id.clone(),
                                    names.get(&id).cloned().unwrap_or_default(),
                                ),
                            };
                            similar.push(Similar {
                                line,
                                like,
                                why: why.evidence.join("; "),
                            });
                        }
                        likeness.add_fields(&row_id(line), kind, &fields);
                    }
                    if let Some(like) = like {
                        duplicates.push(Duplicate {
                            line,
                            like,
                            skipped,
                        });
                    }
                    if !skipped {
                        batch.push((line, Edit::Create { kind, fields }));
                    }
                }
                Err(reason) => rejected.push((line, reason)),
            }
            if batch.len() >= BATCH {
                flush(&mut batch, &mut imported, &mut rejected)?;
            }
        }
        flush(&mut batch, &mut imported, &mut rejected)?;
        rejected.sort();
        Ok((imported, rejected, duplicates, similar))
    })
    .await?;
    if imported > 0 {
        log_advanced(&state).await;
    }
    let title = layout::kind_title(kind);
    let body = html! {
        p.summary { strong.imported { (imported) } " " (title.to_lowercase()) " imported, " strong.rejected { (rejected.len()) } " rows rejected, " strong.skipped { (duplicates.iter().filter(|d| d.skipped).count()) } " skipped as duplicates." }
        @if !duplicates.is_empty() {
            h2 { "Rows that look like records you have" }
            table.duplicates {
                thead { tr { th { "Line" } th { "Looks like" } th { "Done" } } }
                tbody { @for d in &duplicates { tr {
                    td { (d.line) }
                    td { (like_cell(&d.like)) }
                    td { @if d.skipped { "skipped" } @else { "imported anyway" } }
                } } }
            }
        }
        @if !similar.is_empty() {
            h2 { "Rows that may be the same as others" }
            p.muted { "These were imported: check whether they are the same as what they look like." }
            table.similar {
                thead { tr { th { "Line" } th { "May be the same as" } th { "Why" } } }
                tbody { @for s in &similar { tr {
                    td { (s.line) }
                    td { (like_cell(&s.like)) }
                    td { (s.why) }
                } } }
            }
        }
        @if !rejected.is_empty() {
            table.rejected {
                thead { tr { th { "Line" } th { "Reason" } } }
                tbody { @for (line, reason) in &rejected { tr { td { (line) } td { (reason) } } } }
            }
        }
        div.actions { a href=(format!("/{}", kind_path(kind))) { "See " (title.to_lowercase()) } " · " a href="/import" { "Import another file" } }
    };
    Ok(page(&session, "Import report", Nav::Import, body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_like_cells_become_text_and_come_back_on_import() {
        for formula in [
            "=HYPERLINK(\"http://x\")",
            "+1+2",
            "-2+3",
            "@SUM(A1)",
            "\tx",
            "\r=1",
            "+44 20 7946 0000",
        ] {
            let out = neutralised(formula.to_string());
            assert_eq!(out, format!("'{formula}"));
            assert_eq!(unneutralised(&out), formula);
        }
        for plain in ["Acme", "-12.50", "+3", "42", "'quoted", ""] {
            assert_eq!(neutralised(plain.to_string()), plain);
            assert_eq!(unneutralised(plain), plain);
        }
    }
}
