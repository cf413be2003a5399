//! Starts the real `fieldcrm-server` binary on 127.0.0.1 with an ephemeral
//! port, and makes devices (core stores) that sync with it over HTTP.

#![allow(dead_code)]

pub mod db_proxy;
pub mod log_readers;
pub mod raw_client;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use fieldcrm_core::{HttpTransport, ListQuery, Record, Store};

pub const PASSWORD: &str = "correct horse battery";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_fieldcrm-server")
}

/// Runs an admin command against a data folder and checks it succeeded.
pub fn admin(data: &Path, args: &[&str]) {
    admin_on(&["--data".as_ref(), data.as_os_str()], args);
}

/// Runs an admin command against a store (`--data DIR` or `--database
/// URL`), checks it succeeded and returns what it printed.
pub fn admin_on(store: &[&std::ffi::OsStr], args: &[&str]) -> String {
    let out = Command::new(bin())
        .args(store)
        .args(args)
        .env("FIELDCRM_USER_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running relay process.
pub struct Relay {
    child: Child,
    pub url: String,
    pub data: PathBuf,
}

impl Relay {
    pub fn start(data: &Path) -> Relay {
        Relay::start_with(&["--data".as_ref(), data.as_os_str()], data, &[])
    }

    /// A relay on `data` with more `serve` flags.
    pub fn start_serving(data: &Path, flags: &[&str]) -> Relay {
        Relay::start_with(&["--data".as_ref(), data.as_os_str()], data, flags)
    }

    /// A relay process on a PostgreSQL database.
    pub fn start_postgres(url: &str) -> Relay {
        Relay::start_with(&["--database".as_ref(), url.as_ref()], Path::new(""), &[])
    }

    fn start_with(store: &[&std::ffi::OsStr], data: &Path, flags: &[&str]) -> Relay {
        let mut child = Command::new(bin())
            .args(store)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(flags)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        // FIELDCRM_TEST_RELAY_LOG=1 shows the relay's log (warnings, errors).
        if std::env::var_os("FIELDCRM_TEST_RELAY_LOG").is_some() {
            std::thread::spawn(move || {
                for line in out.lines().map_while(Result::ok) {
                    eprintln!("relay: {line}");
                }
            });
        }
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from the relay: {line:?}"))
            .to_string();
        Relay {
            child,
            url,
            data: data.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status a relay's `path` answers with.
pub fn status_of(relay: &Relay, path: &str) -> u16 {
    use std::io::{Read, Write};
    let addr = relay.url.trim_start_matches("http://");
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return 0;
    };
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Two territories and users: ann, bob (north reps), sam (south rep),
/// maria (manager of both), olivia (office).
pub fn seed_users(data: &Path) {
    admin(data, &["territory", "add", "north"]);
    admin(data, &["territory", "add", "south"]);
    admin(data, &["user", "add", "ann", "--territories", "north"]);
    admin(data, &["user", "add", "bob", "--territories", "north"]);
    admin(data, &["user", "add", "sam", "--territories", "south"]);
    admin(
        data,
        &[
            "user",
            "add",
            "maria",
            "--role",
            "manager",
            "--territories",
            "north,south",
        ],
    );
    admin(data, &["user", "add", "olivia", "--role", "office"]);
}

/// A device: its own store and a signed-in transport.
pub struct Device {
    pub store: Store,
    pub transport: HttpTransport,
    token: String,
}

impl Device {
    pub fn new(dir: &Path, relay: &Relay, user: &str) -> Device {
        let store = Store::open(dir.join(format!("{user}-device.db")), user).unwrap();
        let (transport, login) = HttpTransport::login(&relay.url, user, PASSWORD).unwrap();
        Device {
            store,
            transport,
            token: login.token,
        }
    }

    /// Point at a restarted relay (tokens survive restarts).
    pub fn reconnect(&mut self, relay: &Relay) {
        self.transport = HttpTransport::new(&relay.url, &self.token);
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn sync(&mut self) -> fieldcrm_core::SyncProgress {
        self.store.sync(&self.transport, &mut |_| {}).unwrap()
    }
}

/// The hashes of every change in a store's outbox.
pub fn outbox_hashes(store: &Store) -> std::collections::HashSet<[u8; 32]> {
    store
        .outbox(0, 100_000, true)
        .unwrap()
        .into_iter()
        .map(|e| e.hash)
        .collect()
}

/// Every record of a store, deleted ones included, page by page.
pub fn all_records(store: &Store) -> Vec<Record> {
    let mut all = Vec::new();
    loop {
        let q = ListQuery {
            limit: 1000,
            offset: all.len(),
            include_deleted: true,
            ..Default::default()
        };
        let page = store.list(&q).unwrap();
        let done = page.records.len() < 1000;
        all.extend(page.records);
        if done {
            return all;
        }
    }
}

/// The PostgreSQL server the tests may use (`FIELDCRM_TEST_POSTGRES`, set by
/// `.ci/run`), or `None` after saying why the test is skipped.
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("FIELDCRM_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            // Straight to stderr: libtest hides what a passing test prints.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "skipped {test}: FIELDCRM_TEST_POSTGRES is not set (a PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/test)"
            );
            None
        }
    }
}

/// A fresh schema of its own in the test database, dropped afterwards, so
/// tests running at once never see each other's tables.
pub struct PgSchema {
    base: String,
    name: String,
}

impl PgSchema {
    pub fn new(base: &str) -> PgSchema {
        let name = format!("t_{}", uuid_like());
        let mut client = postgres::Client::connect(base, postgres::NoTls).unwrap();
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .unwrap();
        PgSchema {
            base: base.to_string(),
            name,
        }
    }

    /// The URL that puts this schema first on the search path.
    pub fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-csearch_path%3D{}", self.base, self.name)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.base, postgres::NoTls) {
            let _ = client.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name));
        }
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000,
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A relay with the seeded users (`seed_users`) in `dir`, and the path
/// and token of ann's phone store, for tests that kill a device process.
pub fn relay_and_phone(dir: &Path) -> (Relay, PathBuf, String) {
    let data = dir.join("relay");
    seed_users(&data);
    let relay = Relay::start(&data);
    let (_, login) = HttpTransport::login(&relay.url, "ann", PASSWORD).unwrap();
    (relay, dir.join("ann-phone.db"), login.token)
}

/// A device process: this test binary re-run for test `test` alone, told
/// its work by environment variable `env` = `spec`; its stdout as given.
pub fn device_process(test: &str, env: &str, spec: String, stdout: Stdio) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, spec)
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}
