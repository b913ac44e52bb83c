// Package offsetdb stores consumer offsets: for each consumer group, topic and
// partition, the offset of the next message the group will consume ("next
// offset"; every message below it has been processed).
//
// # Model
//
// An offset only moves forward. Every store keeps the greater of the stored and
// the committed value, atomically where the value lives: GREATEST in an upsert
// (PostgreSQL: INSERT ... ON CONFLICT DO UPDATE, MySQL/MariaDB: INSERT ... ON
// DUPLICATE KEY UPDATE), a versioned compare-and-set in ZooKeeper, and the
// store's lock in the file store. A late or replayed commit of a lower offset
// is therefore harmless: it is acknowledged and changes nothing. The single
// exception is Store.Reset, the operator's `imago groups reset`, which sets
// the offset to any value, backwards included.
//
// # Group commit
//
// Open puts a Batcher in front of every store. Commit calls from any number of
// goroutines wait in a queue; a flusher goroutine takes everything waiting
// (up to GroupCommitConfig.MaxBatch offsets), coalesces it to the highest
// offset per (group, topic, partition), sorts the keys, and writes them in one
// database transaction with one multi-row upsert. Sorting makes every flusher,
// in every process, lock rows in the same order, so concurrent flushes cannot
// deadlock on each other. Two flushers (GroupCommitConfig.Flushers) overlap one
// flush's database commit with the next batch; the second starts only once as
// many offsets wait as the running flush carries (or it finished), so that
// flushes running together stay even instead of splitting the committers into
// ever smaller transactions. A flush needs
// no timer (natural batching: no added latency when idle, bigger batches under
// load); with MaxDelay > 0 it waits up to MaxDelay for more commits. One wait
// is built in: right after a flush, with no other running, the next one waits
// for the commits that flush released to come back (consumers commit again
// within microseconds), at most half that flush's duration and
// GroupCommitConfig.Regather (1ms). Without it the first committer to return
// was flushed alone and the others a moment later: two transactions, two WAL
// flushes, for one round of committers; with it N committers settle into
// flushes of N rows, the shape the database absorbs fastest. Commit
// returns only after the flush that holds it succeeded; a failed flush returns
// its error to every commit in it. A flush whose connection the PostgreSQL server
// ended (a restart, pg_terminate_backend, a failover) runs once more on a new
// connection, after the pool dropped its other connections, which are as dead:
// the upsert only moves offsets forward, so running it twice is harmless, and the
// commits are acknowledged only once it succeeded. (The MySQL store gets this
// from go-sql-driver, which checks a pooled connection before its first statement,
// and database/sql, which then takes another.)
//
// The CPUs are shared with the database on a small machine, so the batcher
// keeps its own work per commit small: an idle flusher is woken once, when a
// flush may start, not by every commit that joins the queue; the commits of a
// flush share one channel, closed once; the flush sorts a permutation of its
// batch, and the SQL stores take the sorted rows as they are. `imago bench
// offsets` measures group commit against the database's ceiling (what it
// absorbs with as many offsets in flight and no client in between), the two
// in alternation so that both see the same load.
//
// # Stores
//
//	file       the embedded default: an append-only log in the data directory
//	           (offsets.log), one fsync per flush, compacted by atomic replace
//	postgres   table imago.consumer_offsets, pgx v5 pool
//	mysql      table imago_consumer_offsets, database/sql and go-sql-driver/mysql
//	zookeeper  znodes <root>/consumers/<group>/offsets/<topic>/<partition>
//
// The SQL tables are created by package migrations (Config.Migrate applies them
// at Open). They are meant to be read by people: `SELECT * FROM
// imago.consumer_lag WHERE lag > 1000` answers "who is behind"; PartitionEnds
// keeps imago.partition_ends current so that the lag view works.
//
// Transactional consume (the side effect and the offset in one transaction of
// the application's database) uses CommitTx or CommitPgxTx with the
// application's own transaction instead of a Store.
package offsetdb
