package xa

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/imagomq/imago/broker"
)

// BrokerResource is the broker's XA resource as the coordinator uses it. *broker.Broker
// satisfies it in-process; an adapter over the HTTP XA verbs can too.
type BrokerResource interface {
	XAStart(xid broker.Xid, flags string, timeout time.Duration) error
	XAAdd(xid broker.Xid, msgs []broker.TxMessage) error
	XAEnd(xid broker.Xid, flags string) error
	XAPrepare(ctx context.Context, xid broker.Xid) (readOnly bool, err error)
	XACommit(ctx context.Context, xid broker.Xid, onePhase bool) ([]broker.TopicPosition, error)
	XARollback(ctx context.Context, xid broker.Xid) error
	XARecover() []broker.Xid
}

var _ BrokerResource = (*broker.Broker)(nil)

// Broker makes the broker an XA resource; GlobalTx.Publish adds messages to its branch.
// A coordinator has at most one broker resource.
func Broker(name string, b BrokerResource) Resource {
	return &brokerRM{name: name, b: b}
}

type brokerRM struct {
	name string
	b    BrokerResource
}

// brokerTimeoutSlack keeps the broker's own branch timeout behind the global one, so the
// coordinator's timeout (which rolls back every branch) always fires first.
const brokerTimeoutSlack = 30 * time.Second

func (r *brokerRM) Name() string                   { return r.name }
func (r *brokerRM) Driver() string                 { return "broker" }
func (r *brokerRM) rm() resourceManager            { return r }
func (r *brokerRM) check(context.Context) error    { return nil }
func (r *brokerRM) close() error                   { return nil }
func (r *brokerRM) err(op string, err error) error { return classify(r.name, op, err) }

func (r *brokerRM) start(ctx context.Context, xid Xid, timeout time.Duration) (branchConn, error) {
	d := timeout + brokerTimeoutSlack
	if d > time.Hour {
		d = time.Hour
	}
	if err := r.b.XAStart(xid, broker.XANoFlags, d); err != nil {
		return nil, r.err("start", err)
	}
	return &brokerBranch{r: r, xid: xid}, nil
}

func (r *brokerRM) commit(ctx context.Context, xid Xid) error {
	_, err := r.b.XACommit(ctx, xid, false)
	return r.err("commit", err)
}

func (r *brokerRM) rollback(ctx context.Context, xid Xid) error {
	return r.err("rollback", r.b.XARollback(ctx, xid))
}

func (r *brokerRM) recover(ctx context.Context) ([]Xid, error) {
	var out []Xid
	for _, x := range r.b.XARecover() {
		if _, _, _, ok := parseXid(x); ok {
			out = append(out, x)
		}
	}
	return out, nil
}

type brokerBranch struct {
	r     *brokerRM
	xid   Xid
	ended bool
}

func (b *brokerBranch) db(context.Context) (*sql.Conn, error) { return nil, notSQL(b.r.name) }
func (b *brokerBranch) exec(context.Context, string, []any) (int64, error) {
	return 0, notSQL(b.r.name)
}

func (b *brokerBranch) publish(msgs []broker.TxMessage) error {
	return b.r.err("publish", b.r.b.XAAdd(b.xid, msgs))
}

func (b *brokerBranch) end(flags, op string) error {
	if b.ended {
		return nil
	}
	if err := b.r.b.XAEnd(b.xid, flags); err != nil {
		return b.r.err(op, err)
	}
	b.ended = true
	return nil
}

func (b *brokerBranch) prepare(ctx context.Context) (bool, error) {
	if err := b.end(broker.XASuccess, "prepare"); err != nil {
		return false, err
	}
	ro, err := b.r.b.XAPrepare(ctx, b.xid)
	return ro, b.r.err("prepare", err)
}

func (b *brokerBranch) commit(ctx context.Context, onePhase bool) ([]broker.TopicPosition, error) {
	if onePhase {
		if err := b.end(broker.XASuccess, "commit"); err != nil {
			return nil, err
		}
	}
	pos, err := b.r.b.XACommit(ctx, b.xid, onePhase)
	return pos, b.r.err("commit", err)
}

func (b *brokerBranch) rollback(ctx context.Context) error {
	if err := b.end(broker.XAFail, "rollback"); err != nil {
		if code := XACode(err); code != XAERNota && !isRollbackCode(code) {
			return err
		}
	}
	err := b.r.b.XARollback(ctx, b.xid)
	if code := XACode(err); code == XAERNota || isRollbackCode(code) {
		return nil // the broker already rolled it back (timeout) or never had it
	}
	return b.r.err("rollback", err)
}

func (b *brokerBranch) release(bool) {}

var errNotSQL = errors.New("not an SQL resource")

func notSQL(name string) error { return fmt.Errorf("resource %s: %w", name, errNotSQL) }
