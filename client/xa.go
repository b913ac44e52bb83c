package client

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/imagomq/imago/api"
)

// This file holds XAResource: the broker as a resource manager in a two-phase commit, with the
// verbs and error codes of javax.transaction.xa.XAResource over /v1/xa.

// Xid identifies an XA branch: a format id and a global transaction id and branch qualifier
// of 1 to 64 bytes each.
type Xid struct {
	FormatID int32
	Gtrid    []byte
	Bqual    []byte
}

// String is the text form XID:<format_id>:<gtrid hex>:<bqual hex>, the text protocol's txkey,
// which the command line (imago xa) and ParseXid read.
func (x Xid) String() string {
	return "XID:" + strconv.FormatInt(int64(x.FormatID), 10) + ":" + hex.EncodeToString(x.Gtrid) + ":" + hex.EncodeToString(x.Bqual)
}

// Validate checks the limits the server enforces: gtrid and bqual 1 to 64 bytes, a format id
// that is not negative.
func (x Xid) Validate() error {
	switch {
	case len(x.Gtrid) < 1 || len(x.Gtrid) > 64:
		return &XAError{Code: XAERInval, Message: fmt.Sprintf("gtrid must be 1 to 64 bytes, got %d", len(x.Gtrid))}
	case len(x.Bqual) < 1 || len(x.Bqual) > 64:
		return &XAError{Code: XAERInval, Message: fmt.Sprintf("bqual must be 1 to 64 bytes, got %d", len(x.Bqual))}
	case x.FormatID < 0:
		return &XAError{Code: XAERInval, Message: "format_id must not be negative (-1 is the null xid)"}
	}
	return nil
}

// ParseXid parses XID:<format_id>:<gtrid hex>:<bqual hex>.
func ParseXid(s string) (Xid, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 4 || parts[0] != "XID" {
		return Xid{}, &XAError{Code: XAERInval, Message: fmt.Sprintf("xid %q: want XID:<format_id>:<gtrid hex>:<bqual hex>", s)}
	}
	f, err := strconv.ParseInt(parts[1], 10, 32)
	if err != nil {
		return Xid{}, &XAError{Code: XAERInval, Message: fmt.Sprintf("xid %q: format id is not a 32-bit integer", s)}
	}
	g, err := hex.DecodeString(parts[2])
	if err != nil {
		return Xid{}, &XAError{Code: XAERInval, Message: fmt.Sprintf("xid %q: gtrid is not hex", s)}
	}
	b, err := hex.DecodeString(parts[3])
	if err != nil {
		return Xid{}, &XAError{Code: XAERInval, Message: fmt.Sprintf("xid %q: bqual is not hex", s)}
	}
	x := Xid{FormatID: int32(f), Gtrid: g, Bqual: b}
	return x, x.Validate()
}

// equal reports whether x and y name the same branch.
func (x Xid) equal(y Xid) bool {
	return x.FormatID == y.FormatID && bytes.Equal(x.Gtrid, y.Gtrid) && bytes.Equal(x.Bqual, y.Bqual)
}

func (x Xid) json() api.Xid {
	return api.Xid{FormatID: x.FormatID, Gtrid: hex.EncodeToString(x.Gtrid), Bqual: hex.EncodeToString(x.Bqual)}
}

func xidFromJSON(j api.Xid) (Xid, error) {
	g, err := hex.DecodeString(j.Gtrid)
	if err != nil {
		return Xid{}, fmt.Errorf("gtrid %q: %w", j.Gtrid, err)
	}
	b, err := hex.DecodeString(j.Bqual)
	if err != nil {
		return Xid{}, fmt.Errorf("bqual %q: %w", j.Bqual, err)
	}
	return Xid{FormatID: j.FormatID, Gtrid: g, Bqual: b}, nil
}

