//! Record forms: one input per field of a kind, and the way back from what
//! a browser posts to validated field values, with a message per field.

use std::collections::BTreeMap;

use super::zone::Zone;
use fieldcrm_core::{
    normalize_value, validate_custom_name, value_from_text, Config, CustomField, CustomType,
    FieldSpec, FieldType, Fields, Kind, Value, CUSTOM_PREFIX,
};
use maud::{html, Markup};

use super::layout::field_label;

/// What the selects of a form offer.
#[derive(Debug, Default)]
pub struct Choices {
    /// The organisation configuration: stages, picklists, custom fields.
    pub config: Config,
    pub territories: Vec<String>,
    /// The users a record may be given to.
    pub owners: Vec<String>,
}

/// The form key of a picker's name box: `account_id.name` beside the
/// `account_id` it chooses (see `names::resolve_pickers`).
pub fn name_key(path: &str) -> String {
    format!("{path}.name")
}

/// Messages by field path ("" for the form as a whole).
pub type Errors = BTreeMap<String, String>;

/// The inputs for every built-in field of `kind`, filled from `values`.
pub fn inputs(
    kind: Kind,
    values: &BTreeMap<String, String>,
    errors: &Errors,
    choices: &Choices,
) -> Markup {
    let (location, plain): (Vec<&FieldSpec>, Vec<&FieldSpec>) = kind
        .fields()
        .iter()
        .filter(|s| !s.by_action)
        .partition(|s| matches!(s.ty, FieldType::Latitude | FieldType::Longitude));
    // Coordinates are rarely typed: they sit in a group of their own,
    // open when they hold something or something is wrong with them.
    let location_open = location
        .iter()
        .any(|s| values.get(s.path).is_some_and(|v| !v.is_empty()) || errors.contains_key(s.path));
    html! {
        @for spec in plain { (field_input(spec, values, errors, choices)) }
        @if !location.is_empty() {
            details.location open[location_open] {
                summary { "Location (latitude and longitude)" }
                @for spec in location { (field_input(spec, values, errors, choices)) }
            }
        }
        (custom_inputs(kind, values, errors, choices))
    }
}

/// One built-in field's label, input and message.
fn field_input(
    spec: &FieldSpec,
    values: &BTreeMap<String, String>,
    errors: &Errors,
    choices: &Choices,
) -> Markup {
    html! {
        @let path = spec.path;
        @let current = values.get(path).map(String::as_str).unwrap_or("");
        @let error = errors.get(path);
        div class=(if error.is_some() { "field invalid" } else { "field" }) {
            label for=(path) {
                (field_label(path))
                @if spec.required { span.req title="required" { " *" } }
            }
            @match spec.ty {
                FieldType::LongText => textarea id=(path) name=(path) rows="4" { (current) },
                FieldType::Bool => {
                    input type="hidden" name=(path) value="false";
                    input id=(path) name=(path) type="checkbox" value="true" checked[current == "true"];
                }
                FieldType::Stage => (select(path, current, choices.config.pipeline().active_stages().map(|s| (s.as_str(), s.as_str())), spec.required)),
                FieldType::Choice(values) => (select(path, current, values.iter().map(|k| (*k, *k)), spec.required)),
                FieldType::Picklist(list) => (pick_select(path, current, &choices.config, list, spec.required)),
                FieldType::Ref(target) => (picker(path, target, current, values.get(&name_key(path)).map_or("", String::as_str), error.is_some())),
                // The catalogue lives in the shared territory, and only there.
                _ if path == "territory" && current == fieldcrm_core::SHARED_TERRITORY => (select(path, current, std::iter::empty(), spec.required)),
                _ if path == "territory" => (select(path, current, choices.territories.iter().map(|t| (t.as_str(), t.as_str())), spec.required)),
                _ if path == "owner" => {
                    input id=(path) name=(path) value=(current) list="owner-choices" autocomplete="off" aria-invalid=[error.map(|_| "true")];
                    datalist id="owner-choices" { @for u in &choices.owners { option value=(u) {} } }
                }
                ty => input id=(path) name=(path) type=(input_type(ty)) value=(current)
                    step=[matches!(ty, FieldType::Latitude | FieldType::Longitude).then_some("any")]
                    placeholder=[placeholder(ty)]
                    aria-invalid=[error.map(|_| "true")];
            }
            @if let Some(error) = error {
                span.field-error id=(format!("error-{path}")) role="alert" { (error) }
            }
        }
    }
}

