-- Show every partition of a topic a group consumes, also those it never committed on: such a
-- partition has next_offset NULL and lag = end_offset (every message it ever had), so a
-- group that never read a partition shows as behind instead of being hidden.

-- +goose Up
CREATE OR REPLACE SQL SECURITY INVOKER VIEW imago_consumer_lag AS
SELECT g.group_name,
       e.topic,
       e.`partition`,
       o.next_offset,
       e.end_offset,
       GREATEST(e.end_offset - COALESCE(o.next_offset, 0), 0) AS lag,
       o.committed_at
  FROM (SELECT DISTINCT group_name, topic FROM imago_consumer_offsets) g
  JOIN imago_partition_ends e ON e.topic = g.topic
  LEFT JOIN imago_consumer_offsets o
    ON o.group_name = g.group_name AND o.topic = e.topic AND o.`partition` = e.`partition`
UNION ALL
SELECT o.group_name, o.topic, o.`partition`, o.next_offset, NULL, NULL, o.committed_at
  FROM imago_consumer_offsets o
 WHERE NOT EXISTS (SELECT 1 FROM imago_partition_ends e WHERE e.topic = o.topic AND e.`partition` = o.`partition`);

-- +goose Down
CREATE OR REPLACE SQL SECURITY INVOKER VIEW imago_consumer_lag AS
SELECT o.group_name, o.topic, o.`partition`, o.next_offset, e.end_offset,
       CASE WHEN e.end_offset IS NULL THEN NULL ELSE GREATEST(e.end_offset - o.next_offset, 0) END AS lag,
       o.committed_at
  FROM imago_consumer_offsets o
  LEFT JOIN imago_partition_ends e ON e.topic = o.topic AND e.`partition` = o.`partition`;
