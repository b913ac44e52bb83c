package xa

import (
	"context"
	"errors"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// keepSession is a branch whose release does not give its connection back: the session that
// prepared the branch stays open on the server, idle, as the session of a coordinator whose
// host died (or was cut off) without its TCP connection being closed.
type keepSession struct{ branchConn }

func (keepSession) release(bool) {}

// A MariaDB branch prepared by a session that is still open (a zombie) answers XA COMMIT from
// any other session with XAER_NOTA while XA RECOVER lists it. The session's wait_timeout, set
// at XA START just above the transaction's timeout plus the phase timeouts, ends the zombie
// soon, and recovery commits the branch; meanwhile the wait shows in the metrics. The zombie
// is a real MariaDB session (the branch's own connection, kept open and idle by the test).
func TestMariaDBZombieSessionBranchIsReleased(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100, "b": 0})
	node := newNode(t)
	o := e.options(node)
	o.Grace = time.Hour // only the decision may finish these
	o.PhaseTimeout = time.Second
	e.rollbackLeftovers(node, o.Resources)
	c, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	var tx *GlobalTx
	var zombie branchConn
	c.hookAfterDecision = func(string) error {
		b := tx.branches["wallet"]
		zombie, b.conn = b.conn, keepSession{b.conn}
		return errSimulatedCrash
	}
	t.Cleanup(func() {
		if zombie != nil {
			zombie.release(true)
		}
	})
	ctx := context.Background()
	id := "zombie-" + e.suffix
	in, err := c.Run(ctx, BeginOptions{ID: id, Timeout: time.Second}, func(ctx context.Context, gtx *GlobalTx) error {
		tx = gtx
		return transfer(ctx, gtx, table, "a", "b", 40, msg("xat."+e.suffix, "a", `{}`))
	})
	if !errors.Is(err, errSimulatedCrash) {
		t.Fatalf("%+v %v", in, err)
	}
	c.Close()
	began := time.Now()
	c2 := e.open(o)
	waitFor(t, "recovery to commit the zombie's branch", func() bool {
		got, _ := c2.Get(id)
		return got.Status == StatusCommitted
	})
	t.Logf("committed %s after the restart", time.Since(began).Round(time.Millisecond))
	if e.balance(e.my, table, "a") != 60 || e.balance(e.pg, table, "b") != 40 {
		t.Fatal("not committed everywhere")
	}
	var m dto.Metric
	if err := c2.metrics.recovery.WithLabelValues("wallet", "held_by_session").Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.GetCounter().GetValue() == 0 {
		t.Error("the branch held by another session does not show in imago_xa_recovery_actions_total")
	}
}