// XA error codes (XAError.Code), as the server sends them and as
// javax.transaction.xa.XAException names them.
const (
	XAERNota     = "XAER_NOTA"     // unknown xid
	XAERProto    = "XAER_PROTO"    // verb in the wrong state
	XAERDupID    = "XAER_DUPID"    // start of an xid that exists
	XAERInval    = "XAER_INVAL"    // bad arguments
	XAERRMFail   = "XAER_RMFAIL"   // the resource manager cannot be reached or cannot work now
	XAERRMErr    = "XAER_RMERR"    // an error in the resource manager (or a refusal that is not XA's)
	XARBRollback = "XA_RBROLLBACK" // the branch was rolled back
	XARBTimeout  = "XA_RBTIMEOUT"  // the branch was rolled back after its timeout
	XAHeurCom    = "XA_HEURCOM"    // an operator committed the branch
	XAHeurRB     = "XA_HEURRB"     // an operator rolled the branch back
	XAHeurHaz    = "XA_HEURHAZ"    // the branch may have been completed heuristically
	XAHeurMix    = "XA_HEURMIX"    // partly committed, partly rolled back
)

// xaErrno are the numbers javax.transaction.xa.XAException gives the codes.
var xaErrno = map[string]int{
	XAERNota: -4, XAERProto: -6, XAERDupID: -8, XAERInval: -5, XAERRMFail: -7, XAERRMErr: -3,
	XARBRollback: 100, XARBTimeout: 106, XAHeurCom: 7, XAHeurRB: 6, XAHeurHaz: 8, XAHeurMix: 5,
}

// XAError is the failure of an XA verb: an XA code (XAERNota, …) and the server's message.
// A network error is XAER_RMFAIL (the resource manager is unavailable; the transaction manager
// recovers the branch later), and so is a 2xx answer that could not be read where the verb
// needs it (Recover's list; Prepare's vote, lost, missing or unknown, when Recover cannot
// tell it), and so is an answer without an XA code that says the server could not work now
// (503, 429, a proxy's 502 or 504) or, from prepare, commit, rollback, forget and recover, that
// says nothing of the branch (500, 401, 403); any other answer without an XA code (a malformed
// request, or 401/403 to start, end or publish) is XAER_RMERR. Err then holds the cause, which
// errors.As reaches.
type XAError struct {
	Code    string
	Message string
	// Status is the HTTP status of the answer, 0 when there was none.
	Status int
	Err    error
}

func (e *XAError) Error() string {
	if e.Message == "" && e.Err != nil {
		return e.Code + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Message
}

func (e *XAError) Unwrap() error { return e.Err }

// Errno is the code's number in javax.transaction.xa.XAException (XAER_NOTA is -4, …), or 0
// for a code it does not know.
func (e *XAError) Errno() int { return xaErrno[e.Code] }

// IsXACode reports whether err is an *XAError with the given code.
func IsXACode(err error, code string) bool {
	var xe *XAError
	return errors.As(err, &xe) && xe.Code == code
}

// xaError turns the error of a call to verb into an *XAError. The server's XA code is the
// answer when it gave one. Otherwise a status that says the server could not work now (503,
// 429, 408, a proxy's 502 or 504, a redirect not followed) is XAER_RMFAIL: retry later. For the
// verbs whose error a transaction manager reads as news of the branch's outcome (reportsOutcome:
// prepare, commit, rollback, forget, recover), an answer that says nothing of the branch (a 500
// from a handler or a proxy, a refused token, no such endpoint) is XAER_RMFAIL too, never
// XAER_RMERR, which from commit says the branch's work was rolled back; for the others it
// stays XAER_RMERR (the branch is not prepared: the manager rolls back). The Java resource maps
// answers the same way.
func xaError(err error, verb string) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		if _, ok := xaErrno[e.Code]; ok {
			return &XAError{Code: e.Code, Message: e.Message, Status: e.Status, Err: err}
		}
		switch s := e.Status; {
		case s == http.StatusServiceUnavailable || s == http.StatusTooManyRequests || s == http.StatusRequestTimeout ||
			proxyGaveUp(s) || s >= 300 && s < 400:
			return &XAError{Code: XAERRMFail, Message: e.Error(), Status: s, Err: err}
		case reportsOutcome(verb) && (s == http.StatusUnauthorized || s == http.StatusForbidden || s >= 500 ||
			s == http.StatusNotFound && (e.Code == "" || e.Code == api.CodeNotFound)):
			return &XAError{Code: XAERRMFail, Message: e.Error(), Status: s, Err: err}
		}
		return &XAError{Code: XAERRMErr, Message: e.Error(), Status: e.Status, Err: err}
	}
	var de *decodeError
	if errors.As(err, &de) {
		// A 2xx whose body could not be read (cut off, or not the JSON expected): the server
		// did the verb, but what it answered is not known here, as after a network error.
		// Prepare and Commit settle a lost answer themselves; for the others it is XAER_RMFAIL,
		// never XAER_RMERR, which claims an error in the resource manager that nobody saw.
		return &XAError{Code: XAERRMFail, Message: "the server answered 2xx but its answer could not be read: " + de.Error(), Err: err}
	}
	return &XAError{Code: XAERRMFail, Err: err}
}

