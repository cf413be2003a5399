// Kotlin scenario on the JVM, through the same generated code Android uses:
// two devices, a real relay, offline edits, a conflict, its resolution.
// Usage: MainKt <path of fieldcrm-server>

import java.io.File
import java.nio.file.Files
import java.util.concurrent.TimeUnit
import uniffi.fieldcrm_mobile.*

const val PASSWORD = "kotlin-password"

fun check(condition: Boolean, message: () -> String) {
    if (!condition) throw AssertionError(message())
}

fun text(value: String) = FieldValue.Text(value)

class Progress : SyncListener {
    val rounds = mutableListOf<SyncStatus>()
    override fun onProgress(status: SyncStatus) {
        rounds.add(status)
    }
}

fun main(args: Array<String>) {
    val relayBin = File(args[0]).absolutePath
    val tmp = Files.createTempDirectory("fieldcrm-kotlin").toFile()
    val data = File(tmp, "relay").path
    fun admin(vararg command: String) {
        val pb = ProcessBuilder(relayBin, "--data", data, *command).inheritIO()
        pb.environment()["FIELDCRM_USER_PASSWORD"] = PASSWORD
        check(pb.start().waitFor() == 0) { "admin command ${command.toList()} failed" }
    }
    admin("territory", "add", "north")
    admin("user", "add", "ann", "--territories", "north")
    admin("user", "add", "bob", "--territories", "north")
    admin("user", "add", "olivia", "--role", "office")

    val relay = ProcessBuilder(relayBin, "--data", data, "serve", "--listen", "127.0.0.1:0")
        .redirectError(ProcessBuilder.Redirect.DISCARD)
        .start()
    try {
        val url = relay.inputStream.bufferedReader().readLine().removePrefix("listening on ").trim()
        scenario(tmp, url)
        badInput(tmp)
        refusedAndSignOut(tmp, url)
        liveApp(tmp, url)
        aDay(tmp, url)
        println("kotlin: 5 passed, 0 failed")
    } finally {
        relay.destroy()
        relay.waitFor(5, TimeUnit.SECONDS)
        tmp.deleteRecursively()
    }
}

fun scenario(tmp: File, url: String) {
    val ann = CrmStore.open(File(tmp, "ann.db").path, "ann")
    val acme = (ann.create(RecordKind.ACCOUNT, mapOf("name" to text("Acme"), "territory" to text("north"))) as CrmRecord.Account).account
    for ((first, last) in listOf("Ada" to "Lovelace", "Grace" to "Hopper")) {
        ann.create(
            RecordKind.CONTACT,
            mapOf(
                "account_id" to text(acme.meta.id),
                "first_name" to text(first),
                "last_name" to text(last),
                "email" to text("${first.lowercase()}@acme.example"),
                "territory" to text("north"),
            ),
        )
    }
    val found = ann.search("lovel", null, 10u)
    check(found.size == 1 && (found[0] as CrmRecord.Contact).contact.lastName == "Lovelace") { "search found $found" }
    check(ann.accountOverview(acme.meta.id).contacts.size == 2) { "overview lists both contacts" }

    ann.login(url, "ann", PASSWORD)
    val progress = Progress()
    val pushed = ann.sync(progress)
    check(pushed.acked == 3uL && progress.rounds.isNotEmpty()) { "ann pushed $pushed, progress ${progress.rounds}" }

    val bob = CrmStore.open(File(tmp, "bob.db").path, "bob")
    bob.login(url, "bob", PASSWORD)
    bob.sync(null)
    check((bob.get(acme.meta.id) as CrmRecord.Account).account.name == "Acme") { "bob sees ann's account" }

    // Offline on both devices: the same field, differently.
    ann.update(acme.meta.id, mapOf("phone" to text("+44 111 111")))
    bob.update(acme.meta.id, mapOf("phone" to text("+44 222 222")))
    ann.sync(null)
    bob.sync(null)
    ann.sync(null)
    for (device in listOf(ann, bob)) {
        val conflicts = device.conflicts(acme.meta.id)
        check(conflicts.size == 1 && conflicts[0].field == "phone" && conflicts[0].values.size == 2) { "conflict: $conflicts" }
    }
    check(ann.get(acme.meta.id) == bob.get(acme.meta.id)) { "both devices show the same record" }

    ann.resolveConflict(acme.meta.id, "phone", text("+44 333 333"))
    ann.sync(null)
    bob.sync(null)
    check(bob.conflicts(acme.meta.id).isEmpty()) { "resolved on bob too" }
    check((bob.get(acme.meta.id) as CrmRecord.Account).account.phone == "+44 333 333") { "bob has the resolution" }

    val history = bob.history(acme.meta.id)
    check(history.size == 4) { "create, two edits, resolution: $history" }
    check(history.last().user == "ann" && history.last().fields.single().field == "phone") { "last change ${history.last()}" }
    check(history.last().device == ann.deviceId()) { "the entry names ann's device: ${history.last()}" }
    ann.closeStore()
    bob.closeStore()
}

