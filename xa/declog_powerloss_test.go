package xa

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/fsutil"
	"github.com/imagomq/imago/internal/powerloss"
)

// Power-loss tests of the file decision log: every sync goes through a recorder
// (internal/powerloss), a test holds one chosen sync (the writer stuck in fdatasync), the power
// goes there, and everything no sync covered is dropped (a real power loss cannot be staged on
// cue). An acknowledged decision must survive; one whose sync never completed may be lost only
// if it was never acknowledged, and not once a restart has read it and could have acted on it.

// plHarness records every sync and holds the one hold accepts (once).
type plHarness struct {
	t   *testing.T
	rec *powerloss.Recorder

	mu      sync.Mutex
	hold    func(fsutil.Event) bool // nil: hold nothing
	held    chan struct{}
	release chan error
}

func newPLHarness(t *testing.T) *plHarness {
	t.Helper()
	h := &plHarness{t: t, rec: powerloss.New(), held: make(chan struct{}), release: make(chan error, 1)}
	restore := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		h.mu.Lock()
		hold := h.hold != nil && h.hold(ev)
		if hold {
			h.hold = nil
		}
		h.mu.Unlock()
		if hold {
			close(h.held)
			if err := <-h.release; err != nil {
				return err // the sync never happened
			}
		}
		return h.rec.Hook(ev, do)
	})
	t.Cleanup(restore)
	return h
}

// holdWhen arms the hold: the first sync match accepts (called under the harness's lock, in
// sync order) is held until release.
func (h *plHarness) holdWhen(match func(fsutil.Event) bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hold = match
}

// powerLoss drops, under root, everything no recorded sync covered.
func (h *plHarness) powerLoss(root string) {
	h.t.Helper()
	loss, err := h.rec.Drop(root)
	if err != nil {
		h.t.Fatalf("power loss: %v", err)
	}
	h.t.Logf("power loss: %d files cut (%d bytes), names dropped: %v", loss.Truncated, loss.Bytes, loss.Removed)
}

// logFileSync matches a file sync of the decision log in dir, under its name or under the
// compaction's temporary one (the log's file after a compaction was opened under that name).
func logFileSync(dir string) func(fsutil.Event) bool {
	return func(ev fsutil.Event) bool {
		return ev.Kind == fsutil.File && filepath.Dir(ev.Path) == filepath.Clean(dir) &&
			(filepath.Base(ev.Path) == logFileName || filepath.Base(ev.Path) == logFileName+".compact")
	}
}

// nth matches the n-th event (from 1) that match accepts.
func nth(n int, match func(fsutil.Event) bool) func(fsutil.Event) bool {
	seen := 0
	return func(ev fsutil.Event) bool {
		if match(ev) {
			seen++
		}
		return seen == n
	}
}

// appendUntilHeld appends records from sampleRecord(from) on, in rounds of one to five
// records queued together (so that records share a write and a sync), waiting for each round,
// until the held sync is reached. It returns the gtrids acknowledged before that: while the
// sync is held the writer answers nothing, so they are exactly the ones answered by then.
func appendUntilHeld(t *testing.T, h *plHarness, l *decisionLog, from int) map[string]bool {
	t.Helper()
	acked := map[string]bool{}
	collect := func(reqs []*logReq) {
		for _, req := range reqs {
			select {
			case err := <-req.done:
				if err == nil {
					acked[req.rec.Gtrid] = true
				}
			default: // unanswered, or taken already
			}
		}
	}
	i := from
	for round := 0; round < 10000; round++ {
		var reqs []*logReq
		for range 1 + round%5 {
			req := &logReq{rec: sampleRecord(i), sync: true, done: make(chan error, 1)}
			i++
			if err := l.submit(req); err != nil {
				t.Fatal(err)
			}
			reqs = append(reqs, req)
		}
		for _, req := range reqs {
			select {
			case err := <-req.done:
				if err != nil {
					t.Fatalf("append before the held sync: %v", err)
				}
				acked[req.rec.Gtrid] = true
			case <-h.held:
				collect(reqs)
				return acked
			}
		}
	}
	t.Fatal("the sync to hold never came")
	return nil
}

