//! The CRM domain: record kinds, their fields, values and validation.
//!
//! Fields are described by data ([`FieldSpec`]) rather than one Rust struct per
//! kind, because every generic operation of a sync engine (partial update,
//! field history, conflicts, projection) works field by field. Nested fields
//! (`address.city`) and custom fields (`custom.<name>`) use dotted paths.

pub mod attachment;
mod config;
mod fields;
pub mod order;
pub(crate) use fields::nested_maps;
mod pipeline;
mod received;
pub mod thumbnail;
mod typed_text;
mod validate;
mod write_rules;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use config::{
    check_config_change, Config, ConfigEntry, ConfigRule, CustomField, CustomType, FieldEntry,
    PickEntry, PickValue, RuleEntry, StageEntry, BUILT_IN_PICKLISTS, CONFIG_ID, CONFIG_MAPS,
    SHARED_TERRITORY,
};
pub use fields::{FieldSpec, FieldType, SearchRole};
pub use fields::{
    ACTIVITY_KINDS, CASE_PRIORITIES, CASE_STATUSES, LEAD_SOURCES, LEAD_STATUSES, VISIT_OUTCOMES,
};
pub use pipeline::{Pipeline, StageOutcome, StageSettings};
pub use received::{check_received, check_time, Directory, Rules, Stored, TouchedField};
pub use typed_text::{parse_amount, parse_datetime, value_from_text};
pub use validate::{normalize_value, validate_custom_name, validate_id, MAX_LONG_TEXT, MAX_TEXT};
pub use write_rules::{check_write_rules, Covered, Standing, WriteRule, WRITE_RULES};

/// The calendar date (UTC) of a time in ms since the epoch, for messages.
pub(crate) fn date_of_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(|t| t.date().to_string())
        .unwrap_or_else(|_| "out of range".into())
}

/// Version of the document layout written into every record's `schema` field.
pub const DOC_SCHEMA_VERSION: i64 = 1;

/// Prefix of custom field paths: `custom.<name>`.
pub const CUSTOM_PREFIX: &str = "custom.";

/// A record's identifier (a UUIDv7 string for records created here).
pub type RecordId = String;

/// Field values of a record, keyed by dotted path. Absent means unset.
pub type Fields = BTreeMap<String, Value>;

/// The kinds of CRM record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Account,
    Contact,
    Deal,
    Activity,
    /// A prospect not yet qualified; converted into an account, a contact
    /// and perhaps a deal.
    Lead,
    /// A service case (a customer's problem to answer and resolve).
    Case,
    /// A product of the catalogue every device holds.
    Product,
    /// A price book entry: a product's unit price in a currency, for a time.
    Price,
    /// An order or quote of an account, with its lines (`order.rs`).
    Order,
    /// The organisation configuration (one record, [`CONFIG_ID`]): not a
    /// CRM record, so not in [`Kind::ALL`].
    Config,
}

impl Kind {
    /// The kinds of CRM record.
    pub const ALL: [Kind; 9] = [
        Kind::Account,
        Kind::Contact,
        Kind::Deal,
        Kind::Activity,
        Kind::Lead,
        Kind::Case,
        Kind::Product,
        Kind::Price,
        Kind::Order,
    ];

