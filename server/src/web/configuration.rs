//! The organisation configuration page: the deal pipeline, the picklists,
//! the custom fields of each kind and the write rules. Admins change them; every entry is
//! written through `office::set_config_entry` (an office edit of the
//! configuration record, checked like any change) and reaches every
//! device at its next sync. Entries are retired, never removed.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use fieldcrm_core::{Config, ConfigEntry, CustomType, Kind, StageOutcome, Standing, CONFIG_ID};
use maud::{html, Markup};

use super::layout::{self, kind_title, page, Nav};
use super::session::Post;
use super::{blocking, log_advanced, PageError, Session};
use crate::config_entries as entries;
use crate::relay::{office, Role};
use crate::AppState;

/// Who may see the page (admins change it; the office may look).
fn may_view(session: &Session) -> Result<(), PageError> {
    match session.user.role {
        Role::Admin | Role::Office => Ok(()),
        _ => Err(PageError::new(
            StatusCode::FORBIDDEN,
            "Only admins and the office see the organisation configuration.",
        )),
    }
}

pub async fn page_view(
    State(state): State<Arc<AppState>>,
    session: Session,
) -> Result<Markup, PageError> {
    may_view(&session)?;
    let (config, conflicts) = blocking(&state, |relay| {
        let conflicts = match relay.record(CONFIG_ID)? {
            Some(detail) => detail.conflicts.len(),
            None => 0,
        };
        Ok((relay.configuration()?, conflicts))
    })
    .await?;
    Ok(render(&session, &config, conflicts, None))
}

fn outcome_name(o: StageOutcome) -> &'static str {
    match o {
        StageOutcome::Open => "open",
        StageOutcome::Won => "won",
        StageOutcome::Lost => "lost",
    }
}

fn standing_name(s: Standing) -> &'static str {
    match s {
        Standing::Rep => "reps",
        Standing::Manager => "managers",
        Standing::Office => "office",
        Standing::Admin => "admins",
    }
}

