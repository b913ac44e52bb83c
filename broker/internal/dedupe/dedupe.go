// Package dedupe remembers the idempotency keys of produce requests for a time window, durably
// enough to survive a restart together with the broker's checkpoint/replay.
//
// The broker appends every produce request as one batch to its commit log; a batch header
// carries the request's key hash and fingerprint. After the flusher fsyncs a batch it calls
// Store.Add. Adds are appended to the current dedupe file through a buffer and are not fsynced
// one by one: the broker's periodic checkpoint calls Store.Sync, which makes everything added so
// far durable and returns a Checkpoint that the broker keeps in its own checkpoint file. On
// restart the broker calls Open with that Checkpoint and then replays its commit log from its
// checkpoint position, calling Add again for every replayed batch that has a key. Open therefore
// loads exactly what the Checkpoint covers and discards everything written after it (it truncates
// the checkpointed file at the checkpointed size and deletes newer files): replay adds those
// entries again, once each. Entries added after the last Sync and lost in a crash are fine for the
// same reason.
//
// Files are rotated every Options.Rotate and deleted by Expire once every entry in them is older
// than the window.
//
// Damage: what a Checkpoint covers was fsync'd, so a crash cannot tear it; a bad entry there, a
// checkpointed file shorter than the Checkpoint or missing before it could have expired is a
// disk fault or a stray write, and the keys it held would be forgotten: a producer's retry
// would then store a second copy of a payment. Open never cuts it silently. The broker opens
// with Options.RepairDir (<data>/repair/<ms>/dedupe): Open copies each damaged file there,
// keeps the entries before the damage, leaves a marker file (rebuild-pending) and reports the
// damage (Store.Damaged); the broker adds again the key of every keyed batch its commit log
// still holds (the batch header carries the key and fingerprint; Add skips what is past the
// window or already held), logs it at Error, writes its checkpoint and calls RebuildDone,
// which removes the marker. A crash before that leaves the marker, and the next Open asks for
// the rebuild again. Keys whose batches retention (or, in a cluster, raft compaction) already
// deleted from the log cannot be rebuilt; the broker says so when its log starts inside the
// window. Only the end past the Checkpoint, never fsync'd as far as the Checkpoint knows, is
// cut without a word.
//
// Age and the wall clock: an entry's Time is the wall clock (unix ms), which an NTP step, a
// resumed VM or an operator can move by hours or years. A step forward must not make every key
// expire at once (a producer's retry right after would append a second copy), so the age of an
// entry is counted twice: by the wall clock, and by the monotonic clock (Options.Elapsed), which
// no step moves, from the moment the entry became known to this Store (added, or loaded by
// Open) with the age the wall clock gave it then. An entry is forgotten only when both ages
// are past the window. A step back keeps entries longer, until the wall clock catches up.
//
// Across a restart only the wall clock is known, and a step of it while the broker was down
// (a host booting with its clock hours ahead) would age every entry at once. So an entry found
// at Open, loaded from the files or added again by the caller's replay (a Time at or before
// Options.Newest), is as old as the wall clock says but never older than it was against
// Options.Newest, the newest time the caller's data held when it was last written: the time
// no process wrote counts as none (OpenAge). After a real outage entries are then remembered
// up to one more window of running time, which only keeps keys longer.
//
// In memory an entry keeps its offsets as runs (partition, first offset, count), the same
// shape as on disk; Get expands them into a new slice. See format.go for the file format.
//
// Concurrency: Get may be called from any number of goroutines. Add, Sync, Expire and Close are
// meant for one goroutine (the broker's flusher); they are serialized by a mutex and never make
// Get wait for the disk. The package starts no goroutines.
package dedupe

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/imagomq/imago/internal/fsutil"
)

// Key is the hash of an idempotency key.
type Key [16]byte

// Position is where one message of a request was appended.
type Position struct {
	Partition int32
	Offset    int64
}

// Entry is the remembered outcome of one produce request.
type Entry struct {
	Key         Key
	Fingerprint uint64     // hash of the request's messages; a repeat with another fingerprint is a misuse
	Time        int64      // unix milliseconds when it was appended
	Offsets     []Position // one per message, in request order
}

// Checkpoint is a durable point in the dedupe files: every entry of every file older than File,
// and the first Size bytes of File. The zero value means nothing is durable yet.
type Checkpoint struct {
	File string // base name of the file, e.g. "00000001700000000000.dedupe"
	Size int64
}