/// A record picker: a name box with type-ahead suggestions (app.js asks
/// `/lookup`), and the chosen record's id beside it. Without script, the
/// typed name is looked up when the form is saved.
pub(super) fn picker(
    path: &str,
    target: Option<Kind>,
    id: &str,
    name: &str,
    invalid: bool,
) -> Markup {
    let lookup = target.map_or("any", Kind::as_str);
    let suggestions = format!("{path}-suggestions");
    html! {
        div.picker {
            input type="hidden" name=(path) value=(id);
            input id=(path) name=(name_key(path)) type="text" value=(name) autocomplete="off"
                data-lookup=(lookup) placeholder="Type a name" role="combobox"
                aria-autocomplete="list" aria-expanded="false" aria-controls=(suggestions)
                aria-invalid=[invalid.then_some("true")];
            ul.suggestions id=(suggestions) role="listbox" hidden {}
        }
    }
}

/// A select of a picklist's values that are not retired (and the current
/// one, retired or not).
fn pick_select(path: &str, current: &str, config: &Config, list: &str, required: bool) -> Markup {
    let offered = config
        .picklist(list)
        .iter()
        .filter(|v| !v.retired || v.value == current)
        .map(|v| (v.value.as_str(), v.label.as_str()));
    select(path, current, offered, required)
}

fn select<'a>(
    path: &str,
    current: &str,
    options: impl Iterator<Item = (&'a str, &'a str)>,
    required: bool,
) -> Markup {
    let mut options: Vec<(&str, &str)> = options.collect();
    if !current.is_empty() && !options.iter().any(|(v, _)| *v == current) {
        // Keep a value the list does not offer (a stage since removed...).
        options.insert(0, (current, current));
    }
    html! {
        select id=(path) name=(path) required[required] {
            option value="" { "—" }
            @for (value, label) in options {
                option value=(value) selected[value == current] { (label) }
            }
        }
    }
}

fn input_type(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Email => "email",
        FieldType::Phone => "tel",
        FieldType::Url => "url",
        FieldType::Percent
        | FieldType::Latitude
        | FieldType::Longitude
        | FieldType::Number
        | FieldType::Integer => "number",
        FieldType::Timestamp => "datetime-local",
        FieldType::Date => "date",
        _ => "text",
    }
}

fn placeholder(ty: FieldType) -> Option<&'static str> {
    match ty {
        FieldType::Amount => Some("1234.50"),
        FieldType::Currency => Some("EUR"),
        _ => None,
    }
}

/// A record's values as form strings.
pub fn form_values(
    kind: Kind,
    fields: &Fields,
    config: &Config,
    zone: &Zone,
) -> BTreeMap<String, String> {
    let mut values: BTreeMap<String, String> = fields
        .iter()
        .map(|(path, value)| {
            let ty = config.field_type(kind, path);
            (path.clone(), form_string(ty, value, zone))
        })
        .collect();
    // An ad-hoc custom field keeps the kind of value it holds when edited
    // as text (a defined one has its type).
    for (path, value) in fields {
        if let Some(name) = path
            .strip_prefix(CUSTOM_PREFIX)
            .filter(|n| config.custom_field(kind, n).is_none())
        {
            let hint = match value {
                Value::Int(_) => "integer",
                Value::Float(_) => "number",
                Value::Bool(_) => "boolean",
                _ => continue,
            };
            values.insert(format!("{CUSTOM_TYPE}{name}"), hint.into());
        }
    }
    values
}

