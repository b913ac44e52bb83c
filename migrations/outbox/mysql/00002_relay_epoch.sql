-- The relay's epoch, part of its idempotency keys. See the outbox package documentation and
-- docs/outbox.md (the runbook).
--
-- Re-runnable on purpose: MySQL and MariaDB commit DDL by themselves, so a crash between the
-- ALTER and goose's version row (or a dropped version table) brings this migration back with
-- the column already there. MariaDB has ADD COLUMN IF NOT EXISTS but MySQL 5.7/8 has not, so
-- the ALTER runs only when information_schema.COLUMNS lacks the column (a prepared statement:
-- no stored procedure, no privilege beyond ALTER). The session variable and the statement name
-- live only in goose's connection.

-- +goose Up
SET @imago_ddl = (
    SELECT IF(COUNT(*) = 0,
              'ALTER TABLE imago_outbox_relay ADD COLUMN epoch BIGINT UNSIGNED NOT NULL DEFAULT 0 COMMENT ''Part of every idempotency key the relay publishes with (from 1 on: outbox:<source>:e<epoch>:<id>). An operator raises it after a failover or restore moved the cursor back, so rebuilt batches do not collide with keys already used.''',
              'DO 0')
      FROM information_schema.COLUMNS
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'imago_outbox_relay' AND COLUMN_NAME = 'epoch');
PREPARE imago_stmt FROM @imago_ddl;
EXECUTE imago_stmt;
DEALLOCATE PREPARE imago_stmt;
SET @imago_ddl = NULL;

-- +goose Down
SET @imago_ddl = (
    SELECT IF(COUNT(*) > 0, 'ALTER TABLE imago_outbox_relay DROP COLUMN epoch', 'DO 0')
      FROM information_schema.COLUMNS
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'imago_outbox_relay' AND COLUMN_NAME = 'epoch');
PREPARE imago_stmt FROM @imago_ddl;
EXECUTE imago_stmt;
DEALLOCATE PREPARE imago_stmt;
SET @imago_ddl = NULL;
