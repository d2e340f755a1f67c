-- Alerts of analytics-query: the state shared by every replica (the read model itself is per replica).
-- Idempotent: every replica applies it at start, under an advisory lock.

CREATE SCHEMA IF NOT EXISTS analytics;

-- One row per alert ever raised.
CREATE TABLE IF NOT EXISTS analytics.alerts (
    alert_id        TEXT PRIMARY KEY,
    kind            SMALLINT NOT NULL,          -- analytics.v1.AlertKind
    material_code   TEXT NOT NULL,
    site_code       TEXT NOT NULL,
    state           SMALLINT NOT NULL,          -- analytics.v1.AlertState
    message         TEXT NOT NULL,
    stock_position  DOUBLE PRECISION NOT NULL,
    reorder_point   DOUBLE PRECISION NOT NULL,
    days_of_cover   DOUBLE PRECISION NOT NULL,
    lead_time_days  DOUBLE PRECISION NOT NULL,
    raised_at       TIMESTAMPTZ NOT NULL,
    data_watermark  TEXT NOT NULL,
    -- Copied at raise time so listings can filter without the read model.
    family          TEXT NOT NULL DEFAULT '',
    client          TEXT NOT NULL DEFAULT '',
    region          TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS alerts_newest ON analytics.alerts (raised_at DESC, alert_id DESC);

-- The raise-once guard: one row per (material, site, kind). An episode is active from the evaluation that
-- finds the condition true until one that finds it false; only the insert or update that flips `active`
-- to true raises an alert, so two replicas evaluating the same data raise it once. Transitions need a newer
-- (changed_seq, changed_version) than the last one, so a replica lagging behind cannot flip it back.
CREATE TABLE IF NOT EXISTS analytics.alert_episodes (
    material_code   TEXT NOT NULL,
    site_code       TEXT NOT NULL,
    kind            SMALLINT NOT NULL,
    active          BOOLEAN NOT NULL,
    alert_id        TEXT NOT NULL,
    changed_seq     BIGINT NOT NULL,            -- read-model data watermark of the evaluation
    changed_version BIGINT NOT NULL,            -- generated_at (us) of the reorder policy it used
    PRIMARY KEY (material_code, site_code, kind)
);

-- Audit trail (raise, acknowledge, resolve) and outbox: rows not yet published carry published_at NULL.
CREATE TABLE IF NOT EXISTS analytics.alert_events (
    id              BIGSERIAL PRIMARY KEY,
    event_id        TEXT NOT NULL UNIQUE,
    alert_id        TEXT NOT NULL REFERENCES analytics.alerts (alert_id),
    state           SMALLINT NOT NULL,
    actor           TEXT NOT NULL,
    changed_at      TIMESTAMPTZ NOT NULL,
    comment         TEXT NOT NULL DEFAULT '',
    published_at    TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS alert_events_by_alert ON analytics.alert_events (alert_id, id);
CREATE INDEX IF NOT EXISTS alert_events_unpublished ON analytics.alert_events (id) WHERE published_at IS NULL;
