package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/gateway"
	"github.com/imagomq/imago/internal/config"
	"github.com/imagomq/imago/offsetdb"
	"github.com/imagomq/imago/replica"
	"github.com/imagomq/imago/textproto"
	"github.com/imagomq/imago/xa"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
)

type serveFlags struct {
	configPath   string
	dataDir      string
	httpAddr     string
	readyFile    string
	logLevel     string
	protocolAddr string
	pprofAddr    string
	bootstrap    bool
	join         bool
}

func newServeCmd(a *app) *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the server (HTTP API on 127.0.0.1:8080, data in ./data)",
		Long: `Run the Imago server in the foreground.

With no configuration it keeps everything in ./data and listens on 127.0.0.1:8080 only. A
configuration file (--config imago.yaml) and IMAGO_* environment variables override the
defaults; the flags below override both. Every scalar key has a variable: the key's path
upper-cased, segments joined by "_" (log.segment_bytes -> IMAGO_LOG_SEGMENT_BYTES).

Without auth.tokens in the configuration only loopback addresses (127.0.0.0/8, ::1,
localhost) are accepted, since anyone reaching the port could otherwise produce and consume.

Logs go to stderr. Once the port is open the server logs msg=listening with the bound
address; --ready-file writes that address (http://host:port) into a file as well, which is
how scripts wait for start-up with --http-addr 127.0.0.1:0. SIGINT or SIGTERM stops
accepting connections, lets in-flight requests finish (http.shutdown_timeout), syncs and
closes the log; a second signal closes the connections at once.

With a cluster block in the configuration (docs/cluster.md) the server is one member of a
raft cluster: it refuses fsync other than always and the file offset store, refuses a raft
address beyond loopback unless cluster.tls (mutual TLS between the members) or
cluster.insecure_transport is set, joins the cluster at start-up, forwards to the leader what only the leader answers, and exits with status 1 when
its cluster member stops on an error, so that a supervisor restarts it.`,
		Example: `  imago serve
  imago serve --config imago.yaml
  imago serve --data-dir /var/lib/imago --http-addr 127.0.0.1:9090
  IMAGO_LOG_FSYNC=interval:10ms imago serve
  imago serve --http-addr 127.0.0.1:0 --ready-file /tmp/imago.addr
  imago serve --config examples/cluster/node1.yaml`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, ops, err := loadServeConfig(cmd, f)
			if err != nil {
				return err
			}
			logger, err := newLogger(a.stderr, f.logLevel)
			if err != nil {
				return &usageError{err}
			}
			return runServer(cmd.Context(), cfg, ops, f.readyFile, f.pprofAddr, logger)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.configPath, "config", "", "configuration file (YAML); empty means defaults and IMAGO_* variables only")
	fl.StringVar(&f.dataDir, "data-dir", "", "data directory (overrides data_dir; default ./data)")
	fl.StringVar(&f.httpAddr, "http-addr", "", "HTTP listen address (overrides http.addr; default 127.0.0.1:8080; port 0 picks one)")
	fl.StringVar(&f.protocolAddr, "protocol-addr", "", "text protocol listen address (overrides protocol.addr; default 127.0.0.1:8123; port 0 picks one)")
	fl.StringVar(&f.readyFile, "ready-file", "", "after listening, write the bound addresses into this file: http://host:port, then protocol host:port")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fl.StringVar(&f.pprofAddr, "pprof-addr", "", "serve Go's profiler (/debug/pprof/) on this loopback address; empty: off")
	fl.BoolVar(&f.bootstrap, "bootstrap-cluster", false, "cluster mode: this is the first start of a new cluster (a data directory without raft state is otherwise refused: it may have been wiped)")
	fl.BoolVar(&f.join, "join-cluster", false, "cluster mode: start an empty node that the cluster added with POST /v1/cluster/members; it learns the members from the leader")
	return cmd
}

