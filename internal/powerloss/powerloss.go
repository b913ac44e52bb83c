// Package powerloss is test instrumentation: it records, through the sync hook of
// internal/fsutil, what every file and directory sync made durable, and simulates a power loss
// on a directory tree by dropping everything that was not. A kill -9 never loses a byte that
// reached the page cache; a power loss loses every byte and every directory entry that no sync
// covered. Crash tests that only kill the process therefore cannot see a store that answers
// from the page cache what it never fsync'd; with this package they can.
//
// The model, deliberately simple and on the pessimistic side where it can be:
//
//   - A file's contents are durable up to the size it had at its last successful sync (fsync or
//     fdatasync); on a power loss it is cut back to that size, to 0 if it was never synced.
//     Files are identified by inode, so a file synced under a temporary name and renamed keeps
//     its record, and so does one synced through a descriptor opened under a name it has since
//     been renamed from.
//   - A name in a directory is durable when the directory was synced after the name pointed at
//     its current inode. On a power loss every other name is removed (a directory with
//     everything in it). A name that was renamed over an older file and not yet made durable is
//     kept when its contents are fully synced (the file system may show the old or the new
//     file; the old one is gone from the test's reach, the new one is the closer stand-in).
//   - The root directory given to Drop is taken as durable itself.
//
// Not modelled: writes into a range that an earlier sync already covered (rewritten pages of a
// mapped index, for example, keep their new contents) and removals (a deleted file stays
// deleted). Both err on the side of keeping data, so a test that loses data under this model
// would lose it on a real disk too.
//
// Two ways to use it. In-process, install a Recorder's Hook with fsutil.SetHook, run the code,
// and call Drop. Across processes, a program under test runs with a journal (OpenJournal; `imago
// serve` does so when the test-only variable IMAGO_TEST_SYNC_JOURNAL names a file): every
// successful sync appends one line before the sync returns to its caller, so nothing is
// acknowledged before its record is in the journal. After killing the program the test loads
// the journal (LoadJournal) and calls Drop, then Save to start the next round from the new state.
package powerloss

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/imagomq/imago/internal/fsutil"
)

// Recorder holds what the recorded syncs made durable. It is safe for concurrent use.
type Recorder struct {
	mu      sync.Mutex
	files   map[uint64]int64             // inode -> size at its last successful sync
	dirs    map[string]map[string]uint64 // directory -> name -> inode, at its last successful sync
	journal *os.File                     // when set, every record is appended here too
}

// New returns an empty Recorder: nothing is durable yet but the root given to Drop.
func New() *Recorder {
	return &Recorder{files: map[uint64]int64{}, dirs: map[string]map[string]uint64{}}
}

// line is one journal record: a file sync (Kind "f": Ino, Size) or a directory sync (Kind "d":
// Entries).
type line struct {
	Kind    string            `json:"k"`
	Path    string            `json:"p"`
	Ino     uint64            `json:"i,omitempty"`
	Size    int64             `json:"s,omitempty"`
	Entries map[string]uint64 `json:"e,omitempty"`
}

// Hook is an fsutil.Hook that performs the sync and, when it succeeds, records what it made
// durable (and appends the record to the journal, if any) before returning.
func (r *Recorder) Hook(ev fsutil.Event, do func() error) error {
	if err := do(); err != nil {
		return err
	}
	var l line
	switch ev.Kind {
	case fsutil.Dir:
		entries, err := listInodes(ev.Path)
		if err != nil {
			return nil // the sync itself succeeded; an unreadable directory records nothing
		}
		l = line{Kind: "d", Path: filepath.Clean(ev.Path), Entries: entries}
	default:
		// The file synced is the one the descriptor is open on (ev.Info), which may no longer
		// be at ev.Path: a file renamed after it was opened.
		ino, ok := uint64(0), false
		if ev.Info != nil {
			ino, ok = inodeOf(ev.Info)
		} else {
			ino, ok = inode(ev.Path)
		}
		if !ok {
			return nil
		}
		l = line{Kind: "f", Path: filepath.Clean(ev.Path), Ino: ino, Size: ev.Size}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.apply(l)
	if r.journal != nil {
		b, _ := json.Marshal(l)
		if _, err := r.journal.Write(append(b, '\n')); err != nil {
			return fmt.Errorf("powerloss journal: %w", err)
		}
	}
	return nil
}

// apply records l. The caller holds mu.
func (r *Recorder) apply(l line) {
	switch l.Kind {
	case "d":
		r.dirs[l.Path] = l.Entries
	case "f":
		r.files[l.Ino] = l.Size
	}
}

// Install makes r the process-wide sync hook; the returned function restores the previous one.
func (r *Recorder) Install() (restore func()) { return fsutil.SetHook(r.Hook) }

// OpenJournal returns a Recorder that also appends every record to the file at path (created
// if missing, appended to if not). Close it with Close.
func OpenJournal(path string) (*Recorder, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("powerloss journal: %w", err)
	}
	r := New()
	r.journal = f
	return r, nil
}

