//! Possible duplicates: the same person or company entered twice, often by
//! two reps offline. Records are compared on normalised values —
//! email (case and plus-addressing ignored), phone (digits only, the
//! default country code for national numbers), and names (case, accents,
//! punctuation and company suffixes ignored, then Jaro-Winkler similarity)
//! together with what places them (a contact's account, an account's city,
//! a lead's company). Accounts, contacts and leads have rules; other kinds
//! none.
//!
//! A device checks one new or edited record against its store
//! ([`Store::find_duplicates`]); the relay finds every pair in a list
//! with a [`PairFinder`], which keeps only a small [`Signature`] per
//! record and compares records that share a blocking key.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::{display_name, Fields, Kind, Record, Value};
use crate::store::Store;

/// How records are matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchRules {
    /// Digits of the country code national numbers (`020 7946 0000`) are
    /// dialled with (`44`). Without it, two numbers match when one ends
    /// with the other's last 9 digits or more.
    pub default_country_code: Option<String>,
    /// Jaro-Winkler similarity (0..1) from which two names are alike.
    pub name_similarity: f64,
}

impl Default for MatchRules {
    fn default() -> Self {
        MatchRules {
            default_country_code: None,
            name_similarity: 0.92,
        }
    }
}

/// Whether records of `kind` are matched at all.
pub fn has_rules(kind: Kind) -> bool {
    matches!(kind, Kind::Account | Kind::Contact | Kind::Lead)
}

/// Why two records look like one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Match {
    /// 0..1: how sure (an equal email 0.95, an equal phone 0.9, alike
    /// names up to 0.9 with what places them, 0.8 without).
    pub score: f64,
    /// Each reason, in words ("same email", "similar names (94% alike) at
    /// the same account").
    pub evidence: Vec<String>,
}

/// A record that may be a duplicate of the one checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub record: Record,
    #[serde(flatten)]
    pub why: Match,
}

/// What matching needs of a record, normalised once.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    pub id: String,
    kind: Kind,
    name: String,
    email: Option<String>,
    phone: Option<String>,
    /// What places it: a contact's account, an account's city, a lead's company.
    context: Option<String>,
}

impl Signature {
    /// `None` for kinds without matching rules.
    pub fn of(record: &Record, rules: &MatchRules) -> Option<Signature> {
        Signature::from_fields(&record.id, record.kind, &record.fields, rules)
    }

    fn from_fields(id: &str, kind: Kind, fields: &Fields, rules: &MatchRules) -> Option<Signature> {
        if !has_rules(kind) {
            return None;
        }
        let text = |p: &str| {
            fields
                .get(p)
                .and_then(Value::as_str)
                .filter(|s| !s.trim().is_empty())
        };
        let context = match kind {
            Kind::Contact => text("account_id").map(String::from),
            Kind::Account => text("address.city").map(normalize_name),
            _ => text("company").map(normalize_name),
        };
        Some(Signature {
            id: id.to_string(),
            kind,
            name: normalize_name(&display_name(kind, fields)),
            email: text("email").and_then(normalize_email),
            phone: text("phone").and_then(|p| normalize_phone(p, rules)),
            context,
        })
    }

    /// Keys of the blocks this record is compared within.
    fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        if let Some(e) = &self.email {
            keys.push(format!("e:{e}"));
        }
        if let Some(p) = &self.phone {
            keys.push(format!("p:{}", tail(p)));
        }
        if !self.name.is_empty() {
            keys.push(format!(
                "n:{}",
                self.name.chars().take(3).collect::<String>()
            ));
        }
        keys
    }
}

/// Why `a` and `b` look like the same record (`None`: they do not).
pub fn compare(a: &Signature, b: &Signature, rules: &MatchRules) -> Option<Match> {
    if a.kind != b.kind || a.id == b.id {
        return None;
    }
    let mut score: f64 = 0.0;
    let mut evidence = Vec::new();
    if a.email.is_some() && a.email == b.email {
        score = score.max(0.95);
        evidence.push("same email".to_string());
    }
    if let (Some(pa), Some(pb)) = (&a.phone, &b.phone) {
        if phones_match(pa, pb) {
            score = score.max(0.9);
            evidence.push("same phone".to_string());
        }
    }
    if !a.name.is_empty() && !b.name.is_empty() {
        let alike = strsim::jaro_winkler(&a.name, &b.name);
        let placed = match (&a.context, &b.context) {
            (Some(x), Some(y)) => Some(x == y),
            _ => None,
        };
        // Names alike in different places (another account, city or
        // company) are different people or branches.
        if alike >= rules.name_similarity && placed != Some(false) {
            let percent = (alike * 100.0).floor();
            let place = match (placed, a.kind) {
                (Some(true), Kind::Contact) => " at the same account",
                (Some(true), Kind::Account) => " in the same city",
                (Some(true), _) => " at the same company",
                _ => "",
            };
            score = score.max(alike * if placed == Some(true) { 0.9 } else { 0.8 });
            evidence.push(format!("similar names ({percent}% alike){place}"));
        }
    }
    (!evidence.is_empty()).then_some(Match { score, evidence })
}

