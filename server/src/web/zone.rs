//! The time zone a user reads and types times in: their own setting
//! (preferences), else the browser's (a cookie the page script sets from
//! `Intl`), else UTC. Records keep UTC milliseconds; only pages convert.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// The cookie the page script sets to the browser's IANA time zone name.
pub const BROWSER_COOKIE: &str = "fieldcrm_tz";

#[derive(Debug, Clone)]
pub struct Zone {
    tz: TimeZone,
    name: String,
}

impl Default for Zone {
    fn default() -> Self {
        Zone {
            tz: TimeZone::UTC,
            name: "UTC".into(),
        }
    }
}

impl Zone {
    /// The named zone, or `None` for a name the tz database lacks.
    pub fn named(name: &str) -> Option<Zone> {
        let tz = TimeZone::get(name).ok()?;
        Some(Zone {
            tz,
            name: name.to_string(),
        })
    }

    /// The first of these names that is a real zone, else UTC.
    pub fn first_of<'a>(names: impl IntoIterator<Item = Option<&'a str>>) -> Zone {
        names
            .into_iter()
            .flatten()
            .find_map(Zone::named)
            .unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn zoned(&self, ms: i64) -> Option<Zoned> {
        Some(
            Timestamp::from_millisecond(ms)
                .ok()?
                .to_zoned(self.tz.clone()),
        )
    }

    /// "2026-03-31 14:30 CEST": date and time to the minute, with the
    /// zone's abbreviation so nobody mistakes it for another zone's.
    pub fn time(&self, ms: i64) -> String {
        match self.zoned(ms) {
            Some(t) => t.strftime("%Y-%m-%d %H:%M %Z").to_string(),
            None => ms.to_string(),
        }
    }

    /// The value of a `datetime-local` input: "2026-03-31T14:30".
    pub fn input(&self, ms: i64) -> String {
        self.zoned(ms)
            .map(|t| t.strftime("%Y-%m-%dT%H:%M").to_string())
            .unwrap_or_default()
    }

    /// Today's date here.
    pub fn today(&self) -> time::Date {
        let today = Zoned::now().with_time_zone(self.tz.clone()).date();
        to_time_date(today)
    }

    /// A typed time as ms since the epoch: a time with an offset or `Z`
    /// (as exports write them) is taken as it says; a plain date and time
    /// ("2026-03-31T14:30", "2026-03-31 14:30:05") or date (midnight) is
    /// taken in this zone.
    pub fn parse(&self, raw: &str) -> Result<i64, String> {
        let raw = raw.trim();
        if let Ok(at) = raw.parse::<Timestamp>() {
            return Ok(at.as_millisecond());
        }
        let local = raw
            .replacen(' ', "T", 1)
            .parse::<DateTime>()
            .or_else(|_| {
                raw.parse::<Date>()
                    .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
            })
            .map_err(|_| format!("{raw:?} is not a date and time like 2026-11-24T10:30"))?;
        let at = local
            .to_zoned(self.tz.clone())
            .map_err(|_| format!("{raw:?} is not a time in {}", self.name))?;
        Ok(at.timestamp().as_millisecond())
    }

    /// The last millisecond of the day `raw` (a date) names, here.
    pub fn end_of_day(&self, raw: &str) -> Result<i64, String> {
        let date: Date = raw
            .trim()
            .parse()
            .map_err(|_| format!("{raw:?} is not a date like 2026-03-31"))?;
        self.end_of_date(date)
            .ok_or_else(|| format!("{raw:?} is out of range"))
    }

    /// The last millisecond of the day here that `ms` falls on.
    pub fn end_of_day_at(&self, ms: i64) -> i64 {
        self.zoned(ms)
            .and_then(|t| self.end_of_date(t.date()))
            .unwrap_or(ms)
    }

    fn end_of_date(&self, date: Date) -> Option<i64> {
        let next = date.tomorrow().ok()?.to_zoned(self.tz.clone()).ok()?;
        Some(next.timestamp().as_millisecond() - 1)
    }
}

fn to_time_date(d: Date) -> time::Date {
    time::Month::try_from(d.month() as u8)
        .ok()
        .and_then(|m| time::Date::from_calendar_date(d.year().into(), m, d.day() as u8).ok())
        .unwrap_or(time::Date::MIN)
}

/// Every zone name the tz database knows, for the settings page.
pub fn names() -> Vec<String> {
    let mut names: Vec<String> = jiff::tz::db().available().map(|n| n.to_string()).collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_and_parse_in_the_users_zone() {
        let berlin = Zone::named("Europe/Berlin").unwrap();
        // 2026-03-31 12:30 UTC is 14:30 in Berlin (summer time).
        let ms = 1_774_960_200_000;
        assert_eq!(berlin.time(ms), "2026-03-31 14:30 CEST");
        assert_eq!(berlin.input(ms), "2026-03-31T14:30");
        assert_eq!(berlin.parse("2026-03-31T14:30"), Ok(ms));
        assert_eq!(berlin.parse("2026-03-31 14:30"), Ok(ms));
        // An explicit offset wins over the zone.
        assert_eq!(berlin.parse("2026-03-31T12:30:00Z"), Ok(ms));
        assert_eq!(Zone::default().time(ms), "2026-03-31 12:30 UTC");
        // Winter: one hour ahead, and the day ends at 23:00 UTC.
        let end = berlin.end_of_day("2026-01-15").unwrap();
        assert_eq!(Zone::default().time(end + 1), "2026-01-15 23:00 UTC");
        assert_eq!(berlin.end_of_day_at(end - 3_600_000), end);
        assert!(berlin.parse("yesterday").is_err());
    }

    #[test]
    fn unknown_names_fall_back_to_the_next_then_utc() {
        assert_eq!(
            Zone::first_of([Some("Mars/Base"), Some("Asia/Tokyo")]).name(),
            "Asia/Tokyo"
        );
        assert_eq!(
            Zone::first_of([None, Some("../../etc/passwd")]).name(),
            "UTC"
        );
        assert!(names().iter().any(|n| n == "America/New_York"));
    }
}
