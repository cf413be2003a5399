//! Validation of single field values. Checks that need the store (references
//! to other records) live in the store; everything decidable from the value
//! alone lives here.

use super::config::{ConfigEntry, CustomField, CONFIG_MAPS};
use super::{Config, CustomType, FieldType, Kind, Value, CUSTOM_PREFIX};
use crate::error::{Error, Result};

/// Longest short-text value, in bytes.
pub const MAX_TEXT: usize = 4 * 1024;
/// Longest long-text value (notes, activity body), in bytes.
pub const MAX_LONG_TEXT: usize = 1024 * 1024;
const MAX_CUSTOM_NAME: usize = 64;

/// Checks `value` for field `path` of a `kind` and returns it normalised
/// (text trimmed, currency upper-cased). `Value::Null` clears an optional
/// field. A custom field the configuration defines is checked by its
/// definition; one it does not define holds any short text, number or
/// boolean (as before custom fields could be defined).
pub fn normalize_value(kind: Kind, path: &str, value: Value, config: &Config) -> Result<Value> {
    if kind == Kind::Config {
        if let Some((map, _)) = path.split_once('.') {
            if CONFIG_MAPS.contains(&map) {
                let Value::Text(json) = &value else {
                    return Err(Error::invalid(
                        path,
                        &value,
                        "a configuration entry is JSON text",
                    ));
                };
                ConfigEntry::parse(path, json)?;
                return Ok(value);
            }
        }
    }
    if path == "territory" {
        if let Value::Text(t) = &value {
            let shared = t.trim() == super::SHARED_TERRITORY;
            if kind.shared() && !shared {
                return Err(Error::invalid(
                    path,
                    format!("{t:?}"),
                    &format!(
                        "{} are in {:?}, every user's",
                        kind.plural(),
                        super::SHARED_TERRITORY
                    ),
                ));
            }
            if !kind.shared() && shared {
                return Err(Error::invalid(
                    path,
                    format!("{t:?}"),
                    &format!("{} are in a territory of their own", kind.plural()),
                ));
            }
        }
    }
    if let Some(id) = path
        .strip_prefix("attachments.")
        .filter(|_| kind != Kind::Config)
    {
        super::validate_id(path, id)?;
        return match &value {
            Value::Null => Ok(value),
            Value::Text(json) => {
                super::attachment::Attachment::parse(path, json)?;
                Ok(value)
            }
            _ => Err(Error::invalid(path, &value, "an attachment is JSON text")),
        };
    }
    if kind == Kind::Order && path.starts_with("lines.") {
        super::validate_id(path, &path["lines.".len()..])?;
        return match &value {
            Value::Null => Ok(value),
            Value::Text(json) => {
                super::order::OrderLine::parse(path, json)?;
                Ok(value)
            }
            _ => Err(Error::invalid(path, &value, "an order line is JSON text")),
        };
    }
    if let Some(name) = path.strip_prefix(CUSTOM_PREFIX) {
        if kind == Kind::Config {
            return Err(Error::UnknownField {
                kind,
                field: path.to_string(),
            });
        }
        validate_custom_name(name)?;
        return match config.custom_field(kind, name) {
            Some(def) => normalize_defined(kind, path, def, value, config),
            None => normalize_custom(path, value),
        };
    }
    let spec = kind.field(path).ok_or_else(|| Error::UnknownField {
        kind,
        field: path.to_string(),
    })?;
    if is_blank(&value, spec.ty) {
        return if spec.required {
            Err(Error::MissingField {
                kind,
                field: path.to_string(),
            })
        } else {
            Ok(Value::Null)
        };
    }
    normalize_typed(path, spec.ty, value, config)
}

fn is_blank(value: &Value, ty: FieldType) -> bool {
    match value {
        Value::Null => true,
        Value::Text(s) => s.trim().is_empty() && ty != FieldType::LongText,
        _ => false,
    }
}

/// A custom field the configuration defines, checked by its type.
fn normalize_defined(
    kind: Kind,
    path: &str,
    def: &CustomField,
    value: Value,
    config: &Config,
) -> Result<Value> {
    let ty = def.field_type();
    if is_blank(&value, ty) {
        return if def.entry.required {
            Err(Error::MissingField {
                kind,
                field: path.to_string(),
            })
        } else {
            Ok(Value::Null)
        };
    }
    let value = normalize_typed(path, ty, value, config)?;
    if let (CustomType::Picklist, Some(list), Value::Text(s)) =
        (def.entry.ty, &def.entry.picklist, &value)
    {
        check_pick(path, list, s, config)?;
    }
    Ok(value)
}

