package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/imagomq/imago/broker"
)

// Validate checks the configuration and returns every problem found, joined. The most
// important rule: with no auth.tokens, every listen address must be loopback (127.0.0.0/8, ::1
// or localhost when it resolves to loopback only, IsLoopback), because without tokens anyone
// who reaches the port may produce and consume.
// An address with an empty host (":8080") listens on every interface and is refused too. A
// cluster member's raft address has a rule of its own, tokens or not: beyond loopback it needs
// cluster.tls or cluster.insecure_transport (clustertls.go), and the cluster.tls files are read
// here so that a missing or bad one stops the start before anything is opened.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if strings.TrimSpace(c.DataDir) == "" {
		add("data_dir is empty: set it to the directory that holds the log (default ./data)")
	}
	if _, _, err := net.SplitHostPort(c.HTTP.Addr); err != nil {
		add("http.addr %q: want host:port such as 127.0.0.1:8080", c.HTTP.Addr)
	} else if len(c.Auth.Tokens) == 0 && !IsLoopback(c.HTTP.Addr) {
		errs = append(errs, notLoopbackError("http.addr", c.HTTP.Addr))
	}
	if c.Protocol.Enabled {
		if _, _, err := net.SplitHostPort(c.Protocol.Addr); err != nil {
			add("protocol.addr %q: want host:port such as 127.0.0.1:8123", c.Protocol.Addr)
		} else if len(c.Auth.Tokens) == 0 && !IsLoopback(c.Protocol.Addr) {
			errs = append(errs, notLoopbackError("protocol.addr", c.Protocol.Addr))
		}
	}
	errs = append(errs, c.HTTP.TLS.check("http.tls")...)
	errs = append(errs, c.Protocol.TLS.check("protocol.tls")...)
	if c.Protocol.TLS.CAFile != "" {
		add("protocol.tls.ca_file: only http.tls has a ca_file (the CAs a member trusts when it forwards to the leader); the text protocol is never forwarded")
	}
	if c.HTTP.MaxWait < 0 {
		add("http.max_wait %s: must not be negative", c.HTTP.MaxWait)
	}
	if c.HTTP.ShutdownTimeout < 0 {
		add("http.shutdown_timeout %s: must not be negative", c.HTTP.ShutdownTimeout)
	}
	if _, err := broker.ParseFsyncPolicy(c.Log.Fsync); err != nil {
		add("log.fsync: %v", err)
	}
	if c.Log.SegmentBytes < 1<<20 {
		add("log.segment_bytes %s: must be at least 1MiB", c.Log.SegmentBytes)
	}
	if c.Log.Retention <= 0 {
		// The broker takes 0 for its default (168h): it is neither "keep forever" nor "delete
		// at once", whatever the operator meant.
		add("log.retention %s: must be positive (default 168h; 0 would not keep messages forever, it would mean the default)", c.Log.Retention)
	}
	if c.Log.RetentionBytes < 0 {
		add("log.retention_bytes %d: must not be negative", c.Log.RetentionBytes)
	}
	if c.Log.RetentionCheckInterval < 100*time.Millisecond {
		add("log.retention_check_interval %s: must be at least 100ms", c.Log.RetentionCheckInterval)
	}
	if c.Log.CheckpointInterval < 10*time.Millisecond {
		add("log.checkpoint_interval %s: must be at least 10ms", c.Log.CheckpointInterval)
	}
	if c.Log.IndexSegmentEntries < 16 || c.Log.IndexSegmentEntries > 1<<24 {
		add("log.index_segment_entries %d: must be between 16 and 16777216", c.Log.IndexSegmentEntries)
	}
	switch c.Offsets.Store {
	case "file", "zookeeper":
	case "postgres", "mysql":
		if c.Offsets.DSN == "" {
			add("offsets.store %s needs offsets.dsn (or IMAGO_OFFSETS_DSN)", c.Offsets.Store)
		}
	default:
		add("offsets.store %q: want file, postgres, mysql or zookeeper", c.Offsets.Store)
	}
	if c.Offsets.Store == "zookeeper" && len(c.ZooKeeper.Servers) == 0 {
		add("offsets.store zookeeper needs zookeeper.servers")
	}
	if len(c.ZooKeeper.Servers) > 0 && !strings.HasPrefix(c.ZooKeeper.Root, "/") {
		add("zookeeper.root %q: must start with /", c.ZooKeeper.Root)
	}
	for name, r := range c.Resources {
		if r.Driver != "mysql" && r.Driver != "postgres" {
			add("resources.%s.driver %q: want mysql or postgres", name, r.Driver)
		}
		if r.DSN == "" {
			add("resources.%s.dsn is empty", name)
		}
	}
	errs = append(errs, c.validateCoordinator()...)
	// operations are checked where they are compiled, once, at load (xa.CompileOperations,
	// called by imago serve next to Validate): empty SQL, a negative expect_rows and every
	// other problem are reported there with the operation's name.
	for i, o := range c.Outbox {
		if o.Name == "" || o.Table == "" {
			add("outbox[%d]: name and table are required", i)
		}
		if _, ok := c.Resources[o.Resource]; !ok {
			add("outbox[%d] (%s): resource %q is not in resources", i, o.Name, o.Resource)
		}
		if o.Mode != "" && o.Mode != "delete" && o.Mode != "mark" {
			add("outbox[%d] (%s): mode %q: want delete or mark", i, o.Name, o.Mode)
		}
		if o.BatchSize < 0 {
			add("outbox[%d] (%s): batch_size %d: want 1 or more (0 or absent: 1000)", i, o.Name, o.BatchSize)
		}
		// How min_poll and max_poll fit together and with the relay's session timeout is the
		// relay's own rule (outbox.Options.Check, which imago serve runs at start).
		switch {
		case o.MinPoll < 0 || o.MaxPoll < 0:
			add("outbox[%d] (%s): min_poll %s, max_poll %s: want positive durations (0 or absent: 10ms and 200ms)", i, o.Name, o.MinPoll, o.MaxPoll)
		case o.MinPoll > 0 && o.MinPoll < time.Millisecond:
			add("outbox[%d] (%s): min_poll %s: want at least 1ms (each poll is a read of the table)", i, o.Name, o.MinPoll)
		}
	}
	errs = append(errs, c.validateTokens()...)
	errs = append(errs, c.validateCluster()...)
	if c.DefaultPartitions < 1 || c.DefaultPartitions > 10000 {
		add("default_partitions %d: want 1..10000", c.DefaultPartitions)
	}
	if c.MaxBodyBytes < 1024 {
		add("max_body_bytes %s: must be at least 1KiB", c.MaxBodyBytes)
	}
	return errors.Join(errs...)
}

