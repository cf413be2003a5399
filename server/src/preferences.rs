//! A user's own settings, in one place for the office UI: the time zone
//! times are shown and typed in, and the list filters they saved. Kept in
//! the relay store per user (`relay_user_settings`), never synced to
//! devices: they are how one person reads the office UI, not CRM data.

use fieldcrm_core::Kind;
use jiff::tz::TimeZone;

use crate::relay::{RelayError, RelayStore, Result};

const TIME_ZONE: &str = "time_zone";
const FILTER_PREFIX: &str = "filter/";
/// Saved filters per user and kind; more would not fit beside the list.
pub const MAX_FILTERS: usize = 20;
const MAX_FILTER_NAME: usize = 60;
const MAX_FILTER_QUERY: usize = 2_000;

/// A list's filter saved under a name: the list's query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedFilter {
    pub kind: Kind,
    pub name: String,
    pub query: String,
}

/// What a user has set.
#[derive(Debug, Clone, Default)]
pub struct Preferences {
    /// An IANA name like `Europe/Berlin`; `None`: the browser's, else UTC.
    pub time_zone: Option<String>,
    pub filters: Vec<SavedFilter>,
}

impl Preferences {
    pub fn filters(&self, kind: Kind) -> impl Iterator<Item = &SavedFilter> {
        self.filters.iter().filter(move |f| f.kind == kind)
    }
}

pub fn load(store: &dyn RelayStore, user: &str) -> Result<Preferences> {
    let mut prefs = Preferences::default();
    for (name, value) in store.user_settings(user)? {
        if name == TIME_ZONE {
            prefs.time_zone = Some(value);
        } else if let Some((kind, filter)) = name
            .strip_prefix(FILTER_PREFIX)
            .and_then(|rest| rest.split_once('/'))
        {
            if let Ok(kind) = kind.parse() {
                prefs.filters.push(SavedFilter {
                    kind,
                    name: filter.to_string(),
                    query: value,
                });
            }
        }
    }
    Ok(prefs)
}

/// The zone an IANA name stands for, or a message saying it is unknown.
pub fn zone(name: &str) -> Result<TimeZone> {
    TimeZone::get(name).map_err(|_| {
        RelayError::Invalid(format!(
            "“{name}” is not a time zone; choose one like Europe/London or America/New_York."
        ))
    })
}

/// Sets the user's time zone, or goes back to the browser's (`None`).
pub fn set_time_zone(store: &dyn RelayStore, user: &str, name: Option<&str>) -> Result<()> {
    if let Some(name) = name {
        zone(name)?;
    }
    store.set_user_setting(user, TIME_ZONE, name)
}

/// Saves (or replaces) the filter `name` of the user's `kind` list.
pub fn save_filter(
    store: &dyn RelayStore,
    user: &str,
    kind: Kind,
    name: &str,
    query: &str,
) -> Result<()> {
    let name = name.trim();
    if name.is_empty() {
        return Err(RelayError::Invalid("Give the filter a name.".into()));
    }
    if name.chars().count() > MAX_FILTER_NAME || name.chars().any(char::is_control) {
        return Err(RelayError::Invalid(format!(
            "A filter's name is at most {MAX_FILTER_NAME} letters, on one line."
        )));
    }
    if query.len() > MAX_FILTER_QUERY {
        return Err(RelayError::Invalid(
            "This filter is too long to save.".into(),
        ));
    }
    let prefs = load(store, user)?;
    let mut same_kind = prefs.filters(kind);
    if !same_kind.any(|f| f.name == name) && prefs.filters(kind).count() >= MAX_FILTERS {
        return Err(RelayError::Invalid(format!(
            "You have {MAX_FILTERS} saved filters here already; delete one first."
        )));
    }
    store.set_user_setting(user, &filter_setting(kind, name), Some(query))
}

pub fn delete_filter(store: &dyn RelayStore, user: &str, kind: Kind, name: &str) -> Result<()> {
    store.set_user_setting(user, &filter_setting(kind, name.trim()), None)
}

fn filter_setting(kind: Kind, name: &str) -> String {
    format!("{FILTER_PREFIX}{}/{name}", kind.as_str())
}
