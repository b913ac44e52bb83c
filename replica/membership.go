package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/imagomq/imago/cluster"
	"github.com/imagomq/imago/internal/fsutil"
)

// Membership changes (API "Cluster", docs/cluster.md):
//
//   - A node is added as a learner: it receives the log but does not vote, so a new, empty
//     node never weakens the quorum while it copies the log. The leader promotes it to a voter
//     once its log has caught up with the commit index (promoter, every second).
//   - A node is removed by its id. Ids are never reused: the members file remembers removed
//     ids and AddMember refuses them, so a machine whose disk was wiped cannot come back under
//     its old id and vote again in a term it already voted in.
//   - Leadership can be handed to another voter (TransferLeadership).
//
// Addresses travel in the change's context and are kept in the members file of the data
// directory (written when a change is applied), which a restart reads instead of the
// configuration's peer list.

// Errors of membership calls.
var (
	ErrNotLeader      = errors.New("replica: not the leader")
	ErrMemberExists   = errors.New("replica: member exists or existed")
	ErrUnknownMember  = errors.New("replica: no such member")
	ErrChangePending  = errors.New("replica: another membership change is in progress")
	ErrInvalidRequest = errors.New("replica: invalid membership request")
)

const membersFileName = "cluster-members.json"

type membersFile struct {
	Members []Peer   `json:"members"`
	Removed []uint64 `json:"removed,omitempty"`
}

// membership is the member's address book, guarded by mu.
type membership struct {
	mu      sync.Mutex
	dir     string
	peers   map[uint64]Peer
	removed []uint64
}

func loadMembership(dir string, configured []Peer) (*membership, error) {
	m := &membership{dir: dir, peers: make(map[uint64]Peer)}
	b, err := fsutil.ReadFileDurable(filepath.Join(dir, membersFileName))
	switch {
	case errors.Is(err, os.ErrNotExist):
		for _, p := range configured {
			m.peers[p.ID] = p
		}
		return m, nil
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", membersFileName, err)
	}
	var f membersFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("parse %s: %w", membersFileName, err)
	}
	for _, p := range f.Members {
		m.peers[p.ID] = p
	}
	m.removed = f.Removed
	return m, nil
}

// saveLocked writes the members file atomically. The caller holds mu.
func (m *membership) saveLocked() error {
	f := membersFile{Removed: m.removed}
	for _, p := range m.peers {
		f.Members = append(f.Members, p)
	}
	slices.SortFunc(f.Members, func(a, b Peer) int { return int(a.ID) - int(b.ID) })
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(m.dir, membersFileName, b, 0o644)
}

func (m *membership) get(id uint64) (Peer, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.peers[id]
	return p, ok
}

func (m *membership) list() []Peer {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Peer, 0, len(m.peers))
	for _, p := range m.peers {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Peer) int { return int(a.ID) - int(b.ID) })
	return out
}

func (m *membership) known(id uint64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.peers[id]
	return ok || slices.Contains(m.removed, id)
}

// onConfChange runs on the raft loop when a membership change is applied, before raft's stored
// membership records it (cluster.Config.OnConfChange): the members file is written first, so a
// crash never leaves a stored membership that names a member whose address the file lacks.
// It is idempotent: a change applied again after a crash puts the same address again and lists
// a removed id once. An error stops the node before the change is recorded, and fails the
// broker (Start's watcher: the peers in memory may already hold the change); the restart
// applies it again.
func (mb *Member) onConfChange(index uint64, cc *pb.ConfChangeV2, cs *pb.ConfState) error {
	var added Peer
	if len(cc.GetContext()) > 0 {
		if err := json.Unmarshal(cc.GetContext(), &added); err != nil {
			mb.log.Error("membership change without a readable address", "index", index, "err", err)
		}
	}
	m := mb.members
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range cc.GetChanges() {
		id := c.GetNodeId()
		switch c.GetType() {
		case pb.ConfChangeType_ConfChangeAddNode, pb.ConfChangeType_ConfChangeAddLearnerNode:
			p, ok := m.peers[id]
			if added.ID == id {
				p, ok = added, true
			}
			if !ok {
				mb.log.Error("member added without an address", "id", id, "index", index)
				continue
			}
			m.peers[id] = p
			if mb.tr != nil {
				mb.tr.AddPeer(id, p.RaftAddr)
			}
		case pb.ConfChangeType_ConfChangeRemoveNode:
			delete(m.peers, id)
			if !slices.Contains(m.removed, id) {
				m.removed = append(m.removed, id)
			}
			if mb.tr != nil {
				mb.tr.RemovePeer(id)
			}
		}
	}
	if err := m.saveLocked(); err != nil {
		return fmt.Errorf("record the members in %s: %w", membersFileName, err)
	}
	return nil
}

