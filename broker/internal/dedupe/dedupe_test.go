package dedupe

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const t0 = int64(1_700_000_000_000) // unix ms of the fake clock's start

type clock struct{ ms atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ms.Store(t0)
	return c
}

func (c *clock) Now() time.Time           { return time.UnixMilli(c.ms.Load()) }
func (c *clock) set(ms int64)             { c.ms.Store(ms) }
func (c *clock) advance(d time.Duration)  { c.ms.Add(d.Milliseconds()) }
func (c *clock) at(d time.Duration) int64 { return t0 + d.Milliseconds() }
func testOpts(dir string, c *clock) Options {
	return Options{Dir: dir, Window: time.Hour, Rotate: 10 * time.Minute, Now: c.Now}
}

func mustOpen(t testing.TB, opts Options, cp Checkpoint) *Store {
	t.Helper()
	s, err := Open(opts, cp)
	if err != nil {
		t.Fatalf("Open(%+v): %v", cp, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// crash abandons s like a killed process: buffered bytes are lost, nothing is fsynced.
func crash(s *Store) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for _, f := range append(s.unsynced, s.cur) {
		if f != nil && f.f != nil {
			_ = f.f.Close()
		}
	}
	s.closed = true
}

func key(i int) Key {
	var k Key
	binary.BigEndian.PutUint64(k[8:], uint64(i)+1)
	return k
}

// entry i, appended at ms, with two consecutive offsets.
func entry(i int, ms int64) Entry {
	p := int32(i % 3)
	return Entry{Key: key(i), Fingerprint: uint64(i)*7919 + 1, Time: ms,
		Offsets: []Position{{p, int64(i * 10)}, {p, int64(i*10 + 1)}}}
}

func mustAdd(t testing.TB, s *Store, e Entry) {
	t.Helper()
	if err := s.Add(e); err != nil {
		t.Fatalf("Add(%x): %v", e.Key, err)
	}
}

func mustSync(t testing.TB, s *Store) Checkpoint {
	t.Helper()
	cp, err := s.Sync()
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	return cp
}

// check asserts that exactly the entries want are visible among keys 0..n-1 of the entry() family.
func check(t *testing.T, s *Store, n int, want ...Entry) {
	t.Helper()
	wantByKey := map[Key]Entry{}
	for _, e := range want {
		wantByKey[e.Key] = e
	}
	for i := range n {
		got, ok := s.Get(key(i))
		w, wok := wantByKey[key(i)]
		switch {
		case ok != wok:
			t.Errorf("Get(key %d): found=%v, want %v", i, ok, wok)
		case ok && !reflect.DeepEqual(got, w):
			t.Errorf("Get(key %d) = %+v, want %+v", i, got, w)
		}
	}
}

func entries(from, to int, ms int64) []Entry {
	var out []Entry
	for i := from; i < to; i++ {
		out = append(out, entry(i, ms))
	}
	return out
}

func fileNames(t *testing.T, dir string) []string {
	t.Helper()
	ds, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range ds {
		out = append(out, d.Name())
	}
	return out
}

// diskCount decodes every file strictly and counts the entries per key.
func diskCount(t *testing.T, dir string) map[Key]int {
	t.Helper()
	counts := map[Key]int{}
	for _, name := range fileNames(t, dir) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		for len(b) > 0 {
			k, _, n, err := decodeFrame(b)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			counts[k]++
			b = b[n:]
		}
	}
	return counts
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Size()
}

func TestAddGet(t *testing.T) {
	c := newClock()
	s := mustOpen(t, testOpts(t.TempDir(), c), Checkpoint{})
	want := entries(0, 10, t0)
	for _, e := range want {
		mustAdd(t, s, e)
	}
	check(t, s, 20, want...)
	if s.Len() != 10 {
		t.Errorf("Len = %d, want 10", s.Len())
	}
	// The returned offsets are the caller's.
	got, _ := s.Get(key(1))
	got.Offsets[0].Offset = 999
	check(t, s, 20, want...)
}

func TestAddRepeat(t *testing.T) {
	c := newClock()
	dir := t.TempDir()
	s := mustOpen(t, testOpts(dir, c), Checkpoint{})
	e := entry(1, t0)
	mustAdd(t, s, e)
	mustAdd(t, s, e) // a replay overlap: no-op

	other := e
	other.Fingerprint++
	moved := e
	moved.Offsets = []Position{{0, 5}}
	for name, bad := range map[string]Entry{"fingerprint": other, "offsets": moved} {
		if err := s.Add(bad); err == nil {
			t.Errorf("Add of a remembered key with other %s: no error", name)
		}
	}
	for name, bad := range map[string]Entry{
		"negative offset":    {Key: key(2), Time: t0, Offsets: []Position{{0, -1}}},
		"negative partition": {Key: key(2), Time: t0, Offsets: []Position{{-1, 1}}},
	} {
		if err := s.Add(bad); err == nil {
			t.Errorf("Add with %s: no error", name)
		}
	}
	// Already older than the window: ignored.
	mustAdd(t, s, entry(3, t0-time.Hour.Milliseconds()-1))
	check(t, s, 5, e)

	// Once expired, the key may be used again by another request.
	c.advance(time.Hour + time.Millisecond)
	again := entry(1, c.ms.Load())
	again.Fingerprint = 42
	mustAdd(t, s, again)
	check(t, s, 5, again)
	if s.Len() != 1 {
		t.Errorf("Len = %d, want 1", s.Len())
	}
	if err := s.Expire(); err != nil {
		t.Fatal(err)
	}
	check(t, s, 5, again) // the old queue element must not drop the new record
	cp := mustSync(t, s)
	if got := diskCount(t, dir)[key(1)]; got != 1 {
		t.Errorf("key 1 is %d times on disk, want 1 (the first use's file expired)", got)
	}
	if got := fileNames(t, dir); !slices.Equal(got, []string{cp.File}) {
		t.Errorf("files %v, want only %s", got, cp.File)
	}
	_ = s.Close()
	s = mustOpen(t, testOpts(dir, c), cp)
	check(t, s, 5, again)
}

// TestAddReusedKeyAfterClockStepBack: a key used again after its window expired, replayed
// after the wall clock stepped back (both uses look recent at now): the later use supersedes
// the earlier one instead of being refused as a conflict.
func TestAddReusedKeyAfterClockStepBack(t *testing.T) {
	c := newClock()
	s := mustOpen(t, testOpts(t.TempDir(), c), Checkpoint{})
	first := entry(1, t0)
	later := entry(1, t0+time.Hour.Milliseconds()+1)
	later.Fingerprint = 42
	c.set(t0 + 30*time.Minute.Milliseconds()) // the clock stepped back below the later use
	mustAdd(t, s, first)
	mustAdd(t, s, later)
	check(t, s, 5, later)
	// Within the window of the later entry, another fingerprint is still a conflict.
	clash := later
	clash.Fingerprint = 43
	if err := s.Add(clash); err == nil {
		t.Error("Add of a key remembered within the window with another fingerprint: no error")
	}
}

func TestWindowExpiry(t *testing.T) {
	c := newClock()
	dir := t.TempDir()
	s := mustOpen(t, testOpts(dir, c), Checkpoint{}) // window 1h, rotate 10m
	adds := []struct {
		i  int
		at time.Duration
	}{{0, 0}, {1, 5 * time.Minute}, {2, 10 * time.Minute}, {3, 19 * time.Minute}, {4, 20 * time.Minute}}
	all := map[int]Entry{}
	for _, a := range adds {
		c.set(c.at(a.at))
		all[a.i] = entry(a.i, c.ms.Load())
		mustAdd(t, s, all[a.i])
	}
	f1, f2, f3 := fileName(t0), fileName(c.at(10*time.Minute)), fileName(c.at(20*time.Minute))
	if got, want := fileNames(t, dir), []string{f1, f2, f3}; !slices.Equal(got, want) {
		t.Fatalf("files %v, want %v", got, want)
	}
	steps := []struct {
		name    string
		at      time.Duration
		visible []int
		files   []string
	}{
		{"oldest exactly window old", time.Hour, []int{0, 1, 2, 3, 4}, []string{f1, f2, f3}},
		{"oldest 1ms past: file kept for its newer entry", time.Hour + time.Millisecond, []int{1, 2, 3, 4}, []string{f1, f2, f3}},
		{"first file all old", 65*time.Minute + time.Millisecond, []int{2, 3, 4}, []string{f2, f3}},
		{"second file half old", 70*time.Minute + time.Millisecond, []int{3, 4}, []string{f2, f3}},
		{"second file all old", 79*time.Minute + time.Millisecond, []int{4}, []string{f3}},
		{"current file is never deleted", 3 * time.Hour, nil, []string{f3}},
	}
	for _, st := range steps {
		c.set(c.at(st.at))
		var want []Entry
		for _, i := range st.visible {
			want = append(want, all[i])
		}
		check(t, s, 5, want...) // Get hides old entries before Expire runs
		if err := s.Expire(); err != nil {
			t.Fatalf("%s: Expire: %v", st.name, err)
		}
		check(t, s, 5, want...)
		if s.Len() != len(st.visible) {
			t.Errorf("%s: Len = %d, want %d", st.name, s.Len(), len(st.visible))
		}
		if got := fileNames(t, dir); !slices.Equal(got, st.files) {
			t.Errorf("%s: files %v, want %v", st.name, got, st.files)
		}
	}
}

func TestRestartAfterSync(t *testing.T) {
	c := newClock()
	dir := t.TempDir()
	s := mustOpen(t, testOpts(dir, c), Checkpoint{})
	var want []Entry
	for i := range 30 {
		c.advance(time.Minute) // 30 minutes: three files
		want = append(want, entry(i, c.ms.Load()))
		mustAdd(t, s, want[i])
	}
	cp := mustSync(t, s)
	crash(s)
	s = mustOpen(t, testOpts(dir, c), cp)
	check(t, s, 40, want...)
	if s.Len() != 30 {
		t.Errorf("Len = %d, want 30", s.Len())
	}
	if cp2 := mustSync(t, s); cp2 != cp {
		t.Errorf("Sync after Open without adds = %+v, want %+v", cp2, cp)
	}
}

func TestRestartDiscardsAfterCheckpoint(t *testing.T) {
	tests := []struct {
		name  string
		after func(t *testing.T, s *Store, c *clock) // adds entries 5..7 after the checkpoint
	}{
		{"buffered and lost in the crash", func(t *testing.T, s *Store, c *clock) {
			for _, e := range entries(5, 8, c.ms.Load()) {
				mustAdd(t, s, e)
			}
			crash(s)
		}},
		{"synced but the broker's checkpoint was not stored", func(t *testing.T, s *Store, c *clock) {
			for _, e := range entries(5, 8, c.ms.Load()) {
				mustAdd(t, s, e)
			}
			mustSync(t, s)
			crash(s)
		}},
		{"in newer files after rotations", func(t *testing.T, s *Store, c *clock) {
			for _, e := range entries(5, 8, 0) {
				c.advance(10 * time.Minute)
				e.Time = c.ms.Load()
				mustAdd(t, s, e)
			}
			mustSync(t, s)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			dir := t.TempDir()
			s := mustOpen(t, testOpts(dir, c), Checkpoint{})
			kept := entries(0, 5, t0)
			for _, e := range kept {
				mustAdd(t, s, e)
			}
			cp := mustSync(t, s)
			tt.after(t, s, c)

			s = mustOpen(t, testOpts(dir, c), cp)
			check(t, s, 10, kept...)
			if got := fileNames(t, dir); !slices.Equal(got, []string{cp.File}) {
				t.Errorf("files %v, want only %s", got, cp.File)
			}
			if got := fileSize(t, filepath.Join(dir, cp.File)); got != cp.Size {
				t.Errorf("checkpointed file is %d bytes, want %d", got, cp.Size)
			}
			// The broker replays: the lost entries come back, and an overlap adds nothing.
			replayed := entries(5, 8, c.ms.Load())
			for _, e := range append(slices.Clone(kept[3:]), replayed...) {
				mustAdd(t, s, e)
			}
			cp2 := mustSync(t, s)
			_ = s.Close()
			s = mustOpen(t, testOpts(dir, c), cp2)
			all := append(slices.Clone(kept), replayed...)
			check(t, s, 10, all...)
			if s.Len() != 8 {
				t.Errorf("Len = %d, want 8", s.Len())
			}
			counts := diskCount(t, dir)
			for _, e := range all {
				if counts[e.Key] != 1 {
					t.Errorf("key %x is %d times on disk, want 1", e.Key, counts[e.Key])
				}
			}
			if len(counts) != 8 {
				t.Errorf("%d keys on disk, want 8", len(counts))
			}
		})
	}
}

func TestZeroCheckpointDiscardsEverything(t *testing.T) {
	c := newClock()
	dir := t.TempDir()
	s := mustOpen(t, testOpts(dir, c), Checkpoint{})
	for _, e := range entries(0, 3, t0) {
		mustAdd(t, s, e)
	}
	mustSync(t, s)
	_ = s.Close()
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("not ours"), 0o644); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, testOpts(dir, c), Checkpoint{})
	check(t, s, 3)
	if got := fileNames(t, dir); !slices.Equal(got, []string{"README"}) {
		t.Errorf("files %v, want only README", got)
	}
	if cp := mustSync(t, s); cp != (Checkpoint{}) {
		t.Errorf("Sync with nothing added = %+v, want zero", cp)
	}
}

