-- The request digest of a transaction with a client id: what a repeat of the id is checked
-- against after a restart (a repeat with other work is refused, not answered as a duplicate).
-- The coordinator reads it back from the record column; this one is the readable copy. NULL in
-- rows written before it existed and for transactions without one.
-- Re-runnable on purpose (IF NOT EXISTS), as every migration here: see migrations.Apply.

-- +goose Up
ALTER TABLE imago.xa_decisions ADD COLUMN IF NOT EXISTS request_digest bytea NULL;
COMMENT ON COLUMN imago.xa_decisions.request_digest IS 'SHA-256 (32 bytes) of the digest of the work the transaction was begun for (the gateway hashes its steps and messages); a repeat of client_id with another digest is refused (409 idempotency_key_reused). NULL when none: no client_id, or written by a version that did not record it (a repeat is then answered as a duplicate). The coordinator reads it from record; this is a readable copy.';

-- +goose Down
ALTER TABLE imago.xa_decisions DROP COLUMN IF EXISTS request_digest;
