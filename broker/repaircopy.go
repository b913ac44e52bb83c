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
// both the log's bytes and their copy.
func saveLogBytes(l *commitLog, dir, name string, pos, end int64) error {
	if end <= pos {
		return nil
	}
	if err := fsutil.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	name = filepath.Join(dir, name)
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	buf := make([]byte, min(end-pos, 1<<20))
	for at := pos; at < end; {
		n := min(int64(len(buf)), end-at)
		if err := l.readAt(buf[:n], at); err != nil {
			f.Close()
			return fmt.Errorf("read log at %d: %w", at, err)
		}
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return fmt.Errorf("write %s: %w", name, err)
		}
		at += n
	}
	if err := fsutil.Fsync(f); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", name, err)
	}
	return fsutil.SyncDir(dir)
}
