package dedupe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tornSetup writes five entries in one file, syncing after each; ends[i] is where entry i ends
// and cp the last checkpoint (all five).
func tornSetup(t *testing.T) (string, Checkpoint, []int64, *clock) {
	c := newClock()
	dir := t.TempDir()
	s := mustOpen(t, testOpts(dir, c), Checkpoint{})
	var ends []int64
	var cp Checkpoint
	for _, e := range entries(0, 5, t0) {
		mustAdd(t, s, e)
		cp = mustSync(t, s)
		ends = append(ends, cp.Size)
	}
	_ = s.Close()
	return dir, cp, ends, c
}

func flipAt(at func(ends []int64) int64) func(b []byte, ends []int64) []byte {
	return func(b []byte, ends []int64) []byte { b[at(ends)] ^= 0x40; return b }
}

// tornCases damage the file of tornSetup; entries 0..survive-1 are before the damage.
var tornCases = []struct {
	name    string
	damage  func(b []byte, ends []int64) []byte
	survive int
}{
	{"cut inside the last payload", func(b []byte, e []int64) []byte { return b[:e[4]-3] }, 4},
	{"cut inside the fourth header", func(b []byte, e []int64) []byte { return b[:e[2]+4] }, 3},
	{"cut at an entry boundary", func(b []byte, e []int64) []byte { return b[:e[3]] }, 4},
	{"cut to nothing", func(b []byte, e []int64) []byte { return b[:0] }, 0},
	{"flipped byte in the last payload", flipAt(func(e []int64) int64 { return e[3] + frameHeaderSize + 20 }), 4},
	{"flipped byte in the last crc", flipAt(func(e []int64) int64 { return e[3] + 5 }), 4},
	{"flipped byte in the last length", flipAt(func(e []int64) int64 { return e[3] }), 4},
	{"last length above the sanity limit", func(b []byte, e []int64) []byte {
		binary.LittleEndian.PutUint32(b[e[3]:], maxPayload+1)
		return b
	}, 4},
	{"flipped byte in the third entry", flipAt(func(e []int64) int64 { return e[1] + 12 }), 2},
	{"garbage after the end", func(b []byte, e []int64) []byte { return append(b, 1, 2, 3, 4, 5) }, 5},
}

func damageFile(t *testing.T, path string, damage func([]byte, []int64) []byte, ends []int64) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b = damage(b, ends)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTornTail: bytes past the checkpoint's size, torn or corrupt (never fsync'd as far as the
// checkpoint knows), are cut without a word, and the store goes on from the checkpoint.
func TestTornTail(t *testing.T) {
	for _, tt := range tornCases {
		if tt.survive < 2 {
			continue // the damage reaches into the checkpoint: TestDamageInsideCheckpoint
		}
		t.Run(tt.name, func(t *testing.T) {
			dir, last, ends, c := tornSetup(t)
			cp := Checkpoint{File: last.File, Size: ends[1]} // an earlier checkpoint: entries 0 and 1
			path := filepath.Join(dir, cp.File)
			damageFile(t, path, tt.damage, ends)
			s := mustOpen(t, testOpts(dir, c), cp)
			survivors := entries(0, 2, t0)
			check(t, s, 5, survivors...)
			if d := s.Damaged(); d != nil {
				t.Errorf("Damaged = %v, want nothing", d)
			}
			if got := fileSize(t, path); got != ends[1] {
				t.Errorf("file cut at %d, want %d", got, ends[1])
			}
			// Appending after the cut works and survives a restart.
			mustAdd(t, s, entry(9, t0))
			cp2 := mustSync(t, s)
			_ = s.Close()
			s = mustOpen(t, testOpts(dir, c), cp2)
			check(t, s, 10, append(survivors, entry(9, t0))...)
		})
	}
}

func repairOpts(dir string, c *clock, repair string) Options {
	o := testOpts(dir, c)
	o.RepairDir = repair
	return o
}

// damagedFile asserts that err is a *DamageError that names file.
func damagedFile(t *testing.T, err error, file string) {
	t.Helper()
	var de *DamageError
	if !errors.As(err, &de) {
		t.Fatalf("Open = %v, want a *DamageError", err)
	}
	for _, d := range de.Damage {
		if d.File == file {
			if !strings.Contains(err.Error(), file) {
				t.Errorf("error %q does not name %s", err, file)
			}
			return
		}
	}
	t.Fatalf("DamageError %v does not name %s", de, file)
}

