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

// TestFoundEntriesSurviveWallClockStepWhileDown: a step of the wall clock made while no
// process ran (the store closed, the wall clock moved 30 days, a new process's monotonic clock
// starting at zero) forgets no entry found at Open, loaded from the files or added again by
// the caller's replay: each is as old as it was against Options.Newest, the newest time the
// caller's data held. Once the window has passed by both clocks since, they are forgotten.
// Without Newest the wall clock alone ages them, as before.
func TestFoundEntriesSurviveWallClockStepWhileDown(t *testing.T) {
	for _, known := range []bool{true, false} {
		t.Run(map[bool]string{true: "newest known", false: "newest unknown"}[known], func(t *testing.T) {
			c, m := newClock(), &monoClock{}
			dir := t.TempDir()
			o := testOpts(dir, c) // window 1h, rotate 10m
			o.Elapsed = m.Elapsed
			s := mustOpen(t, o, Checkpoint{})
			old := entry(0, c.ms.Load())
			mustAdd(t, s, old)
			c.set(c.at(10 * time.Minute)) // rotate: old's file is not the last one
			m.advance(10 * time.Minute)
			last := entry(1, c.ms.Load())
			mustAdd(t, s, last)
			cp := mustSync(t, s)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			files := fileNames(t, dir)

			c.set(c.at(10*time.Minute + 30*24*time.Hour)) // the step, while down
			m = &monoClock{}                              // a new process
			o.Elapsed = m.Elapsed
			if known {
				o.Newest = last.Time
			}
			s = mustOpen(t, o, cp)
			replayed := entry(2, last.Time) // the caller's replay of its log after cp
			mustAdd(t, s, replayed)
			if !known {
				check(t, s, 3)
				return
			}
			check(t, s, 3, old, last, replayed) // old is 10 minutes old, the others new
			if err := s.Expire(); err != nil {
				t.Fatal(err)
			}
			check(t, s, 3, old, last, replayed)
			for _, f := range files {
				if !slices.Contains(fileNames(t, dir), f) {
					t.Fatalf("file %s deleted right after the restart; files %v", f, fileNames(t, dir))
				}
			}

			m.advance(50*time.Minute + time.Millisecond) // old: past the window by both clocks
			check(t, s, 3, last, replayed)
			m.advance(10 * time.Minute) // all of them
			if err := s.Expire(); err != nil {
				t.Fatal(err)
			}
			check(t, s, 3)
			if got := fileNames(t, dir); len(got) != 1 {
				t.Fatalf("files once the window passed %v, want only the current one", got)
			}
		})
	}
}
