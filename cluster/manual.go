package cluster

import (
	"context"
	"fmt"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// Manual driving. A Node that is never Started can be driven by one goroutine of the caller's,
// step by step, in place of the Ready loop: Tick instead of the ticker, Deliver instead of Step,
// TakeProposal to hand a waiting Propose or ProposeGroup call to raft, Process to handle every
// pending Ready (persist, send, apply, advance, in the order of the package comment), and Halt
// to stop the node as a crash would. Time, the network and the order of events are then the
// caller's, so a simulation that draws them from a seed runs the same way every time
// (replica/sim_test.go runs three brokers this way).
//
// These methods must be called from one goroutine only, and never on a started node.

// Tick advances the node's logical clock by one tick.
func (n *Node) Tick() { n.rn.Tick() }

// Deliver steps a message from a peer into raft at once (Step queues it for the loop instead).
func (n *Node) Deliver(m *pb.Message) {
	if raft.IsLocalMsg(m.GetType()) {
		return
	}
	n.step(m)
}

// Process handles every pending Ready. An error stops the node as it would stop the loop
// (Halt): the caller treats the node as crashed.
func (n *Node) Process() error {
	if err := n.process(); err != nil {
		n.Halt(err)
		return err
	}
	return nil
}

// TakeProposal waits for one Propose or ProposeGroup call (or ctx) and proposes it as the loop
// would, returning once the caller's call has its answer from raft. An error other than ctx's
// means the node stopped on a storage error (Halt has run).
func (n *Node) TakeProposal(ctx context.Context) error {
	var err error
	select {
	case <-ctx.Done():
		return ctx.Err()
	case p := <-n.propc:
		err = n.proposeBatch(p)
	case g := <-n.groupc:
		err = n.proposeGroup(g)
	}
	if err != nil {
		n.Halt(err)
	}
	return err
}

// Halt stops a manually driven node as a crash would: proposals still waiting fail with
// ErrOutcomeUnknown, Done is closed and Status reports err. The node must not be used again;
// a restart opens a new Node over the storage. Calling it twice is harmless.
func (n *Node) Halt(err error) {
	select {
	case <-n.done:
		return
	default:
	}
	n.failPending(fmt.Errorf("%w: %w", ErrOutcomeUnknown, err))
	n.publish(err)
	close(n.done)
}

// ReportSnapshotNow tells raft at once whether a snapshot message to id went out
// (ReportSnapshot queues it for the loop instead). Call it between Process calls.
func (n *Node) ReportSnapshotNow(id uint64, failed bool) {
	status := raft.SnapshotFinish
	if failed {
		status = raft.SnapshotFailure
	}
	n.rn.ReportSnapshot(id, status)
}
