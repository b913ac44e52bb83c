-- Consumer offsets, partition ends and the lag view, in schema imago.
-- Idempotent on purpose (IF NOT EXISTS / OR REPLACE): see migrations.Apply.

-- +goose Up
CREATE SCHEMA IF NOT EXISTS imago;
COMMENT ON SCHEMA imago IS 'Imago messaging gateway: consumer offsets, partition ends, lag (see the Imago README)';

CREATE TABLE IF NOT EXISTS imago.consumer_offsets (
    group_name   text        NOT NULL,
    topic        text        NOT NULL,
    partition    integer     NOT NULL CHECK (partition >= 0),
    next_offset  bigint      NOT NULL CHECK (next_offset >= 0),
    committed_at timestamptz NOT NULL DEFAULT now(),
    committed_by text        NOT NULL DEFAULT '',
    PRIMARY KEY (group_name, topic, partition)
);
COMMENT ON TABLE imago.consumer_offsets IS 'Committed position of each consumer group in each topic partition. Written by the Imago offset store with group commit; next_offset never moves backwards except by an explicit `imago groups reset`.';
COMMENT ON COLUMN imago.consumer_offsets.group_name IS 'Consumer group name (case-sensitive).';
COMMENT ON COLUMN imago.consumer_offsets.topic IS 'Topic name (case-sensitive).';
COMMENT ON COLUMN imago.consumer_offsets.partition IS 'Partition number within the topic, from 0.';
COMMENT ON COLUMN imago.consumer_offsets.next_offset IS 'Offset of the next message the group will consume: every message below it is processed. Only grows (GREATEST on every commit).';
COMMENT ON COLUMN imago.consumer_offsets.committed_at IS 'Time of the last commit that wrote this row (a commit at the same offset refreshes it; a stale lower commit does not).';
COMMENT ON COLUMN imago.consumer_offsets.committed_by IS 'Member or client that made the last commit (free text, e.g. consumer id or "imago groups reset").';

CREATE TABLE IF NOT EXISTS imago.partition_ends (
    topic      text        NOT NULL,
    partition  integer     NOT NULL CHECK (partition >= 0),
    end_offset bigint      NOT NULL CHECK (end_offset >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);
COMMENT ON TABLE imago.partition_ends IS 'Readable end of each topic partition (offset after the last durable message), kept current by the broker at most once a second per partition; used by the consumer_lag view.';
COMMENT ON COLUMN imago.partition_ends.topic IS 'Topic name (case-sensitive).';
COMMENT ON COLUMN imago.partition_ends.partition IS 'Partition number within the topic, from 0.';
COMMENT ON COLUMN imago.partition_ends.end_offset IS 'Offset the next produced message will get: the partition holds offsets below it. Only grows.';
COMMENT ON COLUMN imago.partition_ends.updated_at IS 'Time the broker last reported this end (staleness of end_offset is at most about a second while the broker runs).';

CREATE OR REPLACE VIEW imago.consumer_lag AS
SELECT o.group_name,
       o.topic,
       o.partition,
       o.next_offset,
       e.end_offset,
       CASE WHEN e.end_offset IS NULL THEN NULL ELSE GREATEST(e.end_offset - o.next_offset, 0) END AS lag,
       o.committed_at
  FROM imago.consumer_offsets o
  LEFT JOIN imago.partition_ends e ON e.topic = o.topic AND e.partition = o.partition;
COMMENT ON VIEW imago.consumer_lag IS 'Who is behind: each group''s committed offset against the partition end. Example: SELECT * FROM imago.consumer_lag WHERE lag > 1000.';
COMMENT ON COLUMN imago.consumer_lag.group_name IS 'Consumer group name.';
COMMENT ON COLUMN imago.consumer_lag.topic IS 'Topic name.';
COMMENT ON COLUMN imago.consumer_lag.partition IS 'Partition number within the topic.';
COMMENT ON COLUMN imago.consumer_lag.next_offset IS 'Next offset the group will consume (imago.consumer_offsets.next_offset).';
COMMENT ON COLUMN imago.consumer_lag.end_offset IS 'Partition end reported by the broker (imago.partition_ends.end_offset); NULL if the broker never reported it.';
COMMENT ON COLUMN imago.consumer_lag.lag IS 'Messages produced but not yet consumed by the group: end_offset - next_offset, never below 0; NULL when end_offset is unknown.';
COMMENT ON COLUMN imago.consumer_lag.committed_at IS 'Time of the group''s last commit on this partition.';

-- +goose Down
DROP VIEW IF EXISTS imago.consumer_lag;
DROP TABLE IF EXISTS imago.partition_ends;
DROP TABLE IF EXISTS imago.consumer_offsets;
