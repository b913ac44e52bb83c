package fsutil

import (
	"os"
	"sync/atomic"
)

// Kind says what a sync covers.
type Kind int

const (
	// File is an fsync or fdatasync of a regular file's contents.
	File Kind = iota
	// Dir is an fsync of a directory: the names created, renamed or removed in it.
	Dir
)

func (k Kind) String() string {
	if k == Dir {
		return "dir"
	}
	return "file"
}

// Event describes one sync about to happen.
type Event struct {
	Kind Kind
	// Path is the file's or directory's name as the caller opened it.
	Path string
	// Size is a file's size when the sync starts (what the sync makes durable); 0 for a
	// directory. Filled in only while a hook is installed.
	Size int64
	// Info is the file's Stat when the sync starts (nil for a directory, or when Stat failed):
	// it names the file synced even when Path no longer does (a file renamed after it was
	// opened, as a compaction renames its new file into place). Filled in only while a hook is
	// installed.
	Info os.FileInfo
}

// Hook wraps every sync: it receives the event and the real operation and returns what the
// caller sees. A hook that returns an error without calling do makes the sync fail with nothing
// written back; one that calls do and then records ev learns what became durable; one that
// blocks before do simulates a process stuck in fdatasync. A hook runs on the syncing
// goroutine and must be safe for concurrent use.
type Hook func(ev Event, do func() error) error

var hook atomic.Pointer[Hook]

// SetHook installs h process-wide (nil removes it) and returns a function that restores the
// previous hook. Meant for tests and the test-only sync journal; see the package comment.
func SetHook(h Hook) (restore func()) {
	var p *Hook
	if h != nil {
		p = &h
	}
	prev := hook.Swap(p)
	return func() { hook.Store(prev) }
}

// run performs do through the installed hook, if any.
func run(kind Kind, f *os.File, path string, do func() error) error {
	h := hook.Load()
	if h == nil {
		return do()
	}
	ev := Event{Kind: kind, Path: path}
	if kind == File && f != nil {
		if fi, err := f.Stat(); err == nil {
			ev.Size, ev.Info = fi.Size(), fi
		}
	}
	return (*h)(ev, do)
}
