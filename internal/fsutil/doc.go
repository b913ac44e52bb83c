// Package fsutil is the one home of filesystem durability in Imago: fsync and fdatasync of
// files (with the EINTR loop), fsync of directories, write-temp-fsync-rename of small files,
// space reservation, shared memory maps and exclusive locks on data directories. Every package that promises
// durability calls these functions instead of the syscalls, for two reasons:
//
//   - One behaviour. A directory fsync that fails is an error everywhere (never only a log line);
//     a temporary file has a unique name, so two writers of one file never share it.
//   - One seam. SetHook installs a process-wide Hook that sees every file and directory sync
//     before it happens. Tests use it to make a sync fail (EIO, ENOSPC), to block it (a crash
//     while the flusher waits in fdatasync) or to record what was made durable, so that a
//     "power loss" can drop everything that was not. With no hook installed the cost is one
//     atomic load per sync.
//
// The hook is test instrumentation: production code never installs one. `imago serve` installs
// the recording hook only when the test-only variable IMAGO_TEST_SYNC_JOURNAL is set.
package fsutil
