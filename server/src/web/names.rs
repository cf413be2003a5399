//! References shown by name: every page that shows a record id a field
//! holds (an account, a contact, what an activity is about) looks the
//! referenced records up in one query and shows each as a link with its
//! name, and the pickers that choose one (`/lookup`, type-ahead).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;
use fieldcrm_core::{FieldType, Kind, Record, Value};
use maud::{html, Markup};
use serde::{Deserialize, Serialize};

use super::layout;
use super::zone::Zone;
use super::{blocking, PageError, Session};
use crate::relay::{access, office, RelayStore, User};
use crate::AppState;

/// The records some references point at, as far as the user may see them.
#[derive(Debug, Default)]
pub struct Names(HashMap<String, Record>);

impl Names {
    /// Looks up every id the `values` of `kind`'s reference fields hold.
    pub fn of<'a>(
        relay: &dyn RelayStore,
        user: &User,
        values: impl IntoIterator<Item = (Kind, &'a str, &'a Value)>,
    ) -> crate::relay::Result<Names> {
        let ids: BTreeSet<String> = values
            .into_iter()
            .filter(|(kind, path, _)| is_reference(*kind, path))
            .filter_map(|(_, _, value)| value.as_str().map(String::from))
            .collect();
        if ids.is_empty() {
            return Ok(Names::default());
        }
        Ok(Names(office::records_by_id(relay, user, ids)?))
    }

    /// The references of `records`' own fields.
    pub fn of_records<'a>(
        relay: &dyn RelayStore,
        user: &User,
        records: impl IntoIterator<Item = &'a Record>,
    ) -> crate::relay::Result<Names> {
        Names::of(
            relay,
            user,
            records.into_iter().flat_map(|r| {
                r.fields
                    .iter()
                    .map(move |(path, value)| (r.kind, path.as_str(), value))
            }),
        )
    }

    pub fn record(&self, id: &str) -> Option<&Record> {
        self.0.get(id)
    }

    /// The referenced record's name, if the user may see it.
    pub fn name(&self, id: &str) -> Option<String> {
        self.record(id).map(display_name)
    }

    /// A link to the referenced record by its name; a record the user may
    /// not see (or that does not exist) says so, without its id's target.
    pub fn link(&self, id: &str) -> Markup {
        match self.record(id) {
            Some(record) => html! {
                (layout::record_link(record))
                @if record.deleted { " " span.badge { "deleted" } }
            },
            None => html! { span.muted title=(id) { "(not visible to you)" } },
        }
    }

    /// A field's value as a person reads it: a reference as a link to its
    /// record, anything else as text.
    pub fn value(&self, kind: Kind, path: &str, value: &Value, zone: &Zone) -> Markup {
        match value.as_str() {
            Some(id) if is_reference(kind, path) && !id.is_empty() => self.link(id),
            _ => html! { (layout::value(kind, path, value, zone)) },
        }
    }
}

/// Whether `path` of `kind` holds another record's id.
pub fn is_reference(kind: Kind, path: &str) -> bool {
    matches!(kind.field(path).map(|s| s.ty), Some(FieldType::Ref(_)))
}

fn display_name(record: &Record) -> String {
    match record.display_name() {
        name if name.is_empty() => "(unnamed)".into(),
        name => name,
    }
}

#[derive(Debug, Deserialize)]
pub struct LookupQuery {
    /// `account`, `contact`, `deal`, `activity`, `any` (records of every
    /// kind) or `user`.
    kind: String,
    #[serde(default)]
    q: String,
}

/// One suggestion of a picker.
#[derive(Debug, Serialize)]
pub struct Suggestion {
    /// What the field stores: a record id or a user name.
    pub id: String,
    /// What the picker shows and the form's name box holds.
    pub name: String,
    /// What tells two suggestions of the same name apart (kind, city,
    /// email, role...).
    pub detail: String,
    /// The record's territory: choosing an account sets the form's.
    pub territory: String,
}

/// Most suggestions a picker shows.
const SUGGESTIONS: usize = 12;

/// Type-ahead for the record and owner pickers: the best matches among
/// the records (or users) the signed-in user may see.
pub async fn lookup(
    State(state): State<Arc<AppState>>,
    session: Session,
    Query(q): Query<LookupQuery>,
) -> Result<Json<Vec<Suggestion>>, PageError> {
    let user = session.user.clone();
    let found = match q.kind.as_str() {
        "user" => blocking(&state, move |relay| owners(relay, &user, &q.q)).await?,
        kind => {
            let kind = match kind {
                "any" => None,
                other => Some(other.parse::<Kind>().map_err(|_| {
                    PageError::bad_request(format!(
                        "cannot look up {other:?}: account, contact, deal, activity, any or user"
                    ))
                })?),
            };
            blocking(&state, move |relay| {
                Ok(office::search(relay, &user, &q.q, kind, SUGGESTIONS)?
                    .iter()
                    .map(suggestion)
                    .collect())
            })
            .await?
        }
    };
    Ok(Json(found))
}

fn suggestion(record: &Record) -> Suggestion {
    let text = |path| record.text(path).unwrap_or("").to_string();
    let detail = text(record.kind.summary_field());
    let detail = match detail.is_empty() {
        true => record.kind.as_str().to_string(),
        false => format!("{} · {detail}", record.kind.as_str()),
    };
    Suggestion {
        id: record.id.clone(),
        name: display_name(record),
        detail,
        territory: text("territory"),
    }
}

