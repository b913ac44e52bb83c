-- The relay's epoch, part of its idempotency keys. See the outbox package documentation and
-- docs/outbox.md (the runbook).

-- +goose Up
ALTER TABLE imago_outbox_relay ADD COLUMN epoch BIGINT UNSIGNED NOT NULL DEFAULT 0 COMMENT 'Part of every idempotency key the relay publishes with (from 1 on: outbox:<source>:e<epoch>:<id>). An operator raises it after a failover or restore moved the cursor back, so rebuilt batches do not collide with keys already used.';

-- +goose Down
ALTER TABLE imago_outbox_relay DROP COLUMN epoch;
