//! The organisation configuration: the deal pipeline, the picklists and the
//! custom field definitions, kept in ONE record document (id
//! [`CONFIG_ID`], kind [`Kind::Config`]) that every device receives with
//! its territories and that only admins change.
//!
//! Each entry is one key of one of the document's maps, its value a small
//! JSON object: `stages.<name>`, `picklists.<list>:<value>`,
//! `fields.<kind>:<name>`. One key per entry means two admins who add
//! different entries offline both keep theirs, and two who change the same
//! one leave a conflict on that entry, shown and resolved like any other.
//! Entries are never removed, only retired: a retired stage, value or field
//! is offered to no-one but stays valid, so records and offline edits that
//! use it are never refused for it. Validation reads [`Config`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::pipeline::StageSettings;
use super::{
    validate_custom_name, FieldType, Fields, Kind, Pipeline, Record, Stored, TouchedField, Value,
    CASE_PRIORITIES, LEAD_SOURCES,
};
use crate::error::{Error, Result};

/// The id of the configuration record.
pub const CONFIG_ID: &str = "configuration";
/// The territory the configuration record sits in: every user's view
/// holds it (names starting with `*` are not territories anyone can add).
pub const SHARED_TERRITORY: &str = "*organisation";
/// Longest entry, in bytes of JSON.
const MAX_ENTRY: usize = 1024;
/// The maps of the configuration document whose keys are entries.
pub const CONFIG_MAPS: [&str; 4] = ["stages", "picklists", "fields", "rules"];

/// Picklists built-in fields use, with their values before any
/// configuration (a configuration entry relabels, retires or adds).
pub const BUILT_IN_PICKLISTS: &[(&str, &[&str])] = &[
    ("lead_source", LEAD_SOURCES),
    ("case_priority", CASE_PRIORITIES),
];

/// What a custom field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CustomType {
    Text,
    /// Any finite number.
    Number,
    Integer,
    /// An integer amount in minor units (cents).
    Money,
    /// `YYYY-MM-DD`.
    Date,
    Boolean,
    /// One value of a picklist.
    Picklist,
    /// The id of a record (of one kind, if `refers_to` says).
    Reference,
}

impl CustomType {
    pub const ALL: [CustomType; 8] = [
        CustomType::Text,
        CustomType::Number,
        CustomType::Integer,
        CustomType::Money,
        CustomType::Date,
        CustomType::Boolean,
        CustomType::Picklist,
        CustomType::Reference,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CustomType::Text => "text",
            CustomType::Number => "number",
            CustomType::Integer => "integer",
            CustomType::Money => "money",
            CustomType::Date => "date",
            CustomType::Boolean => "boolean",
            CustomType::Picklist => "picklist",
            CustomType::Reference => "reference",
        }
    }

    pub fn parse(s: &str) -> Option<CustomType> {
        CustomType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// `stages.<name>`: where the stage sits and what it means.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageEntry {
    /// Smaller first; the default stages sit at 10, 20, 30...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<super::StageOutcome>,
    /// Percent a deal in it counts at in a forecast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<i64>,
    #[serde(default)]
    pub retired: bool,
}

/// `picklists.<list>:<value>`: one value of a picklist.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PickEntry {
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    #[serde(default)]
    pub retired: bool,
}

/// `fields.<kind>:<name>`: a custom field, set as `custom.<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldEntry {
    pub label: String,
    #[serde(rename = "type")]
    pub ty: CustomType,
    /// The picklist of a picklist field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picklist: Option<String>,
    /// The kind a reference field points at (`None`: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refers_to: Option<Kind>,
    /// New records must set it, and an edit may not clear it.
    #[serde(default)]
    pub required: bool,
    /// Found by the full-text search.
    #[serde(default)]
    pub searchable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    #[serde(default)]
    pub retired: bool,
}

/// `rules.<kind>:<name>`: a write rule an admin defines — these fields of
/// a kind are changed only by writers of at least `at_least` standing
/// (with `closed_only`: only once the deal is won or lost).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleEntry {
    /// Dotted paths: built-in fields of the kind, or `custom.<name>`.
    pub fields: Vec<String>,
    pub at_least: super::Standing,
    /// Only while the deal, before the change, is won or lost.
    #[serde(default)]
    pub closed_only: bool,
    /// Said to the writer it refuses.
    pub reason: String,
    #[serde(default)]
    pub retired: bool,
}

