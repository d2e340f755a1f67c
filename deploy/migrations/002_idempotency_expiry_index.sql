-- Housekeeping deletes the idempotency keys past their expiry every hour
-- (services/ingestion/housekeeping.py): found by this index, not by a scan of every key.
CREATE INDEX IF NOT EXISTS idempotency_keys_expiry ON support.idempotency_keys (expires_at);