// Options configure a Store.
type Options struct {
	// Dir is the directory of the dedupe files; it is created if missing. Required.
	Dir string
	// Window is how long an entry is remembered: entries older than this are forgotten.
	// Default 24h. Time is counted in whole milliseconds.
	Window time.Duration
	// Rotate is how often Add starts a new file. Default Window/24.
	Rotate time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Elapsed is the monotonic clock: time passed since some fixed point, never moved by a
	// step of the wall clock. Default: measured on Now's monotonic reading since Open (time.Now
	// has one; with a fake Now that has none it moves with Now). A test that steps Now's wall
	// clock sets it.
	Elapsed func() time.Duration
	// Newest is the newest time (unix ms) the caller's data held at Open, when it was last
	// written: entries of that time or older, loaded by Open or added again by the caller's
	// replay, are aged no more than against it (package comment). 0: none known, such entries
	// are as old as the wall clock says.
	Newest int64
	// RepairDir is where Open keeps a copy of each file it finds damaged inside the
	// checkpoint's durable range before it cuts it there (see Open). Empty: Open refuses such
	// damage with a *DamageError and changes nothing.
	RepairDir string
}

var errClosed = errors.New("dedupe: store is closed")

// slowSync is the fsync duration above which a warning is logged.
const slowSync = time.Second

// Store is an open dedupe directory. See the package comment for who calls what.
type Store struct {
	dir      string
	now      func() time.Time
	elapsed  func() time.Duration
	windowMs int64
	rotateMs int64
	opened   reading // both clocks at Open
	newest   int64   // Options.Newest
	// repairDir is Options.RepairDir; damage is what Open set aside, until RebuildDone
	// (guarded by wmu).
	repairDir string
	damage    []Damage

	mu sync.RWMutex // guards m; Get holds it shared, writers hold wmu too
	m  map[Key]record

	wmu         sync.Mutex // serializes Add, Sync, Expire and Close; guards everything below
	q           []queued   // keys in the order added, for Expire; q[qHead:] is live
	qHead       int
	files       []*file // every file kept, oldest first; cur is the last when not nil
	cur         *file   // the file Add appends to; nil until the first Add after Open
	w           *bufio.Writer
	unsynced    []*file // rotated away from, not yet fsynced; still open
	dirDirty    bool    // a file was created or deleted since the directory was last fsynced
	lastCP      Checkpoint
	lastCreated int64 // the newest file name ever seen, so names never repeat
	scratch     []byte
	err         error // the first write or fsync error; the store is unusable after it
	closed      bool
}

type queued struct {
	key  Key
	time int64
	seen int64 // record.seen
}

// file is one dedupe file.
type file struct {
	name    string
	created int64 // unix ms, from the name
	size    int64
	newest  int64    // newest entry time in the file; math.MinInt64 when empty
	newSeen int64    // newest entry's seen (record.seen) in the file; math.MinInt64 when empty
	f       *os.File // open while written to or waiting for its fsync
}

// Open opens (creating if needed) the dedupe directory opts.Dir and restores the state that cp
// covers: it loads every entry of the files older than cp.File and of cp.File up to cp.Size,
// truncates cp.File there and deletes files newer than cp.File (all files for a zero cp). A
// cp.File that no longer exists is accepted when Expire could have deleted it (it was created
// more than Window ago).
//
// Everything cp covers was fsync'd, so a bad entry there (in a file older than cp.File, or in
// cp.File below cp.Size), a cp.File shorter than cp.Size, or a missing cp.File that had not
// expired is damage, never a torn write (package comment). Without opts.RepairDir Open then
// returns a *DamageError and changes nothing. With it, Open keeps a copy of each damaged file
// in RepairDir, loads the good entries before the damage, cuts the file there (makes a missing
// cp.File again, empty) and reports it in Damaged: the caller rebuilds the keys that were lost.
func Open(opts Options, cp Checkpoint) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("dedupe: open: Options.Dir is required")
	}
	if opts.Window <= 0 {
		opts.Window = 24 * time.Hour
	}
	if opts.Rotate <= 0 {
		opts.Rotate = opts.Window / 24
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Elapsed == nil {
		now, start := opts.Now, opts.Now()
		opts.Elapsed = func() time.Duration { return now().Sub(start) }
	}
	if err := fsutil.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("dedupe: open: %w", err)
	}
	s := &Store{
		dir:      opts.Dir,
		now:      opts.Now,
		elapsed:  opts.Elapsed,
		windowMs: max(opts.Window.Milliseconds(), 1),
		rotateMs: max(opts.Rotate.Milliseconds(), 1),
		newest:   opts.Newest,
		m:        make(map[Key]record),

		repairDir: opts.RepairDir,
	}
	s.opened = s.clock()
	if err := s.recover(cp); err != nil {
		return nil, fmt.Errorf("dedupe: open %s: %w", opts.Dir, err)
	}
	return s, nil
}

