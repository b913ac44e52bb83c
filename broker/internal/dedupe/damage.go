package dedupe

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/imagomq/imago/internal/fsutil"
)

// rebuildMarker is the file Open leaves in the directory when it sets damaged files aside; it
// stays until RebuildDone, so that a crash before the caller's rebuild is durable makes the next
// Open ask for the rebuild again (the cut files no longer show the damage).
const rebuildMarker = "rebuild-pending"

// Damage is a dedupe file found damaged inside the durable range of the checkpoint Open was
// given: the entries from Offset on are lost.
type Damage struct {
	File   string // base name in the dedupe directory
	Offset int64  // where its good entries end
	Reason string
}

func (d Damage) String() string {
	if d.File == rebuildMarker {
		return d.Reason
	}
	if d.Offset == 0 && strings.HasPrefix(d.Reason, "missing") {
		return d.File + ": " + d.Reason
	}
	return fmt.Sprintf("%s at byte %d: %s", d.File, d.Offset, d.Reason)
}

// DamageError is Open's error when it finds damage and Options.RepairDir is empty: nothing was
// changed on disk.
type DamageError struct {
	Dir    string
	Damage []Damage
}

func (e *DamageError) Error() string {
	parts := make([]string, len(e.Damage))
	for i, d := range e.Damage {
		parts[i] = d.String()
	}
	return fmt.Sprintf("idempotency files in %s are damaged inside the checkpoint's durable range (%s): "+
		"the keys held there would be forgotten; they must be rebuilt from the commit log",
		e.Dir, strings.Join(parts, "; "))
}

// Damaged returns what Open found damaged and set aside (nil when nothing). The caller must add
// again the key of every request its log holds (Add ignores those past the window and those
// already held), make that durable in its checkpoint, then call RebuildDone.
func (s *Store) Damaged() []Damage {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return append([]Damage(nil), s.damage...)
}

// RebuildDone records that the caller's rebuild after Damaged is durable: the next Open no
// longer asks for it.
func (s *Store) RebuildDone() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.damage == nil {
		return nil
	}
	if err := os.Remove(filepath.Join(s.dir, rebuildMarker)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("dedupe: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		return err
	}
	s.damage = nil
	return nil
}

// setAside runs in Open before a damaged file is cut: it leaves the rebuild marker, then keeps
// a copy of each damaged file under the repair directory, and makes a checkpointed file that is
// missing again, empty, so that the next checkpoint does not name a file that is gone. Each step
// is fsync'd before the next.
func (s *Store) setAside(damage []Damage, cp Checkpoint, cpMissing bool) error {
	if err := writeMarker(s.dir, damage); err != nil {
		return err
	}
	for _, d := range damage {
		if d.File == rebuildMarker || (cpMissing && d.File == cp.File) {
			continue
		}
		if err := copyAside(filepath.Join(s.dir, d.File), s.repairDir); err != nil {
			return fmt.Errorf("keep a copy of damaged %s: %w", d.File, err)
		}
	}
	if cpMissing {
		created, _ := parseName(cp.File)
		f, err := os.OpenFile(filepath.Join(s.dir, cp.File), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return fmt.Errorf("make missing %s again: %w", cp.File, err)
		}
		err = syncFile(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("make missing %s again: %w", cp.File, err)
		}
		s.files = append(s.files, &file{name: cp.File, created: created, newest: math.MinInt64, newSeen: math.MinInt64})
		s.lastCP = Checkpoint{File: cp.File}
	}
	return nil
}

func writeMarker(dir string, damage []Damage) error {
	var b strings.Builder
	for _, d := range damage {
		b.WriteString(d.String())
		b.WriteByte('\n')
	}
	path := filepath.Join(dir, rebuildMarker)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(b.String())
	if err == nil {
		err = syncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

// copyAside copies the file at path into dir under its own name (through a temporary name,
// renamed when complete), fsyncing the copy and dir. A complete copy already there is kept.
func copyAside(path, dir string) error {
	dst := filepath.Join(dir, filepath.Base(path))
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	if err := fsutil.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp := dst + ".partial"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, src)
	if err == nil {
		err = syncFile(out)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}
