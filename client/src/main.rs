//! `fieldcrm`: a rep's device on the command line. The reference client of
//! the FieldCRM core — everything here is a call of `fieldcrm_core` — and a
//! tool for a support engineer to look into a device's store file.
//!
//! The store is a file (`--store`, default `fieldcrm-device.db`); `login`
//! keeps the session (relay URL, user, token) beside it in
//! `<store>.session.json`, so later commands need no password.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fieldcrm_core::{
    value_from_text, Fields, HttpTransport, Kind, ListQuery, Record, SortBy, Store, Value,
};
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug)]
#[command(
    name = "fieldcrm",
    version,
    about = "A FieldCRM device on the command line: edit records offline, sync with a relay",
    long_about = "A FieldCRM device on the command line: edit records offline, sync with a relay.\n\n\
        Start with `fieldcrm login http://127.0.0.1:8080 ann` (the password is asked for, or \
        taken from FIELDCRM_PASSWORD). Fields are written as path=value: name=Acme, \
        address.city=Leeds, amount=1250.00, due_at=2026-12-01T09:30, custom.tier=gold; \
        path= clears one."
)]
struct Cli {
    /// The device's store file.
    #[arg(
        long,
        global = true,
        env = "FIELDCRM_STORE",
        default_value = "fieldcrm-device.db"
    )]
    store: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Sign in to a relay; the session is kept beside the store.
    Login {
        url: String,
        user: String,
        #[arg(long, env = "FIELDCRM_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Sign out: ends the session at the relay and deletes this store —
    /// refused while changes wait, unless --discard-pending.
    Logout {
        #[arg(long)]
        discard_pending: bool,
    },
    /// Sync with the relay once, or keep syncing as changes happen.
    Sync {
        /// Keep the live stream open and sync whenever the relay says so.
        #[arg(long)]
        watch: bool,
    },
    /// List records (all kinds, or one).
    List {
        kind: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        territory: Option<String>,
        #[arg(long)]
        stage: Option<String>,
        /// Only records with conflicting values.
        #[arg(long)]
        conflicts: bool,
        /// Include deleted records.
        #[arg(long)]
        deleted: bool,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// One record with every field.
    Show {
        id: String,
    },
    /// Full-text search over names, emails, phones and notes.
    Search {
        text: String,
        #[arg(long)]
        kind: Option<String>,
    },
    /// Create a record: `fieldcrm create account name=Acme territory=north`.
    Create {
        kind: String,
        fields: Vec<String>,
    },
    /// Change fields: `fieldcrm edit <id> phone="+44 113 496 0000"`.
    Edit {
        id: String,
        fields: Vec<String>,
    },
    Delete {
        id: String,
    },
    Restore {
        id: String,
    },
    /// Who changed which field when.
    History {
        id: String,
    },
    /// Fields holding competing values.
    Conflicts {
        id: String,
    },
    /// Convert a lead: an account (or --account ID), a contact, optionally
    /// a deal; its activities move to the contact. Works offline.
    Convert {
        lead: String,
        /// Join this existing account instead of creating one.
        #[arg(long)]
        account: Option<String>,
        /// Also create a deal of this name.
        #[arg(long)]
        deal: Option<String>,
    },
    /// Settle a conflict with a value.
    Resolve {
        id: String,
        field: String,
        value: String,
    },
    /// Changes not yet acknowledged by the relay.
    Outbox,
    /// Changes the relay refused; retry or discard one.
    Refused {
        #[command(subcommand)]
        action: Option<RefusedAction>,
    },
}

#[derive(Subcommand, Debug)]
enum RefusedAction {
    /// Make it again on the record as it is now.
    Retry { id: i64 },
    /// Drop it for good.
    Discard { id: i64 },
}

/// The sign-in kept beside the store.
#[derive(Debug, Serialize, Deserialize)]
struct Session {
    url: String,
    user: String,
    token: String,
}

type Failure = Box<dyn std::error::Error>;

/// `println!` that ends quietly when the reader went away (`| head`).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fieldcrm: {e}");
            ExitCode::FAILURE
        }
    }
}

fn session_path(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".session.json");
    PathBuf::from(name)
}

fn session(store: &Path) -> Result<Session, Failure> {
    let path = session_path(store);
    let text = std::fs::read_to_string(&path).map_err(|_| {
        format!(
            "not signed in for {} (no {}): run `fieldcrm login URL USER` first",
            store.display(),
            path.display()
        )
    })?;
    Ok(serde_json::from_str(&text)?)
}

fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::Login {
        url,
        user,
        password,
    } = &cli.command
    {
        let password = match password {
            Some(p) => p.clone(),
            None => ask("password: ")?,
        };
        let (transport, login) = HttpTransport::login(url, user, &password)?;
        Store::open(&cli.store, &login.user)?;
        let kept = Session {
            url: url.clone(),
            user: login.user.clone(),
            token: transport.token().to_string(),
        };
        std::fs::write(session_path(&cli.store), serde_json::to_string(&kept)?)?;
        say!(
            "signed in as {} ({}, territories: {})",
            login.user,
            login.role,
            login.territories.join(", ")
        );
        return Ok(());
    }
    let kept = session(&cli.store)?;
    let mut store = Store::open(&cli.store, &kept.user)?;
    let transport = || HttpTransport::new(&kept.url, &kept.token);
    let out = Output { json: cli.json };
    match cli.command {
        Command::Login { .. } => unreachable!("handled above"),
        Command::Logout { discard_pending } => {
            let status = store.outbox_status()?;
            let waiting = status.pending + status.held + status.rejected;
            if waiting > 0 && !discard_pending {
                return Err(format!(
                    "{} change(s) not sent, {} held for review, {} refused would be deleted: \
                     run `fieldcrm sync`, settle `fieldcrm refused`, or pass --discard-pending",
                    status.pending, status.held, status.rejected
                )
                .into());
            }
            let _ = transport().logout();
            store.delete_files()?;
            std::fs::remove_file(session_path(&cli.store))?;
            say!("signed out; {} deleted", cli.store.display());
        }
        Command::Sync { watch } => {
            let t = transport();
            sync_once(&mut store, &t, &out)?;
            if watch {
                loop {
                    let cursor = store.cursor()?.seq;
                    if t.wait_for_change(cursor, Duration::from_secs(25))? {
                        sync_once(&mut store, &t, &out)?;
                    }
                }
            }
        }
        Command::List {
            kind,
            owner,
            territory,
            stage,
            conflicts,
            deleted,
            limit,
            offset,
        } => {
            let q = ListQuery {
                kind: kind.as_deref().map(parse_kind).transpose()?,
                owner,
                territories: territory.into_iter().collect(),
                stage,
                only_conflicts: conflicts,
                include_deleted: deleted,
                sort: SortBy::Name,
                limit,
                offset,
                ..Default::default()
            };
            let page = store.list(&q)?;
            out.records(&page.records)?;
            if !out.json {
                say!("({} of {})", page.records.len(), page.total);
            }
        }
        Command::Show { id } => out.record(&store.get(&id)?)?,
        Command::Search { text, kind } => {
            let kind = kind.as_deref().map(parse_kind).transpose()?;
            out.records(&store.search(&text, kind, 50)?)?;
        }
        Command::Create { kind, fields } => {
            let kind = parse_kind(&kind)?;
            let record = store.create(kind, parse_fields(kind, &fields)?)?;
            out.record(&record)?;
        }
        Command::Edit { id, fields } => {
            let kind = store.get(&id)?.kind;
            out.record(&store.update(&id, parse_fields(kind, &fields)?)?)?;
        }
        Command::Delete { id } => out.record(&store.delete(&id)?)?,
        Command::Restore { id } => out.record(&store.restore(&id)?)?,
        Command::History { id } => {
            let history = store.history(&id)?;
            if out.json {
                return out.print_json(&history);
            }
            for h in history {
                let device = match &h.device {
                    Some(device) => format!("device {device}"),
                    None => format!("actor …{} (device not known yet)", tail(&h.actor)),
                };
                say!("{}  {:<10} {device}", time(h.time), h.user);
                for f in h.fields {
                    say!("    {:<18} {} -> {}", f.field, plain(&f.old), plain(&f.new));
                }
            }
        }
        Command::Conflicts { id } => {
            let conflicts = store.conflicts(&id)?;
            if out.json {
                return out.print_json(&conflicts);
            }
            if conflicts.is_empty() {
                say!("no conflicts");
            }
            for c in conflicts {
                say!("{}:", c.field);
                for v in c.values {
                    say!(
                        "    {:<30} by {} on device …{}, {}",
                        plain(&v.value),
                        v.user,
                        tail(&v.actor),
                        time(v.time)
                    );
                }
            }
        }
        Command::Convert {
            lead,
            account,
            deal,
        } => {
            let how = fieldcrm_core::Conversion {
                account_id: account,
                deal_name: deal,
            };
            let done = store.convert_lead(&lead, how)?;
            if out.json {
                return out.print_json(&done);
            }
            say!(
                "converted {} into account {} ({}), contact {} ({}){}; {} activities moved",
                done.lead.display_name(),
                done.account.display_name(),
                done.account.id,
                done.contact.display_name(),
                done.contact.id,
                done.deal
                    .as_ref()
                    .map(|d| format!(", deal {} ({})", d.display_name(), d.id))
                    .unwrap_or_default(),
                done.moved_activities
            );
        }
        Command::Resolve { id, field, value } => {
            let kind = store.get(&id)?.kind;
            let value = parse_value(kind, &field, &value)?;
            out.record(&store.resolve_conflict(&id, &field, value)?)?;
        }
        Command::Outbox => {
            let status = store.outbox_status()?;
            let entries = store.outbox(0, 100_000, true)?;
            if out.json {
                return out.print_json(&serde_json::json!({
                    "pending": status.pending, "held": status.held, "refused": status.rejected,
                    "entries": entries.iter().map(|e| serde_json::json!({
                        "seq": e.seq, "record_id": e.record_id, "code": e.code, "reason": e.rejected,
                    })).collect::<Vec<_>>(),
                }));
            }
            say!(
                "{} waiting, {} held for review, {} refused",
                status.pending,
                status.held,
                status.rejected
            );
            for e in entries {
                let state = e.code.as_deref().unwrap_or("waiting");
                say!("  {:>5}  {}  {}", e.seq, e.record_id, state);
            }
        }
        Command::Refused { action } => match action {
            None => {
                let refused = store.refused_changes()?;
                if out.json {
                    return out.print_json(&refused);
                }
                if refused.is_empty() {
                    say!("no refused changes");
                }
                for r in refused {
                    say!("#{} record {}: {}", r.id, r.record_id, r.reason);
                    for f in r.fields {
                        say!("    {:<18} {} -> {}", f.field, plain(&f.old), plain(&f.new));
                    }
                }
            }
            Some(RefusedAction::Retry { id }) => {
                out.record(&store.retry_refused(id)?)?;
                say!("made again; it is sent at the next sync");
            }
            Some(RefusedAction::Discard { id }) => {
                store.discard_refused(id)?;
                say!("discarded");
            }
        },
    }
    Ok(())
}

