package fsutil

import "os"

// zeroFill extends f to size bytes by writing zeros after its current end, so the blocks are
// allocated (unlike Truncate, which leaves a sparse hole).
func zeroFill(f *os.File, size int64) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	for off := fi.Size(); off < size; {
		n := min(int64(len(buf)), size-off)
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			return err
		}
		off += n
	}
	return nil
}