// loadServeConfig applies defaults, file, environment and flags, then validates and compiles
// the named operations (once: the server runs what this returns). Every problem is a usage
// error (exit 2) naming what is wrong: the operator fixes the command line or the file.
func loadServeConfig(cmd *cobra.Command, f serveFlags) (config.Config, *xa.Operations, error) {
	cfg, err := config.Load(f.configPath)
	if err != nil {
		return cfg, nil, &usageError{err}
	}
	if cmd.Flags().Changed("data-dir") {
		cfg.DataDir = f.dataDir
	}
	if cmd.Flags().Changed("http-addr") {
		cfg.HTTP.Addr = f.httpAddr
	}
	if cmd.Flags().Changed("protocol-addr") {
		cfg.Protocol.Addr = f.protocolAddr
	}
	cfg.Cluster.Bootstrap, cfg.Cluster.Join = f.bootstrap, f.join
	ops, opsErr := compileOperations(cfg)
	if err := errors.Join(cfg.Validate(), opsErr, checkOutboxSources(cfg)); err != nil {
		return cfg, nil, &usageError{fmt.Errorf("refusing to start, the configuration is not valid:\n  %s",
			strings.ReplaceAll(err.Error(), "\n", "\n  "))}
	}
	return cfg, ops, nil
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// server is one running `imago serve`: the broker and everything started around it. Each
// subsystem is a stage in its own file (serve_offsets.go, serve_protocol.go, ...) that sets
// its field and registers what must be closed; stages close in reverse order, the broker last.
type server struct {
	cfg     config.Config
	logger  *slog.Logger
	reg     *prometheus.Registry
	metrics *gateway.Metrics
	fsync   *textproto.FsyncStats

	b       *broker.Broker
	offsets offsetdb.Store // nil until openOffsets
	outbox  outboxRelays   // the outbox relays (serve_outbox.go)
	// leaderOutbox replaces outbox in cluster mode (serve_outbox_cluster.go).
	leaderOutbox *leaderRelays
	gw           *gateway.Server
	tp           *textproto.Server
	// protocolAddr is the text protocol's bound address.
	protocolAddr string
	// protocolFailed is closed when the text protocol stopped accepting connections on its
	// own, protocolErr (set before) saying why; nil when the door is off (serve_protocol.go).
	protocolFailed chan struct{}
	protocolErr    error
	// listenProtocol opens the text protocol's listener; nil: net.Listen (tests replace it).
	listenProtocol func(addr string) (net.Listener, error)
	// coord is the XA coordinator (serve_coordinator.go).
	coord *xa.Coordinator
	// leaderCoord replaces coord in cluster mode (serve_coordinator_cluster.go).
	leaderCoord *leaderCoordinator
	// ops are the named operations, compiled when the configuration was loaded.
	ops *xa.Operations
	// member is the cluster member (serve_cluster.go); nil on a single node.
	member *replica.Member

	// tls holds the doors' TLS configurations (serve_tls.go).
	tls serveTLS
	// tlsCheckInterval is how often at most the certificate files are looked at for a
	// renewal; zero: certreload.DefaultInterval (tests make it short).
	tlsCheckInterval time.Duration

	closers []namedCloser
}

type namedCloser struct {
	name  string
	close func() error
}

// onClose registers fn to run at shutdown, before everything registered earlier.
func (s *server) onClose(name string, fn func() error) {
	s.closers = append(s.closers, namedCloser{name, fn})
}

// closeAll runs the registered closers in reverse order and joins their errors.
func (s *server) closeAll() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		c := s.closers[i]
		if err := c.close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", c.name, err))
		}
	}
	s.closers = nil
	return errors.Join(errs...)
}

// runServer opens the broker and the subsystems around it, serves until ctx ends, then shuts
// down in order: stop accepting, let in-flight requests finish, close the subsystems, close
// the broker (sync and close the logs).
func runServer(ctx context.Context, cfg config.Config, ops *xa.Operations, readyFile, pprofAddr string, logger *slog.Logger) error {
	s := &server{cfg: cfg, ops: ops, logger: logger}
	err := s.startDebug(pprofAddr)
	if err == nil {
		err = s.start(ctx)
	}
	if err != nil {
		return errors.Join(err, s.closeAll())
	}
	return s.serve(ctx, readyFile)
}