// reportsOutcome reports whether a transaction manager reads an error of verb as news of the
// branch's outcome (xaError).
func reportsOutcome(verb string) bool {
	switch verb {
	case "prepare", "commit", "rollback", "forget", "recover":
		return true
	}
	return false
}

// Flags of Start and End.
const (
	TMNoFlags = api.XANoFlags // Start: a new branch
	TMJoin    = api.XAJoin    // Start: join an idle branch
	TMResume  = api.XAResume  // Start: resume a suspended branch
	TMSuccess = api.XASuccess // End: the work is done
	TMFail    = api.XAFail    // End: mark the branch rollback-only
	TMSuspend = api.XASuspend // End: suspend, to resume later
)

// XAResource is the broker as an XA resource manager, for a transaction manager that runs a
// two-phase commit across it and other resources (databases). The branch's messages
// (Publish) stay invisible until Commit, and are then visible together at consecutive offsets
// per partition; Prepare makes the branch durable, so that it survives a restart of the
// broker and is listed by Recover until the transaction manager decides.
//
// The verbs are not retried by themselves: after an XAER_RMFAIL (the broker could not be
// reached), the transaction manager finds in-doubt branches with Recover and ends them with
// Commit or Rollback, as with any resource manager. Recover is retried (a read).
//
// It is safe for concurrent use: one XAResource can serve many branches.
type XAResource struct {
	c         *Client
	timeoutMS atomic.Int64
}

// NewXAResource returns an XA resource manager over c.
func (c *Client) NewXAResource() *XAResource { return &XAResource{c: c} }

// SetTransactionTimeout sets the timeout of the branches Start begins (noflags) from now on:
// the broker rolls back a branch not prepared within it. 0 restores the server default (30 s).
// Prepared branches never time out.
func (r *XAResource) SetTransactionTimeout(d time.Duration) error {
	if d < 0 {
		return &XAError{Code: XAERInval, Message: "the transaction timeout must not be negative"}
	}
	r.timeoutMS.Store(d.Milliseconds())
	return nil
}

// TransactionTimeout returns what SetTransactionTimeout set (0: the server default).
func (r *XAResource) TransactionTimeout() time.Duration {
	return time.Duration(r.timeoutMS.Load()) * time.Millisecond
}

// IsSameRM reports whether other is the same resource manager: the same server.
func (r *XAResource) IsSameRM(other *XAResource) bool {
	return other != nil && r.c.base == other.c.base
}

func (r *XAResource) verb(ctx context.Context, verb string, in, out any) error {
	_, err := r.c.send(ctx, request{method: http.MethodPost, path: "/v1/xa/" + verb, in: in, out: out})
	return xaError(err, verb)
}

// Start begins a branch (TMNoFlags), joins an idle one (TMJoin) or resumes a suspended one
// (TMResume). A second start of an xid is XAER_DUPID.
func (r *XAResource) Start(ctx context.Context, xid Xid, flags string) error {
	if err := xid.Validate(); err != nil {
		return err
	}
	req := api.XAStartRequest{Xid: xid.json(), Flags: flags}
	if flags == "" || flags == TMNoFlags {
		req.TimeoutMS = r.timeoutMS.Load()
	}
	return r.verb(ctx, "start", req, nil)
}

// Publish adds messages to an active branch. They become visible at Commit.
func (r *XAResource) Publish(ctx context.Context, xid Xid, msgs ...TxMessage) error {
	if err := xid.Validate(); err != nil {
		return err
	}
	return r.verb(ctx, "messages", api.XAMessagesRequest{Xid: xid.json(), Messages: msgs}, nil)
}