/// One write rule of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigRule {
    pub kind: Kind,
    pub name: String,
    #[serde(flatten)]
    pub entry: RuleEntry,
}

/// One value of a picklist, as forms offer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PickValue {
    pub value: String,
    pub label: String,
    pub retired: bool,
    /// Where it sits in the list (smaller first).
    pub position: i64,
}

/// One custom field of a kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustomField {
    pub kind: Kind,
    pub name: String,
    #[serde(flatten)]
    pub entry: FieldEntry,
}

impl CustomField {
    /// The built-in field type its values are checked as (a picklist's
    /// values as text, then against the picklist).
    pub fn field_type(&self) -> FieldType {
        match self.entry.ty {
            CustomType::Text | CustomType::Picklist => FieldType::Text,
            CustomType::Number => FieldType::Number,
            CustomType::Integer => FieldType::Integer,
            CustomType::Money => FieldType::Amount,
            CustomType::Date => FieldType::Date,
            CustomType::Boolean => FieldType::Bool,
            CustomType::Reference => FieldType::Ref(self.entry.refers_to),
        }
    }

    /// The record path it is set at: `custom.<name>`.
    pub fn path(&self) -> String {
        format!("{}{}", super::CUSTOM_PREFIX, self.name)
    }
}

/// One entry a configuration change makes (the office's settings page and
/// the CLI build these; [`Config::entry_fields`] turns one into the field
/// it writes).
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigEntry {
    Stage {
        name: String,
        entry: StageEntry,
    },
    PickValue {
        list: String,
        value: String,
        entry: PickEntry,
    },
    Field {
        kind: Kind,
        name: String,
        entry: FieldEntry,
    },
    Rule {
        kind: Kind,
        name: String,
        entry: RuleEntry,
    },
}

impl ConfigEntry {
    /// The configuration record's field this entry is.
    pub fn path(&self) -> String {
        match self {
            ConfigEntry::Stage { name, .. } => format!("stages.{name}"),
            ConfigEntry::PickValue { list, value, .. } => format!("picklists.{list}:{value}"),
            ConfigEntry::Field { kind, name, .. } => format!("fields.{kind}:{name}"),
            ConfigEntry::Rule { kind, name, .. } => format!("rules.{kind}:{name}"),
        }
    }

    fn json(&self) -> String {
        let json = match self {
            ConfigEntry::Stage { entry, .. } => serde_json::to_string(entry),
            ConfigEntry::PickValue { entry, .. } => serde_json::to_string(entry),
            ConfigEntry::Field { entry, .. } => serde_json::to_string(entry),
            ConfigEntry::Rule { entry, .. } => serde_json::to_string(entry),
        };
        json.expect("entries serialise")
    }

    /// The fields of the configuration record that write this entry.
    pub fn to_fields(&self) -> Fields {
        [(self.path(), Value::Text(self.json()))].into()
    }

