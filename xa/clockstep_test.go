package xa

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// steppedClock is a wall clock (Now) and a monotonic one (Elapsed) that the test moves apart,
// as a step of the system clock does: Go's own monotonic reading cannot be stepped in a test.
type steppedClock struct {
	mu   sync.Mutex
	wall time.Time
	mono time.Duration
}

// newSteppedClock starts both clocks at the real time (without its monotonic reading, so that
// only the test moves it): timers the code under test sets run on the real clock, and a fixed
// date would put its deadlines in the past once the real clock passed it.
func newSteppedClock() *steppedClock { return &steppedClock{wall: time.Now().Round(0)} }

func (k *steppedClock) now() time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.wall
}

func (k *steppedClock) elapsed() time.Duration {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.mono
}

// advance moves the wall clock by wall and the monotonic clock by mono.
func (k *steppedClock) advance(wall, mono time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.wall, k.mono = k.wall.Add(wall), k.mono+mono
}

// A wall clock stepped forward past the client-id retention must not make the coordinator
// forget a client id, in the process that finished the transaction nor in one that loaded it
// from the decision log at start-up: a repeat of the id would run the transfer a second time.
// The id is forgotten once the retention has really passed. The step may also come while no
// coordinator runs (a host that boots with its hardware clock hours ahead): the restart must
// not take the time it did not see as passed.
func TestClientIDSurvivesWallClockStep(t *testing.T) {
	for _, mode := range []string{"same process", "after a restart", "while down"} {
		restart := mode != "same process"
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			k := newSteppedClock()
			open := func() *Coordinator {
				o := NewOptions(dir)
				o.Logger = quietLogger()
				o.Now, o.Elapsed = k.now, k.elapsed
				c, err := Open(context.Background(), o)
				if err != nil {
					t.Fatal(err)
				}
				return c
			}
			ctx := context.Background()
			c := open()
			tx, err := c.Begin(ctx, BeginOptions{ID: "pay-1", Digest: "a"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			step := 2 * time.Hour // the wall clock steps forward by two hours
			if restart {
				c.Close()
				if mode == "while down" {
					k.advance(step, 0)
					step = 0
				} else {
					k.advance(time.Minute, time.Minute)
				}
				c = open()
			}
			defer func() { c.Close() }()
			repeat := func() error {
				c.prune()
				tx, err := c.Begin(ctx, BeginOptions{ID: "pay-1", Digest: "a"})
				if err == nil {
					_, err = tx.Rollback(ctx, nil) // a new transaction: end it, Close waits for it
				}
				return err
			}

			k.advance(step, time.Minute)
			var dup *DuplicateError
			if err := repeat(); !errors.As(err, &dup) || dup.Info.Status != StatusCommitted {
				t.Fatalf("repeat of pay-1 after the wall clock stepped forward: %v; want the committed duplicate", err)
			}
			k.advance(time.Hour, time.Hour) // now the retention (1h) has passed by both clocks
			if err := repeat(); err != nil {
				t.Fatalf("repeat of pay-1 after its retention passed: %v; want a new transaction", err)
			}
		})
	}
}