// End ends the work on a branch: TMSuccess (idle, ready to prepare), TMFail (rollback-only)
// or TMSuspend.
func (r *XAResource) End(ctx context.Context, xid Xid, flags string) error {
	if err := xid.Validate(); err != nil {
		return err
	}
	return r.verb(ctx, "end", api.XAEndRequest{Xid: xid.json(), Flags: flags}, nil)
}

// Prepare makes an idle branch durable and votes. rdonly is true when the branch held no
// message: it is already forgotten and needs neither commit nor rollback. A rollback-only
// branch is rolled back and answers XA_RBROLLBACK.
//
// When the server answered 2xx (it prepared the branch) but gave no vote this client knows,
// Prepare asks Recover: a branch listed is prepared and votes XA_OK, a branch not listed
// votes XA_RDONLY. That holds whether the vote could not be read (a connection cut while
// reading the body, a body that is not JSON) or the JSON came whole without a vote, or with
// one other than "ok" and "rdonly" ({} from a proxy, a vote of a newer server): only "ok" is
// XA_OK and only "rdonly" is XA_RDONLY; nothing else is taken for either. The rule holds
// because a 2xx prepare leaves the branch either prepared, which Recover lists until it is
// committed or rolled back (a heuristic decision keeps it listed until Forget, and a prepared
// branch never times out), or read-only, which the server forgets at once. So "not listed" is
// read-only unless someone other than this transaction manager committed or rolled back the
// branch between the prepare and the recover (an operator's plain rollback, not a heuristic
// one), which no transaction manager should let happen to a branch it is preparing; the Java
// resource decides the same. When Recover fails, the vote is unknown: XAER_RMFAIL (the broker
// could not be reached), and the manager finds the branch, prepared, through Recover later;
// never XAER_RMERR, which says the broker failed the branch, so that a manager rolls back a
// global transaction whose branch here is prepared (a spurious rollback of a payment other
// resources may have prepared).
func (r *XAResource) Prepare(ctx context.Context, xid Xid) (rdonly bool, err error) {
	if err := xid.Validate(); err != nil {
		return false, err
	}
	var out api.XAPrepareResponse
	_, err = r.c.send(ctx, request{method: http.MethodPost, path: "/v1/xa/prepare",
		in: api.XAXidRequest{Xid: xid.json()}, out: &out})
	var de *decodeError
	if errors.As(err, &de) {
		return r.voteFromRecover(ctx, xid, fmt.Errorf("its vote was lost (%w)", de))
	}
	if err != nil {
		return false, xaError(err, "prepare")
	}
	switch out.Vote {
	case api.XAVoteOK:
		return false, nil
	case api.XAVoteReadOnly:
		return true, nil
	case "":
		return r.voteFromRecover(ctx, xid, errors.New("its answer carried no vote"))
	default:
		return r.voteFromRecover(ctx, xid, fmt.Errorf("its vote %q is not one this client knows", out.Vote))
	}
}

// voteFromRecover finds the vote of a prepare whose 2xx answer did not give one (why says
// how: lost, missing or unknown): listed by Recover, the branch is prepared (XA_OK); not
// listed, it was read-only and is forgotten (XA_RDONLY). A failed Recover is XAER_RMFAIL:
// the vote is unknown.
func (r *XAResource) voteFromRecover(ctx context.Context, xid Xid, why error) (rdonly bool, err error) {
	xids, err := r.Recover(ctx)
	if err != nil {
		return false, &XAError{Code: XAERRMFail,
			Message: fmt.Sprintf("prepare %s: the server answered 2xx but %v, and recover, which would tell whether the branch is prepared, failed: %v", xid, why, err),
			Err:     errors.Join(why, err)}
	}
	for _, x := range xids {
		if x.equal(xid) {
			return false, nil
		}
	}
	return true, nil
}