/// The enabled users a record of this user's may be given to: everyone for the
/// office, otherwise those who share one of the user's territories.
pub fn owner_choices(relay: &dyn RelayStore, user: &User) -> crate::relay::Result<Vec<User>> {
    let mut users: Vec<User> = crate::accounts::accounts(relay)?
        .into_iter()
        .filter(|a| !a.disabled)
        .map(|a| a.user)
        .collect();
    if let Some(mine) = access::record_territories(user) {
        users.retain(|u| {
            u.id == user.id || u.role.sees_all() || u.territories.iter().any(|t| mine.contains(t))
        });
    }
    Ok(users)
}

fn owners(
    relay: &dyn RelayStore,
    user: &User,
    typed: &str,
) -> crate::relay::Result<Vec<Suggestion>> {
    let typed = typed.trim().to_lowercase();
    Ok(owner_choices(relay, user)?
        .into_iter()
        .filter(|u| u.id.to_lowercase().contains(&typed))
        .take(SUGGESTIONS)
        .map(|u| Suggestion {
            detail: format!("{} · {}", u.role.as_str(), u.territories.join(", ")),
            name: u.id.clone(),
            id: u.id,
            territory: String::new(),
        })
        .collect())
}

/// What a picker's name box says about the record it names: the visible
/// records of `kind` with exactly that name (case and spaces aside).
pub fn named(
    relay: &dyn RelayStore,
    user: &User,
    kind: Option<Kind>,
    typed: &str,
) -> crate::relay::Result<Vec<Record>> {
    let wanted = typed.trim().to_lowercase();
    Ok(office::search(relay, user, typed, kind, 200)?
        .into_iter()
        .filter(|r| r.display_name().trim().to_lowercase() == wanted)
        .collect())
}

/// The last value a form posted for `key`, trimmed.
pub(super) fn posted_value(posted: &[(String, String)], key: &str) -> Option<String> {
    posted
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.trim().to_string())
}

/// Turns what a form's pickers posted into ids, before the form is parsed:
/// the chosen id stands while the name box still shows its record's name;
/// a name typed without choosing (no script, or typed over) is looked up
/// among the records the user may see, and must name exactly one. An empty
/// name box clears the reference. A record chosen by its account (or by
/// what an activity is about) takes that record's territory when the form
/// left territory empty. Returns a message per field that named nothing.
pub fn resolve_pickers(
    relay: &dyn RelayStore,
    user: &User,
    kind: Kind,
    posted: &mut Vec<(String, String)>,
) -> crate::relay::Result<super::form::Errors> {
    let mut errors = super::form::Errors::new();
    for spec in kind.fields() {
        let FieldType::Ref(target) = spec.ty else {
            continue;
        };
        let Some(typed) = posted_value(posted, &super::form::name_key(spec.path)) else {
            continue;
        };
        let id = posted_value(posted, spec.path).unwrap_or_default();
        let same = |a: &str, b: &str| a.trim().to_lowercase() == b.trim().to_lowercase();
        let chosen = if typed.is_empty() {
            Some(String::new())
        } else if !id.is_empty()
            && office::records_by_id(relay, user, [id.clone()])?
                .get(&id)
                .is_some_and(|r| same(&r.display_name(), &typed))
        {
            Some(id)
        } else {
            let noun = target.map_or("record", Kind::as_str);
            match named(relay, user, target, &typed)?.as_slice() {
                [one] => Some(one.id.clone()),
                [] => {
                    errors.insert(
                        spec.path.into(),
                        format!("You have no {noun} named “{typed}”. Type part of its name and pick it from the suggestions."),
                    );
                    None
                }
                many => {
                    errors.insert(
                        spec.path.into(),
                        format!("{} {noun}s are named “{typed}”. Pick the one you mean from the suggestions.", many.len()),
                    );
                    None
                }
            }
        };
        if let Some(id) = chosen {
            posted.push((spec.path.into(), id));
        }
    }
    default_territory(relay, user, kind, posted)?;
    Ok(errors)
}

/// An empty territory takes the territory of the record the form chose as
/// its account (or, for an activity, what it is about).
fn default_territory(
    relay: &dyn RelayStore,
    user: &User,
    kind: Kind,
    posted: &mut Vec<(String, String)>,
) -> crate::relay::Result<()> {
    if kind.field("territory").is_none()
        || posted_value(posted, "territory").is_some_and(|t| !t.is_empty())
    {
        return Ok(());
    }
    let parent = ["account_id", "related_to"]
        .into_iter()
        .filter(|path| kind.field(path).is_some())
        .find_map(|path| posted_value(posted, path).filter(|id| !id.is_empty()));
    if let Some(parent) = parent {
        let found = office::records_by_id(relay, user, [parent.clone()])?;
        if let Some(territory) = found.get(&parent).and_then(|r| r.text("territory")) {
            posted.push(("territory".into(), territory.to_string()));
        }
    }
    Ok(())
}

/// Adds to a form's values the name each picker shows for the id it holds.
pub fn fill_picker_names(
    relay: &dyn RelayStore,
    user: &User,
    kind: Kind,
    values: &mut std::collections::BTreeMap<String, String>,
) -> crate::relay::Result<()> {
    let ids: Vec<(String, Value)> = kind
        .fields()
        .iter()
        .filter(|spec| matches!(spec.ty, FieldType::Ref(_)))
        .filter(|spec| !values.contains_key(&super::form::name_key(spec.path)))
        .filter_map(|spec| {
            let id = values.get(spec.path)?.trim();
            (!id.is_empty()).then(|| (spec.path.to_string(), Value::from(id)))
        })
        .collect();
    let names = Names::of(relay, user, ids.iter().map(|(p, v)| (kind, p.as_str(), v)))?;
    for (path, id) in &ids {
        let id = id.as_str().unwrap_or("");
        let name = names.name(id).unwrap_or_default();
        values.insert(super::form::name_key(path), name);
    }
    Ok(())
}
