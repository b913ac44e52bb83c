package cluster

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// readFaultLog is a MemLog whose reads of entries from index from on fail once armed (from >
// 0): a damaged disk's read error, on cue. It is a fake because a real disk cannot be made to
// fail one read of one entry at the moment a test needs it (replica's
// TestLeaderCorruptLogStopsCleanly damages a real log file instead).
type readFaultLog struct {
	*MemLog
	from atomic.Uint64
}

var errBadSector = errors.New("read segment 00000000000000000000.log at byte 4096: input/output error")

func (l *readFaultLog) Entries(lo, hi, maxSize uint64) ([]Entry, error) {
	if from := l.from.Load(); from > 0 && hi > from {
		return nil, errBadSector
	}
	return l.MemLog.Entries(lo, hi, maxSize)
}

// TestNodeStorageReadErrorStopsCleanly: the leader's log fails to read back an entry it has just
// persisted, while the proposal of that entry waits. Raft panics on any storage error but its
// own two, which ended the process; the node must stop instead, with the storage's error as
// its status, and the waiting proposal must end with ErrOutcomeUnknown (its entry may commit
// on the others). The two others go on.
func TestNodeStorageReadErrorStopsCleanly(t *testing.T) {
	logs := map[uint64]*readFaultLog{}
	c := startChanCluster(t, func(c *testCluster) {
		c.wrap = func(id uint64, m *MemLog) LogStore {
			logs[id] = &readFaultLog{MemLog: m}
			return logs[id]
		}
	})
	l := c.leader(t, 0)
	if err := l.Propose(context.Background(), []byte("first")); err != nil {
		t.Fatal(err)
	}
	logs[l.cfg.ID].from.Store(logs[l.cfg.ID].LastIndex() + 1)
	err := l.Propose(context.Background(), []byte("second"))
	if !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, errBadSector) {
		t.Fatalf("propose while the leader's log fails to read: %v, want ErrOutcomeUnknown naming the read error", err)
	}
	select {
	case <-l.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the leader whose log cannot be read kept running")
	}
	if err := l.Status().Err; !errors.Is(err, errBadSector) || !strings.Contains(err.Error(), "read the raft log") {
		t.Fatalf("stopped leader's status error = %v, want the read error", err)
	}
	if l.Status().Serving {
		t.Fatal("the stopped leader reports serving")
	}
	n := c.leader(t, l.cfg.ID)
	if err := n.Propose(context.Background(), []byte("third")); err != nil {
		t.Fatalf("propose through the new leader: %v", err)
	}
}