fn check_pick(path: &str, list: &str, value: &str, config: &Config) -> Result<()> {
    if config.allows(list, value) {
        return Ok(());
    }
    let offered: Vec<&str> = config
        .picklist(list)
        .iter()
        .filter(|v| !v.retired)
        .map(|v| v.value.as_str())
        .collect();
    Err(Error::invalid(
        path,
        format!("{value:?}"),
        &if offered.is_empty() {
            format!("the picklist {list:?} has no values yet")
        } else {
            format!("expected one of {}", offered.join(", "))
        },
    ))
}

fn normalize_typed(path: &str, ty: FieldType, value: Value, config: &Config) -> Result<Value> {
    let pipeline = config.pipeline();
    let text = |value: Value, max: usize| -> Result<String> {
        match value {
            Value::Text(s) => {
                if s.len() > max {
                    return Err(Error::OversizeValue {
                        field: path.to_string(),
                        len: s.len(),
                        max,
                    });
                }
                Ok(s)
            }
            other => Err(Error::invalid(path, &other, "expected text")),
        }
    };
    let int = |value: Value, what: &str| -> Result<i64> {
        match value {
            Value::Int(i) => Ok(i),
            other => Err(Error::invalid(path, &other, what)),
        }
    };
    let float = |value: Value, min: f64, max: f64| -> Result<Value> {
        let x = match value {
            Value::Float(x) => x,
            Value::Int(i) => i as f64,
            other => return Err(Error::invalid(path, &other, "expected a number")),
        };
        if !(min..=max).contains(&x) {
            return Err(Error::invalid(
                path,
                x,
                &format!("must be between {min} and {max}"),
            ));
        }
        Ok(Value::Float(x))
    };

    Ok(match ty {
        FieldType::Text => Value::Text(text(value, MAX_TEXT)?.trim().to_string()),
        FieldType::LongText => Value::Text(text(value, MAX_LONG_TEXT)?),
        FieldType::Email => {
            let s = text(value, 254)?.trim().to_string();
            if !is_email(&s) {
                return Err(Error::invalid(
                    path,
                    format!("{s:?}"),
                    "not an email address",
                ));
            }
            Value::Text(s)
        }
        FieldType::Phone => {
            let s = text(value, 40)?.trim().to_string();
            let digits = s.chars().filter(char::is_ascii_digit).count();
            let allowed = s
                .chars()
                .all(|c| c.is_ascii_digit() || " +-().x/".contains(c));
            if !allowed || digits < 3 {
                return Err(Error::invalid(
                    path,
                    format!("{s:?}"),
                    "not a phone number (digits, spaces and + - ( ) . x /)",
                ));
            }
            Value::Text(s)
        }
        FieldType::Url => {
            let s = text(value, 2048)?.trim().to_string();
            if s.contains(char::is_whitespace) || !s.contains('.') {
                return Err(Error::invalid(path, format!("{s:?}"), "not a web address"));
            }
            Value::Text(s)
        }
        FieldType::Amount => Value::Int(int(
            value,
            "amount must be an integer number of minor units (cents)",
        )?),
        FieldType::Percent => {
            let p = int(value, "expected an integer percentage")?;
            if !(0..=100).contains(&p) {
                return Err(Error::invalid(path, p, "must be between 0 and 100"));
            }
            Value::Int(p)
        }
        FieldType::Latitude => float(value, -90.0, 90.0)?,
        FieldType::Longitude => float(value, -180.0, 180.0)?,
        FieldType::Bool => match value {
            Value::Bool(b) => Value::Bool(b),
            other => return Err(Error::invalid(path, &other, "expected true or false")),
        },
        FieldType::Timestamp => Value::Int(int(
            value,
            "expected a time in milliseconds since the Unix epoch",
        )?),
        FieldType::Date => {
            let s = text(value, 10)?;
            if !is_date(&s) {
                return Err(Error::invalid(
                    path,
                    format!("{s:?}"),
                    "expected a date YYYY-MM-DD",
                ));
            }
            Value::Text(s)
        }
        FieldType::Currency => {
            let s = text(value, 3)?.to_ascii_uppercase();
            if s.len() != 3 || !s.chars().all(|c| c.is_ascii_uppercase()) {
                return Err(Error::invalid(
                    path,
                    format!("{s:?}"),
                    "expected a 3-letter ISO 4217 code",
                ));
            }
            Value::Text(s)
        }
        FieldType::Ref(_) => {
            let s = text(value, 64)?;
            validate_id(path, &s)?;
            Value::Text(s)
        }
        FieldType::Stage => {
            let s = text(value, 64)?;
            if !pipeline.contains(&s) {
                let offered: Vec<&str> = pipeline.active_stages().map(String::as_str).collect();
                return Err(Error::invalid(
                    path,
                    format!("{s:?}"),
                    &format!("not a stage of the pipeline ({})", offered.join(", ")),
                ));
            }
            Value::Text(s)
        }
        FieldType::Number => match value {
            Value::Int(i) => Value::Float(i as f64),
            Value::Float(x) if x.is_finite() => Value::Float(x),
            other => return Err(Error::invalid(path, &other, "expected a number")),
        },
        FieldType::Integer => Value::Int(int(value, "expected an integer")?),
        FieldType::Picklist(list) => {
            let s = text(value, 64)?;
            check_pick(path, list, &s, config)?;
            Value::Text(s)
        }
        FieldType::Choice(values) => {
            let s = text(value, 32)?;
            if !values.contains(&s.as_str()) {
                return Err(Error::invalid(
                    path,
                    format!("{s:?}"),
                    &format!("expected one of {}", values.join(", ")),
                ));
            }
            Value::Text(s)
        }
    })
}