func (s *Store) nowMs() int64 { return s.now().UnixMilli() }

// reading is a reading of both clocks, in milliseconds.
type reading struct{ wall, mono int64 }

func (s *Store) clock() reading {
	return reading{wall: s.nowMs(), mono: s.elapsed().Milliseconds()}
}

// seenAt returns the monotonic reading at which an entry of time t, becoming known at c, had
// age zero: c.mono less the wall clock's age of t (none for a t in the future).
func seenAt(t int64, c reading) int64 { return c.mono - max(c.wall-t, 0) }

// foundSeen is seenAt for an entry of time t found at Open (loaded, or replayed by the caller):
// its age at Open is OpenAge, then it ages by the monotonic clock.
func (s *Store) foundSeen(t int64) int64 {
	return s.opened.mono - OpenAge(t, s.newest, s.opened.wall)
}

// OpenAge is the age at Open (now) of a time t found in data whose newest time is newest (all
// unix ms): its wall age at Open, but no more than t's age against newest when t is not after
// it. Only the wall clock spans a restart; the cap makes a step of it while no process ran
// count as no time (package comment). Never negative. The broker ages what its Open finds by
// the same rule (foundSeen).
func OpenAge(t, newest, now int64) int64 {
	age := now - t
	if t <= newest {
		age = min(age, newest-t)
	}
	return max(age, 0)
}

// visible reports whether an entry of time t is still within the window at now by the wall
// clock alone (Add's check of a conflicting entry's age against the new one).
func (s *Store) visible(t, now int64) bool { return t >= now-s.windowMs }

// live reports whether an entry of time t, seen at seen (seenAt), is still within the window
// at c: by the wall clock, or by the monotonic clock since it became known (package comment).
func (s *Store) live(t, seen int64, c reading) bool {
	return t >= c.wall-s.windowMs || seen >= c.mono-s.windowMs
}

// Remembers reports whether an entry of time t (unix ms) found at Open, loaded or added again by
// the caller's replay, would be within the window now.
func (s *Store) Remembers(t int64) bool {
	return s.live(t, s.foundSeen(t), s.clock())
}

// Get returns the entry of k if it is within the window. The returned Offsets are the caller's.
func (s *Store) Get(k Key) (Entry, bool) {
	c := s.clock()
	s.mu.RLock()
	r, ok := s.m[k]
	s.mu.RUnlock()
	if !ok || !s.live(r.time, r.seen, c) {
		return Entry{}, false
	}
	return Entry{Key: k, Fingerprint: r.fp, Time: r.time, Offsets: expand(r.runs)}, true
}

// Len returns the number of entries held in memory, including entries past the window that
// Expire has not dropped yet.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.m)
}

