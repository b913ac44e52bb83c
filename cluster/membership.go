package cluster

import (
	"context"
	"fmt"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Membership changes: a committed change is applied to raft's tracker, reported through
// Config.OnConfChange, then recorded in the stored membership; changes are proposed one at a time,
// and leadership can be handed to another voter.

// applyConfChange applies a committed membership change: raft's tracker, then OnConfChange
// (the caller records the members' addresses), then the stored membership with the change's
// index as ConfIndex (so a restart starts with it). A change the stored ConfIndex already
// covers (the node restarted from an older applied index) is not applied twice.
//
// The order is what makes a crash between the two writes harmless. The state machine is told
// of the entry (Applier.Apply) only after both, so after a crash anywhere in here the restart
// delivers the entry again:
//
//   - a crash after OnConfChange and before the ConfIndex is stored: the stored ConfIndex is
//     below the entry, so the change is applied again, to raft's tracker (which the restart
//     rebuilt from the stored membership, without the change) and to OnConfChange, which must
//     be idempotent (replica's members file: the same address is put again, a removed id is
//     listed once). Until then the restarted node holds an address for a member its raft does
//     not know yet, or none for one its raft still counts: who votes is the stored membership's
//     word alone, and both are set right when the entry is applied;
//   - a crash after the ConfIndex is stored: OnConfChange had already returned, so what it
//     records is durable, and skipping the entry loses nothing.
//
// The other order (the ConfIndex first) left a node that crashed between the two without the
// new member's address for good: the entry delivered again is skipped. For the same reason an
// OnConfChange error stops the node before the ConfIndex moves. Either error stops the node
// with ErrApply (apply wraps it with the entry), so that what embeds the node fails its state
// machine as for a normal entry that fails to apply: raft's tracker and OnConfChange's
// memory may hold a change the disk lacks.
func (n *Node) applyConfChange(e *pb.Entry) error {
	var cc *pb.ConfChangeV2
	switch e.GetType() {
	case pb.EntryConfChange:
		var v1 pb.ConfChange
		if err := proto.Unmarshal(e.GetData(), &v1); err != nil {
			return fmt.Errorf("membership change: %w", err)
		}
		cc = v1.AsV2()
	case pb.EntryConfChangeV2:
		cc = &pb.ConfChangeV2{}
		if err := proto.Unmarshal(e.GetData(), cc); err != nil {
			return fmt.Errorf("membership change: %w", err)
		}
	default:
		return fmt.Errorf("unknown entry type %s", e.GetType())
	}
	if e.GetIndex() <= n.cfg.Storage.ConfIndex() {
		return nil
	}
	cs := n.rn.ApplyConfChange(cc)
	if n.cfg.OnConfChange != nil {
		if err := n.cfg.OnConfChange(e.GetIndex(), cc, cs); err != nil {
			return fmt.Errorf("membership change: %w", err)
		}
	}
	if err := n.cfg.Storage.setConfState(cs, e.GetIndex()); err != nil {
		return fmt.Errorf("membership change: record the membership: %w", err)
	}
	n.log.Info("membership changed", "index", e.GetIndex(), "voters", cs.GetVoters(), "learners", cs.GetLearners())
	return nil
}

// ProposeConfChange proposes a membership change and returns when it is applied on this node,
// like Propose. Raft takes one change at a time: a second one while the first is pending is
// dropped (ErrDropped).
func (n *Node) ProposeConfChange(ctx context.Context, cc *pb.ConfChangeV2) error {
	done := make(chan error, 1)
	return n.submit(ctx, &proposal{conf: cc, done: done}, done)
}

// TransferLeadership asks the leader (this node) to hand leadership to id. It returns at once;
// Status shows when the transfer happened. ErrNotLeader on a node that is not the leader.
func (n *Node) TransferLeadership(ctx context.Context, id uint64) error {
	res := make(chan error, 1)
	select {
	case n.transferc <- transfer{to: id, res: res}:
	case <-ctx.Done():
		return ctx.Err()
	case <-n.done:
		return ErrStopped
	}
	select {
	case err := <-res:
		return err
	case <-n.done:
		return ErrStopped
	}
}

type transfer struct {
	to  uint64
	res chan error
}