    /// Kinds every user holds, kept in the shared territory
    /// ([`SHARED_TERRITORY`]): the configuration and the catalogue.
    pub fn shared(self) -> bool {
        matches!(self, Kind::Config | Kind::Product | Kind::Price)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Account => "account",
            Kind::Contact => "contact",
            Kind::Deal => "deal",
            Kind::Activity => "activity",
            Kind::Lead => "lead",
            Kind::Case => "case",
            Kind::Product => "product",
            Kind::Price => "price",
            Kind::Order => "order",
            Kind::Config => "config",
        }
    }

    /// The plural, as lists and paths name the kind (`/accounts`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Account => "accounts",
            Kind::Contact => "contacts",
            Kind::Deal => "deals",
            Kind::Activity => "activities",
            Kind::Lead => "leads",
            Kind::Case => "cases",
            Kind::Product => "products",
            Kind::Price => "prices",
            Kind::Order => "orders",
            Kind::Config => "config",
        }
    }

    /// The fields a list of this kind shows beside the name.
    pub fn list_columns(self) -> &'static [&'static str] {
        match self {
            Kind::Account => &["industry", "address.city", "phone", "owner", "territory"],
            Kind::Contact => &["account_id", "email", "phone", "title", "owner"],
            Kind::Deal => &["account_id", "stage", "amount", "close_date", "owner"],
            Kind::Activity => &["related_to", "kind", "due_at", "done", "owner"],
            Kind::Lead => &["company", "status", "source", "email", "owner"],
            Kind::Case => &["account_id", "status", "priority", "resolve_by", "owner"],
            Kind::Product => &["sku", "unit", "active"],
            Kind::Price => &[
                "product_id",
                "currency",
                "unit_price",
                "valid_from",
                "valid_to",
            ],
            Kind::Order => &["account_id", "status", "currency", "owner"],
            Kind::Config => &[],
        }
    }

    /// The field that tells records of this kind apart at a glance (shown
    /// beside the name in pickers and search suggestions).
    pub fn summary_field(self) -> &'static str {
        match self {
            Kind::Account => "address.city",
            Kind::Contact => "email",
            Kind::Deal => "stage",
            Kind::Activity => "kind",
            Kind::Lead => "company",
            Kind::Case => "status",
            Kind::Product => "sku",
            Kind::Price => "currency",
            Kind::Order => "status",
            Kind::Config => "name",
        }
    }

    /// Values a new record of this kind starts with unless given.
    pub fn creation_defaults(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Kind::Lead => &[("status", "new")],
            Kind::Case => &[("status", "new"), ("priority", "normal")],
            Kind::Product | Kind::Price => &[("territory", SHARED_TERRITORY)],
            Kind::Order => &[("status", "draft")],
            _ => &[],
        }
    }

    /// The fields this kind defines (custom fields come on top).
    pub fn fields(self) -> &'static [FieldSpec] {
        fields::specs(self)
    }

    /// The maps whose keys are fields of their own: `custom` and
    /// `attachments` for records, the entry maps for the configuration.
    pub(crate) fn open_maps(self) -> &'static [&'static str] {
        match self {
            Kind::Config => &CONFIG_MAPS,
            Kind::Order => &["custom", attachment::ATTACHMENTS, order::LINES],
            _ => &["custom", attachment::ATTACHMENTS],
        }
    }

    /// Looks up a built-in field; `None` for custom or unknown paths.
    pub fn field(self, path: &str) -> Option<&'static FieldSpec> {
        self.fields().iter().find(|f| f.path == path)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Kind::ALL
            .into_iter()
            .chain([Kind::Config])
            .find(|k| k.as_str() == s)
            .ok_or_else(|| Error::UnknownKind(s.to_string()))
    }
}

/// A field value. Serialises to plain JSON (`null`, bool, number, string).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

