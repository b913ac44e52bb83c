package dedupe

import (
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// monoClock is a fake monotonic clock, apart from the fake wall clock: a step of the wall
// clock (clock.set) leaves it where it is, as a real NTP step leaves CLOCK_MONOTONIC.
type monoClock struct{ ms atomic.Int64 }

func (m *monoClock) Elapsed() time.Duration  { return time.Duration(m.ms.Load()) * time.Millisecond }
func (m *monoClock) advance(d time.Duration) { m.ms.Add(d.Milliseconds()) }

// TestWindowSurvivesWallClockStep: a step of the wall clock, forward by days or back by a
// year and corrected, forgets no key before it has been remembered for the window by the
// monotonic clock, neither in Get nor in Expire (memory and files); once the window has
// really passed, both forget it.
func TestWindowSurvivesWallClockStep(t *testing.T) {
	for _, tc := range []struct {
		name       string
		addAt, now time.Duration // wall clock at the Add, and after the step
	}{
		{"forward by 30 days", 0, 30 * 24 * time.Hour},
		{"added while a year behind, then corrected", -365 * 24 * time.Hour, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, m := newClock(), &monoClock{}
			dir := t.TempDir()
			o := testOpts(dir, c) // window 1h, rotate 10m
			o.Elapsed = m.Elapsed
			s := mustOpen(t, o, Checkpoint{})
			c.set(c.at(tc.addAt))
			old := entry(0, c.ms.Load())
			mustAdd(t, s, old)
			c.set(c.at(tc.addAt + 10*time.Minute)) // rotate: old's file is not the current one
			m.advance(10 * time.Minute)
			mustAdd(t, s, entry(1, c.ms.Load()))
			mustSync(t, s)
			files := fileNames(t, dir)

			c.set(c.at(tc.now)) // the step
			m.advance(time.Minute)
			check(t, s, 2, old, entry(1, c.at(tc.addAt+10*time.Minute)))
			if err := s.Expire(); err != nil {
				t.Fatal(err)
			}
			check(t, s, 2, old, entry(1, c.at(tc.addAt+10*time.Minute)))
			if got := fileNames(t, dir); !slices.Equal(got, files) {
				t.Fatalf("files after the step %v, want %v", got, files)
			}

			m.advance(time.Hour) // the window has really passed for old (71 minutes)
			if err := s.Expire(); err != nil {
				t.Fatal(err)
			}
			check(t, s, 2)
			if got := fileNames(t, dir); len(got) != 1 {
				t.Fatalf("files once the window passed %v, want only the current one", got)
			}
		})
	}
}
