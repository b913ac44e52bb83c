-- The ledger side of the settlement example: PostgreSQL (resource "ledger").
-- PostgreSQL needs max_prepared_transactions > 0 (postgresql.conf, then restart).
CREATE TABLE IF NOT EXISTS ledger (
  id      TEXT PRIMARY KEY,
  balance BIGINT NOT NULL
);
COMMENT ON TABLE ledger IS 'Merchant ledger credited by global transactions (examples/settlement)';
COMMENT ON COLUMN ledger.balance IS 'balance in cents';

INSERT INTO ledger (id, balance) VALUES ('shop-1', 0), ('shop-2', 0)
  ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance;