// Add remembers e and appends it to the current file (buffered; Sync makes it durable).
//
// Adding an entry that is already remembered with the same fingerprint and offsets is a no-op,
// so an overlapping replay cannot double it. Adding a key that is remembered within the window
// (of now and of e.Time) with another fingerprint or other offsets is an error and changes
// nothing. An entry already older than the window by both clocks is ignored; one whose Time is
// at or before Options.Newest is aged as found at Open (the caller's replay). Partitions and
// offsets must not be negative. After a write error every later Add and Sync fails: reopen
// the store (the broker restarts and replays).
func (s *Store) Add(e Entry) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	c := s.clock()
	now := c.wall
	seen := seenAt(e.Time, c)
	if e.Time <= s.newest { // found at Open: the caller replays what it held (package comment)
		seen = max(seen, s.foundSeen(e.Time))
	}
	if !s.live(e.Time, seen, c) {
		return nil
	}
	runs, err := makeRuns(e.Offsets)
	if err != nil {
		return fmt.Errorf("dedupe: add %x: %w", e.Key, err)
	}
	rec := record{fp: e.Fingerprint, time: e.Time, seen: seen, runs: runs}
	// Only writers change m and they hold wmu: reading it here needs no read lock.
	// An old entry that had left the window when e was made is superseded, not a conflict:
	// the key was used again after it expired (this matters on replay after the wall clock
	// stepped back, when both uses look recent).
	if old, ok := s.m[e.Key]; ok && s.live(old.time, old.seen, c) && s.visible(old.time, e.Time) {
		if old.fp == rec.fp && equalRuns(old.runs, rec.runs) {
			return nil
		}
		return fmt.Errorf("dedupe: add %x: key is remembered with another request (fingerprint %016x, now %016x)",
			e.Key, old.fp, rec.fp)
	}
	frame := encodeFrame(s.scratch[:0], e.Key, rec)
	if len(frame)-frameHeaderSize > maxPayload {
		return fmt.Errorf("dedupe: add %x: entry of %d bytes is larger than %d", e.Key, len(frame), maxPayload)
	}
	if cap(frame) <= 1<<20 {
		s.scratch = frame
	}
	if err := s.rotateIfDue(now); err != nil {
		return s.fail(err)
	}
	if _, err := s.w.Write(frame); err != nil {
		return s.fail(fmt.Errorf("dedupe: append to %s: %w", s.cur.name, err))
	}
	s.cur.size += int64(len(frame))
	s.cur.newest = max(s.cur.newest, e.Time)
	s.cur.newSeen = max(s.cur.newSeen, rec.seen)
	s.q = append(s.q, queued{key: e.Key, time: e.Time, seen: rec.seen})
	s.mu.Lock()
	s.m[e.Key] = rec
	s.mu.Unlock()
	return nil
}

// rotateIfDue starts a new current file when there is none or the current one is Rotate old.
func (s *Store) rotateIfDue(now int64) error {
	if s.cur != nil && now-s.cur.created < s.rotateMs {
		return nil
	}
	if s.cur != nil {
		if err := s.w.Flush(); err != nil {
			return fmt.Errorf("dedupe: flush %s: %w", s.cur.name, err)
		}
		s.unsynced = append(s.unsynced, s.cur)
		s.cur = nil
	}
	created := max(now, s.lastCreated+1, 0)
	name := fileName(created)
	f, err := os.OpenFile(filepath.Join(s.dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("dedupe: create file: %w", err)
	}
	s.lastCreated = created
	s.cur = &file{name: name, created: created, newest: math.MinInt64, newSeen: math.MinInt64, f: f}
	s.files = append(s.files, s.cur)
	s.dirDirty = true
	if s.w == nil {
		s.w = bufio.NewWriterSize(f, 64<<10)
	} else {
		s.w.Reset(f)
	}
	return nil
}

// Sync writes and fsyncs everything added so far (and the directory after a rotation or a
// deletion) and returns the durable point, for the broker's checkpoint.
func (s *Store) Sync() (Checkpoint, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.usable(); err != nil {
		return Checkpoint{}, err
	}
	if err := s.syncLocked(); err != nil {
		return Checkpoint{}, s.fail(err)
	}
	return s.lastCP, nil
}

func (s *Store) syncLocked() error {
	if s.cur != nil {
		if err := s.w.Flush(); err != nil {
			return fmt.Errorf("dedupe: flush %s: %w", s.cur.name, err)
		}
	}
	// Older files first: a checkpoint naming cur covers every file before it.
	for len(s.unsynced) > 0 {
		f := s.unsynced[0]
		if err := syncFile(f.f); err != nil {
			return fmt.Errorf("dedupe: fsync %s: %w", f.name, err)
		}
		if err := f.f.Close(); err != nil {
			return fmt.Errorf("dedupe: close %s: %w", f.name, err)
		}
		f.f = nil
		s.unsynced = s.unsynced[1:]
	}
	if s.cur != nil {
		if err := syncFile(s.cur.f); err != nil {
			return fmt.Errorf("dedupe: fsync %s: %w", s.cur.name, err)
		}
	}
	if s.dirDirty {
		if err := syncDir(s.dir); err != nil {
			return err
		}
		s.dirDirty = false
	}
	if s.cur != nil {
		s.lastCP = Checkpoint{File: s.cur.name, Size: s.cur.size}
	}
	return nil
}

// Mark returns the point after everything added so far, durable or not. A checkpoint may name it
// once a later Sync has made it durable; Open then drops what was added after it, which the
// broker's replay adds again if its log still holds those batches (after a power loss it may not).
func (s *Store) Mark() Checkpoint {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.cur == nil {
		return s.lastCP
	}
	return Checkpoint{File: s.cur.name, Size: s.cur.size}
}

// Expire drops the entries older than the window from memory and deletes every file whose newest
// entry is older than the window and that was itself created before the window began. Older
// means by both clocks (see the package comment): a step of the wall clock forward expires
// nothing early. The current file is never deleted. The deletions are made durable by the
// next Sync.
func (s *Store) Expire() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return errClosed
	}
	c := s.clock()
	cutoff := c.wall - s.windowMs
	expired := func(q queued) bool { return !s.live(q.time, q.seen, c) }
	// Memory: pop the queue front while it is expired, deleting in chunks so that Get never
	// waits long. A key added again later has a newer record, which stays. An entry whose Time
	// is older than an entry added before it waits behind that one; Get hides it meanwhile.
	for s.qHead < len(s.q) && expired(s.q[s.qHead]) {
		s.mu.Lock()
		for n := 0; n < 4096 && s.qHead < len(s.q) && expired(s.q[s.qHead]); n++ {
			k := s.q[s.qHead].key
			if r, ok := s.m[k]; ok && !s.live(r.time, r.seen, c) {
				delete(s.m, k)
			}
			s.q[s.qHead] = queued{}
			s.qHead++
		}
		s.mu.Unlock()
	}
	if s.qHead > 1024 && s.qHead > len(s.q)/2 {
		s.q = append([]queued(nil), s.q[s.qHead:]...)
		s.qHead = 0
	}
	// Files.
	var errs []error
	kept := make([]*file, 0, len(s.files))
	for _, f := range s.files {
		if f == s.cur || f.newest >= cutoff || f.newSeen >= c.mono-s.windowMs || f.created >= cutoff {
			kept = append(kept, f)
			continue
		}
		if f.f != nil { // rotated away from but not synced yet: nothing of it needs to last
			_ = f.f.Close()
			f.f = nil
			s.unsynced = removeFile(s.unsynced, f)
		}
		if err := os.Remove(filepath.Join(s.dir, f.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("dedupe: expire %s: %w", f.name, err))
			kept = append(kept, f)
			continue
		}
		s.dirDirty = true
	}
	s.files = kept
	return errors.Join(errs...)
}