func TestUnknownVersionRefused(t *testing.T) {
	c := newClock()
	dir := t.TempDir()
	s := mustOpen(t, testOpts(dir, c), Checkpoint{})
	mustAdd(t, s, entry(0, t0))
	cp := mustSync(t, s)
	_ = s.Close()
	frame := encodeFrame(nil, key(1), record{time: t0})
	frame[frameHeaderSize] = formatVersion + 1
	binary.LittleEndian.PutUint32(frame[4:8], frameCRC(frame[0:4], frame[frameHeaderSize:]))
	path := filepath.Join(dir, cp.File)
	b, _ := os.ReadFile(path)
	if err := os.WriteFile(path, append(b, frame...), 0o644); err != nil {
		t.Fatal(err)
	}
	cp.Size += int64(len(frame))
	if _, err := Open(testOpts(dir, c), cp); !errors.Is(err, errVersion) {
		t.Fatalf("Open = %v, want errVersion", err)
	}
	if got := fileSize(t, path); got != cp.Size {
		t.Errorf("file is %d bytes after a refused Open, want %d untouched", got, cp.Size)
	}
}

func TestRotationRestart(t *testing.T) {
	// Twelve entries five minutes apart, rotating every ten: six files of two entries.
	build := func(t *testing.T) (string, *clock, Checkpoint, Checkpoint, []Entry) {
		c := newClock()
		dir := t.TempDir()
		s := mustOpen(t, testOpts(dir, c), Checkpoint{})
		var all []Entry
		var mid Checkpoint
		for i := range 12 {
			if i > 0 {
				c.advance(5 * time.Minute)
			}
			all = append(all, entry(i, c.ms.Load()))
			mustAdd(t, s, all[i])
			if i == 5 {
				mid = mustSync(t, s)
			}
		}
		end := mustSync(t, s)
		crash(s)
		if n := len(fileNames(t, dir)); n != 6 {
			t.Fatalf("%d files, want 6", n)
		}
		return dir, c, mid, end, all
	}
	tests := []struct {
		name   string
		cp     func(mid, end Checkpoint) Checkpoint
		keep   int
		nfiles int
	}{
		{"last checkpoint", func(_, end Checkpoint) Checkpoint { return end }, 12, 6},
		{"older checkpoint in the third file", func(mid, _ Checkpoint) Checkpoint { return mid }, 6, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, c, mid, end, all := build(t)
			cp := tt.cp(mid, end)
			s := mustOpen(t, testOpts(dir, c), cp)
			check(t, s, 12, all[:tt.keep]...)
			names := fileNames(t, dir)
			if len(names) != tt.nfiles || names[len(names)-1] != cp.File {
				t.Errorf("files %v, want %d ending with %s", names, tt.nfiles, cp.File)
			}
			// Replay the rest; a new file starts and its name sorts after the others.
			for _, e := range all[tt.keep:] {
				mustAdd(t, s, e)
			}
			cp2 := mustSync(t, s)
			if tt.keep < len(all) && cp2.File <= cp.File {
				t.Errorf("new file %s does not sort after %s", cp2.File, cp.File)
			}
			_ = s.Close()
			s = mustOpen(t, testOpts(dir, c), cp2)
			check(t, s, 12, all...)
		})
	}
}

