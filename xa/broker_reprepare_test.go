package xa

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/fsutil"
)

// TestCommittedBrokerBranchesStayCommitted: the broker re-writes old prepared branches at the
// head of its log so that retention can drop the segments they were in. Against commits the
// coordinator sends meanwhile, a re-prepare written after its branch's commit brought the
// branch back, prepared, after a crash or a full rebuild; the coordinator found it with a
// commit decision and committed it again: 44 messages for 40 transfers.
//
// Each transfer here, between its commit decision and phase 2, runs a retention pass that
// compacts two prepared broker branches: the transfer's own and an unrelated one (a branch of
// another format that stays prepared throughout). The flusher is held in the fdatasync of the
// first re-prepare until the transfer's broker commit is under way, so whenever compaction
// takes the unrelated branch first, the transfer's re-prepare and its commit meet in the
// flusher's queue. Then the broker restarts without a checkpoint (a full rebuild replays every
// batch retention kept, as recovery after a crash replays those after the checkpoint) and the
// coordinator recovers. Every transfer must leave exactly its messages and nothing prepared.
func TestCommittedBrokerBranchesStayCommitted(t *testing.T) {
	e := newEnv(t)
	const transfers = 40
	table := e.tables(map[string]int64{"a": 1000, "b": 0})
	topic, filler := "xat."+e.suffix, "filler."+e.suffix
	ctx := context.Background()

	// The env's broker, reopened so that retention compacts prepared branches at every pass:
	// one index entry per segment (a partition keeps only its newest message), log segments
	// smaller than one filler message. Retention runs only when the test says.
	if err := e.b.Close(); err != nil {
		t.Fatal(err)
	}
	bo := broker.NewOptions(filepath.Join(e.dir, "broker"))
	bo.Logger = quietLogger()
	bo.SegmentBytes = 1024
	bo.IndexSegmentEntries = 1
	bo.RetentionBytes = 1
	bo.RetentionCheckInterval = time.Hour
	bo.CheckpointInterval = time.Hour
	var err error
	if e.b, err = broker.Open(bo); err != nil {
		t.Fatal(err)
	}
	if _, err := e.b.CreateTopic(filler, broker.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	other := broker.Xid{FormatID: 7, Gtrid: []byte("unrelated-" + e.suffix), Bqual: []byte("b")}
	if err := e.b.XAStart(other, broker.XANoFlags, 0); err != nil {
		t.Fatal(err)
	}
	if err := e.b.XAAdd(other, []broker.TxMessage{msg(filler, "", "unrelated")}); err != nil {
		t.Fatal(err)
	}
	if err := e.b.XAEnd(other, broker.XASuccess); err != nil {
		t.Fatal(err)
	}
	if _, err := e.b.XAPrepare(ctx, other); err != nil {
		t.Fatal(err)
	}

	logDir := filepath.Join(bo.Dir, "log") + string(filepath.Separator)
	var (
		mu      sync.Mutex
		armed   chan struct{} // closed when the armed sync is held
		release chan struct{}
	)
	restore := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		mu.Lock()
		held, rel := armed, release
		if held != nil && ev.Kind == fsutil.File && strings.HasPrefix(ev.Path, logDir) {
			armed = nil
		} else {
			held = nil
		}
		mu.Unlock()
		if held != nil {
			close(held)
			<-rel
		}
		return do()
	})
	defer restore()

	var bg sync.WaitGroup
	defer bg.Wait()
	node := newNode(t)
	o := e.options(node)
	o.Grace = time.Hour // only decisions may finish these branches
	c, err := Open(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	c.hookAfterDecision = func(gtrid string) error {
		// Newer data in every partition and a new log segment: the prepare batches are old.
		if _, err := e.b.Produce(ctx, topic, []broker.Message{{Value: []byte("marker"), Partition: -1}}, ""); err != nil {
			return err
		}
		if _, err := e.b.Produce(ctx, filler, []broker.Message{{Value: make([]byte, 1100), Partition: -1}}, ""); err != nil {
			return err
		}
		held, rel := make(chan struct{}), make(chan struct{})
		mu.Lock()
		armed, release = held, rel
		mu.Unlock()
		retained := make(chan struct{})
		bg.Add(1)
		go func() {
			defer bg.Done()
			defer close(retained)
			e.b.EnforceRetention()
		}()
		select {
		case <-retained: // nothing compacted this time
			mu.Lock()
			armed = nil
			mu.Unlock()
			return nil
		case <-held:
		}
		// A re-prepare is in fdatasync and the other one waits its turn: let it go once this
		// transfer's broker commit is under way.
		bx := makeXid(gtrid, "broker")
		bg.Add(1)
		go func() {
			defer bg.Done()
			defer close(rel)
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				if st, ok := e.b.XAState(bx); !ok || st != broker.TxPrepared {
					return
				}
				time.Sleep(100 * time.Microsecond)
			}
		}()
		return nil
	}
	for i := 0; i < transfers; i++ {
		id := fmt.Sprintf("rp-%s-%d", e.suffix, i)
		_, err := c.Run(ctx, BeginOptions{ID: id}, func(ctx context.Context, tx *GlobalTx) error {
			return transfer(ctx, tx, table, "a", "b", 1, msg(topic, id, `{"amount":1}`))
		})
		if err != nil {
			t.Fatalf("transfer %s: %v", id, err)
		}
	}
	bg.Wait()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// Restart without a checkpoint: a full rebuild. (The log is the same after this close as
	// after a crash: nothing is queued; the close only adds the checkpoint that is removed.)
	if err := e.b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(bo.Dir, "checkpoint.json")); err != nil {
		t.Fatal(err)
	}
	if e.b, err = broker.Open(bo); err != nil {
		t.Fatal(err)
	}
	reprepared := 0
	for _, x := range e.b.XARecover() {
		if _, n, _, _ := parseXid(x); n == node {
			reprepared++
		}
	}
	if reprepared > 0 {
		t.Errorf("%d committed broker branches came back prepared after the restart", reprepared)
	}
	o.Resources = []Resource{MySQL("wallet", e.my), Postgres("ledger", e.pg), Broker("broker", e.b)}
	c2 := e.open(o)
	if err := c2.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	info, err := e.b.Topic(topic)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Partitions[0].EndOffset; got != 2*transfers {
		t.Errorf("%d messages for %d transfers (and %d markers)", got-transfers, transfers, transfers)
	}
	if p := e.prepared(node); len(p) != 0 {
		t.Errorf("prepared after recovery: %v", p)
	}
	if got := e.balance(e.pg, table, "b"); got != transfers {
		t.Errorf("ledger b = %d, want %d", got, transfers)
	}
	if err := e.b.XARollback(ctx, other); err != nil {
		t.Errorf("roll back the unrelated branch: %v", err)
	}
}
