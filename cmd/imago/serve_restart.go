package main

import (
	"fmt"
	"log/slog"
	"os"
)

// A cluster member whose log is behind the leader's compacted log is sent a snapshot: it
// copies the leader's state into a staging directory and stops (cluster.ErrSnapshotStaged).
// serve then shuts down in the usual order and starts again as the same program with the same
// arguments and environment, in the same process (a supervisor sees no exit); the start
// installs the staged state before the storage opens (openBroker, replica.InstallStaged).

// reexec replaces the running program with a new run of the same binary (a seam for tests).
var reexec = execSelf

// restartToInstall re-executes the server. It returns only when that failed: the process then
// exits non-zero and its supervisor restarts it, which installs the snapshot all the same.
func restartToInstall(logger *slog.Logger) error {
	logger.Info("restarting to install the snapshot staged from the leader")
	exe, err := os.Executable()
	if err == nil {
		err = reexec(exe, os.Args, os.Environ())
	}
	return fmt.Errorf("cluster member stopped to install a snapshot, and restarting itself failed (%w): start it again to install it", err)
}
