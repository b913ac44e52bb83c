package migrations

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"sync"
)

// withSessionDB calls f with a *sql.DB whose only connection is conn's own session, for goose,
// which wants a *sql.DB. Apply holds conn for the migration lock; handing goose the caller's
// pool instead would need a second connection, which a pool limited to one never gives (a
// deadlock until ctx ends), and would run the migrations outside the session holding the lock.
// The session DB never closes conn's driver connection: conn goes back to its pool as usual.
func withSessionDB(conn *sql.Conn, f func(db *sql.DB) error) error {
	return conn.Raw(func(dc any) error {
		c, ok := dc.(driver.Conn)
		if !ok {
			return errors.New("migrations: the driver connection is not a database/sql/driver.Conn")
		}
		db := sql.OpenDB(&sessionConnector{c: c})
		db.SetMaxOpenConns(1)
		db.SetMaxIdleConns(1)
		defer db.Close()
		return f(db)
	})
}

// sessionConnector hands out its one driver connection once.
type sessionConnector struct {
	mu   sync.Mutex
	c    driver.Conn
	used bool
}

var errSessionLost = errors.New("migrations: the migration session's connection was dropped")

func (s *sessionConnector) Connect(context.Context) (driver.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used {
		// database/sql dropped the connection (it reported driver.ErrBadConn): the session and
		// the lock it held are gone, so no other connection may stand in for it.
		return nil, errSessionLost
	}
	s.used = true
	return &sessionConn{c: s.c}, nil
}

func (s *sessionConnector) Driver() driver.Driver { return sessionDriver{} }

type sessionDriver struct{}

func (sessionDriver) Open(string) (driver.Conn, error) {
	return nil, errors.New("migrations: the session DB opens no connection by name")
}

// sessionConn forwards to the driver connection, except Close, which leaves it open for its
// own pool. The optional interfaces fall back as database/sql expects when the driver lacks them.
type sessionConn struct{ c driver.Conn }

func (s *sessionConn) Prepare(query string) (driver.Stmt, error) { return s.c.Prepare(query) }
func (s *sessionConn) Close() error                              { return nil }

func (s *sessionConn) Begin() (driver.Tx, error) { return s.c.Begin() }

func (s *sessionConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	if p, ok := s.c.(driver.ConnPrepareContext); ok {
		return p.PrepareContext(ctx, query)
	}
	return s.c.Prepare(query)
}

func (s *sessionConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if b, ok := s.c.(driver.ConnBeginTx); ok {
		return b.BeginTx(ctx, opts)
	}
	if opts.Isolation != 0 || opts.ReadOnly {
		return nil, errors.New("migrations: the driver takes no transaction options")
	}
	return s.c.Begin()
}

func (s *sessionConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if e, ok := s.c.(driver.ExecerContext); ok {
		return e.ExecContext(ctx, query, args)
	}
	return nil, driver.ErrSkip
}

func (s *sessionConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if q, ok := s.c.(driver.QueryerContext); ok {
		return q.QueryContext(ctx, query, args)
	}
	return nil, driver.ErrSkip
}

func (s *sessionConn) CheckNamedValue(v *driver.NamedValue) error {
	if n, ok := s.c.(driver.NamedValueChecker); ok {
		return n.CheckNamedValue(v)
	}
	return driver.ErrSkip
}

func (s *sessionConn) ResetSession(ctx context.Context) error {
	if r, ok := s.c.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (s *sessionConn) IsValid() bool {
	if v, ok := s.c.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}