/// Finds every pair of likely duplicates among records added one at a
/// time, keeping a [`Signature`] each (not the records).
#[derive(Debug, Default)]
pub struct PairFinder {
    rules: MatchRules,
    signatures: Vec<Signature>,
    blocks: HashMap<String, Vec<usize>>,
}

/// Blocks larger than this (a common name prefix) are not compared pair by
/// pair; equal emails and phones still are, up to the same size.
const MAX_BLOCK: usize = 200;

impl PairFinder {
    pub fn new(rules: MatchRules) -> Self {
        PairFinder {
            rules,
            ..Default::default()
        }
    }

    pub fn add(&mut self, record: &Record) {
        self.add_fields(&record.id, record.kind, &record.fields);
    }

    /// The records added so far that a record of `kind` with `fields`
    /// looks like (ids, likeliest first), without adding it.
    pub fn matches_of(&self, kind: Kind, fields: &Fields) -> Vec<(String, Match)> {
        let Some(signature) = Signature::from_fields("", kind, fields, &self.rules) else {
            return Vec::new();
        };
        let mut seen: HashSet<usize> = HashSet::new();
        let mut out = Vec::new();
        for key in signature.keys() {
            let Some(members) = self.blocks.get(&key).filter(|m| m.len() <= MAX_BLOCK) else {
                continue;
            };
            for &at in members {
                if seen.insert(at) {
                    let other = &self.signatures[at];
                    if let Some(m) = compare(&signature, other, &self.rules) {
                        out.push((other.id.clone(), m));
                    }
                }
            }
        }
        out.sort_by(|x, y| y.1.score.total_cmp(&x.1.score).then_with(|| x.0.cmp(&y.0)));
        out
    }

    /// Adds a record known only by its fields (a row about to be imported).
    pub fn add_fields(&mut self, id: &str, kind: Kind, fields: &Fields) {
        let Some(signature) = Signature::from_fields(id, kind, fields, &self.rules) else {
            return;
        };
        let at = self.signatures.len();
        for key in signature.keys() {
            self.blocks.entry(key).or_default().push(at);
        }
        self.signatures.push(signature);
    }

    /// The likeliest `limit` pairs (ids, most likely first).
    pub fn pairs(&self, limit: usize) -> Vec<(String, String, Match)> {
        let mut seen: HashSet<(usize, usize)> = HashSet::new();
        let mut out = Vec::new();
        for members in self.blocks.values().filter(|m| m.len() <= MAX_BLOCK) {
            for (i, &a) in members.iter().enumerate() {
                for &b in &members[i + 1..] {
                    if !seen.insert((a.min(b), a.max(b))) {
                        continue;
                    }
                    let (sa, sb) = (&self.signatures[a], &self.signatures[b]);
                    if let Some(m) = compare(sa, sb, &self.rules) {
                        out.push((sa.id.clone(), sb.id.clone(), m));
                    }
                }
            }
        }
        out.sort_by(|x, y| y.2.score.total_cmp(&x.2.score).then_with(|| x.0.cmp(&y.0)));
        out.truncate(limit);
        out
    }
}

impl Store {
    /// Records of `kind` that `fields` (a record about to be created, or
    /// edited) may duplicate, likeliest first, at most 10. Empty for kinds
    /// without rules.
    pub fn find_duplicates(
        &self,
        kind: Kind,
        fields: &Fields,
        rules: &MatchRules,
    ) -> Result<Vec<Candidate>> {
        self.duplicates_among(None, kind, fields, rules)
    }

