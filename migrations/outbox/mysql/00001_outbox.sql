-- The transactional outbox in the application's database: imago_outbox (the application writes
-- it inside its own transactions) and imago_outbox_relay (where each relay source is).
-- Idempotent on purpose (IF NOT EXISTS): see migrations.ApplyOutbox.
-- `key` is a reserved word in MySQL/MariaDB: quote it with backquotes.
-- Times are UTC(6) as written by the server (CURRENT_TIMESTAMP(6) in the session time zone of the writer).

-- +goose Up
CREATE TABLE IF NOT EXISTS imago_outbox (
    id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT COMMENT 'Row id (AUTO_INCREMENT). Ids are allocated at INSERT and may commit out of order: the relay publishes ids in order, and passes a missing id only once no transaction that could still write it is open (see the outbox package documentation). Part of the idempotency key the relay publishes with.',
    topic      VARCHAR(249)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL COMMENT 'Destination topic (must exist in Imago, or auto_create_topics must be on). A row naming a missing topic holds up the rows after it until the topic exists.',
    `key`      VARCHAR(1024) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL COMMENT 'Message key: chooses the partition (hash(key) mod partitions) and defines per-key order. NULL means no key (round-robin).',
    headers    LONGTEXT      CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL COMMENT 'Message headers as a JSON object of strings, or NULL.',
    payload    LONGBLOB      NOT NULL COMMENT 'Message value, raw bytes (fetched over HTTP as value_base64).',
    created_at DATETIME(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6) COMMENT 'Time of the INSERT; the relay reports commit-to-publish lag from it.',
    relayed_at DATETIME(6)   NULL COMMENT 'Mark mode only: when the relay published the row. NULL while waiting. In delete mode (the default) published rows are deleted instead.',
    PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Messages an application wrote inside its own transaction, waiting for the Imago relay. A committed row is published exactly once, in id order, then deleted (or marked). Write with outbox.Write or an INSERT that leaves id and created_at to their defaults.';

CREATE TABLE IF NOT EXISTS imago_outbox_relay (
    source          VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL COMMENT 'Source name from the Imago configuration (outbox[].name).',
    cursor_id       BIGINT UNSIGNED NOT NULL DEFAULT 0 COMMENT 'Every row with id <= cursor_id is published and deleted (or marked).',
    claim_id        BIGINT UNSIGNED NULL COMMENT 'End of the batch being published now, recorded before publishing so that a relay taking over republishes exactly the same batch with the same idempotency keys. NULL when no batch is in flight.',
    relayed_total   BIGINT UNSIGNED NOT NULL DEFAULT 0 COMMENT 'Rows published by this source since the row was created.',
    last_relayed_at DATETIME(6)  NULL COMMENT 'When the last batch was published and removed from the outbox.',
    updated_at      DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) COMMENT 'Last write by a relay.',
    PRIMARY KEY (source)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Progress of each outbox relay source. Written only by the relay holding the source''s GET_LOCK.';

-- +goose Down
DROP TABLE IF EXISTS imago_outbox_relay;
DROP TABLE IF EXISTS imago_outbox;
