package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"path"
	"strconv"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/imagomq/imago/replica"
)

// The ZooKeeper directory (cluster mode with zookeeper.servers configured): a read-only view of
// the cluster for operators with zkCli. ZooKeeper never decides anything here: raft elects the
// leader and accepts writes; the directory only reports what the members see, and a member
// that cannot reach ZooKeeper serves on as before.
//
// Layout, under <zookeeper.root>/cluster/<cluster_id>:
//
//	nodes/<node id>   ephemeral, one per running member: {"id", "http_addr", "raft_addr",
//	                  "role", "term", "applied_index"}, refreshed every second
//	leader            ephemeral, written by the serving leader: {"id", "http_addr", "term"};
//	                  absent while no member serves (an election, or no quorum)
//
// Ephemeral znodes vanish with their member's ZooKeeper session, so a dead member's entries
// disappear after the session timeout.

const zkDirectoryInterval = time.Second

type zkDirectory struct {
	conn *zk.Conn
	base string
	m    *replica.Member
	log  *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}
}

type zkDirNode struct {
	ID           uint64 `json:"id"`
	HTTPAddr     string `json:"http_addr"`
	RaftAddr     string `json:"raft_addr,omitempty"`
	Role         string `json:"role,omitempty"`
	Term         uint64 `json:"term"`
	AppliedIndex uint64 `json:"applied_index,omitempty"`
}

// openZKDirectory starts the directory when ZooKeeper is configured in cluster mode.
func (s *server) openZKDirectory(ctx context.Context) {
	if s.member == nil || len(s.cfg.ZooKeeper.Servers) == 0 {
		return
	}
	conn, _, err := zk.Connect(s.cfg.ZooKeeper.Servers, 10*time.Second, zk.WithLogInfo(false), zk.WithLogger(zkQuiet{}))
	if err != nil {
		s.logger.Warn("cluster directory in ZooKeeper not started", "err", err)
		return
	}
	root := s.cfg.ZooKeeper.Root
	if root == "" {
		root = "/imago"
	}
	d := &zkDirectory{conn: conn, base: path.Join(root, "cluster", s.member.Status().ClusterID), m: s.member, log: s.logger, done: make(chan struct{})}
	ctx, d.cancel = context.WithCancel(context.WithoutCancel(ctx))
	go d.run(ctx)
	s.onClose("cluster directory in ZooKeeper", func() error { d.cancel(); <-d.done; conn.Close(); return nil })
	s.logger.Info("cluster directory in ZooKeeper (read-only view)", "znode", d.base)
}

func (d *zkDirectory) run(ctx context.Context) {
	defer close(d.done)
	warned := false
	for {
		if err := d.publish(); err != nil {
			if !warned {
				d.log.Warn("cluster directory in ZooKeeper: cannot publish (the cluster does not depend on it)", "err", err)
				warned = true
			}
		} else {
			warned = false
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(zkDirectoryInterval):
		}
	}
}

func (d *zkDirectory) publish() error {
	if d.conn.State() != zk.StateHasSession {
		return errors.New("no ZooKeeper session")
	}
	st := d.m.Status()
	self := d.m.Self()
	node, err := json.Marshal(zkDirNode{ID: st.NodeID, HTTPAddr: self.HTTPAddr, RaftAddr: self.RaftAddr, Role: st.Role, Term: st.Term, AppliedIndex: st.AppliedIndex})
	if err != nil {
		return err
	}
	if err := d.ensure(path.Join(d.base, "nodes")); err != nil {
		return err
	}
	if err := d.put(path.Join(d.base, "nodes", strconv.FormatUint(st.NodeID, 10)), node); err != nil {
		return err
	}
	leaderPath := path.Join(d.base, "leader")
	if st.Serving {
		lead, err := json.Marshal(zkDirNode{ID: st.NodeID, HTTPAddr: self.HTTPAddr, Term: st.Term})
		if err != nil {
			return err
		}
		return d.put(leaderPath, lead)
	}
	// Not serving: remove the leader znode if it is ours (a stale one of another session goes
	// with that session).
	_, stat, err := d.conn.Get(leaderPath)
	if err == nil && stat.EphemeralOwner == d.conn.SessionID() {
		if err := d.conn.Delete(leaderPath, stat.Version); err != nil && !errors.Is(err, zk.ErrNoNode) {
			return err
		}
	}
	return nil
}

// put writes data to the ephemeral znode p of this session, creating it (or replacing one a
// dead session left) as needed.
func (d *zkDirectory) put(p string, data []byte) error {
	old, stat, err := d.conn.Get(p)
	switch {
	case errors.Is(err, zk.ErrNoNode):
		_, err = d.conn.Create(p, data, zk.FlagEphemeral, zk.WorldACL(zk.PermAll))
		if errors.Is(err, zk.ErrNodeExists) {
			return nil // another member's (a leader of a newer term): next round
		}
		return err
	case err != nil:
		return err
	case stat.EphemeralOwner != d.conn.SessionID():
		var other zkDirNode
		if json.Unmarshal(old, &other) == nil && other.Term > d.m.Status().Term {
			return nil // written by a member that knows a newer term
		}
		if err := d.conn.Delete(p, stat.Version); err != nil && !errors.Is(err, zk.ErrNoNode) {
			return err
		}
		_, err = d.conn.Create(p, data, zk.FlagEphemeral, zk.WorldACL(zk.PermAll))
		if errors.Is(err, zk.ErrNodeExists) {
			return nil
		}
		return err
	case string(old) == string(data):
		return nil
	}
	_, err = d.conn.Set(p, data, stat.Version)
	return err
}

// ensure creates p and its parents (persistent).
func (d *zkDirectory) ensure(p string) error {
	if ok, _, err := d.conn.Exists(p); err != nil || ok {
		return err
	}
	if parent := path.Dir(p); parent != "/" && parent != p {
		if err := d.ensure(parent); err != nil {
			return err
		}
	}
	_, err := d.conn.Create(p, nil, 0, zk.WorldACL(zk.PermAll))
	if errors.Is(err, zk.ErrNodeExists) {
		return nil
	}
	return err
}

type zkQuiet struct{}

func (zkQuiet) Printf(string, ...any) {}