fn render(session: &Session, config: &Config, conflicts: usize, problem: Option<&str>) -> Markup {
    let admin = session.user.role == Role::Admin;
    let pipeline = config.pipeline();
    let toggle = |what: &str, key: &str, retired: bool| {
        html! {
            @if admin {
                form.inline method="post" action="/admin/configuration" {
                    (layout::csrf(session))
                    input type="hidden" name="action" value=(format!("retire_{what}"));
                    input type="hidden" name="key" value=(key);
                    input type="hidden" name="retired" value=(if retired { "false" } else { "true" });
                    button.link type="submit" { (if retired { "Restore" } else { "Retire" }) }
                }
            }
        }
    };
    let body = html! {
        p.muted { "Every device receives these at its next sync; validation on devices and at the relay follows them. Stages, values and fields are never removed: a retired one is offered to no-one, and records that hold it keep it." }
        @if let Some(problem) = problem { p.error role="alert" { (problem) } }
        @if conflicts > 0 {
            p.warn role="status" { "Two admins changed the same entries at once: " (conflicts) " entr" (if conflicts == 1 { "y has" } else { "ies have" }) " competing values. " a href=(format!("/r/{CONFIG_ID}")) { "Choose the one to keep" } "." }
        }
        section aria-labelledby="stages-h" {
            h2 id="stages-h" { "Deal pipeline" }
            table.config { thead { tr { th { "Stage" } th { "Outcome" } th { "Probability" } th { "Status" } th {} } }
                tbody { @for s in pipeline.stages() {
                    @let retired = pipeline.is_retired(s);
                    tr class=[retired.then_some("retired")] {
                        td { (s) } td { (outcome_name(pipeline.outcome(s))) } td { (pipeline.probability(s)) "%" }
                        td { (if retired { "retired" } else { "in use" }) }
                        td { (toggle("stage", s, retired)) }
                    }
                } }
            }
            @if admin {
                form.inline method="post" action="/admin/configuration" {
                    (layout::csrf(session))
                    input type="hidden" name="action" value="add_stage";
                    input name="name" required maxlength="64" placeholder="New stage" aria-label="New stage";
                    select name="outcome" aria-label="Outcome" { option value="open" { "open" } option value="won" { "won" } option value="lost" { "lost" } }
                    input name="probability" type="number" min="0" max="100" placeholder="Probability %" aria-label="Probability";
                    select name="after" aria-label="After stage" {
                        option value="" { "at the end" }
                        @for s in pipeline.stages() { option value=(s) { "after " (s) } }
                    }
                    " " button type="submit" { "Add stage" }
                }
            }
        }
        section aria-labelledby="picklists-h" {
            h2 id="picklists-h" { "Picklists" }
            @for (list, values) in config.picklists() {
                h3 { (list) }
                table.config { thead { tr { th { "Value" } th { "Label" } th { "Status" } th {} } }
                    tbody { @for v in values {
                        tr class=[v.retired.then_some("retired")] {
                            td { code { (v.value) } } td { (v.label) }
                            td { (if v.retired { "retired" } else { "in use" }) }
                            td { (toggle("value", &format!("{list}:{}", v.value), v.retired)) }
                        }
                    } }
                }
            }
            @if admin {
                form.inline method="post" action="/admin/configuration" {
                    (layout::csrf(session))
                    input type="hidden" name="action" value="add_value";
                    input name="list" required maxlength="64" placeholder="Picklist (e.g. tier)" aria-label="Picklist" list="picklist-names";
                    datalist id="picklist-names" { @for list in config.picklists().keys() { option value=(list) {} } }
                    input name="value" required maxlength="64" placeholder="Value (e.g. gold)" aria-label="Value";
                    input name="label" maxlength="128" placeholder="Label (e.g. Gold)" aria-label="Label";
                    " " button type="submit" { "Add value" }
                }
            }
        }
        section aria-labelledby="fields-h" {
            h2 id="fields-h" { "Custom fields" }
            @if config.custom_fields().is_empty() { p.muted { "None defined yet." } }
            @else {
                table.config { thead { tr { th { "Records" } th { "Field" } th { "Label" } th { "Type" } th { "Required" } th { "Status" } th {} } }
                    tbody { @for f in config.custom_fields() {
                        tr class=[f.entry.retired.then_some("retired")] {
                            td { (kind_title(f.kind)) } td { code { (f.path()) } } td { (f.entry.label) }
                            td { (f.entry.ty.as_str()) @if let Some(list) = &f.entry.picklist { " (" (list) ")" } @if let Some(k) = f.entry.refers_to { " → " (k.as_str()) } }
                            td { (if f.entry.required { "yes" } else { "no" }) }
                            td { (if f.entry.retired { "retired" } else { "in use" }) }
                            td { (toggle("field", &format!("{}:{}", f.kind, f.name), f.entry.retired)) }
                        }
                    } }
                }
            }
            @if admin {
                form.record method="post" action="/admin/configuration" {
                    (layout::csrf(session))
                    input type="hidden" name="action" value="add_field";
                    div.field { label for="cf-kind" { "Records" }
                        select id="cf-kind" name="kind" { @for k in Kind::ALL { option value=(k.as_str()) { (kind_title(k)) } } } }
                    div.field { label for="cf-name" { "Name" } input id="cf-name" name="name" required maxlength="64" placeholder="tier (a-z, 0-9 and _)"; }
                    div.field { label for="cf-label" { "Label" } input id="cf-label" name="label" required maxlength="128" placeholder="Tier"; }
                    div.field { label for="cf-type" { "Type" }
                        select id="cf-type" name="type" { @for t in CustomType::ALL { option value=(t.as_str()) { (t.as_str()) } } } }
                    div.field { label for="cf-list" { "Picklist (picklist fields)" }
                        select id="cf-list" name="picklist" { option value="" { "—" } @for list in config.picklists().keys() { option value=(list) { (list) } } } }
                    div.field { label for="cf-ref" { "Points at (reference fields)" }
                        select id="cf-ref" name="refers_to" { option value="" { "any record" } @for k in Kind::ALL { option value=(k.as_str()) { (k.as_str()) } } } }
                    label.check { input type="checkbox" name="required" value="true"; "Required on new records and edits that touch it" }
                    label.check { input type="checkbox" name="searchable" value="true"; "Searchable" }
                    div.actions { button type="submit" { "Add field" } }
                }
            }
        }
        section aria-labelledby="rules-h" {
            h2 id="rules-h" { "Write rules" }
            p.muted { "Fields only some people change. The relay refuses anyone below the rule's standing, with its reason, and devices refuse it at once. Built in: a won or lost deal's amount, currency, stage and close date are for managers and the office; the configuration is for admins." }
            @if config.write_rules().is_empty() { p.muted { "None defined yet." } }
            @else {
                table.config { thead { tr { th { "Records" } th { "Rule" } th { "Fields" } th { "Changed only by" } th { "Reason" } th { "Status" } th {} } }
                    tbody { @for r in config.write_rules() {
                        tr class=[r.entry.retired.then_some("retired")] {
                            td { (kind_title(r.kind)) } td { code { (r.name) } }
                            td { (r.entry.fields.join(", ")) @if r.entry.closed_only { " (once won or lost)" } }
                            td { (standing_name(r.entry.at_least)) " and above" }
                            td { (r.entry.reason) }
                            td { (if r.entry.retired { "retired" } else { "in force" }) }
                            td { (toggle("rule", &format!("{}:{}", r.kind, r.name), r.entry.retired)) }
                        }
                    } }
                }
            }
            @if admin {
                form.record method="post" action="/admin/configuration" {
                    (layout::csrf(session))
                    input type="hidden" name="action" value="add_rule";
                    div.field { label for="wr-kind" { "Records" }
                        select id="wr-kind" name="kind" { @for k in Kind::ALL { option value=(k.as_str()) { (kind_title(k)) } } } }
                    div.field { label for="wr-name" { "Name" } input id="wr-name" name="name" required maxlength="64" placeholder="owner_by_managers (a-z, 0-9 and _)"; }
                    div.field { label for="wr-fields" { "Fields (comma-separated, custom ones as custom.name)" } input id="wr-fields" name="fields" required placeholder="owner, territory"; }
                    div.field { label for="wr-who" { "Changed only by" }
                        select id="wr-who" name="at_least" { option value="manager" { "managers, office and admins" } option value="office" { "office and admins" } option value="admin" { "admins" } } }
                    div.field { label for="wr-reason" { "Reason (shown to whoever is refused)" } input id="wr-reason" name="reason" required maxlength="200" placeholder="only managers change an account's owner"; }
                    label.check { input type="checkbox" name="closed_only" value="true"; "Only once the deal is won or lost" }
                    div.actions { button type="submit" { "Add rule" } }
                }
            }
        }
    };
    page(session, "Organisation configuration", Nav::Admin, body)
}

