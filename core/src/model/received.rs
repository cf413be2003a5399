//! Validation of changes received from elsewhere (the relay checking a
//! push): the record they leave must satisfy the same rules a local edit
//! does. A local edit is checked field by field before it is written; a
//! received change arrives written, so the check looks at what the change
//! *touched* — every value each touched field now holds, concurrent ones
//! included, and how it is stored — and at nothing else, so a rule added
//! later never refuses an edit for a field it did not touch.

use super::{
    normalize_value, validate_custom_name, Config, FieldType, Kind, Value, CONFIG_MAPS,
    CUSTOM_PREFIX, DOC_SCHEMA_VERSION, MAX_LONG_TEXT, SHARED_TERRITORY,
};
use crate::error::{Error, Result};

/// A value as a record's document stores it. Long text is an Automerge
/// Text object; every other field is a scalar (`Str`, not Text, for short
/// text).
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Timestamp(i64),
    Null,
    /// An Automerge Text object and its content.
    Text(String),
    Map,
    List,
    /// A scalar type no field holds (bytes, counters, unknown types).
    Other(&'static str),
}

/// One field a set of changes touched: a dotted path as readers address it
/// (`name`, `address.city`, `custom.tier`; the map itself for `address`).
#[derive(Debug, Clone, PartialEq)]
pub struct TouchedField {
    pub path: String,
    /// Every value the field holds now, the one readers see first; empty
    /// when the field was removed.
    pub now: Vec<Stored>,
    /// The changes put a new object (map, text) where one stood before:
    /// edits others make inside the old one would silently vanish.
    pub replaces_object: bool,
}

/// What a receiver knows beyond the record itself, to check references,
/// owners and territories.
pub trait Directory {
    /// The kind of a record a reference may point at and whether it is
    /// deleted; `None` if there is no such record *that the author may
    /// see* (the two must answer alike, or references would probe).
    fn record(&self, id: &str) -> Result<Option<(Kind, bool)>>;
    /// Whether `id` names a user.
    fn is_user(&self, id: &str) -> Result<bool>;
    /// Whether `name` names a territory.
    fn is_territory(&self, name: &str) -> Result<bool>;
}

/// The rules a received change is checked against.
#[derive(Clone, Copy)]
pub struct Rules<'a> {
    /// The organisation configuration in force (pipeline, picklists,
    /// custom fields).
    pub config: &'a Config,
    /// The user the change is from (its message), who must be `created_by`
    /// of a record it creates.
    pub author: &'a str,
    pub directory: &'a dyn Directory,
    /// The writer's standing, for the write rules ([`super::WRITE_RULES`]).
    pub standing: super::Standing,
}

impl std::fmt::Debug for Rules<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field("author", &self.author)
            .finish_non_exhaustive()
    }
}

/// Root keys every document holds besides the kind's fields.
const META: [&str; 6] = [
    "id",
    "type",
    "schema",
    "created_at",
    "created_by",
    "deleted",
];

/// Checks the fields that changes to a `kind` record touched. `creating`:
/// the changes made the record (it had no kind before them).
pub fn check_received(
    kind: Kind,
    creating: bool,
    touched: &[TouchedField],
    rules: &Rules<'_>,
) -> Result<()> {
    for field in touched {
        check_touched(kind, creating, field, rules)?;
    }
    if creating {
        let present = |path: &str| {
            touched
                .iter()
                .find(|t| t.path == path)
                .and_then(|t| t.now.first())
                .is_some_and(|v| !is_blank(v))
        };
        let required = kind
            .fields()
            .iter()
            .filter(|f| f.required)
            .map(|f| f.path.to_string())
            .chain(META.map(String::from))
            .chain(
                rules
                    .config
                    .custom_fields_of(kind)
                    .filter(|f| f.entry.required && !f.entry.retired)
                    .map(|f| f.path()),
            );
        if let Some(missing) = required.into_iter().find(|p| !present(p)) {
            return Err(Error::MissingField {
                kind,
                field: missing,
            });
        }
    }
    Ok(())
}

