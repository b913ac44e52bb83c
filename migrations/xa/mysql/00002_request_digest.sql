-- The request digest of a transaction with a client id: what a repeat of the id is checked
-- against after a restart (a repeat with other work is refused, not answered as a duplicate).
-- The coordinator reads it back from the record column; this one is the readable copy. NULL in
-- rows written before it existed and for transactions without one.
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
              'ALTER TABLE imago_xa_decisions ADD COLUMN request_digest BINARY(32) NULL COMMENT ''SHA-256 (32 bytes) of the digest of the work the transaction was begun for (the gateway hashes its steps and messages); a repeat of client_id with another digest is refused (409 idempotency_key_reused). NULL when none: no client_id, or written by a version that did not record it (a repeat is then answered as a duplicate). The coordinator reads it from record; this is a readable copy.''',
              'DO 0')
      FROM information_schema.COLUMNS
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'imago_xa_decisions' AND COLUMN_NAME = 'request_digest');
PREPARE imago_stmt FROM @imago_ddl;
EXECUTE imago_stmt;
DEALLOCATE PREPARE imago_stmt;
SET @imago_ddl = NULL;

-- +goose Down
SET @imago_ddl = (
    SELECT IF(COUNT(*) > 0, 'ALTER TABLE imago_xa_decisions DROP COLUMN request_digest', 'DO 0')
      FROM information_schema.COLUMNS
     WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'imago_xa_decisions' AND COLUMN_NAME = 'request_digest');
PREPARE imago_stmt FROM @imago_ddl;
EXECUTE imago_stmt;
DEALLOCATE PREPARE imago_stmt;
SET @imago_ddl = NULL;
