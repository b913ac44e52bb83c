package xa

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/imagomq/imago/migrations"
)

// The node lease. Two live coordinators with one node id (a node id shared through the
// configuration, each coordinator with a directory of its own) would each presume abort on
// the other's prepared branches. So a coordinator holds a lease on its node id in every
// database it acts on: a session-level advisory lock (PostgreSQL pg_try_advisory_lock, per
// database; MySQL/MariaDB GET_LOCK, per server) on a connection of its own, taken at Open and
// held until Close. The databases are where the harm would happen, so they are the right
// judges: two coordinators that share no database cannot hurt each other, whatever their ids.
//
//   - Open takes it in the decision table's database (if any) and in every database resource.
//     Held by another session: Open fails with ErrNodeInUse. A database that cannot be reached
//     is logged, and its lease is taken by the first recovery pass that reaches it.
//   - Every recovery pass checks each lease first (its connection still answers) and takes it
//     again if its session was lost (a database restart ends it). Recovery does not touch a
//     resource whose lease it does not hold; a decision table whose lease another session took
//     fails the decision log (no transaction prepares any more, /readyz answers 503).
//   - Two resources on one database (same server identity) share one lease.
//   - The lock ends with its session: a coordinator that crashed frees its node id as soon as
//     the database notices the connection is gone.
//
// The directory lock (Dir/LOCK) still keeps two coordinators off one directory.

// leaseRetry is how long Open keeps trying a lease held by another session: the session of
// a coordinator that just exited (a restart) may take a moment to end on the server.
const leaseRetry = 2 * time.Second

// leaseKeyDecisions is the leases key of the decision table's database.
const leaseKeyDecisions = "\x00decision log"

type leaseSet struct {
	node string
	log  *slog.Logger

	mu    sync.Mutex
	held  []*dbLease
	byKey map[string]*dbLease // resource name (or leaseKeyDecisions) → its lease
}

// dbLease is the lock held by one session of one database.
type dbLease struct {
	dialect  string
	identity string // the database as its server names it (where the lock applies)
	conn     *sql.Conn
}

func newLeaseSet(node string, log *slog.Logger) *leaseSet {
	return &leaseSet{node: node, log: log, byKey: map[string]*dbLease{}}
}

// lockName is the MySQL lock's name (at most 64 characters).
func (s *leaseSet) lockName() string { return "imago_xa_node_" + s.node }

// lockKey is the PostgreSQL advisory lock's key.
func (s *leaseSet) lockKey() int64 {
	h := fnv.New64a()
	h.Write([]byte("imago.xa.node:" + s.node))
	return int64(h.Sum64())
}

// hold makes sure the lease of key (a resource name, or leaseKeyDecisions) on db is held: the
// session holding it still answers, or it is taken now. A lock held by another session is an
// error wrapping ErrNodeInUse.
func (s *leaseSet) hold(ctx context.Context, key string, db *sql.DB, dialect string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.byKey[key]; l != nil {
		if l.conn.PingContext(ctx) == nil {
			return nil
		}
		s.log.Warn("xa node lease: its session is gone; taking it again", "node", s.node, "resource", leaseName(key))
		s.drop(l)
	}
	dialect, _ = migrations.Dialect(dialect)
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("node lease in %s: %w", leaseName(key), err)
	}
	identity, err := leaseIdentity(ctx, conn, dialect)
	if err != nil {
		conn.Close()
		return fmt.Errorf("node lease in %s: %w", leaseName(key), err)
	}
	for _, l := range s.held {
		if l.identity == identity && l.conn.PingContext(ctx) == nil {
			conn.Close()
			s.byKey[key] = l
			return nil
		}
	}
	granted, err := s.tryLock(ctx, conn, dialect)
	if err != nil {
		conn.Close()
		return fmt.Errorf("node lease in %s: %w", leaseName(key), err)
	}
	if !granted {
		conn.Close()
		return fmt.Errorf("%w: node id %s is in use: another coordinator holds its lease in %s (%s); give each coordinator its own node id, or wait for the other to stop",
			ErrNodeInUse, s.node, leaseName(key), identity)
	}
	l := &dbLease{dialect: dialect, identity: identity, conn: conn}
	s.held = append(s.held, l)
	s.byKey[key] = l
	return nil
}

// holdAtOpen is hold, tried again for up to leaseRetry while another session holds the lock.
func (s *leaseSet) holdAtOpen(ctx context.Context, key string, db *sql.DB, dialect string) error {
	deadline := time.Now().Add(leaseRetry)
	for {
		err := s.hold(ctx, key, db, dialect)
		if !errors.Is(err, ErrNodeInUse) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return err
		}
	}
}