fn one<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.trim())
}

/// The entry a posted form asks for, in the configuration as it is.
fn entry_of(form: &[(String, String)], config: &Config) -> Result<ConfigEntry, String> {
    let flag = |name: &str| one(form, name) == "true";
    let kind = |name: &str| one(form, name).parse::<Kind>().map_err(|e| e.to_string());
    let split = |key: &str| -> Result<(String, String), String> {
        one(form, key)
            .split_once(':')
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .ok_or_else(|| "Say which entry.".to_string())
    };
    let optional = |name: &str| Some(one(form, name).to_string()).filter(|s| !s.is_empty());
    match one(form, "action") {
        "add_stage" => {
            let probability = match one(form, "probability") {
                "" => None,
                p => Some(
                    p.parse::<i64>()
                        .map_err(|_| format!("“{p}” is not a whole number from 0 to 100."))?,
                ),
            };
            let outcome = match one(form, "outcome") {
                "won" => StageOutcome::Won,
                "lost" => StageOutcome::Lost,
                _ => StageOutcome::Open,
            };
            entries::add_stage(
                config,
                one(form, "name"),
                outcome,
                probability,
                optional("after").as_deref(),
            )
        }
        "retire_stage" => entries::retire_stage(config, one(form, "key"), flag("retired")),
        "add_value" => entries::add_value(
            config,
            one(form, "list"),
            one(form, "value"),
            one(form, "label"),
        ),
        "retire_value" => {
            let (list, value) = split("key")?;
            entries::retire_value(config, &list, &value, flag("retired"))
        }
        "add_field" => {
            let ty = CustomType::parse(one(form, "type"))
                .ok_or_else(|| format!("“{}” is not a field type.", one(form, "type")))?;
            let refers_to = match optional("refers_to") {
                Some(k) if ty == CustomType::Reference => {
                    Some(k.parse::<Kind>().map_err(|e| e.to_string())?)
                }
                _ => None,
            };
            entries::add_field(
                config,
                kind("kind")?,
                one(form, "name"),
                entries::NewField {
                    label: one(form, "label").to_string(),
                    ty,
                    picklist: optional("picklist"),
                    refers_to,
                    required: flag("required"),
                    searchable: flag("searchable"),
                },
            )
        }
        "retire_field" => {
            let (k, name) = split("key")?;
            let k = k.parse::<Kind>().map_err(|e| e.to_string())?;
            entries::retire_field(config, k, &name, flag("retired"))
        }
        "add_rule" => entries::add_rule(
            config,
            kind("kind")?,
            one(form, "name"),
            one(form, "fields").split(',').map(String::from).collect(),
            one(form, "at_least"),
            flag("closed_only"),
            one(form, "reason"),
        ),
        "retire_rule" => {
            let (k, name) = split("key")?;
            let k = k.parse::<Kind>().map_err(|e| e.to_string())?;
            entries::retire_rule(config, k, &name, flag("retired"))
        }
        other => Err(format!("“{other}” is not something this page does.")),
    }
}

/// Writes one entry as the signed-in user, then shows the page again
/// (with the reason, when it was refused).
pub async fn change(
    State(state): State<Arc<AppState>>,
    Post(session, form): Post<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    may_view(&session)?;
    let user = session.user.clone();
    let outcome = blocking(&state, move |relay| {
        let config = relay.configuration()?;
        let refused = match entry_of(&form, &config) {
            Err(problem) => Some(problem),
            Ok(entry) => office::set_config_entry(relay, &user, &entry)?
                .err()
                .map(|e| e.to_string()),
        };
        match refused {
            None => Ok(None),
            Some(problem) => Ok(Some((problem, relay.configuration()?))),
        }
    })
    .await?;
    match outcome {
        None => {
            log_advanced(&state).await;
            Ok(Redirect::to("/admin/configuration").into_response())
        }
        Some((problem, config)) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            render(&session, &config, 0, Some(&problem)),
        )
            .into_response()),
    }
}
