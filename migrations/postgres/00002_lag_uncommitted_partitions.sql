-- Show every partition of a topic a group consumes, also those it never committed on: such a
-- partition has next_offset NULL and lag = end_offset (every message it ever had), so a
-- group that never read a partition shows as behind instead of being hidden.

-- +goose Up
DROP VIEW IF EXISTS imago.consumer_lag;
CREATE VIEW imago.consumer_lag AS
SELECT g.group_name,
       e.topic,
       e.partition,
       o.next_offset,
       e.end_offset,
       GREATEST(e.end_offset - COALESCE(o.next_offset, 0), 0) AS lag,
       o.committed_at
  FROM (SELECT DISTINCT group_name, topic FROM imago.consumer_offsets) g
  JOIN imago.partition_ends e ON e.topic = g.topic
  LEFT JOIN imago.consumer_offsets o
    ON o.group_name = g.group_name AND o.topic = e.topic AND o.partition = e.partition
UNION ALL
SELECT o.group_name, o.topic, o.partition, o.next_offset, NULL, NULL, o.committed_at
  FROM imago.consumer_offsets o
 WHERE NOT EXISTS (SELECT 1 FROM imago.partition_ends e WHERE e.topic = o.topic AND e.partition = o.partition);
COMMENT ON VIEW imago.consumer_lag IS 'Who is behind: for every group and every partition of the topics it consumes, its committed offset against the partition end. Example: SELECT * FROM imago.consumer_lag WHERE lag > 1000.';
COMMENT ON COLUMN imago.consumer_lag.group_name IS 'Consumer group name.';
COMMENT ON COLUMN imago.consumer_lag.topic IS 'Topic name.';
COMMENT ON COLUMN imago.consumer_lag.partition IS 'Partition number within the topic.';
COMMENT ON COLUMN imago.consumer_lag.next_offset IS 'Next offset the group will consume (imago.consumer_offsets.next_offset); NULL if the group never committed on this partition.';
COMMENT ON COLUMN imago.consumer_lag.end_offset IS 'Partition end reported by the broker (imago.partition_ends.end_offset); NULL if the broker never reported it.';
COMMENT ON COLUMN imago.consumer_lag.lag IS 'Messages produced but not yet consumed by the group: end_offset - next_offset (end_offset when the group never committed here), never below 0; NULL when end_offset is unknown.';
COMMENT ON COLUMN imago.consumer_lag.committed_at IS 'Time of the group''s last commit on this partition; NULL if never.';

-- +goose Down
DROP VIEW IF EXISTS imago.consumer_lag;
CREATE VIEW imago.consumer_lag AS
SELECT o.group_name, o.topic, o.partition, o.next_offset, e.end_offset,
       CASE WHEN e.end_offset IS NULL THEN NULL ELSE GREATEST(e.end_offset - o.next_offset, 0) END AS lag,
       o.committed_at
  FROM imago.consumer_offsets o
  LEFT JOIN imago.partition_ends e ON e.topic = o.topic AND e.partition = o.partition;