func (s *leaseSet) tryLock(ctx context.Context, conn *sql.Conn, dialect string) (bool, error) {
	if dialect == migrations.Postgres {
		var ok bool
		err := conn.QueryRowContext(ctx, "SELECT pg_try_advisory_lock($1)", s.lockKey()).Scan(&ok)
		return ok, err
	}
	var got sql.NullInt64
	err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, 0)", s.lockName()).Scan(&got)
	return got.Valid && got.Int64 == 1, err
}

// leaseIdentity names the scope of the lock: a PostgreSQL database, a MySQL server.
func leaseIdentity(ctx context.Context, conn *sql.Conn, dialect string) (string, error) {
	var id string
	q := "SELECT CONCAT('mysql ', @@hostname, ':', @@port)"
	if dialect == migrations.Postgres {
		q = "SELECT 'postgres ' || coalesce(host(inet_server_addr()), 'local') || ':' || coalesce(inet_server_port()::text, '') || '/' || current_database()"
	}
	err := conn.QueryRowContext(ctx, q).Scan(&id)
	return id, err
}

// drop forgets l (its session is gone, or the set is released) and discards its connection.
func (s *leaseSet) drop(l *dbLease) {
	for k, v := range s.byKey {
		if v == l {
			delete(s.byKey, k)
		}
	}
	for i, v := range s.held {
		if v == l {
			s.held = append(s.held[:i], s.held[i+1:]...)
			break
		}
	}
	// The connection is discarded, not returned to the pool: its session ends, and so does the
	// lock if it still exists.
	discardConn(l.conn)
}

// release unlocks and drops every lease (Close).
func (s *leaseSet) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.held) > 0 {
		l := s.held[0]
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if l.dialect == migrations.Postgres {
			_, _ = l.conn.ExecContext(ctx, "SELECT pg_advisory_unlock($1)", s.lockKey())
		} else {
			_, _ = l.conn.ExecContext(ctx, "SELECT RELEASE_LOCK(?)", s.lockName())
		}
		cancel()
		s.drop(l)
	}
}

func leaseName(key string) string {
	if key == leaseKeyDecisions {
		return "the decision table's database"
	}
	return "resource " + key
}

// pool is a database resource's *sql.DB (the lease is taken there).
func (r *sqlRM) pool() *sql.DB { return r.sqldb }

// holdLease checks the lease of a database resource (the broker needs none: it is this
// process's) or, with leaseKeyDecisions, of the decision table's database.
func (c *Coordinator) holdLease(ctx context.Context, key string) error {
	if key == leaseKeyDecisions {
		if _, known := migrations.Dialect(c.opts.DecisionDialect); !known || c.opts.DecisionDB == nil {
			return nil
		}
		return c.leases.hold(ctx, key, c.opts.DecisionDB, c.opts.DecisionDialect)
	}
	p, ok := c.rms[key].(interface{ pool() *sql.DB })
	if !ok {
		return nil
	}
	return c.leases.hold(ctx, key, p.pool(), c.rms[key].Driver())
}

// takeLeases takes the node lease at Open: in the decision table's database (any failure
// stops Open) and in every database resource (held by another session stops Open; a database
// that cannot be reached is logged and left to recovery).
func (c *Coordinator) takeLeases(ctx context.Context) error {
	c.leases = newLeaseSet(c.node, c.log)
	// An unknown dialect is openLog's error to report.
	if _, known := migrations.Dialect(c.opts.DecisionDialect); known && c.opts.DecisionDB != nil {
		if err := c.leases.holdAtOpen(ctx, leaseKeyDecisions, c.opts.DecisionDB, c.opts.DecisionDialect); err != nil {
			return fmt.Errorf("open coordinator: %w", err)
		}
	}
	for _, name := range c.order {
		p, ok := c.rms[name].(interface{ pool() *sql.DB })
		if !ok {
			continue
		}
		err := c.leases.holdAtOpen(ctx, name, p.pool(), c.rms[name].Driver())
		if errors.Is(err, ErrNodeInUse) {
			c.leases.release()
			return fmt.Errorf("open coordinator: %w", err)
		}
		if err != nil {
			c.log.Warn("xa node lease: resource not reachable at start-up; recovery takes the lease before it touches the resource", "resource", name, "err", err)
		}
	}
	return nil
}

// checkLeases runs at the start of a recovery pass: a decision table whose lease another
// session holds fails the decision log (this coordinator must not decide any more).
func (c *Coordinator) checkLeases(ctx context.Context) {
	if err := c.holdLease(ctx, leaseKeyDecisions); errors.Is(err, ErrNodeInUse) {
		c.dlog.fail(err)
	} else if err != nil {
		c.log.Warn("xa node lease: decision table's database not reachable", "err", err)
	}
}
