package dedupe

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

const fileSuffix = ".dedupe"

func fileName(createdMs int64) string { return fmt.Sprintf("%020d%s", createdMs, fileSuffix) }

// parseName returns the creation time in a file name made by fileName.
func parseName(name string) (int64, bool) {
	digits, ok := strings.CutSuffix(name, fileSuffix)
	if !ok || len(digits) != 20 {
		return 0, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	ms, err := strconv.ParseInt(digits, 10, 64)
	return ms, err == nil
}

// recover restores the state that cp covers; see Open.
func (s *Store) recover(cp Checkpoint) error {
	cpCreated := int64(math.MaxInt64) // zero checkpoint: every file is newer than it
	if cp != (Checkpoint{}) {
		ms, ok := parseName(cp.File)
		if !ok || cp.Size < 0 {
			return fmt.Errorf("invalid checkpoint %+v", cp)
		}
		cpCreated = ms
		s.lastCreated = ms // a new file must sort after the checkpointed one, even if it is gone
	}
	dirents, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	type found struct {
		name    string
		created int64
	}
	var all []found
	for _, d := range dirents {
		if ms, ok := parseName(d.Name()); ok && d.Type().IsRegular() {
			all = append(all, found{d.Name(), ms})
			s.lastCreated = max(s.lastCreated, ms)
		}
	}
	slices.SortFunc(all, func(a, b found) int { return strings.Compare(a.name, b.name) })

	var damage []Damage
	if _, err := os.Stat(filepath.Join(s.dir, rebuildMarker)); err == nil {
		damage = append(damage, Damage{File: rebuildMarker, Reason: "an earlier rebuild from the log did not finish"})
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	c := s.opened
	now := c.wall
	cutoff := now - s.windowMs
	cpMissing := false
	if cp != (Checkpoint{}) && !slices.ContainsFunc(all, func(f found) bool { return f.created == cpCreated }) {
		if cpCreated >= cutoff {
			cpMissing = true
			damage = append(damage, Damage{File: cp.File, Reason: fmt.Sprintf(
				"missing, but not old enough to have expired (the checkpoint holds its first %d bytes)", cp.Size)})
		}
		// Expired and deleted: still the right answer for the next Open. Missing and not
		// expired: it is made again, empty, below.
		s.lastCP = cp
	}
	// Load first, change after: a refused Open changes nothing.
	var (
		newer []string
		cuts  []loaded
	)
	for _, f := range all {
		switch {
		case cp == (Checkpoint{}) || f.created > cpCreated:
			newer = append(newer, f.name)
		case f.created == cpCreated:
			l, err := s.load(f.name, f.created, cp.Size, c)
			if err != nil {
				return err
			}
			// Past cp.Size is what was written after the checkpoint: the caller's replay adds
			// it again. Below it, every byte was fsync'd before the checkpoint was written.
			if l.good < cp.Size {
				why := fmt.Sprintf("%d bytes, the checkpoint holds %d", l.size, cp.Size)
				if l.stop != nil {
					why = l.stop.Error()
				}
				damage = append(damage, Damage{File: f.name, Offset: l.good, Reason: why})
			}
			if l.good < l.size {
				cuts = append(cuts, l)
			}
			s.lastCP = Checkpoint{File: f.name, Size: l.good}
		default:
			// Older than the checkpointed file: fsync'd whole before the checkpoint named a
			// later one, so any bad entry is damage, never a torn write.
			l, err := s.load(f.name, f.created, math.MaxInt64, c)
			if err != nil {
				return err
			}
			if l.stop != nil {
				damage = append(damage, Damage{File: f.name, Offset: l.good, Reason: l.stop.Error()})
				cuts = append(cuts, l)
			}
		}
	}
	if len(damage) > 0 {
		if s.repairDir == "" {
			return &DamageError{Dir: s.dir, Damage: damage}
		}
		if err := s.setAside(damage, cp, cpMissing); err != nil {
			return err
		}
		s.damage = damage
	}
	for _, l := range cuts {
		if err := cutFile(filepath.Join(s.dir, l.f.name), l.good); err != nil {
			return err
		}
	}
	for _, name := range newer {
		// Written after the checkpoint: replay adds it again.
		if err := os.Remove(filepath.Join(s.dir, name)); err != nil {
			return fmt.Errorf("delete %s, written after the checkpoint: %w", name, err)
		}
	}
	if len(newer) > 0 || cpMissing {
		if err := syncDir(s.dir); err != nil {
			return err
		}
	}
	return nil
}

// loaded is what load read of one file.
type loaded struct {
	f    *file
	good int64 // the end of the last good entry read
	size int64 // the file's size on disk
	stop error // why reading stopped before the limit: errTorn or errCorrupt; nil at a clean end
}

// load reads the entries of the first limit bytes of a file into memory up to its first torn or
// corrupt entry and records it in s.files with that size. It changes nothing on disk: recover
// decides what is cut (cutFile).
func (s *Store) load(name string, created, limit int64, c reading) (loaded, error) {
	path := filepath.Join(s.dir, name)
	f, err := os.Open(path)
	if err != nil {
		return loaded{}, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return loaded{}, err
	}
	fs := &file{name: name, created: created, newest: math.MinInt64, newSeen: math.MinInt64}
	good, stop := scan(io.LimitReader(f, limit), func(k Key, rec record) {
		// Loaded: as old as found at Open (OpenAge), and older only by the monotonic clock.
		rec.seen = s.foundSeen(rec.time)
		fs.newest = max(fs.newest, rec.time)
		fs.newSeen = max(fs.newSeen, rec.seen)
		if !s.live(rec.time, rec.seen, c) {
			return
		}
		// A key can appear twice only when it was added again after it expired: the later
		// entry wins. Expire keeps a record newer than the one it pops, so queueing both is right.
		s.q = append(s.q, queued{key: k, time: rec.time, seen: rec.seen})
		s.m[k] = rec
	})
	switch {
	case stop == nil, errors.Is(stop, errTorn), errors.Is(stop, errCorrupt):
	default:
		return loaded{}, fmt.Errorf("read %s at %d: %w", name, good, stop)
	}
	fs.size = good
	s.files = append(s.files, fs)
	return loaded{f: fs, good: good, size: info.Size(), stop: stop}, nil
}

// cutFile truncates the file at path to size and fsyncs it.
func cutFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("truncate %s at %d: %w", filepath.Base(path), size, err)
	}
	if err := syncFile(f); err != nil {
		return fmt.Errorf("fsync %s: %w", filepath.Base(path), err)
	}
	return nil
}

// scan calls fn for each entry in r and returns the end of the last good entry and why it
// stopped: nil at a clean end, errTorn or errCorrupt for a bad entry, errVersion, or a read error.
func scan(r io.Reader, fn func(Key, record)) (int64, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	var (
		good    int64
		hdr     [frameHeaderSize]byte
		payload []byte
	)
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if err == io.EOF {
				return good, nil
			}
			if err == io.ErrUnexpectedEOF {
				return good, fmt.Errorf("%w: header cut short", errTorn)
			}
			return good, err
		}
		n, err := payloadLen(hdr[:])
		if err != nil {
			return good, err
		}
		if cap(payload) < n {
			payload = make([]byte, n)
		}
		payload = payload[:n]
		if _, err := io.ReadFull(br, payload); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return good, fmt.Errorf("%w: payload cut short", errTorn)
			}
			return good, err
		}
		k, rec, err := decodeChecked(hdr[:], payload)
		if err != nil {
			return good, err
		}
		fn(k, rec)
		good += int64(frameHeaderSize + n)
	}
}
