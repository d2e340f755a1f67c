-- System of record of the ingestion service. Portable SQL: the same file migrates PostgreSQL
-- (production) and DuckDB (embedded profile), so both adapters keep one schema.
CREATE SCHEMA IF NOT EXISTS core;
CREATE SCHEMA IF NOT EXISTS staging;
CREATE SCHEMA IF NOT EXISTS support;

-- Every committed version of every record, in commit order. `seq` is the global sequence the
-- export stream and the read models' watermarks use.
CREATE TABLE IF NOT EXISTS core.record_versions (
    seq          BIGINT PRIMARY KEY,
    batch_id     TEXT NOT NULL,
    kind         TEXT NOT NULL,
    record_key   TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    supersedes   BOOLEAN NOT NULL,
    payload      BYTEA NOT NULL,
    committed_at TIMESTAMPTZ NOT NULL
);

-- The current version of each natural key: decides accepted / duplicate / superseded.
CREATE TABLE IF NOT EXISTS core.current_records (
    record_key   TEXT PRIMARY KEY,
    seq          BIGINT NOT NULL,
    content_hash TEXT NOT NULL
);

-- One row: the last sequence handed out. Locking it serialises commits, so sequence order is
-- commit order and a reader following the sequence never skips a record committed late.
CREATE TABLE IF NOT EXISTS support.sequence_counter (
    id       INTEGER PRIMARY KEY,
    last_seq BIGINT NOT NULL
);
INSERT INTO support.sequence_counter (id, last_seq) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;

CREATE TABLE IF NOT EXISTS support.idempotency_keys (
    caller       TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    state        TEXT NOT NULL,
    response     BYTEA,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (caller, key)
);

CREATE SEQUENCE IF NOT EXISTS support.outbox_id_seq;
CREATE TABLE IF NOT EXISTS support.outbox (
    id           BIGINT PRIMARY KEY DEFAULT nextval('support.outbox_id_seq'),
    event_id     TEXT NOT NULL,
    routing_key  TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    body         BYTEA NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    published_at TIMESTAMPTZ
);

CREATE SEQUENCE IF NOT EXISTS support.quarantine_id_seq;
CREATE TABLE IF NOT EXISTS support.quarantine (
    id             BIGINT PRIMARY KEY DEFAULT nextval('support.quarantine_id_seq'),
    origin         TEXT NOT NULL,
    record         BYTEA,
    violations     TEXT NOT NULL,
    raw            TEXT NOT NULL,
    quarantined_at TIMESTAMPTZ NOT NULL,
    replayed_at    TIMESTAMPTZ
);