fn check_touched(
    kind: Kind,
    creating: bool,
    field: &TouchedField,
    rules: &Rules<'_>,
) -> Result<()> {
    let path = field.path.as_str();
    let unknown = || Error::UnknownField {
        kind,
        field: path.to_string(),
    };
    if META.contains(&path) {
        return check_meta(path, creating, field, rules);
    }
    if is_nested_map(kind, path) {
        // The maps are made with the record; a change that replaces one
        // would hide every field in it behind a competing map.
        return match (&field.now[..], field.replaces_object) {
            ([Stored::Map], false) => Ok(()),
            (_, true) => Err(Error::CompetingObject {
                field: path.to_string(),
            }),
            (values, false) => Err(refused(path, show_all(values), "expected a map of fields")),
        };
    }
    if kind == Kind::Config {
        if let Some((map, _)) = path.split_once('.') {
            if CONFIG_MAPS.contains(&map) {
                // Entries are checked with the record before and after
                // (`check_config_change`).
                return Ok(());
            }
        }
    }
    if let Some(id) = path
        .strip_prefix("attachments.")
        .filter(|_| kind != Kind::Config)
    {
        return check_attachment(path, id, field);
    }
    if let Some(line) = path.strip_prefix("lines.").filter(|_| kind == Kind::Order) {
        return check_order_line(path, line, field, rules);
    }
    if let Some(name) = path
        .strip_prefix(CUSTOM_PREFIX)
        .filter(|_| kind != Kind::Config)
    {
        if name.contains('.') {
            return Err(unknown());
        }
        validate_custom_name(name)?;
        let Some(def) = rules.config.custom_field(kind, name) else {
            for value in &field.now {
                check_custom(path, value)?;
            }
            return Ok(());
        };
        let ty = def.field_type();
        for value in &field.now {
            let value = scalar_value(path, ty, value)?;
            check_scalar(kind, path, ty, value, rules)?;
        }
        if def.entry.required && field.now.first().is_none_or(is_blank) {
            return Err(Error::MissingField {
                kind,
                field: path.to_string(),
            });
        }
        return Ok(());
    }
    let spec = kind.field(path).ok_or_else(unknown)?;
    if spec.ty == FieldType::LongText {
        return check_long_text(path, field);
    }
    for value in &field.now {
        let value = scalar_value(path, spec.ty, value)?;
        check_scalar(kind, path, spec.ty, value, rules)?;
    }
    if spec.required && field.now.first().is_none_or(is_blank) {
        return Err(Error::MissingField {
            kind,
            field: path.to_string(),
        });
    }
    Ok(())
}

fn check_meta(path: &str, creating: bool, field: &TouchedField, rules: &Rules<'_>) -> Result<()> {
    match path {
        // The record's identity is checked where the document is applied.
        "id" | "type" => Ok(()),
        "deleted" => field.now.iter().try_for_each(|v| match v {
            Stored::Bool(_) => Ok(()),
            other => Err(refused(path, show(other), "expected true or false")),
        }),
        _ if !creating => Err(refused(
            path,
            show_all(&field.now),
            "it is set when the record is created and never changes",
        )),
        "schema" => field.now.iter().try_for_each(|v| match v {
            Stored::Int(DOC_SCHEMA_VERSION) => Ok(()),
            Stored::Int(n) if *n > DOC_SCHEMA_VERSION => Err(refused(
                path,
                n,
                &format!(
                    "records of schema {n} are newer than this build understands ({DOC_SCHEMA_VERSION}); upgrade it"
                ),
            )),
            other => Err(refused(
                path,
                show(other),
                &format!("expected the integer {DOC_SCHEMA_VERSION}"),
            )),
        }),
        "created_at" => field.now.iter().try_for_each(|v| match v {
            Stored::Timestamp(ms) | Stored::Int(ms) => check_time(*ms),
            other => Err(refused(
                path,
                show(other),
                "expected a time in milliseconds since the Unix epoch",
            )),
        }),
        "created_by" => field.now.iter().try_for_each(|v| match v {
            Stored::Str(user) if user == rules.author => Ok(()),
            other => Err(refused(
                path,
                show(other),
                &format!("a record is created by its author, {:?}", rules.author),
            )),
        }),
        _ => Ok(()),
    }
}

fn check_long_text(path: &str, field: &TouchedField) -> Result<()> {
    for value in &field.now {
        match value {
            Stored::Text(text) if text.len() > MAX_LONG_TEXT => {
                return Err(Error::OversizeValue {
                    field: path.to_string(),
                    len: text.len(),
                    max: MAX_LONG_TEXT,
                })
            }
            Stored::Text(_) => {}
            other => {
                return Err(refused(
                    path,
                    show(other),
                    "long text is stored as an Automerge Text object, not a plain string",
                ))
            }
        }
    }
    if field.replaces_object {
        return Err(refused(
            path,
            show_all(&field.now),
            "edit long text with splices; a new Text object would drop what others write into the old one",
        ));
    }
    Ok(())
}