func (c Config) validateCoordinator() []error {
	var errs []error
	if dl := c.Coordinator.DecisionLog; dl != DecisionLogFile && dl != DecisionLogCommitLog {
		r, ok := c.Resources[dl]
		switch {
		case !ok:
			names := make([]string, 0, len(c.Resources))
			for n := range c.Resources {
				names = append(names, n)
			}
			sort.Strings(names)
			have := "none is configured"
			if len(names) > 0 {
				have = "configured: " + strings.Join(names, ", ")
			}
			errs = append(errs, fmt.Errorf("coordinator.decision_log %q: want %q (the default, a file in data_dir), %q (the broker's commit log) or the name of a mysql or postgres resource in resources (%s)", dl, DecisionLogFile, DecisionLogCommitLog, have))
		case r.Driver != "mysql" && r.Driver != "postgres":
			errs = append(errs, fmt.Errorf("coordinator.decision_log %q: the resource's driver is %q; the decision table needs a mysql or postgres database", dl, r.Driver))
		}
	}
	if id := c.Coordinator.NodeID; id != "" && !nodeIDPattern.MatchString(id) {
		errs = append(errs, fmt.Errorf("coordinator.node_id %q: want 16 lowercase hex digits (see <data_dir>/coordinator/node-id)", id))
	}
	if c.Coordinator.Grace <= 0 {
		errs = append(errs, fmt.Errorf("coordinator.grace %s: must be positive (default 30s)", c.Coordinator.Grace))
	}
	if c.Coordinator.RecoveryInterval <= 0 {
		errs = append(errs, fmt.Errorf("coordinator.recovery_interval %s: must be positive (default 5s)", c.Coordinator.RecoveryInterval))
	}
	return errs
}

