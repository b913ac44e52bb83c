-- The wallet side of the settlement example: MySQL/MariaDB (resource "wallet").
CREATE TABLE IF NOT EXISTS wallets (
  id      VARCHAR(32) PRIMARY KEY COMMENT 'account id',
  balance BIGINT NOT NULL COMMENT 'balance in cents; never negative (the debit operation checks it)'
) ENGINE=InnoDB COMMENT='Wallets debited by global transactions (examples/settlement)';

INSERT INTO wallets (id, balance) VALUES ('alice', 100000), ('bob', 100000), ('carol', 100000)
  ON DUPLICATE KEY UPDATE balance = VALUES(balance);
