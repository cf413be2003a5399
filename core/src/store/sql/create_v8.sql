-- FieldCRM device store, schema version 5 (fresh stores; older ones are
-- upgraded step by step, see schema.rs).

-- Device identity, sync cursor and settings (pipeline).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- The Automerge actor id this device writes with, per user who signed in.
CREATE TABLE actors (
    user_id TEXT PRIMARY KEY,
    actor   BLOB NOT NULL UNIQUE
) WITHOUT ROWID;

-- One row per record document: its base, bytes that Automerge loads as a
-- whole (the compacted document, or for a record made here its first change) ...
CREATE TABLE documents (
    id       TEXT PRIMARY KEY,
    snapshot BLOB NOT NULL
) WITHOUT ROWID;

-- ... plus the changes received or made since, including changes still
-- waiting for their dependencies. Compaction folds applied ones into the
-- snapshot.
CREATE TABLE doc_changes (
    doc_id TEXT NOT NULL REFERENCES documents(id),
    hash   BLOB NOT NULL,
    bytes  BLOB NOT NULL,
    PRIMARY KEY (doc_id, hash)
) WITHOUT ROWID;

-- Query projection: current values, derived from the documents and
-- rebuildable from them at any time.
CREATE TABLE records (
    rowid         INTEGER PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    kind          TEXT NOT NULL,
    name          TEXT NOT NULL,
    owner         TEXT,
    territory     TEXT,
    account_id    TEXT,
    related_to    TEXT,
    stage         TEXT,
    amount        INTEGER,
    close_date    TEXT,
    due_at        INTEGER,
    done          INTEGER,
    deleted       INTEGER NOT NULL,
    has_conflicts INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    record        TEXT NOT NULL, -- the Record as JSON
    currency      TEXT,
    probability   INTEGER,
    stage_history TEXT     -- a deal's stages as JSON [[ms, "stage"], ...]
);
CREATE INDEX records_kind_name ON records (kind, name);
CREATE INDEX records_kind_updated ON records (kind, updated_at);
CREATE INDEX records_owner ON records (owner);
CREATE INDEX records_territory ON records (territory, id);
-- Partial indexes: a commit only writes the indexes its record kind uses.
CREATE INDEX records_account ON records (account_id) WHERE account_id IS NOT NULL;
CREATE INDEX records_related ON records (related_to) WHERE related_to IS NOT NULL;
CREATE INDEX records_stage ON records (stage) WHERE stage IS NOT NULL;
-- A product's prices in a currency (the price book lookup of an order line).
CREATE INDEX records_price_product ON records (json_extract(record, '$.fields.product_id'), json_extract(record, '$.fields.currency'))
    WHERE kind = 'price';
-- Dashboards read these without touching the rows (covering indexes).
CREATE INDEX records_deal_figures ON records (stage, currency, close_date, probability, amount, territory, kind, deleted)
    WHERE kind = 'deal' AND deleted = 0;
CREATE INDEX records_owner_kind ON records (owner, kind, territory, deleted) WHERE deleted = 0;
CREATE INDEX records_conflicts ON records (territory, kind, deleted, has_conflicts) WHERE has_conflicts = 1;
CREATE INDEX records_deal_stages ON records (territory, id, stage_history, kind, deleted)
    WHERE kind = 'deal' AND deleted = 0;

-- Full-text index over names, emails, phones and notes; rowid = records.rowid.
CREATE VIRTUAL TABLE records_fts USING fts5 (
    name, email, phone, notes,
    tokenize = 'unicode61 remove_diacritics 2',
    detail = column
);

-- Local changes not yet acknowledged by the relay. rejected NULL: waiting
-- to be sent. code 'held_for_review': the relay holds it for an office
-- user's decision (sent again at every sync to learn it). Any other code:
-- refused; kept with what it meant to do (intent, JSON) until the user
-- retries or discards it, so no edit is lost.
CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY,
    doc_id     TEXT NOT NULL,
    hash       BLOB NOT NULL UNIQUE,
    bytes      BLOB NOT NULL,
    rejected   TEXT,
    code       TEXT,
    field      TEXT,
    intent     TEXT,
    refused_at INTEGER
);
CREATE INDEX outbox_doc ON outbox (doc_id);

-- Records the relay said to evict while they still had changes waiting
-- (to be sent, or held for review): evicted once those are settled.
CREATE TABLE deferred_evictions (record_id TEXT PRIMARY KEY) WITHOUT ROWID;

-- The device behind each Automerge actor, as the relay says (history).
CREATE TABLE actor_devices (actor TEXT PRIMARY KEY, device TEXT NOT NULL) WITHOUT ROWID;

-- Attachment blobs on this device (files in <store>.blobs/<sha256>):
-- uploaded = 0 while the relay has not confirmed one made here (never
-- evicted then); last_used orders eviction (schema 7).
CREATE TABLE blobs (
    sha256    TEXT PRIMARY KEY,
    size      INTEGER NOT NULL,
    uploaded  INTEGER NOT NULL,
    last_used INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX blobs_uploaded ON blobs (uploaded, last_used);
-- Which records name which blob (schema 8): who may fetch a blob (the
-- relay's access check), what its declared type is, what eager download
-- fetches. Kept with the projection row of each record with attachments.
CREATE TABLE attachment_refs (
    sha256     TEXT NOT NULL,
    record_id  TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size       INTEGER NOT NULL,
    PRIMARY KEY (sha256, record_id)
) WITHOUT ROWID;
CREATE INDEX attachment_refs_record ON attachment_refs (record_id);