pub(super) fn normalize_custom(path: &str, value: Value) -> Result<Value> {
    match value {
        Value::Text(s) if s.len() > MAX_TEXT => Err(Error::OversizeValue {
            field: path.to_string(),
            len: s.len(),
            max: MAX_TEXT,
        }),
        Value::Float(x) if !x.is_finite() => {
            Err(Error::invalid(path, x, "must be a finite number"))
        }
        v => Ok(v),
    }
}

/// Custom field names: 1 to 64 of `a-z`, `0-9`, `_`, starting with a letter.
pub fn validate_custom_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_CUSTOM_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            &format!("{CUSTOM_PREFIX}{name}"),
            format!("{name:?}"),
            "custom field names are 1-64 of a-z, 0-9 and _, starting with a letter",
        ))
    }
}

/// Record ids: 1 to 64 of ASCII letters, digits, `-` and `_`.
pub fn validate_id(field: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(field, format!("{id:?}"), "not a record id"))
    }
}

fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && !s.contains(char::is_whitespace)
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<u32>().ok());
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: Kind, path: &str, value: impl Into<Value>) -> Result<Value> {
        normalize_value(kind, path, value.into(), &Config::default())
    }

    #[test]
    fn errors_name_the_field_and_the_value() {
        let err = check(Kind::Contact, "email", "ada-at-example.com").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("\"email\"") && msg.contains("ada-at-example.com"),
            "{msg}"
        );

        let msg = check(Kind::Deal, "amount", 12.5).unwrap_err().to_string();
        assert!(msg.contains("\"amount\"") && msg.contains("12.5"), "{msg}");

        let msg = check(Kind::Deal, "stage", "maybe").unwrap_err().to_string();
        assert!(
            msg.contains("maybe") && msg.contains("lead, qualified"),
            "{msg}"
        );

        let msg = check(Kind::Account, "colour", "red")
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "unknown field \"colour\" for a account");
    }

    #[test]
    fn required_fields_cannot_be_cleared() {
        assert!(matches!(
            check(Kind::Account, "name", "  "),
            Err(Error::MissingField { .. })
        ));
        assert_eq!(
            check(Kind::Account, "industry", Value::Null).unwrap(),
            Value::Null
        );
    }

    #[test]
    fn oversize_values_are_rejected() {
        let big = "x".repeat(MAX_TEXT + 1);
        assert!(matches!(
            check(Kind::Account, "name", big.as_str()),
            Err(Error::OversizeValue { len, .. }) if len == MAX_TEXT + 1
        ));
        assert!(check(Kind::Account, "notes", big.as_str()).is_ok());
        assert!(check(Kind::Account, "custom.big", big.as_str()).is_err());
    }

    #[test]
    fn normalises_and_checks_typed_values() {
        assert_eq!(
            check(Kind::Deal, "currency", "eur").unwrap(),
            Value::from("EUR")
        );
        assert_eq!(
            check(Kind::Account, "name", " Acme ").unwrap(),
            Value::from("Acme")
        );
        assert!(check(Kind::Deal, "close_date", "2026-02-29").is_err());
        assert!(check(Kind::Deal, "close_date", "2028-02-29").is_ok());
        assert!(check(Kind::Deal, "probability", 101).is_err());
        assert!(check(Kind::Account, "geo.lat", 91.0).is_err());
        assert_eq!(
            check(Kind::Account, "geo.lon", 3).unwrap(),
            Value::Float(3.0)
        );
        assert!(check(Kind::Contact, "phone", "+44 (0)20 7946-0958").is_ok());
        assert!(check(Kind::Contact, "phone", "call me").is_err());
        assert!(check(Kind::Activity, "kind", "lunch").is_err());
        assert!(check(Kind::Contact, "account_id", "../etc").is_err());
    }

    #[test]
    fn custom_fields_need_sane_names() {
        assert!(check(Kind::Account, "custom.tier", "gold").is_ok());
        assert!(check(Kind::Account, "custom.Tier", "gold").is_err());
        assert!(check(Kind::Account, "custom.", "gold").is_err());
        assert!(check(Kind::Account, "custom.x", f64::NAN).is_err());
    }
}
