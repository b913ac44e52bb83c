-- Consumer offsets, partition ends and the lag view, as imago_-prefixed tables.
-- Idempotent on purpose (IF NOT EXISTS / OR REPLACE): see migrations.Apply.
-- Names are compared byte for byte (utf8mb4_bin): "Orders" and "orders" are two topics.
-- Times are UTC (UTC_TIMESTAMP), whatever the session time zone.
-- `partition` is a reserved word in MySQL/MariaDB: quote it with backquotes.

-- +goose Up
CREATE TABLE IF NOT EXISTS imago_consumer_offsets (
    group_name   VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL COMMENT 'Consumer group name (case-sensitive).',
    topic        VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL COMMENT 'Topic name (case-sensitive).',
    `partition`  INT          NOT NULL COMMENT 'Partition number within the topic, from 0.',
    next_offset  BIGINT       NOT NULL COMMENT 'Offset of the next message the group will consume: every message below it is processed. Only grows (GREATEST on every commit).',
    committed_at DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) COMMENT 'UTC time of the last commit that wrote this row (a commit at the same offset refreshes it; a stale lower commit does not).',
    committed_by VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT '' COMMENT 'Member or client that made the last commit (free text, e.g. consumer id or "imago groups reset").',
    PRIMARY KEY (group_name, topic, `partition`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Committed position of each consumer group in each topic partition, written by Imago with group commit; next_offset never moves backwards except by imago groups reset.';

CREATE TABLE IF NOT EXISTS imago_partition_ends (
    topic        VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL COMMENT 'Topic name (case-sensitive).',
    `partition`  INT          NOT NULL COMMENT 'Partition number within the topic, from 0.',
    end_offset   BIGINT       NOT NULL COMMENT 'Offset the next produced message will get: the partition holds offsets below it. Only grows.',
    updated_at   DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) COMMENT 'UTC time the broker last reported this end (end_offset is at most about a second stale while the broker runs).',
    PRIMARY KEY (topic, `partition`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='Readable end of each topic partition, kept current by the broker at most once a second per partition; used by the imago_consumer_lag view.';

-- MySQL and MariaDB cannot comment a view; its columns are described in the README and in
-- imago_consumer_offsets / imago_partition_ends. lag is NULL when the end is unknown, never below 0.
CREATE OR REPLACE SQL SECURITY INVOKER VIEW imago_consumer_lag AS
SELECT o.group_name,
       o.topic,
       o.`partition`,
       o.next_offset,
       e.end_offset,
       CASE WHEN e.end_offset IS NULL THEN NULL ELSE GREATEST(e.end_offset - o.next_offset, 0) END AS lag,
       o.committed_at
  FROM imago_consumer_offsets o
  LEFT JOIN imago_partition_ends e ON e.topic = o.topic AND e.`partition` = o.`partition`;

-- +goose Down
DROP VIEW IF EXISTS imago_consumer_lag;
DROP TABLE IF EXISTS imago_partition_ends;
DROP TABLE IF EXISTS imago_consumer_offsets;