/// The value a scalar field's stored form stands for, refusing forms a
/// local edit never writes (which [`normalize_value`] could not tell apart).
fn scalar_value(path: &str, ty: FieldType, stored: &Stored) -> Result<Value> {
    let shape_error = |reason: &str| Err(refused(path, show(stored), reason));
    match (stored, ty) {
        (Stored::Null, _) => Ok(Value::Null),
        (Stored::Text(_), _) => shape_error(
            "stored as long text (an Automerge Text object); this field holds a plain string",
        ),
        (Stored::Map | Stored::List | Stored::Other(_), _) => {
            shape_error(&format!("expected {}", describe(ty)))
        }
        (Stored::Timestamp(t), FieldType::Timestamp) => Ok(Value::Int(*t)),
        (Stored::Timestamp(_), _) => {
            shape_error(&format!("stored as a timestamp; expected {}", describe(ty)))
        }
        (Stored::Str(s), _) => Ok(Value::Text(s.clone())),
        (Stored::Int(i), _) => Ok(Value::Int(*i)),
        (Stored::Float(x), _) => Ok(Value::Float(*x)),
        (Stored::Bool(b), _) => Ok(Value::Bool(*b)),
    }
}

fn check_scalar(
    kind: Kind,
    path: &str,
    ty: FieldType,
    value: Value,
    rules: &Rules<'_>,
) -> Result<()> {
    if value.is_null() {
        return Ok(());
    }
    let normal = normalize_value(kind, path, value.clone(), rules.config)?;
    if !same_stored_form(&normal, &value) {
        return Err(refused(
            path,
            &value,
            &format!("not in stored form; a local edit stores {normal}"),
        ));
    }
    let Value::Text(text) = &value else {
        return Ok(());
    };
    match ty {
        FieldType::Ref(expected) => {
            crate::store::check_reference(&|id| rules.directory.record(id), path, text, expected)
        }
        _ if path == "owner" && !rules.directory.is_user(text)? => {
            Err(refused(path, &value, "no such user"))
        }
        _ if path == "territory" && kind.shared() => match text.as_str() {
            SHARED_TERRITORY => Ok(()),
            _ => Err(refused(
                path,
                &value,
                &format!(
                    "{} are in {SHARED_TERRITORY:?}, every user's",
                    kind.plural()
                ),
            )),
        },
        _ if path == "territory" && !rules.directory.is_territory(text)? => {
            Err(refused(path, &value, "no such territory"))
        }
        _ => Ok(()),
    }
}

/// An order line as pushed: a line id without dots, JSON that reads as a
/// line, and a product that is a live product; or `null` (removed).
fn check_order_line(path: &str, id: &str, field: &TouchedField, rules: &Rules<'_>) -> Result<()> {
    super::validate_id(path, id)?;
    for value in &field.now {
        let json = match value {
            Stored::Null => continue,
            Stored::Str(json) => json,
            other => {
                return Err(refused(
                    path,
                    show_all(std::slice::from_ref(other)),
                    "an order line is JSON in a plain string",
                ))
            }
        };
        let line = super::order::OrderLine::parse(path, json)?;
        crate::store::check_reference(
            &|id| rules.directory.record(id),
            path,
            &line.product_id,
            Some(Kind::Product),
        )?;
    }
    Ok(())
}

fn check_attachment(path: &str, id: &str, field: &TouchedField) -> Result<()> {
    super::validate_id(path, id)?;
    for value in &field.now {
        match value {
            Stored::Null => {}
            Stored::Str(json) => {
                super::attachment::Attachment::parse(path, json)?;
            }
            other => {
                return Err(refused(
                    path,
                    show_all(std::slice::from_ref(other)),
                    "an attachment is JSON in a plain string",
                ))
            }
        }
    }
    Ok(())
}

/// Integers stand for the same coordinates as floats.
fn same_stored_form(normal: &Value, stored: &Value) -> bool {
    match (normal, stored) {
        (Value::Float(x), Value::Int(i)) => *x == *i as f64,
        (a, b) => a == b,
    }
}

fn check_custom(path: &str, value: &Stored) -> Result<()> {
    let value = match value {
        Stored::Null => return Ok(()),
        Stored::Str(s) => Value::Text(s.clone()),
        Stored::Int(i) => Value::Int(*i),
        Stored::Float(x) => Value::Float(*x),
        Stored::Bool(b) => Value::Bool(*b),
        other => {
            return Err(refused(
                path,
                show(other),
                "custom fields hold text, integers, numbers or booleans",
            ))
        }
    };
    super::validate::normalize_custom(path, value).map(|_| ())
}

/// Times in milliseconds since the Unix epoch from 2001-09-09 to 9999-12-31:
/// anything earlier is almost surely seconds (which JavaScript Automerge
/// writes by default) and would misdate history as 1970.
pub const PLAUSIBLE_TIMES: std::ops::RangeInclusive<i64> = 1_000_000_000_000..=253_402_300_799_999;

