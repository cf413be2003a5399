//! A relay in its own process on 127.0.0.1, for benchmarks and scenarios:
//! the calling binary re-runs itself with `--relay-child DIR`, which serves
//! the relay library (the same code as `fieldcrm-server serve`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use fieldcrm_server::auth::hash_password;
use fieldcrm_server::relay::postgres::PgRelay;
use fieldcrm_server::relay::sqlite::SqliteRelay;
use fieldcrm_server::relay::{RelayStore, Role};

pub const PASSWORD: &str = "bench-password";

/// The office user of the benchmark relay.
pub const OFFICE: &str = "office";

/// The flag that turns a binary into the relay child.
pub const CHILD_FLAG: &str = "--relay-child";

/// Users of the benchmark relay: `rep0..reps` in territories `t0..`, plus
/// `ann`, `bob` and `cat` in `north` (W1's owners: the relay refuses
/// records owned by someone who is not a user) and [`OFFICE`].
pub fn seed(relay: &dyn RelayStore, reps: usize) -> Result<(), Box<dyn std::error::Error>> {
    let hash = hash_password(PASSWORD)?;
    relay.add_territory("north")?;
    relay.add_user("ann", &hash, Role::Rep, &["north".into()])?;
    relay.add_user("bob", &hash, Role::Rep, &["north".into()])?;
    relay.add_user("cat", &hash, Role::Rep, &["north".into()])?;
    relay.add_user(OFFICE, &hash, Role::Office, &[])?;
    for i in 0..reps {
        let t = format!("t{i}");
        relay.add_territory(&t)?;
        relay.add_user(&format!("rep{i}"), &hash, Role::Rep, &[t])?;
    }
    Ok(())
}

/// Body of the child process: open, seed if new, serve until killed. With
/// `database`, the store is PostgreSQL; otherwise SQLite in `dir`.
pub fn run_child(
    dir: &Path,
    reps: usize,
    database: Option<&str>,
) -> Result<(), Box<dyn std::error::Error>> {
    let relay: Arc<dyn RelayStore> = match database {
        Some(url) => Arc::new(PgRelay::open(url, 16)?),
        None => Arc::new(SqliteRelay::open(dir)?),
    };
    if relay.list_users()?.is_empty() {
        seed(&*relay, reps)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on http://{}", listener.local_addr()?);
        fieldcrm_server::serve(relay, listener, std::future::pending()).await
    })
}

/// A running relay child.
#[derive(Debug)]
pub struct RelayProcess {
    child: Child,
    pub url: String,
}

impl RelayProcess {
    pub fn start(dir: &Path, reps: usize) -> std::io::Result<RelayProcess> {
        RelayProcess::start_with(dir, reps, None)
    }

    /// A relay on PostgreSQL at `database` (seeded by the first one started).
    pub fn start_with(
        dir: &Path,
        reps: usize,
        database: Option<&str>,
    ) -> std::io::Result<RelayProcess> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg(CHILD_FLAG)
            .arg(dir)
            .arg(reps.to_string())
            .args(database)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut line = String::new();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        BufReader::new(stdout).read_line(&mut line)?;
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| std::io::Error::other(format!("relay child said {line:?}")))?
            .to_string();
        Ok(RelayProcess { child, url })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time the relay process has used so far (user + system, all threads).
    pub fn cpu_time(&self) -> std::time::Duration {
        process_cpu_time(self.child.id())
    }

    /// Resident memory of the relay process now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmRSS:")
    }

    /// File descriptors the relay process holds open now.
    pub fn open_fds(&self) -> u64 {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count() as u64)
            .unwrap_or(0)
    }

    /// Peak resident memory of the relay process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmHWM:")
    }
}

/// Peak resident memory of this process, in KiB.
pub fn own_peak_rss_kib() -> u64 {
    status_kib(std::process::id(), "VmHWM:")
}

/// A KiB figure of `/proc/PID/status` (`VmRSS:`, `VmHWM:`); 0 where none.
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time process `pid` has used (user + system, all threads), from
/// `/proc` (zero where there is none), in clock ticks of 10 ms.
pub fn process_cpu_time(pid: u32) -> std::time::Duration {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may hold spaces): utime
            // and stime are the 12th and 13th.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .unwrap_or(0);
    std::time::Duration::from_millis(ticks * 10)
}

/// (user, system) CPU time process `pid` has used, from `/proc`, in
/// clock ticks of 10 ms: where the time of a phase went.
pub fn process_cpu_split(pid: u32) -> (std::time::Duration, std::time::Duration) {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
        })
        .unwrap_or((0u64, 0u64));
    (
        std::time::Duration::from_millis(ticks.0 * 10),
        std::time::Duration::from_millis(ticks.1 * 10),
    )
}

/// Whether this process was started as the relay child; if so, runs it.
pub fn child_main_if_requested() -> Option<Result<(), Box<dyn std::error::Error>>> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == CHILD_FLAG)?;
    let dir = args.get(i + 1)?;
    let reps = args.get(i + 2).and_then(|r| r.parse().ok()).unwrap_or(0);
    let database = args.get(i + 3).map(String::as_str);
    Some(run_child(Path::new(dir), reps, database))
}
