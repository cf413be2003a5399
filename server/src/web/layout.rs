//! Page chrome and how values are shown. Every value goes through maud's
//! `(...)` splices, which escape HTML, so user data always renders as text.

use fieldcrm_core::{FieldType, Kind, Record, Value};
use maud::{html, Markup, DOCTYPE};

use super::zone::Zone;
use super::Session;

/// Which navigation entry a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Dashboard,
    List(Kind),
    Pipeline,
    Route,
    Import,
    Review,
    Search,
    Admin,
    Conflicts,
    Settings,
}

fn head(title: &str) -> Markup {
    html! {
        (DOCTYPE)
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) " · FieldCRM" }
        link rel="stylesheet" href="/static/app.css";
        script src="/static/app.js" defer {}
    }
}

/// A page for a signed-in user.
pub fn page(session: &Session, title: &str, nav: Nav, body: Markup) -> Markup {
    let item = |target: Nav, href: &str, label: &str| {
        html! { a href=(href) class=[(nav == target).then_some("active")] { (label) } }
    };
    html! {
        (head(title))
        body {
            header.top {
                a.brand href="/dashboard" { "FieldCRM" }
                nav {
                    (item(Nav::Dashboard, "/dashboard", "Dashboard"))
                    @for kind in Kind::ALL {
                        (item(Nav::List(kind), &format!("/{}", kind_path(kind)), &kind_title(kind)))
                    }
                    (item(Nav::Pipeline, "/pipeline", "Pipeline"))
                    (item(Nav::Route, "/route", "Route"))
                    (item(Nav::Import, "/import", "Import"))
                    @if session.conflicts > 0 {
                        a href="/conflicts" class=[(nav == Nav::Conflicts).then_some("active")] {
                            "Conflicts " span.badge.warn.conflict-count { (session.conflicts) }
                        }
                    }
                    @if crate::relay::review::scope_for(&session.user).is_some() {
                        (item(Nav::Review, "/review", "Review"))
                    }
                    @if session.user.role == crate::relay::Role::Admin {
                        (item(Nav::Admin, "/admin", "Admin"))
                    }
                }
                form.find method="get" action="/search" role="search" {
                    input type="search" name="q" placeholder="Search everything" aria-label="Search everything";
                }
                form.who method="post" action="/logout" {
                    a href="/settings" title="Your settings" { (session.user.id) } span { " · " (session.user.role.as_str()) }
                    (csrf(session))
                    button.link type="submit" { "Sign out" }
                }
            }
            main { h1 { (title) } (body) }
        }
    }
}

/// A page for nobody in particular (sign-in).
pub fn public(title: &str, body: Markup) -> Markup {
    html! { (head(title)) body.public { main { (body) } } }
}

/// An error page.
pub fn bare(title: &str, message: &str) -> Markup {
    public(
        title,
        html! {
            h1 { (title) }
            p.error role="alert" { (message) }
            // The script shows Back (no `javascript:` URLs under the CSP).
            p { button.link type="button" data-back hidden { "Back" } " " a href="/dashboard" { "Dashboard" } }
        },
    )
}

/// "3 minutes", "1 minute", "20 seconds": how long to wait, in words.
pub fn wait_in_words(wait: std::time::Duration) -> String {
    let seconds = wait.as_secs() + 1;
    let (n, unit) = if seconds >= 90 {
        (seconds.div_ceil(60), "minute")
    } else {
        (seconds, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// "12 min", "5.0 hours", "3.0 days", "2.0 years": a span of time in words.
pub fn span_in_words(ms: i64) -> String {
    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;
    match ms {
        ms if ms < HOUR => format!("{} min", ms / 60_000),
        ms if ms < 48 * HOUR => format!("{:.1} hours", ms as f64 / HOUR as f64),
        ms if ms < 730 * DAY => format!("{:.1} days", ms as f64 / DAY as f64),
        ms => format!("{:.1} years", ms as f64 / (365.25 * DAY as f64)),
    }
}

pub fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="_csrf" value=(session.csrf); }
}

/// A form that posts to `action` with one button (delete, restore...).
pub fn button_form(session: &Session, action: &str, label: &str, class: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf(session))
            button type="submit" class=(class) { (label) }
        }
    }
}

pub fn kind_path(kind: Kind) -> &'static str {
    kind.plural()
}

/// "Accounts", "Leads", ...
pub fn kind_title(kind: Kind) -> String {
    let plural = kind.plural();
    plural[..1].to_uppercase() + &plural[1..]
}

pub fn kind_from_path(path: &str) -> Option<Kind> {
    Kind::ALL.into_iter().find(|k| kind_path(*k) == path)
}

/// "address.city" → "Address city".
pub fn field_label(path: &str) -> String {
    let words = path.replace(['.', '_'], " ");
    let words = words.strip_suffix(" id").unwrap_or(&words);
    let mut chars = words.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Minor units as a decimal amount with two places.
pub fn amount(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    let whole = (abs / 100).to_string();
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}.{:02}", abs % 100)
}

/// A field's value as a person reads it.
pub fn value(kind: Kind, path: &str, value: &Value, zone: &Zone) -> String {
    let ty = kind.field(path).map(|s| s.ty);
    match (value, ty) {
        (Value::Null, _) => String::new(),
        (Value::Int(ms), Some(FieldType::Timestamp)) => zone.time(*ms),
        (Value::Int(minor), Some(FieldType::Amount)) => amount(*minor),
        (Value::Int(p), Some(FieldType::Percent)) => format!("{p}%"),
        (Value::Bool(b), _) => if *b { "yes" } else { "no" }.to_string(),
        (Value::Text(s), _) => s.clone(),
        (other, _) => other.to_string(),
    }
}

/// A record's deal amount with its currency.
pub fn money(record: &Record) -> String {
    match record.get("amount").and_then(Value::as_int) {
        Some(minor) => format!(
            "{} {}",
            amount(minor),
            record.text("currency").unwrap_or("")
        ),
        None => String::new(),
    }
}

/// `path?query` with every value URL-encoded.
pub fn href(path: &str, pairs: &[(&str, &str)]) -> String {
    format!(
        "{path}?{}",
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    )
}

/// A link to a record's page.
pub fn record_link(record: &Record) -> Markup {
    let name = record.display_name();
    html! {
        a href=(format!("/r/{}", record.id)) {
            @if name.is_empty() { "(unnamed)" } @else { (name) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_like_a_person_writes_them() {
        assert_eq!(amount(123_456_789), "1,234,567.89");
        assert_eq!(amount(-5), "-0.05");
        assert_eq!(amount(100_000), "1,000.00");
        assert_eq!(field_label("address.city"), "Address city");
        assert_eq!(field_label("account_id"), "Account");
        assert_eq!(kind_from_path("deals"), Some(Kind::Deal));
        assert_eq!(kind_from_path("login"), None);
    }
}