class Heard : ChangeListener {
    val ids = java.util.concurrent.ConcurrentLinkedQueue<String>()
    override fun onChange(changes: List<RecordChange>) {
        changes.forEach { ids.add(it.id) }
    }
}

class States : SyncStateListener {
    val states = java.util.concurrent.ConcurrentLinkedQueue<SyncState>()
    override fun onState(state: SyncState) {
        states.add(state)
    }
}

// An app-shaped program: background sync, a change listener, reads meanwhile.
fun liveApp(tmp: File, url: String) {
    val other = CrmStore.open(File(tmp, "other.db").path, "bob")
    other.login(url, "bob", PASSWORD)
    val ids = (0 until 100).map {
        (other.create(RecordKind.ACCOUNT, mapOf("name" to text("Live $it"), "territory" to text("north"))) as CrmRecord.Account).account.meta.id
    }
    other.sync(null)
    val app = CrmStore.open(File(tmp, "app.db").path, "ann")
    app.login(url, "ann", PASSWORD)
    val heard = Heard()
    val states = States()
    app.addChangeListener(heard)
    app.startSync(states)
    val deadline = System.currentTimeMillis() + 30_000
    var slowest = 0L
    while (!heard.ids.containsAll(ids)) {
        val t = System.nanoTime()
        app.list(ListFilter(kind = RecordKind.ACCOUNT, limit = 20u))
        slowest = maxOf(slowest, (System.nanoTime() - t) / 1_000_000)
        check(System.currentTimeMillis() < deadline) { "background bootstrap was not announced: ${heard.ids.size} of ${ids.size}" }
        Thread.sleep(5)
    }
    check(slowest < 500) { "a read waited $slowest ms behind sync" }
    val editedAt = System.currentTimeMillis()
    heard.ids.clear()
    other.update(ids[3], mapOf("phone" to text("+44 113 496 0333")))
    other.sync(null)
    while (!heard.ids.contains(ids[3])) {
        check(System.currentTimeMillis() - editedAt < 5_000) { "the listener never heard of the edit" }
        Thread.sleep(5)
    }
    check((app.get(ids[3]) as CrmRecord.Account).account.phone == "+44 113 496 0333") { "the edit arrived" }
    app.stopSync()
    check(states.states.any { it is SyncState.Idle }) { "states: ${states.states}" }
    check(app.sessionToken() != null) { "the token can be kept" }
}

// A refused change converges and is listed; signing out with work waiting says so.
fun refusedAndSignOut(tmp: File, url: String) {
    val bob = CrmStore.open(File(tmp, "bob-refused.db").path, "bob")
    bob.login(url, "bob", PASSWORD)
    val id = (bob.create(RecordKind.ACCOUNT, mapOf("name" to text("Birch"), "territory" to text("north"))) as CrmRecord.Account).account.meta.id
    bob.sync(null)
    bob.update(id, mapOf("owner" to text("nobody-here")))
    bob.update(id, mapOf("industry" to text("Timber")))
    val status = bob.sync(null)
    check(status.rejected == 1uL && status.rebased == 1uL) { "refused and rebased: $status" }
    val account = (bob.get(id) as CrmRecord.Account).account
    check(account.owner == "bob" && account.industry == "Timber") { "later edit kept, refused left out: $account" }
    val refused = bob.refusedChanges().single()
    check(refused.field == "owner" && refused.reason.contains("no such user")) { "refused: $refused" }
    try {
        bob.signOut(false)
        throw AssertionError("signing out with a refused change waiting must ask")
    } catch (e: CrmException.PendingChanges) {
        check(e.message!!.contains("1 refused")) { "says what would be lost: ${e.message}" }
    }
    bob.discardRefused(refused.id)
    bob.syncThenSignOut(null)
    check(!File(tmp, "bob-refused.db").exists()) { "signed out: the store file is gone" }
}

