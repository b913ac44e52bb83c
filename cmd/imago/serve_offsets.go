package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/groups"
	"github.com/imagomq/imago/migrations"
	"github.com/imagomq/imago/offsetdb"
)

// openOffsets opens the consumer offset store of offsets.store (file by default, in the data
// directory), with group commit in front, and applies the DBA tables' migrations to a database
// store at start-up. With a database store it also keeps the partition_ends table current
// (see partitionEndsWriter), for the consumer_lag view.
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
	if s.member == nil { // a single node: its log is whole now (groups/clamp.go says why not in a cluster)
		if _, err := groups.ClampPastEnd(ctx, s.b, store, s.logger); err != nil {
			return err
		}
	}

	if !isDatabaseStore(c.Store) {
		return nil
	}
	ends, err := offsetdb.OpenPartitionEnds(ctx, cfg, time.Second)
	if err != nil {
		return fmt.Errorf("open partition ends writer (%s): %w", storeName(c.Store), err)
	}
	w := startPartitionEndsWriter(s.b, ends, time.Second, s.logger)
	s.onClose("partition ends writer", func() error {
		w.close()
		return ends.Close()
	})
	return nil
}

func storeName(s string) string {
	if s == "" {
		return "file"
	}
	return s
}

// isDatabaseStore reports whether offsets.store names a SQL database (the stores with a
// partition_ends table).
func isDatabaseStore(store string) bool {
	_, ok := migrations.Dialect(store)
	return ok
}

// partitionEndsWriter keeps imago.partition_ends (imago_partition_ends) current: once per
// interval it reads every partition's durable end from the broker and writes the ones that
// changed since the last successful write, in one upsert (PartitionEnds.Update, which keeps
// the greater value). So the table trails the broker by at most about one interval, and a
// partition is written at most once per interval. A failed write is logged and retried at
// the next tick with everything still unwritten; nothing waits on it (produce never does).
type partitionEndsWriter struct {
	stop chan struct{}
	done chan struct{}
}

// endsSource is the part of *broker.Broker the writer reads.
type endsSource interface {
	Topics() []broker.TopicInfo
}

// endsSink is the part of *offsetdb.PartitionEnds the writer uses.
type endsSink interface {
	Update(ctx context.Context, ends []offsetdb.PartitionEnd) error
}

func startPartitionEndsWriter(b endsSource, sink endsSink, interval time.Duration, log interface {
	Warn(msg string, args ...any)
}) *partitionEndsWriter {
	w := &partitionEndsWriter{stop: make(chan struct{}), done: make(chan struct{})}
	written := map[offsetdb.Key]int64{}
	write := func() {
		var changed []offsetdb.PartitionEnd
		for _, t := range b.Topics() {
			for _, p := range t.Partitions {
				k := offsetdb.Key{Topic: t.Name, Partition: p.Partition}
				if last, ok := written[k]; ok && last == p.EndOffset {
					continue
				}
				changed = append(changed, offsetdb.PartitionEnd{Topic: t.Name, Partition: p.Partition, End: p.EndOffset})
			}
		}
		if len(changed) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := sink.Update(ctx, changed)
		cancel()
		if err != nil {
			log.Warn("partition ends: write failed, will retry", "partitions", len(changed), "err", err)
			return
		}
		for _, e := range changed {
			written[offsetdb.Key{Topic: e.Topic, Partition: e.Partition}] = e.End
		}
	}
	go func() {
		defer close(w.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		write() // the ends at start-up, so the lag view works before the first produce
		for {
			select {
			case <-t.C:
				write()
			case <-w.stop:
				write()
				return
			}
		}
	}()
	return w
}

// close stops the writer after a last write.
func (w *partitionEndsWriter) close() {
	close(w.stop)
	<-w.done
}