/// Form keys: the kind of value a custom field holds (`custom_type.tier`),
/// and a new custom field's name and value.
const CUSTOM_TYPE: &str = "custom_type.";
const NEW_CUSTOM_NAME: &str = "new_custom_name";
const NEW_CUSTOM_VALUE: &str = "new_custom_value";

/// One custom field the configuration defines: an input of its type.
fn defined_input(
    def: &CustomField,
    values: &BTreeMap<String, String>,
    errors: &Errors,
    config: &Config,
) -> Markup {
    let path = def.path();
    let current = values.get(&path).map_or("", String::as_str);
    let error = errors.get(&path);
    let required = def.entry.required;
    html! {
        div class=(if error.is_some() { "field invalid" } else { "field" }) {
            label for=(path) {
                (def.entry.label)
                @if required { span.req title="required" { " *" } }
                @if def.entry.retired { span.muted { " (retired)" } }
            }
            @match (def.entry.ty, &def.entry.picklist) {
                (CustomType::Picklist, Some(list)) => (pick_select(&path, current, config, list, required)),
                (CustomType::Boolean, _) => {
                    input type="hidden" name=(path) value="false";
                    input id=(path) name=(path) type="checkbox" value="true" checked[current == "true"];
                }
                (CustomType::Reference, _) => (picker(&path, def.entry.refers_to, current, values.get(&name_key(&path)).map_or("", String::as_str), error.is_some())),
                _ => {
                    @let ty = def.field_type();
                    input id=(path) name=(path) type=(input_type(ty)) value=(current)
                        step=[(ty == FieldType::Number).then_some("any")]
                        placeholder=[placeholder(ty)]
                        aria-invalid=[error.map(|_| "true")];
                }
            }
            @if let Some(error) = error {
                span.field-error id=(format!("error-{path}")) role="alert" { (error) }
            }
        }
    }
}

/// The inputs for a record's custom fields: those the configuration
/// defines (retired ones only while they hold a value), then ad-hoc ones,
/// and one to add an ad-hoc field.
fn custom_inputs(
    kind: Kind,
    values: &BTreeMap<String, String>,
    errors: &Errors,
    choices: &Choices,
) -> Markup {
    let config = &choices.config;
    let defined: Vec<&CustomField> = config
        .custom_fields_of(kind)
        .filter(|f| !f.entry.retired || values.get(&f.path()).is_some_and(|v| !v.is_empty()))
        .collect();
    let custom: Vec<(&str, &String)> = values
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(CUSTOM_PREFIX)?, v)))
        .filter(|(name, _)| config.custom_field(kind, name).is_none())
        .collect();
    html! {
        fieldset.custom {
            legend { "Custom fields" }
            @for def in &defined { (defined_input(def, values, errors, config)) }
            @for (name, value) in &custom {
                @let path = format!("{CUSTOM_PREFIX}{name}");
                @let error = errors.get(&path);
                div class=(if error.is_some() { "field invalid" } else { "field" }) {
                    label for=(path) { (name) }
                    input id=(path) name=(path) value=(value) aria-invalid=[error.map(|_| "true")];
                    @if let Some(hint) = values.get(&format!("{CUSTOM_TYPE}{name}")) {
                        input type="hidden" name=(format!("{CUSTOM_TYPE}{name}")) value=(hint);
                    }
                    @if let Some(error) = error { span.field-error id=(format!("error-{path}")) role="alert" { (error) } }
                }
            }
            @let error = errors.get(NEW_CUSTOM_NAME);
            div class=(if error.is_some() { "field invalid" } else { "field" }) {
                label for=(NEW_CUSTOM_NAME) { "Add a field" }
                div.pair {
                    input id=(NEW_CUSTOM_NAME) name=(NEW_CUSTOM_NAME) placeholder="name, like tier" value=(values.get(NEW_CUSTOM_NAME).map_or("", String::as_str)) aria-invalid=[error.map(|_| "true")];
                    input name=(NEW_CUSTOM_VALUE) placeholder="value" aria-label="Value of the new field" value=(values.get(NEW_CUSTOM_VALUE).map_or("", String::as_str));
                }
                @if let Some(error) = error { span.field-error id=(format!("error-{NEW_CUSTOM_NAME}")) role="alert" { (error) } }
            }
        }
    }
}

