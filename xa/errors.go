package xa

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/imagomq/imago/broker"
)

// XA codes (the X/Open names, as broker.XAError uses them), plus XA_RBDEADLOCK.
const (
	XAERNota     = broker.XAERNota
	XAERProto    = broker.XAERProto
	XAERDupID    = broker.XAERDupID
	XAERInval    = broker.XAERInval
	XAERRMFail   = broker.XAERRMFail
	XAERRMErr    = broker.XAERRMErr
	XARBRollback = broker.XARBRollback
	XARBTimeout  = broker.XARBTimeout
	XARBDeadlock = "XA_RBDEADLOCK"
	XAHeurCom    = broker.XAHeurCom
	XAHeurRB     = broker.XAHeurRB
	XAHeurHaz    = broker.XAHeurHaz
	XAHeurMix    = broker.XAHeurMix
)

// Errors callers branch on.
var (
	// ErrUnknownResource: Enlist named a resource the coordinator does not know.
	ErrUnknownResource = errors.New("unknown resource")
	// ErrNoBroker: Publish on a coordinator without a broker resource.
	ErrNoBroker = errors.New("no broker resource is configured")
	// ErrNotActive: a statement, Publish, Commit or Rollback on a transaction that is no longer active.
	ErrNotActive = errors.New("global transaction is not active")
	// ErrTimedOut: the transaction passed its timeout before its decision and was rolled back.
	ErrTimedOut = errors.New("global transaction timed out and was rolled back")
	// ErrRolledBack: Commit could not commit; the transaction was rolled back (wraps the cause).
	ErrRolledBack = errors.New("global transaction rolled back")
	// ErrInDoubt: the outcome of some branch is not the decision (a heuristic hazard); an
	// operator must look at it and Resolve it.
	ErrInDoubt = errors.New("global transaction is in doubt")
	// ErrNotFound: Get or Resolve of an unknown transaction id.
	ErrNotFound = errors.New("unknown global transaction")
	// ErrNotInDoubt: Resolve of a transaction that is not in_doubt.
	ErrNotInDoubt = errors.New("global transaction is not in doubt")
	// ErrInvalidID: a client id that is empty, too long or holds forbidden characters.
	ErrInvalidID = errors.New("invalid global transaction id")
	// ErrIDReused: Begin with a client id already known (in this process, or from the decision
	// log after a restart) for a request with another BeginOptions.Digest (other work under the
	// same id); nothing ran.
	ErrIDReused = errors.New("client id was used for a different global transaction")
	// ErrClosed: the coordinator is closed.
	ErrClosed = errors.New("coordinator is closed")
	// ErrNodeInUse: Open found the node lease held by another live coordinator with the same
	// node id (see lease.go).
	ErrNodeInUse = errors.New("node id in use by another coordinator")
	// ErrDecisionLogFailed: the decision log failed (a write whose outcome is unknown); no
	// transaction prepares until the coordinator is restarted, or, for the decision table,
	// until it heals (declog_sql_heal.go), and Ping reports it.
	ErrDecisionLogFailed = errors.New("decision log failed (a write of unknown outcome): a decision table heals by itself once its database answers; a file or commit-log decision log needs a restart of imago")
	// ErrUnsupportedServer: a database that cannot be an XA resource (see the message).
	ErrUnsupportedServer = errors.New("database server cannot be an XA resource")
	// ErrConflictingDecision: the decision log refused a record that decides a transaction
	// otherwise than the decision it already holds (the first decision wins); nothing of the
	// record was written.
	ErrConflictingDecision = errors.New("a different decision for this transaction is already logged")
)

// Error is a resource manager's failure with its XA code.
type Error struct {
	Code     string // XA code, e.g. XAER_NOTA
	Resource string
	Op       string // the verb: start, exec, prepare, commit, rollback, recover
	Err      error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s %s on %s: %v", e.Code, e.Op, e.Resource, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// XACode returns the XA code of err (an *Error or a *broker.XAError anywhere in its chain), or "".
func XACode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	var be *broker.XAError
	if errors.As(err, &be) {
		return be.Code
	}
	return ""
}

// isRollbackCode reports whether code says the branch was rolled back by its resource.
func isRollbackCode(code string) bool {
	return code == XARBRollback || code == XARBTimeout || code == XARBDeadlock
}

// MySQL/MariaDB server error numbers of the XA family.
var mysqlXACodes = map[uint16]string{
	1397: XAERNota,     // ER_XAER_NOTA
	1398: XAERInval,    // ER_XAER_INVAL
	1399: XAERRMFail,   // ER_XAER_RMFAIL: the command cannot run in the branch's state
	1400: XAERProto,    // ER_XAER_OUTSIDE
	1401: XAERRMErr,    // ER_XAER_RMERR
	1402: XARBRollback, // ER_XA_RBROLLBACK
	1440: XAERDupID,    // ER_XAER_DUPID
	1613: XARBTimeout,  // ER_XA_RBTIMEOUT
	1614: XARBDeadlock, // ER_XA_RBDEADLOCK
	1213: XARBDeadlock, // ER_LOCK_DEADLOCK: InnoDB rolled the transaction back
}

// PostgreSQL SQLSTATEs that map to XA codes.
var pgXACodes = map[string]string{
	"42704": XAERNota,     // undefined_object: prepared transaction does not exist
	"42710": XAERDupID,    // duplicate_object: gid already in use
	"40001": XARBRollback, // serialization_failure
	"40P01": XARBDeadlock, // deadlock_detected
	"25P02": XARBRollback, // in_failed_sql_transaction
	"57014": XARBTimeout,  // query_canceled (statement timeout)
	"55000": XAERRMErr,    // object_not_in_prerequisite_state (prepared transactions disabled)
	"0A000": XAERRMErr,    // feature_not_supported (PREPARE after touching a temporary table)
}

// classify wraps a driver error with the XA code it means.
func classify(resource, op string, err error) error {
	if err == nil {
		return nil
	}
	var xe *Error
	if errors.As(err, &xe) {
		return err
	}
	code := XAERRMErr
	var me *mysql.MySQLError
	var pe *pgconn.PgError
	var be *broker.XAError
	var ne net.Error
	switch {
	case errors.As(err, &be):
		code = be.Code
	case errors.As(err, &me):
		if c, ok := mysqlXACodes[me.Number]; ok {
			code = c
		}
	case errors.As(err, &pe):
		if c, ok := pgXACodes[pe.Code]; ok {
			code = c
		} else if strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57") {
			code = XAERRMFail // connection exception, operator intervention (shutdown)
		}
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, mysql.ErrInvalidConn), errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF), errors.As(err, &ne), pgconn.SafeToRetry(err), isPgConnErr(err):
		code = XAERRMFail
	}
	return &Error{Code: code, Resource: resource, Op: op, Err: err}
}

func isPgConnErr(err error) bool {
	var ce *pgconn.ConnectError
	return errors.As(err, &ce) || pgconn.Timeout(err)
}
