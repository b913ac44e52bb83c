package broker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// stepClocks is a fake wall clock (Options.Now) and a fake monotonic clock (Options.Elapsed):
// step moves the wall clock alone, as an NTP step or a date set by hand does; pass moves both,
// as real time does.
type stepClocks struct {
	mu   sync.Mutex
	wall time.Time
	mono time.Duration
}

func newStepClocks() *stepClocks {
	return &stepClocks{wall: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *stepClocks) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wall
}

func (c *stepClocks) elapsed() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mono
}

func (c *stepClocks) step(d time.Duration) { c.mu.Lock(); c.wall = c.wall.Add(d); c.mu.Unlock() }

func (c *stepClocks) pass(d time.Duration) {
	c.mu.Lock()
	c.wall, c.mono = c.wall.Add(d), c.mono+d
	c.mu.Unlock()
}

// restart makes the monotonic clock start again, as a new process's does.
func (c *stepClocks) restart() { c.mu.Lock(); c.mono = 0; c.mu.Unlock() }

// TestRetentionAgeSurvivesWallClockStep: retention by age deletes no message because of a step
// of the wall clock: not after a step forward by 30 days (of messages written in this process
// or found at Open, also when the step came while the broker was down), not after a correction
// of a clock that was a year behind when the messages were written. Once the retention age has
// passed by the monotonic clock too, the segments go.
func TestRetentionAgeSurvivesWallClockStep(t *testing.T) {
	for _, tc := range []struct {
		name          string
		before, after time.Duration // wall-clock steps before the writes and after them
		restart       bool          // the broker restarts between the writes and the step
		down          bool          // the step comes while the broker is down, before the restart
	}{
		{"forward by 30 days", 0, 30 * 24 * time.Hour, false, false},
		{"forward by 30 days after a restart", 0, 30 * 24 * time.Hour, true, false},
		{"forward by 30 days while down", 0, 30 * 24 * time.Hour, true, true},
		{"written a year behind, then corrected", -365 * 24 * time.Hour, 365 * 24 * time.Hour, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newStepClocks()
			o := testOptions(t, t.TempDir())
			o.Now, o.Elapsed = clk.now, clk.elapsed
			o.IndexSegmentEntries = 10
			o.RetentionCheckInterval = time.Hour // driven by hand below
			b := mustOpen(t, o)
			defer func() { b.Close() }()
			if _, err := b.CreateTopic("pay", TopicConfig{Partitions: 1, RetentionAge: time.Hour}); err != nil {
				t.Fatal(err)
			}
			clk.step(tc.before)
			for i := 0; i < 25; i++ {
				if _, err := b.Produce(context.Background(), "pay", []Message{msg(fmt.Sprintf("m%d", i))}, ""); err != nil {
					t.Fatal(err)
				}
			}
			step := tc.after
			if tc.restart {
				b.Close()
				clk.restart()
				if tc.down {
					clk.step(step)
					step = 0
				}
				b = mustOpen(t, o)
			}
			clk.pass(time.Minute)
			clk.step(step)
			b.EnforceRetention()
			if n := len(fetchAll(t, b, "pay", 0)); n != 25 {
				t.Fatalf("after the step: %d of 25 messages left", n)
			}
			clk.pass(time.Hour) // now the retention age has really passed
			b.EnforceRetention()
			info, _ := b.Topic("pay")
			if got := info.Partitions[0].StartOffset; got != 20 {
				t.Fatalf("start once the age passed = %d, want 20 (the active index segment stays)", got)
			}
		})
	}
}

// TestIdempotencyWindowSurvivesWallClockStep: a step of the wall clock forward by 30 days,
// with a retention pass (which expires keys) after it, does not make the broker forget an
// Idempotency-Key: the producer's retry right after the step is a duplicate, not a second
// copy. Once the window has passed by the monotonic clock too, the key is forgotten.
func TestIdempotencyWindowSurvivesWallClockStep(t *testing.T) {
	clk := newStepClocks()
	o := testOptions(t, t.TempDir())
	o.Now, o.Elapsed = clk.now, clk.elapsed
	o.IdempotencyWindow = time.Hour
	o.RetentionCheckInterval = time.Hour // driven by hand below
	b := mustOpen(t, o)
	defer b.Close()
	mustCreate(t, b, "t", 1)
	if _, err := b.Produce(context.Background(), "t", []Message{msg("pay 100")}, "k"); err != nil {
		t.Fatal(err)
	}
	clk.pass(time.Second)
	clk.step(30 * 24 * time.Hour)
	b.EnforceRetention()
	res, err := b.Produce(context.Background(), "t", []Message{msg("pay 100")}, "k")
	if err != nil || !res.Duplicate || res.Offsets[0].Offset != 0 {
		t.Fatalf("retry after the step: %+v %v, want a duplicate of offset 0", res, err)
	}
	if n := len(fetchAll(t, b, "t", 0)); n != 1 {
		t.Fatalf("%d copies stored", n)
	}
	clk.pass(time.Hour)
	b.EnforceRetention()
	res, err = b.Produce(context.Background(), "t", []Message{msg("pay 100")}, "k")
	if err != nil || res.Duplicate {
		t.Fatalf("once the window passed: %+v %v, want a new append", res, err)
	}
}