// Commit commits a prepared branch, or with onePhase an idle one (never a prepared one), and
// returns where its messages were stored, in the order they were published. After a heuristic
// decision it answers XA_HEURCOM, XA_HEURRB or XA_HEURHAZ; call Forget then. When the server
// answered that the branch is committed (2xx) but the rest of its answer could not be read (a
// connection cut while reading it), the branch is committed: Commit returns no error and no
// positions. (No XA code says "committed, answer lost": XAER_RMERR would tell the
// transaction manager that the branch was rolled back.)
func (r *XAResource) Commit(ctx context.Context, xid Xid, onePhase bool) ([]TopicPosition, error) {
	if err := xid.Validate(); err != nil {
		return nil, err
	}
	var out api.TxCommitResponse
	_, err := r.c.send(ctx, request{method: http.MethodPost, path: "/v1/xa/commit",
		in: api.XACommitRequest{Xid: xid.json(), OnePhase: onePhase}, out: &out})
	var de *decodeError
	if errors.As(err, &de) {
		return nil, nil
	}
	if err != nil {
		return nil, xaError(err, "commit")
	}
	return out.Offsets, nil
}

// Rollback discards a branch's messages, in any state but committed.
func (r *XAResource) Rollback(ctx context.Context, xid Xid) error {
	if err := xid.Validate(); err != nil {
		return err
	}
	return r.verb(ctx, "rollback", api.XAXidRequest{Xid: xid.json()}, nil)
}

// Forget clears a heuristically completed branch.
func (r *XAResource) Forget(ctx context.Context, xid Xid) error {
	if err := xid.Validate(); err != nil {
		return err
	}
	return r.verb(ctx, "forget", api.XAXidRequest{Xid: xid.json()}, nil)
}

// Recover lists every prepared branch not yet decided, and every heuristically completed one
// not yet forgotten, across restarts of the broker. It is one scan (Java's TMSTARTRSCAN and
// TMENDRSCAN in one call). A 2xx whose list could not be read (cut off on every attempt, not
// the JSON expected, or JSON without the "xids" array) is XAER_RMFAIL, as the Java resource
// answers: nothing is known of the prepared branches, and a transaction manager runs its scan
// again later on XAER_RMFAIL, where XAER_RMERR would report an error of the resource manager.
func (r *XAResource) Recover(ctx context.Context) ([]Xid, error) {
	var out api.XARecoverResponse
	status, err := r.c.get(ctx, "/v1/xa/recover", &out)
	var de *decodeError
	if errors.As(err, &de) {
		return nil, &XAError{Code: XAERRMFail, Status: status, Err: err,
			Message: fmt.Sprintf("recover: the server answered %d but the list of branches could not be read: %v", status, de)}
	}
	if err != nil {
		return nil, xaError(err, "recover")
	}
	if out.Xids == nil {
		// JSON without the list ({} from a proxy, "xids": null): the server always sends an
		// array. Read as empty it would say that nothing is prepared here, and Prepare would
		// take a lost vote for XA_RDONLY, leaving a prepared branch uncommitted.
		return nil, &XAError{Code: XAERRMFail, Status: status,
			Message: fmt.Sprintf(`recover: the server answered %d without the list of branches (no "xids" array)`, status)}
	}
	xids := make([]Xid, 0, len(out.Xids))
	for _, j := range out.Xids {
		x, err := xidFromJSON(j)
		if err != nil {
			return nil, &XAError{Code: XAERRMErr, Message: "recover: the server sent a malformed xid: " + err.Error()}
		}
		xids = append(xids, x)
	}
	return xids, nil
}

// Heuristic records an operator's decision on a prepared branch (commit true: commit it,
// false: roll it back), which needs a token with the admin right. The transaction manager's
// later Commit or Rollback of the branch then answers XA_HEURCOM or XA_HEURRB (or XA_HEURHAZ)
// until it calls Forget. It is for operators (imago xa commit --heuristic), not for
// transaction managers.
func (r *XAResource) Heuristic(ctx context.Context, xid Xid, commit bool) error {
	if err := xid.Validate(); err != nil {
		return err
	}
	d := api.XADecisionRollback
	if commit {
		d = api.XADecisionCommit
	}
	return r.verb(ctx, "heuristic", api.XAHeuristicRequest{Xid: xid.json(), Decision: d}, nil)
}
