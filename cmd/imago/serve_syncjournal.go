package main

import (
	"os"

	"github.com/imagomq/imago/internal/powerloss"
)

// envSyncJournal is a test instrument, not a setting: when it names a file, `imago serve`
// appends one line to it for every successful fsync and directory sync (the file or directory
// and the size it made durable), after the sync and before anything that depends on it is
// acknowledged. The crash test of the real binary uses the journal to simulate a power loss
// after kill -9: it cuts every file back to what was synced. It costs a stat and a write per
// sync and must never be set in production.
const envSyncJournal = "IMAGO_TEST_SYNC_JOURNAL"

// installSyncJournal installs the recording sync hook when envSyncJournal is set.
func (s *server) installSyncJournal() error {
	path := os.Getenv(envSyncJournal)
	if path == "" {
		return nil
	}
	rec, err := powerloss.OpenJournal(path)
	if err != nil {
		return err
	}
	restore := rec.Install()
	s.logger.Warn("test instrument active: every fsync is recorded in a journal", "variable", envSyncJournal, "journal", path)
	s.onClose("sync journal", func() error {
		restore()
		return rec.Close()
	})
	return nil
}
