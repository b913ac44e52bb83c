package broker

import (
	"encoding/json"
	"fmt"
)

// In cluster mode retention is a decision of the serving leader, replicated like any write:
// its pass computes, per partition, the offset the partition will start at, and proposes them
// as one retention record (batch type 8). Every member applies the record in log order
// (applyRetention): start offsets only move forward, so applying it again after a restart
// from an older checkpoint changes nothing it did not change the first time. Each member then
// deletes its own index files, once a checkpoint that records the new start is durable
// (checkpoint.go), as a single node does.
//
// Each member then compacts its own raft log (raftcompact.go): the commit-log segments no
// partition retains go once its checkpoint covers them; a member that needs entries another
// member deleted catches up by a snapshot (snapshot.go). A member that does not know batch type 8
// stops loudly when it applies one: upgrade every member before the first retention record is
// written (docs/cluster.md).

// retentionMove is one partition's part of a retention record.
type retentionMove struct {
	Topic     uint32 `json:"topic"`
	Partition int    `json:"partition"`
	Start     int64  `json:"start"`
}

// proposeRetention runs the leader's retention pass: if any partition can let go of index
// segments, it proposes a retention record and waits until it is applied (or the broker
// stops). A node that is not the serving leader does nothing.
func (b *Broker) proposeRetention() {
	pr := b.currentProposer()
	if pr == nil {
		return
	}
	term, ok := pr.Serving()
	if !ok {
		return
	}
	now := b.clock()
	var moves []retentionMove
	b.stateMu.Lock()
	for _, t := range b.table.Load().byID {
		age, size := b.retention(t)
		for _, p := range t.parts {
			if start, ok := b.retentionStart(t, p, now, age, size, p.written); ok {
				moves = append(moves, retentionMove{Topic: t.id, Partition: p.id, Start: start})
			}
		}
	}
	b.stateMu.Unlock()
	if len(moves) == 0 {
		return
	}
	val, err := json.Marshal(moves)
	if err != nil {
		b.opts.Logger.Error("retention: encode record", "err", err)
		return
	}
	buf := make([]byte, raftHeaderSize)
	buf, _ = appendRecord(buf, 0, 0, 0, now.wall, &Message{Value: val, ValueJSON: true})
	putBatchHeader(buf, batchHeader{Magic: raftMagic, Length: uint32(len(buf)), Type: batchRetention, Count: 1, Timestamp: now.wall})
	out := make(chan error, 1)
	if err := pr.Propose(term, [][]byte{buf}, []chan<- error{out}); err != nil {
		b.opts.Logger.Warn("retention: propose record", "err", err)
		return
	}
	select {
	case err = <-out:
	case <-b.stop:
		return
	}
	if err != nil {
		b.opts.Logger.Warn("retention: record not known applied; the next pass decides again", "err", err)
	}
}

// applyRetention moves the start offsets a committed retention record names, on every member
// alike. A partition it does not know, or a start at or below the current one, changes
// nothing. The caller holds stateMu; the index files go with the next checkpoint.
func (b *Broker) applyRetention(index uint64, bv batchView, byID map[uint32]*topic) error {
	if len(bv.Records) != 1 {
		return fmt.Errorf("apply raft entry %d: retention batch with %d records", index, len(bv.Records))
	}
	var moves []retentionMove
	if err := json.Unmarshal(bv.Records[0].Value, &moves); err != nil {
		return fmt.Errorf("apply raft entry %d: retention record: %w", index, err)
	}
	for _, m := range moves {
		t, ok := byID[m.Topic]
		if !ok || m.Partition < 0 || m.Partition >= len(t.parts) {
			continue
		}
		p := t.parts[m.Partition]
		if m.Start > p.start.Load() {
			b.moveStartLocked(t, p, m.Start)
		}
	}
	return nil
}
