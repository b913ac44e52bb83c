package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/imagomq/imago/gateway"
	"github.com/imagomq/imago/internal/config"
	"github.com/imagomq/imago/outbox"
)

// outboxRelays are the relays of the configured outbox sources; they implement
// gateway.OutboxStatus for GET /v1/outbox/sources.
type outboxRelays []*outbox.Relay

// OutboxSources implements gateway.OutboxStatus.
func (rs outboxRelays) OutboxSources() []gateway.OutboxSource {
	out := make([]gateway.OutboxSource, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.Status()) // gateway.OutboxSource is outbox.Status
	}
	return out
}

// openOutbox starts one relay per configured outbox source, publishing into the in-process
// broker. A relay that cannot reach its database keeps retrying in the background (it never
// fails start-up: the database may come later, and another server may hold the source).
// It runs before openGateway, which reports the relays.
func (s *server) openOutbox(ctx context.Context) error {
	s.outbox = outboxRelays{}
	if len(s.cfg.Outbox) == 0 {
		return nil
	}
	m := outbox.NewMetrics(s.reg)
	if s.member != nil { // cluster mode: the relays run on the leader (serve_outbox_cluster.go)
		for _, src := range s.cfg.Outbox { // usage errors now, not at the first leadership
			if _, err := outboxOptions(s.cfg, src); err != nil {
				return &usageError{err}
			}
		}
		lr := &leaderRelays{newRelays: func() (outboxRelays, error) { return s.newRelays(m) }, member: s.member, log: s.logger}
		lr.start(context.WithoutCancel(ctx))
		s.leaderOutbox = lr
		s.onClose("outbox relays (leader only)", lr.Close)
		return nil
	}
	for _, src := range s.cfg.Outbox {
		opts, err := outboxOptions(s.cfg, src)
		if err != nil {
			return &usageError{err}
		}
		opts.Logger, opts.Metrics = s.logger, m
		r, err := outbox.New(opts, outbox.BrokerPublisher{B: s.b})
		if err != nil {
			return &usageError{err}
		}
		r.Start()
		s.onClose("outbox relay "+src.Name, r.Close)
		s.outbox = append(s.outbox, r)
		s.logger.Info("outbox relay started", "source", src.Name, "resource", src.Resource, "table", opts.Table)
	}
	return nil
}

// checkOutboxSources checks each configured source as its relay would at start
// (outbox.Options.Check), so that a node refuses a source it would only run after a failover.
// A source whose resource is missing is left to config.Validate, which names it.
func checkOutboxSources(cfg config.Config) error {
	var errs []error
	for _, src := range cfg.Outbox {
		if _, ok := cfg.Resources[src.Resource]; !ok {
			continue
		}
		opts, err := outboxOptions(cfg, src)
		if err == nil {
			err = opts.Check()
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// outboxOptions maps one configured source (and its resource) to relay options.
func outboxOptions(cfg config.Config, src config.OutboxSource) (outbox.Options, error) {
	res, ok := cfg.Resources[src.Resource]
	if !ok {
		return outbox.Options{}, fmt.Errorf("outbox source %s: resource %q is not in resources", src.Name, src.Resource)
	}
	// outbox.Options accepts every driver name of migrations.Dialect.
	return outbox.Options{Name: src.Name, Dialect: res.Driver, DSN: res.DSN, Table: src.Table, Mode: outbox.Mode(src.Mode),
		BatchSize: src.BatchSize, MinPoll: src.MinPoll, MaxPoll: src.MaxPoll}, nil
}

// outboxStatus is what the gateway reports at GET /v1/outbox/sources.
func (s *server) outboxStatus() gateway.OutboxStatus {
	if s.leaderOutbox != nil {
		return s.leaderOutbox
	}
	return s.outbox
}
