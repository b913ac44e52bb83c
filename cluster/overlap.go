package cluster

import (
	"fmt"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// Overlapped rounds on the leader.
//
// A round is one Ready: write its entries, fdatasync, Advance. A leader sends its entries to the
// followers before its own write (handleReady), so the followers' acknowledgements of round k
// arrive while the leader is already syncing round k+1. With the loop blocked in that fsync,
// round k would commit and answer its writers only after round k+1's fsync: two fsyncs of
// latency for every write. Instead the leader runs the fsync on a goroutine and its loop keeps
// stepping the messages that arrive. When they move raft's commit index, the committed entries
// that earlier rounds already made durable here are applied at once (their writers are
// answered), without waiting for the Ready that will carry them; that Ready skips them.
//
// What this may apply is bounded three ways: only while the node is still the leader of the
// term the round began in (a leader's log holds every committed entry and is never cut while
// it leads, and its commit index only moves on a quorum's acknowledgements, so the entries it
// reads back up to that index are the committed ones); only up to the last index synced
// before the round (an entry is applied only once it is durable on this node, as everywhere
// else); and only normal entries (a membership change waits for its Ready, where raft learns
// it is applied).
//
// Groups of proposals (ProposeGroup, the produce path) are taken during the sync too: raft
// appends them after the round's entries and the next Ready carries them, so a write that
// arrives during a round goes into the next one instead of waiting a round for the proposer to
// be let go. Raft's last index is then the round's last entry plus what was proposed since,
// which is what n.lastIndex counts. Single proposals (membership changes, topics), ticks and
// reads wait for the round to end, as before. Raft's Ready/Advance contract allows Step
// between the two (etcd's own node steps messages and proposals there), not another Ready.
//
// Only the running loop does this; a node driven by hand (manual.go) saves in one piece.

// saveOverlapped persists rd's entries and state as Storage.Save does, stepping the messages
// that arrive while the fsync runs and applying what they commit up to durable.
func (n *Node) saveOverlapped(rd *raft.Ready, durable uint64) error {
	s := n.cfg.Storage
	if err := s.appendEntries(rd.Entries); err != nil {
		return err
	}
	term := n.rn.BasicStatus().HardState.GetTerm()
	n.lastIndex = rd.Entries[len(rd.Entries)-1].GetIndex()
	synced := make(chan error, 1)
	go func() { synced <- s.syncEntries(rd.Entries) }()
	for {
		select {
		case err := <-synced:
			if err != nil {
				return err
			}
			return s.saveState(rd.HardState)
		case m := <-n.recvc:
			n.step(m)
			n.drainRecv()
			if err := n.applyCommitted(term, durable); err != nil {
				<-synced // the goroutine ends with its fsync; the node stops anyway
				return err
			}
		case g := <-n.groupc:
			n.stepGroup(g)
		}
	}
}

// applyCommitted applies, in order, the entries raft now counts as committed that this node,
// still the leader of term, has synced (index at most durable). They are read back from the
// log, as raft reads committed entries for a Ready: a leader's log holds every committed entry.
func (n *Node) applyCommitted(term, durable uint64) error {
	st := n.rn.BasicStatus()
	if st.RaftState != raft.StateLeader || st.HardState.GetTerm() != term {
		return nil
	}
	moved := false
	if upto := min(st.HardState.GetCommit(), durable); n.applied < upto {
		ents, err := n.cfg.Storage.Entries(n.applied+1, upto+1, maxCommittedSize)
		if err != nil {
			return fmt.Errorf("read committed entries %d-%d: %w", n.applied+1, upto, err)
		}
		for _, e := range ents {
			if e.GetType() != pb.EntryNormal {
				break
			}
			if err := n.apply(e); err != nil {
				return err
			}
			moved = true
		}
	}
	if moved {
		n.finishReads(nil)
	}
	// The status shows the commit index as it moves (only this goroutine writes n.status).
	if moved || st.HardState.GetCommit() != n.status.Commit {
		n.publish(nil)
	}
	return nil
}
