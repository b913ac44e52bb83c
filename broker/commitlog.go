package broker

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imagomq/imago/internal/fsutil"
)

// commitLog is the one append-only log that every partition's messages go to, split into
// segment files named by the log position (byte offset) of their first byte.
// One goroutine (the flusher) writes; any number read.
type commitLog struct {
	dir          string
	segmentBytes int64

	mu   sync.RWMutex // guards segs; readers hold it while they read a file
	segs []*segment

	end     atomic.Int64 // position after the last written byte
	durable atomic.Int64 // position after the last fsync'd byte
	syncs   atomic.Int64
	onSync  func(time.Duration)
	// syncErr is the first failed fsync, returned by every later sync (flusher only). Linux
	// reports a writeback error once: a second fdatasync may succeed although the pages it was
	// about never reached the disk, so a failed log is never trusted again.
	syncErr error
}

type segment struct {
	base int64
	f    *os.File
}

func segmentName(base int64) string { return fmt.Sprintf("%020d.log", base) }

// openCommitLog opens the segments in dir (creating dir) without verifying them; recovery
// verifies and truncates the tail.
func openCommitLog(dir string, segmentBytes int64) (*commitLog, error) {
	if err := fsutil.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create log dir: %w", err)
	}
	l := &commitLog{dir: dir, segmentBytes: segmentBytes}
	if err := l.openSegments(os.O_RDWR); err != nil {
		return nil, err
	}
	if len(l.segs) == 0 {
		if err := l.createSegment(0); err != nil {
			return nil, err
		}
	}
	l.durable.Store(l.end.Load())
	return l, nil
}

// openSegments opens every segment file of l.dir, in order, with flag (os.O_RDWR, or
// os.O_RDONLY for a log only read), and sets l.end from the last one's size.
func (l *commitLog) openSegments(flag int) error {
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("list log dir: %w", err)
	}
	var bases []int64
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".log") {
			continue
		}
		base, err := strconv.ParseInt(strings.TrimSuffix(name, ".log"), 10, 64)
		if err != nil {
			continue
		}
		bases = append(bases, base)
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })
	for _, base := range bases {
		f, err := os.OpenFile(filepath.Join(l.dir, segmentName(base)), flag, 0o644)
		if err != nil {
			l.close()
			return fmt.Errorf("open segment %d: %w", base, err)
		}
		l.segs = append(l.segs, &segment{base: base, f: f})
	}
	if len(l.segs) == 0 {
		return nil
	}
	last := l.segs[len(l.segs)-1]
	st, err := last.f.Stat()
	if err != nil {
		l.close()
		return fmt.Errorf("stat segment %d: %w", last.base, err)
	}
	l.end.Store(last.base + st.Size())
	return nil
}

func (l *commitLog) createSegment(base int64) error {
	f, err := os.OpenFile(filepath.Join(l.dir, segmentName(base)), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("create segment %d: %w", base, err)
	}
	if err := fsutil.SyncDir(l.dir); err != nil {
		f.Close()
		return fmt.Errorf("create segment %d: %w", base, err)
	}
	l.mu.Lock()
	l.segs = append(l.segs, &segment{base: base, f: f})
	l.mu.Unlock()
	return nil
}

// start is the position of the first byte still on disk.
func (l *commitLog) start() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if len(l.segs) == 0 {
		return l.end.Load()
	}
	return l.segs[0].base
}

// active is the base of the segment being written.
func (l *commitLog) activeBase() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.segs[len(l.segs)-1].base
}

// write appends p to the active segment. Only the flusher calls it.
func (l *commitLog) write(p []byte) error {
	l.mu.RLock()
	seg := l.segs[len(l.segs)-1]
	l.mu.RUnlock()
	pos := l.end.Load()
	if _, err := seg.f.WriteAt(p, pos-seg.base); err != nil {
		return fmt.Errorf("write segment %d at %d: %w", seg.base, pos-seg.base, err)
	}
	l.end.Store(pos + int64(len(p)))
	return nil
}

// needsRoll reports whether n more bytes would overflow a non-empty active segment.
func (l *commitLog) needsRoll(n int) bool {
	base := l.activeBase()
	used := l.end.Load() - base
	return used > 0 && used+int64(n) > l.segmentBytes
}

// sync makes everything written so far durable. It is the one place the log fsyncs.
func (l *commitLog) sync() error {
	if l.syncErr != nil {
		return l.syncErr
	}
	end := l.end.Load()
	if l.durable.Load() >= end {
		return nil
	}
	l.mu.RLock()
	seg := l.segs[len(l.segs)-1]
	l.mu.RUnlock()
	t := time.Now()
	err := fsutil.Fdatasync(seg.f)
	d := time.Since(t)
	if err != nil {
		l.syncErr = fmt.Errorf("fsync segment %d: %w", seg.base, err)
		return l.syncErr
	}
	l.syncs.Add(1)
	if l.onSync != nil {
		l.onSync(d)
	}
	l.durable.Store(end)
	return nil
}

