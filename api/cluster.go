package api

// ClusterStatus answers GET /v1/cluster: the answering node's view of the cluster (cluster
// mode only; a single node answers 404 not_found).
type ClusterStatus struct {
	ClusterID    string `json:"cluster_id"`
	NodeID       uint64 `json:"node_id"`   // the node that answered
	LeaderID     uint64 `json:"leader_id"` // 0: no leader known
	Role         string `json:"role"`      // leader, follower, candidate, pre-candidate
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	// LeaderCommitIndex is the highest commit index this node was told by a leader (its own
	// on the leader): a follower far behind has a commit_index near its own log's end but a
	// leader_commit_index near the leader's.
	LeaderCommitIndex uint64        `json:"leader_commit_index"`
	FirstIndex        uint64        `json:"first_index"` // the first raft index the node's log holds (compaction removed the ones before)
	Serving           bool          `json:"serving"`     // the leader accepts writes
	Nodes             []ClusterNode `json:"nodes"`
	Error             string        `json:"error,omitempty"` // why the node stopped, if it did
}

// ClusterNode is one member as seen from the answering node. MatchIndex and LagEntries are
// known on the leader only (zero elsewhere); Reachable is the answering node's view of its
// link to the member (always true for itself).
type ClusterNode struct {
	ID         uint64 `json:"id"`
	HTTPAddr   string `json:"http_addr"`
	RaftAddr   string `json:"raft_addr"`
	Role       string `json:"role"` // leader, follower, learner
	Reachable  bool   `json:"reachable"`
	MatchIndex uint64 `json:"match_index"`
	LagEntries uint64 `json:"lag_entries"`
}

// Cluster mode's request and answer headers.
const (
	// HeaderLeader is on every answer of a cluster member that knows a leader: its node id.
	HeaderLeader = "Imago-Leader"
	// HeaderForwardedBy marks a request a member forwarded to the leader: the forwarding
	// node's id. A member that gets such a request and does not serve answers no_leader
	// instead of forwarding it again.
	HeaderForwardedBy = "Imago-Forwarded-By"
	// HeaderForwardedFor is the address (host:port) of the client whose request a member
	// forwarded to the leader, and HeaderForwardedSig the member's signature of it with the
	// cluster's forward secret (cluster.forward_secret_env). The leader names that client in
	// its audit records (an operator's resolve or heuristic decision) only when the signature
	// is valid; a member without the secret sends neither.
	HeaderForwardedFor = "Imago-Forwarded-For"
	HeaderForwardedSig = "Imago-Forwarded-Sig"
)
