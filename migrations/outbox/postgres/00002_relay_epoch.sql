-- The relay's epoch (part of its idempotency keys) and the cluster its cursor belongs to.
-- See the outbox package documentation and docs/outbox.md (the runbook).

-- +goose Up
ALTER TABLE imago.outbox_relay ADD COLUMN IF NOT EXISTS epoch bigint NOT NULL DEFAULT 0;
ALTER TABLE imago.outbox_relay ADD COLUMN IF NOT EXISTS system_id text NULL;
COMMENT ON COLUMN imago.outbox_relay.epoch IS 'Part of every idempotency key the relay publishes with (from 1 on: outbox:<source>:e<epoch>:<id>). An operator raises it after a failover or restore moved the cursor back, so rebuilt batches do not collide with keys already used.';
COMMENT ON COLUMN imago.outbox_relay.system_id IS 'pg_control_system().system_identifier of the cluster the cursor''s transaction ids belong to; recorded by the relay when NULL. A relay on another cluster (restored dump, logical replication cutover) refuses to run until an operator resets the cursor.';

-- +goose Down
ALTER TABLE imago.outbox_relay DROP COLUMN IF EXISTS system_id;
ALTER TABLE imago.outbox_relay DROP COLUMN IF EXISTS epoch;