/// Refuses a change or record time that cannot be milliseconds since the epoch.
pub fn check_time(ms: i64) -> Result<()> {
    if PLAUSIBLE_TIMES.contains(&ms) {
        return Ok(());
    }
    let reason = if ms > 0 && ms < *PLAUSIBLE_TIMES.start() {
        format!(
            "as milliseconds since the Unix epoch it is {}; stamp changes in milliseconds, not seconds",
            crate::model::date_of_ms(ms)
        )
    } else {
        "not a time in milliseconds since the Unix epoch between 2001 and 9999".to_string()
    };
    Err(Error::ImplausibleTime { time: ms, reason })
}

fn is_nested_map(kind: Kind, path: &str) -> bool {
    kind.open_maps().contains(&path) || super::nested_maps(kind).any(|m| m == path)
}

fn is_blank(value: &Stored) -> bool {
    match value {
        Stored::Null => true,
        Stored::Str(s) => s.trim().is_empty(),
        _ => false,
    }
}

fn describe(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Amount | FieldType::Percent => "an integer",
        FieldType::Latitude | FieldType::Longitude => "a number",
        FieldType::Bool => "true or false",
        FieldType::Timestamp => "a time in milliseconds since the Unix epoch",
        FieldType::LongText => "long text",
        _ => "a plain string",
    }
}

fn show(value: &Stored) -> String {
    match value {
        Stored::Str(s) | Stored::Text(s) => format!("{s:?}"),
        Stored::Int(i) | Stored::Timestamp(i) => i.to_string(),
        Stored::Float(x) => x.to_string(),
        Stored::Bool(b) => b.to_string(),
        Stored::Null => "null".into(),
        Stored::Map => "a map".into(),
        Stored::List => "a list".into(),
        Stored::Other(what) => (*what).into(),
    }
}

fn show_all(values: &[Stored]) -> String {
    match values {
        [] => "nothing".into(),
        [one] => show(one),
        many => many.iter().map(show).collect::<Vec<_>>().join(" / "),
    }
}