func TestCheckpointFileExpired(t *testing.T) {
	c := newClock()
	dir := t.TempDir()
	s := mustOpen(t, testOpts(dir, c), Checkpoint{}) // window 1h, rotate 10m
	mustAdd(t, s, entry(0, t0))
	cp := mustSync(t, s) // the broker stores this checkpoint
	c.set(c.at(10 * time.Minute))
	mustAdd(t, s, entry(1, c.ms.Load())) // rotates to a second file, not yet synced
	c.set(c.at(65 * time.Minute))
	if err := s.Expire(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, cp.File)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("checkpointed file still exists after Expire (%v)", err)
	}
	crash(s)

	s = mustOpen(t, testOpts(dir, c), cp)
	check(t, s, 2) // entry 1 is after the checkpoint: the broker replays it
	if got := fileNames(t, dir); len(got) != 0 {
		t.Errorf("files %v, want none", got)
	}
	if got := mustSync(t, s); got != cp {
		t.Errorf("Sync = %+v, want the expired checkpoint %+v", got, cp)
	}
	mustAdd(t, s, entry(1, c.at(10*time.Minute)))
	cp2 := mustSync(t, s)
	_ = s.Close()
	s = mustOpen(t, testOpts(dir, c), cp2)
	check(t, s, 2, entry(1, c.at(10*time.Minute)))
}