// TestIdempotencyKeySurvivesWallClockStepWhileDown: the wall clock steps forward past the
// window while the broker is down (a host booting with its clock two hours ahead): the
// producer's retry right after the restart is a duplicate with the first offsets, not a second
// copy, whether the key was in the idempotency files (closed) or only in the log after the
// last checkpoint (crashed), and after one more restart. Once the window has passed by both
// clocks, the key is forgotten.
func TestIdempotencyKeySurvivesWallClockStepWhileDown(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(map[bool]string{false: "closed", true: "crashed"}[crash], func(t *testing.T) {
			clk := newStepClocks()
			o := manualOptions(t, t.TempDir()) // no checkpoint but Open's and Close's
			o.Now, o.Elapsed = clk.now, clk.elapsed
			o.IdempotencyWindow = time.Hour
			b := mustOpen(t, o)
			defer func() { b.Close() }()
			mustCreate(t, b, "t", 1)
			produce := func() ProduceResult {
				t.Helper()
				res, err := b.Produce(context.Background(), "t", []Message{msg("pay 100")}, "k")
				if err != nil {
					t.Fatal(err)
				}
				return res
			}
			if res := produce(); res.Duplicate || res.Offsets[0].Offset != 0 {
				t.Fatalf("first produce: %+v", res)
			}
			// restart stops the broker, steps the wall clock by step while it is down and
			// starts it again (a new process: its monotonic clock starts at zero).
			restart := func(step time.Duration) {
				t.Helper()
				if crash {
					b.abandon()
				} else if err := b.Close(); err != nil {
					t.Fatal(err)
				}
				clk.restart()
				clk.step(step)
				b = mustOpen(t, o)
			}
			clk.pass(time.Second)
			for i, when := range []string{"after the restart", "after one more restart"} {
				restart([]time.Duration{2 * time.Hour, 0}[i])
				b.EnforceRetention()
				if res := produce(); !res.Duplicate || res.Offsets[0].Offset != 0 {
					t.Fatalf("retry %s: %+v, want a duplicate of offset 0", when, res)
				}
			}
			if n := len(fetchAll(t, b, "t", 0)); n != 1 {
				t.Fatalf("%d copies stored", n)
			}
			clk.pass(time.Hour + time.Second)
			b.EnforceRetention()
			if res := produce(); res.Duplicate {
				t.Fatalf("once the window passed: %+v, want a new append", res)
			}
		})
	}
}

// TestReplicatedIdempotencyKeySurvivesWallClockStepWhileDown: the same for a cluster member
// that crashed with the key's entry in its raft log after its last checkpoint: the wall clock
// steps forward past the window while it is down, raft re-delivers the entry after the
// restart, and the retry is still a duplicate. Once the window has passed by both clocks, the
// key is forgotten.
func TestReplicatedIdempotencyKeySurvivesWallClockStepWhileDown(t *testing.T) {
	clk := newStepClocks()
	dir := t.TempDir()
	open := func() *Broker {
		o := manualOptions(t, dir)
		o.Now, o.Elapsed = clk.now, clk.elapsed
		o.IdempotencyWindow = time.Hour
		o.Replicated = true
		b := mustOpen(t, o)
		b.SetProposer(&loopProposer{b: b, term: 1, next: b.RaftLog().LastIndex()})
		return b
	}
	b := open()
	mustCreate(t, b, "t", 1)
	produce := func() ProduceResult {
		t.Helper()
		res, err := b.Produce(context.Background(), "t", []Message{msg("pay 100")}, "k")
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := produce(); res.Duplicate || res.Offsets[0].Offset != 0 {
		t.Fatalf("first produce: %+v", res)
	}
	clk.pass(time.Second)
	b.abandon() // no checkpoint after the key's entry
	clk.restart()
	clk.step(2 * time.Hour) // while down
	b = open()
	defer b.Close()
	reapply(t, b) // raft re-delivers the entries after the checkpoint
	if res := produce(); !res.Duplicate || res.Offsets[0].Offset != 0 {
		t.Fatalf("retry after the restart: %+v, want a duplicate of offset 0", res)
	}
	clk.pass(time.Hour + time.Second)
	if res := produce(); res.Duplicate {
		t.Fatalf("once the window passed: %+v, want a new append", res)
	}
}
