package fsutil

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFileAtomic replaces dir/name with data so that after a crash or a power loss the file
// holds either its old contents or data, never a mix: it writes a temporary file with a unique
// name in dir, fsyncs it, renames it over name and fsyncs dir. Two concurrent writers of one
// name never share a temporary file (the last rename wins, whole). On error the temporary file
// is removed and the old file is untouched, except when only the final directory fsync failed:
// then the new contents are in place but not known to be durable, and the error says so.
func WriteFileAtomic(dir, name string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(dir, name+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	tmp := f.Name()
	cleanup := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Chmod(perm); err != nil {
		return cleanup(err)
	}
	if _, err := f.Write(data); err != nil {
		return cleanup(err)
	}
	if err := Fsync(f); err != nil {
		return cleanup(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: close: %w", name, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := SyncDir(dir); err != nil {
		return fmt.Errorf("write %s: renamed into place, not known durable: %w", name, err)
	}
	return nil
}

// ReadFileDurable reads a file that WriteFileAtomic writes, and makes its name durable before
// returning it: a process killed inside WriteFileAtomic, after the rename and before the
// directory fsync, leaves new contents that the page cache serves and a power loss can take
// back. A caller that acts on what it read (deletes log behind a checkpoint, votes, keeps a
// node id) must not act on contents that may later revert. The contents themselves were
// fsync'd before the rename. A missing file is returned as the os.ReadFile error, unsynced.
func ReadFileDurable(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if err := SyncDir(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("read %s: sync its directory: %w", filepath.Base(path), err)
	}
	return data, nil
}

// RemoveTemps deletes the temporary files WriteFileAtomic may leave behind in dir after a
// crash (name + ".tmp-*"). Call it once at open, before any writer runs.
func RemoveTemps(dir, name string) error {
	matches, err := filepath.Glob(filepath.Join(dir, name+".tmp-*"))
	if err != nil {
		return err
	}
	for _, m := range matches {
		if err := os.Remove(m); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}

func parentDir(dir string) string {
	return filepath.Dir(filepath.Clean(dir))
}