func TestOpenRefusesBadCheckpoint(t *testing.T) {
	c := newClock()
	dir := t.TempDir()
	s := mustOpen(t, testOpts(dir, c), Checkpoint{})
	mustAdd(t, s, entry(0, t0))
	cp := mustSync(t, s)
	_ = s.Close()
	for name, bad := range map[string]Checkpoint{
		"missing and not expired": {File: fileName(t0 - 1), Size: 10},
		"not a dedupe file name":  {File: "../" + cp.File, Size: 10},
		"negative size":           {File: cp.File, Size: -1},
	} {
		if _, err := Open(testOpts(dir, c), bad); err == nil {
			t.Errorf("Open with %s checkpoint: no error", name)
		}
	}
	// None of those touched the data.
	s = mustOpen(t, testOpts(dir, c), cp)
	check(t, s, 1, entry(0, t0))
}

func TestConcurrentGet(t *testing.T) {
	c := newClock()
	s := mustOpen(t, testOpts(t.TempDir(), c), Checkpoint{})
	const n = 2000
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var found atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				for i := range n {
					select {
					case <-stop:
						return
					default:
					}
					if got, ok := s.Get(key(i)); ok {
						found.Add(1)
						if want := entry(i, t0); !reflect.DeepEqual(got, want) {
							t.Errorf("Get(key %d) = %+v, want %+v", i, got, want)
							return
						}
					}
				}
			}
		}()
	}
	for i := range n {
		mustAdd(t, s, entry(i, t0))
		if i%100 == 99 {
			mustSync(t, s)
			if err := s.Expire(); err != nil {
				t.Error(err)
			}
		}
	}
	for found.Load() < n { // make sure readers overlapped with the writer and saw entries
		if t.Failed() {
			break
		}
		runtime.Gosched()
	}
	close(stop)
	wg.Wait()
	if s.Len() != n {
		t.Errorf("Len = %d, want %d", s.Len(), n)
	}
}