/// A custom field's typed text as the kind of value it held before.
fn custom_value(raw: &str, hint: &str) -> Result<Value, String> {
    let bad = |what: &str| format!("“{raw}” is not {what}; this field holds them.");
    Ok(match hint {
        "integer" => Value::Int(raw.parse().map_err(|_| bad("a whole number"))?),
        "number" => Value::Float(raw.parse().map_err(|_| bad("a number"))?),
        "boolean" => match raw.to_lowercase().as_str() {
            "true" | "yes" => Value::Bool(true),
            "false" | "no" => Value::Bool(false),
            _ => return Err(bad("yes or no")),
        },
        _ => Value::Text(raw.to_string()),
    })
}

/// The custom fields a form posts, validated; edits clear emptied ones.
fn parse_custom(
    kind: Kind,
    form: &[(String, String)],
    config: &Config,
    creating: bool,
    fields: &mut Fields,
    errors: &mut Errors,
) {
    let posted = |key: &str| {
        form.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim())
    };
    let mut add = |path: String, value: Result<Value, String>, error_key: &str| {
        let checked =
            value.and_then(|v| normalize_value(kind, &path, v, config).map_err(|e| e.to_string()));
        match checked {
            Ok(value) => {
                fields.insert(path, value);
            }
            Err(message) => {
                errors.insert(error_key.to_string(), message);
            }
        }
    };
    let mut seen: Vec<&str> = Vec::new();
    for (key, _) in form {
        let Some(name) = key.strip_prefix(CUSTOM_PREFIX) else {
            continue;
        };
        if seen.contains(&name) {
            continue;
        }
        seen.push(name);
        // A checkbox posts a hidden "false" and, when ticked, "true" after it.
        let raw = posted(key).unwrap_or("");
        let def = config.custom_field(kind, name);
        if raw.is_empty() {
            if def.is_some_and(|d| d.entry.required) {
                add(key.clone(), Err("This is required.".into()), key);
            } else if !creating {
                add(key.clone(), Ok(Value::Null), key);
            }
            continue;
        }
        let value = match def {
            Some(def) => {
                let ty = def.field_type();
                value_from_text(ty, raw).map_err(|_| plain_problem(ty, raw, config, None))
            }
            None => custom_value(
                raw,
                posted(&format!("{CUSTOM_TYPE}{name}")).unwrap_or("text"),
            ),
        };
        add(key.clone(), value, key);
    }
    if let (Some(name), Some(value)) = (posted(NEW_CUSTOM_NAME), posted(NEW_CUSTOM_VALUE)) {
        if !name.is_empty() {
            let name = name.to_lowercase().replace([' ', '-'], "_");
            match validate_custom_name(&name) {
                Ok(()) if value.is_empty() => {
                    errors.insert(
                        NEW_CUSTOM_NAME.into(),
                        format!("Give “{name}” a value, or leave the name empty."),
                    );
                }
                Ok(()) => add(
                    format!("{CUSTOM_PREFIX}{name}"),
                    Ok(Value::Text(value.to_string())),
                    NEW_CUSTOM_NAME,
                ),
                Err(_) => add(
                    String::new(),
                    Err(format!("“{name}” cannot name a field: use letters a-z, digits and _, starting with a letter (at most 64).")),
                    NEW_CUSTOM_NAME,
                ),
            }
        }
    }
    if creating {
        for def in config
            .custom_fields_of(kind)
            .filter(|d| d.entry.required && !d.entry.retired)
        {
            let path = def.path();
            if !fields.contains_key(&path) && !errors.contains_key(&path) {
                errors.insert(path, "This is required.".into());
            }
        }
    }
}