func removeFile(list []*file, f *file) []*file {
	out := list[:0]
	for _, g := range list {
		if g != f {
			out = append(out, g)
		}
	}
	return out
}

// Close writes and fsyncs what was added and closes the files. It is safe to call more than once.
// The Checkpoint of that last sync is not returned: what is past the broker's checkpoint is
// discarded by Open and replayed anyway.
func (s *Store) Close() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	if s.err == nil {
		errs = append(errs, s.syncLocked())
	}
	for _, f := range append(s.unsynced, s.cur) {
		if f != nil && f.f != nil {
			errs = append(errs, f.f.Close())
			f.f = nil
		}
	}
	s.unsynced, s.cur = nil, nil
	return errors.Join(errs...)
}

// Err returns the write or fsync error that made the store unusable, or nil. Once it is set,
// Add and Sync fail until the store is reopened.
func (s *Store) Err() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.err
}

func (s *Store) usable() error {
	if s.closed {
		return errClosed
	}
	if s.err != nil {
		return fmt.Errorf("dedupe: store failed earlier, reopen it: %w", s.err)
	}
	return nil
}

// fail makes err sticky: after a failed write or fsync the state of the file is unknown.
func (s *Store) fail(err error) error {
	s.err = err
	return err
}

// syncFile is the one place that fsyncs; a slow fsync is logged with its duration.
func syncFile(f *os.File) error {
	start := time.Now()
	err := fsutil.Fsync(f)
	if d := time.Since(start); d > slowSync {
		slog.Warn("dedupe: slow fsync", "file", f.Name(), "duration", d)
	}
	return err
}

func syncDir(dir string) error {
	start := time.Now()
	err := fsutil.SyncDir(dir)
	if d := time.Since(start); d > slowSync {
		slog.Warn("dedupe: slow fsync", "dir", dir, "duration", d)
	}
	if err != nil {
		return fmt.Errorf("dedupe: %w", err)
	}
	return nil
}
