package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/imagomq/imago/offsetdb"
	"github.com/imagomq/imago/textproto"
)

// openProtocol starts the MetaQ-style text protocol door (protocol.addr, default
// 127.0.0.1:8123) unless protocol.enabled is false. It shares the broker and the offset store
// with the HTTP door, so a message put on one is fetched on the other.
func (s *server) openProtocol(ctx context.Context) error {
	if !s.cfg.Protocol.Enabled {
		return nil
	}
	opts := textproto.NewOptions()
	opts.Addr = s.cfg.Protocol.Addr
	opts.Tokens = gatewayTokens(s.cfg.Auth.Tokens) // one token type for both doors
	opts.FsyncP99 = s.fsync.P99
	opts.Version = versionString()
	opts.Logger = s.logger
	if s.offsets != nil {
		opts.Offsets = protocolOffsets{s.offsets}
	}
	tp, err := textproto.New(s.b, opts)
	if err != nil {
		return fmt.Errorf("start text protocol: %w", err)
	}
	listen := s.listenProtocol
	if listen == nil {
		listen = func(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }
	}
	ln, err := listen(s.cfg.Protocol.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s (protocol.addr): %w", s.cfg.Protocol.Addr, err)
	}
	s.tp = tp
	s.protocolAddr = ln.Addr().String()
	ln = listenTLS(ln, s.tls.protocol)
	done := make(chan struct{})
	failed := make(chan struct{})
	s.protocolFailed = failed
	go func() {
		defer close(done)
		err := tp.Serve(ln) // it retries temporary accept errors itself
		if errors.Is(err, textproto.ErrServerClosed) {
			return
		}
		// The door is down while HTTP would go on: stop the whole process (as when the
		// cluster member stops), so that it is noticed and a supervisor restarts it.
		s.logger.Error("the text protocol stopped accepting connections: shutting down so that a supervisor restarts this node",
			"addr", s.protocolAddr, "err", err)
		s.protocolErr = fmt.Errorf("text protocol on %s stopped accepting connections: %w", s.protocolAddr, err)
		close(failed)
	}()
	s.onClose("text protocol", func() error {
		err := tp.Close()
		<-done
		return err
	})
	return nil
}

// protocolOffsets adapts an offsetdb.Store to the text protocol's OffsetStore.
type protocolOffsets struct{ store offsetdb.Store }

func (p protocolOffsets) CommitOffset(ctx context.Context, group, topic string, partition int, next int64) error {
	return p.store.Commit(ctx, []offsetdb.Offset{{Group: group, Topic: topic, Partition: partition, Next: next, CommittedBy: "textproto"}})
}

func (p protocolOffsets) GroupOffsets(ctx context.Context) ([]textproto.GroupOffset, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	groups, err := p.store.Groups(ctx)
	if err != nil {
		return nil, err
	}
	var out []textproto.GroupOffset
	for _, g := range groups {
		offs, err := p.store.List(ctx, g)
		if err != nil {
			return nil, err
		}
		for _, o := range offs {
			out = append(out, textproto.GroupOffset{Group: o.Group, Topic: o.Topic, Partition: o.Partition, Next: o.Next})
		}
	}
	return out, nil
}