fn sync_once(store: &mut Store, transport: &HttpTransport, out: &Output) -> Result<(), Failure> {
    let done = store.sync(transport, &mut |_| {})?;
    if out.json {
        return out.print_json(&done);
    }
    let t = &done.total;
    say!(
        "synced: {} sent, {} acknowledged, {} refused, {} held for review, {} received, {} evicted",
        t.pushed,
        t.acked,
        t.rejected,
        t.held,
        t.changes + t.snapshots,
        t.evicted
    );
    if t.requeued > 0 {
        say!(
            "the relay was restored from a backup: {} of your changes were sent again",
            t.requeued
        );
    }
    Ok(())
}

fn ask(prompt: &str) -> Result<String, Failure> {
    use std::io::Write;
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn parse_kind(text: &str) -> Result<Kind, Failure> {
    let singular = text.strip_suffix('s').unwrap_or(text);
    let singular = if singular == "activitie" {
        "activity"
    } else {
        singular
    };
    Ok(singular.parse::<Kind>()?)
}

/// `path=value` arguments as fields of a `kind` record; `path=` clears.
fn parse_fields(kind: Kind, args: &[String]) -> Result<Fields, Failure> {
    let mut fields = Fields::new();
    for arg in args {
        let (path, raw) = arg
            .split_once('=')
            .ok_or_else(|| format!("{arg:?}: write fields as path=value, e.g. name=Acme"))?;
        fields.insert(path.to_string(), parse_value(kind, path, raw)?);
    }
    Ok(fields)
}

fn parse_value(kind: Kind, path: &str, raw: &str) -> Result<Value, Failure> {
    if raw.is_empty() {
        return Ok(Value::Null);
    }
    match kind.field(path) {
        Some(spec) => Ok(value_from_text(spec.ty, raw).map_err(|e| format!("{path}: {e}"))?),
        // Custom fields take what the text looks like.
        None => Ok(raw
            .parse::<i64>()
            .map(Value::Int)
            .or_else(|_| raw.parse::<f64>().map(Value::Float))
            .or_else(|_| raw.parse::<bool>().map(Value::Bool))
            .unwrap_or_else(|_| Value::from(raw))),
    }
}

/// UTC date and time, to the minute.
fn time(ms: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// A value as a person reads it: text without quotes.
fn plain(value: &Value) -> String {
    match value {
        Value::Text(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The distinguishing end of an actor or device id.
fn tail(id: &str) -> &str {
    &id[id.len().saturating_sub(8)..]
}

struct Output {
    json: bool,
}

impl Output {
    fn print_json<T: Serialize>(&self, value: &T) -> Result<(), Failure> {
        say!("{}", serde_json::to_string_pretty(value)?);
        Ok(())
    }

    fn records(&self, records: &[Record]) -> Result<(), Failure> {
        if self.json {
            return self.print_json(&records);
        }
        for r in records {
            let mark = if r.deleted { " (deleted)" } else { "" };
            say!(
                "{}  {:<8} {:<32} {}{mark}",
                r.id,
                r.kind.as_str(),
                r.display_name(),
                r.text("territory").unwrap_or("")
            );
        }
        Ok(())
    }

    fn record(&self, r: &Record) -> Result<(), Failure> {
        if self.json {
            return self.print_json(r);
        }
        let mark = if r.deleted { " (deleted)" } else { "" };
        say!("{} {} {}{mark}", r.kind.as_str(), r.id, r.display_name());
        for (path, value) in &r.fields {
            say!("    {path:<18} {}", plain(value));
        }
        say!(
            "    created {} by {}, updated {}",
            time(r.created_at),
            r.created_by,
            time(r.updated_at)
        );
        Ok(())
    }
}
