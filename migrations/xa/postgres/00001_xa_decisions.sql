-- The XA coordinator's decision log as a table, for coordinators configured with
-- coordinator.decision_log: <resource> (the default keeps it in a file in the data directory).
-- One row per global transaction of a coordinator node: the last record the coordinator wrote
-- for it (preparing, the commit or rollback decision, done, an operator's resolve), upserted
-- with group commit. Finished transactions are deleted once past the coordinator's retention.
-- Idempotent on purpose (IF NOT EXISTS): see migrations.Apply.

-- +goose Up
CREATE SCHEMA IF NOT EXISTS imago;

CREATE TABLE IF NOT EXISTS imago.xa_decisions (
    node_id     text        NOT NULL,
    gtrid       text        NOT NULL,
    client_id   text        NOT NULL DEFAULT '',
    status      text        NOT NULL,
    created_at  timestamptz,
    decided_at  timestamptz,
    finished_at timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    decided_by  text        NOT NULL DEFAULT '',
    record      bytea       NOT NULL,
    PRIMARY KEY (node_id, gtrid)
);
COMMENT ON TABLE imago.xa_decisions IS 'Decision log of the Imago XA coordinator: one row per global transaction, the last record its coordinator wrote (the commit decision is committed here before the first phase-2 commit). Written only by the coordinator whose node_id it is; do not edit. In doubt or unfinished: SELECT * FROM imago.xa_decisions WHERE status NOT IN (''committed'', ''rolled_back'').';
COMMENT ON COLUMN imago.xa_decisions.node_id IS 'Coordinator node id (16 hex digits, the start of every gtrid of that node; the node-id file of its data directory).';
COMMENT ON COLUMN imago.xa_decisions.gtrid IS 'Global transaction id (node id then 24 hex digits). XA branches carry it: in pg_prepared_xacts as gid 494d4731_<gtrid>_<hex of the resource name>, in XA RECOVER as the gtrid part of data.';
COMMENT ON COLUMN imago.xa_decisions.client_id IS 'The id the client gave the transaction (its idempotency key), empty if none.';
COMMENT ON COLUMN imago.xa_decisions.status IS 'active, preparing, committing (commit decided, phase 2 under way), committed, rolling_back, rolled_back, or in_doubt (a branch''s outcome differs from the decision: an operator must resolve it).';
COMMENT ON COLUMN imago.xa_decisions.created_at IS 'When the transaction began.';
COMMENT ON COLUMN imago.xa_decisions.decided_at IS 'When commit or rollback was decided (or resolved by an operator); NULL while undecided.';
COMMENT ON COLUMN imago.xa_decisions.finished_at IS 'When every branch had answered and the status became final (committed or rolled_back); NULL until then.';
COMMENT ON COLUMN imago.xa_decisions.updated_at IS 'When the coordinator last wrote this row (database time).';
COMMENT ON COLUMN imago.xa_decisions.decided_by IS 'The operator who resolved an in_doubt transaction, empty otherwise.';
COMMENT ON COLUMN imago.xa_decisions.record IS 'The full record as the coordinator reads it back at start-up: a decision-log frame (u32 length, u32 CRC-32C, payload with status, times, reason and branches). The other columns are a readable copy.';

-- +goose Down
DROP TABLE IF EXISTS imago.xa_decisions;
