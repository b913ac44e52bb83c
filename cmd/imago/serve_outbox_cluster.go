package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/imagomq/imago/gateway"
	"github.com/imagomq/imago/outbox"
	"github.com/imagomq/imago/replica"
)

// In cluster mode the outbox relays run on the serving leader only, like the coordinator
// (serve_coordinator_cluster.go): a relay publishes into the broker, which accepts writes on
// the leader only, and a relay holds its source's lock in the application's database, so one
// on a follower would hold the source and publish nothing. When this member starts serving a
// term it starts a fresh relay per source; when it stops serving it closes them, which
// releases the sources for the new leader's relays. A row a closed relay had published but not
// yet marked is published again under the same idempotency key (outbox/relay.go), and the
// replicated idempotency keys answer it duplicate: nothing is published twice.
type leaderRelays struct {
	newRelays func() (outboxRelays, error)
	member    *replica.Member
	log       *slog.Logger

	mu   sync.Mutex
	cur  outboxRelays
	term uint64

	cancel context.CancelFunc
	done   chan struct{}
}

func (l *leaderRelays) start(ctx context.Context) {
	ctx, l.cancel = context.WithCancel(ctx)
	l.done = make(chan struct{})
	go l.watch(ctx)
}

func (l *leaderRelays) watch(ctx context.Context) {
	defer close(l.done)
	wait := 50 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = 50 * time.Millisecond
		st := l.member.Status()
		l.mu.Lock()
		switch {
		case st.Serving && (l.cur == nil || l.term != st.Term):
			l.closeLocked("leadership moved to a new term")
			rs, err := l.newRelays()
			if err != nil {
				l.log.Warn("leader: the outbox relays did not start; retrying", "err", err)
				wait = time.Second
				break
			}
			for _, r := range rs {
				r.Start()
			}
			l.cur, l.term = rs, st.Term
			l.log.Info("leader: outbox relays started", "sources", len(rs), "term", st.Term)
		case !st.Serving && l.cur != nil:
			l.closeLocked("this member no longer leads")
		}
		l.mu.Unlock()
	}
}

func (l *leaderRelays) closeLocked(why string) {
	for _, r := range l.cur {
		if err := r.Close(); err != nil {
			l.log.Warn("closing an outbox relay", "reason", why, "err", err)
		}
	}
	if l.cur != nil {
		l.log.Info("outbox relays closed", "reason", why)
	}
	l.cur = nil
}

// Close stops the watch and the relays.
func (l *leaderRelays) Close() error {
	if l.cancel != nil {
		l.cancel()
		<-l.done
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closeLocked("shutting down")
	return nil
}

// OutboxSources implements gateway.OutboxStatus: the relays running here (none on a member that
// does not lead; the request is forwarded to the leader anyway).
func (l *leaderRelays) OutboxSources() []gateway.OutboxSource {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur.OutboxSources()
}

// newRelays builds (without starting) one relay per configured source.
func (s *server) newRelays(m *outbox.Metrics) (outboxRelays, error) {
	var rs outboxRelays
	for _, src := range s.cfg.Outbox {
		opts, err := outboxOptions(s.cfg, src)
		if err != nil {
			return nil, err
		}
		opts.Logger, opts.Metrics = s.logger, m
		r, err := outbox.New(opts, outbox.BrokerPublisher{B: s.b})
		if err != nil {
			for _, o := range rs {
				o.Close()
			}
			return nil, err
		}
		rs = append(rs, r)
	}
	return rs, nil
}
