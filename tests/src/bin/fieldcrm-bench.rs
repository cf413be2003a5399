//! FieldCRM benchmark: runs workload W1 through the real store and prints
//! ONE JSON object on stdout (a readable summary goes to stderr).
//!
//! `cargo run --release -p fieldcrm-tests --bin fieldcrm-bench -- [--records N] [--devices D] [--store sqlite|postgres] [--listeners N] [--quick]`

use std::time::{Duration, Instant};

use clap::Parser;

/// Mimalloc as in `fieldcrm-server`, so the relay child measures alike; the
/// system allocator in a device child, as in an app.
#[global_allocator]
static ALLOCATOR: fieldcrm_tests::allocator::BenchAllocator =
    fieldcrm_tests::allocator::BenchAllocator;
use fieldcrm_core::{HttpTransport, Kind, Store, Value};
use fieldcrm_tests::relay_process::{self, RelayProcess};
use fieldcrm_tests::workload::{self, Planned};
use fieldcrm_tests::{catalogue, company, fresh_device};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value as Json};

#[derive(Parser, Debug)]
#[command(about = "Benchmark FieldCRM on workload W1 and print one JSON object")]
struct Args {
    /// Records in the workload.
    #[arg(long, default_value_t = 10_000)]
    records: usize,
    /// Records in the store whose open time and memory are measured.
    #[arg(long, default_value_t = 100_000)]
    open_records: usize,
    /// Devices in the concurrent phase, each in its own territory.
    #[arg(long, default_value_t = 50)]
    devices: usize,
    /// Products in the catalogue phase (four prices each; 0: no phase).
    #[arg(long, default_value_t = 5_000)]
    catalogue_products: usize,
    /// Small run for CI: 500 records, 5 devices, 5,000-record open test,
    /// a 500-product catalogue.
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Seconds of the load phase: every device edits and syncs once per
    /// `--load-interval-ms` (with jitter) against one relay.
    #[arg(long, default_value_t = 60)]
    load_seconds: u64,
    #[arg(long, default_value_t = 1000)]
    load_interval_ms: u64,
    /// Devices holding the live event stream open in the listeners phase
    /// (0: no phase; e.g. 2000 for the many-connections figures).
    #[arg(long, default_value_t = 0)]
    listeners: usize,
    /// Records of the whole-company phase (0: no phase; e.g. 1000000),
    /// spread over `--company-territories`.
    #[arg(long, default_value_t = 0)]
    company_records: usize,
    #[arg(long, default_value_t = 100)]
    company_territories: usize,
    /// The relay's store.
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    store: StoreKind,
    /// PostgreSQL server for `--store postgres` (a fresh schema is made and dropped).
    #[arg(
        long,
        env = "FIELDCRM_BENCH_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreKind {
    Sqlite,
    Postgres,
}

/// A schema of the benchmark's own in the PostgreSQL database, dropped at the end.
struct BenchSchema {
    base: String,
    name: String,
}

impl BenchSchema {
    /// For `--store postgres`, a schema for one phase's relay (`None` on SQLite).
    fn for_phase(
        args: &Args,
        phase: &str,
    ) -> Result<Option<BenchSchema>, Box<dyn std::error::Error>> {
        match args.store {
            StoreKind::Postgres => Ok(Some(BenchSchema::create(&args.postgres, phase)?)),
            StoreKind::Sqlite => Ok(None),
        }
    }

    fn create(base: &str, phase: &str) -> Result<BenchSchema, Box<dyn std::error::Error>> {
        let name = format!("fieldcrm_bench_{}_{phase}", std::process::id());
        let mut client = postgres::Client::connect(base, postgres::NoTls)?;
        client.batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
        ))?;
        Ok(BenchSchema {
            base: base.to_string(),
            name,
        })
    }

    fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-csearch_path%3D{}", self.base, self.name)
    }

    /// Bytes of every table and index in the schema.
    fn bytes(&self) -> u64 {
        postgres::Client::connect(&self.base, postgres::NoTls)
            .and_then(|mut c| {
                c.query_one(
                    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
                     JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r'",
                    &[&self.name],
                )
            })
            .map(|r| r.get::<_, i64>(0) as u64)
            .unwrap_or(0)
    }
}

/// A relay of one phase's own in `DIR/name` (on PostgreSQL, in a schema
/// of its own). Fields drop in order: the relay stops before its schema goes.
struct PhaseRelay {
    relay: RelayProcess,
    schema: Option<BenchSchema>,
    dir: std::path::PathBuf,
}

impl PhaseRelay {
    fn start(
        args: &Args,
        dir: &std::path::Path,
        name: &str,
        reps: usize,
    ) -> Result<PhaseRelay, Box<dyn std::error::Error>> {
        let schema = BenchSchema::for_phase(args, name)?;
        let here = dir.join(name);
        std::fs::create_dir_all(&here)?;
        let url = schema.as_ref().map(BenchSchema::url);
        let relay = RelayProcess::start_with(&here, reps, url.as_deref())?;
        Ok(PhaseRelay {
            relay,
            schema,
            dir: here,
        })
    }

