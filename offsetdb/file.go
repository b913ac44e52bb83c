package offsetdb

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/imagomq/imago/internal/fsutil"
)

// File names inside the file store's directory.
const (
	fileLogName  = "offsets.log"
	fileLockName = "offsets.lock"
)

// slowSync is the fsync duration above which the file store logs a warning.
const slowSync = 100 * time.Millisecond

// FileStore keeps offsets in an append-only log, offsets.log in its
// directory (the embedded default). Each Commit appends one framed line per
// key (see filelog.go) with one write and one fsync; the whole state is kept
// in memory for reads. When the log holds several times more records than
// keys, it is compacted: the live offsets are written to offsets.log.tmp,
// fsync'd, renamed over offsets.log, and the directory fsync'd, so a crash
// leaves either the old or the new log; when that directory fsync fails, the
// store refuses commits until reopened. At open, a torn last record (a crash
// mid-write) is cut off; any other damage is an error; and the log is fsync'd
// before it is used, since its tail may be a write whose fsync never ran. One
// process at a time: offsets.lock is flock'ed.
type FileStore struct {
	dir string
	log *slog.Logger

	mu      sync.RWMutex
	offsets map[Key]Offset
	f       *os.File
	lock    *os.File
	records int   // records in the log
	slack   int   // compact when records > 4*keys + slack
	broken  error // set when a write or fsync failed: the file state is unknown
	closed  bool
}

// OpenFile opens (or creates) the file store in dir.
func OpenFile(dir string, log *slog.Logger) (*FileStore, error) {
	if dir == "" {
		return nil, errors.New("offsetdb: file store: no directory (Config.Dir)")
	}
	if log == nil {
		log = slog.Default()
	}
	if err := fsutil.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("offsetdb: file store: %w", err)
	}
	lock, err := fsutil.LockFile(filepath.Join(dir, fileLockName))
	if err != nil {
		return nil, fmt.Errorf("offsetdb: file store %s: %w", dir, err)
	}
	s := &FileStore{dir: dir, log: log, offsets: make(map[Key]Offset), lock: lock, slack: 4096}
	if err := s.load(); err != nil {
		lock.Close()
		return nil, fmt.Errorf("offsetdb: file store %s: %w", dir, err)
	}
	return s, nil
}

func (s *FileStore) path() string { return filepath.Join(s.dir, fileLogName) }

