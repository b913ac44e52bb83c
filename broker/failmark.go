package broker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"github.com/imagomq/imago/internal/fsutil"
)

// The fail mark. When a write or fsync of the commit log fails, the broker stops writing (fail)
// and records in the file "failmark" the log position up to which the log is known durable. The
// next start cuts the log there before anything reads it (the cut bytes go to repair/ like a
// torn tail). Without it a restart would trust the page cache: Linux keeps the pages whose
// writeback failed, marked clean, so the bytes of requests that were answered with an error
// would be read back, served and counted as duplicates of a retry, then vanish at the next power
// loss, or stay and make two copies. With it, a request the broker answered with a failure is
// certainly not in the log after the restart, so retrying it is safe.
//
// The file has a fixed size and is created, zeroed and fsync'd at open, so that recording the
// position overwrites allocated bytes and needs no free space on ext4, XFS or tmpfs: a full disk
// is a common reason to be here. On a copy-on-write file system (btrfs) or NFS an overwrite in
// place can itself fail (ENOSPC, EIO). Then the broker cuts the log at once instead: it
// truncates the active segment at the durable end and fdatasyncs it (ftruncate frees space, so
// it works on a full disk; no copy goes to repair/, for which there is no room), and the failed
// requests are still certainly not stored. If even that fails, it answers the failed requests
// ErrOutcomeUnknown and, unless the mark's write took in the page cache (only its fdatasync
// failed, as on a disk whose every fsync fails: a restart without a reboot reads the mark and
// cuts), empties the fail mark (ftruncate again): a start that finds the
// mark empty refuses, naming the file and the runbook (docs/runbooks.md, "An empty fail
// mark"), until an operator has cut the log. Only if emptying the mark fails as well (the file
// system takes no change at all) may a restart serve bytes whose fsync failed; the error log
// says so, with the durable end to cut at.
//
//	24 bytes: "IMAGOFM1", i64 position, u32 CRC-32C of the first 16 bytes, 4 zero bytes
//	(all zero: no mark; empty: the start refuses)
const (
	failMarkName  = "failmark"
	failMarkSize  = 24
	failMarkMagic = "IMAGOFM1"
)

type failMark struct {
	f *os.File
}

// openFailMark opens (creating it if needed) the fail mark in dir and returns the position it
// records, with set=false when there is none.
func openFailMark(dir string) (m *failMark, pos int64, set bool, err error) {
	path := filepath.Join(dir, failMarkName)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		if err := fsutil.WriteFileAtomic(dir, failMarkName, make([]byte, failMarkSize), 0o644); err != nil {
			return nil, 0, false, fmt.Errorf("create fail mark: %w", err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0o644)
	if err != nil {
		return nil, 0, false, fmt.Errorf("open fail mark: %w", err)
	}
	pos, set, err = readFailMarkFrom(f, path)
	if err != nil {
		f.Close()
		return nil, 0, false, err
	}
	return &failMark{f: f}, pos, set, nil
}

// readFailMark reads the fail mark in dir without creating or changing anything (a missing
// file is no mark), for tools that only look at a data directory.
func readFailMark(dir string) (pos int64, set bool, err error) {
	path := filepath.Join(dir, failMarkName)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	} else if err != nil {
		return 0, false, fmt.Errorf("open fail mark: %w", err)
	}
	defer f.Close()
	return readFailMarkFrom(f, path)
}

func readFailMarkFrom(f *os.File, path string) (pos int64, set bool, err error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, false, fmt.Errorf("read fail mark %s: %w", path, err)
	}
	if fi.Size() < failMarkSize { // emptied by cutUnrecorded (the file is created whole)
		return 0, false, fmt.Errorf("fail mark %s is empty: a write or fsync of the commit log failed, and the broker "+
			"could neither record where the log is durable nor cut it there, so the log may hold bytes whose fsync "+
			"failed; follow the runbook (docs/runbooks.md, \"An empty fail mark\") before starting", path)
	}
	buf := make([]byte, failMarkSize)
	if _, err := io.ReadFull(f, buf); err != nil {
		return 0, false, fmt.Errorf("read fail mark %s: %w", path, err)
	}
	if bytes.Equal(buf, make([]byte, failMarkSize)) {
		return 0, false, nil
	}
	if string(buf[:8]) != failMarkMagic || crc32.Checksum(buf[:16], castagnoli) != binary.BigEndian.Uint32(buf[16:]) {
		return 0, false, fmt.Errorf("fail mark %s is damaged: it should hold the log position to cut at after a failed write; "+
			"inspect the end of the log, then remove the file to start", path)
	}
	return int64(binary.BigEndian.Uint64(buf[8:])), true, nil
}

// record makes pos the durable end that the next start cuts the log at.
func (m *failMark) record(pos int64) error { return m.write(failMarkBytes(pos)) }