    /// Reads the entry at `path` (`stages.x`, `picklists.l:v`,
    /// `fields.k:n`) from its stored JSON, checking both.
    pub fn parse(path: &str, json: &str) -> Result<ConfigEntry> {
        if json.len() > MAX_ENTRY {
            return Err(Error::OversizeValue {
                field: path.to_string(),
                len: json.len(),
                max: MAX_ENTRY,
            });
        }
        let bad = |reason: String| Error::invalid(path, format!("{json:?}"), &reason);
        let Some((map, key)) = path.split_once('.') else {
            return Err(bad("not an entry of the configuration".into()));
        };
        let entry = match map {
            "stages" => {
                check_entry_name(path, key, "stage")?;
                let entry: StageEntry =
                    serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
                if entry.probability.is_some_and(|p| !(0..=100).contains(&p)) {
                    return Err(bad("a probability is 0 to 100".into()));
                }
                ConfigEntry::Stage {
                    name: key.to_string(),
                    entry,
                }
            }
            "picklists" => {
                let Some((list, value)) = key.split_once(':') else {
                    return Err(bad("a picklist entry is picklists.<list>:<value>".into()));
                };
                validate_custom_name(list).map_err(|_| {
                    Error::invalid(
                        path,
                        format!("{list:?}"),
                        "picklist names are 1-64 of a-z, 0-9 and _, starting with a letter",
                    )
                })?;
                check_entry_name(path, value, "picklist value")?;
                let entry: PickEntry =
                    serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
                check_label(path, &entry.label)?;
                ConfigEntry::PickValue {
                    list: list.to_string(),
                    value: value.to_string(),
                    entry,
                }
            }
            "fields" => {
                let Some((kind, name)) = key.split_once(':') else {
                    return Err(bad("a field entry is fields.<kind>:<name>".into()));
                };
                let kind: Kind = kind.parse()?;
                if kind == Kind::Config {
                    return Err(bad("the configuration has no custom fields".into()));
                }
                validate_custom_name(name)?;
                let entry: FieldEntry =
                    serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
                check_label(path, &entry.label)?;
                match (entry.ty, &entry.picklist, entry.refers_to) {
                    (CustomType::Picklist, None, _) => {
                        return Err(bad("a picklist field names its picklist".into()))
                    }
                    (CustomType::Picklist, Some(list), _) => validate_custom_name(list)?,
                    (_, Some(_), _) => {
                        return Err(bad("only a picklist field has a picklist".into()))
                    }
                    (CustomType::Reference, _, Some(Kind::Config)) => {
                        return Err(bad("a reference points at a record kind".into()))
                    }
                    (CustomType::Reference, _, _) => {}
                    (_, _, Some(_)) => {
                        return Err(bad("only a reference field has refers_to".into()))
                    }
                    _ => {}
                }
                ConfigEntry::Field {
                    kind,
                    name: name.to_string(),
                    entry,
                }
            }
            "rules" => {
                let Some((kind, name)) = key.split_once(':') else {
                    return Err(bad("a rule entry is rules.<kind>:<name>".into()));
                };
                let kind: Kind = kind.parse()?;
                if kind == Kind::Config {
                    return Err(bad("only admins change the configuration already".into()));
                }
                validate_custom_name(name).map_err(|_| {
                    Error::invalid(
                        path,
                        format!("{name:?}"),
                        "rule names are 1-64 of a-z, 0-9 and _, starting with a letter",
                    )
                })?;
                let entry: RuleEntry =
                    serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
                check_rule(path, kind, &entry)?;
                ConfigEntry::Rule {
                    kind,
                    name: name.to_string(),
                    entry,
                }
            }
            _ => return Err(bad("not an entry of the configuration".into())),
        };
        Ok(entry)
    }
}

/// A rule names fields the kind has, binds someone above a rep, and says
/// why in words a writer can read.
fn check_rule(path: &str, kind: Kind, rule: &RuleEntry) -> Result<()> {
    if rule.fields.is_empty() {
        return Err(Error::invalid(
            path,
            "no fields",
            "a rule names the fields it covers",
        ));
    }
    for field in &rule.fields {
        let known = match field.strip_prefix(super::CUSTOM_PREFIX) {
            Some(name) => validate_custom_name(name).is_ok(),
            None => kind.field(field).is_some_and(|s| !s.by_action),
        };
        if !known {
            return Err(Error::invalid(
                path,
                format!("{field:?}"),
                &format!("not a field a {kind} has (custom fields are custom.<name>)"),
            ));
        }
    }
    if rule.at_least == super::Standing::Rep {
        return Err(Error::invalid(
            path,
            "rep",
            "everyone is at least a rep: bind managers, office or admins",
        ));
    }
    if rule.closed_only && kind != Kind::Deal {
        return Err(Error::invalid(
            path,
            "closed_only",
            "only deals are won or lost",
        ));
    }
    if rule.reason.trim().is_empty() || rule.reason.len() > 200 {
        return Err(Error::invalid(
            path,
            format!("{:?}", rule.reason),
            "a rule's reason is 1 to 200 bytes",
        ));
    }
    Ok(())
}

fn check_entry_name(path: &str, name: &str, what: &str) -> Result<()> {
    if name.trim().is_empty()
        || name.len() > 64
        || name.contains(['.', '\n'])
        || name != name.trim()
    {
        return Err(Error::invalid(
            path,
            format!("{name:?}"),
            &format!("a {what} is 1 to 64 bytes, without dots, line breaks or surrounding spaces"),
        ));
    }
    Ok(())
}

fn check_label(path: &str, label: &str) -> Result<()> {
    if label.trim().is_empty() || label.len() > 128 {
        return Err(Error::invalid(
            path,
            format!("{label:?}"),
            "a label is 1 to 128 bytes",
        ));
    }
    Ok(())
}