    /// The relay store's size on disk.
    fn store_bytes(&self) -> u64 {
        match &self.schema {
            Some(schema) => schema.bytes(),
            None => file_size(&self.dir.join("relay.db")),
        }
    }
}

impl Drop for BenchSchema {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.base, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name));
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(result) = relay_process::child_main_if_requested() {
        return result;
    }
    if let Some(result) = fresh_device::child_main_if_requested() {
        return result;
    }
    let mut args = Args::parse();
    if args.quick {
        args.records = 500;
        args.open_records = 5_000;
        args.devices = 5;
        args.load_seconds = 3;
        args.catalogue_products = args.catalogue_products.min(500);
    }
    let dir = tempfile::tempdir()?;
    let plan = workload::w1(args.records, args.seed, "north", &["ann", "bob", "cat"]);

    let floor = floor(&plan, dir.path())?;
    let local = local(&args, &plan, dir.path())?;
    let schema = BenchSchema::for_phase(&args, "sync")?;
    let sync = sync_phases(dir.path(), &args, schema.as_ref())?;
    let large = large_bootstrap(
        &PhaseRelay::start(&args, dir.path(), "large", 0)?,
        &args,
        dir.path(),
    )?;
    let catalogue = match args.catalogue_products {
        0 => Json::Null,
        n => {
            // A relay of its own, so the other phases' devices do not
            // bootstrap the catalogue too.
            let schema = BenchSchema::for_phase(&args, "catalogue")?;
            let url = schema.as_ref().map(BenchSchema::url);
            catalogue::phase(dir.path(), n, url.as_deref())?
        }
    };
    let company = match args.company_records {
        0 => Json::Null,
        n => {
            let phase = PhaseRelay::start(&args, dir.path(), "company", args.company_territories)?;
            company::phase(
                &phase.dir,
                &phase.relay,
                n,
                args.company_territories,
                args.seed,
                &|| phase.store_bytes(),
            )?
        }
    };
    let listeners = match args.listeners {
        0 => Json::Null,
        n => {
            let phase = PhaseRelay::start(&args, dir.path(), "listeners", 2)?;
            fieldcrm_tests::listeners::phase(&phase.relay, &phase.dir, n)?
        }
    };
    let ratio = |phase: &Json, key: &str, floor_key: &str| -> Json {
        match (phase[key].as_f64(), floor[floor_key].as_f64()) {
            (Some(a), Some(b)) if b > 0.0 => json!((a / b * 100.0).round() / 100.0),
            _ => Json::Null,
        }
    };
    let mut local = local;
    local["ratio_to_floor"] = json!({
        "create_one_by_one": ratio(&local, "create_one_by_one_s", "one_by_one_s"),
        "create_batch": ratio(&local, "create_batch_s", "batch_s"),
    });
    let [mut upload, mut bootstrap, incremental, concurrent, load, mut relay] = sync;
    relay["store"] = json!(match args.store {
        StoreKind::Sqlite => "sqlite",
        StoreKind::Postgres => "postgres",
    });
    let sync_floor = floor["automerge_load_s"].as_f64().unwrap_or(0.0)
        + floor["sqlite_insert_batch_s"].as_f64().unwrap_or(0.0);
    for phase in [&mut upload, &mut bootstrap] {
        let wall = phase["wall_s"].as_f64().unwrap_or(0.0);
        phase["ratio_to_floor"] = json!(((wall / sync_floor) * 100.0).round() / 100.0);
    }
    let mut large = large;
    if let (Some(big), Some(small)) = (
        large["fresh_device"]["wall_s"].as_f64(),
        bootstrap["fresh_device"]["wall_s"].as_f64(),
    ) {
        // Against the same fresh-device figure at the workload's size.
        large["wall_ratio_to_bootstrap"] = json!((big / small * 100.0).round() / 100.0);
    }
    let report = json!({
        "machine": { "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "workload": { "name": "W1", "records": args.records, "seed": args.seed },
        "local": local,
        "upload": upload,
        "bootstrap": bootstrap,
        "incremental": incremental,
        "concurrent": concurrent,
        "load": load,
        "relay": relay,
        "bootstrap_large": large,
        "company": company,
        "catalogue": catalogue,
        "listeners": listeners,
        "floor": floor,
    });
    eprintln!("{}", summary(&report));
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Creates the plan's records one call each; returns their ids in plan order.
fn create_one_by_one(store: &mut Store, plan: &[Planned]) -> fieldcrm_core::Result<Vec<String>> {
    let mut ids: Vec<String> = Vec::with_capacity(plan.len());
    for p in plan {
        let fields = workload::resolve(p, &ids);
        ids.push(store.create(p.kind, fields)?.id);
    }
    Ok(ids)
}

fn local(
    args: &Args,
    plan: &[Planned],
    dir: &std::path::Path,
) -> Result<Json, Box<dyn std::error::Error>> {
    let path = dir.join("device-a.db");
    let mut store = Store::open(&path, "ann")?;
    let t = Instant::now();
    let ids = create_one_by_one(&mut store, plan)?;
    let one_by_one = t.elapsed();

    let mut batch_store = Store::open(dir.join("device-batch.db"), "ann")?;
    let t = Instant::now();
    workload::create_batch(&mut batch_store, plan)?;
    let batch = t.elapsed();
    drop(batch_store);

    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut edits = Vec::with_capacity(1000);
    for i in 0..1000 {
        let k = rng.gen_range(0..ids.len());
        let (field, value) = match plan[k].kind {
            Kind::Deal => ("probability", Value::Int((i % 11) * 10)),
            Kind::Contact => ("title", Value::from(format!("Title {i}"))),
            _ => ("phone", Value::from(format!("+1 555 {i:04}"))),
        };
        let t = Instant::now();
        store.update(&ids[k], fieldcrm_core::fields([(field, value)]))?;
        edits.push(t.elapsed());
    }

    let mut searches = Vec::new();
    let mut hits = 0;
    for term in workload::search_terms(200, args.seed) {
        let t = Instant::now();
        hits += store.search(&term, None, 20)?.len();
        searches.push(t.elapsed());
    }
    // The process's RSS with the device store open and used; the harness's
    // own copy of the plan is included, so this is an upper bound.
    let device_rss = rss_kib();
    drop(store);

    let rss_before = rss_kib();
    let t = Instant::now();
    let reopened = Store::open(&path, "ann")?;
    let open_n = t.elapsed();
    let rss_open_n = rss_kib().saturating_sub(rss_before);
    drop(reopened);

    // A larger store, built through the batch path, to show open time and
    // memory do not grow with the record count.
    let big_path = dir.join("device-big.db");
    {
        let big_plan = workload::w1(args.open_records, args.seed + 1, "north", &["ann"]);
        let mut big = Store::open(&big_path, "ann")?;
        workload::create_batch(&mut big, &big_plan)?;
    }
    let rss_before = rss_kib();
    let t = Instant::now();
    let big = Store::open(&big_path, "ann")?;
    let open_big = t.elapsed();
    let rss_open_big = rss_kib().saturating_sub(rss_before);
    let first_page = big
        .list(&fieldcrm_core::ListQuery::kind(Kind::Contact))?
        .records
        .len();
    drop(big);

    Ok(json!({
        "records": plan.len(),
        "create_one_by_one_s": secs(one_by_one),
        "create_one_by_one_per_record_ms": ms(one_by_one) / plan.len() as f64,
        "create_batch_s": secs(batch),
        "edit_p50_ms": percentile(&mut edits, 50.0),
        "edit_p99_ms": percentile(&mut edits, 99.0),
        "search_p50_ms": percentile(&mut searches, 50.0),
        "search_p99_ms": percentile(&mut searches, 99.0),
        "search_avg_hits": hits as f64 / 200.0,
        "open_s": secs(open_n),
        "open_rss_delta_kib": rss_open_n,
        "open_large": {
            "records": args.open_records,
            "open_s": secs(open_big),
            "rss_delta_kib": rss_open_big,
            "first_page_records": first_page,
            "file_bytes": file_size(&big_path),
        },
        "device_rss_kib": device_rss,
        "store_file_bytes": file_size(&path),
    }))
}

/// Upload from device A (the batch store), bootstrap of a fresh device B,
/// 100 edits on A reaching a connected B through push; relay figures.
fn sync_phases(
    dir: &std::path::Path,
    args: &Args,
    schema: Option<&BenchSchema>,
) -> Result<[Json; 6], Box<dyn std::error::Error>> {
    let devices = args.devices;
    let relay_dir = dir.join("relay");
    let database = schema.map(BenchSchema::url);
    let relay = RelayProcess::start_with(&relay_dir, devices, database.as_deref())?;
    let pw = relay_process::PASSWORD;

    let mut a = Store::open(dir.join("device-batch.db"), "ann")?;
    let records = a
        .list(&fieldcrm_core::ListQuery {
            limit: 1,
            ..Default::default()
        })?
        .total;
    let (ta, _) = HttpTransport::login(&relay.url, "ann", pw)?;
    let split = |pid: u32| relay_process::process_cpu_split(pid);
    let (relay_pid, me) = (relay.pid(), std::process::id());
    let (ru0, rs0, du0, ds0) = (
        split(relay_pid).0,
        split(relay_pid).1,
        split(me).0,
        split(me).1,
    );
    let t = Instant::now();
    let up = a.sync(&ta, &mut |_| {})?;
    let upload_s = t.elapsed();
    let upload_cpu = json!({
        "relay_user_s": secs(split(relay_pid).0 - ru0), "relay_sys_s": secs(split(relay_pid).1 - rs0),
        "device_user_s": secs(split(me).0 - du0), "device_sys_s": secs(split(me).1 - ds0),
    });
    refuse_rejections(&a, up.total.rejected)?;
    let (up_sent, up_received) = ta.bytes();

    let mut b = Store::open(dir.join("device-b.db"), "bob")?;
    let (tb, _) = HttpTransport::login(&relay.url, "bob", pw)?;
    let t = Instant::now();
    let down = b.sync(&tb, &mut |_| {})?;
    let bootstrap_s = t.elapsed();
    let (boot_sent, boot_received) = tb.bytes();
    let bootstrapped = b
        .list(&fieldcrm_core::ListQuery {
            limit: 1,
            ..Default::default()
        })?
        .total;
    let compacted = compacted_bytes(&a)?;
    // The same bootstrap by a device in a process of its own (its memory,
    // and when the UI could list the first records).
    let fresh = fresh_device::measure(&relay.url, "cat", &dir.join("device-fresh.db"))?;

    // Incremental: B waits on the event stream; A edits 100 records and syncs once.
    let ids = a.record_ids_after("", 100)?;
    let expected: Vec<(String, String)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), format!("Inc {i}")))
        .collect();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let watcher = {
        let expected = expected.clone();
        std::thread::spawn(move || -> fieldcrm_core::Result<(Instant, usize)> {
            let mut syncs = 0;
            ready_tx.send(()).ok();
            loop {
                let cursor = b.cursor()?.seq;
                if tb.wait_for_change(cursor, Duration::from_secs(30))? {
                    b.sync(&tb, &mut |_| {})?;
                    syncs += 1;
                }
                let done = expected.iter().all(|(id, v)| {
                    b.get(id)
                        .map(|r| {
                            r.get("custom.note")
                                .and_then(|x| x.as_str().map(String::from))
                                == Some(v.clone())
                        })
                        .unwrap_or(false)
                });
                if done {
                    return Ok((Instant::now(), syncs));
                }
            }
        })
    };
    ready_rx.recv()?;
    std::thread::sleep(Duration::from_millis(200)); // let B's event stream connect
    for (id, v) in &expected {
        a.update(id, fieldcrm_core::fields([("custom.note", v.as_str())]))?;
    }
    let t = Instant::now();
    let pushed = a.sync(&ta, &mut |_| {})?;
    let pushed_s = t.elapsed();
    refuse_rejections(&a, pushed.total.rejected)?;
    let (seen_at, b_syncs) = watcher.join().map_err(|_| "watcher thread panicked")??;
    let incremental = seen_at.duration_since(t);
    let live = live_phase(dir, &relay.url, &mut a, &ta, bootstrapped)?;

    let mut concurrent = concurrent_phase(dir, &[&relay], devices, "one")?;
    let load = load_phase(
        dir,
        &relay.url,
        devices,
        Duration::from_secs(args.load_seconds),
        Duration::from_millis(args.load_interval_ms),
    )?;
    let relay_bytes = match schema {
        Some(schema) => schema.bytes(),
        None => file_size(&relay_dir.join("relay.db")),
    };
    let mut relay_figures =
        json!({ "peak_rss_kib": relay.peak_rss_kib(), "store_bytes": relay_bytes });
    if let Some(url) = &database {
        // The same load split over two relay processes on the one database.
        let second = RelayProcess::start_with(&dir.join("relay-2"), devices, Some(url))?;
        let two = concurrent_phase(dir, &[&relay, &second], devices, "two")?;
        relay_figures["second_relay_peak_rss_kib"] = json!(second.peak_rss_kib());
        concurrent["two_relays"] = two;
    }
    Ok([
        json!({
            "wall_s": secs(upload_s), "records": records, "changes_acked": up.total.acked,
            "rounds": up.round, "bytes_up": up_sent, "bytes_down": up_received,
            "cpu": upload_cpu,
        }),
        json!({
            "wall_s": secs(bootstrap_s), "records": bootstrapped, "rounds": down.round,
            "bytes_up": boot_sent, "bytes_down": boot_received,
            "compacted_automerge_bytes": compacted,
            "bytes_ratio_to_compacted": ((boot_received as f64 / compacted as f64) * 1000.0).round() / 1000.0,
            "fresh_device": fresh,
        }),
        json!({
            "wall_s": secs(incremental), "edits": expected.len(), "push_sync_s": secs(pushed_s),
            "receiver_syncs": b_syncs, "live": live,
        }),
        concurrent,
        load,
        relay_figures,
    ])
}

