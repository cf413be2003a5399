//! Issue 17's scenario, end to end with a relay process: a rep offline
//! photographs a business card onto a new contact and a signed delivery
//! note onto an order; the phone (this test binary re-run with
//! `FIELDCRM_ATTACH_CHILD`) is killed in the middle of uploading; after
//! reconnecting, the office sees both with thumbnails in its browser
//! pages, downloads the originals byte-identical, and a rep of another
//! territory cannot fetch them by hash.

mod common;

use std::io::{BufRead, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{device_process, relay_and_phone, Device, PASSWORD};
use fieldcrm_core::{fields, HttpTransport, Kind, Store, Transport, Value};

const CHILD_ENV: &str = "FIELDCRM_ATTACH_CHILD";
const BUILD: &str = if cfg!(debug_assertions) {
    "debug"
} else {
    "release"
};

/// The phone once it has signal: syncs the records, then uploads the
/// files, saying after each chunk and pausing as a slow network would, so
/// the kill lands between chunks.
#[test]
fn phone_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (path, rest) = spec.split_once('|').unwrap();
    let (url, token) = rest.split_once('|').unwrap();
    let mut store = Store::open(path, "ann").unwrap();
    let transport = HttpTransport::new(url, token);
    store.sync(&transport, &mut |_| {}).unwrap();
    let mut out = std::io::stdout();
    writeln!(out, "\nrecords synced").unwrap();
    store
        .upload_blobs(&transport, &mut |p| {
            writeln!(out, "\nchunk {} {}/{}", p.sha256, p.done, p.total).unwrap();
            out.flush().unwrap();
            std::thread::sleep(Duration::from_millis(300));
        })
        .unwrap();
    writeln!(out, "\nuploaded").unwrap();
}

