// Package outbox owns Imago's transactional outbox: the helpers an application uses to write
// messages into an outbox table inside its own database transaction (Write, Writer), and the
// relay that moves committed rows into their topics exactly once, in order (Relay).
//
// # The model
//
// The application inserts outbox rows in the same transaction as its business data, so a
// message exists if and only if the transaction committed. The relay, one per source (an
// outbox table in one database, named in the configuration), repeats:
//
//  1. claim the next batch of rows in commit order and record the batch's end in the relay's
//     state row (imago.outbox_relay / imago_outbox_relay) before publishing;
//  2. publish the batch, one produce request per topic, with the idempotency key
//     "outbox:<source>:<first row id of the topic's group>";
//  3. in one database transaction: delete (or, in mark mode, stamp relayed_at on) the batch's
//     rows, move the cursor past them, and claim the next batch.
//
// A crash anywhere leaves either the cursor before the batch with its claim recorded (the next
// relay republishes exactly the same groups under the same keys: the broker answers
// "duplicate" and appends nothing) or the cursor after it. The broker keeps idempotency keys
// for its dedupe window (24 h by default, across restarts), so a relay that stays down longer
// than that with a claimed batch could publish it twice; a relay restarts in seconds.
//
// Per-key order: batches are published one after the other and a produce request keeps its
// messages' order, so a key's messages reach their partition (hash of the key) in outbox order.
//
// # Commit order in PostgreSQL
//
// Ids from a sequence are handed out at INSERT and may commit out of order: a relay that
// followed ids would skip a row whose transaction committed after a higher id was published.
// Each row therefore records its transaction id (txid xid8 DEFAULT pg_current_xact_id()), and
// the relay takes, in (txid, id) order, only rows with txid < pg_snapshot_xmin(pg_current_snapshot()):
// every transaction below the snapshot's xmin has ended, and any transaction that starts
// later gets a larger id, so no row can ever appear before the cursor. Rows of a transaction
// still open wait (and hold back rows of later transactions) until it ends, so a long-running
// transaction anywhere in the cluster delays the relay, never loses a row.
//
// Outbox order is (txid, id): transactions ordered by the moment they first wrote. For two
// transactions that do not overlap this is their commit order. An application that writes one
// key from overlapping transactions must order them itself (for example by locking the
// account row as the transaction's first write).
//
// # What the PostgreSQL relay waits on
//
// A committed row is published once three waits are over, and the relay waits on nothing else:
//
//  1. The snapshot xmin: every transaction of the cluster (all its databases) that had a
//     transaction id before the row's transaction wrote must have ended. That is usually a
//     writer's own neighbours, a millisecond or two; a long transaction anywhere, or a
//     prepared transaction left behind, holds every later row back for as long as it stays
//     open (look in pg_stat_activity for the oldest backend_xid, and in pg_prepared_xacts).
//  2. The relay's next read. Writers send no signal, so the relay reads the table on a
//     cadence: while rows keep coming, one read every MinPoll (10 ms), or at once after a
//     full batch (a backlog drains at full speed); after a read that finds nothing it waits
//     MinPoll, then twice as long each time, up to MaxPoll (200 ms); while committed rows
//     wait for the xmin, at most 10 ms apart during the first second. A row committed into a
//     steady stream waits up to MinPoll for its read; the first row after a quiet period up
//     to MaxPoll.
//  3. The batch in flight: batches are published one after the other (per-key order), each
//     costing the broker's fsync'd append. After publishing a batch that was not full the
//     relay waits until MinPoll after its read, reads the next batch, and then completes the
//     published one (deletes its rows, moves the cursor) and claims the next in one
//     transaction, so a steady stream costs one read and one transaction per batch; only the
//     first batch after a read that found nothing records its claim in a transaction of its
//     own. Published rows thus stay in the table until the next read.
//
// What the relay costs the database is therefore per batch, not per row. At 2,000 writes/s
// it reads and completes 70-93 batches a second; reading again at once after each batch and
// 2 ms after an empty read (before) it completed up to 145 batches of 7-11 rows, and its
// session took 25-30% of the server CPU the writers' sessions took, now 15-22% (a batch
// costs PostgreSQL about 1 ms of CPU, a writer's one-row transaction 0.35-0.55 ms).
// Every query is a short range of the (txid, id) index or a few primary keys, written so
// that no plan can turn it into a scan of the table: a queue table is mostly deleted rows
// between two vacuums and its statistics say little. The check for rows not yet final reads
// the index in order with LIMIT 1 (as EXISTS it was planned as a sequential scan of the
// whole heap, 3 ms per empty read on 60 MB), and the relay's session runs without parallel
// workers (the backlog count, every BacklogEvery, was planned as a parallel scan that
// started two worker processes and held the relay for 85 ms: the p99 of 130-530 ms at
// 2,000 writes/s). imago_outbox_reads_total{result} and imago_outbox_batches_total show the
// relay's rate.
//
// Writers do not NOTIFY, because PostgreSQL serializes the commits of every transaction that
// issued NOTIFY (a cluster-wide lock taken before the commit record and released after its
// flush), so concurrent writers commit one WAL flush at a time: four writers on a 2-core
// machine reached 450 to 1,200 commits/s with a NOTIFY trigger and 1,240 to 2,430 without, in
// the same runs. And PostgreSQL refuses PREPARE TRANSACTION after NOTIFY, so a two-phase
// branch could not write the outbox. The migrations attach no trigger; imago.outbox_notify()
// remains for an operator who wants the early wake-up on a low-rate table and accepts both
// costs: the relay LISTENs on imago_outbox and a notification ends its wait at once.
//
// # Commit order in MySQL and MariaDB
//
// InnoDB has no usable transaction id in the row, so the relay follows AUTO_INCREMENT ids and
// treats a missing id (a gap) with care. Ids are allocated in increasing order at INSERT, so a
// transaction that can still fill a gap below the highest id seen was already open when that
// id was read. The relay publishes the contiguous run of ids after its cursor at once. When it
// sees a gap it reads MAX(id), then opens a sentinel transaction on a new session that takes
// an InnoDB transaction id (a locking read of a state-table key no source has: its intention
// lock on the table makes the transaction read-write), and reads
// information_schema.innodb_trx until a view shows the sentinel with its trx_id. That table
// is a cache InnoDB refreshes only when nobody has read it for 100 ms, so one session reading
// it faster (a monitoring agent, another relay on the server) freezes it; a view that shows
// the sentinel is younger than the MAX(id) read, one that does not is stale and is read again
// later (above 100 ms apart, with growing jitter), for as long as it takes: the relay stalls,
// it never passes a gap on a stale view, and warns after 30 s. From the fresh view it takes
// the transactions that may have written (rows modified, locks held, or a statement running)
// and are not younger than the sentinel, named by (trx_mysql_thread_id, trx_started) because
// a transaction's trx_id appears only when it first writes. The order is InnoDB's, not a
// clock's: trx_id comes from one counter that only grows, so one below the sentinel's began
// writing before MAX(id) was read and is always waited for, however the database server's
// clock was stepped. One with a larger trx_id, or none yet, is younger only if it also started
// after the sentinel by trx_started (the sentinel's, read off the same clock), and by no more
// than the time that really passed: an INSERT that is its transaction's first write allocates
// its id before InnoDB gives the transaction a trx_id, so for a transaction caught between the
// two only its start tells its age. An idle read-only transaction holds no id and is not waited
// for. Once every one of them has ended, the check looks a second time: an INSERT that is its
// transaction's first operation allocates its id before InnoDB lists the transaction in
// innodb_trx at all, so a writer descheduled in that instant (a loaded host, a CPU quota) can
// be missing from the fresh view. Options.GapSettle (default 1 s) after the MAX(id) read the
// check opens a second sentinel, reads a fresh view again and waits in the same way for the
// transactions that are not younger than that sentinel: a writer listed by then is caught; only
// one kept off the CPU for longer than GapSettle between allocating its id and being listed
// could still be missed. Once those have ended too, every id up to the highest one seen is
// final: a re-read (a fresh read view) shows each row that was committed, and a gap still there
// belongs to a rolled-back transaction (or a failed insert) and is passed, GapSettle or more
// after it was seen. A gap that its writer's commit fills is dropped at the re-read that shows
// the row and never waits for the second look. Rows after a gap thus wait for the writers that
// were open when it was seen (a gap nobody fills also for those open at the second look), never
// for later ones. A prepared XA transaction that wrote is waited for like any other. Reading
// innodb_trx needs the PROCESS privilege; without it the relay falls back to passing a gap once
// it is older than Options.GapGrace (default 1 minute), which is safe only when no writing
// transaction lasts that long, and logs a warning.
//
// Completing a batch deletes (or marks) exactly the ids it published and checks the count,
// then looks for any row left inside the batch's id range: one there committed after its gap
// was judged final (the GapGrace fallback, or a row inserted with an explicit id). The relay
// then stops the source (ErrStrayRows) with the row in place, rather than remove it or leave
// it below the cursor unpublished; docs/outbox.md says what the operator does. A batch whose
// range had ids missing is read again 10 s, 1 min and 10 min after its completion, so a row
// that commits there later (the writer missed by both looks) stops the source too; a relay
// that starts on a source or takes it over reads the whole range below the cursor on the same
// schedule, so that what an earlier process completed is looked at again too (mysql_late.go).
//
// The relay reads MySQL on the same cadence as PostgreSQL: a batch every MinPoll while rows
// keep coming (at once after a full one), doubling the wait while idle up to MaxPoll. Its
// session runs READ COMMITTED (the completing DELETE takes no gap lock, so it never blocks an
// insert) and prepares each of its statements once: a statement with arguments would
// otherwise cost go-sql-driver a prepare, an execute and a close every time, and a batch's
// read and completion took 13 round trips instead of 7.
//
// # One relay per source
//
// A relay works only while it holds the source's advisory lock (pg_try_advisory_lock or
// GET_LOCK), taken on the same dedicated connection it does its work on: if that session dies,
// the lock is released and the relay stops touching the outbox at once. Standby relays retry
// every LockRetry and take over; the claim recorded in the state row makes the takeover
// republish the interrupted batch under the same keys. The lock guards the source's state
// row, one per source name in a database: PostgreSQL advisory locks belong to one database,
// and GET_LOCK names, which are server-wide, hold the database ("imago.outbox/<database>/
// <source>", hashed past 64 characters). A MySQL relay also takes the name relays of earlier
// versions locked, "imago.outbox/<source>", while it is free, and waits while a session of
// its own database holds it, so that an older relay of the same outbox never runs beside it.
//
// A relay that hangs, or whose host dies without closing its connection, would keep a session
// the server believes alive (for about two hours of default TCP keepalive). The relay's
// session therefore carries a timeout (Options.SessionTimeout, 15 s): MySQL wait_timeout and
// net_read/write_timeout, PostgreSQL idle_session_timeout, idle_in_transaction_session_timeout,
// tcp_user_timeout and TCP keepalives. The relay issues a statement at least every MaxPoll and
// pings while it publishes, so only a relay that stopped running loses its session; a standby
// takes over within SessionTimeout + LockRetry (16 s with the defaults, always under 30 s
// with SessionTimeout at most 25 s). A relay that wakes up finds its session gone and
// reconnects as a standby.
//
// # Failover, restore and the epoch
//
// The idempotency keys hold the source name and row ids, and row ids are only unique within
// one history of the outbox. After an asynchronous failover or a point-in-time restore the
// cursor can be older than what was published and rows can be rebuilt under used ids: the
// broker answers idempotency_key_reused and the relay stops (ErrKeyReused), logging the
// operator command that raises the source's epoch (a column of the state row); from epoch 1
// on the keys read "outbox:<source>:e<epoch>:<first row id>", so rebuilt batches no longer
// collide. Raising it is the operator's decision, not the relay's: rows published before the
// regression and present again are then published twice (nothing is lost), and in a payment
// system someone should know. A relay process that completed batches past the cursor it then
// loads logs a warning at once.
//
// PostgreSQL cursors are transaction ids of one cluster. The state row stores the cluster's
// system identifier (pg_control_system()) with the cursor; a relay on another cluster (a
// restored dump, a logical replication cutover), or whose cursor's transaction id is beyond
// any the cluster has handed out, refuses to run (ErrSourceMoved) and logs the command that
// resets the cursor in a new epoch. docs/outbox.md is the operator's runbook.
package outbox
