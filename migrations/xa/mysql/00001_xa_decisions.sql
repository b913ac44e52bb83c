-- The XA coordinator's decision log as a table, for coordinators configured with
-- coordinator.decision_log: <resource> (the default keeps it in a file in the data directory).
-- One row per global transaction of a coordinator node: the last record the coordinator wrote
-- for it (preparing, the commit or rollback decision, done, an operator's resolve), upserted
-- with group commit. Finished transactions are deleted once past the coordinator's retention.
-- Idempotent on purpose (IF NOT EXISTS): see migrations.Apply. Times are UTC.

-- +goose Up
CREATE TABLE IF NOT EXISTS imago_xa_decisions (
    node_id     CHAR(16)     CHARACTER SET ascii COLLATE ascii_bin NOT NULL COMMENT 'Coordinator node id (16 hex digits, the start of every gtrid of that node; the node-id file of its data directory).',
    gtrid       CHAR(40)     CHARACTER SET ascii COLLATE ascii_bin NOT NULL COMMENT 'Global transaction id (node id then 24 hex digits): the gtrid part of the data column of XA RECOVER for its branches.',
    client_id   VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT '' COMMENT 'The id the client gave the transaction (its idempotency key), empty if none.',
    status      VARCHAR(32)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL COMMENT 'active, preparing, committing (commit decided, phase 2 under way), committed, rolling_back, rolled_back, or in_doubt (a branch outcome differs from the decision: an operator must resolve it).',
    created_at  DATETIME(6)  NULL COMMENT 'UTC time the transaction began.',
    decided_at  DATETIME(6)  NULL COMMENT 'UTC time commit or rollback was decided (or resolved by an operator); NULL while undecided.',
    finished_at DATETIME(6)  NULL COMMENT 'UTC time every branch had answered and the status became final (committed or rolled_back); NULL until then.',
    updated_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) COMMENT 'UTC time the coordinator last wrote this row (database time).',
    decided_by  VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT '' COMMENT 'The operator who resolved an in_doubt transaction, empty otherwise.',
    record      BLOB         NOT NULL COMMENT 'The full record as the coordinator reads it back at start-up: a decision-log frame (u32 length, u32 CRC-32C, payload with status, times, reason and branches). The other columns are a readable copy.',
    PRIMARY KEY (node_id, gtrid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Decision log of the Imago XA coordinator: one row per global transaction, the last record its coordinator wrote (the commit decision is committed here before the first phase-2 commit). Written only by the coordinator whose node_id it is; do not edit.';

-- +goose Down
DROP TABLE IF EXISTS imago_xa_decisions;
