// Package mysqlpool opens go-sql-driver/mysql connection pools whose connections keep their
// server-side prepared statements. go-sql-driver on its own runs a statement with arguments
// as prepare, execute and close: three packets, two round trips, and a parse on the server
// every time. Here the statement is prepared once per connection and executed from then on;
// arguments stay bound parameters (nothing is interpolated into SQL text).
//
// A statement's context is watched with context.AfterFunc, as pgx does, not by go-sql-driver's
// watcher goroutine, which takes two goroutine hand-offs per statement (the context sent to
// it, then a rendezvous when the statement ends). When the context ends first, the connection's
// socket is closed, as go-sql-driver's cancel does: the statement fails with the context's
// error and the connection is discarded. This applies on networks the driver dials itself
// (tcp, unix) without a dial function of the caller's (Config.DialFunc, RegisterDialContext on
// another network name); other connections keep the driver's watcher.
package mysqlpool

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"

	"github.com/go-sql-driver/mysql"
)

// CacheSize bounds the prepared statements one connection keeps; past it the least recently
// used one is closed on the server.
const CacheSize = 64

// Open returns a pool for cfg whose connections keep prepared statements.
func Open(cfg *mysql.Config) (*sql.DB, error) {
	if cfg.DialFunc == nil && (cfg.Net == "tcp" || cfg.Net == "tcp4" || cfg.Net == "tcp6" || cfg.Net == "unix") {
		cfg = cfg.Clone()
		cfg.DialFunc = dial
	}
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
	var slot dialSlot
	conn, err := c.Connector.Connect(context.WithValue(ctx, dialSlotKey{}, &slot))
	if err != nil {
		return nil, err
	}
	if _, ok := conn.(fullConn); !ok {
		return conn, nil // a driver version without one of the interfaces: no cache
	}
	return &cachingConn{Conn: conn, nc: slot.nc, stmts: make(map[string]*cachedStmt)}, nil
}

// dialSlot receives the socket dial opened for the connection Connect is making.
type dialSlot struct{ nc net.Conn }

type dialSlotKey struct{}

// dial is go-sql-driver's own dial (net.Dialer) that also hands the socket to Connect, so that
// the connection can close it when a statement's context ends (cachingConn.watch).
func dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if s, ok := ctx.Value(dialSlotKey{}).(*dialSlot); ok {
		s.nc = nc
	}
	return nc, nil
}

// cachingConn is one go-sql-driver connection with a statement cache. database/sql uses a
// connection from one goroutine at a time, so the cache needs no lock.
type cachingConn struct {
	driver.Conn
	// nc is the connection's socket (nil when Open's dial did not open it): a statement's
	// context that ends closes it (watch).
	nc net.Conn
	// killed: a context's end closed nc, so the connection is discarded.
	killed bool
	stmts  map[string]*cachedStmt
	tick   uint64
}

// watch prepares a statement run under ctx: it returns the context to give the driver and the
// function that turns the driver's error into the statement's. When the connection's socket is
// known, the driver gets ctx without its cancellation (so it starts no watch of its own) and
// ctx's end closes the socket instead, which fails the statement; the error is then ctx's, as
// go-sql-driver answers a cancelled statement (a server error that came first is kept).
func (c *cachingConn) watch(ctx context.Context) (context.Context, func(error) error) {
	if c.nc == nil || ctx.Done() == nil || ctx.Err() != nil {
		return ctx, keepErr
	}
	nc := c.nc
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	return context.WithoutCancel(ctx), func(err error) error {
		if stop() {
			return err
		}
		// ctx ended during the statement: the socket is closed (or about to be).
		c.killed = true
		var me *mysql.MySQLError
		if err == nil || errors.As(err, &me) {
			return err
		}
		return ctx.Err()
	}
}

func keepErr(err error) error { return err }

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
	if c.killed {
		return nil, driver.ErrBadConn
	}
	dctx, done := c.watch(ctx)
	if len(args) == 0 {
		res, err := c.Conn.(driver.ExecerContext).ExecContext(dctx, query, args)
		return res, done(err)
	}
	st, err := c.stmt(dctx, query)
	if err != nil {
		return nil, done(err)
	}
	res, err := st.(driver.StmtExecContext).ExecContext(dctx, args)
	err = done(err)
	c.forget(query, err)
	return res, err
}

// QueryContext leaves the watch of ctx to the driver: rows outlive the call.
func (c *cachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if c.killed {
		return nil, driver.ErrBadConn
	}
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
	if c.killed {
		return driver.ErrBadConn
	}
	return c.Conn.(driver.SessionResetter).ResetSession(ctx)
}

func (c *cachingConn) IsValid() bool {
	return !c.killed && c.Conn.(driver.Validator).IsValid()
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
