package xa

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/migrations"
)

// Resource is a resource manager the coordinator can enlist: build one with MySQL, Postgres,
// Broker or OpenResource. Its methods are the coordinator's business.
type Resource interface {
	// Name is the resource's name, which is also its branches' qualifier.
	Name() string
	// Driver is "mysql", "postgres" or "broker".
	Driver() string
	rm() resourceManager
}

// resourceManager is what the coordinator needs of a resource.
type resourceManager interface {
	Resource
	// check verifies that the server can be an XA resource (version, settings).
	check(ctx context.Context) error
	// start opens a branch: XA START / BEGIN / broker XAStart, on a connection of its own.
	start(ctx context.Context, xid Xid, timeout time.Duration) (branchConn, error)
	// commit and rollback finish a prepared branch from any connection (phase 2, recovery).
	commit(ctx context.Context, xid Xid) error
	rollback(ctx context.Context, xid Xid) error
	// recover lists the prepared branches in Imago's format.
	recover(ctx context.Context) ([]Xid, error)
	close() error
}

// branchConn is one started branch on its pinned connection.
type branchConn interface {
	// db is the pinned connection of an SQL branch, its transaction begun; nil for the broker.
	db(ctx context.Context) (*sql.Conn, error)
	// exec runs one statement in an SQL branch and returns the rows it affected.
	exec(ctx context.Context, query string, args []any) (int64, error)
	// publish adds messages (broker only).
	publish(msgs []broker.TxMessage) error
	// prepare ends and prepares the branch; readOnly is the rdonly vote.
	prepare(ctx context.Context) (readOnly bool, err error)
	// commit is phase 2 on the pinned connection, or a one-phase commit of an unprepared branch.
	commit(ctx context.Context, onePhase bool) ([]broker.TopicPosition, error)
	// rollback rolls back the branch, prepared or not, on the pinned connection.
	rollback(ctx context.Context) error
	// release gives the connection back; broken discards it (the server then rolls back an
	// unprepared branch and detaches a prepared one).
	release(broken bool)
}

// OpenResource opens a database resource from configuration: driver "mysql" (also MariaDB) or
// "postgres", with its DSN. The resource owns the *sql.DB and closes it with the coordinator.
func OpenResource(name, driverName, dsn string) (Resource, error) {
	if err := ValidResourceName(name); err != nil {
		return nil, err
	}
	dialect, _ := migrations.Dialect(driverName)
	switch dialect {
	case migrations.MySQL:
		db, err := OpenMySQLDB(dsn)
		if err != nil {
			return nil, fmt.Errorf("resource %s: %w", name, err)
		}
		r := MySQL(name, db).(*mysqlRM)
		r.owned = true
		return r, nil
	case migrations.Postgres:
		db, err := OpenPostgresDB(dsn)
		if err != nil {
			return nil, fmt.Errorf("resource %s: %w", name, err)
		}
		r := Postgres(name, db).(*pgRM)
		r.owned = true
		return r, nil
	}
	return nil, fmt.Errorf("resource %s: driver %q: want mysql or postgres", name, driverName)
}

// sqlRM is what the database resource managers share: the name, the *sql.DB (closed with the
// coordinator when the resource opened it) and the one-time server check's state.
type sqlRM struct {
	name  string
	sqldb *sql.DB
	owned bool

	mu      sync.Mutex // guards checked
	checked bool
}

func (r *sqlRM) Name() string                   { return r.name }
func (r *sqlRM) err(op string, err error) error { return classify(r.name, op, err) }

func (r *sqlRM) close() error {
	if r.owned {
		return r.sqldb.Close()
	}
	return nil
}

// checkOnce runs the server check of a database resource until it succeeds once: query
// returns one value, which accept judges. A success is remembered; a failure (an unreachable
// server, an unsupported one) is tried again at the next enlistment.
func (r *sqlRM) checkOnce(ctx context.Context, query string, accept func(string) error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.checked {
		return nil
	}
	var v string
	if err := r.sqldb.QueryRowContext(ctx, query).Scan(&v); err != nil {
		return r.err("check", err)
	}
	if err := accept(v); err != nil {
		return fmt.Errorf("resource %s: %w", r.name, err)
	}
	r.checked = true
	return nil
}

// recoverRows runs a recovery query and turns each row into an Xid with decode, which
// reports false for a row of another format (skipped).
func (r *sqlRM) recoverRows(ctx context.Context, query string, args []any, decode func(*sql.Rows) (Xid, bool, error)) ([]Xid, error) {
	rows, err := r.sqldb.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, r.err("recover", err)
	}
	defer rows.Close()
	var out []Xid
	for rows.Next() {
		x, ok, err := decode(rows)
		if err != nil {
			return nil, r.err("recover", err)
		}
		if ok {
			out = append(out, x)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, r.err("recover", err)
	}
	return out, nil
}
