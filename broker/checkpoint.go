package broker

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/imagomq/imago/broker/internal/dedupe"
	"github.com/imagomq/imago/internal/fsutil"
)

// A checkpoint bounds start-up work: it records a log position P such that every partition's
// index is durable for all records before P. Open replays only the log after P, so start-up
// time depends on the checkpoint interval, not on the size of the log.
//
// Writing one: under stateMu (between two flusher apply phases) take P and each partition's
// start, written end and bytes, and the idempotency store's durable point; then, outside the
// lock, fsync the index segments written since the last checkpoint, and replace
// checkpoint.json atomically.
//
// Checkpoints run one at a time (ckptMu over the whole of checkpoint()): the periodic
// checkpointer, retention and Close all write them. Two at once would let the second find no
// dirty index segment (the first took the flags and is still syncing them) and publish a
// checkpoint that claims unsynced index pages durable, or let an older checkpoint land after a
// newer one while lastCkptPos says otherwise, and retention trusts lastCkptPos when it deletes
// log segments. Serialized, each checkpoint starts from the state the previous one left.
//
// A failed index fsync ends checkpoints for the life of the process: Linux may drop the pages
// it could not write back and mark them clean, so a retried fsync "succeeds" without them, and a
// checkpoint naming them would make the restart skip the log that rebuilds them. Every later
// checkpoint (periodic, retention, Close) returns that error; the broker has stopped writes.

const checkpointFileName = "checkpoint.json"

type checkpointFile struct {
	Version    int                  `json:"version"`
	Position   int64                `json:"position"`
	Partitions []checkpointPart     `json:"partitions"`
	Dedupe     dedupe.Checkpoint    `json:"dedupe"`
	Txs        []checkpointTx       `json:"transactions,omitempty"`
	Decisions  []checkpointDecision `json:"decisions,omitempty"`
	// RaftIndex (cluster mode) is the raft index whose batch ends at Position: the state
	// recorded is that of every entry up to it applied.
	RaftIndex uint64 `json:"raft_index,omitempty"`
	WrittenAt string `json:"written_at"`
}

type checkpointPart struct {
	Topic     uint32 `json:"topic"`
	Partition int    `json:"partition"`
	Start     int64  `json:"start"`
	End       int64  `json:"end"`
	Bytes     int64  `json:"bytes"`
}

func loadCheckpoint(dir string) (*checkpointFile, error) {
	b, err := fsutil.ReadFileDurable(filepath.Join(dir, checkpointFileName))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read checkpoint: %w", err)
	}
	var cp checkpointFile
	if err := json.Unmarshal(b, &cp); err != nil {
		return nil, fmt.Errorf("parse checkpoint: %w", err)
	}
	if cp.Version != 1 {
		return nil, fmt.Errorf("checkpoint version %d is not supported", cp.Version)
	}
	return &cp, nil
}

func (b *Broker) runCheckpointer() {
	defer b.wg.Done()
	tick := time.NewTicker(b.opts.CheckpointInterval)
	defer tick.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-tick.C:
		case <-b.ckptSig:
		}
		if err := b.checkpoint(); err != nil {
			b.stopWrites(err) // flusher.go
		}
	}
}

// Checkpoint writes a checkpoint now if the log moved since the last one (the checkpointer does
// so every CheckpointInterval). An error leaves the previous checkpoint in place.
func (b *Broker) Checkpoint() error { return b.checkpoint() }

