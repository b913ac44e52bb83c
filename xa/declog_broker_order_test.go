package xa

import (
	"context"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
)

// gatedDecisions delays the decision log's writes to the broker until gate is closed: a fault a
// real broker does not produce on demand (its flusher was busy, the writer goroutine was not
// scheduled), used to order the "preparing" record after the decided commit.
type gatedDecisions struct {
	*broker.Broker
	entered chan struct{}
	gate    chan struct{}
}

func (g *gatedDecisions) AppendDecisions(ctx context.Context, recs []broker.DecisionRecord) error {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	<-g.gate
	return g.Broker.AppendDecisions(ctx, recs)
}

// The "preparing" record is queued, not waited for; the broker branch's decided commit, which
// carries the commit decision, does not go through the writer. If the queued record reaches
// the log after the decided commit, the broker holds it as the transaction's last record: a
// restart finds the transaction undecided and rolls its prepared branches back, while the
// broker branch's messages stay committed (half a transaction: the bank test's
// TestGlobalBankCrashDecisionCommitLog found it, about one run in fifteen). The decided
// commit must land after every record queued before it.
func TestDecidedCommitLandsAfterQueuedRecords(t *testing.T) {
	o := broker.NewOptions(t.TempDir())
	o.Logger = quietLogger()
	b, err := broker.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.CreateTopic("t", broker.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	g := &gatedDecisions{Broker: b, entered: make(chan struct{}, 1), gate: make(chan struct{})}
	node := newNode(t)
	l, _, err := openBrokerDecisionLog(g, node, time.Hour, time.Now, nil, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()

	commit := nodeRecord(node, 1, StatusCommitting)
	preparing := commit
	preparing.Kind, preparing.Status = recPreparing, StatusPreparing
	if err := l.append(preparing); err != nil {
		t.Fatal(err)
	}
	<-g.entered // the writer holds the preparing record, its write not yet in the broker

	xid := Xid{FormatID: 0x494d4731, Gtrid: []byte(commit.Gtrid), Bqual: []byte("broker")}
	if err := b.XAStart(xid, broker.XANoFlags, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := b.XAAdd(xid, []broker.TxMessage{{Topic: "t", Message: broker.Message{Value: []byte("m")}}}); err != nil {
		t.Fatal(err)
	}
	if err := b.XAEnd(xid, broker.XASuccess); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := l.commitDecided(context.Background(), b, xid, commit)
		done <- err
	}()
	select {
	case err := <-done:
		close(g.gate)
		t.Fatalf("the decided commit returned (%v) while a record queued before it was not written", err)
	case <-time.After(200 * time.Millisecond): // it must be waiting: the gate is closed
	}
	close(g.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, d := range b.Decisions() {
		if d.Key != commit.Gtrid {
			continue
		}
		r, _, err := decodeFrame(d.Value)
		if err != nil {
			t.Fatal(err)
		}
		if decisionOf(&r) != decideCommit {
			t.Fatalf("the broker holds a record of kind %d (%s) for the transaction, not its commit decision", r.Kind, r.Status)
		}
		return
	}
	t.Fatal("the broker holds no record of the transaction")
}
