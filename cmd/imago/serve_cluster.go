package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/imagomq/imago/gateway"
	"github.com/imagomq/imago/internal/config"
	"github.com/imagomq/imago/replica"
)

// This file holds serve's cluster stage: with a cluster block in the configuration the broker
// is opened replicated (openBroker) and joined to the cluster here, before anything else uses
// it; the member is stopped before the broker is closed, and a member that stops on its own
// (an error: see replica.Member.Done) ends the process with a non-zero exit so that a
// supervisor restarts it.

// replicaStart is replica.Start (a seam for tests).
var replicaStart = replica.Start

// openCluster starts the cluster member when the configuration has a cluster block.
func (s *server) openCluster(ctx context.Context) error {
	cl := s.cfg.Cluster
	if !cl.Enabled() {
		return nil
	}
	if self, ok := cl.Self(); ok && self.HTTPAddr != s.cfg.HTTP.Addr {
		s.logger.Warn("http.addr differs from this node's http_addr in cluster.peers: the other nodes forward and redirect to the latter",
			"http_addr", s.cfg.HTTP.Addr, "peer_http_addr", self.HTTPAddr)
	}
	rc := replicaConfig(cl)
	if rc.HTTPAddr == "" {
		rc.HTTPAddr = s.cfg.HTTP.Addr // a joining node that is not among the peers
	}
	peerTLS := s.tls.raft // loadTLS read cluster.tls
	rc.TLS = peerTLS
	if cl.InsecureTransport && peerTLS == nil {
		s.logger.Warn("the raft transport runs without authentication (cluster.insecure_transport): whoever reaches the raft port can rewrite or read every message; only a private network that admits nothing but the members guards it",
			"raft_addr", cl.ListenRaftAddr())
	}
	// The member runs until its closer stops it (after the HTTP server drained), not until
	// the signal that cancels ctx: in-flight writes still need raft to finish.
	m, err := replicaStart(context.WithoutCancel(ctx), rc, s.b, s.logger)
	if err != nil {
		return fmt.Errorf("join the cluster as node %d (raft on %s): %w", cl.NodeID, cl.ListenRaftAddr(), err)
	}
	s.member = m
	s.onClose("cluster member", func() error { m.Stop(); return nil })
	s.openZKDirectory(ctx)
	s.logger.Info("cluster member started", "node_id", cl.NodeID, "raft_addr", cl.ListenRaftAddr(),
		"peers", len(cl.Peers), "forward", cl.Forward)
	return nil
}

// replicaConfig is the replica package's form of the cluster block.
func replicaConfig(c config.Cluster) replica.Config {
	peers := make([]replica.Peer, 0, len(c.Peers))
	for _, p := range c.Peers {
		peers = append(peers, replica.Peer{ID: p.ID, RaftAddr: p.RaftAddr, HTTPAddr: p.HTTPAddr})
	}
	rc := replica.Config{
		NodeID:       c.NodeID,
		RaftAddr:     c.ListenRaftAddr(),
		Peers:        peers,
		TickInterval: c.TickInterval,
		ElectionTick: c.ElectionTicks,
		Bootstrap:    c.Bootstrap,
		Join:         c.Join,
	}
	if self, ok := c.Self(); ok {
		rc.HTTPAddr = self.HTTPAddr
	}
	return rc
}

// gatewayCluster is the member the gateway forwards for, or nil on a single node (never a
// nil *replica.Member inside a non-nil interface).
func (s *server) gatewayCluster() gateway.Cluster {
	if s.member == nil {
		return nil
	}
	return s.member
}

// memberDone is closed when the cluster member stops; nil (never ready) on a single node.
func (s *server) memberDone() <-chan struct{} {
	if s.member == nil {
		return nil
	}
	return s.member.Done()
}

// memberStopped is the error serve returns when the member stopped while serving.
func (s *server) memberStopped() error {
	why := s.member.Status().Error
	if why == "" {
		why = "it stopped without saying why"
	}
	s.logger.Error("the cluster member stopped: shutting down so that a supervisor restarts this node", "err", why)
	return errors.New("cluster member stopped: " + why)
}
