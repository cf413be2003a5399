"""The mobile scenario through the generated Python module: two devices, a
real relay, offline edits, a conflict and its resolution, bad input."""

import os
import subprocess

import pytest

import fieldcrm_mobile as crm

PASSWORD = "python-password"
RELAY = os.path.abspath(os.environ.get("FIELDCRM_SERVER_BIN", "target/debug/fieldcrm-server"))


def text(value):
    return crm.FieldValue.TEXT(value)


@pytest.fixture
def relay_url(tmp_path):
    data = str(tmp_path / "relay")
    env = dict(os.environ, FIELDCRM_USER_PASSWORD=PASSWORD)
    for command in (
        ["territory", "add", "north"],
        ["user", "add", "ann", "--territories", "north"],
        ["user", "add", "bob", "--territories", "north"],
    ):
        subprocess.run([RELAY, "--data", data, *command], env=env, check=True, capture_output=True)
    process = subprocess.Popen(
        [RELAY, "--data", data, "serve", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield process.stdout.readline().strip().removeprefix("listening on ")
    finally:
        process.terminate()
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            # An app's live stream may still be open: graceful shutdown waits for it.
            process.kill()
            process.wait(timeout=10)


class Progress(crm.SyncListener):
    def __init__(self):
        self.rounds = []

    def on_progress(self, status):
        self.rounds.append(status)


class Transfers(crm.BlobListener):
    def __init__(self):
        self.seen = []

    def on_blob(self, transfer):
        self.seen.append((transfer.direction, transfer.done, transfer.total))


def test_two_devices_converge_through_the_relay(tmp_path, relay_url):
    ann = crm.CrmStore.open(str(tmp_path / "ann.db"), "ann")
    acme = ann.create(crm.RecordKind.ACCOUNT, {"name": text("Acme"), "territory": text("north")}).account
    for first, last in [("Ada", "Lovelace"), ("Grace", "Hopper")]:
        ann.create(
            crm.RecordKind.CONTACT,
            {
                "account_id": text(acme.meta.id),
                "first_name": text(first),
                "last_name": text(last),
                "territory": text("north"),
            },
        )
    found = ann.search("hopp", None, 10)
    assert [r.contact.last_name for r in found] == ["Hopper"]

    ann.login(relay_url, "ann", PASSWORD)
    progress = Progress()
    assert ann.sync(progress).acked == 3
    assert progress.rounds

    bob = crm.CrmStore.open(str(tmp_path / "bob.db"), "bob")
    bob.login(relay_url, "bob", PASSWORD)
    bob.sync(None)
    assert bob.get(acme.meta.id).account.name == "Acme"

    ann.update(acme.meta.id, {"phone": text("+44 111 111")})
    bob.update(acme.meta.id, {"phone": text("+44 222 222")})
    for device in (ann, bob, ann):
        device.sync(None)
    conflicts = bob.conflicts(acme.meta.id)
    assert [c.field for c in conflicts] == ["phone"]
    assert len(conflicts[0].values) == 2
    assert ann.get(acme.meta.id) == bob.get(acme.meta.id)

    bob.resolve_conflict(acme.meta.id, "phone", text("+44 333 333"))
    bob.sync(None)
    ann.sync(None)
    assert ann.conflicts(acme.meta.id) == []
    assert ann.get(acme.meta.id).account.phone == "+44 333 333"
    history = ann.history(acme.meta.id)
    assert [h.user for h in history][-1] == "bob"
    # Each entry names the device it came from: ann's own, bob's as the relay said.
    assert history[0].device == ann.device_id()
    assert history[-1].device == bob.device_id()


def test_bring_your_own_transport(tmp_path, relay_url):
    """The host carries the bytes: here with urllib, as an app would with its own HTTP stack."""
    import json
    import urllib.request

    login = urllib.request.Request(
        relay_url + "/v1/login",
        data=json.dumps({"username": "ann", "password": PASSWORD}).encode(),
        headers={"content-type": "application/json"},
    )
    token = json.load(urllib.request.urlopen(login))["token"]

    class Transport(crm.HostTransport):
        def exchange(self, request):
            req = urllib.request.Request(
                relay_url + "/v1/sync",
                data=bytes(request),
                headers={"authorization": "Bearer " + token, "content-type": "application/cbor"},
            )
            return urllib.request.urlopen(req).read()

    ann = crm.CrmStore.open(str(tmp_path / "ann.db"), "ann")
    ann.create(crm.RecordKind.ACCOUNT, {"name": text("Byo"), "territory": text("north")})
    assert ann.sync_with(Transport(), None).acked == 1
    assert ann.outbox_status().pending == 0


def test_bad_input_raises_errors_with_messages(tmp_path):
    store = crm.CrmStore.open(str(tmp_path / "s.db"), "ann")
    with pytest.raises(crm.CrmError.NotFound, match="nope"):
        store.get("nope")
    with pytest.raises(crm.CrmError.InvalidInput, match="email"):
        store.create(crm.RecordKind.CONTACT, {"email": text("not-an-email")})
    with pytest.raises(crm.CrmError.NotSignedIn):
        store.sync(None)
    store.close_store()
    with pytest.raises(crm.CrmError.Closed):
        store.get("x")
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"\x42" * 4096)
    with pytest.raises(crm.CrmError.Storage):
        crm.CrmStore.open(str(corrupt), "ann")


def admin(relay_data, *command):
    env = dict(os.environ, FIELDCRM_USER_PASSWORD=PASSWORD)
    return subprocess.run(
        [RELAY, "--data", relay_data, *command], env=env, check=True, capture_output=True, text=True
    ).stdout


def test_refused_changes_held_changes_and_sign_out(tmp_path, relay_url):
    """Nothing a rep did is lost: a refused change is listed and the record
    converges; an edit made before a revocation is held, reviewed and
    accepted; signing out with work waiting says so."""
    data = str(tmp_path / "relay")
    ann = crm.CrmStore.open(str(tmp_path / "ann.db"), "ann")
    with pytest.raises(crm.CrmError.NotSignedIn, match="wrong username or password"):
        ann.login(relay_url, "ann", "not the password")
    ann.login(relay_url, "ann", PASSWORD)
    acme = ann.create(crm.RecordKind.ACCOUNT, {"name": text("Acme"), "territory": text("north")}).account
    ann.sync(None)

    # The relay refuses an owner who is no user; the later edit survives.
    ann.update(acme.meta.id, {"owner": text("nobody-here")})
    ann.update(acme.meta.id, {"phone": text("+44 113 496 0000")})
    status = ann.sync(None)
    assert (status.rejected, status.rebased) == (1, 1)
    record = ann.get(acme.meta.id).account
    assert (record.owner, record.phone) == ("ann", "+44 113 496 0000")
    [refused] = ann.refused_changes()
    assert refused.field == "owner" and "no such user" in refused.reason
    assert refused.fields[0].new == text("nobody-here")
    with pytest.raises(crm.CrmError.PendingChanges, match="1 refused"):
        ann.sign_out(False)
    ann.discard_refused(refused.id)
    assert ann.refused_changes() == []

    # The device knows its territories now: the wrong one is refused at once.
    with pytest.raises(crm.CrmError.InvalidInput, match="not one of your territories"):
        ann.create(crm.RecordKind.ACCOUNT, {"name": text("X"), "territory": text("south")})

    # An offline edit, then the territory is taken away: held, not lost.
    ann.update(acme.meta.id, {"industry": text("Steel")})
    admin(data, "user", "set-territories", "ann")
    status = ann.sync(None)
    assert status.held == 1
    assert ann.outbox_status().held == 1
    assert ann.get(acme.meta.id).account.industry == "Steel"
    with pytest.raises(crm.CrmError.PendingChanges, match="1 held for review"):
        ann.sync_then_sign_out(None)
    admin(data, "user", "add", "olivia", "--role", "office")
    assert "accepted" in admin(data, "review", "accept", acme.meta.id, "--as", "olivia")
    ann.sync(None)
    assert ann.outbox_status().held == 0
    with pytest.raises(crm.CrmError.NotFound):
        ann.get(acme.meta.id)

    # Nothing waits: signing out removes the store file, then the handle is closed.
    ann.sync_then_sign_out(None)
    assert not (tmp_path / "ann.db").exists()
    with pytest.raises(crm.CrmError.Closed):
        ann.outbox_status()


class Changes(crm.ChangeListener):
    def __init__(self):
        import threading

        self.lock = threading.Lock()
        self.heard = []  # (time, change)

    def on_change(self, changes):
        import time

        with self.lock:
            self.heard.extend((time.monotonic(), c) for c in changes)

    def ids(self, since=0.0):
        with self.lock:
            return [c.id for (t, c) in self.heard if t >= since]


class States(crm.SyncStateListener):
    def __init__(self):
        self.states = []

    def on_state(self, state):
        self.states.append(state)


def test_an_app_with_background_sync_hears_what_changed_and_reads_meanwhile(tmp_path, relay_url):
    """An app-shaped program: background sync bootstraps while the UI keeps
    reading (timed); another device's edit reaches the change listener.
    FIELDCRM_APP_RECORDS sets the bootstrap's size (300 in CI; the figures
    in docs/mobile.md are from 10,000)."""
    import os
    import time

    records = int(os.environ.get("FIELDCRM_APP_RECORDS", "300"))
    bob = crm.CrmStore.open(str(tmp_path / "bob.db"), "bob")
    bob.login(relay_url, "bob", PASSWORD)
    ids = [
        bob.create(crm.RecordKind.ACCOUNT, {"name": text(f"Account {i:05}"), "territory": text("north")}).account.meta.id
        for i in range(records)
    ]
    bob.sync(None)

    app = crm.CrmStore.open(str(tmp_path / "app.db"), "ann")
    app.login(relay_url, "ann", PASSWORD)
    token = app.session_token()
    assert token
    changes, states = Changes(), States()
    app.add_change_listener(changes)
    app.start_sync(states)
    reads = []
    started = time.monotonic()
    deadline = started + 60 + records / 100
    while app.list(crm.ListFilter(limit=1)).total < len(ids):
        start = time.monotonic()
        app.list(crm.ListFilter(kind=crm.RecordKind.ACCOUNT, limit=20))
        reads.append(time.monotonic() - start)
        assert time.monotonic() < deadline, "background bootstrap did not finish"
    bootstrap = time.monotonic() - started
    slowest = max(reads, default=0.0)
    assert slowest < 0.5, f"a read waited {slowest:.3f} s behind sync"
    # Listeners hear of a page just after it commits (outside the lock).
    while not set(ids) <= set(changes.ids()):
        assert time.monotonic() < deadline, "not every bootstrapped record was announced"
        time.sleep(0.01)

    edited_at = time.monotonic()
    bob.update(ids[7], {"phone": text("+44 113 496 0777")})
    bob.sync(None)
    while ids[7] not in changes.ids(since=edited_at):
        assert time.monotonic() - edited_at < 5, "the listener never heard of bob's edit"
        time.sleep(0.01)
    heard_in = time.monotonic() - edited_at
    assert heard_in < 2.0, heard_in
    reads.sort()
    median = reads[len(reads) // 2] if reads else 0.0
    print(
        f"\nbackground bootstrap of {records} records: {bootstrap:.1f} s, {len(reads)} reads meanwhile, "
        f"median {median * 1000:.1f} ms, slowest {slowest * 1000:.1f} ms; "
        f"bob's edit heard in {heard_in * 1000:.0f} ms (edit, bob's sync, the live stream, the app's sync)"
    )
    assert app.get(ids[7]).account.phone == "+44 113 496 0777"
    app.stop_sync()
    assert any(isinstance(s, crm.SyncState.IDLE) for s in states.states)

    # The kept token opens the session again without the password.
    again = crm.CrmStore.open(str(tmp_path / "again.db"), "ann")
    again.restore_session(relay_url, token)
    assert again.sync(None).received_snapshots == len(ids)
    # Records and values print readably.
    assert "Account 00007" in repr(app.get(ids[7])), repr(app.get(ids[7]))
    assert "INT" in repr(crm.FieldValue.INT(3)) and "3" in repr(crm.FieldValue.INT(3))


def test_a_lead_converted_offline_reaches_the_other_device(tmp_path, relay_url):
    """A lead made and converted on a phone without signal: after one sync
    the account, contact and deal are on the other device, and the lead
    reads through the generic record with every field."""
    ann = crm.CrmStore.open(str(tmp_path / "ann.db"), "ann")
    ann.login(relay_url, "ann", PASSWORD)
    ann.sync(None)
    lead = ann.create(
        crm.RecordKind.LEAD,
        {"name": text("Ada Lovelace"), "company": text("Analytical Engines"),
         "email": text("ada@engines.example"), "territory": text("north")},
    ).record
    assert lead.kind == crm.RecordKind.LEAD and lead.fields["status"] == text("new")
    with pytest.raises(crm.CrmError.InvalidInput, match="qualified"):
        ann.update(lead.meta.id, {"status": text("hot")})
    done = ann.convert_lead(lead.meta.id, crm.LeadConversion(deal_name="Engines for Leeds"))
    assert done.account.name == "Analytical Engines"
    assert (done.contact.first_name, done.contact.last_name) == ("Ada", "Lovelace")
    assert done.deal.account_id == done.account.meta.id
    ann.sync(None)

    bob = crm.CrmStore.open(str(tmp_path / "bob.db"), "bob")
    bob.login(relay_url, "bob", PASSWORD)
    bob.sync(None)
    assert bob.get(done.contact.meta.id).contact.email == "ada@engines.example"
    assert bob.get(done.deal.meta.id).deal.name == "Engines for Leeds"
    seen = bob.get_generic(lead.meta.id)
    assert seen.fields["status"] == text("converted")
    assert seen.fields["converted_deal_id"] == text(done.deal.meta.id)

    # Entering Ada again as a contact: the app can say "this looks like…".
    [match] = bob.find_duplicates(
        crm.RecordKind.CONTACT,
        {"first_name": text("Ada"), "last_name": text("Lovelace"),
         "email": text("ADA+events@engines.example"), "account_id": text(done.account.meta.id)},
        "44",
    )
    assert match.record.meta.id == done.contact.meta.id
    assert "same email" in match.evidence
    assert bob.duplicates_of(done.contact.meta.id, None) == []


def test_a_field_an_admin_defines_reaches_the_device_and_is_checked_there(tmp_path, relay_url):
    """An admin adds a picklist field "tier" to accounts; the rep's device
    receives it at its next sync, a form built from `configuration()` can
    set it, and a wrong value is refused on the device."""
    data = str(tmp_path / "relay")
    ann = crm.CrmStore.open(str(tmp_path / "ann.db"), "ann")
    ann.login(relay_url, "ann", PASSWORD)
    ann.sync(None)
    assert [f for f in ann.configuration().custom_fields if f.name == "tier"] == []
    acme = ann.create(crm.RecordKind.ACCOUNT, {"name": text("Acme"), "territory": text("north")}).account

    admin(data, "config", "add-value", "tier", "gold", "--label", "Gold")
    admin(data, "config", "add-value", "tier", "silver", "--label", "Silver")
    admin(data, "config", "add-field", "account", "tier", "--type", "picklist", "--picklist", "tier", "--label", "Tier")
    ann.sync(None)

    config = ann.configuration()
    [tier] = [f for f in config.custom_fields if f.name == "tier"]
    assert (tier.kind, tier.path, tier.label, tier.field_type) == (crm.RecordKind.ACCOUNT, "custom.tier", "Tier", "picklist")
    [values] = [p.values for p in config.picklists if p.name == tier.picklist]
    offered = [v.label for v in values if not v.retired]
    assert offered == ["Gold", "Silver"]
    assert [s.name for s in config.stages][:2] == ["lead", "qualified"]

    ann.update(acme.meta.id, {tier.path: text("gold")})
    with pytest.raises(crm.CrmError.InvalidInput, match="platinum"):
        ann.update(acme.meta.id, {tier.path: text("platinum")})
    ann.sync(None)
    assert ann.outbox_status().rejected == 0
    assert ann.get(acme.meta.id).account.custom["tier"] == text("gold")


def test_a_duplicate_merged_in_the_office_keeps_what_an_offline_device_did(tmp_path, relay_url):
    """Two reps made the same account; the office merges bob's into ann's
    while bob is offline. Bob's later edit of his copy and the contact he
    puts on it reach ann's account, and survivorOf tells bob's app where
    his copy went."""
    data = str(tmp_path / "relay")
    ann = crm.CrmStore.open(str(tmp_path / "ann.db"), "ann")
    bob = crm.CrmStore.open(str(tmp_path / "bob.db"), "bob")
    ann.login(relay_url, "ann", PASSWORD)
    bob.login(relay_url, "bob", PASSWORD)
    kept = ann.create(crm.RecordKind.ACCOUNT, {"name": text("Acme GmbH"), "territory": text("north"), "notes": text("ann's note")}).account.meta.id
    dup = bob.create(crm.RecordKind.ACCOUNT, {"name": text("Acme GmbH"), "territory": text("north"), "notes": text("bob's note")}).account.meta.id
    ann.sync(None)
    bob.sync(None)
    out = admin(data, "merge", kept, dup)
    assert "re-pointed" in out

    bob.update(dup, {"website": text("acme.de")})
    jane = bob.create(
        crm.RecordKind.CONTACT,
        {"account_id": text(dup), "first_name": text("Jane"), "last_name": text("Doe"), "territory": text("north")},
    ).contact.meta.id
    bob.sync(None)
    ann.sync(None)
    assert bob.outbox_status().rejected == 0
    assert bob.survivor_of(dup) == kept
    assert bob.survivor_of(kept) == kept
    for device in (ann, bob):
        account = device.get(kept).account
        assert (account.website, account.notes) == ("acme.de", "ann's note\n\nbob's note")
        assert device.get(jane).contact.account_id == kept
        assert device.get(dup).account.meta.deleted


def test_the_days_route_orders_the_visits_offline(tmp_path):
    """Today's visits, offline, in an order that shortens the drive, with
    each leg's distance and arrival; the rep's own order comes first."""
    ann = crm.CrmStore.open(str(tmp_path / "ann.db"), "ann")
    day = 1_800_000_000_000
    visits = {}
    for name, lon in [("Far", 0.3), ("Near", 0.1), ("Mid", 0.2)]:
        account = ann.create(
            crm.RecordKind.ACCOUNT,
            {"name": text(name), "territory": text("north"),
             "geo.lat": crm.FieldValue.FLOAT(0.0), "geo.lon": crm.FieldValue.FLOAT(lon)},
        ).account
        visits[name] = ann.create(
            crm.RecordKind.ACTIVITY,
            {"kind": text("visit"), "subject": text(f"Visit {name}"), "territory": text("north"),
             "related_to": text(account.meta.id), "due_at": crm.FieldValue.INT(day + 3_600_000)},
        ).activity.meta.id
    options = crm.DayRouteOptions(start_lat=0.0, start_lon=0.0, start_at=day)
    route = ann.day_route("ann", day, day + 86_400_000, options, [])
    assert [s.visit_id for s in route.stops] == [visits["Near"], visits["Mid"], visits["Far"]]
    assert 33 < route.total_km < 34
    assert route.stops[0].arrive_at > day and route.stops[0].leave_at - route.stops[0].arrive_at == 30 * 60_000
    mine = ann.day_route("ann", day, day + 86_400_000, options, [visits["Far"]])
    assert [s.visit_id for s in mine.stops][0] == visits["Far"]


def test_a_visit_is_checked_in_and_out_offline_and_the_office_sees_it(tmp_path, relay_url):
    """Today's route, offline: check in at the first customer (far away:
    a warning, not a refusal), check out with a report and a next step;
    after sync a colleague's device sees the times, the positions, the
    outcome and the follow-up task."""
    ann = crm.CrmStore.open(str(tmp_path / "ann.db"), "ann")
    day = 1_800_000_000_000
    account = ann.create(
        crm.RecordKind.ACCOUNT,
        {"name": text("Acme"), "territory": text("north"),
         "geo.lat": crm.FieldValue.FLOAT(52.52), "geo.lon": crm.FieldValue.FLOAT(13.405)},
    ).account
    visit = ann.create(
        crm.RecordKind.ACTIVITY,
        {"kind": text("visit"), "subject": text("Visit Acme"), "purpose": text("restock"), "territory": text("north"),
         "related_to": text(account.meta.id), "due_at": crm.FieldValue.INT(day)},
    ).activity.meta.id
    [stop] = ann.day_route("ann", day - 3_600_000, day + 86_400_000, crm.DayRouteOptions(start_at=day - 3_600_000), []).stops
    assert stop.visit_id == visit

    near = ann.check_in(visit, crm.GeoPoint(lat=52.5201, lon=13.405), None)
    assert near.warning is None and near.distance_m < 50
    assert ann.visit_in_progress().meta.id == visit
    with pytest.raises(crm.CrmError.InvalidInput, match="checked in already"):
        ann.check_in(visit, None, None)
    report = crm.VisitReportInput(outcome="follow_up", notes="Wants a quote", next_step="Send the quote", next_step_due_at=day + 86_400_000)
    out = ann.check_out(visit, crm.GeoPoint(lat=52.5202, lon=13.405), report)
    assert out.visit.done and out.visit.outcome == "follow_up" and out.visit.body == "Wants a quote"
    assert out.follow_up.activity_kind == "task" and out.follow_up.related_to == account.meta.id
    assert ann.visit_in_progress() is None

    ann.login(relay_url, "ann", PASSWORD)
    ann.sync(None)
    assert ann.outbox_status().rejected == 0
    bob = crm.CrmStore.open(str(tmp_path / "bob.db"), "bob")
    bob.login(relay_url, "bob", PASSWORD)
    bob.sync(None)
    seen = bob.get(visit).activity
    assert (seen.checked_in_at, seen.checked_out_at) == (out.visit.checked_in_at, out.visit.checked_out_at)
    assert seen.check_in_position.lat == 52.5201 and seen.outcome == "follow_up"
    assert bob.get(out.follow_up.meta.id).activity.subject == "Send the quote"


def test_an_order_taken_offline_keeps_the_offices_line_too(tmp_path, relay_url):
    """The office keeps the catalogue; a rep takes an order with three
    lines offline while the office adds a fourth to it; after sync both
    devices hold the same four lines and totals. Once submitted, the rep's
    device refuses a new line."""
    data = str(tmp_path / "relay")
    admin(data, "user", "add", "olivia", "--role", "office")
    olivia = crm.CrmStore.open(str(tmp_path / "olivia.db"), "olivia")
    olivia.login(relay_url, "olivia", PASSWORD)
    olivia.sync(None)
    shared = text("*organisation")
    products = []
    for sku, cents in [("P1", 1000), ("P2", 250), ("P3", 9999), ("P4", 40)]:
        product = olivia.create(crm.RecordKind.PRODUCT, {"sku": text(sku), "name": text(f"Product {sku}"), "territory": shared}).record.meta.id
        olivia.create(crm.RecordKind.PRICE, {"product_id": text(product), "currency": text("EUR"),
                                             "unit_price": crm.FieldValue.INT(cents), "territory": shared})
        products.append(product)
    olivia.sync(None)

    ann = crm.CrmStore.open(str(tmp_path / "ann.db"), "ann")
    ann.login(relay_url, "ann", PASSWORD)
    ann.sync(None)
    assert ann.price_of(products[2], "EUR", "2030-01-01") == 9999
    acme = ann.create(crm.RecordKind.ACCOUNT, {"name": text("Acme"), "territory": text("north")}).account.meta.id
    order = ann.create(crm.RecordKind.ORDER, {"account_id": text(acme), "name": text("Spring order"), "currency": text("EUR"),
                                              "tax_percent": crm.FieldValue.INT(19), "territory": text("north")}).record.meta.id
    ann.sync(None)
    olivia.sync(None)
    for product, qty in zip(products[:3], [3.0, 2.0, 1.0]):
        ann.add_order_line(order, product, qty, 0.0)
    olivia.add_order_line(order, products[3], 10.0, 0.0)
    with pytest.raises(crm.CrmError.InvalidInput, match="more than 0"):
        ann.add_order_line(order, products[0], 0.0, 0.0)
    ann.sync(None)
    olivia.sync(None)
    ann.sync(None)
    mine, theirs = ann.order_summary(order), olivia.order_summary(order)
    assert mine == theirs
    assert len(mine.lines) == 4
    assert (mine.net, mine.tax, mine.gross) == (13899, 2641, 16540)

    ann.update(order, {"status": text("submitted")})
    with pytest.raises(crm.CrmError.InvalidInput, match="submitted order"):
        ann.add_order_line(order, products[0], 1.0, 0.0)


def png(width, height):
    """A real PNG picture (a gradient), written with the standard library."""
    import struct, zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 255 // width, y * 255 // height, 128)) for x in range(width))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_attachments_are_added_offline_and_their_metadata_syncs(tmp_path, relay_url):
    """A rep attaches a business card photo offline; a disguised file is
    refused in plain words; the metadata reaches a colleague through the
    relay, and the files follow: sync sends them, a colleague opens one."""
    jpeg = bytes([0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10]) + b"JFIF\x00" + bytes(range(64))
    ann = crm.CrmStore.open(str(tmp_path / "ann.db"), "ann")
    acme = ann.create(crm.RecordKind.ACCOUNT, {"name": text("Acme"), "territory": text("north")}).account.meta.id
    card = ann.add_attachment(acme, "card.jpg", "image/jpeg", jpeg, "Jane's card")
    photo = tmp_path / "shelf.jpg"
    photo.write_bytes(jpeg[:-1] + b"\x01")
    ann.add_attachment_file(acme, str(photo), "image/jpeg", None)
    with pytest.raises(crm.CrmError.InvalidInput, match="not image/jpeg"):
        ann.add_attachment(acme, "x.jpg", "image/jpeg", b"<!DOCTYPE html><script>1</script>", None)
    [first, second] = ann.attachments(acme)
    assert (first.attachment_id, first.name, first.caption, first.size) == (card, "card.jpg", "Jane's card", len(jpeg))
    assert second.name == "shelf.jpg"
    assert ann.blob(first.sha256) == jpeg
    ann.caption_attachment(acme, second.attachment_id, "Shelf, aisle 3")
    assert first.thumbnail is None  # a JPEG header alone is no picture

    ann.login(relay_url, "ann", PASSWORD)
    ann.sync(None)
    assert ann.outbox_status().pending == 0 and ann.outbox_status().rejected == 0
    bob = crm.CrmStore.open(str(tmp_path / "bob.db"), "bob")
    bob.login(relay_url, "bob", PASSWORD)
    bob.sync(None)
    seen = bob.attachments(acme)
    assert [(a.name, a.caption, a.added_by) for a in seen] == [("card.jpg", "Jane's card", "ann"), ("shelf.jpg", "Shelf, aisle 3", "ann")]
    assert bob.blob(first.sha256) is None
    # sync sent the files after the records; opening one downloads it.
    assert ann.upload_blobs() == 0
    assert bob.fetch_blob(first.sha256) == jpeg
    assert bob.blob(first.sha256) == jpeg
    bob.set_blob_prefetch(["account"])
    bob.set_blob_cache_limit(64 << 20)
    ann.remove_attachment(acme, card)
    assert [a.name for a in ann.attachments(acme)] == ["shelf.jpg"]

    # A picture carries a small JPEG thumbnail in its metadata, which a
    # colleague has as soon as the record syncs, before the file.
    # A listener hears each chunk of the file's journey, up and down.
    logo_png = png(300, 150)
    ann.add_attachment(acme, "logo.png", "image/png", logo_png, None)
    sent, got = Transfers(), Transfers()
    ann.set_blob_listener(sent)
    bob.set_blob_listener(got)
    ann.sync(None)
    bob.sync(None)
    logo = next(a for a in bob.attachments(acme) if a.name == "logo.png")
    assert logo.thumbnail[:3] == bytes([0xFF, 0xD8, 0xFF]) and len(logo.thumbnail) <= 8192
    assert sent.seen == [(crm.TransferDirection.UPLOAD, len(logo_png), len(logo_png))]
    assert bob.fetch_blob(logo.sha256) == logo_png
    assert got.seen[-1] == (crm.TransferDirection.DOWNLOAD, len(logo_png), len(logo_png))