fn form_string(ty: Option<FieldType>, value: &Value, zone: &Zone) -> String {
    match (value, ty) {
        (Value::Null, _) => String::new(),
        (Value::Int(minor), Some(FieldType::Amount)) => {
            let sign = if *minor < 0 { "-" } else { "" };
            format!(
                "{sign}{}.{:02}",
                minor.unsigned_abs() / 100,
                minor.unsigned_abs() % 100
            )
        }
        (Value::Int(ms), Some(FieldType::Timestamp)) => zone.input(*ms),
        (Value::Text(s), _) => s.clone(),
        (other, _) => other.to_string(),
    }
}

/// Parses a posted form into field values for `kind`, times in `zone`.
/// Fields the form does not carry are left out; empty ones are `Null`
/// (cleared). When `creating`, required fields must be present, but for
/// `owner`, which defaults to the user who creates the record.
pub fn parse(
    kind: Kind,
    form: &[(String, String)],
    config: &Config,
    creating: bool,
    zone: &Zone,
) -> (Fields, Errors) {
    let mut fields = Fields::new();
    let mut errors = Errors::new();
    for spec in kind.fields() {
        // `owner` defaults to the creator; a lead's or case's status and a
        // case's priority start as the kind says.
        let defaulted = spec.path == "owner"
            || kind
                .creation_defaults()
                .iter()
                .any(|(p, _)| *p == spec.path);
        let required = creating && spec.required && !defaulted;
        // A checkbox posts a hidden "false" and, when ticked, "true" after it.
        let Some(raw) = form
            .iter()
            .rev()
            .find(|(k, _)| k == spec.path)
            .map(|(_, v)| v.trim())
        else {
            if required {
                errors.insert(spec.path.into(), "This is required.".into());
            }
            continue;
        };
        if raw.is_empty() {
            if required {
                errors.insert(spec.path.into(), "This is required.".into());
            } else if !creating {
                fields.insert(spec.path.into(), Value::Null);
            }
            continue;
        }
        let parsed = typed_value(spec.ty, raw, zone)
            .map_err(|_| None)
            .and_then(|v| normalize_value(kind, spec.path, v, config).map_err(Some));
        match parsed {
            Ok(value) => {
                fields.insert(spec.path.into(), value);
            }
            Err(error) => {
                let message = plain_problem(spec.ty, raw, config, error.as_ref());
                errors.insert(spec.path.into(), message);
            }
        }
    }
    parse_custom(kind, form, config, creating, &mut fields, &mut errors);
    (fields, errors)
}

/// Typed text as a value of `ty`, a time read in the user's zone.
pub fn typed_value(ty: FieldType, raw: &str, zone: &Zone) -> Result<Value, String> {
    match ty {
        FieldType::Timestamp => zone.parse(raw).map(Value::Int),
        _ => value_from_text(ty, raw),
    }
}