/// Read by the value's own type, as an untagged enum would (an integer is
/// `Int` when it fits, else `Float`), but without trying each variant in
/// turn: that formats an error for every miss, most of the cost of
/// reading a record's JSON.
impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Plain;
        impl<'de> serde::de::Visitor<'de> for Plain {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("null, a boolean, a number or a string")
            }
            fn visit_unit<E>(self) -> std::result::Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_none<E>(self) -> std::result::Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_some<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> std::result::Result<Value, D::Error> {
                Value::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> std::result::Result<Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> std::result::Result<Value, E> {
                Ok(Value::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> std::result::Result<Value, E> {
                Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
            }
            fn visit_f64<E>(self, v: f64) -> std::result::Result<Value, E> {
                Ok(Value::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Value, E> {
                Ok(Value::Text(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> std::result::Result<Value, E> {
                Ok(Value::Text(v))
            }
        }
        d.deserialize_any(Plain)
    }
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(s) => write!(f, "{s:?}"),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value::Float(x)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

/// One CRM record as read from its document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: RecordId,
    pub kind: Kind,
    /// Set fields by dotted path, custom fields as `custom.<name>`.
    pub fields: Fields,
    pub deleted: bool,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub created_by: String,
    /// Time of the newest change in the document (ms since the epoch).
    pub updated_at: i64,
    pub schema: i64,
}

impl Record {
    pub fn get(&self, path: &str) -> Option<&Value> {
        self.fields.get(path)
    }

    pub fn text(&self, path: &str) -> Option<&str> {
        self.fields.get(path).and_then(Value::as_str)
    }

    /// A human-readable name: account/deal name, contact full name, activity subject.
    pub fn display_name(&self) -> String {
        display_name(self.kind, &self.fields)
    }

    // What the query projection keeps in its shared columns, in one place
    // for every store: lists filter and sort by them whatever the kind.

    /// Where the record is in its life: a deal's stage, a lead's or a
    /// case's status.
    pub fn state(&self) -> Option<&str> {
        match self.kind {
            Kind::Deal => self.text("stage"),
            Kind::Lead | Kind::Case | Kind::Order => self.text("status"),
            _ => None,
        }
    }

    /// When it is due (ms): an activity's due time, a case's resolve-by.
    pub fn due(&self) -> Option<i64> {
        let path = match self.kind {
            Kind::Activity => "due_at",
            Kind::Case => "resolve_by",
            _ => return None,
        };
        self.get(path).and_then(Value::as_int)
    }

    /// Whether it is done: an activity marked done, a case resolved or
    /// closed. `None` for kinds that are never done.
    pub fn is_done(&self) -> Option<bool> {
        match self.kind {
            Kind::Activity => match self.get("done") {
                Some(Value::Bool(b)) => Some(*b),
                _ => None,
            },
            Kind::Case => Some(matches!(self.text("status"), Some("resolved" | "closed"))),
            _ => None,
        }
    }
}

pub(crate) fn display_name(kind: Kind, fields: &Fields) -> String {
    let text = |p: &str| fields.get(p).and_then(Value::as_str).unwrap_or("");
    match kind {
        Kind::Account | Kind::Deal | Kind::Lead | Kind::Config | Kind::Order => {
            text("name").to_string()
        }
        Kind::Contact => format!("{} {}", text("first_name"), text("last_name"))
            .trim()
            .to_string(),
        Kind::Activity | Kind::Case => text("subject").to_string(),
        Kind::Product => text("name").to_string(),
        Kind::Price => {
            let amount = fields
                .get("unit_price")
                .and_then(Value::as_int)
                .unwrap_or(0);
            format!(
                "{} {}.{:02}",
                text("currency"),
                amount / 100,
                (amount % 100).abs()
            )
        }
    }
}

/// Builds a [`Fields`] map from `(path, value)` pairs.
pub fn fields<I, K, V>(pairs: I) -> Fields
where
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<Value>,
{
    pairs
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

/// Reads the JSON kept at `path` in an open map (an order line, an
/// attachment) as `T`: at most `max` bytes, and named as `what` when it is
/// not one.
pub(crate) fn json_entry<T: serde::de::DeserializeOwned>(
    path: &str,
    json: &str,
    max: usize,
    what: &str,
) -> crate::error::Result<T> {
    if json.len() > max {
        return Err(crate::error::Error::OversizeValue {
            field: path.to_string(),
            len: json.len(),
            max,
        });
    }
    serde_json::from_str(json).map_err(|e| {
        crate::error::Error::invalid(path, format!("{json:?}"), &format!("not {what}: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back_as_the_variant_they_were_written_as() {
        for v in [
            Value::Null,
            Value::Bool(true),
            Value::Int(-3),
            Value::Int(i64::MAX),
            Value::Float(1.0),
            Value::Float(-0.25),
            Value::Text("10".into()),
            Value::Text(String::new()),
        ] {
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), v, "{json}");
        }
        let big: Value = serde_json::from_str("18446744073709551615").unwrap();
        assert_eq!(big, Value::Float(u64::MAX as f64));
        let err = serde_json::from_str::<Value>("[1]")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("null, a boolean, a number or a string"),
            "{err}"
        );
    }

    #[test]
    fn kind_round_trips_and_rejects_unknown() {
        for k in Kind::ALL {
            assert_eq!(k.as_str().parse::<Kind>().unwrap(), k);
        }
        let err = "opportunity".parse::<Kind>().unwrap_err();
        assert!(err.to_string().contains("\"opportunity\""), "{err}");
    }

    #[test]
    fn value_serialises_as_plain_json() {
        let f = fields([
            ("a", Value::Int(3)),
            ("b", Value::from("x")),
            ("c", Value::Null),
        ]);
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"a":3,"b":"x","c":null}"#
        );
        let back: Fields = serde_json::from_str(r#"{"a":3,"b":"x","c":null,"d":1.5}"#).unwrap();
        assert_eq!(back["a"], Value::Int(3));
        assert_eq!(back["d"], Value::Float(1.5));
    }

    #[test]
    fn display_names_per_kind() {
        let f = fields([("first_name", "Ada"), ("last_name", "Lovelace")]);
        assert_eq!(display_name(Kind::Contact, &f), "Ada Lovelace");
        let f = fields([("subject", "Call back")]);
        assert_eq!(display_name(Kind::Activity, &f), "Call back");
    }
}
