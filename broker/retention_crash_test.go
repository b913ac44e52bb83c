package broker

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// logBuffer collects a broker's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// retentionOptions: small segments and a byte cap, so that retention deletes log segments and
// compacts prepared branches; only the test runs retention and checkpoints.
func retentionOptions(t *testing.T, dir string, logs *logBuffer) Options {
	o := testOptions(t, dir)
	o.SegmentBytes = 4096
	o.IndexSegmentEntries = 16
	o.RetentionBytes = 2000
	o.CheckpointInterval = time.Hour
	o.RetentionCheckInterval = time.Hour
	if logs != nil {
		o.Logger = slog.New(slog.NewTextHandler(logs, nil))
	}
	return o
}

func prepareBranch(t *testing.T, b *Broker, x Xid, topic string, vals ...string) {
	t.Helper()
	ctx := context.Background()
	if err := b.XAStart(x, XANoFlags, 0); err != nil {
		t.Fatal(err)
	}
	if err := b.XAAdd(x, txMsgs(topic, vals...)); err != nil {
		t.Fatal(err)
	}
	if err := b.XAEnd(x, XASuccess); err != nil {
		t.Fatal(err)
	}
	if _, err := b.XAPrepare(ctx, x); err != nil {
		t.Fatal(err)
	}
}

func fill(t *testing.T, b *Broker, topic string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := b.Produce(context.Background(), topic, []Message{{Value: []byte(fmt.Sprintf("filler-%03d", i)), Partition: -1}}, ""); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRetentionCrashKeepsCheckpointUsable: retention checkpoints, then compacts an old prepared
// branch to the head of the log and deletes the segment its prepare batch was in. A crash
// before the next checkpoint left a checkpoint naming the deleted prepare position, and the
// next start replayed the whole retained log (a full rebuild) instead of the tail.
func TestRetentionCrashKeepsCheckpointUsable(t *testing.T) {
	dir := t.TempDir()
	logs := &logBuffer{}
	o := retentionOptions(t, dir, logs)
	ctx := context.Background()
	b := mustOpen(t, o)
	mustCreate(t, b, "a", 2)
	x := xid(1)
	prepareBranch(t, b, x, "a", "keep-0", "keep-1")
	fill(t, b, "a", 300)
	if err := b.checkpoint(); err != nil {
		t.Fatal(err)
	}
	b.EnforceRetention()
	if b.log.start() == 0 {
		t.Fatal("retention deleted no log segment")
	}
	b.abandon() // crash right after the retention pass
	b = mustOpen(t, o)
	defer b.Close()
	if strings.Contains(logs.String(), "rebuilding every index") {
		t.Errorf("start-up after a crash behind retention rebuilt every index:\n%s", logs.String())
	}
	if res, err := b.XACommit(ctx, x, false); err != nil || len(res) != 2 {
		t.Fatalf("commit of the compacted branch after the crash: %v %v", res, err)
	}
}

// TestHeuristicSurvivesRebuildAfterRetention: a heuristic outcome lives in the log batch of the
// decision and in checkpoints. Once retention deleted that batch, a full rebuild (no usable
// checkpoint) forgot it, and the transaction manager's commit got XAER_NOTA, which managers
// read as "already committed", although the broker rolled the messages back.
func TestHeuristicSurvivesRebuildAfterRetention(t *testing.T) {
	dir := t.TempDir()
	o := retentionOptions(t, dir, nil)
	ctx := context.Background()
	b := mustOpen(t, o)
	mustCreate(t, b, "a", 2)
	rb, cm := xid(1), xid(2)
	prepareBranch(t, b, rb, "a", "rolled-back")
	prepareBranch(t, b, cm, "a", "committed")
	if err := b.XAHeuristic(ctx, rb, false); err != nil {
		t.Fatal(err)
	}
	if err := b.XAHeuristic(ctx, cm, true); err != nil {
		t.Fatal(err)
	}
	fill(t, b, "a", 300)
	if err := b.checkpoint(); err != nil {
		t.Fatal(err)
	}
	b.EnforceRetention()
	b.EnforceRetention()
	if b.log.start() == 0 {
		t.Fatal("retention deleted no log segment")
	}
	b.Close()
	// No checkpoint: the next start rebuilds everything from the log that is left.
	if err := os.Remove(filepath.Join(dir, checkpointFileName)); err != nil {
		t.Fatal(err)
	}
	b = mustOpen(t, o)
	defer b.Close()
	if got := xaCode(b.XARollback(ctx, rb)); got != XAHeurRB {
		t.Errorf("rollback after a rebuild: %q, want %s (the heuristic rollback was forgotten)", got, XAHeurRB)
	}
	if _, err := b.XACommit(ctx, cm, false); xaCode(err) != XAHeurCom {
		t.Errorf("commit after a rebuild: %v, want %s", err, XAHeurCom)
	}
	if got := len(b.XARecover()); got != 2 {
		t.Errorf("recover lists %d branches after the rebuild, want the 2 heuristic ones", got)
	}
}