// reopenAfterPowerLoss opens the log in dir again and fails the test for every gtrid of acked
// it does not hold.
func reopenAfterPowerLoss(t *testing.T, dir string, acked map[string]bool) map[string]record {
	t.Helper()
	l, recs, err := openDecisionLog(dir, time.Hour, 1<<20, time.Now, nil, nil, quietLogger())
	if err != nil {
		t.Fatalf("reopen after the power loss: %v", err)
	}
	defer l.close()
	got := byLast(recs)
	lost := 0
	for g := range acked {
		if _, ok := got[g]; !ok {
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged decisions are gone after the power loss", lost, len(acked))
	}
	return got
}

// The power goes while the writer waits in the fdatasync of its n-th write: every decision
// acknowledged before it is there after the restart; the ones in the interrupted write were
// never acknowledged (their fsync failed).
func TestDecisionLogAppendsSurvivePowerLoss(t *testing.T) {
	for n := 1; n <= 6; n++ {
		t.Run(fmt.Sprint("crash in sync ", n), func(t *testing.T) {
			h := newPLHarness(t)
			dir := t.TempDir()
			l, _, err := openDecisionLog(dir, time.Hour, 1<<20, time.Now, nil, nil, quietLogger())
			if err != nil {
				t.Fatal(err)
			}
			h.holdWhen(nth(n, logFileSync(dir)))
			acked := appendUntilHeld(t, h, l, 0)
			h.powerLoss(dir)
			if n > 1 && len(acked) == 0 {
				t.Error("nothing was acknowledged before the power loss")
			}
			reopenAfterPowerLoss(t, dir, acked)
			h.release <- syscall.EIO // the old process's fdatasync never completes
			l.close()
		})
	}
}

// A restart reads the log from the page cache, where a write whose fsync never completed (the
// process died in fdatasync) still is. What it reads it acts on: a commit decision has
// recovery commit the branches, a client id is answered as a duplicate. So it must make what
// it read durable before it returns it: after a power loss the commit decision must still be
// there, or the next restart would presume abort and roll back the branches not yet committed.
func TestDecisionLogRestartSyncsWhatItReads(t *testing.T) {
	h := newPLHarness(t)
	dir := t.TempDir()
	l, _, err := openDecisionLog(dir, time.Hour, 1<<20, time.Now, nil, nil, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := l.appendSync(context.Background(), sampleRecord(1)); err != nil {
		t.Fatal(err)
	}
	h.holdWhen(logFileSync(dir))
	decided := sampleRecord(2) // a commit decision
	first := make(chan error, 1)
	go func() { first <- l.appendSync(context.Background(), decided) }()
	<-h.held // written, not yet synced: the process dies here

	l2, recs, err := openDecisionLog(dir, time.Hour, 1<<20, time.Now, nil, nil, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := byLast(recs)[decided.Gtrid]; !ok {
		t.Fatal("the restart did not read the decision from the page cache; the test shows nothing")
	}
	l2.close()
	h.powerLoss(dir) // and then the power goes
	got := reopenAfterPowerLoss(t, dir, map[string]bool{sampleRecord(1).Gtrid: true})
	if _, ok := got[decided.Gtrid]; !ok {
		t.Error("the commit decision a restart read (and could have acted on) is gone after a power loss")
	}
	h.release <- syscall.EIO
	if err := <-first; err == nil {
		t.Error("the first process acknowledged a decision whose fsync failed")
	}
	l.close()
}

// The power goes at each step of a compaction and after it: while the compacted file's fsync
// is held (the temporary name was never made durable), after the rename while the directory
// fsync is held, and at the first and the second write after the compaction. No decision in
// the log before the compaction, nor any acknowledged after it, may be lost.
func TestDecisionLogCompactionSurvivesPowerLoss(t *testing.T) {
	tmpSync := func(dir string) func(fsutil.Event) bool {
		return func(ev fsutil.Event) bool {
			return ev.Kind == fsutil.File && ev.Path == filepath.Join(dir, logFileName+".compact")
		}
	}
	dirSync := func(dir string) func(fsutil.Event) bool {
		return func(ev fsutil.Event) bool {
			return ev.Kind == fsutil.Dir && filepath.Clean(ev.Path) == filepath.Clean(dir)
		}
	}
	// afterCompaction matches the n-th file sync of the log after the first compaction's
	// directory sync.
	afterCompaction := func(n int) func(dir string) func(fsutil.Event) bool {
		return func(dir string) func(fsutil.Event) bool {
			compacted, seen := false, 0
			isDir, isLog := dirSync(dir), logFileSync(dir)
			return func(ev fsutil.Event) bool {
				switch {
				case isDir(ev):
					compacted = true
				case compacted && isLog(ev):
					seen++
				}
				return seen == n
			}
		}
	}
	for _, tc := range []struct {
		name  string
		match func(dir string) func(fsutil.Event) bool
	}{
		{"compacted file not synced", tmpSync},
		{"renamed, directory not synced", dirSync},
		{"first write after", afterCompaction(1)},
		{"second write after", afterCompaction(2)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newPLHarness(t)
			dir := t.TempDir()
			l, _, err := openDecisionLog(dir, time.Hour, 4096, time.Now, nil, nil, quietLogger())
			if err != nil {
				t.Fatal(err)
			}
			h.holdWhen(tc.match(dir)) // armed after the open's own directory sync
			acked := appendUntilHeld(t, h, l, 0)
			h.powerLoss(dir)
			reopenAfterPowerLoss(t, dir, acked)
			// Only now does the old process's held sync fail: it must write nothing more into
			// the directory checked above.
			h.release <- syscall.EIO
			l.close()
		})
	}
}