    /// [`Store::find_duplicates`] for a stored record.
    pub fn duplicates_of(&self, id: &str, rules: &MatchRules) -> Result<Vec<Candidate>> {
        let record = self.get(id)?;
        self.duplicates_among(Some(id), record.kind, &record.fields, rules)
    }

    fn duplicates_among(
        &self,
        id: Option<&str>,
        kind: Kind,
        fields: &Fields,
        rules: &MatchRules,
    ) -> Result<Vec<Candidate>> {
        let Some(me) = Signature::from_fields(id.unwrap_or(""), kind, fields, rules) else {
            return Ok(Vec::new());
        };
        // Candidates from the full-text index: the name, the email's
        // local part, the phone's last digits.
        let text = |p: &str| fields.get(p).and_then(Value::as_str).unwrap_or("");
        let mut probes = vec![display_name(kind, fields)];
        if let Some(local) = text("email").split('@').next() {
            probes.push(
                local
                    .split('+')
                    .next()
                    .unwrap_or("")
                    .replace(['.', '_', '-'], " "),
            );
        }
        let digits: String = text("phone").chars().filter(char::is_ascii_digit).collect();
        if digits.len() >= 4 {
            probes.push(digits[digits.len() - 4..].to_string());
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for probe in probes.iter().filter(|p| !p.trim().is_empty()) {
            for record in self.search(probe, Some(kind), 50)? {
                if Some(record.id.as_str()) == id || !seen.insert(record.id.clone()) {
                    continue;
                }
                let Some(other) = Signature::of(&record, rules) else {
                    continue;
                };
                if let Some(why) = compare(&me, &other, rules) {
                    out.push(Candidate { record, why });
                }
            }
        }
        out.sort_by(|a, b| b.why.score.total_cmp(&a.why.score));
        out.truncate(10);
        Ok(out)
    }
}

/// `Ann.Smith+crm@Example.com` → `ann.smith@example.com`; `None` if it is
/// no address.
pub fn normalize_email(email: &str) -> Option<String> {
    let email = email.trim().to_lowercase();
    let (local, domain) = email.rsplit_once('@')?;
    let local = local.split('+').next().unwrap_or(local);
    (!local.is_empty() && !domain.is_empty()).then(|| format!("{local}@{domain}"))
}

/// Digits with the country code: `+44 (0)20 7946 0000` and, with default
/// country 44, `020 7946 0000` → `442079460000`. `None` under 6 digits.
pub fn normalize_phone(phone: &str, rules: &MatchRules) -> Option<String> {
    let international = phone.trim_start().starts_with('+');
    let phone = phone.replace("(0)", "");
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    let digits = match digits.strip_prefix("00") {
        Some(rest) if !international => rest.to_string(),
        _ if international => digits,
        _ => match (digits.strip_prefix('0'), &rules.default_country_code) {
            (Some(national), Some(cc)) => format!("{cc}{national}"),
            (Some(national), None) => national.to_string(),
            (None, _) => digits,
        },
    };
    (digits.len() >= 6).then_some(digits)
}

fn phones_match(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    a == b || (short.len() >= 9 && long.ends_with(short))
}

/// The last 9 digits: numbers with and without their country code share it.
fn tail(phone: &str) -> &str {
    &phone[phone.len().saturating_sub(9)..]
}

/// Words that say what a company is, not which.
const COMPANY_WORDS: &[&str] = &[
    "ltd",
    "limited",
    "inc",
    "incorporated",
    "llc",
    "plc",
    "gmbh",
    "ag",
    "sa",
    "sarl",
    "bv",
    "co",
    "company",
    "corp",
    "corporation",
    "the",
];

/// Lower case, accents and punctuation dropped, company suffixes removed:
/// `The Müller Co., Ltd.` → `muller`.
pub fn normalize_name(name: &str) -> String {
    let folded: String = name
        .to_lowercase()
        .chars()
        .map(fold_accent)
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    folded
        .split_whitespace()
        .filter(|w| !COMPANY_WORDS.contains(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The common Latin letters with accents, without them.
fn fold_accent(c: char) -> char {
    match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' => 'a',
        'ç' | 'č' | 'ć' => 'c',
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ę' => 'e',
        'ì' | 'í' | 'î' | 'ï' => 'i',
        'ñ' | 'ń' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' => 'o',
        'ù' | 'ú' | 'û' | 'ü' | 'ū' => 'u',
        'ý' | 'ÿ' => 'y',
        'š' | 'ś' => 's',
        'ž' | 'ź' | 'ż' => 'z',
        'ł' => 'l',
        _ => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fields;

    fn record(id: &str, kind: Kind, pairs: &[(&str, &str)]) -> Record {
        Record {
            id: id.into(),
            kind,
            fields: fields(pairs.iter().copied()),
            deleted: false,
            created_at: 0,
            created_by: "ann".into(),
            updated_at: 0,
            schema: 1,
        }
    }

    #[test]
    fn values_are_normalised_as_people_write_them() {
        assert_eq!(
            normalize_email(" Ann.Smith+CRM@Example.COM ").as_deref(),
            Some("ann.smith@example.com")
        );
        assert_eq!(normalize_email("no address"), None);
        let uk = MatchRules {
            default_country_code: Some("44".into()),
            ..Default::default()
        };
        for written in ["+44 (0)20 7946 0000", "0044 20 7946 0000", "020 7946 0000"] {
            assert_eq!(
                normalize_phone(written, &uk).as_deref(),
                Some("442079460000"),
                "{written}"
            );
        }
        assert_eq!(
            normalize_phone("020 7946 0000", &MatchRules::default()).as_deref(),
            Some("2079460000")
        );
        assert_eq!(normalize_phone("123", &uk), None);
        assert_eq!(normalize_name("The Müller Co., Ltd."), "muller");
        assert_eq!(normalize_name("  Ada   LOVELACE "), "ada lovelace");
    }

    #[test]
    fn contacts_match_on_email_phone_or_a_similar_name_at_the_same_account() {
        let rules = MatchRules::default();
        let sig = |r: &Record| Signature::of(r, &rules).unwrap();
        let ada = record(
            "1",
            Kind::Contact,
            &[
                ("first_name", "Ada"),
                ("last_name", "Lovelace"),
                ("email", "ada@engines.example"),
                ("phone", "+44 20 7946 0000"),
                ("account_id", "acme"),
            ],
        );
        let plus = record(
            "2",
            Kind::Contact,
            &[
                ("first_name", "A."),
                ("last_name", "King"),
                ("email", "ADA+crm@engines.example"),
            ],
        );
        let m = compare(&sig(&ada), &sig(&plus), &rules).unwrap();
        assert_eq!(m.evidence, ["same email"]);
        let national = record(
            "3",
            Kind::Contact,
            &[
                ("first_name", "Someone"),
                ("last_name", "Else"),
                ("phone", "020 7946 0000"),
            ],
        );
        assert_eq!(
            compare(&sig(&ada), &sig(&national), &rules)
                .unwrap()
                .evidence,
            ["same phone"]
        );
        let typo = record(
            "4",
            Kind::Contact,
            &[
                ("first_name", "Ada"),
                ("last_name", "Lovelase"),
                ("account_id", "acme"),
            ],
        );
        let m = compare(&sig(&ada), &sig(&typo), &rules).unwrap();
        assert!(m.evidence[0].contains("at the same account"), "{m:?}");
        let elsewhere = record(
            "5",
            Kind::Contact,
            &[
                ("first_name", "Ada"),
                ("last_name", "Lovelace"),
                ("account_id", "other"),
            ],
        );
        assert_eq!(compare(&sig(&ada), &sig(&elsewhere), &rules), None);
        let deal = record("6", Kind::Deal, &[("name", "Ada Lovelace")]);
        assert_eq!(Signature::of(&deal, &rules), None);
    }

    #[test]
    fn pairs_are_found_within_blocks_likeliest_first() {
        let mut finder = PairFinder::new(MatchRules::default());
        let accounts = [
            ("a", "Acme Ltd", "Leeds", ""),
            ("b", "ACME", "leeds", ""),
            ("c", "Acme", "York", ""),
            ("d", "Northwind", "Hull", "+44 1482 000 111"),
            ("e", "Contoso", "Hull", "01482 000 111"),
        ];
        for (id, name, city, phone) in accounts {
            finder.add(&record(
                id,
                Kind::Account,
                &[("name", name), ("address.city", city), ("phone", phone)],
            ));
        }
        let pairs = finder.pairs(10);
        let ids: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(a, b, _)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(ids, [("a", "b"), ("d", "e")], "{pairs:?}");
        assert!(pairs[0].2.evidence[0].contains("in the same city"));
        assert_eq!(pairs[1].2.evidence, ["same phone"]);
    }
}