fun badInput(tmp: File) {
    val store = CrmStore.open(File(tmp, "bad.db").path, "ann")
    try {
        store.get("no-such-record")
        throw AssertionError("get of an unknown id must fail")
    } catch (e: CrmException.NotFound) {
        check(e.message!!.contains("no-such-record")) { "message names the id: ${e.message}" }
    }
    try {
        store.create(RecordKind.DEAL, mapOf("amount" to FieldValue.Float(1.5)))
        throw AssertionError("a fractional amount must fail")
    } catch (e: CrmException.InvalidInput) {
        check(e.message!!.contains("amount")) { "message names the field: ${e.message}" }
    }
    store.closeStore()
    try {
        store.get("x")
        throw AssertionError("a closed handle must fail")
    } catch (e: CrmException.Closed) {
    }
    val corrupt = File(tmp, "corrupt.db").also { it.writeBytes(ByteArray(4096) { 0x42 }) }
    try {
        CrmStore.open(corrupt.path, "ann")
        throw AssertionError("a corrupt file must fail")
    } catch (e: CrmException.Storage) {
    }
}

// A rep's day: the office keeps the catalogue; offline, the rep opens the
// day's route, checks in, takes an order of three lines while the office
// adds a fourth, and checks out with a report and a next step. After sync
// the rep, the office and a colleague hold the same four lines and totals,
// and the colleague sees the visit.
fun aDay(tmp: File, url: String) {
    val olivia = CrmStore.open(File(tmp, "olivia-day.db").path, "olivia")
    olivia.login(url, "olivia", PASSWORD)
    olivia.sync(null)
    val shared = text("*organisation")
    val products = listOf("P1" to 1000L, "P2" to 250L, "P3" to 9999L, "P4" to 40L).map { (sku, cents) ->
        val product = (olivia.create(RecordKind.PRODUCT, mapOf("sku" to text(sku), "name" to text("Product $sku"),
            "territory" to shared)) as CrmRecord.Other).record.meta.id
        olivia.create(RecordKind.PRICE, mapOf("product_id" to text(product), "currency" to text("EUR"),
            "unit_price" to FieldValue.Int(cents), "territory" to shared))
        product
    }
    olivia.sync(null)

    val ann = CrmStore.open(File(tmp, "ann-visit.db").path, "ann")
    ann.login(url, "ann", PASSWORD)
    ann.sync(null)
    check(ann.priceOf(products[2], "EUR", "2030-01-01") == 9999L) { "the catalogue reached the rep" }
    val day = 1_800_000_000_000L
    val acme = (ann.create(RecordKind.ACCOUNT, mapOf("name" to text("Acme"), "territory" to text("north"),
        "geo.lat" to FieldValue.Float(52.52), "geo.lon" to FieldValue.Float(13.405))) as CrmRecord.Account).account
    val visit = (ann.create(RecordKind.ACTIVITY, mapOf("kind" to text("visit"), "subject" to text("Visit Acme"),
        "territory" to text("north"), "related_to" to text(acme.meta.id), "due_at" to FieldValue.Int(day))) as CrmRecord.Activity).activity.meta.id
    val order = (ann.create(RecordKind.ORDER, mapOf("account_id" to text(acme.meta.id), "visit_id" to text(visit),
        "name" to text("Order at Acme"), "currency" to text("EUR"), "tax_percent" to FieldValue.Int(19),
        "territory" to text("north"))) as CrmRecord.Other).record.meta.id
    ann.sync(null)

    // Offline from here.
    val route = ann.dayRoute("ann", day - 3_600_000, day + 86_400_000, DayRouteOptions(startAt = day - 3_600_000), listOf())
    check(route.stops.single().visitId == visit) { "today's route: $route" }
    val far = ann.checkIn(visit, GeoPoint(52.60, 13.405), null)
    check(far.warning != null && far.warning!!.contains("km")) { "a far check-in warns: $far" }
    products.take(3).zip(listOf(3.0, 2.0, 1.0)).forEach { (product, quantity) -> ann.addOrderLine(order, product, quantity, 0.0) }
    olivia.sync(null)
    olivia.addOrderLine(order, products[3], 10.0, 0.0)
    olivia.sync(null)
    val out = ann.checkOut(visit, null, VisitReportInput("successful", "Ordered", "Deliver", day + 86_400_000))
    check(out.visit.done && out.followUp?.activityKind == "task") { "checked out: $out" }

    ann.sync(null)
    olivia.sync(null)
    val bob = CrmStore.open(File(tmp, "bob-visit.db").path, "bob")
    bob.login(url, "bob", PASSWORD)
    bob.sync(null)
    val mine = ann.orderSummary(order)
    check(mine == olivia.orderSummary(order) && mine == bob.orderSummary(order)) { "one order everywhere: $mine" }
    check(mine.lines.size == 4 && mine.net == 13899L && mine.tax == 2641L && mine.gross == 16540L) { "four lines: $mine" }
    val seen = (bob.get(visit) as CrmRecord.Activity).activity
    check(seen.checkedOutAt == out.visit.checkedOutAt && seen.outcome == "successful") { "bob sees the visit: $seen" }
}