// TestDamageInsideCheckpoint: a bad entry below the checkpoint's size, or the checkpointed file
// shorter than it, is damage (it was fsync'd). Without a repair directory Open refuses and
// changes nothing; with one it copies the file there, keeps the entries before the damage, cuts
// the file there and reports it, and keeps reporting it after a crash until RebuildDone.
func TestDamageInsideCheckpoint(t *testing.T) {
	for _, tt := range tornCases {
		t.Run(tt.name, func(t *testing.T) {
			dir, cp, ends, c := tornSetup(t)
			path := filepath.Join(dir, cp.File)
			damaged := damageFile(t, path, tt.damage, ends)
			repair := filepath.Join(t.TempDir(), "repair")
			if tt.survive == 5 { // nothing below the checkpoint is touched: a plain cut
				s := mustOpen(t, repairOpts(dir, c, repair), cp)
				check(t, s, 5, entries(0, 5, t0)...)
				if d := s.Damaged(); d != nil {
					t.Errorf("Damaged = %v, want nothing", d)
				}
				if _, err := os.Stat(repair); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("repair directory made (%v)", err)
				}
				return
			}
			_, err := Open(testOpts(dir, c), cp)
			damagedFile(t, err, cp.File)
			if b, _ := os.ReadFile(path); !bytes.Equal(b, damaged) {
				t.Fatalf("a refused Open changed the file")
			}

			s := mustOpen(t, repairOpts(dir, c, repair), cp)
			survivors := entries(0, tt.survive, t0)
			check(t, s, 5, survivors...)
			good := int64(0)
			if tt.survive > 0 {
				good = ends[tt.survive-1]
			}
			if d := s.Damaged(); len(d) != 1 || d[0].File != cp.File || d[0].Offset != good {
				t.Errorf("Damaged = %+v, want %s at %d", d, cp.File, good)
			}
			if got := fileSize(t, path); got != good {
				t.Errorf("file cut at %d, want %d", got, good)
			}
			if b, err := os.ReadFile(filepath.Join(repair, cp.File)); err != nil || !bytes.Equal(b, damaged) {
				t.Errorf("copy in the repair directory: %v, equal to the damaged file: %v", err, bytes.Equal(b, damaged))
			}
			// A crash before the caller's rebuild is durable: the next Open asks again.
			crash(s)
			s = mustOpen(t, repairOpts(dir, c, repair), cp)
			if len(s.Damaged()) == 0 {
				t.Fatalf("a crash before RebuildDone: the next Open reports no damage")
			}
			if _, err := Open(testOpts(dir, c), cp); err == nil {
				t.Errorf("Open without a repair directory accepted an unfinished rebuild")
			}
			// The caller's rebuild: the lost entries again, synced, then RebuildDone.
			for _, e := range entries(tt.survive, 5, t0) {
				mustAdd(t, s, e)
			}
			cp2 := mustSync(t, s)
			if err := s.RebuildDone(); err != nil {
				t.Fatal(err)
			}
			_ = s.Close()
			s = mustOpen(t, testOpts(dir, c), cp2)
			check(t, s, 5, entries(0, 5, t0)...)
			if d := s.Damaged(); d != nil {
				t.Errorf("Damaged after RebuildDone = %v", d)
			}
		})
	}
}

// TestDamageOlderFileAndMissing: a bad entry in a file older than the checkpointed one (fsync'd
// whole before the checkpoint named a later file), and a checkpointed file that is missing but
// not old enough to have expired, are damage too.
func TestDamageOlderFileAndMissing(t *testing.T) {
	// Six entries five minutes apart, rotating every ten: three files of two entries.
	build := func(t *testing.T) (string, *clock, Checkpoint, []string, []Entry) {
		c := newClock()
		dir := t.TempDir()
		s := mustOpen(t, testOpts(dir, c), Checkpoint{})
		var all []Entry
		for i := range 6 {
			if i > 0 {
				c.advance(5 * time.Minute)
			}
			all = append(all, entry(i, c.ms.Load()))
			mustAdd(t, s, all[i])
		}
		cp := mustSync(t, s)
		_ = s.Close()
		names := fileNames(t, dir)
		if len(names) != 3 || names[2] != cp.File {
			t.Fatalf("files %v, checkpoint %+v", names, cp)
		}
		return dir, c, cp, names, all
	}
	tests := []struct {
		name    string
		file    int // which file is damaged
		damage  func(path string) error
		survive []int // entries left after Open
	}{
		{"flipped byte in the first file's second entry", 0, func(path string) error {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			b[len(b)-3] ^= 0x01
			return os.WriteFile(path, b, 0o644)
		}, []int{0, 2, 3, 4, 5}},
		{"middle file cut short", 1, func(path string) error { return os.Truncate(path, 10) }, []int{0, 1, 4, 5}},
		{"checkpointed file deleted", 2, os.Remove, []int{0, 1, 2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, c, cp, names, all := build(t)
			path := filepath.Join(dir, names[tt.file])
			if err := tt.damage(path); err != nil {
				t.Fatal(err)
			}
			_, err := Open(testOpts(dir, c), cp)
			damagedFile(t, err, names[tt.file])

			repair := filepath.Join(t.TempDir(), "repair")
			s := mustOpen(t, repairOpts(dir, c, repair), cp)
			var want []Entry
			for _, i := range tt.survive {
				want = append(want, all[i])
			}
			check(t, s, 6, want...)
			if d := s.Damaged(); len(d) != 1 || d[0].File != names[tt.file] {
				t.Errorf("Damaged = %+v, want %s", d, names[tt.file])
			}
			// The caller's rebuild adds everything again; only what was lost is written.
			for _, e := range all {
				mustAdd(t, s, e)
			}
			cp2 := mustSync(t, s)
			if err := s.RebuildDone(); err != nil {
				t.Fatal(err)
			}
			_ = s.Close()
			for k, n := range diskCount(t, dir) {
				if n != 1 {
					t.Errorf("key %x is %d times on disk", k, n)
				}
			}
			s = mustOpen(t, testOpts(dir, c), cp2)
			check(t, s, 6, all...)
		})
	}
}
