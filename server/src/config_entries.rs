//! The configuration entries an admin's action makes, from the
//! configuration as it is: one place for the office's settings page and
//! the CLI. The relay checks every entry again when it is written
//! (`fieldcrm_core::check_config_change`); these add what only the
//! current configuration can say (a name already taken, an unknown one)
//! in the admin's words.

use fieldcrm_core::{
    Config, ConfigEntry, CustomType, FieldEntry, Kind, PickEntry, RuleEntry, StageEntry,
    StageOutcome, Standing,
};

/// What a new custom field is.
#[derive(Debug, Clone)]
pub struct NewField {
    pub label: String,
    pub ty: CustomType,
    pub picklist: Option<String>,
    pub refers_to: Option<Kind>,
    pub required: bool,
    pub searchable: bool,
}

/// A new stage, after `after` (or at the end).
pub fn add_stage(
    config: &Config,
    name: &str,
    outcome: StageOutcome,
    probability: Option<i64>,
    after: Option<&str>,
) -> Result<ConfigEntry, String> {
    let pipeline = config.pipeline();
    if pipeline.contains(name) {
        return Err(format!("The pipeline has a stage “{name}” already."));
    }
    if let Some(after) = after.filter(|a| !pipeline.contains(a)) {
        return Err(format!("There is no stage “{after}” to put it after."));
    }
    Ok(ConfigEntry::Stage {
        name: name.to_string(),
        entry: StageEntry {
            position: Some(match after {
                Some(after) => config.position_after(after),
                None => config.position_after(""),
            }),
            outcome: Some(outcome),
            probability,
            retired: false,
        },
    })
}

/// Retires a stage (or restores it), keeping what else it says.
pub fn retire_stage(config: &Config, name: &str, retired: bool) -> Result<ConfigEntry, String> {
    let pipeline = config.pipeline();
    if !pipeline.contains(name) {
        return Err(format!("There is no stage “{name}”."));
    }
    let settings = pipeline.settings(name).cloned().unwrap_or_default();
    Ok(ConfigEntry::Stage {
        name: name.to_string(),
        entry: StageEntry {
            position: None,
            outcome: settings.outcome,
            probability: settings.probability,
            retired,
        },
    })
}

/// A new value of a picklist (a new picklist with its first value).
pub fn add_value(
    config: &Config,
    list: &str,
    value: &str,
    label: &str,
) -> Result<ConfigEntry, String> {
    let list = list.trim().to_lowercase().replace([' ', '-'], "_");
    if config.allows(&list, value) {
        return Err(format!(
            "The picklist “{list}” has the value “{value}” already."
        ));
    }
    Ok(ConfigEntry::PickValue {
        list: list.clone(),
        value: value.to_string(),
        entry: PickEntry {
            label: if label.trim().is_empty() {
                value
            } else {
                label
            }
            .to_string(),
            // After the values there are, whatever their names.
            position: Some(
                config
                    .picklist(&list)
                    .iter()
                    .map(|v| v.position)
                    .max()
                    .unwrap_or(0)
                    + 10,
            ),
            retired: false,
        },
    })
}

/// Retires a picklist value (or restores it), keeping its label.
pub fn retire_value(
    config: &Config,
    list: &str,
    value: &str,
    retired: bool,
) -> Result<ConfigEntry, String> {
    let existing = config
        .picklist(list)
        .iter()
        .find(|v| v.value == value)
        .ok_or_else(|| format!("The picklist “{list}” has no value “{value}”."))?;
    Ok(ConfigEntry::PickValue {
        list: list.to_string(),
        value: value.to_string(),
        entry: PickEntry {
            label: existing.label.clone(),
            position: None,
            retired,
        },
    })
}

/// A new custom field of `kind`.
pub fn add_field(
    config: &Config,
    kind: Kind,
    name: &str,
    new: NewField,
) -> Result<ConfigEntry, String> {
    let name = name.trim().to_lowercase().replace([' ', '-'], "_");
    if config.custom_field(kind, &name).is_some() {
        return Err(format!("{} have a field “{name}” already.", kind.plural()));
    }
    let picklist = new.picklist.filter(|_| new.ty == CustomType::Picklist);
    match &picklist {
        None if new.ty == CustomType::Picklist => {
            return Err(
                "Say which picklist a picklist field takes its values from (add its values first)."
                    .into(),
            )
        }
        Some(list) if config.picklist(list).is_empty() => {
            return Err(format!(
                "There is no picklist “{list}”: add its values first."
            ))
        }
        _ => {}
    }
    Ok(ConfigEntry::Field {
        kind,
        name: name.clone(),
        entry: FieldEntry {
            label: if new.label.trim().is_empty() {
                name.clone()
            } else {
                new.label
            },
            ty: new.ty,
            picklist,
            refers_to: new.refers_to.filter(|_| new.ty == CustomType::Reference),
            required: new.required,
            searchable: new.searchable,
            // After the kind's fields there are.
            position: Some(10 * (config.custom_fields_of(kind).count() as i64 + 1)),
            retired: false,
        },
    })
}

/// Retires a custom field (or restores it), keeping its definition.
pub fn retire_field(
    config: &Config,
    kind: Kind,
    name: &str,
    retired: bool,
) -> Result<ConfigEntry, String> {
    let field = config
        .custom_field(kind, name)
        .ok_or_else(|| format!("{} have no field “{name}”.", kind.plural()))?;
    Ok(ConfigEntry::Field {
        kind,
        name: name.to_string(),
        entry: FieldEntry {
            retired,
            ..field.entry.clone()
        },
    })
}

/// A new write rule: `fields` of `kind` (comma-separated paths are split
/// by the callers) changed only by writers of at least `at_least`.
pub fn add_rule(
    config: &Config,
    kind: Kind,
    name: &str,
    fields: Vec<String>,
    at_least: &str,
    closed_only: bool,
    reason: &str,
) -> Result<ConfigEntry, String> {
    let name = name.trim().to_lowercase().replace([' ', '-'], "_");
    if config
        .write_rules()
        .iter()
        .any(|r| r.kind == kind && r.name == name)
    {
        return Err(format!("{} have a rule “{name}” already.", kind.plural()));
    }
    let at_least = match at_least.trim() {
        "manager" | "managers" => Standing::Manager,
        "office" => Standing::Office,
        "admin" | "admins" => Standing::Admin,
        other => {
            return Err(format!(
                "“{other}” is not manager, office or admin (who may still change the fields)."
            ))
        }
    };
    let fields: Vec<String> = fields
        .iter()
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect();
    Ok(ConfigEntry::Rule {
        kind,
        name,
        entry: RuleEntry {
            fields,
            at_least,
            closed_only,
            reason: reason.trim().to_string(),
            retired: false,
        },
    })
}

/// Retires a write rule (or restores it).
pub fn retire_rule(
    config: &Config,
    kind: Kind,
    name: &str,
    retired: bool,
) -> Result<ConfigEntry, String> {
    let rule = config
        .write_rules()
        .iter()
        .find(|r| r.kind == kind && r.name == name)
        .ok_or_else(|| format!("{} have no rule “{name}”.", kind.plural()))?;
    Ok(ConfigEntry::Rule {
        kind,
        name: name.to_string(),
        entry: RuleEntry {
            retired,
            ..rule.entry.clone()
        },
    })
}