func TestOffsetsRoundTrip(t *testing.T) {
	seq := func(p int32, from, n int64) []Position {
		var out []Position
		for o := from; o < from+n; o++ {
			out = append(out, Position{p, o})
		}
		return out
	}
	tests := []struct {
		name     string
		offsets  []Position
		wantRuns int
	}{
		{"none", nil, 0},
		{"one", []Position{{3, 7}}, 1},
		{"one run of 1000", seq(2, 5000, 1000), 1},
		{"interleaved partitions", []Position{{0, 10}, {1, 10}, {0, 11}, {1, 11}}, 4},
		{"runs per partition in blocks", slices.Concat(seq(0, 0, 100), seq(1, 0, 100), seq(0, 100, 100)), 3},
		{"gaps break runs", []Position{{0, 1}, {0, 2}, {0, 3}, {0, 5}, {0, 6}, {0, 9}}, 3},
		{"descending", []Position{{0, 5}, {0, 4}, {0, 3}}, 3},
		{"same offset twice", []Position{{0, 5}, {0, 5}}, 2},
		{"largest values", []Position{{math.MaxInt32, math.MaxInt64 - 1}, {math.MaxInt32, math.MaxInt64}, {math.MaxInt32, 0}}, 2},
	}
	c := newClock()
	dir := t.TempDir()
	s := mustOpen(t, testOpts(dir, c), Checkpoint{})
	var want []Entry
	for i, tt := range tests {
		runs, err := makeRuns(tt.offsets)
		if err != nil || len(runs) != tt.wantRuns {
			t.Errorf("%s: %d runs (err %v), want %d", tt.name, len(runs), err, tt.wantRuns)
		}
		if got := expand(runs); !reflect.DeepEqual(got, tt.offsets) {
			t.Errorf("%s: expand(makeRuns) = %v", tt.name, got)
		}
		if frame := encodeFrame(nil, key(i), record{runs: runs}); len(frame) > frameHeaderSize+fixedPayload+1+19*tt.wantRuns {
			t.Errorf("%s: %d bytes on disk for %d runs", tt.name, len(frame), tt.wantRuns)
		}
		e := Entry{Key: key(i), Fingerprint: uint64(i), Time: t0, Offsets: tt.offsets}
		want = append(want, e)
		mustAdd(t, s, e)
	}
	check(t, s, len(tests), want...)
	cp := mustSync(t, s)
	crash(s)
	s = mustOpen(t, testOpts(dir, c), cp)
	check(t, s, len(tests), want...)
}

