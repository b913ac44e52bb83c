package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/imagomq/imago/offsetdb"
)

// openOffsets opens the consumer offset store of offsets.store (file by default, in the data
// directory), with group commit in front, and applies the DBA tables' migrations to a database
// store at start-up.
func (s *server) openOffsets(ctx context.Context) error {
	c := s.cfg.Offsets
	cfg := offsetdb.Config{
		Store:     c.Store,
		DSN:       c.DSN,
		Dir:       filepath.Join(s.cfg.DataDir, "offsets"),
		ZooKeeper: s.cfg.ZooKeeper.Servers,
		Root:      s.cfg.ZooKeeper.Root,
		Migrate:   true,
		Logger:    s.logger,
	}
	cfg.GroupCommit.MaxDelay = c.GroupCommit
	store, err := offsetdb.Open(ctx, cfg)
	if err != nil {
		return fmt.Errorf("open offset store %q: %w", c.Store, err)
	}
	s.offsets = store
	s.onClose("offset store", store.Close)
	s.logger.Info("offset store open", "store", storeName(c.Store))
	return nil
}

func storeName(s string) string {
	if s == "" {
		return "file"
	}
	return s
}