// start runs the stages in dependency order.
func (s *server) start(ctx context.Context) error {
	for _, stage := range []func(context.Context) error{
		s.loadTLS,
		s.openBroker,
		s.openCluster,
		s.openOffsets,
		s.openOutbox,
		s.openCoordinator,
		s.openGateway,
		s.openProtocol,
	} {
		if err := stage(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (s *server) openBroker(ctx context.Context) error {
	if err := s.installSyncJournal(); err != nil {
		return err
	}
	cfg := s.cfg
	fsync, err := broker.ParseFsyncPolicy(cfg.Log.Fsync)
	if err != nil {
		return &usageError{err}
	}
	s.reg = prometheus.NewRegistry()
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.metrics = gateway.NewMetrics(s.reg)
	s.registerTLSMetrics(s.reg)
	s.fsync = &textproto.FsyncStats{Next: s.metrics}

	opts := broker.NewOptions(cfg.DataDir)
	opts.Fsync = fsync
	opts.SegmentBytes = int64(cfg.Log.SegmentBytes)
	opts.RetentionAge = cfg.Log.Retention
	opts.RetentionBytes = int64(cfg.Log.RetentionBytes)
	opts.RetentionCheckInterval = cfg.Log.RetentionCheckInterval
	opts.CheckpointInterval = cfg.Log.CheckpointInterval
	opts.IndexSegmentEntries = cfg.Log.IndexSegmentEntries
	opts.Logger = s.logger
	opts.Observer = s.fsync
	opts.Replicated = cfg.Cluster.Enabled()

	s.logger.Info("starting", "version", versionString(), "data_dir", cfg.DataDir, "fsync", fsync.String(),
		"segment_bytes", cfg.Log.SegmentBytes.String(), "retention", cfg.Log.Retention, "auth_tokens", len(cfg.Auth.Tokens))
	start := time.Now()
	if opts.Replicated {
		// A snapshot this member staged before it restarted goes in place first (serve_restart.go).
		if err := replica.InstallStaged(cfg.DataDir, s.logger); err != nil {
			return fmt.Errorf("install the snapshot staged in %s: %w", cfg.DataDir, err)
		}
	}
	b, err := broker.Open(opts)
	if err != nil {
		return fmt.Errorf("open data directory %s: %w", cfg.DataDir, err)
	}
	s.b = b
	s.onClose("storage", b.Close)
	s.logger.Info("storage open", "data_dir", cfg.DataDir, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func (s *server) openGateway(ctx context.Context) error {
	cfg := s.cfg
	gw, err := gateway.New(s.b, gateway.Options{
		Tokens:            gatewayTokens(cfg.Auth.Tokens),
		AutoCreateTopics:  cfg.AutoCreateTopics,
		DefaultPartitions: cfg.DefaultPartitions,
		MaxBodyBytes:      int64(cfg.MaxBodyBytes),
		MaxWait:           cfg.HTTP.MaxWait,
		Logger:            s.logger,
		Metrics:           s.metrics,
		Gatherer:          s.reg,
		Version:           versionString(),
		Offsets:           s.offsets,
		Outbox:            s.outboxStatus(),
		Coordinator:       s.gatewayCoordinator(),
		Operations:        s.ops,
		Cluster:           s.gatewayCluster(),
		Forward:           cfg.Cluster.Forward,
		ForwardSecret:     []byte(cfg.Cluster.ForwardSecret),
		ForwardTLS:        s.tls.forward,
	})
	if err != nil {
		return fmt.Errorf("start HTTP gateway: %w", err)
	}
	s.gw = gw
	return nil
}

// serve listens on the HTTP address and blocks until ctx ends or serving fails.
func (s *server) serve(ctx context.Context, readyFile string) error {
	cfg, logger := s.cfg, s.logger
	ln, err := net.Listen("tcp", cfg.HTTP.Addr)
	if err != nil {
		return errors.Join(fmt.Errorf("listen on %s: %w", cfg.HTTP.Addr, err), s.closeAll())
	}
	srv := newHTTPServer(cfg, s.gw.Handler(), logger)
	if s.tls.http != nil {
		srv.ErrorLog = log.New(handshakeLog{logger, s.tls.handshakeFailures}, "", 0)
	}
	served := make(chan error, 1)
	addr := s.scheme() + "://" + ln.Addr().String()
	ln = listenTLS(ln, s.tls.http)
	go func() { served <- srv.Serve(ln) }()

	logger.Info("listening", "addr", addr)
	if readyFile != "" {
		ready := addr + "\n"
		if s.tp != nil {
			ready += "protocol " + s.protocolAddr + "\n"
		}
		if err := writeReadyFile(readyFile, ready); err != nil {
			_ = srv.Close()
			<-served
			return errors.Join(err, s.closeAll())
		}
		defer os.Remove(readyFile)
	}

	// stopped: the cluster member or the text protocol stopped on its own: exit non-zero after
	// the shutdown.
	var stopped error
	select {
	case <-ctx.Done():
	case err := <-served:
		return errors.Join(fmt.Errorf("serve HTTP: %w", err), s.closeAll())
	case <-s.memberDone():
		stopped = s.memberStopped()
	case <-s.protocolFailed:
		stopped = s.protocolErr
	}

	logger.Info("shutting down: finishing in-flight requests", "timeout", cfg.HTTP.ShutdownTimeout)
	s.gw.Close() // /readyz answers 503 and long polls answer now, so Shutdown does not wait them out
	sctx, cancel := context.WithTimeout(context.Background(), cfg.HTTP.ShutdownTimeout)
	defer cancel()
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(again)
	go func() {
		select {
		case <-again:
			logger.Warn("second signal: closing connections now")
			cancel()
		case <-sctx.Done():
		}
	}()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("in-flight requests did not finish; closing their connections", "err", err)
		_ = srv.Close()
	}
	<-served
	if err := s.closeAll(); err != nil {
		return errors.Join(stopped, err)
	}
	if stopped != nil && s.member != nil && s.member.SnapshotStaged() {
		if readyFile != "" {
			os.Remove(readyFile) // the new process writes it again once it listens
		}
		return restartToInstall(logger) // serve_restart.go: returns only if it could not
	}
	if stopped != nil {
		return stopped
	}
	logger.Info("stopped")
	return nil
}

// writeReadyFile writes addr into path atomically (temporary file, then rename), so a reader
// never sees a partial address.
func writeReadyFile(path, addr string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ready-*")
	if err != nil {
		return fmt.Errorf("write ready file: %w", err)
	}
	_, werr := tmp.WriteString(addr)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write ready file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write ready file: %w", err)
	}
	return nil
}

func gatewayTokens(in []config.Token) []gateway.Token {
	out := make([]gateway.Token, 0, len(in))
	for _, t := range in {
		out = append(out, gateway.Token{Name: t.Name, Token: t.Token, Produce: t.Produce, Consume: t.Consume, Admin: t.Admin})
	}
	return out
}

// newHTTPServer is the HTTP server serve runs, with its timeouts. The write timeout outlasts
// the longest request: a long-poll fetch holds its answer for up to MaxWait, and a global
// transaction may run for the largest timeout_ms (gateway.MaxTimeout), then spend a phase
// timeout on each of its phases; a connection closed before the answer leaves the client not
// knowing the outcome.
func newHTTPServer(cfg config.Config, h http.Handler, logger *slog.Logger) *http.Server {
	longest := max(cfg.HTTP.MaxWait, gateway.MaxTimeout+2*xa.NewOptions("").PhaseTimeout)
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      longest + time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}
