// Package replica makes a broker one member of a three-node Imago cluster. It owns the wiring
// between the broker (whose commit log is the raft log) and the cluster package (raft, the Ready
// loop, the peer transport): it opens the raft storage over the broker's log, runs the node and
// its transport, hands committed entries to the broker and the broker's proposals to raft, and
// reports the cluster's state for GET /v1/cluster, metrics and readiness.
//
// It decides nothing about HTTP: the gateway asks Status and Leader and forwards requests itself.
package replica

import (
	"time"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/cluster"
)

// Peer is one voting member as configured: its never-reused id and its two addresses.
type Peer struct {
	ID       uint64 `json:"id"`
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr"`
}

// Config configures a Member.
type Config struct {
	// NodeID is this node's id among Peers; RaftAddr (default: its peer's raft_addr) is where
	// its transport listens.
	NodeID   uint64
	RaftAddr string
	// Peers are the voters at bootstrap, this node included.
	Peers []Peer
	// TickInterval is one raft tick (default 100ms); an election starts after ElectionTick ticks
	// without a leader (default 10: one second).
	TickInterval time.Duration
	ElectionTick int
	// Bootstrap allows a data directory without raft state to start as a new member of a new
	// cluster (serve's --bootstrap-cluster). Without it such a directory is refused: it may be
	// one that was wiped (docs/cluster.md).
	Bootstrap bool
	// Join starts a new, empty node that the cluster added with POST /v1/cluster/members (serve's
	// --join-cluster): it learns the membership from the leader's log. HTTPAddr is its own
	// HTTP address (the others learn it from the membership change). A data directory without
	// raft state joins only under an id the leader confirms is new (Start); JoinTimeout bounds
	// the wait for that answer (default 10s).
	Join        bool
	HTTPAddr    string
	JoinTimeout time.Duration
	// TLS, if set, is the mutual TLS of everything on the raft port: the transport's listener
	// and dials, snapshot file copies and the join question (cluster.PeerTLS). Nil: plain TCP,
	// which the configuration allows on loopback or with cluster.insecure_transport only.
	TLS *cluster.PeerTLS
}

// Status is a member's view of the cluster: exactly what GET /v1/cluster answers, so the wire
// type is used as it is.
type Status = api.ClusterStatus

// NodeStatus is one member as seen from the node answering (api.ClusterNode).
type NodeStatus = api.ClusterNode