func failMarkBytes(pos int64) []byte {
	buf := make([]byte, failMarkSize)
	copy(buf, failMarkMagic)
	binary.BigEndian.PutUint64(buf[8:], uint64(pos))
	binary.BigEndian.PutUint32(buf[16:], crc32.Checksum(buf[:16], castagnoli))
	return buf
}

// holds reports whether the file, as the kernel serves it now, reads as the mark of pos: after
// a record whose fdatasync failed, a restart without a reboot reads the mark and cuts there.
func (m *failMark) holds(pos int64) bool {
	buf := make([]byte, failMarkSize)
	if _, err := m.f.ReadAt(buf, 0); err != nil {
		return false
	}
	return bytes.Equal(buf, failMarkBytes(pos))
}

// clear removes the mark (after the cut is durable).
func (m *failMark) clear() error { return m.write(make([]byte, failMarkSize)) }

func (m *failMark) write(buf []byte) error {
	if _, err := m.f.WriteAt(buf, 0); err != nil {
		return fmt.Errorf("write fail mark: %w", err)
	}
	if err := fsutil.Fdatasync(m.f); err != nil {
		return fmt.Errorf("sync fail mark: %w", err)
	}
	return nil
}

// empty truncates the mark to nothing, which makes the next start refuse (readFailMarkFrom):
// the last resort when neither the mark nor the cut of the log could be made durable.
func (m *failMark) empty() error {
	if err := m.f.Truncate(0); err != nil {
		return fmt.Errorf("empty fail mark: %w", err)
	}
	if err := fsutil.Fdatasync(m.f); err != nil {
		return fmt.Errorf("sync emptied fail mark: %w", err)
	}
	return nil
}

func (m *failMark) close() error { return m.f.Close() }

// cutUnrecorded is fail's way out when the mark of durable end pos could not be recorded
// (merr): it cuts the log at pos now and reports true, so the failed requests are certainly
// not stored. If the cut cannot be made durable, it reports false (the failed requests'
// outcome is unknown) and, unless the mark's write took in the page cache (only its fdatasync
// failed, so a restart reads it), empties the mark so that the next start refuses until an
// operator cuts the log. Flusher only.
func (b *Broker) cutUnrecorded(pos int64, merr error) bool {
	cerr := b.log.cutUnsynced(pos)
	if cerr == nil {
		b.opts.Logger.Warn("could not record where the restart must cut the log; cut it there now",
			"durable_end", pos, "err", merr)
		return true
	}
	if b.fmark.holds(pos) {
		// The mark's write took (its fdatasync failed: a failing disk, as when every fsync
		// fails): a restart without a reboot reads it and cuts the log. Emptying it would only
		// make that restart refuse, and the emptied file could not be made durable either.
		b.opts.Logger.Error("could not make the fail mark or the cut of the log durable; the mark is in place for a "+
			"restart, but after a power loss the log may hold bytes whose fsync failed: cut it at the durable end "+
			"before restarting after one (docs/runbooks.md, \"An empty fail mark\"); answers to the failed requests are outcome unknown",
			"durable_end", pos, "file", filepath.Join(b.opts.Dir, failMarkName), "err", merr, "cut_err", cerr)
		return false
	}
	if eerr := b.fmark.empty(); eerr != nil {
		b.opts.Logger.Error("could not record where the restart must cut the log, cut it, or empty the fail mark: "+
			"a restart may serve bytes whose fsync failed; before restarting, cut the log at the durable end "+
			"(docs/runbooks.md, \"An empty fail mark\")",
			"durable_end", pos, "file", filepath.Join(b.opts.Dir, failMarkName), "err", merr, "cut_err", cerr, "empty_err", eerr)
		return false
	}
	b.opts.Logger.Error("could not record where the restart must cut the log, or cut it; the fail mark is emptied, "+
		"so the next start refuses until the log is cut at the durable end (docs/runbooks.md, \"An empty fail mark\"); "+
		"answers to the failed requests are outcome unknown",
		"durable_end", pos, "file", filepath.Join(b.opts.Dir, failMarkName), "err", merr, "cut_err", cerr)
	return false
}

// applyFailMark opens the fail mark and, when a failure was recorded, cuts the log at the
// recorded durable end and clears the mark. It runs before recovery reads the log.
func (b *Broker) applyFailMark() error {
	m, pos, set, err := openFailMark(b.opts.Dir)
	if err != nil {
		return err
	}
	b.fmark = m
	if !set {
		return nil
	}
	end := b.log.end.Load()
	switch {
	case pos < end:
		b.opts.Logger.Warn("a write or fsync of the log failed before the last stop; cutting the log at the durable end recorded then",
			"position", pos, "bytes", end-pos)
		if err := b.cutTail(pos, end, fmt.Errorf("bytes past %d were not known durable when the log failed", pos)); err != nil {
			return err
		}
	case pos > end:
		b.opts.Logger.Error("the log is shorter than the durable end recorded when it failed", "recorded", pos, "end", end)
	}
	return m.clear()
}
