package replica

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/imagomq/imago/cluster"
)

// Joining (docs/cluster.md, "A node that must not vote"). A node started with --join-cluster
// and a data directory without raft state looks the same whether it is a new machine or one
// whose directory was wiped. A wiped voter must not vote again: raft lets any node grant
// votes, learners too, and one with an empty log and no memory of the votes it cast would
// elect a node that lacks writes acknowledged with its help, or a second leader in a term.
// Whether the id is a voter is known for sure only to the serving leader (a member added
// after the start is in no configuration file), so the node asks it before its raft node runs
// and starts only when the leader confirms the id is new.

// defaultJoinTimeout is how long Start waits for the leader's answer (Config.JoinTimeout).
const defaultJoinTimeout = 10 * time.Second

// checkJoin decides whether a node with no raft state may join under cfg.NodeID: not when the
// id is among the configured peers (the voters the cluster started with), nor when the serving
// leader counts it as a voter, a removed member, or a learner that already acknowledged
// entries (its earlier directory held them); nor when no leader confirms within
// cfg.JoinTimeout. A learner the leader has not heard from yet, or an id the group does not
// know (the machine is added after it started), joins.
func checkJoin(ctx context.Context, cfg Config, dir string, log *slog.Logger) error {
	id := cfg.NodeID
	for _, p := range cfg.Peers {
		if p.ID == id {
			return fmt.Errorf("replica: node %d is one of the voters in cluster.peers and %s has no raft state, so the directory of a voter was wiped (--join-cluster is for a new machine under an id that is not in cluster.peers); %s", id, dir, replaceAdvice(id))
		}
	}
	wait := cfg.JoinTimeout
	if wait <= 0 {
		wait = defaultJoinTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	ask := make(map[uint64]string)
	for _, p := range cfg.Peers {
		ask[p.ID] = p.RaftAddr
	}
	if len(ask) == 0 {
		return fmt.Errorf("replica: node %d joins with no raft state and cluster.peers names no member to ask whether its id is new: list the current members", id)
	}
	var answers []string
	for {
		info, leader, got := askRound(ctx, cfg.TLS, id, ask)
		if info != nil {
			return judgeJoin(*info, leader, id, dir, log)
		}
		answers = got
		select {
		case <-ctx.Done():
			slices.Sort(answers)
			return fmt.Errorf("replica: no serving leader confirmed within %s that node %d is new to the cluster (%s): a node whose data directory has no raft state joins only once the leader has confirmed that its id is not a voter, since the directory may be a wiped voter's; start it again when the cluster has a leader (imago cluster status), with cluster.peers naming current members", wait, id, strings.Join(answers, "; "))
		case <-time.After(200 * time.Millisecond): // the next round of questions
		}
	}
}

// askRound puts the join question to every member in ask at once and returns the first
// confirmed answer and who gave it, or, when none came, what each member said. Leaders the
// members name are added to ask.
func askRound(ctx context.Context, peerTLS *cluster.PeerTLS, id uint64, ask map[uint64]string) (*cluster.JoinInfo, uint64, []string) {
	round, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		peer uint64
		info cluster.JoinInfo
		err  error
	}
	res := make(chan result, len(ask))
	for pid, addr := range ask {
		go func() {
			info, err := cluster.AskJoin(round, peerTLS, id, pid, addr)
			res <- result{pid, info, err}
		}()
	}
	var said []string
	for range len(ask) {
		r := <-res
		switch {
		case r.err != nil:
			said = append(said, r.err.Error())
		case r.info.Confirmed:
			return &r.info, r.peer, nil
		case r.info.Error != "":
			said = append(said, fmt.Sprintf("node %d: %s", r.peer, r.info.Error))
		case r.info.Leader == 0:
			said = append(said, fmt.Sprintf("node %d knows no leader", r.peer))
		default:
			said = append(said, fmt.Sprintf("node %d is not the serving leader (its leader: node %d)", r.peer, r.info.Leader))
			if _, ok := ask[r.info.Leader]; !ok && r.info.LeaderAddr != "" && r.info.Leader != id {
				ask[r.info.Leader] = r.info.LeaderAddr
			}
		}
	}
	return nil, 0, said
}

// judgeJoin applies the leader's answer.
func judgeJoin(info cluster.JoinInfo, leader, id uint64, dir string, log *slog.Logger) error {
	switch {
	case info.Removed:
		return fmt.Errorf("replica: the leader (node %d) says node %d was removed from the cluster, and a removed id is never taken again: add the machine under a new id (POST /v1/cluster/members) and start it with that id in cluster.node_id and --join-cluster (docs/cluster.md, \"Runbook: replace a node\")", leader, id)
	case info.Voter:
		return fmt.Errorf("replica: the leader (node %d) counts node %d as a voter and %s has no raft state, so the directory of a voter was wiped; %s", leader, id, dir, replaceAdvice(id))
	case info.Learner && info.Match > 0:
		return fmt.Errorf("replica: the leader (node %d) counts node %d as a learner that already holds entries up to %d and %s has no raft state, so its directory was wiped; %s", leader, id, info.Match, dir, replaceAdvice(id))
	}
	log.Info("the leader confirmed that this node's id is new to the cluster", "leader", leader, "learner", info.Learner)
	return nil
}

// replaceAdvice is the recovery for a member whose directory was wiped.
func replaceAdvice(id uint64) string {
	return fmt.Sprintf("it must not vote again (it may have voted in a term it no longer remembers, and acknowledged writes may have been on its lost disk): replace it under a new node id: remove it (DELETE /v1/cluster/members/%d), add the machine under a new id (POST /v1/cluster/members with the new id and its addresses), and start it with that id in cluster.node_id, an empty data directory and --join-cluster (docs/cluster.md, \"Runbook: replace a node\")", id)
}

// joinInfo answers the join question about id (cluster.JoinSource): only the serving leader
// answers it, after a read barrier, so that every membership change committed before the
// question is in its answer and a leader deposed without noticing answers nothing.
func (m *Member) joinInfo(ctx context.Context, id uint64) cluster.JoinInfo {
	st := m.node.Status()
	info := cluster.JoinInfo{Leader: st.Leader}
	if p, ok := m.members.get(st.Leader); ok {
		info.LeaderAddr = p.RaftAddr
	}
	if !st.Serving {
		return info
	}
	if err := m.node.ReadBarrier(ctx); err != nil {
		info.Error = "the leader could not confirm its leadership: " + err.Error()
		return info
	}
	st = m.node.Status()
	if !st.Serving {
		return info
	}
	info.Confirmed = true
	info.Voter = slices.Contains(st.Voters, id)
	info.Learner = slices.Contains(st.Learners, id)
	info.Match = st.Match[id]
	m.members.mu.Lock()
	info.Removed = slices.Contains(m.members.removed, id)
	m.members.mu.Unlock()
	m.log.Info("answered a joining node", "id", id, "voter", info.Voter, "learner", info.Learner, "removed", info.Removed, "match", info.Match)
	return info
}