// AddMember adds p as a learner; the leader promotes it to a voter once it has caught up. Only
// the serving leader accepts it. The new node is started with --join-cluster and its own,
// empty data directory.
func (mb *Member) AddMember(ctx context.Context, p Peer) error {
	if p.ID == 0 || p.RaftAddr == "" || p.HTTPAddr == "" {
		return fmt.Errorf("%w: a member needs an id, a raft_addr and an http_addr", ErrInvalidRequest)
	}
	if mb.members.known(p.ID) {
		return fmt.Errorf("%w: id %d; a replaced machine joins under a new id", ErrMemberExists, p.ID)
	}
	cctx, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return mb.confChange(ctx, &pb.ConfChangeV2{
		Changes: []*pb.ConfChangeSingle{{Type: pb.ConfChangeType_ConfChangeAddLearnerNode.Enum(), NodeId: new(p.ID)}},
		Context: cctx,
	})
}

// RemoveMember removes the member id from the group.
func (mb *Member) RemoveMember(ctx context.Context, id uint64) error {
	if _, ok := mb.members.get(id); !ok {
		return fmt.Errorf("%w: %d", ErrUnknownMember, id)
	}
	return mb.confChange(ctx, &pb.ConfChangeV2{
		Changes: []*pb.ConfChangeSingle{{Type: pb.ConfChangeType_ConfChangeRemoveNode.Enum(), NodeId: new(id)}},
	})
}

// TransferLeadership hands leadership to the voter id and waits (up to ctx) until it leads.
func (mb *Member) TransferLeadership(ctx context.Context, id uint64) error {
	st := mb.node.Status()
	if !slices.Contains(st.Voters, id) {
		return fmt.Errorf("%w: %d is not a voter", ErrUnknownMember, id)
	}
	if st.Leader == id {
		return nil
	}
	if err := mb.node.TransferLeadership(ctx, id); err != nil {
		if errors.Is(err, cluster.ErrNotLeader) {
			return ErrNotLeader
		}
		return err
	}
	for {
		if mb.node.Status().Leader == id {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("leadership not transferred to %d: %w", id, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (mb *Member) confChange(ctx context.Context, cc *pb.ConfChangeV2) error {
	if !mb.node.Status().Serving {
		return ErrNotLeader
	}
	err := mb.node.ProposeConfChange(ctx, cc)
	switch {
	case errors.Is(err, cluster.ErrNotLeader):
		return ErrNotLeader
	case errors.Is(err, cluster.ErrDropped):
		return fmt.Errorf("%w: %v", ErrChangePending, err)
	}
	return err
}

// promote runs on every member and acts on the leader: a learner whose log has reached the
// commit index becomes a voter. Reached means acknowledged to this leader: a learner that has
// never answered (added before its machine started) is not promoted however short the log,
// or its machine, starting with an empty directory, would find its id a voter and be refused
// as a wiped one (checkJoin). It ends when ctx does.
func (mb *Member) promote(ctx context.Context) {
	defer mb.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		st := mb.node.Status()
		if !st.Serving {
			continue
		}
		mb.promoteRounds.Add(1)
		for _, id := range st.Learners {
			if match := st.Match[id]; match > 0 && st.Active[id] && match+promoteLag >= st.Commit {
				mb.log.Info("promoting a caught-up learner to voter", "id", id, "match", match, "commit", st.Commit)
				err := mb.confChange(ctx, &pb.ConfChangeV2{
					Changes: []*pb.ConfChangeSingle{{Type: pb.ConfChangeType_ConfChangeAddNode.Enum(), NodeId: new(id)}},
				})
				if err != nil {
					mb.log.Warn("promotion failed; retrying", "id", id, "err", err)
				}
				break // one change at a time
			}
		}
	}
}

// promoteLag is how far behind the commit index a learner may be and still be promoted.
const promoteLag = 64
