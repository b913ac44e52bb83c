package replica

import (
	"context"
	"errors"
	"log/slog"

	"github.com/imagomq/imago/broker"
)

// Member is a running cluster member: the raft node over the broker's log, its transport, and
// the broker's proposer. Start starts it; Stop stops it (before the broker is closed).
type Member struct {
	cfg  Config
	self Peer
	b    *broker.Broker
	log  *slog.Logger
	done chan struct{}
}

// Start joins b (opened with broker.Options.Replicated) to the cluster: it opens the raft state
// in the broker's data directory, starts the transport on cfg.RaftAddr and the node, and makes
// the broker propose its writes through raft. A data directory that must not vote (its log
// failed verification below its durable end, or its raft state is gone while its log is not)
// makes Start fail: the operator replaces the node under a new id.
func Start(ctx context.Context, cfg Config, b *broker.Broker, logger *slog.Logger) (*Member, error) {
	return nil, errors.New("replica: not implemented yet")
}

// Status returns the member's current view of the cluster.
func (m *Member) Status() Status { return Status{NodeID: m.cfg.NodeID} }

// Self is this node as configured.
func (m *Member) Self() Peer { return m.self }

// Leader returns the leader this node knows of (possibly itself); false when none is known.
func (m *Member) Leader() (Peer, bool) { return Peer{}, false }

// Serving reports whether this node is the leader and accepts writes.
func (m *Member) Serving() bool { return false }

// Done is closed when the member has stopped (Stop, or the node stopped on an error: see
// Status().Error). A member that stopped on an error takes no part in the cluster; the process
// should exit so that a supervisor restarts it.
func (m *Member) Done() <-chan struct{} { return m.done }

// Stop stops the node and the transport. Writes waiting for their entries end with
// broker.ErrOutcomeUnknown.
func (m *Member) Stop() {}