fn refused(path: &str, value: impl std::fmt::Display, reason: &str) -> Error {
    Error::invalid(path, value, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir;
    impl Directory for Dir {
        fn record(&self, id: &str) -> Result<Option<(Kind, bool)>> {
            Ok(match id {
                "acc-1" => Some((Kind::Account, false)),
                "acc-gone" => Some((Kind::Account, true)),
                "con-1" => Some((Kind::Contact, false)),
                _ => None,
            })
        }
        fn is_user(&self, id: &str) -> Result<bool> {
            Ok(id == "ann")
        }
        fn is_territory(&self, name: &str) -> Result<bool> {
            Ok(name == "north")
        }
    }

    fn field(path: &str, now: Vec<Stored>) -> TouchedField {
        TouchedField {
            path: path.into(),
            now,
            replaces_object: false,
        }
    }

    fn str(s: &str) -> Stored {
        Stored::Str(s.into())
    }

    fn new_account(extra: Vec<TouchedField>) -> Vec<TouchedField> {
        let mut t = vec![
            field("id", vec![str("a")]),
            field("type", vec![str("account")]),
            field("schema", vec![Stored::Int(1)]),
            field("created_at", vec![Stored::Timestamp(1_764_000_000_000)]),
            field("created_by", vec![str("ann")]),
            field("deleted", vec![Stored::Bool(false)]),
            field("name", vec![str("Acme")]),
            field("owner", vec![str("ann")]),
            field("territory", vec![str("north")]),
        ];
        t.extend(extra);
        t
    }

    fn check(creating: bool, touched: &[TouchedField]) -> Result<()> {
        let config = Config::default();
        let rules = Rules {
            config: &config,
            author: "ann",
            directory: &Dir,
            standing: crate::model::Standing::Rep,
        };
        check_received(Kind::Account, creating, touched, &rules)
    }

    fn message(creating: bool, touched: &[TouchedField]) -> String {
        check(creating, touched).unwrap_err().to_string()
    }

    #[test]
    fn a_well_formed_record_passes() {
        check(true, &new_account(vec![])).unwrap();
        check(false, &[field("phone", vec![str("+44 1")])]).unwrap();
    }

    #[test]
    fn values_a_local_edit_refuses_are_refused_in_its_words() {
        let deal = |path: &str, v: Stored| -> String {
            let config = Config::default();
            let rules = Rules {
                config: &config,
                author: "ann",
                directory: &Dir,
                standing: crate::model::Standing::Rep,
            };
            check_received(Kind::Deal, false, &[field(path, vec![v])], &rules)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            deal("amount", Stored::Float(12.5)),
            "invalid value for field \"amount\": 12.5 (amount must be an integer number of minor units (cents))"
        );
        assert!(deal("amount", str("12")).contains("\"amount\""));
        assert!(deal("stage", str("dreaming")).contains("not a stage of the pipeline"));
        assert!(deal("currency", str("eur")).contains("a local edit stores \"EUR\""));
        assert_eq!(
            deal("account_id", str("acc-elsewhere")),
            "field \"account_id\" refers to \"acc-elsewhere\", which is not an existing account"
        );
        assert!(deal("account_id", str("acc-gone")).contains("it is deleted"));
        assert!(deal("contact_id", str("acc-1")).contains("not an existing contact"));
    }

    #[test]
    fn unknown_fields_and_required_clears_are_refused() {
        assert_eq!(
            message(false, &[field("fax", vec![str("123")])]),
            "unknown field \"fax\" for a account"
        );
        assert_eq!(
            message(false, &[field("address.fax", vec![str("1")])]),
            "unknown field \"address.fax\" for a account"
        );
        assert!(matches!(
            check(false, &[field("name", vec![Stored::Null])]),
            Err(Error::MissingField { .. })
        ));
        assert!(matches!(
            check(false, &[field("name", vec![])]),
            Err(Error::MissingField { .. })
        ));
        let mut t = new_account(vec![]);
        t.retain(|f| f.path != "territory");
        assert_eq!(
            message(true, &t),
            "field \"territory\" of a account is required"
        );
    }

    #[test]
    fn every_concurrent_value_is_checked_not_only_the_winner() {
        let err = message(false, &[field("phone", vec![str("+44 1"), str("call me")])]);
        assert!(err.contains("call me"), "{err}");
    }

    #[test]
    fn text_and_plain_strings_are_not_interchangeable() {
        assert!(
            message(false, &[field("name", vec![Stored::Text("Acme".into())])])
                .contains("stored as long text")
        );
        assert!(
            message(false, &[field("notes", vec![str("hello")])]).contains("Automerge Text object")
        );
        check(false, &[field("notes", vec![Stored::Text("hello".into())])]).unwrap();
    }

    #[test]
    fn owners_and_territories_must_exist() {
        assert!(message(false, &[field("owner", vec![str("zed")])]).contains("no such user"));
        assert!(
            message(false, &[field("territory", vec![str("east")])]).contains("no such territory")
        );
    }

    #[test]
    fn metadata_is_fixed_at_creation() {
        assert!(
            message(false, &[field("created_by", vec![str("mallory")])]).contains("never changes")
        );
        let mut t = new_account(vec![]);
        t[2] = field("schema", vec![Stored::Int(2)]);
        assert!(message(true, &t).contains("newer than this build"));
        let mut t = new_account(vec![]);
        t[4] = field("created_by", vec![str("bob")]);
        assert!(message(true, &t).contains("created by its author"));
        let mut t = new_account(vec![]);
        t[3] = field("created_at", vec![Stored::Timestamp(1_764_000_000)]);
        assert!(
            message(true, &t).contains("not seconds"),
            "{}",
            message(true, &t)
        );
    }

    #[test]
    fn nested_maps_are_made_once() {
        check(false, &[field("geo", vec![Stored::Map])]).unwrap();
        let replaced = TouchedField {
            path: "address".into(),
            now: vec![Stored::Map],
            replaces_object: true,
        };
        assert!(message(false, &[replaced]).contains("made again inside the record's own"));
        let text = TouchedField {
            path: "notes".into(),
            now: vec![Stored::Text("new".into())],
            replaces_object: true,
        };
        assert!(message(false, &[text]).contains("splices"));
        assert!(message(false, &[field("address", vec![str("Leeds")])]).contains("a map"));
    }

    #[test]
    fn lat_lon_may_be_stored_as_integers() {
        check(false, &[field("geo.lat", vec![Stored::Int(51)])]).unwrap();
        assert!(message(false, &[field("geo.lat", vec![Stored::Int(91)])]).contains("between"));
    }

    #[test]
    fn implausible_times_say_seconds() {
        check_time(1_764_000_000_000).unwrap();
        let err = check_time(1_764_000_000).unwrap_err().to_string();
        assert!(
            err.contains("1970-01-21") && err.contains("not seconds"),
            "{err}"
        );
        assert!(check_time(0).is_err());
        assert!(check_time(i64::MAX).is_err());
    }
}