/// The configuration in force: what validation, forms, lists and exports
/// follow.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pipeline: Pipeline,
    /// Each stage's position, in the pipeline's order.
    stage_positions: Vec<i64>,
    picklists: BTreeMap<String, Vec<PickValue>>,
    fields: Vec<CustomField>,
    rules: Vec<ConfigRule>,
}

impl Default for Config {
    fn default() -> Self {
        Config::new(Pipeline::default(), None)
    }
}

impl Config {
    /// `base` (the default pipeline, or one a store set before the
    /// configuration existed) with the configuration record's entries on
    /// top. An entry that does not read is skipped: the relay refuses
    /// those, so only a damaged record has one.
    pub fn new(base: Pipeline, record: Option<&Record>) -> Config {
        let mut stages: Vec<(i64, String, StageSettings)> = base
            .stages()
            .iter()
            .enumerate()
            .map(|(i, s)| (10 * (i as i64 + 1), s.clone(), StageSettings::default()))
            .collect();
        let mut picks: BTreeMap<String, Vec<(i64, PickValue)>> = BTreeMap::new();
        for (list, values) in BUILT_IN_PICKLISTS {
            let values = values.iter().enumerate().map(|(i, v)| {
                let label = capitalised(v);
                let position = 10 * (i as i64 + 1);
                let value = PickValue {
                    value: v.to_string(),
                    label,
                    retired: false,
                    position,
                };
                (position, value)
            });
            picks.insert(list.to_string(), values.collect());
        }
        let mut fields: Vec<(i64, CustomField)> = Vec::new();
        let mut rules = Vec::new();
        let entries = record
            .into_iter()
            .flat_map(|r| r.fields.iter())
            .filter_map(|(path, v)| {
                let json = v.as_str()?;
                CONFIG_MAPS
                    .iter()
                    .any(|m| path.starts_with(m) && path[m.len()..].starts_with('.'))
                    .then(|| ConfigEntry::parse(path, json).ok())
                    .flatten()
            });
        for entry in entries {
            match entry {
                ConfigEntry::Stage { name, entry } => {
                    let settings = StageSettings {
                        outcome: entry.outcome,
                        probability: entry.probability,
                        retired: entry.retired,
                    };
                    let next = stages.iter().map(|s| s.0).max().unwrap_or(0) + 10;
                    match stages.iter_mut().find(|s| s.1 == name) {
                        Some(s) => {
                            s.0 = entry.position.unwrap_or(s.0);
                            s.2 = settings;
                        }
                        None => stages.push((entry.position.unwrap_or(next), name, settings)),
                    }
                }
                ConfigEntry::PickValue { list, value, entry } => {
                    let values = picks.entry(list).or_default();
                    let next = values.iter().map(|v| v.0).max().unwrap_or(0) + 10;
                    let at = values.iter().position(|v| v.1.value == value);
                    let position = entry
                        .position
                        .unwrap_or_else(|| at.map_or(next, |i| values[i].0));
                    let pick = PickValue {
                        value,
                        label: entry.label,
                        retired: entry.retired,
                        position,
                    };
                    match at {
                        Some(i) => values[i] = (position, pick),
                        None => values.push((position, pick)),
                    }
                }
                ConfigEntry::Field { kind, name, entry } => fields.push((
                    entry.position.unwrap_or(i64::MAX),
                    CustomField { kind, name, entry },
                )),
                ConfigEntry::Rule { kind, name, entry } => {
                    rules.push(ConfigRule { kind, name, entry })
                }
            }
        }
        stages.sort_by_key(|s| s.0);
        fields.sort_by(|a, b| (a.1.kind, a.0, &a.1.name).cmp(&(b.1.kind, b.0, &b.1.name)));
        Config {
            stage_positions: stages.iter().map(|s| s.0).collect(),
            pipeline: Pipeline::with_settings(stages.into_iter().map(|(_, n, s)| (n, s)).collect()),
            picklists: picks
                .into_iter()
                .map(|(list, mut values)| {
                    values.sort_by_key(|v| v.0);
                    (list, values.into_iter().map(|v| v.1).collect())
                })
                .collect(),
            fields: fields.into_iter().map(|f| f.1).collect(),
            rules,
        }
    }