// load replays the log and opens it for appending.
func (s *FileStore) load() error {
	f, err := os.OpenFile(s.path(), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	// The log may have just been created: its name must be durable before the first commit
	// is acknowledged into it.
	if err := fsutil.SyncDir(s.dir); err != nil {
		f.Close()
		return err
	}
	valid, torn, err := scanLog(f, func(r fileRecord) {
		s.apply(r)
		s.records++
	})
	if err != nil {
		f.Close()
		return pathError("read", s.path(), err)
	}
	if torn != nil {
		s.log.Warn("offset log: cutting off a torn tail", "file", s.path(), "valid_bytes", valid, "cause", torn)
		if err := f.Truncate(valid); err != nil {
			f.Close()
			return fmt.Errorf("repair: %w", pathError("truncate", s.path(), err))
		}
		if err := s.sync(f); err != nil {
			f.Close()
			return fmt.Errorf("repair: %w", pathError("fsync", s.path(), err))
		}
	} else if err := s.sync(f); err != nil {
		// What was read is served from now on (Get, and a commit that would move an offset
		// backwards is acknowledged without a write), but its tail may never have been
		// fsync'd: a process killed between a flush's write and its fsync leaves the records
		// whole in the page cache, where this open reads them. Make them durable first.
		f.Close()
		return pathError("fsync", s.path(), err)
	}
	if _, err := f.Seek(valid, 0); err != nil {
		f.Close()
		return err
	}
	s.f = f
	return nil
}

// pathError names path and the operation once: an error of the os package on path already
// says both ("write /d/offsets.log: no space left on device") and is returned as it is;
// anything else (a bare errno, a decoding error) is wrapped with op and path.
func pathError(op, path string, err error) error {
	if pe, ok := err.(*os.PathError); ok && pe.Path == path {
		return pe
	}
	return &os.PathError{Op: op, Path: path, Err: err}
}

// apply folds a record into the in-memory state, by the log's rules.
func (s *FileStore) apply(r fileRecord) {
	k := Key{r.Group, r.Topic, r.Partition}
	if cur, ok := s.offsets[k]; ok && !r.Reset && r.Next < cur.Next {
		return
	}
	s.offsets[k] = r.offset()
}

// sync is the store's one fsync, timed.
func (s *FileStore) sync(f *os.File) error {
	start := time.Now()
	err := fsutil.Fsync(f)
	if d := time.Since(start); d > slowSync {
		s.log.Warn("slow fsync", "file", f.Name(), "duration", d)
	}
	return err
}

// Commit appends the offsets that do not move backwards, then fsyncs.
func (s *FileStore) Commit(ctx context.Context, offsets []Offset) error {
	rows, err := Coalesce(offsets)
	if err != nil || len(rows) == 0 {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	now := time.Now().UTC()
	var buf []byte
	var recs []fileRecord
	for _, o := range rows {
		if cur, ok := s.offsets[o.Key()]; ok && o.Next < cur.Next {
			continue // never backwards; nothing to write
		}
		o.CommittedAt = now
		r := recordOf(o, false)
		recs = append(recs, r)
		buf = encodeRecord(buf, r)
	}
	return s.append(buf, recs)
}

// append writes and fsyncs buf, then applies recs. Called with mu held.
func (s *FileStore) append(buf []byte, recs []fileRecord) error {
	if len(recs) == 0 {
		return nil
	}
	if _, err := s.f.Write(buf); err != nil {
		s.broken = fmt.Errorf("offsetdb: file store: %w", pathError("write", s.path(), err))
		return s.broken
	}
	if err := s.sync(s.f); err != nil {
		// After a failed fsync the kernel may have dropped the pages: nothing
		// written since the last good fsync can be trusted. Refuse further
		// commits until the store is reopened (which re-reads the file).
		s.broken = fmt.Errorf("offsetdb: file store: %w", pathError("fsync", s.path(), err))
		return s.broken
	}
	for _, r := range recs {
		s.apply(r)
	}
	s.records += len(recs)
	if s.records > 4*len(s.offsets)+s.slack {
		if err := s.compact(); err != nil {
			if s.broken != nil {
				return s.broken // the rename may not be durable: see compact
			}
			// Before the rename the log is still valid, just long: report and carry on.
			s.log.Warn("offset log compaction failed", "file", s.path(), "err", err)
		}
	}
	return nil
}

// Err is the error after which the store refuses every commit until it is reopened (a write or
// fsync of the log failed, say on a full disk), or nil.
func (s *FileStore) Err() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.broken
}

func (s *FileStore) usable() error {
	if s.closed {
		return ErrClosed
	}
	return s.broken
}

// compact rewrites the log with one record per key. Called with mu held.
func (s *FileStore) compact() error {
	tmp := s.path() + ".tmp"
	var buf []byte
	for _, o := range s.sortedLocked(func(Key) bool { return true }) {
		buf = encodeRecord(buf, recordOf(o, true))
	}
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	// Before the rename a failure leaves the old log in use; the temporary file goes, so that
	// on a full disk the space it took is the log's again.
	abandon := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("compact: %w", err)
	}
	if _, err := f.Write(buf); err != nil {
		return abandon(err)
	}
	if err := s.sync(f); err != nil {
		return abandon(err)
	}
	if err := os.Rename(tmp, s.path()); err != nil {
		return abandon(err)
	}
	old := s.f
	s.f = f
	s.records = len(s.offsets)
	old.Close()
	if err := fsutil.SyncDir(s.dir); err != nil {
		// The rename may not be durable: after a crash the old log could come back, without
		// anything appended to the new one from now on. Either file holds every offset
		// written so far (the commit that triggered compaction reports the failure although
		// its offsets are durable); the store refuses every next commit until it is reopened,
		// which re-reads whichever log the directory names.
		s.broken = fmt.Errorf("offsetdb: file store: fsync of directory %s after compaction: %w", s.dir, err)
		s.log.Error("offset log: fsync of the directory failed after compaction; refusing commits until reopened", "dir", s.dir, "err", err)
		return s.broken
	}
	s.log.Debug("offset log compacted", "file", s.path(), "records", s.records)
	return nil
}

// sortedLocked returns the offsets whose key passes keep, sorted by key.
func (s *FileStore) sortedLocked(keep func(Key) bool) []Offset {
	var out []Offset
	for k, o := range s.offsets {
		if keep(k) {
			out = append(out, o)
		}
	}
	slices.SortFunc(out, func(a, b Offset) int { return compareKeys(a.Key(), b.Key()) })
	return out
}

// Get returns one partition's offset.
func (s *FileStore) Get(ctx context.Context, group, topic string, partition int) (Offset, bool, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return Offset{}, false, ErrClosed
	}
	o, ok := s.offsets[Key{group, topic, partition}]
	return o, ok, nil
}

// List returns a group's offsets.
func (s *FileStore) List(ctx context.Context, group string) ([]Offset, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	return s.sortedLocked(func(k Key) bool { return k.Group == group }), nil
}

// Groups returns the groups with offsets.
func (s *FileStore) Groups(ctx context.Context) ([]string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	var out []string
	for k := range s.offsets {
		out = append(out, k.Group)
	}
	slices.SortFunc(out, strings.Compare)
	return slices.Compact(out), nil
}

// Reset sets an offset, backwards included.
func (s *FileStore) Reset(ctx context.Context, group, topic string, partition int, next int64) error {
	o := Offset{Group: group, Topic: topic, Partition: partition, Next: next, CommittedBy: ResetBy, CommittedAt: time.Now().UTC()}
	if err := validate(o); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	r := recordOf(o, true)
	if err := s.append(encodeRecord(nil, r), []fileRecord{r}); err != nil {
		return err
	}
	s.log.Info("offset reset", "group", group, "topic", topic, "partition", partition, "offset", next)
	return nil
}

// Close closes the log and releases the directory lock.
func (s *FileStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.f.Close()
	return cmp.Or(err, s.lock.Close())
}
