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
// or found at Open), not after a correction of a clock that was a year behind when the
// messages were written. Once the retention age has passed by the monotonic clock too, the
// segments go.
func TestRetentionAgeSurvivesWallClockStep(t *testing.T) {
	for _, tc := range []struct {
		name          string
		before, after time.Duration // wall-clock steps before the writes and after them
		restart       bool          // the broker restarts between the writes and the step
	}{
		{"forward by 30 days", 0, 30 * 24 * time.Hour, false},
		{"forward by 30 days after a restart", 0, 30 * 24 * time.Hour, true},
		{"written a year behind, then corrected", -365 * 24 * time.Hour, 365 * 24 * time.Hour, false},
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
			if tc.restart {
				b.Close()
				clk.restart()
				b = mustOpen(t, o)
			}
			clk.pass(time.Minute)
			clk.step(tc.after)
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
