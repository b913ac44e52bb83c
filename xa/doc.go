// Package xa owns Imago's XA coordinator: one global transaction over MySQL/MariaDB,
// PostgreSQL and the broker, committed with two-phase commit.
//
// # Model
//
// A Coordinator knows a fixed set of named resources (MySQL/MariaDB databases, PostgreSQL
// databases and at most one broker). Begin opens a GlobalTx; Enlist returns the branch of a
// resource, on which the application runs its own SQL (Exec, Query, QueryRow); Publish adds
// messages to the broker's branch. Each SQL branch is pinned to one connection from its first
// statement (XA START / BEGIN) until its phase 2, so its statements are one database
// transaction. Commit runs the protocol:
//
//  1. a branch that did nothing is never started and costs nothing;
//  2. when only one branch has work (and the transaction has no client id) it commits in
//     one phase (XA COMMIT … ONE PHASE, COMMIT, or the broker's one-phase commit);
//  3. otherwise (and only while the decision log has not failed) a "preparing" record is
//     queued to the decision log (not waited for: presumed abort does not need it; it only
//     lets a restart roll back at once instead of after the grace period), every branch is prepared
//     (XA END + XA PREPARE, PREPARE TRANSACTION, broker prepare); a read-only vote (rdonly)
//     takes a branch out of phase 2; any failed prepare rolls everything back;
//  4. the "commit" decision is appended to the decision log and fsync'd before the first
//     phase-2 commit; then every branch is committed; "done" is recorded once every branch
//     answered.
//
// A branch that cannot be committed at once (a database restarting) stays prepared; the
// recovery loop, which runs at start-up and every Options.RecoveryInterval, finishes it.
//
// # Round trips
//
// A MySQL/MariaDB resource built on a pool from OpenMySQLDB keeps each connection's prepared
// statements and ends and prepares a branch with one "XA END x; XA PREPARE x" text; a
// PostgreSQL branch sends BEGIN in one pipeline with its first Exec, and Branch.ExecPrepare
// (which the HTTP API uses for the last step on a resource of a two-phase transaction) sends a
// branch's last statement and its PREPARE TRANSACTION in one pipeline too (prepare_early.go).
// With one statement per database that is 4 round trips to MariaDB (SET wait_timeout and XA
// START; the statement; XA END and XA PREPARE; XA COMMIT) and 2 to PostgreSQL (BEGIN, the
// statement and PREPARE TRANSACTION; COMMIT PREPARED) per global transaction, against 5 and 4
// for the bare two-phase cycles (TestRoundTripsPerGlobalTransaction counts them). Each phase,
// and a rollback, runs its branches in parallel, the last one on the caller's goroutine
// (inParallel): with decisions in the commit log, a transaction over MariaDB, PostgreSQL and
// the broker starts one goroutine (a phase-2 commit); with the file log, three.
//
// # The decision log
//
// By default a group-committed file in Options.Dir (declog.go); with Options.DecisionDB, a
// table in that database (declog_sql.go), written by the same rules: one writer, one
// transaction per batch, durable (committed) before appendSync returns. A write whose outcome
// is unknown fails the log: no transaction prepares meanwhile (it rolls back with the code
// decision_log_failed) and Ping, hence /readyz, reports it. The file log stays failed until a
// restart reads it back (after a failed fsync the process cannot know what the file holds).
// The table heals in the process (declog_sql_heal.go): once its database answers again, the
// writer ends the session of the write, reads the rows of the records in question back on a
// new one, writes the rollback decision of each commit decision it does not find, and
// un-fails; recovery then turns each transaction left in_doubt with decision_log_failed into
// committing or rolling back and finishes it, as after a restart. A commit decision that
// certainly was not written is a rollback. Resolve takes effect once its record is durable.
//
// With Options.DecisionBroker the log is the broker's commit log (declog_broker.go): decision
// batches the broker fsyncs with its other writes, rebuilds at recovery and keeps through
// retention. The broker branch is then never prepared: its commit batch carries the commit
// decision (broker.XACommitDecided), one write and one fsync for both. The records nobody
// waits for ("preparing", "done") are held back up to lazyDelay and written together, and a
// decided commit drops its own transaction's held "preparing" record (settleBarrier).
//
// Every log keeps the first decision for a gtrid (declog_first.go): a later, different one is
// refused and logged. Every outcome is recorded before it is acted on, presumed abort included.
//
// # Xids
//
// Every branch has an Xid in Imago's format (xid.go): format id 0x494D4731 ("IMG1"), a
// 40-character ASCII gtrid made of the coordinator's node id (16 hex digits) and the
// transaction's own id (24 hex digits), and the resource's name as the branch qualifier.
// MySQL receives it as hex literals (X'…',X'…',1229801265), PostgreSQL as a gid of hex digits and
// underscores only. Recovery acts only on Xids of this format and of its own node id, so
// coordinators with different node ids may share databases; a lease on the node id in every
// database (lease.go) refuses a second live coordinator with the same one.
//
// # Recovery and presumed abort
//
// Recovery scans every resource (XA RECOVER, pg_prepared_xacts filtered by database, the
// broker's XARecover) and: commits branches whose transaction has a commit decision; rolls
// back branches whose transaction has a rollback decision; rolls back branches with no
// decision once they have been seen for Options.Grace (presumed abort), never while their
// transaction is still running in this process. A phase-2 commit answered XAER_NOTA counts as
// done only when a commit was already sent for that branch; otherwise the transaction is
// marked in_doubt and waits for an operator's Resolve.
//
// # Client ids
//
// BeginOptions.ID makes a transaction idempotent: Begin with an id that is known returns a
// *DuplicateError carrying the first attempt's outcome (waiting for it when it is still
// running). Such transactions always use two-phase commit, so that the commit decision (which
// carries the id) is durable before anything commits: a repeat after a crash can never run
// the work twice. Finished transactions are remembered for Options.Retention.
//
// BeginOptions.Digest names the work done under an id; a repeat with another digest is
// refused (ErrIDReused) rather than answered for work that never ran. Every decision record of
// the transaction carries the digest's SHA-256 (record version 2, declog_record.go), so the
// check survives a restart and reaches a cluster's new leader with the replicated decisions.
// Records written before digests were recorded (version 1) decode with none: a repeat of their
// ids is answered as a duplicate whatever its digest.
package xa