/// What is wrong with what was typed into a field, said the way a person
/// would say it, with an example of what fits.
fn plain_problem(
    ty: FieldType,
    typed: &str,
    config: &Config,
    error: Option<&fieldcrm_core::Error>,
) -> String {
    if let Some(fieldcrm_core::Error::OversizeValue { len, max, .. }) = error {
        return format!(
            "This is too long: it can hold {max} bytes (a plain letter is one, an accented letter two or more) and this is {len}."
        );
    }
    let shown: String = typed.chars().take(40).collect();
    match ty {
        FieldType::Email => format!("“{shown}” is not an email address; type one like ada@example.com."),
        FieldType::Phone => format!(
            "“{shown}” is not a phone number; use digits, spaces and + - ( ) . x /, like +44 20 7946 0000."
        ),
        FieldType::Url => format!("“{shown}” is not a web address; type one like example.com."),
        FieldType::Amount => format!(
            "“{shown}” is not an amount; type one like 1200 or 1,200.50 (at most two decimals)."
        ),
        FieldType::Percent => {
            format!("“{shown}” is not a percentage; type a whole number from 0 to 100.")
        }
        FieldType::Latitude => "Type a latitude from -90 to 90, like 51.5074.".into(),
        FieldType::Longitude => "Type a longitude from -180 to 180, like -0.1278.".into(),
        FieldType::Timestamp => format!(
            "“{shown}” is not a date and time; pick one, or type it like 2026-03-31 14:30."
        ),
        FieldType::Date => format!("“{shown}” is not a date; pick one, or type it like 2026-03-31."),
        FieldType::Currency => format!(
            "“{shown}” is not a currency code; type three letters, like EUR, GBP or USD."
        ),
        FieldType::Stage => format!(
            "“{shown}” is not a stage; choose one of {}.",
            config
                .pipeline()
                .active_stages()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        FieldType::Choice(values) => format!("Choose one of {}.", values.join(", ")),
        FieldType::Picklist(list) => format!(
            "Choose one of {}.",
            config
                .picklist(list)
                .iter()
                .filter(|v| !v.retired)
                .map(|v| v.label.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        FieldType::Number => format!("“{shown}” is not a number; type one like 12.5."),
        FieldType::Integer => format!("“{shown}” is not a whole number; type one like 12."),
        FieldType::Ref(_) => "Choose a record from the suggestions.".into(),
        FieldType::Bool => "Tick the box, or leave it empty.".into(),
        FieldType::Text | FieldType::LongText => format!(
            "This cannot be saved as typed ({}).",
            error.map(|e| e.to_string()).unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_posts_become_validated_fields_with_messages() {
        let pipeline = Config::default();
        let form = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let (fields, errors) = parse(
            Kind::Deal,
            &form(&[
                ("name", "Big"),
                ("stage", "nope"),
                ("amount", "12.5"),
                ("probability", ""),
            ]),
            &pipeline,
            true,
            &Zone::default(),
        );
        assert_eq!(fields["amount"], Value::Int(1_250));
        assert!(!fields.contains_key("probability"));
        assert!(errors["stage"].contains("nope"), "{errors:?}");
        assert_eq!(errors["territory"], "This is required.");
        assert!(
            errors["stage"].contains("choose one of lead, qualified"),
            "{errors:?}"
        );
        // Messages in a person's words, with an example that fits.
        let (_, errors) = parse(
            Kind::Contact,
            &form(&[
                ("phone", "call me"),
                ("email", "ada at example"),
                ("first_name", &"x".repeat(fieldcrm_core::MAX_TEXT + 1)),
            ]),
            &pipeline,
            false,
            &Zone::default(),
        );
        assert_eq!(
            errors["phone"],
            "“call me” is not a phone number; use digits, spaces and + - ( ) . x /, like +44 20 7946 0000."
        );
        assert!(errors["email"].starts_with("“ada at example” is not an email address"));
        assert!(
            errors["first_name"].starts_with("This is too long"),
            "{errors:?}"
        );
        for message in errors.values() {
            assert!(!message.contains("invalid value for field"), "{message}");
        }
        let (fields, errors) = parse(
            Kind::Activity,
            &form(&[
                ("done", "false"),
                ("done", "true"),
                ("due_at", "2026-11-24T10:30"),
                ("subject", ""),
            ]),
            &pipeline,
            false,
            &Zone::default(),
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(fields["done"], Value::Bool(true));
        assert_eq!(fields["subject"], Value::Null);
        let utc = Zone::default();
        assert_eq!(
            form_string(Some(FieldType::Timestamp), &fields["due_at"], &utc),
            "2026-11-24T10:30"
        );
        assert_eq!(
            form_string(Some(FieldType::Amount), &Value::Int(1_250), &utc),
            "12.50"
        );
        // A time typed in Tokyo is stored as UTC and shown back as typed.
        let tokyo = Zone::named("Asia/Tokyo").unwrap();
        let (fields, _) = parse(
            Kind::Activity,
            &form(&[("due_at", "2026-11-24T10:30")]),
            &pipeline,
            false,
            &tokyo,
        );
        assert_eq!(
            form_string(Some(FieldType::Timestamp), &fields["due_at"], &utc),
            "2026-11-24T01:30"
        );
        assert_eq!(
            form_string(Some(FieldType::Timestamp), &fields["due_at"], &tokyo),
            "2026-11-24T10:30"
        );
    }
}
