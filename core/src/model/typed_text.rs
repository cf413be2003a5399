//! Values as people type them (forms, spreadsheets, the command line),
//! turned into field values before validation.

use time::macros::format_description;
use time::PrimitiveDateTime;

use super::{FieldType, Value};

/// One typed string as a value of type `ty`, before validation: amounts
/// as decimals (`1,234.50` → 123450 minor units), times as
/// `2026-11-24T10:30` (UTC), booleans as true/yes/on/1.
pub fn value_from_text(ty: FieldType, raw: &str) -> Result<Value, String> {
    Ok(match ty {
        FieldType::Amount => Value::Int(parse_amount(raw)?),
        FieldType::Percent | FieldType::Integer => Value::Int(
            raw.parse()
                .map_err(|_| format!("{raw:?} is not a whole number"))?,
        ),
        FieldType::Latitude | FieldType::Longitude | FieldType::Number => Value::Float(
            raw.parse()
                .map_err(|_| format!("{raw:?} is not a number"))?,
        ),
        FieldType::Bool => Value::Bool(matches!(raw, "true" | "on" | "yes" | "1")),
        FieldType::Timestamp => Value::Int(parse_datetime(raw)?),
        _ => Value::Text(raw.to_string()),
    })
}

/// "1,234.5" → 123450 minor units.
pub fn parse_amount(raw: &str) -> Result<i64, String> {
    let bad = || format!("{raw:?} is not an amount like 1234.50");
    let cleaned: String = raw.chars().filter(|c| *c != ',' && *c != ' ').collect();
    let (negative, digits) = match cleaned.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, cleaned.as_str()),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
        || frac.len() > 2
    {
        return Err(bad());
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac: i64 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
    let minor = whole
        .checked_mul(100)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(bad)?;
    Ok(if negative { -minor } else { minor })
}

/// "2026-11-24T10:30" (UTC) → ms since the epoch.
pub fn parse_datetime(raw: &str) -> Result<i64, String> {
    let minutes = format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let seconds = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let date_only = format_description!("[year]-[month]-[day]");
    let at = PrimitiveDateTime::parse(raw, minutes)
        .or_else(|_| PrimitiveDateTime::parse(raw, seconds))
        .or_else(|_| time::Date::parse(raw, date_only).map(|d| d.midnight()))
        .map_err(|_| format!("{raw:?} is not a date and time like 2026-11-24T10:30"))?;
    Ok((at.assume_utc().unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_to_minor_units() {
        assert_eq!(parse_amount("1,234.5"), Ok(123_450));
        assert_eq!(parse_amount("12"), Ok(1_200));
        assert_eq!(parse_amount("-0.07"), Ok(-7));
        assert!(parse_amount("1.234").is_err());
        assert!(parse_amount("ten").is_err());
        assert!(parse_amount("").is_err());
        assert!(parse_amount("99999999999999999999").is_err());
    }

    #[test]
    fn typed_text_becomes_values() {
        assert_eq!(
            value_from_text(FieldType::Amount, "12.5"),
            Ok(Value::Int(1250))
        );
        assert_eq!(
            value_from_text(FieldType::Bool, "yes"),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            value_from_text(FieldType::Timestamp, "1970-01-01T00:01"),
            Ok(Value::Int(60_000))
        );
        assert!(value_from_text(FieldType::Latitude, "north").is_err());
        assert_eq!(
            value_from_text(FieldType::Text, "Acme"),
            Ok(Value::from("Acme"))
        );
    }
}
