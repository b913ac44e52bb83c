package xa

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"

	"github.com/go-sql-driver/mysql"
)

// stmtCacheSize bounds the server-side prepared statements one connection keeps. A
// coordinator runs a handful of configured operations, so the bound is rarely reached; when
// it is, the least recently used statement is closed.
const stmtCacheSize = 64

// OpenMySQLDB opens a connection pool for a MySQL/MariaDB resource, tuned for XA branches:
//
//   - A statement with arguments runs as a server-side prepared statement that the
//     connection keeps (up to 64, least recently used closed first). go-sql-driver on its
//     own prepares, executes and closes the statement each time: three packets and two
//     round trips where one suffices. Arguments stay bound parameters; nothing is
//     interpolated into SQL text.
//   - Multi-statement text is enabled, so that a branch ends and prepares in one round trip
//     ("XA END x; XA PREPARE x", both built from the xid's hex literal, never from input).
//
// MySQL and OpenResource use it; a *sql.DB opened elsewhere still works with MySQL, without
// these savings.
func OpenMySQLDB(dsn string) (*sql.DB, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		// The parse error may quote the DSN, password included: do not wrap it.
		return nil, errors.New("cannot parse the MySQL DSN")
	}
	cfg.MultiStatements = true
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("mysql connector: %w", err)
	}
	return sql.OpenDB(cachingConnector{conn}), nil
}

// cachingConnector makes connections that keep their prepared statements.
type cachingConnector struct{ driver.Connector }

func (c cachingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	if _, ok := conn.(fullConn); !ok {
		return conn, nil // a driver version without one of the interfaces: no cache
	}
	return &cachingConn{Conn: conn, stmts: make(map[string]*cachedStmt)}, nil
}

// cachingConn is one go-sql-driver connection with a statement cache. database/sql uses a
// connection from one goroutine at a time, so the cache needs no lock.
type cachingConn struct {
	driver.Conn
	stmts map[string]*cachedStmt
	tick  uint64
}

// fullConn is what go-sql-driver's connection implements and cachingConn forwards.
type fullConn interface {
	driver.Conn
	driver.ExecerContext
	driver.QueryerContext
	driver.ConnPrepareContext
	driver.ConnBeginTx
	driver.Pinger
	driver.SessionResetter
	driver.Validator
	driver.NamedValueChecker
}

type cachedStmt struct {
	stmt driver.Stmt
	used uint64
}

// stmt returns the prepared statement for query, preparing it on first use.
func (c *cachingConn) stmt(ctx context.Context, query string) (driver.Stmt, error) {
	c.tick++
	if s, ok := c.stmts[query]; ok {
		s.used = c.tick
		return s.stmt, nil
	}
	st, err := c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if len(c.stmts) >= stmtCacheSize {
		var oldest string
		var at uint64
		for q, s := range c.stmts {
			if oldest == "" || s.used < at {
				oldest, at = q, s.used
			}
		}
		_ = c.stmts[oldest].stmt.Close()
		delete(c.stmts, oldest)
	}
	c.stmts[query] = &cachedStmt{stmt: st, used: c.tick}
	return st, nil
}

// forget drops query's statement after an error that may have left it unusable.
func (c *cachingConn) forget(query string, err error) {
	if s, ok := c.stmts[query]; ok && err != nil {
		var me *mysql.MySQLError
		if !errors.As(err, &me) { // a server error leaves the statement valid; anything else may not
			_ = s.stmt.Close()
			delete(c.stmts, query)
		}
	}
}

func (c *cachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if len(args) == 0 {
		return c.Conn.(driver.ExecerContext).ExecContext(ctx, query, args)
	}
	st, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	res, err := st.(driver.StmtExecContext).ExecContext(ctx, args)
	c.forget(query, err)
	return res, err
}

func (c *cachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if len(args) == 0 {
		return c.Conn.(driver.QueryerContext).QueryContext(ctx, query, args)
	}
	st, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	rows, err := st.(driver.StmtQueryContext).QueryContext(ctx, args)
	c.forget(query, err)
	return rows, err
}

func (c *cachingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
}

func (c *cachingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

func (c *cachingConn) Ping(ctx context.Context) error {
	return c.Conn.(driver.Pinger).Ping(ctx)
}

func (c *cachingConn) ResetSession(ctx context.Context) error {
	return c.Conn.(driver.SessionResetter).ResetSession(ctx)
}

func (c *cachingConn) IsValid() bool {
	return c.Conn.(driver.Validator).IsValid()
}

func (c *cachingConn) CheckNamedValue(nv *driver.NamedValue) error {
	return c.Conn.(driver.NamedValueChecker).CheckNamedValue(nv)
}

// Close closes the cached statements, then the connection.
func (c *cachingConn) Close() error {
	for q, s := range c.stmts {
		_ = s.stmt.Close()
		delete(c.stmts, q)
	}
	return c.Conn.Close()
}