// Close closes the journal, if any.
func (r *Recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.journal == nil {
		return nil
	}
	err := r.journal.Close()
	r.journal = nil
	return err
}

// LoadJournal reads a journal written by OpenJournal or Save. A torn last line is ignored.
func LoadJournal(path string) (*Recorder, error) {
	r := New()
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("powerloss journal: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			break // torn by the kill: only the last line can be
		}
		r.apply(l)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("powerloss journal %s: %w", path, err)
	}
	return r, nil
}

// Save replaces the journal at path with r's state, so that a program started next appends to
// a journal that starts from it.
func (r *Recorder) Save(path string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var buf []byte
	dirs := make([]string, 0, len(r.dirs))
	for d := range r.dirs {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	for _, d := range dirs {
		b, _ := json.Marshal(line{Kind: "d", Path: d, Entries: r.dirs[d]})
		buf = append(append(buf, b...), '\n')
	}
	for ino, size := range r.files {
		b, _ := json.Marshal(line{Kind: "f", Ino: ino, Size: size})
		buf = append(append(buf, b...), '\n')
	}
	return os.WriteFile(path, buf, 0o644)
}

// Baseline forgets every record and records everything under root as durable as it is now (a
// state the test trusts, for example right after a Drop).
func (r *Recorder) Baseline(root string) error {
	root = filepath.Clean(root)
	r.mu.Lock()
	r.files, r.dirs = map[uint64]int64{}, map[string]map[string]uint64{}
	r.mu.Unlock()
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if d.IsDir() {
			entries, err := listInodes(path)
			if err != nil {
				return err
			}
			r.dirs[path] = entries
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if ino, ok := inodeOf(fi); ok {
			r.files[ino] = fi.Size()
		}
		return nil
	})
}

// Loss says what Drop took away.
type Loss struct {
	Removed   []string // names whose directory entry was never made durable
	Truncated int      // files cut back to their last synced size
	Bytes     int64    // bytes dropped from those files
}

// Drop simulates a power loss on the tree at root: names that no directory sync covered are
// removed, and every file is cut back to the size its last sync covered (0 if none). The
// program using root must not be running.
func (r *Recorder) Drop(root string) (Loss, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var loss Loss
	err := r.drop(filepath.Clean(root), &loss)
	return loss, err
}

func (r *Recorder) drop(dir string, loss *Loss) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("powerloss: %w", err)
	}
	synced := r.dirs[dir]
	for _, e := range ents {
		path := filepath.Join(dir, e.Name())
		ino, ok := inode(path)
		if !ok {
			continue
		}
		fi, err := os.Lstat(path)
		if err != nil {
			return fmt.Errorf("powerloss: %w", err)
		}
		durableName := synced != nil && synced[e.Name()] == ino
		if !durableName && synced != nil {
			// Renamed over a name the directory knew: keep it when its contents are all synced.
			if _, known := synced[e.Name()]; known && fi.Mode().IsRegular() {
				size, ok := r.files[ino]
				durableName = ok && size >= fi.Size()
			}
		}
		if !durableName {
			if err := os.RemoveAll(path); err != nil {
				return fmt.Errorf("powerloss: %w", err)
			}
			loss.Removed = append(loss.Removed, path)
			continue
		}
		switch {
		case fi.IsDir():
			if err := r.drop(path, loss); err != nil {
				return err
			}
		case fi.Mode().IsRegular():
			keep := r.files[ino] // 0 when never synced
			if fi.Size() > keep {
				if err := os.Truncate(path, keep); err != nil {
					return fmt.Errorf("powerloss: %w", err)
				}
				loss.Truncated++
				loss.Bytes += fi.Size() - keep
			}
		}
	}
	return nil
}

func inode(path string) (uint64, bool) {
	fi, err := os.Lstat(path)
	if err != nil {
		return 0, false
	}
	return inodeOf(fi)
}

func listInodes(dir string) (map[string]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint64, len(ents))
	for _, e := range ents {
		if ino, ok := inode(filepath.Join(dir, e.Name())); ok {
			out[e.Name()] = ino
		}
	}
	return out, nil
}