    /// The default configuration over another base pipeline.
    pub fn with_pipeline(pipeline: Pipeline) -> Config {
        Config::new(pipeline, None)
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The position a new stage takes to sit right after `stage` (at the
    /// end when there is none such).
    pub fn position_after(&self, stage: &str) -> i64 {
        let p = &self.stage_positions;
        match self.pipeline.position(stage) {
            Some(i) if i + 1 < p.len() => p[i] + (p[i + 1] - p[i]).max(2) / 2,
            _ => p.last().copied().unwrap_or(0) + 10,
        }
    }

    /// Every picklist by name, values in order, retired ones included.
    pub fn picklists(&self) -> &BTreeMap<String, Vec<PickValue>> {
        &self.picklists
    }

    /// The values of one picklist (empty if there is none of that name).
    pub fn picklist(&self, name: &str) -> &[PickValue] {
        self.picklists.get(name).map_or(&[], Vec::as_slice)
    }

    /// Whether `value` is one of the picklist's values (retired included:
    /// old records and offline edits keep them).
    pub fn allows(&self, list: &str, value: &str) -> bool {
        self.picklist(list).iter().any(|v| v.value == value)
    }

    /// Every custom field, by kind, in order, retired ones included.
    /// The write rules admins defined, retired ones included, by kind and
    /// name.
    pub fn write_rules(&self) -> &[ConfigRule] {
        &self.rules
    }

    pub fn custom_fields(&self) -> &[CustomField] {
        &self.fields
    }

    /// The custom fields of one kind.
    pub fn custom_fields_of(&self, kind: Kind) -> impl Iterator<Item = &CustomField> {
        self.fields.iter().filter(move |f| f.kind == kind)
    }

    /// The type a field of `kind` is checked as: built-in, or a custom
    /// field this configuration defines (`None`: unknown, or an ad-hoc
    /// custom field).
    pub fn field_type(&self, kind: Kind, path: &str) -> Option<FieldType> {
        match path.strip_prefix(super::CUSTOM_PREFIX) {
            Some(name) => self.custom_field(kind, name).map(CustomField::field_type),
            None => kind.field(path).map(|f| f.ty),
        }
    }

    /// The definition of `custom.<name>` for `kind`, if the configuration has one.
    pub fn custom_field(&self, kind: Kind, name: &str) -> Option<&CustomField> {
        self.custom_fields_of(kind).find(|f| f.name == name)
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Checks the entries a change to the configuration record touched, `before`
/// being the record as it was (`None`: the change creates it). Entries are
/// never removed (retire them), and a field's type, picklist and target
/// never change (retire it and define another), so records that use them
/// stay readable and valid.
pub fn check_config_change(
    before: Option<&Record>,
    after: &Record,
    touched: &[TouchedField],
) -> Result<()> {
    let config = Config::new(Pipeline::default(), Some(after));
    if after.deleted {
        return Err(Error::invalid(
            "deleted",
            "true",
            "the organisation configuration is never deleted; retire its entries instead",
        ));
    }
    for t in touched {
        let Some((map, _)) = t.path.split_once('.') else {
            continue;
        };
        if !CONFIG_MAPS.contains(&map) {
            continue;
        }
        if t.path.matches('.').count() > 1 {
            return Err(Error::invalid(
                &t.path,
                "this key",
                "configuration entry names have no dots",
            ));
        }
        if t.now.is_empty() {
            return Err(Error::invalid(
                &t.path,
                "its removal",
                "configuration entries are never removed; retire it instead",
            ));
        }
        for stored in &t.now {
            let Stored::Str(json) = stored else {
                return Err(Error::invalid(
                    &t.path,
                    "this value",
                    "a configuration entry is a JSON object in a plain string",
                ));
            };
            let entry = ConfigEntry::parse(&t.path, json)?;
            if let ConfigEntry::Field { entry, .. } = &entry {
                if let Some(list) = &entry.picklist {
                    if config.picklist(list).is_empty() {
                        return Err(Error::invalid(
                            &t.path,
                            format!("{list:?}"),
                            "no such picklist; add its values first",
                        ));
                    }
                }
            }
            let old = before
                .and_then(|b| b.fields.get(&t.path))
                .and_then(Value::as_str)
                .and_then(|j| ConfigEntry::parse(&t.path, j).ok());
            if let (
                Some(ConfigEntry::Field { entry: was, .. }),
                ConfigEntry::Field { entry: now, .. },
            ) = (old, &entry)
            {
                if (was.ty, &was.picklist, was.refers_to) != (now.ty, &now.picklist, now.refers_to)
                {
                    return Err(Error::invalid(
                        &t.path,
                        now.ty.as_str(),
                        &format!(
                            "a field's type never changes (it is {}); retire it and define a new one",
                            was.ty.as_str()
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_record(entries: &[ConfigEntry]) -> Record {
        let mut fields = Fields::new();
        for e in entries {
            fields.extend(e.to_fields());
        }
        Record {
            id: CONFIG_ID.into(),
            kind: Kind::Config,
            fields,
            deleted: false,
            created_at: 0,
            created_by: "admin".into(),
            updated_at: 0,
            schema: 1,
        }
    }

    fn tier_field() -> ConfigEntry {
        ConfigEntry::Field {
            kind: Kind::Account,
            name: "tier".into(),
            entry: FieldEntry {
                label: "Tier".into(),
                ty: CustomType::Picklist,
                picklist: Some("tier".into()),
                refers_to: None,
                required: false,
                searchable: false,
                position: None,
                retired: false,
            },
        }
    }

    fn value(list: &str, value: &str, retired: bool) -> ConfigEntry {
        ConfigEntry::PickValue {
            list: list.into(),
            value: value.into(),
            entry: PickEntry {
                label: capitalised(value),
                position: None,
                retired,
            },
        }
    }

    #[test]
    fn entries_round_trip_through_their_fields() {
        for e in [tier_field(), value("tier", "gold", false)] {
            let fields = e.to_fields();
            let (path, v) = fields.iter().next().unwrap();
            assert_eq!(ConfigEntry::parse(path, v.as_str().unwrap()).unwrap(), e);
        }
        let err = ConfigEntry::parse("fields.account:tier", r#"{"label":"T","type":"colour"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("fields.account:tier") && err.contains("colour"),
            "{err}"
        );
        let err = ConfigEntry::parse("fields.account:tier", r#"{"label":"T","type":"picklist"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("names its picklist"), "{err}");
        assert!(ConfigEntry::parse("stages.x", r#"{"probability":101}"#).is_err());
        assert!(ConfigEntry::parse("stages. x", "{}").is_err());
        assert!(ConfigEntry::parse("things.x", "{}").is_err());
        let padded = format!("{{\"label\":\"T\"{}}}", " ".repeat(2000));
        assert!(matches!(
            ConfigEntry::parse("picklists.tier:gold", &padded),
            Err(Error::OversizeValue { .. })
        ));
    }

    #[test]
    fn the_configuration_overlays_the_defaults() {
        let record = config_record(&[
            tier_field(),
            value("tier", "gold", false),
            value("tier", "silver", true),
            value("lead_source", "partner", true),
            ConfigEntry::Stage {
                name: "discovery".into(),
                entry: StageEntry {
                    position: Some(15),
                    probability: Some(30),
                    ..Default::default()
                },
            },
            ConfigEntry::Stage {
                name: "lost".into(),
                entry: StageEntry {
                    retired: true,
                    ..Default::default()
                },
            },
        ]);
        let config = Config::new(Pipeline::default(), Some(&record));
        let stages: Vec<&str> = config
            .pipeline()
            .stages()
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(
            stages,
            [
                "lead",
                "discovery",
                "qualified",
                "proposal",
                "negotiation",
                "won",
                "lost"
            ]
        );
        assert_eq!(config.pipeline().probability("discovery"), 30);
        assert!(config.pipeline().is_retired("lost"));
        assert!(
            config.pipeline().contains("lost"),
            "retired stages stay valid"
        );
        assert!(!config.pipeline().active_stages().any(|s| s == "lost"));
        assert!(config.allows("tier", "gold") && config.allows("tier", "silver"));
        assert!(!config.allows("tier", "bronze"));
        assert!(config
            .picklist("lead_source")
            .iter()
            .any(|v| v.value == "partner" && v.retired));
        assert_eq!(
            config.custom_field(Kind::Account, "tier").unwrap().path(),
            "custom.tier"
        );
        assert!(config.custom_field(Kind::Contact, "tier").is_none());
        // No record: the defaults.
        assert_eq!(
            Config::new(Pipeline::default(), None).pipeline(),
            &Pipeline::default()
        );
    }

    fn touched(path: &str, now: Vec<Stored>) -> TouchedField {
        TouchedField {
            path: path.into(),
            now,
            replaces_object: false,
        }
    }

    #[test]
    fn entries_are_retired_not_removed_and_types_never_change() {
        let before = config_record(&[tier_field(), value("tier", "gold", false)]);
        let gone = touched("picklists.tier:gold", vec![]);
        let err = check_config_change(Some(&before), &before, &[gone])
            .unwrap_err()
            .to_string();
        assert!(err.contains("retire it instead"), "{err}");

        let mut retyped = tier_field();
        if let ConfigEntry::Field { entry, .. } = &mut retyped {
            entry.ty = CustomType::Text;
            entry.picklist = None;
        }
        let after = config_record(&[retyped.clone(), value("tier", "gold", false)]);
        let json = retyped.to_fields().into_values().next().unwrap();
        let t = touched(
            "fields.account:tier",
            vec![Stored::Str(json.as_str().unwrap().into())],
        );
        let err = check_config_change(Some(&before), &after, &[t])
            .unwrap_err()
            .to_string();
        assert!(err.contains("type never changes"), "{err}");

        // A picklist field needs its picklist.
        let lonely = config_record(&[tier_field()]);
        let json = tier_field().to_fields().into_values().next().unwrap();
        let t = touched(
            "fields.account:tier",
            vec![Stored::Str(json.as_str().unwrap().into())],
        );
        let err = check_config_change(None, &lonely, &[t])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such picklist"), "{err}");
    }

    fn rule(fields: &[&str], at_least: super::super::Standing, closed_only: bool) -> RuleEntry {
        RuleEntry {
            fields: fields.iter().map(|f| f.to_string()).collect(),
            at_least,
            closed_only,
            reason: "only managers change an account's owner".into(),
            retired: false,
        }
    }

    #[test]
    fn admins_write_rules_bind_by_standing_and_are_checked_when_read() {
        use super::super::{check_write_rules, Standing};
        let owner_rule = |retired: bool| ConfigEntry::Rule {
            kind: Kind::Account,
            name: "owner_by_managers".into(),
            entry: RuleEntry {
                retired,
                ..rule(&["owner", "custom.tier"], Standing::Manager, false)
            },
        };
        let config = Config::new(
            Pipeline::default(),
            Some(&config_record(&[owner_rule(false)])),
        );
        assert_eq!(config.write_rules().len(), 1);
        let account = Record {
            id: "a".into(),
            kind: Kind::Account,
            fields: Fields::new(),
            deleted: false,
            created_at: 0,
            created_by: "ann".into(),
            updated_at: 0,
            schema: 1,
        };
        let owner = [touched("owner", Vec::new())];
        let check = |config: &Config, before: Option<&Record>, touched: &[TouchedField], s| {
            check_write_rules(config, Kind::Account, before, touched, s)
        };
        let err = check(&config, Some(&account), &owner, Standing::Rep).unwrap_err();
        assert_eq!(
            err.to_string(),
            "you may not change \"owner\": only managers change an account's owner"
        );
        check(&config, Some(&account), &owner, Standing::Manager).unwrap();
        check(&config, None, &owner, Standing::Rep).expect("creating sets an owner");
        check(
            &config,
            Some(&account),
            &[touched("phone", Vec::new())],
            Standing::Rep,
        )
        .unwrap();
        check(
            &config,
            Some(&account),
            &[touched("custom.tier", Vec::new())],
            Standing::Rep,
        )
        .unwrap_err();
        let retired = Config::new(
            Pipeline::default(),
            Some(&config_record(&[owner_rule(true)])),
        );
        check(&retired, Some(&account), &owner, Standing::Rep)
            .expect("a retired rule binds no-one");
        // Round trip, and what a rule may not say.
        let entry = owner_rule(false);
        let (path, json) = entry.to_fields().into_iter().next().unwrap();
        assert_eq!(
            ConfigEntry::parse(&path, json.as_str().unwrap()).unwrap(),
            entry
        );
        for (fields, at_least, closed_only, says) in [
            (
                &["nope"][..],
                Standing::Manager,
                false,
                "not a field a account has",
            ),
            (&[][..], Standing::Manager, false, "names the fields"),
            (
                &["owner"][..],
                Standing::Rep,
                false,
                "everyone is at least a rep",
            ),
            (
                &["owner"][..],
                Standing::Manager,
                true,
                "only deals are won or lost",
            ),
            (
                &["merged_into"][..],
                Standing::Manager,
                false,
                "not a field",
            ),
        ] {
            let json = serde_json::to_string(&rule(fields, at_least, closed_only)).unwrap();
            let err = ConfigEntry::parse("rules.account:x", &json)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{err}");
        }
    }
}
