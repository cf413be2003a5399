//! `fieldcrm-server`: command-line entry point. Parses flags and calls the
//! library; no logic of its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

/// mimalloc returns freed memory to the system; glibc's malloc keeps each
/// sign-in's 19 MiB Argon2 block in per-thread arenas (hundreds of MiB
/// after a burst of sign-ins).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use fieldcrm_server::relay::postgres::PgRelay;
use fieldcrm_server::relay::sqlite::{backup, SqliteRelay};
use fieldcrm_server::relay::{office, RelayStore, Role};
use fieldcrm_server::{accounts, demo, ServeOptions};

/// Who acts, in the audit log, for commands run here.
const CLI: &str = "cli";

#[derive(Parser, Debug)]
#[command(
    name = "fieldcrm-server",
    version,
    about = "FieldCRM relay: merges changes between reps' devices and the office",
    long_about = "FieldCRM relay: merges changes between reps' devices and the office.\n\n\
        Every setting is a flag and an environment variable (shown in each command's --help).\n\
        Quick start: `fieldcrm-server serve --demo` seeds demo users and records into an empty store."
)]
struct Cli {
    #[command(flatten)]
    data: DataDir,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct DataDir {
    /// Folder of the relay's embedded SQLite store (created if missing).
    #[arg(
        long,
        global = true,
        env = "FIELDCRM_DATA",
        default_value = "fieldcrm-data"
    )]
    data: PathBuf,
    /// Keep the relay's data in PostgreSQL instead of the embedded SQLite
    /// store (`postgres://user@host:5432/db`); several relays may share one.
    #[arg(long, global = true, env = "FIELDCRM_DATABASE")]
    database: Option<String>,
    /// Most PostgreSQL connections this process opens.
    #[arg(long, global = true, env = "FIELDCRM_DB_POOL", default_value_t = 16)]
    db_pool: u32,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the relay.
    Serve {
        /// Address and port to listen on.
        #[arg(long, env = "FIELDCRM_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Seed the demo dataset first if the store has no users.
        #[arg(long, env = "FIELDCRM_DEMO")]
        demo: bool,
        /// Seconds a client may take to send a request's headers, and any
        /// request but an event stream to complete (408 after that).
        #[arg(long, env = "FIELDCRM_REQUEST_TIMEOUT", default_value_t = 60)]
        request_timeout: u64,
        /// Mark the office UI's session cookie Secure (set when users reach
        /// the relay over HTTPS, e.g. through a TLS-terminating balancer).
        #[arg(long, env = "FIELDCRM_SECURE_COOKIES")]
        secure_cookies: bool,
        /// Behind a reverse proxy: the header it sets to the client's
        /// address (e.g. X-Forwarded-For), used to throttle sign-ins per
        /// client. Never set it without such a proxy in front.
        #[arg(long, env = "FIELDCRM_CLIENT_ADDRESS_HEADER")]
        client_address_header: Option<axum::http::HeaderName>,
        /// Serve /metrics only to requests with `Authorization: Bearer TOKEN`.
        #[arg(long, env = "FIELDCRM_METRICS_TOKEN", hide_env_values = true)]
        metrics_token: Option<String>,
        /// Largest attachment the relay stores, in MiB (at most 25, the
        /// most a device attaches).
        #[arg(long, env = "FIELDCRM_MAX_ATTACHMENT_MIB", default_value_t = 25)]
        max_attachment_mib: u64,
        /// Days a blob no record names any more is kept before it is removed.
        #[arg(long, env = "FIELDCRM_BLOB_GRACE_DAYS", default_value_t = 7)]
        blob_grace_days: u64,
    },
    /// Remove attachment blobs no record has named for the grace period
    /// (the relay also does this every hour while it serves).
    CollectBlobs {
        /// Days a blob no record names is kept.
        #[arg(long, default_value_t = 7)]
        grace_days: u64,
    },
    /// Seed the demo dataset (two territories, reps, a manager, an office user, records).
    Demo,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage territories.
    #[command(subcommand)]
    Territory(TerritoryCommand),
    /// Write a consistent copy of the embedded store to FILE while the
    /// relay serves (PostgreSQL: use pg_dump, see docs/deploy.md).
    Backup {
        /// The new file to write (it must not exist).
        file: PathBuf,
    },
    /// Put a backup back, with the relay stopped. SQLite: `--from FILE`
    /// replaces the store (the old one is kept in the data folder).
    /// PostgreSQL: after pg_restore, run it without --from. Either way the
    /// log gets a new identity, and devices send again what the restored
    /// relay may lack.
    Restore {
        /// The backup file (embedded store only).
        #[arg(long)]
        from: Option<PathBuf>,
    },
    /// Changes held for review: made while a rep had a record in view,
    /// arrived after it left their territories.
    #[command(subcommand)]
    Review(ReviewCommand),
    /// The organisation configuration every device follows: deal stages,
    /// picklists, custom fields. Entries are retired, never removed.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Merge a duplicate into the record to keep (accounts, contacts,
    /// leads): the kept one fills its blanks from it and keeps both notes,
    /// everything naming the duplicate is re-pointed, and the duplicate
    /// becomes a deleted record naming the kept one.
    Merge {
        /// The id of the record to keep.
        keep: String,
        /// The id of its duplicate.
        duplicate: String,
        /// Fields whose value comes from the duplicate instead
        /// (comma-separated, e.g. `email,phone`).
        #[arg(long, value_delimiter = ',')]
        take: Vec<String>,
    },
    /// Undo the merge that made RECORD a merged duplicate, while nobody
    /// has changed the record it was merged into since.
    Unmerge {
        /// The id of the merged duplicate.
        record: String,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print the pipeline, the picklists and the custom fields.
    Show,
    /// Add a deal stage.
    AddStage {
        name: String,
        /// open, won or lost.
        #[arg(long, default_value = "open")]
        outcome: String,
        /// Percent a deal in it counts at (default: spread by position).
        #[arg(long)]
        probability: Option<i64>,
        /// Put it right after this stage (default: at the end).
        #[arg(long)]
        after: Option<String>,
    },
    /// Retire a stage (deals in it keep it; no-one is offered it).
    RetireStage {
        name: String,
        /// Offer it again instead.
        #[arg(long)]
        restore: bool,
    },
    /// Add a value to a picklist (creating the picklist with its first value).
    AddValue {
        list: String,
        value: String,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Retire a picklist value.
    RetireValue {
        list: String,
        value: String,
        #[arg(long)]
        restore: bool,
    },
    /// Define a custom field of a kind (set on records as custom.NAME).
    AddField {
        /// account, contact, deal, activity, lead or case.
        kind: String,
        name: String,
        /// text, number, integer, money, date, boolean, picklist or reference.
        #[arg(long = "type")]
        ty: String,
        #[arg(long, default_value = "")]
        label: String,
        /// The picklist of a picklist field.
        #[arg(long)]
        picklist: Option<String>,
        /// The kind a reference field points at.
        #[arg(long)]
        refers_to: Option<String>,
        /// New records must set it; edits may not clear it.
        #[arg(long)]
        required: bool,
        #[arg(long)]
        searchable: bool,
    },
    /// Retire a custom field (values stay on records; forms stop offering it).
    RetireField {
        kind: String,
        name: String,
        #[arg(long)]
        restore: bool,
    },
    /// Add a write rule: FIELDS of KIND are changed only by --at-least
    /// (manager, office or admin); everyone else is refused with --reason.
    AddRule {
        kind: String,
        /// a-z, 0-9 and _ (e.g. owner_by_managers).
        name: String,
        /// Comma-separated field paths (custom ones as custom.<name>).
        #[arg(long, value_delimiter = ',', required = true)]
        fields: Vec<String>,
        #[arg(long, default_value = "manager")]
        at_least: String,
        /// Only once the deal is won or lost.
        #[arg(long)]
        closed_only: bool,
        /// What a refused writer is told.
        #[arg(long)]
        reason: String,
    },
    /// Retire a write rule (it binds no-one until restored).
    RetireRule {
        kind: String,
        name: String,
        #[arg(long)]
        restore: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ReviewCommand {
    /// List the held changes a user may decide on.
    List {
        /// The deciding user (office, admin, or a manager of the territory).
        #[arg(long = "as", value_name = "USER")]
        decider: String,
    },
    /// Accept every held change of a record: applied as its author's change.
    Accept {
        record: String,
        #[arg(long = "as", value_name = "USER")]
        decider: String,
    },
    /// Discard every held change of a record.
    Discard {
        record: String,
        #[arg(long = "as", value_name = "USER")]
        decider: String,
    },
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Add a user.
    Add {
        name: String,
        /// rep, manager, office or admin.
        #[arg(long, default_value = "rep")]
        role: String,
        /// Comma-separated territories (they must exist).
        #[arg(long, value_delimiter = ',')]
        territories: Vec<String>,
        /// The user's password (at least 8 characters).
        #[arg(long, env = "FIELDCRM_USER_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// List users.
    List,
    /// Remove a user and revoke their tokens (their changes stay).
    Remove { name: String },
    /// Replace a user's territories; their devices evict and fetch records on next sync.
    SetTerritories {
        name: String,
        #[arg(value_delimiter = ',')]
        territories: Vec<String>,
    },
    /// Revoke every token of a user (sign them out everywhere).
    Revoke { name: String },
    /// Disable a user: no sign-in, every session and device signed out; their records keep them as owner.
    Disable { name: String },
    /// Enable a disabled user again (with the password they had).
    Enable { name: String },
    /// Set a new password; the user's sessions and devices must sign in again.
    Password {
        name: String,
        /// The new password (at least 8 characters).
        #[arg(long, env = "FIELDCRM_USER_PASSWORD", hide_env_values = true)]
        password: String,
    },
}

#[derive(Subcommand, Debug)]
enum TerritoryCommand {
    /// Add a territory.
    Add { name: String },
    /// List territories, each with the one it sits under.
    List,
    /// Put a territory under another (`--under region`) or at the top
    /// (`--top`): users of a territory see every territory under it.
    Move {
        name: String,
        #[arg(long, conflicts_with = "top", required_unless_present = "top")]
        under: Option<String>,
        #[arg(long)]
        top: bool,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    // These work on the store's files or identity, before it is opened.
    match (&cli.command, &cli.data.database) {
        (Command::Backup { .. }, Some(_)) => {
            return Err(
                "back up a PostgreSQL store with pg_dump (docs/deploy.md, Backups); \
                 `backup` copies the embedded SQLite store"
                    .into(),
            )
        }
        (Command::Backup { file }, None) => {
            let done = backup::backup(&cli.data.data, file)?;
            println!(
                "backed up {} to {} ({} bytes, log up to {}) and {} new attachment blob(s) to {}",
                cli.data.data.display(),
                done.path.display(),
                done.bytes,
                done.head,
                done.blobs,
                done.blobs_path.display()
            );
            return Ok(());
        }
        (Command::Restore { from: Some(_) }, Some(_)) => {
            return Err("PostgreSQL: restore the dump with pg_restore, then run \
                 `fieldcrm-server --database URL restore` without --from (docs/deploy.md)"
                .into())
        }
        (Command::Restore { from: None }, None) => {
            return Err("say which backup to restore: `fieldcrm-server restore --from FILE`".into())
        }
        (Command::Restore { from: Some(from) }, None) => {
            let done = backup::restore(&cli.data.data, from)?;
            println!(
                "restored {} into {} (log up to {})",
                from.display(),
                cli.data.data.display(),
                done.head
            );
            if let Some(kept) = done.kept {
                println!("the store it replaced is kept in {}", kept.display());
            }
            println!(
                "devices that synced after the backup send their changes again at their next sync"
            );
            return Ok(());
        }
        (Command::Restore { from: None }, Some(url)) => {
            PgRelay::open(url, 1)?.mark_restored()?;
            println!("the restored database's log has a new identity; start the relays");
            println!(
                "devices that synced after the backup send their changes again at their next sync"
            );
            return Ok(());
        }
        _ => {}
    }
    // One relay per data folder; `restore` waits for it to stop.
    let _serving = match (&cli.command, &cli.data.database) {
        (Command::Serve { .. }, None) => Some(backup::ServeLock::acquire(&cli.data.data)?),
        _ => None,
    };
    let (relay, place): (Arc<dyn RelayStore>, String) = match &cli.data.database {
        Some(url) => (
            Arc::new(PgRelay::open(url, cli.data.db_pool)?),
            "PostgreSQL".into(),
        ),
        None => (
            Arc::new(SqliteRelay::open(&cli.data.data)?),
            cli.data.data.display().to_string(),
        ),
    };
    match cli.command {
        Command::Serve {
            listen,
            demo,
            request_timeout,
            secure_cookies,
            client_address_header,
            metrics_token,
            max_attachment_mib,
            blob_grace_days,
        } => {
            if demo {
                seed_demo(&*relay)?;
            }
            if max_attachment_mib == 0
                || max_attachment_mib << 20 > fieldcrm_core::MAX_ATTACHMENT_BYTES
            {
                return Err(format!(
                    "--max-attachment-mib is 1 to {} (the most a device attaches)",
                    fieldcrm_core::MAX_ATTACHMENT_BYTES >> 20
                )
                .into());
            }
            let options = ServeOptions {
                request_timeout: std::time::Duration::from_secs(request_timeout.max(1)),
                secure_cookies,
                client_address_header,
                metrics_token: metrics_token.filter(|t| !t.is_empty()),
                max_blob_bytes: max_attachment_mib << 20,
                blob_grace_ms: days_ms(blob_grace_days),
            };
            serve(relay, listen, &place, options)?;
        }
        Command::Demo => seed_demo(&*relay)?,
        Command::CollectBlobs { grace_days } => {
            let removed =
                fieldcrm_server::relay::blobs::collect_garbage(&*relay, days_ms(grace_days))?;
            println!("removed {removed} blob(s) no record has named for {grace_days} day(s)");
        }
        Command::User(cmd) => user_command(&*relay, cmd)?,
        Command::Territory(TerritoryCommand::Add { name }) => {
            accounts::add_territory(&*relay, CLI, &name)?;
            println!("territory {name} added");
        }
        Command::Territory(TerritoryCommand::List) => {
            for (t, parent) in relay.territory_parents()? {
                match parent {
                    Some(p) => println!("{t}  (under {p})"),
                    None => println!("{t}"),
                }
            }
        }
        Command::Territory(TerritoryCommand::Move { name, under, .. }) => {
            accounts::set_territory_parent(&*relay, CLI, &name, under.as_deref())?;
            match under {
                Some(p) => println!("territory {name} is now under {p}"),
                None => println!("territory {name} is now at the top"),
            }
        }
        Command::Review(cmd) => review_command(&*relay, cmd)?,
        Command::Config(cmd) => config_command(&*relay, cmd)?,
        Command::Merge {
            keep,
            duplicate,
            take,
        } => {
            let merged = office::merge(&*relay, &cli_admin(), &keep, &duplicate, &take)??;
            println!(
                "merged {duplicate} into {keep} ({:?}): {} record(s) re-pointed{}",
                merged.survivor.display_name(),
                merged.repointed,
                match merged.taken.is_empty() {
                    true => String::new(),
                    false => format!(", took {}", merged.taken.join(", ")),
                }
            );
        }
        Command::Unmerge { record } => {
            let back = office::unmerge(&*relay, &cli_admin(), &record)??;
            println!(
                "{record} ({:?}) is back; the merge is undone",
                back.display_name()
            );
        }
        Command::Backup { .. } | Command::Restore { .. } => unreachable!("handled above"),
    }
    Ok(())
}

fn days_ms(days: u64) -> i64 {
    (days.min(36_500) * 24 * 3600 * 1000) as i64
}

/// The CLI acts as an admin, named "cli" in the records' history.
fn cli_admin() -> fieldcrm_server::relay::User {
    fieldcrm_server::relay::User {
        id: CLI.into(),
        role: Role::Admin,
        territories: Vec::new(),
    }
}

fn config_command(
    relay: &dyn RelayStore,
    cmd: ConfigCommand,
) -> Result<(), Box<dyn std::error::Error>> {
    use fieldcrm_server::config_entries as entries;
    let config = relay.configuration()?;
    let kind = |k: &str| k.parse::<fieldcrm_core::Kind>();
    let entry = match cmd {
        ConfigCommand::Show => {
            print_config(&config);
            return Ok(());
        }
        ConfigCommand::AddStage {
            name,
            outcome,
            probability,
            after,
        } => {
            let outcome = match outcome.as_str() {
                "open" => fieldcrm_core::StageOutcome::Open,
                "won" => fieldcrm_core::StageOutcome::Won,
                "lost" => fieldcrm_core::StageOutcome::Lost,
                other => return Err(format!("outcome {other:?} is not open, won or lost").into()),
            };
            entries::add_stage(&config, &name, outcome, probability, after.as_deref())
        }
        ConfigCommand::RetireStage { name, restore } => {
            entries::retire_stage(&config, &name, !restore)
        }
        ConfigCommand::AddValue { list, value, label } => {
            entries::add_value(&config, &list, &value, &label)
        }
        ConfigCommand::RetireValue {
            list,
            value,
            restore,
        } => entries::retire_value(&config, &list, &value, !restore),
        ConfigCommand::AddField {
            kind: k,
            name,
            ty,
            label,
            picklist,
            refers_to,
            required,
            searchable,
        } => {
            let ty = fieldcrm_core::CustomType::parse(&ty).ok_or_else(|| {
                format!("type {ty:?} is not text, number, integer, money, date, boolean, picklist or reference")
            })?;
            let refers_to = refers_to.as_deref().map(kind).transpose()?;
            let new = entries::NewField {
                label,
                ty,
                picklist,
                refers_to,
                required,
                searchable,
            };
            entries::add_field(&config, kind(&k)?, &name, new)
        }
        ConfigCommand::RetireField {
            kind: k,
            name,
            restore,
        } => entries::retire_field(&config, kind(&k)?, &name, !restore),
        ConfigCommand::AddRule {
            kind: k,
            name,
            fields,
            at_least,
            closed_only,
            reason,
        } => entries::add_rule(
            &config,
            kind(&k)?,
            &name,
            fields,
            &at_least,
            closed_only,
            &reason,
        ),
        ConfigCommand::RetireRule {
            kind: k,
            name,
            restore,
        } => entries::retire_rule(&config, kind(&k)?, &name, !restore),
    }?;
    office::set_config_entry(relay, &cli_admin(), &entry)??;
    println!(
        "{} saved; devices receive it at their next sync",
        entry.path()
    );
    Ok(())
}

fn print_config(config: &fieldcrm_core::Config) {
    let pipeline = config.pipeline();
    println!("Deal stages:");
    for s in pipeline.stages() {
        let retired = if pipeline.is_retired(s) {
            "  (retired)"
        } else {
            ""
        };
        println!(
            "  {s}  {:?}  {}%{retired}",
            pipeline.outcome(s),
            pipeline.probability(s)
        );
    }
    println!("Picklists:");
    for (list, values) in config.picklists() {
        let shown: Vec<String> = values
            .iter()
            .map(|v| {
                let retired = if v.retired { " (retired)" } else { "" };
                format!("{} \"{}\"{retired}", v.value, v.label)
            })
            .collect();
        println!("  {list}: {}", shown.join(", "));
    }
    println!("Custom fields:");
    if config.custom_fields().is_empty() {
        println!("  none");
    }
    for f in config.custom_fields() {
        let e = &f.entry;
        let mut notes = vec![e.ty.as_str().to_string()];
        notes.extend(e.picklist.iter().map(|l| format!("picklist {l}")));
        notes.extend(e.refers_to.map(|k| format!("refers to {k}")));
        if e.required {
            notes.push("required".into());
        }
        if e.retired {
            notes.push("retired".into());
        }
        println!(
            "  {} {}  \"{}\"  ({})",
            f.kind,
            f.path(),
            e.label,
            notes.join(", ")
        );
    }
    println!("Write rules:");
    if config.write_rules().is_empty() {
        println!("  none");
    }
    for r in config.write_rules() {
        let e = &r.entry;
        println!(
            "  {}:{}  {} changed only by {:?} and above{}{}: {}",
            r.kind,
            r.name,
            e.fields.join(", "),
            e.at_least,
            if e.closed_only {
                " once won or lost"
            } else {
                ""
            },
            if e.retired { " (retired)" } else { "" },
            e.reason
        );
    }
}

fn review_command(
    relay: &dyn RelayStore,
    cmd: ReviewCommand,
) -> Result<(), Box<dyn std::error::Error>> {
    let decider = |id: &str| -> Result<fieldcrm_server::relay::User, Box<dyn std::error::Error>> {
        let user = relay.user(id)?.ok_or_else(|| format!("no user {id:?}"))?.0;
        Ok(relay.in_effect(user)?)
    };
    match cmd {
        ReviewCommand::List { decider: who } => {
            let held = office::review_queue(relay, &decider(&who)?)?;
            if held.is_empty() {
                println!("nothing is held for review");
            }
            for h in held {
                let fields: Vec<String> = h
                    .fields
                    .iter()
                    .map(|f| format!("{}: {} -> {}", f.field, f.old, f.new))
                    .collect();
                println!(
                    "{}  {:<24} by {:<10} {}",
                    h.held.record_id,
                    h.record_name,
                    h.held.user,
                    fields.join("; ")
                );
            }
        }
        ReviewCommand::Accept {
            record,
            decider: who,
        } => decide(relay, &decider(&who)?, &record, true)?,
        ReviewCommand::Discard {
            record,
            decider: who,
        } => decide(relay, &decider(&who)?, &record, false)?,
    }
    Ok(())
}

fn decide(
    relay: &dyn RelayStore,
    decider: &fieldcrm_server::relay::User,
    record: &str,
    accept: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    use fieldcrm_server::relay::review::Decided;
    for outcome in office::decide_record(relay, decider, record, accept)? {
        match outcome {
            Decided::Accepted => println!("accepted a change of {record}"),
            Decided::Discarded => println!("discarded a change of {record}"),
            Decided::Refused(why) => return Err(format!("could not accept: {why}").into()),
        }
    }
    Ok(())
}

fn seed_demo(relay: &dyn RelayStore) -> Result<(), Box<dyn std::error::Error>> {
    if !demo::is_empty(relay)? {
        println!("demo: the store already has users; not seeding");
        return Ok(());
    }
    let n = demo::seed(relay)?;
    println!(
        "demo: seeded {n} records; users (password {:?}):",
        demo::DEMO_PASSWORD
    );
    for (user, role, territories) in demo::DEMO_USERS {
        println!("  {user:<8} {:<8} {}", role.as_str(), territories.join(","));
    }
    Ok(())
}

fn user_command(
    relay: &dyn RelayStore,
    cmd: UserCommand,
) -> Result<(), Box<dyn std::error::Error>> {
    match cmd {
        UserCommand::Add {
            name,
            role,
            territories,
            password,
        } => {
            let role: Role = role.parse()?;
            accounts::add(relay, CLI, &name, role, &territories, &password)?;
            println!("user {name} added ({})", role.as_str());
        }
        UserCommand::List => {
            for a in accounts::accounts(relay)? {
                println!(
                    "{:<16} {:<8} {:<24} {}",
                    a.user.id,
                    a.user.role.as_str(),
                    a.user.territories.join(","),
                    if a.disabled { "disabled" } else { "" }
                );
            }
        }
        UserCommand::Remove { name } => {
            if !relay.remove_user(&name)? {
                return Err(format!("no user {name:?}").into());
            }
            println!("user {name} removed");
        }
        UserCommand::SetTerritories { name, territories } => {
            accounts::set_territories(relay, CLI, &name, &territories)?;
            println!("user {name}: territories {}", territories.join(","));
        }
        UserCommand::Revoke { name } => {
            println!("revoked {} token(s) of {name}", relay.revoke_tokens(&name)?);
        }
        UserCommand::Disable { name } => {
            accounts::set_disabled(relay, CLI, &name, true)?;
            println!("user {name} disabled and signed out everywhere");
        }
        UserCommand::Enable { name } => {
            accounts::set_disabled(relay, CLI, &name, false)?;
            println!("user {name} enabled");
        }
        UserCommand::Password { name, password } => {
            accounts::reset_password(relay, CLI, &name, &password)?;
            println!("user {name}: new password set, sessions signed out");
        }
    }
    Ok(())
}

fn serve(
    relay: Arc<dyn RelayStore>,
    listen: SocketAddr,
    data: &str,
    options: ServeOptions,
) -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        // Tests and scripts read the real address (with --listen 127.0.0.1:0).
        println!("listening on http://{}", listener.local_addr()?);
        tracing::info!(addr = %listener.local_addr()?, data = %data, "FieldCRM relay listening");
        fieldcrm_server::serve_with(relay, listener, shutdown_signal(), options).await?;
        tracing::info!("relay stopped; in-flight syncs finished");
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

/// SIGTERM or Ctrl-C: stop accepting, let in-flight requests finish.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