/// A camera-like JPEG: noise compresses as photos do (megabytes).
fn photo(width: u32, height: u32, seed: u32) -> Vec<u8> {
    let mut state = seed;
    let picture = image::RgbImage::from_fn(width, height, |x, y| {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let noise = (state >> 16) as u8;
        image::Rgb([noise, (x % 256) as u8 ^ (noise / 2), (y % 256) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92)
        .encode_image(&picture)
        .unwrap();
    out.into_inner()
}

/// The office in a browser: signed in with a cookie, reading pages.
struct Office {
    agent: ureq::Agent,
    base: String,
    cookie: String,
}

impl Office {
    fn sign_in(base: &str, user: &str) -> Office {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .build()
            .into();
        let answer = agent
            .post(format!("{base}/login"))
            .send_form([("username", user), ("password", PASSWORD)])
            .unwrap();
        assert_eq!(answer.status(), 303, "signed in");
        let cookie = answer.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        Office {
            agent,
            base: base.to_string(),
            cookie,
        }
    }

    /// Status, content type and body of `path`.
    fn get(&self, path: &str) -> (u16, String, Vec<u8>) {
        let mut answer = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Cookie", &self.cookie)
            .call()
            .unwrap();
        let kind = answer
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = answer
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap();
        (answer.status().as_u16(), kind, body)
    }
}

#[test]
fn photos_taken_offline_reach_the_office_whole_after_the_phone_dies_mid_upload() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (relay, path, token) = relay_and_phone(dir.path());

    // Offline: a new contact with the card, an order with the signed note.
    let card = photo(1600, 1000, 1);
    let note = photo(1200, 1700, 2);
    let (contact, order, card_id, note_id) = {
        let mut phone = Store::open(&path, "ann").unwrap();
        let acme = phone
            .create(
                Kind::Account,
                fields([("name", "Acme"), ("territory", "north")]),
            )
            .unwrap()
            .id;
        let contact = phone
            .create(
                Kind::Contact,
                fields([
                    ("account_id", acme.as_str()),
                    ("first_name", "Jane"),
                    ("last_name", "Doe"),
                    ("territory", "north"),
                ]),
            )
            .unwrap()
            .id;
        let order = phone
            .create(
                Kind::Order,
                fields([
                    ("account_id", Value::from(acme.as_str())),
                    ("name", "Spring order".into()),
                    ("currency", "EUR".into()),
                    ("territory", "north".into()),
                ]),
            )
            .unwrap()
            .id;
        let started = Instant::now();
        let (card_id, _) = phone
            .add_attachment(
                &contact,
                "card.jpg",
                "image/jpeg",
                &card,
                Some("Business card"),
            )
            .unwrap();
        let (note_id, _) = phone
            .add_attachment(
                &order,
                "delivery-note.jpg",
                "image/jpeg",
                &note,
                Some("Signed"),
            )
            .unwrap();
        eprintln!(
            "attaching 2 photos ({:.1} MiB) took {:?} (hash, thumbnail, durable write, commit; {} build)",
            (card.len() + note.len()) as f64 / f64::from(1 << 20),
            started.elapsed(),
            BUILD
        );
        (contact, order, card_id, note_id)
    };
    assert!(
        card.len() > 2 << 20 && note.len() > 2 << 20,
        "several chunks each"
    );

    // Signal: the phone syncs and starts uploading; it dies mid-upload.
    let mut child = device_process(
        "phone_child",
        CHILD_ENV,
        format!("{}|{}|{token}", path.display(), relay.url),
        Stdio::piped(),
    );
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut chunks = 0;
    while let Some(Ok(line)) = lines.next() {
        assert_ne!(line, "uploaded", "the kill came before the upload ended");
        if line.starts_with("chunk ") {
            chunks += 1;
            if chunks == 2 {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(chunks, 2, "the phone sent chunks before it died");

    let office = Office::sign_in(&relay.url, "olivia");
    let mut olivia = Device::new(dir.path(), &relay, "olivia");
    // The records are there, the files not yet whole: each thumbnail shows.
    olivia.sync();
    let held = |sha: &str| {
        HttpTransport::new(&relay.url, olivia.token())
            .blob_status(sha)
            .unwrap()
            .unwrap()
    };
    let sha = |bytes: &[u8]| fieldcrm_core::sha256_hex(bytes);
    assert!(!held(&sha(&card)).complete, "the kill came mid-upload");
    for (record, aid) in [(&contact, &card_id), (&order, &note_id)] {
        let (status, _, page) = office.get(&format!("/r/{record}"));
        assert_eq!(status, 200);
        let page = String::from_utf8(page).unwrap();
        let thumb = format!("/r/{record}/files/{aid}/thumb");
        assert!(page.contains(&thumb), "{thumb} on the page");
        let (status, kind, jpeg) = office.get(&thumb);
        assert_eq!((status, kind.as_str()), (200, "image/jpeg"));
        let small = image::load_from_memory(&jpeg).unwrap();
        assert_eq!(small.width().max(small.height()), 128);
    }

    // The phone reopens and goes on from where the relay stands.
    let mut phone = Store::open(&path, "ann").unwrap();
    phone.integrity_check().unwrap();
    let transport = HttpTransport::new(&relay.url, &token);
    phone.sync(&transport, &mut |_| {}).unwrap();
    let started = Instant::now();
    let sent = phone.upload_blobs(&transport, &mut |_| {}).unwrap();
    let up = started.elapsed();
    let total = (card.len() + note.len()) as u64;
    assert_eq!((sent.uploaded, sent.waiting), (2, 0));
    assert!(
        sent.bytes_sent < total,
        "chunks acknowledged before the kill are not sent again: {} of {total}",
        sent.bytes_sent
    );
    assert!(phone.blobs_to_upload().unwrap().is_empty());

    // The office downloads the originals, byte-identical.
    let started = Instant::now();
    for (record, aid, bytes) in [(&contact, &card_id, &card), (&order, &note_id, &note)] {
        let (status, _, got) = office.get(&format!("/r/{record}/files/{aid}"));
        assert_eq!(status, 200);
        assert!(got == *bytes, "{aid} arrived byte-identical");
    }
    let down = started.elapsed();
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    eprintln!(
        "resumed upload {:.1} MiB in {up:?} ({:.1} MiB/s); office download {:.1} MiB in {down:?} ({:.1} MiB/s); {BUILD} build",
        mib(sent.bytes_sent),
        mib(sent.bytes_sent) / up.as_secs_f64(),
        mib(total),
        mib(total) / down.as_secs_f64()
    );
    let meta = olivia.store.attachments(&contact).unwrap();
    eprintln!(
        "per-attachment metadata: {} bytes of JSON (thumbnail included)",
        meta[0].1.to_json().len()
    );

    // A rep of another territory gets nothing, by hash or by page.
    let sam = Device::new(dir.path(), &relay, "sam");
    for bytes in [&card, &note] {
        let err = sam
            .transport
            .get_blob_range(&sha(bytes), 0, 1024)
            .unwrap_err();
        assert!(err.to_string().contains("404"), "{err}");
    }
    let sam_office = Office::sign_in(&relay.url, "sam");
    let (status, _, _) = sam_office.get(&format!("/r/{contact}/files/{card_id}"));
    assert_eq!(status, 404);
}