// checkpoint writes a checkpoint if the log moved since the last one, or if retention asked
// for one (ckptStale).
func (b *Broker) checkpoint() error {
	type dirtySeg struct {
		p *partition
		s *indexSegment
	}
	b.ckptMu.Lock()
	defer b.ckptMu.Unlock()
	if b.ckptBroken != nil {
		return b.ckptBroken
	}
	b.stateMu.Lock()
	pos := b.syncedPos // never past the durable log (fsync interval, never)
	if pos == b.lastCkptPos.Load() && !b.ckptStale {
		b.stateMu.Unlock()
		return nil
	}
	b.ckptStale = false
	cp := checkpointFile{Version: 1, Position: pos, RaftIndex: b.syncedRaft, WrittenAt: b.opts.Now().UTC().Format(time.RFC3339Nano)}
	var dirty []dirtySeg
	for _, t := range b.table.Load().byID {
		for _, p := range t.parts {
			cp.Partitions = append(cp.Partitions, checkpointPart{Topic: t.id, Partition: p.id, Start: p.start.Load(), End: p.synced, Bytes: p.bytes.Load() - p.unsyncedBytes})
			p.mu.RLock()
			for _, s := range p.segs {
				if s.dirty {
					s.dirty = false
					dirty = append(dirty, dirtySeg{p, s})
				}
			}
			p.mu.RUnlock()
		}
	}
	// The log its start offsets point into: retention deletes nothing from there on until a
	// later checkpoint records later starts (a restart from this one would serve those
	// offsets from deleted log).
	keep := b.firstRetainedPos()
	cp.Txs = b.checkpointTxs(pos)
	// The prepare batches it lists: a restart from this checkpoint reads them (restoreTxs), so
	// no log is deleted from the first of them on until a later checkpoint lists later ones
	// (a compacted copy) or none (the branch was decided).
	prepKeep := int64(math.MaxInt64)
	for _, c := range cp.Txs {
		if c.State == TxPrepared {
			prepKeep = min(prepKeep, c.Pos)
		}
	}
	cp.Decisions = b.checkpointDecisions(pos)
	dcp := b.syncedDedupe // Sync below makes it durable; later keys are replayed from the log
	// Index segments retention let go before this state: their files go once this checkpoint,
	// which records start offsets past them, is durable.
	retired := b.retired
	b.retired = nil
	_, err := b.dedupe.Sync()
	if err != nil {
		b.idempotencyFailedLocked()
	}
	b.stateMu.Unlock()
	redirty := func() {
		b.stateMu.Lock()
		for _, d := range dirty {
			d.s.dirty = true
		}
		b.retired = append(retired, b.retired...)
		b.ckptStale = true
		b.stateMu.Unlock()
	}
	if err != nil {
		redirty()
		return fmt.Errorf("checkpoint: sync idempotency store: %w", err)
	}
	cp.Dedupe = dcp
	for _, d := range dirty {
		// A segment retention let go since the list was taken is synced too: this
		// checkpoint records the partition's start as it was then, inside that segment. Its
		// file stays open until a later checkpoint (after this one) removes it.
		d.p.mu.RLock()
		err := fsutil.Fsync(d.s.f)
		d.p.mu.RUnlock()
		if err != nil {
			// The kernel may have dropped the pages it could not write and marked them
			// clean: a later fsync of the file would succeed without them. So no checkpoint
			// of this process may name them durable, ever; the restart replays the log
			// after the last good checkpoint and writes the index again.
			b.ckptBroken = fmt.Errorf("checkpoint: sync index %s: %w (no checkpoint is written until a restart)", d.s.f.Name(), err)
			return b.ckptBroken
		}
	}
	data, err := json.Marshal(cp)
	if err != nil {
		redirty()
		return err
	}
	if err := fsutil.WriteFileAtomic(b.opts.Dir, checkpointFileName, data, 0o644); err != nil {
		redirty()
		return fmt.Errorf("checkpoint: %w", err)
	}
	b.lastCkptPos.Store(pos)
	b.ckptKeepPos.Store(keep)
	b.ckptPrepPos.Store(prepKeep)
	b.lastCkpt = data // a snapshot's derived state (snapshot.go)
	for _, s := range retired {
		// A removal a power loss undoes leaves a file below the partition's start, which
		// recovery opens and the next retention pass lets go again.
		if err := s.remove(); err != nil {
			b.opts.Logger.Error("retention: remove index segment", "file", s.f.Name(), "err", err)
		}
	}
	return nil
}
