package cluster

import (
	"context"
	"strconv"

	"go.etcd.io/raft/v3"
)

// Linearizable reads: ReadBarrier runs one raft ReadIndex round (ReadOnlySafe: confirmed by a
// quorum's heartbeat responses) per batch of waiting readers, and releases each reader once
// the confirmed index is applied on this node.

type indexWaiter struct {
	index uint64
	done  chan error
}

// ReadBarrier returns once this node, as the leader, has applied everything that was committed
// when it was called, as confirmed by a quorum (raft's ReadIndex with ReadOnlySafe): a read
// served after it reflects every write acknowledged before the call, also if another node
// was elected meanwhile without this one noticing (a deposed leader never confirms).
// ErrNotLeader on a node that is not the leader, or that loses leadership while waiting.
// Readers that arrive together share one quorum round.
func (n *Node) ReadBarrier(ctx context.Context) error {
	done := make(chan error, 1)
	select {
	case n.readc <- done:
	case <-ctx.Done():
		return ctx.Err()
	case <-n.done:
		return ErrStopped
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-n.done:
		return ErrStopped
	}
}

// startReads issues one ReadIndex round for the readers in first and whatever else waits.
func (n *Node) startReads(first chan error) {
	batch := []chan error{first}
	for range cap(n.readc) {
		select {
		case r := <-n.readc:
			batch = append(batch, r)
			continue
		default:
		}
		break
	}
	if n.rn.BasicStatus().RaftState != raft.StateLeader {
		for _, r := range batch {
			r <- ErrNotLeader
		}
		return
	}
	n.readSeq++
	key := strconv.FormatUint(n.readSeq, 10)
	n.reads[key] = batch
	n.rn.ReadIndex([]byte(key))
}

// finishReads handles a Ready's read states, releases the readers whose index is applied, and
// fails every reader when this node is not the leader any more.
func (n *Node) finishReads(states []raft.ReadState) {
	for _, rs := range states {
		batch := n.reads[string(rs.RequestCtx)]
		delete(n.reads, string(rs.RequestCtx))
		for _, r := range batch {
			n.readWait = append(n.readWait, indexWaiter{index: rs.Index, done: r})
		}
	}
	keep := n.readWait[:0]
	for _, w := range n.readWait {
		if w.index <= n.applied {
			w.done <- nil
		} else {
			keep = append(keep, w)
		}
	}
	clear(n.readWait[len(keep):])
	n.readWait = keep
	if n.rn.BasicStatus().RaftState != raft.StateLeader && (len(n.reads) > 0 || len(n.readWait) > 0) {
		for k, batch := range n.reads {
			for _, r := range batch {
				r <- ErrNotLeader
			}
			delete(n.reads, k)
		}
		for _, w := range n.readWait {
			w.done <- ErrNotLeader
		}
		n.readWait = n.readWait[:0]
	}
}
