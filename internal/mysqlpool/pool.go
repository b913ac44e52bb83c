// Package mysqlpool opens go-sql-driver/mysql connection pools whose connections keep their
// server-side prepared statements. go-sql-driver on its own runs a statement with arguments
// as prepare, execute and close: three packets, two round trips, and a parse on the server
// every time. Here the statement is prepared once per connection and executed from then on;
// arguments stay bound parameters (nothing is interpolated into SQL text).
package mysqlpool

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"

	"github.com/go-sql-driver/mysql"
)

// CacheSize bounds the prepared statements one connection keeps; past it the least recently
// used one is closed on the server.
const CacheSize = 64

// Open returns a pool for cfg whose connections keep prepared statements.
func Open(cfg *mysql.Config) (*sql.DB, error) {
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("mysql connector: %w", err)
	}
	return sql.OpenDB(cachingConnector{conn}), nil
}

// Caching reports whether conn, the driver connection of database/sql's Conn.Raw, is one of
// this package's (so a pool opened by Open).
func Caching(conn any) bool {
	_, ok := conn.(*cachingConn)
	return ok
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
	if len(c.stmts) >= CacheSize {
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
