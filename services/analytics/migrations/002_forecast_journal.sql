-- The forecasts analytics received (ForecastsUpdated events, serialised), in arrival order. Ingestion's export
-- rebuilds a lost read model's records but knows nothing of forecasts: a rebuilt read model replays them from
-- here. Shared by every replica; an event kept by one replica is not kept again by another.
CREATE TABLE IF NOT EXISTS analytics.forecast_journal (
    position    BIGSERIAL PRIMARY KEY,
    event_id    TEXT NOT NULL UNIQUE,
    kept_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    body        BYTEA NOT NULL
);