func (c Config) validateTokens() []error {
	var errs []error
	names := map[string]bool{}
	secrets := map[string]string{}
	for i, t := range c.Auth.Tokens {
		where := fmt.Sprintf("auth.tokens[%d]", i)
		if t.Name == "" {
			errs = append(errs, fmt.Errorf("%s: name is required (it names the token in logs)", where))
		} else if names[t.Name] {
			errs = append(errs, fmt.Errorf("%s: name %q is used twice", where, t.Name))
		}
		names[t.Name] = true
		if t.Token == "" {
			errs = append(errs, fmt.Errorf("%s (%s): no secret: set token_env to the variable that holds it", where, t.Name))
		} else if other, ok := secrets[t.Token]; ok {
			errs = append(errs, fmt.Errorf("%s (%s): same secret as token %q; give each token its own", where, t.Name, other))
		} else {
			secrets[t.Token] = t.Name
		}
		for _, p := range append(append([]string(nil), t.Produce...), t.Consume...) {
			if _, err := path.Match(p, ""); err != nil {
				errs = append(errs, fmt.Errorf("%s (%s): topic pattern %q: %v", where, t.Name, p, err))
			}
		}
	}
	return errs
}

func notLoopbackError(key, addr string) error {
	if host, _, _ := net.SplitHostPort(addr); strings.EqualFold(host, "localhost") {
		key += " (localhost resolves to an address that is not loopback here: see /etc/hosts)"
	}
	return fmt.Errorf("%s %q is not a loopback address and no auth.tokens are configured: "+
		"without tokens anyone who can reach the port could produce and consume messages. "+
		"Listen on loopback (for example 127.0.0.1:8080), or configure auth.tokens in the configuration file "+
		"(each with name, token_env and produce/consume/admin rights)", key, addr)
}

// IsLoopback reports whether the host of the host:port addr is loopback: an IP in 127.0.0.0/8
// or ::1, or the name localhost when it resolves to loopback addresses only. An empty host
// (":8080", every interface) is not loopback, and neither is any other name, since it may
// resolve elsewhere. localhost is resolved (the hosts file, or DNS where it is missing there)
// because listening on "localhost:8080" binds whatever it resolves to: a hosts file that maps it
// to the machine's network address would otherwise open the port to the network.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ips, err := lookupIP(ctx, host)
		if err != nil || len(ips) == 0 {
			return false
		}
		for _, ip := range ips {
			if !ip.IsLoopback() {
				return false
			}
		}
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// lookupIP resolves a host name as a listener resolves it (tests replace it).
var lookupIP = func(ctx context.Context, host string) ([]net.IP, error) {
	return net.DefaultResolver.LookupIP(ctx, "ip", host)
}

// LogValue implements slog.LogValuer so that a Token logged by mistake shows no secret.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", t.Name), slog.Bool("admin", t.Admin),
		slog.Any("produce", t.Produce), slog.Any("consume", t.Consume))
}

// String keeps the secret out of fmt output.
func (t Token) String() string { return fmt.Sprintf("token %s (secret redacted)", t.Name) }

// GoString keeps the secret out of %#v output.
func (t Token) GoString() string { return t.String() }

// nodeIDPattern is the coordinator's node id (xa: 16 lowercase hex digits).
var nodeIDPattern = regexp.MustCompile(`^[0-9a-f]{16}$`)
