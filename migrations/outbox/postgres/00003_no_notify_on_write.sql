-- Writers no longer NOTIFY: the trigger that woke the relay at every commit is dropped from
-- imago.outbox. PostgreSQL serializes the commits of all transactions that issued NOTIFY (one
-- lock held from before the commit record until after its flush), which cut concurrent
-- writers' throughput to about one commit per WAL flush, and it refuses PREPARE TRANSACTION
-- after NOTIFY, so a two-phase branch could not write the outbox. The relay polls instead,
-- adaptively (see the outbox package documentation, "What the PostgreSQL relay waits on").
-- The function stays for an operator who prefers the early wake-up on a low-rate table and
-- accepts both costs; the relay still LISTENs.

-- +goose Up
DROP TRIGGER IF EXISTS outbox_notify ON imago.outbox;
COMMENT ON FUNCTION imago.outbox_notify() IS 'Optional statement trigger for outbox tables: NOTIFY imago_outbox at commit, so a polling relay wakes at once. Not attached by default: PostgreSQL serializes the commits of transactions that notified (one global lock across the WAL flush), and a transaction that notified cannot PREPARE TRANSACTION.';

-- +goose Down
DROP TRIGGER IF EXISTS outbox_notify ON imago.outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON imago.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION imago.outbox_notify();
COMMENT ON FUNCTION imago.outbox_notify() IS 'Statement trigger for outbox tables: NOTIFY imago_outbox at commit, so a waiting relay wakes at once. Attach it to any further outbox table you create with the same shape.';
