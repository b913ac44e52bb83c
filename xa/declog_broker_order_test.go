package xa

import (
	"context"
	"sync"
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
	b := openQuietBroker(t, t.TempDir(), nil)
	if _, err := b.CreateTopic("t", broker.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	g := &gatedDecisions{Broker: b, entered: make(chan struct{}, 1), gate: make(chan struct{})}
	node := newNode(t)
	l, _, err := openBrokerDecisionLog(g, node, time.Hour, time.Now, nil, lazyDelay, nil, quietLogger())
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

// countedDecisions counts the decision log's writes to the broker.
type countedDecisions struct {
	*broker.Broker
	mu     sync.Mutex
	writes [][]broker.DecisionRecord
}

func (c *countedDecisions) AppendDecisions(ctx context.Context, recs []broker.DecisionRecord) error {
	c.mu.Lock()
	c.writes = append(c.writes, append([]broker.DecisionRecord(nil), recs...))
	c.mu.Unlock()
	return c.Broker.AppendDecisions(ctx, recs)
}

func (c *countedDecisions) count() (writes, records int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.writes {
		records += len(w)
	}
	return len(c.writes), records
}

// Records nobody waits for are kept back and written together: a decided commit drops its own
// transaction's "preparing" record instead of waiting for it to be written (and never lets it
// land after the commit), and the others' records reach the broker in one write, not one each.
func TestHeldRecordsRideTogetherAndACommitSupersedesItsPreparing(t *testing.T) {
	b := openQuietBroker(t, t.TempDir(), nil)
	if _, err := b.CreateTopic("t", broker.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	c := &countedDecisions{Broker: b}
	defer func(d time.Duration) { lazyDelay = d }(lazyDelay)
	lazyDelay = time.Hour // nothing is written by the delay while the test runs
	node := newNode(t)
	l, _, err := openBrokerDecisionLog(c, node, time.Hour, time.Now, nil, lazyDelay, nil, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			l.close()
		}
	}()

	commit := nodeRecord(node, 1, StatusCommitting)
	preparing := commit
	preparing.Kind, preparing.Status = recPreparing, StatusPreparing
	// Other transactions' records: preparing ones and finished ones ("done").
	var others []record
	for i := 2; i < 12; i++ {
		r := nodeRecord(node, i, StatusPreparing)
		r.Kind = recPreparing
		if i%2 == 0 { // with a client id, so kept in the held set and visible in Decisions
			r.Kind, r.Status = recDone, StatusCommitted
		}
		others = append(others, r)
	}
	if err := l.append(preparing); err != nil {
		t.Fatal(err)
	}
	for _, r := range others {
		if err := l.append(r); err != nil {
			t.Fatal(err)
		}
	}

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
	if _, err := l.commitDecided(context.Background(), b, xid, commit); err != nil {
		t.Fatal(err)
	}
	if err := l.close(); err != nil { // writes what it held
		t.Fatal(err)
	}
	closed = true

	writes, records := c.count()
	if writes != 1 || records != len(others) {
		t.Errorf("the writer made %d writes of %d records in all; want the %d other records in one write and the transaction's own preparing record dropped", writes, records, len(others))
	}
	held := map[string]record{}
	for _, d := range b.Decisions() {
		r, _, err := decodeFrame(d.Value)
		if err != nil {
			t.Fatal(err)
		}
		held[d.Key] = r
	}
	if r, ok := held[commit.Gtrid]; !ok || decisionOf(&r) != decideCommit {
		t.Fatalf("the broker holds %+v for the committed transaction, not its commit decision", r)
	}
	for _, o := range others {
		r, ok := held[o.Gtrid]
		if !ok || r.Kind != o.Kind {
			t.Errorf("the broker holds kind %d for %s (found %v), want the record queued (kind %d)", r.Kind, o.Gtrid, ok, o.Kind)
		}
	}
}
