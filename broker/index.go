package broker

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"

	"github.com/imagomq/imago/internal/fsutil"
)

// A partition's index maps its logical offsets to records in the commit log. It is dense:
// entry i of the segment with base B describes offset B+i. Segments hold a fixed number of
// entries (Options.IndexSegmentEntries), their bases are multiples of it, and their files are
// named by base offset. Files are memory-mapped; the flusher writes entries, readers copy them.
//
// A mapping turns disk errors into signals: a store into a page the file system cannot back (a
// full disk under a sparse file) or a load from a page it cannot read (EIO) is a SIGBUS. So
// segments are preallocated when they are created or opened (a full disk is then ENOSPC from
// fallocate, an error, and the broker stops writing), and every access to a mapping goes through
// load/store, which turn a fault on the page into an error (runtime/debug.SetPanicOnFault)
// instead of killing the process.
//
// The index is derived data: it is not fsync'd on append. The checkpoint fsyncs it and records
// how many entries are valid; anything after that is rebuilt from the commit log on open.
//
//	entry, 24 bytes: i64 log position, u32 record size, u32 record CRC, i64 timestamp (ms)
const indexEntrySize = 24

type indexEntry struct {
	Pos       int64
	Size      uint32
	CRC       uint32
	Timestamp int64
}

// gapEntry marks an offset whose record was in a corrupt batch an operator dropped
// (logrepair.go): readers skip it. An all-zero entry is not a gap but a missing one (corrupt).
var gapEntry = indexEntry{Pos: -1}

func putIndexEntry(b []byte, e indexEntry) {
	be := binary.BigEndian
	be.PutUint64(b[0:], uint64(e.Pos))
	be.PutUint32(b[8:], e.Size)
	be.PutUint32(b[12:], e.CRC)
	be.PutUint64(b[16:], uint64(e.Timestamp))
}

func getIndexEntry(b []byte) indexEntry {
	be := binary.BigEndian
	return indexEntry{
		Pos:       int64(be.Uint64(b[0:])),
		Size:      be.Uint32(b[8:]),
		CRC:       be.Uint32(b[12:]),
		Timestamp: int64(be.Uint64(b[16:])),
	}
}

type indexSegment struct {
	base  int64
	f     *os.File
	data  []byte // the mapping, entries*indexEntrySize bytes
	dirty bool   // written since the last checkpoint sync (guarded by the broker's stateMu)
	// seen is the monotonic reading (ms) at which this process last wrote an entry here, less
	// that entry's age by the wall clock then (seenAt); math.MinInt64 when it wrote none. Guarded
	// by the broker's stateMu; retention reads it (clock.go).
	seen int64
	// stepWarned: retention logged that the clocks disagree on this segment (stateMu).
	stepWarned bool
}

func indexName(base int64) string { return fmt.Sprintf("%020d.idx", base) }

func openIndexSegment(dir string, base int64, entries int, create bool) (*indexSegment, error) {
	flags := os.O_RDWR
	if create {
		flags |= os.O_CREATE
	}
	path := filepath.Join(dir, indexName(base))
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open index %s: %w", path, err)
	}
	size := int64(entries) * indexEntrySize
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat index %s: %w", path, err)
	}
	if st.Size() > size {
		if err := f.Truncate(size); err != nil {
			f.Close()
			return nil, fmt.Errorf("size index %s: %w", path, err)
		}
	}
	if err := fsutil.Preallocate(f, size); err != nil {
		f.Close()
		if create {
			os.Remove(path)
		}
		return nil, fmt.Errorf("allocate index %s: %w", path, err)
	}
	data, err := fsutil.MapShared(f, int(size))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("map index %s: %w", path, err)
	}
	if create {
		if err := fsutil.SyncDir(dir); err != nil {
			fsutil.Unmap(data)
			f.Close()
			return nil, err
		}
	}
	return &indexSegment{base: base, f: f, data: data, seen: math.MinInt64}, nil
}

// load copies entry i out of the mapping.
func (s *indexSegment) load(i int64) (e indexEntry, err error) {
	defer s.guardFault(&err, debug.SetPanicOnFault(true), "read")
	at := i * indexEntrySize
	return getIndexEntry(s.data[at : at+indexEntrySize]), nil
}

// store copies e into entry i of the mapping.
func (s *indexSegment) store(i int64, e indexEntry) (err error) {
	defer s.guardFault(&err, debug.SetPanicOnFault(true), "write")
	at := i * indexEntrySize
	putIndexEntry(s.data[at:at+indexEntrySize], e)
	return nil
}

// guardFault, deferred right after debug.SetPanicOnFault(true) (whose result is old), restores
// old and turns a memory fault on s's mapping, which that made a panic, into *err. Other panics
// go on. It is a method deferred directly, not a returned closure: a fetch loads one entry per
// message and the guard must not allocate.
func (s *indexSegment) guardFault(err *error, old bool, op string) {
	debug.SetPanicOnFault(old)
	if r := recover(); r != nil {
		if _, fault := r.(interface{ Addr() uintptr }); !fault {
			panic(r)
		}
		*err = fmt.Errorf("%w: %s index %s: the page could not be accessed (disk full or I/O error): %v",
			ErrCorrupt, op, s.f.Name(), r)
	}
}

func (s *indexSegment) close() error {
	err := fsutil.Unmap(s.data)
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (s *indexSegment) remove() error {
	name := s.f.Name()
	if err := s.close(); err != nil {
		return err
	}
	return os.Remove(name)
}

// listIndexSegments returns the bases of the index files in dir, sorted.
func listIndexSegments(dir string) ([]int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	var bases []int64
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".idx") {
			continue
		}
		b, err := strconv.ParseInt(strings.TrimSuffix(name, ".idx"), 10, 64)
		if err == nil {
			bases = append(bases, b)
		}
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })
	return bases, nil
}