func TestClosed(t *testing.T) {
	s := mustOpen(t, testOpts(t.TempDir(), newClock()), Checkpoint{})
	mustAdd(t, s, entry(0, t0))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Add(entry(1, t0)); !errors.Is(err, errClosed) {
		t.Errorf("Add after Close = %v", err)
	}
	if _, err := s.Sync(); !errors.Is(err, errClosed) {
		t.Errorf("Sync after Close = %v", err)
	}
}

func FuzzDecodeEntry(f *testing.F) {
	for _, rec := range []record{
		{},
		{fp: 1, time: t0, runs: []run{{first: 10, partition: 1, count: 3}}},
		{fp: math.MaxUint64, time: -1, runs: []run{{first: math.MaxInt64, partition: math.MaxInt32, count: 1}, {count: 7}}},
	} {
		b := encodeFrame(nil, key(1), rec)
		f.Add(b)
		f.Add(b[:len(b)-1])
		f.Add(append(b, b...))
	}
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		k, rec, n, err := decodeFrame(b)
		if err != nil {
			if !errors.Is(err, errTorn) && !errors.Is(err, errCorrupt) && !errors.Is(err, errVersion) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if n < frameHeaderSize || n > len(b) {
			t.Fatalf("n = %d for %d bytes", n, len(b))
		}
		total := 0
		for _, r := range rec.runs {
			if r.count < 1 || r.partition < 0 || r.first < 0 || r.first+int64(r.count-1) < r.first {
				t.Fatalf("bad run %+v", r)
			}
			total += int(r.count)
		}
		if total > maxOffsets {
			t.Fatalf("%d offsets", total)
		}
		k2, rec2, _, err := decodeFrame(encodeFrame(nil, k, rec))
		if err != nil || k2 != k || !reflect.DeepEqual(rec2, rec) {
			t.Fatalf("re-encoding does not round-trip: %v", err)
		}
	})
}

func BenchmarkAdd(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(map[int]string{1: "1msg", 100: "100msgs"}[n], func(b *testing.B) {
			s := mustOpen(b, Options{Dir: b.TempDir()}, Checkpoint{})
			e := Entry{Fingerprint: 1, Time: time.Now().UnixMilli(), Offsets: make([]Position, n)}
			for i := range e.Offsets {
				e.Offsets[i] = Position{Partition: 1, Offset: int64(i)}
			}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				binary.LittleEndian.PutUint64(e.Key[:], uint64(i))
				if err := s.Add(e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Fits never says yes to an entry Add refuses for its size: at the largest number of runs Fits
// allows, with every run at its largest encoding, Add takes the entry; one run more, Fits says no.
func TestFitsMatchesAdd(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir(), Window: time.Hour}, Checkpoint{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	runs := 1
	for Fits(runs+1, runs+1) {
		runs++
	}
	if runs < 100_000 {
		t.Fatalf("Fits allows only %d runs", runs)
	}
	offs := make([]Position, runs)
	for i := range offs { // alternating partitions, offsets at the largest varint
		offs[i] = Position{Partition: int32(math.MaxInt32 - i%2), Offset: math.MaxInt64 - int64(i)}
	}
	if err := s.Add(Entry{Key: Key{1}, Time: time.Now().UnixMilli(), Offsets: offs}); err != nil {
		t.Fatalf("Add of an entry Fits allows (%d runs): %v", runs, err)
	}
	if Fits(maxOffsets+1, 1) {
		t.Fatal("Fits allows more offsets than maxOffsets")
	}
}
