package broker

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/imagomq/imago/internal/fsutil"
)

// saveCut copies the log bytes [pos, end) to dir/tail-at-<pos>.bin before recovery cuts them.
// An error stops the cut: the log is left as it is, and the start fails with the reason (free
// space, fix permissions, then start again).
func (b *Broker) saveCut(dir string, pos, end int64) error {
	return saveLogBytes(b.log, dir, fmt.Sprintf("tail-at-%020d.bin", pos), pos, end)
}

// saveLogBytes copies the log bytes [pos, end) of l to dir/name, streamed (any size), then
// fsyncs the file and dir, so that a power loss right after the log is changed cannot take
// both the log's bytes and their copy. The copy is written as dir/name.partial and renamed
// when complete: a copy that fails (a full disk) is removed with dir when that is left empty,
// so that each failed start does not leave another partial copy taking space, and a complete
// copy of an earlier attempt is never overwritten. The .partial files of an attempt that was
// killed are removed from repair/ (dir's parent) before copying.
func saveLogBytes(l *commitLog, dir, name string, pos, end int64) error {
	if end <= pos {
		return nil
	}
	removePartialCopies(filepath.Dir(dir))
	if err := fsutil.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(dir, name)
	tmp := path + partialSuffix
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		os.Remove(dir) // only when empty
		return err     // names tmp
	}
	abandon := func(err error) error {
		f.Close()
		os.Remove(tmp)
		os.Remove(dir) // only when empty
		return err
	}
	buf := make([]byte, min(end-pos, 1<<20))
	for at := pos; at < end; {
		n := min(int64(len(buf)), end-at)
		if err := l.readAt(buf[:n], at); err != nil {
			return abandon(fmt.Errorf("read log at %d: %w", at, err))
		}
		if _, err := f.Write(buf[:n]); err != nil {
			return abandon(err) // names tmp
		}
		at += n
	}
	if err := fsutil.Fsync(f); err != nil {
		return abandon(fileError("sync", tmp, err))
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		os.Remove(dir)
		return err // names tmp
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		os.Remove(dir)
		return err // names tmp and path
	}
	return fsutil.SyncDir(dir)
}

// fileError is err naming path once: an error of the os package on path already names the
// operation and the path and is returned as it is; anything else (a bare errno) gets both.
func fileError(op, path string, err error) error {
	if pe, ok := err.(*os.PathError); ok && pe.Path == path {
		return pe
	}
	return &os.PathError{Op: op, Path: path, Err: err}
}

// partialSuffix marks a copy under repair/ that saveLogBytes has not finished.
const partialSuffix = ".partial"

// removePartialCopies deletes the unfinished copies in the directories under root (repair/)
// that an attempt killed while copying left behind, and those directories if that empties
// them. Best effort: what cannot be removed now is tried again at the next copy.
func removePartialCopies(root string) {
	partial, _ := filepath.Glob(filepath.Join(root, "*", "*"+partialSuffix))
	for _, p := range partial {
		if os.Remove(p) == nil {
			os.Remove(filepath.Dir(p)) // only when empty
		}
	}
}
