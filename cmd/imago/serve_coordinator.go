package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/imagomq/imago/gateway"
	"github.com/imagomq/imago/internal/config"
	"github.com/imagomq/imago/migrations"
	"github.com/imagomq/imago/xa"
)

// coordinatorBroker is the name of the in-process broker's resource in the coordinator: the
// branch qualifier of the broker's branches, and a name no configured resource may take.
const coordinatorBroker = "broker"

// resourceIdleConns is how many idle connections each resource's pool keeps.
const resourceIdleConns = 64

// The older environment names of coordinator.grace and coordinator.recovery_interval
// (durations such as 1s, 500ms). They still work, and win over the configuration (and over
// IMAGO_COORDINATOR_GRACE / IMAGO_COORDINATOR_RECOVERY_INTERVAL).
const (
	envXAGrace            = "IMAGO_XA_GRACE"
	envXARecoveryInterval = "IMAGO_XA_RECOVERY_INTERVAL"
)

// openCoordinator opens the XA coordinator over the configured resources (resources.<name>)
// and the in-process broker, keeping its node id in <data_dir>/coordinator and its decision
// log there too (coordinator.decision_log: file), in the broker's commit log
// (coordinator.decision_log: commitlog) or in the table imago.xa_decisions /
// imago_xa_decisions of a resource's database (coordinator.decision_log: <resource>), on
// that resource's pool. It always
// runs, also with no database configured: a global transaction may then only publish
// messages (one broker branch), and a step naming a resource answers 400 unknown_resource.
// A database that cannot be reached at start-up is logged and checked again at first use; one
// that cannot be an XA resource (MySQL losing prepared branches on disconnect, PostgreSQL with
// max_prepared_transactions = 0) stops the start-up with a message saying what to change.
// It runs before openGateway, which serves /v1/global-transactions with it.
func (s *server) openCoordinator(ctx context.Context) error {
	names := make([]string, 0, len(s.cfg.Resources))
	for name := range s.cfg.Resources {
		names = append(names, name)
	}
	sort.Strings(names)
	// The pools are opened here rather than by xa.OpenResource so that they keep enough idle
	// connections: database/sql keeps 2 by default, and with more concurrent transactions
	// every branch would open (and PostgreSQL fork) a new connection. They close after the
	// coordinator (closers run in reverse order).
	var resources []xa.Resource
	var dbs []*sql.DB
	var decisionDB *sql.DB
	var decisionDialect string
	s.onClose("xa resource pools", func() error {
		var errs []error
		for _, db := range dbs {
			errs = append(errs, db.Close())
		}
		return errors.Join(errs...)
	})
	for _, name := range names {
		if name == coordinatorBroker {
			return &usageError{fmt.Errorf("resources.%s: the name %q is the broker's; choose another", name, name)}
		}
		if err := xa.ValidResourceName(name); err != nil {
			return &usageError{fmt.Errorf("resources.%s: %w", name, err)}
		}
		rc := s.cfg.Resources[name]
		dialect, ok := migrations.Dialect(rc.Driver)
		if !ok {
			return &usageError{fmt.Errorf("resources.%s.driver %q: want mysql or postgres", name, rc.Driver)}
		}
		var db *sql.DB
		var err error
		if dialect == migrations.MySQL {
			db, err = xa.OpenMySQLDB(rc.DSN) // keeps prepared statements per connection
		} else {
			db, err = xa.OpenPostgresDB(rc.DSN) // never quotes the DSN in its error
		}
		if err != nil {
			return &usageError{fmt.Errorf("resources.%s: %w", name, err)}
		}
		db.SetMaxIdleConns(resourceIdleConns)
		db.SetConnMaxIdleTime(5 * time.Minute)
		dbs = append(dbs, db)
		if dialect == migrations.MySQL {
			resources = append(resources, xa.MySQL(name, db))
		} else {
			resources = append(resources, xa.Postgres(name, db))
		}
		if name == s.cfg.Coordinator.DecisionLog {
			decisionDB, decisionDialect = db, dialect
		}
	}
	dl := s.cfg.Coordinator.DecisionLog
	if dl == config.DecisionLogCommitLog {
		decisionDB, decisionDialect = nil, ""
	} else if dl != "" && dl != config.DecisionLogFile && decisionDB == nil {
		return &usageError{fmt.Errorf("coordinator.decision_log %q: not a resource in resources; want %q, %q or a resource's name", dl, config.DecisionLogFile, config.DecisionLogCommitLog)}
	}
	o := xa.NewOptions(filepath.Join(s.cfg.DataDir, "coordinator"))
	o.Resources = append(resources, xa.Broker(coordinatorBroker, s.b))
	o.Logger = s.logger
	o.DecisionDB, o.DecisionDialect = decisionDB, decisionDialect
	if dl == config.DecisionLogCommitLog {
		o.DecisionBroker = s.b
	}
	o.NodeID = s.cfg.Coordinator.NodeID
	if s.cfg.Coordinator.Grace > 0 {
		o.Grace = s.cfg.Coordinator.Grace
	}
	if s.cfg.Coordinator.RecoveryInterval > 0 {
		o.RecoveryInterval = s.cfg.Coordinator.RecoveryInterval
	}
	for env, dst := range map[string]*time.Duration{envXAGrace: &o.Grace, envXARecoveryInterval: &o.RecoveryInterval} {
		if v := os.Getenv(env); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return &usageError{fmt.Errorf("%s=%q: want a positive duration such as 1s", env, v)}
			}
			*dst = d
		}
	}
	if s.member != nil {
		return s.openLeaderCoordinator(ctx, o, names)
	}
	c, err := xa.Open(ctx, o)
	if err != nil {
		return fmt.Errorf("open XA coordinator: %w", err)
	}
	s.coord = c
	s.onClose("xa coordinator", c.Close)
	s.reg.MustRegister(c.Collector())
	s.logger.Info("xa coordinator ready", "resources", len(resources), "operations", s.ops.Len(), "node", c.NodeID(),
		"decision_log", s.cfg.Coordinator.DecisionLog)
	return nil
}