// readAt fills p from the log at pos. It fails with ErrCorrupt when pos is not on disk.
func (l *commitLog) readAt(p []byte, pos int64) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].base > pos }) - 1
	if i < 0 {
		return fmt.Errorf("%w: log position %d was deleted", ErrCorrupt, pos)
	}
	for len(p) > 0 {
		if i >= len(l.segs) {
			return fmt.Errorf("%w: log position %d is past the end", ErrCorrupt, pos)
		}
		seg := l.segs[i]
		n, err := seg.f.ReadAt(p, pos-seg.base)
		p = p[n:]
		pos += int64(n)
		if len(p) == 0 {
			return nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read segment %d: %w", seg.base, err)
		}
		i++
	}
	return nil
}

// segmentBounds lists [base, end) of every segment.
func (l *commitLog) segmentBounds() [][2]int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := make([][2]int64, len(l.segs))
	for i, s := range l.segs {
		end := l.end.Load()
		if i+1 < len(l.segs) {
			end = l.segs[i+1].base
		}
		out[i] = [2]int64{s.base, end}
	}
	return out
}

// segmentEnd is the end of the segment holding pos, or pos when no segment holds it.
func (l *commitLog) segmentEnd(pos int64) int64 {
	for _, s := range l.segmentBounds() {
		if pos >= s[0] && pos < s[1] {
			return s[1]
		}
	}
	return pos
}

// truncate cuts the log at pos (recovery only). Segments wholly after pos are moved into
// aside (a directory) rather than deleted, so an operator can inspect them.
func (l *commitLog) truncate(pos int64, aside string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	moved := false
	for len(l.segs) > 1 && l.segs[len(l.segs)-1].base > pos {
		seg := l.segs[len(l.segs)-1]
		seg.f.Close()
		if err := fsutil.MkdirAll(aside, 0o755); err != nil {
			return err
		}
		if err := os.Rename(filepath.Join(l.dir, segmentName(seg.base)), filepath.Join(aside, segmentName(seg.base))); err != nil {
			return fmt.Errorf("move segment %d aside: %w", seg.base, err)
		}
		l.segs = l.segs[:len(l.segs)-1]
		moved = true
	}
	if moved {
		if err := fsutil.SyncDir(aside); err != nil {
			return err
		}
	}
	seg := l.segs[len(l.segs)-1]
	if err := seg.f.Truncate(pos - seg.base); err != nil {
		return fmt.Errorf("truncate segment %d at %d: %w", seg.base, pos-seg.base, err)
	}
	if err := fsutil.Fdatasync(seg.f); err != nil {
		return fmt.Errorf("sync truncated segment %d: %w", seg.base, err)
	}
	if err := fsutil.SyncDir(l.dir); err != nil {
		return err
	}
	l.end.Store(pos)
	l.durable.Store(pos)
	return nil
}

// cutUnsynced truncates the active segment at pos, the durable end, and fdatasyncs it: the cut a
// failed log makes at once when the fail mark cannot be recorded (failmark.go). ftruncate frees
// space, so it works on a full disk where the mark's overwrite could not. It also drops the
// bytes a failed write(2) left past l.end. Flusher only, after a failure (l.syncErr is set:
// the fdatasync here is about the new size, not about the pages whose writeback failed).
func (l *commitLog) cutUnsynced(pos int64) error {
	l.mu.Lock()
	seg := l.segs[len(l.segs)-1]
	if pos < seg.base {
		l.mu.Unlock()
		return fmt.Errorf("cut the log at %d: it is before the active segment %d", pos, seg.base)
	}
	err := seg.f.Truncate(pos - seg.base)
	if err == nil {
		l.end.Store(pos)
	}
	l.mu.Unlock()
	if err != nil {
		return fmt.Errorf("truncate segment %d at %d: %w", seg.base, pos-seg.base, err)
	}
	if err := fsutil.Fdatasync(seg.f); err != nil {
		return fmt.Errorf("sync segment %d truncated at %d: %w", seg.base, pos-seg.base, err)
	}
	return nil
}

// deleteBefore removes whole segments that end at or before pos, never the active one, and
// fsyncs the log directory so that the removals are durable before it returns. It returns the
// bytes freed.
//
// Without the directory fsync a power loss can bring removed segments back (the unlink was
// only in the page cache). Open copes with that (they lie before the checkpoint, which replay
// starts from, and the next pass removes them again), but a full rebuild would serve their
// retired messages again, and nothing would remove them before the next retention pass.
func (l *commitLog) deleteBefore(pos int64) (int64, error) {
	freed, err := l.removeBefore(pos)
	if freed > 0 {
		// Outside l.mu: readers of the log need not wait for the disk.
		if serr := fsutil.SyncDir(l.dir); serr != nil {
			return freed, errors.Join(err, fmt.Errorf("delete segments before %d: %w", pos, serr))
		}
	}
	return freed, err
}

// removeBefore unlinks the segments deleteBefore deletes, under l.mu.
func (l *commitLog) removeBefore(pos int64) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var freed int64
	for len(l.segs) > 1 && l.segs[1].base <= pos {
		seg := l.segs[0]
		seg.f.Close()
		if err := os.Remove(filepath.Join(l.dir, segmentName(seg.base))); err != nil {
			return freed, fmt.Errorf("delete segment %d: %w", seg.base, err)
		}
		freed += l.segs[1].base - seg.base
		l.segs = l.segs[1:]
	}
	return freed, nil
}

func (l *commitLog) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var first error
	for _, s := range l.segs {
		if err := s.f.Close(); err != nil && first == nil {
			first = err
		}
	}
	l.segs = nil
	return first
}