/// The `--open-records` store (built by the local phase) uploaded to a
/// relay of its own, then bootstrapped by a fresh device in its own process.
fn large_bootstrap(
    phase: &PhaseRelay,
    args: &Args,
    dir: &std::path::Path,
) -> Result<Json, Box<dyn std::error::Error>> {
    let (here, relay) = (&phase.dir, &phase.relay);
    let mut big = Store::open(dir.join("device-big.db"), "ann")?;
    let (transport, _) = HttpTransport::login(&relay.url, "ann", relay_process::PASSWORD)?;
    let t = Instant::now();
    let up = big.sync(&transport, &mut |_| {})?;
    let upload_s = t.elapsed();
    refuse_rejections(&big, up.total.rejected)?;
    drop(big);
    let relay_cpu = relay.cpu_time();
    let fresh = fresh_device::measure(&relay.url, "bob", &here.join("device-fresh.db"))?;
    let relay_cpu = relay.cpu_time() - relay_cpu;
    Ok(json!({
        "relay_cpu_s": secs(relay_cpu),
        "records": args.open_records,
        "upload_s": secs(upload_s),
        "fresh_device": fresh,
        "relay_peak_rss_kib": relay.peak_rss_kib(),
    }))
}

/// An app-shaped device: a [`SharedStore`] with background sync bootstraps
/// the relay's `records` while a UI thread keeps reading (timed), then
/// another device edits one record and the app's change listener is timed
/// until it hears of it.
fn live_phase(
    dir: &std::path::Path,
    url: &str,
    editor: &mut Store,
    editor_transport: &HttpTransport,
    records: usize,
) -> Result<Json, Box<dyn std::error::Error>> {
    use fieldcrm_core::{ChangeListener, RecordChange, SharedStore, SyncObserver, SyncState};
    use std::sync::{Arc, Mutex};

    struct Heard(Mutex<Vec<(Instant, String)>>);
    impl ChangeListener for Heard {
        fn changed(&self, changes: &[RecordChange]) {
            let now = Instant::now();
            let mut heard = self.0.lock().unwrap();
            heard.extend(changes.iter().map(|c| (now, c.id.clone())));
        }
    }
    struct Quiet;
    impl SyncObserver for Quiet {
        fn state(&self, _: &SyncState) {}
    }

    let app = SharedStore::open(&dir.join("device-live.db").to_string_lossy(), "bob")?;
    let heard = Arc::new(Heard(Mutex::new(Vec::new())));
    app.add_listener(heard.clone());
    let (transport, _) = HttpTransport::login(url, "bob", relay_process::PASSWORD)?;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ui = {
        let (app, done) = (app.clone(), done.clone());
        std::thread::spawn(move || -> fieldcrm_core::Result<Vec<Duration>> {
            let mut reads = Vec::new();
            let q = fieldcrm_core::ListQuery {
                limit: 20,
                ..Default::default()
            };
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let t = Instant::now();
                app.read(|s| s.list(&q))?;
                reads.push(t.elapsed());
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(reads)
        })
    };
    let t = Instant::now();
    app.start_sync(Arc::new(transport), Arc::new(Quiet));
    let count = || {
        app.read(|s| {
            s.list(&fieldcrm_core::ListQuery {
                limit: 1,
                ..Default::default()
            })
        })
        .map(|p| p.total)
    };
    while count()? < records {
        if t.elapsed() > Duration::from_secs(120) {
            return Err("the live device did not finish its bootstrap in 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let bootstrap = t.elapsed();
    // Let the listener settle, then one edit elsewhere.
    std::thread::sleep(Duration::from_millis(300));
    let id = editor.record_ids_after("", 1)?.remove(0);
    editor.update(&id, fieldcrm_core::fields([("custom.live", "yes")]))?;
    let t = Instant::now();
    editor.sync(editor_transport, &mut |_| {})?;
    let told = loop {
        if let Some((at, _)) = heard
            .0
            .lock()
            .unwrap()
            .iter()
            .find(|(at, i)| *i == id && *at >= t)
        {
            break at.duration_since(t);
        }
        if t.elapsed() > Duration::from_secs(30) {
            return Err("the live device's listener never heard of the edit".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    app.stop_sync();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut reads = ui.join().map_err(|_| "the UI thread panicked")??;
    let max = reads.iter().copied().max().unwrap_or_default();
    Ok(json!({
        "records": records,
        "bootstrap_s": secs(bootstrap),
        "ui_reads": reads.len(),
        "ui_read_p99_ms": percentile(&mut reads, 99.0),
        "ui_read_max_ms": (ms(max) * 1000.0).round() / 1000.0,
        "listener_heard_edit_ms": (told.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
    }))
}

/// `devices` reps, each in their own territory with 5 accounts, each make
/// 20 edits offline; then all sync at the same moment. Devices are spread
/// over `relays` (on one database); `tag` names this run's device files.
/// CPU time is reported per sync, for the relays and for the devices (this
/// process), so the split between them is measured, not guessed.
///
/// Each device is one thread for its whole life (open, sign in, first sync,
/// edits, then the timed sync), as an app's sync runs in a process that has
/// been working: a thread spawned only for the timed sync would also time its
/// allocator's first pages, which no device pays per sync.
fn concurrent_phase(
    dir: &std::path::Path,
    relays: &[&RelayProcess],
    devices: usize,
    tag: &str,
) -> Result<Json, Box<dyn std::error::Error>> {
    const EDITS: usize = 20;
    let urls: Vec<String> = relays.iter().map(|r| r.url.clone()).collect();
    let relay_cpu = || relays.iter().map(|r| r.cpu_time()).sum::<Duration>();
    let devices_cpu = || relay_process::process_cpu_time(std::process::id());
    // The store comes back open: a device closing its database (a WAL
    // checkpoint) while the others still sync is no part of a sync.
    type Outcome = (Option<Store>, Result<(Duration, usize), String>);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(devices + 1));
    let threads: Vec<std::thread::JoinHandle<Outcome>> = (0..devices)
        .map(|i| {
            let barrier = barrier.clone();
            let path = dir.join(format!("rep{i}-{tag}.db"));
            let url = urls[i % urls.len()].clone();
            std::thread::spawn(move || {
                let ready = prepare_device(&path, &url, i, EDITS);
                // Every thread reaches the barrier, ready or not, so none waits forever.
                barrier.wait();
                let (mut store, transport) = match ready {
                    Ok(ready) => ready,
                    Err(e) => return (None, Err(format!("device {i} setup: {e}"))),
                };
                let t = Instant::now();
                let result = store.sync(&transport, &mut |_| {});
                let latency = t.elapsed();
                let outcome = result
                    .map(|p| (latency, p.total.acked))
                    .map_err(|e| e.to_string());
                (Some(store), outcome)
            })
        })
        .collect();
    barrier.wait();
    let (relay_cpu_before, devices_cpu_before) = (relay_cpu(), devices_cpu());
    let t = Instant::now();
    let mut latencies = Vec::new();
    let (mut errors, mut acked) = (0, 0);
    let mut stores = Vec::new();
    for thread in threads {
        let (store, outcome) = thread.join().map_err(|_| "device thread panicked")?;
        stores.extend(store);
        match outcome {
            Ok((latency, n)) => {
                latencies.push(latency);
                acked += n;
            }
            Err(e) => {
                errors += 1;
                eprintln!("concurrent sync failed: {e}");
            }
        }
    }
    let wall = t.elapsed();
    // /proc counts CPU in 10 ms ticks: below 50 ms in all, no figure.
    let per_sync = |d: Duration| -> Json {
        if d < Duration::from_millis(50) {
            return Json::Null;
        }
        json!((ms(d) / devices.max(1) as f64 * 100.0).round() / 100.0)
    };
    let relay_cpu_ms = per_sync(relay_cpu() - relay_cpu_before);
    let devices_cpu_ms = per_sync(devices_cpu() - devices_cpu_before);
    drop(stores);
    Ok(json!({
        "wall_s": secs(wall),
        "devices": devices,
        "edits_per_device": EDITS,
        "changes_acked": acked,
        "changes_per_s": (acked as f64 / wall.as_secs_f64()).round(),
        "sync_p50_ms": percentile(&mut latencies, 50.0),
        "sync_p99_ms": percentile(&mut latencies, 99.0),
        "errors": errors,
        "relays": urls.len(),
        "relay_cpu_ms_per_sync": relay_cpu_ms,
        "devices_cpu_ms_per_sync": devices_cpu_ms,
    }))
}

/// Rep `i`'s device: its store, signed in, 5 accounts synced, then `edits`
/// offline edits cycling through them.
fn prepare_device(
    path: &std::path::Path,
    url: &str,
    i: usize,
    edits: usize,
) -> fieldcrm_core::Result<(Store, HttpTransport)> {
    let user = format!("rep{i}");
    let mut store = Store::open(path, &user)?;
    let (transport, _) = HttpTransport::login(url, &user, relay_process::PASSWORD)?;
    let ids: Vec<String> = (0..5)
        .map(|a| {
            store
                .create(
                    Kind::Account,
                    fieldcrm_core::fields([
                        ("name", format!("Rep {i} account {a}")),
                        ("territory", format!("t{i}")),
                    ]),
                )
                .map(|r| r.id)
        })
        .collect::<fieldcrm_core::Result<_>>()?;
    store.sync(&transport, &mut |_| {})?;
    for e in 0..edits {
        store.update(
            &ids[e % ids.len()],
            fieldcrm_core::fields([("custom.visits", Value::Int(e as i64))]),
        )?;
    }
    Ok((store, transport))
}

/// `devices` devices for `seconds`, each editing one of its accounts and
/// syncing about every `interval` (jittered so they do not march in step),
/// against one relay. Bounded in time and in count (one sync per device per
/// interval).
fn load_phase(
    dir: &std::path::Path,
    url: &str,
    devices: usize,
    seconds: Duration,
    interval: Duration,
) -> Result<Json, Box<dyn std::error::Error>> {
    let mut ready = Vec::new();
    for i in 0..devices {
        let user = format!("rep{i}");
        let mut store = Store::open(dir.join(format!("rep{i}-load.db")), &user)?;
        let (transport, _) = HttpTransport::login(url, &user, relay_process::PASSWORD)?;
        let account = store
            .create(
                Kind::Account,
                fieldcrm_core::fields([
                    ("name", format!("Load {i}")),
                    ("territory", format!("t{i}")),
                ]),
            )?
            .id;
        store.sync(&transport, &mut |_| {})?;
        ready.push((store, transport, account));
    }
    let started = Instant::now();
    let deadline = started + seconds;
    let threads: Vec<_> = ready
        .into_iter()
        .enumerate()
        .map(|(i, (mut store, transport, account))| {
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(i as u64);
                let mut latencies = Vec::new();
                let mut errors = 0usize;
                // Spread the first syncs over one interval.
                std::thread::sleep(interval.mul_f64(rng.gen::<f64>()));
                let mut n = 0i64;
                while Instant::now() < deadline {
                    n += 1;
                    let edit = store.update(
                        &account,
                        fieldcrm_core::fields([("custom.visits", Value::Int(n))]),
                    );
                    let t = Instant::now();
                    match edit.and_then(|_| store.sync(&transport, &mut |_| {})) {
                        Ok(_) => latencies.push(t.elapsed()),
                        Err(e) => {
                            errors += 1;
                            eprintln!("load sync failed: {e}");
                        }
                    }
                    std::thread::sleep(interval.mul_f64(0.5 + rng.gen::<f64>()));
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for thread in threads {
        let (l, e) = thread.join().map_err(|_| "load thread panicked")?;
        latencies.extend(l);
        errors += e;
    }
    let wall = started.elapsed();
    let syncs = latencies.len();
    Ok(json!({
        "wall_s": secs(wall),
        "devices": devices,
        "interval_ms": interval.as_millis() as u64,
        "syncs": syncs,
        "syncs_per_s": (syncs as f64 / wall.as_secs_f64()).round(),
        "sync_p50_ms": percentile(&mut latencies, 50.0),
        "sync_p99_ms": percentile(&mut latencies, 99.0),
        "errors": errors,
    }))
}

/// A benchmark whose changes the relay refused measures nothing (and the
/// phases after it would wait for them for ever): stop with the reason.
fn refuse_rejections(store: &Store, rejected: usize) -> Result<(), Box<dyn std::error::Error>> {
    if rejected == 0 {
        return Ok(());
    }
    let first = store
        .outbox(0, 1_000_000, true)?
        .into_iter()
        .find_map(|e| e.rejected)
        .unwrap_or_default();
    Err(format!("the relay refused {rejected} change(s) of the workload, e.g.: {first}").into())
}

/// The records' size as compacted Automerge documents (`save()` of each).
fn compacted_bytes(store: &Store) -> Result<usize, Box<dyn std::error::Error>> {
    let mut total = 0;
    let mut after = String::new();
    loop {
        let ids = store.record_ids_after(&after, 1000)?;
        let Some(last) = ids.last().cloned() else {
            break;
        };
        for id in &ids {
            let mut doc = automerge::AutoCommit::new();
            for change in store.changes_since(id, &[])? {
                doc.load_incremental(&change)?;
            }
            total += doc.save().len();
        }
        after = last;
    }
    Ok(total)
}

/// The same records through raw Automerge and raw SQLite, no FieldCRM code.
fn floor(plan: &[Planned], dir: &std::path::Path) -> Result<Json, Box<dyn std::error::Error>> {
    use automerge::transaction::Transactable;
    let t = Instant::now();
    let mut saved = Vec::with_capacity(plan.len());
    for (i, p) in plan.iter().enumerate() {
        let mut doc = automerge::AutoCommit::new();
        doc.put(automerge::ROOT, "id", format!("{i}"))?;
        doc.put(automerge::ROOT, "type", p.kind.as_str())?;
        for (k, v) in &p.fields {
            match v {
                Value::Text(s) => doc.put(automerge::ROOT, k.as_str(), s.as_str())?,
                Value::Int(n) => doc.put(automerge::ROOT, k.as_str(), *n)?,
                Value::Float(x) => doc.put(automerge::ROOT, k.as_str(), *x)?,
                Value::Bool(b) => doc.put(automerge::ROOT, k.as_str(), *b)?,
                Value::Null => {}
            }
        }
        doc.commit();
        saved.push(doc.save());
    }
    let automerge_create = t.elapsed();
    let t = Instant::now();
    for bytes in &saved {
        automerge::AutoCommit::load(bytes)?;
    }
    let automerge_load = t.elapsed();

    let conn = rusqlite::Connection::open(dir.join("floor.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch("CREATE TABLE docs (id INTEGER PRIMARY KEY, bytes BLOB NOT NULL)")?;
    let t = Instant::now();
    for (i, bytes) in saved.iter().enumerate() {
        conn.execute(
            "INSERT INTO docs VALUES (?1, ?2)",
            rusqlite::params![i as i64, bytes],
        )?;
    }
    let sqlite_one_by_one = t.elapsed();
    conn.execute("DELETE FROM docs", [])?;
    let t = Instant::now();
    conn.execute_batch("BEGIN")?;
    for (i, bytes) in saved.iter().enumerate() {
        conn.execute(
            "INSERT INTO docs VALUES (?1, ?2)",
            rusqlite::params![i as i64, bytes],
        )?;
    }
    conn.execute_batch("COMMIT")?;
    let sqlite_batch = t.elapsed();
    Ok(json!({
        "automerge_create_save_s": secs(automerge_create),
        "automerge_load_s": secs(automerge_load),
        "sqlite_insert_one_by_one_s": secs(sqlite_one_by_one),
        "sqlite_insert_batch_s": secs(sqlite_batch),
        "one_by_one_s": secs(automerge_create + sqlite_one_by_one),
        "batch_s": secs(automerge_create + sqlite_batch),
        "compacted_bytes": saved.iter().map(Vec::len).sum::<usize>(),
    }))
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10_000.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    if samples.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    (ms(samples[i]) * 1000.0).round() / 1000.0
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn file_size(path: &std::path::Path) -> u64 {
    let wal = path.with_extension("db-wal");
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
}

fn summary(r: &Json) -> String {
    let l = &r["local"];
    format!(
        "W1 {} records\n  create one by one  {:>8.3} s  (floor {:.3} s)\n  create batch       {:>8.3} s  (floor {:.3} s)\n  edit p50/p99       {:>8.3} / {:.3} ms\n  search p50/p99     {:>8.3} / {:.3} ms\n  open {} records {:>8.4} s, rss +{} KiB\n  open {} records {:>8.4} s, rss +{} KiB",
        l["records"], l["create_one_by_one_s"], r["floor"]["one_by_one_s"], l["create_batch_s"], r["floor"]["batch_s"],
        l["edit_p50_ms"], l["edit_p99_ms"], l["search_p50_ms"], l["search_p99_ms"],
        l["records"], l["open_s"], l["open_rss_delta_kib"],
        l["open_large"]["records"], l["open_large"]["open_s"], l["open_large"]["rss_delta_kib"],
    ) + &format!(
        "\n  concurrent         {:>8.3} s  ({} devices, sync p50/p99 {} / {} ms, {} errors)\n  load               {:>8.3} s  ({} devices, {} syncs, sync p50/p99 {} / {} ms, {} errors)\n  upload             {:>8.3} s  ({} B up)\n  bootstrap          {:>8.3} s  ({} B down, {}x compacted)\n  incremental        {:>8.3} s  (100 edits A -> B via push)\n  relay peak rss     {:>8} KiB, store {} B",
        r["concurrent"]["wall_s"], r["concurrent"]["devices"], r["concurrent"]["sync_p50_ms"], r["concurrent"]["sync_p99_ms"], r["concurrent"]["errors"],
        r["load"]["wall_s"], r["load"]["devices"], r["load"]["syncs"], r["load"]["sync_p50_ms"], r["load"]["sync_p99_ms"], r["load"]["errors"],
        r["upload"]["wall_s"], r["upload"]["bytes_up"], r["bootstrap"]["wall_s"], r["bootstrap"]["bytes_down"],
        r["bootstrap"]["bytes_ratio_to_compacted"], r["incremental"]["wall_s"], r["relay"]["peak_rss_kib"], r["relay"]["store_bytes"],
    ) + &format!(
        "\n  fresh device       {:>8.3} s  (own process: peak rss {} KiB, first 1000 listable {} ms after the first page)\n  large bootstrap    {:>8.3} s  ({} records, {}x the fresh device; peak rss {} KiB; upload {} s)",
        r["bootstrap"]["fresh_device"]["wall_s"], r["bootstrap"]["fresh_device"]["peak_rss_kib"],
        r["bootstrap"]["fresh_device"]["first_1000_listable_ms"],
        r["bootstrap_large"]["fresh_device"]["wall_s"], r["bootstrap_large"]["records"],
        r["bootstrap_large"]["wall_ratio_to_bootstrap"], r["bootstrap_large"]["fresh_device"]["peak_rss_kib"],
        r["bootstrap_large"]["upload_s"],
    ) + &format!(
        "\n  live app           {:>8.3} s  (background bootstrap; UI reads p99/max {} / {} ms; listener heard an edit in {} ms)",
        r["incremental"]["live"]["bootstrap_s"], r["incremental"]["live"]["ui_read_p99_ms"],
        r["incremental"]["live"]["ui_read_max_ms"], r["incremental"]["live"]["listener_heard_edit_ms"],
    ) + &match &r["listeners"] {
        Json::Null => String::new(),
        l => format!(
            "\n  listeners          {} open streams ({} failed); wake p50/p99/max {} / {} / {} ms; other territory woken {}; relay {} KiB and {} fds per connection",
            l["connected"], l["failures"], l["wake_p50_ms"], l["wake_p99_ms"], l["wake_max_ms"],
            l["other_territory_woken"], l["relay_kib_per_connection"], l["relay_fds_per_connection"],
        ),
    } + &match &r["company"] {
        Json::Null => String::new(),
        c => format!(
            "\n  company            {} records in {} territories: upload {} s; a territory's bootstrap {} s alone, {} s in the company ({}x); relay peak rss {} KiB; {} B per record",
            c["records"], c["territories"], c["upload_s"],
            c["bootstrap_territory_alone"]["wall_s"], c["bootstrap_territory_in_company"]["wall_s"],
            c["bootstrap_ratio"], c["relay_peak_rss_kib"], c["store_bytes_per_record"],
        ),
    } + &match &r["catalogue"] {
        Json::Null => String::new(),
        c => format!(
            "\n  catalogue          {:>8.3} s  ({} products + {} prices bootstrapped, {} B down; upload {} s; price lookup {} ms; 20-stop route {} ms)",
            c["bootstrap_s"], c["products"], c["prices"], c["bytes_down"], c["upload_s"],
            c["price_lookup_ms"], c["route_20_stops_ms"],
        ),
    }
}