// compileOperations compiles the configured operations against the configured resources
// (nil when there are none). Each problem names its operation.
func compileOperations(cfg config.Config) (*xa.Operations, error) {
	if len(cfg.Operations) == 0 {
		return nil, nil
	}
	ops := make(map[string]xa.OperationConfig, len(cfg.Operations))
	for k, op := range cfg.Operations {
		ops[k] = xa.OperationConfig{SQL: op.SQL, ExpectRows: op.ExpectRows, Params: op.Params}
	}
	return xa.CompileOperations(ops, func(resource string) (string, error) {
		r, ok := cfg.Resources[resource]
		if !ok {
			return "", fmt.Errorf("resource %q is not in resources", resource)
		}
		return r.Driver, nil
	})
}

// gatewayCoordinator is the coordinator as the gateway's interface (a nil interface, not a
// nil pointer, when there is none).
func (s *server) gatewayCoordinator() gateway.Coordinator {
	if s.leaderCoord != nil {
		return s.leaderCoord
	}
	if s.coord == nil {
		return nil
	}
	return s.coord
}

// openLeaderCoordinator is openCoordinator's end in cluster mode (serve_coordinator_cluster.go):
// the coordinator opens on the serving leader only. Its decision log must be one every
// member reads: the replicated commit log (the default here: "file" would stay on one
// machine) or a resource's table; its node id is the same on every member.
func (s *server) openLeaderCoordinator(ctx context.Context, o xa.Options, names []string) error {
	switch s.cfg.Coordinator.DecisionLog {
	case "", config.DecisionLogFile:
		o.DecisionBroker, o.DecisionDB, o.DecisionDialect = s.b, nil, ""
		s.logger.Info("cluster mode: the XA coordinator's decisions go to the replicated commit log")
	}
	if o.NodeID == "" {
		o.NodeID = clusterCoordinatorID(s.cfg.Cluster)
	}
	drivers := map[string]string{coordinatorBroker: "broker"}
	for _, n := range names {
		d, _ := migrations.Dialect(s.cfg.Resources[n].Driver)
		drivers[n] = d
	}
	lc := newLeaderCoordinator(func(ctx context.Context) (*xa.Coordinator, error) { return xa.Open(ctx, o) }, drivers, s.member, s.logger)
	lc.start(context.WithoutCancel(ctx))
	s.leaderCoord = lc
	s.onClose("xa coordinator (leader only)", lc.Close)
	s.reg.MustRegister(leaderCollector{lc})
	s.logger.Info("xa coordinator opens on the leader", "resources", len(names), "node", o.NodeID)
	return nil
}
