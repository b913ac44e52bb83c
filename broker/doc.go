// Package broker is Imago's storage engine: topics with partitions, one shared append-only
// commit log, a dense offset index per partition, the group-commit flusher, recovery,
// retention, fetch with long-poll, and idempotent produce. It imports only the standard
// library.
//
// # Shape: one shared commit log, an index per partition
//
// Every produce request becomes one batch appended to a single commit log (RocketMQ's
// CommitLog, where Kafka and MetaQ keep a log per partition). Each partition has an index
// that maps its logical offsets 0, 1, 2… to records in that log. We chose this shape because
// of two requirements that a log per partition makes hard:
//
//   - A request whose messages span partitions must be all-or-nothing, also across a crash.
//     In one log the request is one contiguous batch with a checksummed header; recovery
//     keeps or cuts the batch whole. With a log per partition it would need a separate
//     write-ahead record and a two-step commit.
//   - One group commit must cover every partition written with as few fsyncs as possible.
//     With one log a flush is one write(2) and one fdatasync, whatever the number of
//     partitions; with a log per partition it is one fsync per partition touched.
//
// The costs: a partition's messages are interleaved with others' in the log, so a fetch reads
// through the index (nearby records are coalesced into one pread); and retention reclaims log
// space only when every topic with data in a segment has let go of it (see retention.go).
//
// # Files in the data directory
//
//	topics.json                topics, their ids and configuration (written atomically)
//	log/<position>.log         commit-log segments, named by the log position of their first byte
//	index/<topic>-<p>/<offset>.idx   index segments, named by their first offset (record.go, index.go)
//	dedupe/                    remembered idempotency keys (internal/dedupe)
//	checkpoint.json            the point up to which indexes are durable (checkpoint.go)
//	repair/                    bytes cut from a torn tail, kept for inspection
//	failmark                   after a failed write or fsync: where the restart cuts the log (failmark.go;
//	                           empty: neither it nor the cut could be recorded, the start refuses)
//	LOCK                       flock: one process per data directory
//
// # Durability and visibility
//
// With fsync "always" (the default) a produce is acknowledged only after the fdatasync that
// covers its batch, and a partition's readable end moves only after that fsync: no reader
// ever sees a message that a crash could take back (as in MetaQ). The flusher (flusher.go) is
// the only writer; while it waits on the disk, new requests queue, and the next round writes
// them all with one write and one fsync. With "interval:<d>" requests are acknowledged after
// write(2) and become readable after the next periodic fsync; with "never" both happen after
// write(2).
//
// Recovery (recovery.go) replays only the log after the last checkpoint, verifying each batch
// record by record and cutting a torn tail, so start-up time depends on the checkpoint
// interval, not on the size of the log. It fdatasyncs what it replayed before serving any of
// it: after a kill -9 in fdatasync the page cache may hold a batch no fsync covered, and a
// retry answered "duplicate" must never rest on it. An unreadable checkpoint.json stops
// start-up with an error naming it (it is never taken for "no checkpoint", which would open
// the idempotency store empty); moving it aside rebuilds every index from the log.
package broker
