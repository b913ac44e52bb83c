// Package config holds imago's configuration: the Go form of the YAML file (imago.yaml) sketched
// in docs/operations.md, its defaults, the IMAGO_* environment overrides and the checks that run before a
// server starts.
//
// Precedence, lowest first: the defaults of Default, the YAML file, IMAGO_* environment variables,
// then command-line flags (applied by cmd/imago). Load does the first three, resolves the
// token_env references of auth.tokens, and leaves Validate to the caller so that flags can be
// applied in between.
//
// # Environment overrides
//
// Every scalar key can be set by an environment variable whose name is IMAGO_ followed by the
// key's path, its segments upper-cased and joined by "_" (characters other than letters and
// digits become "_"):
//
//	data_dir               IMAGO_DATA_DIR
//	http.addr              IMAGO_HTTP_ADDR
//	log.fsync              IMAGO_LOG_FSYNC
//	log.segment_bytes      IMAGO_LOG_SEGMENT_BYTES
//	auto_create_topics     IMAGO_AUTO_CREATE_TOPICS
//	resources.wallet.dsn   IMAGO_RESOURCES_WALLET_DSN   (entries present in the file only)
//	coordinator.grace      IMAGO_COORDINATOR_GRACE
//	cluster.node_id        IMAGO_CLUSTER_NODE_ID
//
// Lists of strings (zookeeper.servers) take a comma-separated value. Lists of objects (outbox,
// auth.tokens, cluster.peers) are set in the file only; a token's secret comes from the variable its token_env
// names. EnvVars lists every variable that applies to a configuration.
package config

import (
	"time"
)

// Config is the whole configuration. Field comments give the YAML key and the default.
type Config struct {
	// DataDir holds the log, the offsets of the file store and the coordinator log. Default ./data.
	DataDir string `yaml:"data_dir"`
	// HTTP is the HTTP/JSON door.
	HTTP HTTP `yaml:"http"`
	// Protocol is the MetaQ-style text protocol door.
	Protocol Protocol `yaml:"protocol"`
	// Log is the commit log.
	Log Log `yaml:"log"`
	// Offsets says where consumer offsets are stored.
	Offsets Offsets `yaml:"offsets"`
	// ZooKeeper, when Servers is non-empty, registers the broker; absent means standalone.
	ZooKeeper ZooKeeper `yaml:"zookeeper"`
	// Cluster, when configured, makes this server one member of a raft cluster (cluster.go);
	// absent means a single node.
	Cluster Cluster `yaml:"cluster"`
	// Resources are the XA resource managers the coordinator may enlist, by name.
	Resources map[string]Resource `yaml:"resources"`
	// Coordinator configures the XA coordinator.
	Coordinator Coordinator `yaml:"coordinator"`
	// Operations are the only SQL statements the HTTP API can run, by name ("wallet.debit").
	Operations map[string]Operation `yaml:"operations"`
	// Outbox lists the outbox tables the relay drains.
	Outbox []OutboxSource `yaml:"outbox"`
	// Auth holds the bearer tokens. With none, only loopback listen addresses are allowed.
	Auth Auth `yaml:"auth"`
	// AutoCreateTopics creates an unknown topic on its first produce. Default false.
	AutoCreateTopics bool `yaml:"auto_create_topics"`
	// DefaultPartitions is the partition count of auto-created topics. Default 1.
	DefaultPartitions int `yaml:"default_partitions"`
	// MaxBodyBytes caps an HTTP request body ("16MiB"); larger gets 413. Default 16 MiB.
	MaxBodyBytes ByteSize `yaml:"max_body_bytes"`
}

// HTTP configures the HTTP door.
type HTTP struct {
	// Addr is the listen address. Default 127.0.0.1:8080. Port 0 picks a free port.
	Addr string `yaml:"addr"`
	// MaxWait caps a long-poll fetch's wait_ms. Default 30s.
	MaxWait time.Duration `yaml:"max_wait"`
	// ShutdownTimeout bounds how long in-flight requests may take to finish on SIGTERM. Default 30s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// TLS serves HTTPS (tls.go). Default off: plain HTTP.
	TLS TLS `yaml:"tls"`
}

// Protocol configures the text protocol door (docs/protocol.md).
type Protocol struct {
	// Enabled turns the door on. Default true.
	Enabled bool `yaml:"enabled"`
	// Addr is the listen address. Default 127.0.0.1:8123.
	Addr string `yaml:"addr"`
	// TLS puts the door behind TLS (tls.go; ca_file does not apply). Default off.
	TLS TLS `yaml:"tls"`
}

// Log configures the commit log.
type Log struct {
	// Fsync is "always" (acknowledge after fsync; the default), "interval:<duration>" or "never".
	Fsync string `yaml:"fsync"`
	// SegmentBytes is the size at which the log rolls to a new segment ("1GiB"). Default 1 GiB.
	SegmentBytes ByteSize `yaml:"segment_bytes"`
	// Retention deletes whole segments older than this; it must be positive. Default 168h.
	Retention time.Duration `yaml:"retention"`
	// RetentionBytes caps each partition's size; 0 (the default) means no cap.
	RetentionBytes ByteSize `yaml:"retention_bytes"`
	// RetentionCheckInterval is how often retention runs (and, in cluster mode, each member
	// compacts its log). Default 1m.
	RetentionCheckInterval time.Duration `yaml:"retention_check_interval"`
	// CheckpointInterval is how often the index state is made durable, which bounds the replay
	// at start-up. Default 1s.
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
	// IndexSegmentEntries is the number of messages one partition index file covers; retention
	// drops whole index files. Default 262144. It must be the same on every cluster member.
	IndexSegmentEntries int `yaml:"index_segment_entries"`
}

// Offsets configures the consumer offset store.
type Offsets struct {
	// Store is file (the default), postgres, mysql or zookeeper.
	Store string `yaml:"store"`
	// DSN is the database address for the postgres and mysql stores.
	DSN string `yaml:"dsn"`
	// GroupCommit is how long commits wait to share one flush. Default 2ms.
	GroupCommit time.Duration `yaml:"group_commit"`
}

// ZooKeeper configures the cluster registry.
type ZooKeeper struct {
	// Servers are host:port pairs; empty means standalone (the default).
	Servers HostList `yaml:"servers"`
	// Root is the znode under which imago keeps its state. Default /imago.
	Root string `yaml:"root"`
}

// Resource is an XA resource manager.
type Resource struct {
	// Driver is mysql (also MariaDB) or postgres.
	Driver string `yaml:"driver"`
	// DSN is the driver's data source name. It may hold a password: prefer IMAGO_RESOURCES_<NAME>_DSN.
	DSN string `yaml:"dsn"`
}

// DecisionLogFile is Coordinator.DecisionLog's value for the file in the data directory.
const DecisionLogFile = "file"

// DecisionLogCommitLog is Coordinator.DecisionLog's value for the broker's commit log (the
// keyword wins over a resource of that name).
const DecisionLogCommitLog = "commitlog"

// Coordinator configures the XA coordinator.
type Coordinator struct {
	// DecisionLog is where the coordinator records its decisions: "file" (the default, an
	// fsync'd log in <data_dir>/coordinator), "commitlog" (decision batches in the broker's
	// commit log, fsync'd together with the broker's own writes) or the name of a mysql or postgres resource in
	// resources, whose database then holds them in the table imago.xa_decisions (PostgreSQL) or
	// imago_xa_decisions (MySQL/MariaDB), created at start-up.
	DecisionLog string `yaml:"decision_log"`
	// Grace is how long a prepared branch with no decision must have been seen before recovery
	// rolls it back (presumed abort). Default 30s. IMAGO_XA_GRACE, the older name, still works
	// and wins over this key.
	Grace time.Duration `yaml:"grace"`
	// RecoveryInterval is the period of the recovery scan. Default 5s.
	// IMAGO_XA_RECOVERY_INTERVAL, the older name, still works and wins over this key.
	RecoveryInterval time.Duration `yaml:"recovery_interval"`
	// NodeID fixes the coordinator's node id (16 lowercase hex digits), the start of every
	// gtrid it makes. Empty: the id in <data_dir>/coordinator/node-id, generated on first
	// start. Set it to bring a node back on a new data directory (its prepared branches and
	// decision-table rows carry the id); start-up refuses an id that differs from the one
	// already in the directory.
	NodeID string `yaml:"node_id"`
}

// Operation is a named SQL statement with :name parameters.
type Operation struct {
	SQL string `yaml:"sql"`
	// ExpectRows, when positive, fails the step unless exactly this many rows were affected.
	ExpectRows int `yaml:"expect_rows"`
	// Params declares the type of each :name parameter: "string", "integer", "number",
	// "boolean" or "any" (the default), with optional constraints ("integer min=1",
	// "string max_length=64"). A value of another type is refused with a 400.
	Params map[string]string `yaml:"params"`
}

// OutboxSource is one outbox table drained by the relay.
type OutboxSource struct {
	Name     string `yaml:"name"`
	Resource string `yaml:"resource"`
	Table    string `yaml:"table"`
	// Mode is what the relay does with a published row: delete (the default) or mark (set
	// relayed_at and keep it; the operator purges marked rows).
	Mode string `yaml:"mode"`
	// BatchSize caps the rows of one batch (0: the relay's default, 1000).
	BatchSize int `yaml:"batch_size"`
	// MinPoll is the shortest interval between two reads of the table while rows keep coming:
	// a row committed into a steady stream waits up to this long for its read; shorter means
	// lower latency and more reads (0: the relay's default, 10ms).
	MinPoll time.Duration `yaml:"min_poll"`
	// MaxPoll is the poll interval of an idle relay, and so the delay of the first row after a
	// quiet period (0: the relay's default, 200ms).
	MaxPoll time.Duration `yaml:"max_poll"`
}

// Auth holds the bearer tokens.
type Auth struct {
	Tokens []Token `yaml:"tokens"`
}

// Token is a bearer token and its rights. Produce and Consume hold topic patterns in path.Match
// syntax ("settlement.*"); Admin allows topic creation and the admin endpoints.
//
// The secret comes from the environment variable TokenEnv names, never from the file (a secret
// in a file ends up in backups and diffs); Load fills Token from it. Token is never logged.
type Token struct {
	Name     string   `yaml:"name"`
	Token    string   `yaml:"-"`
	TokenEnv string   `yaml:"token_env"`
	Produce  []string `yaml:"produce"`
	Consume  []string `yaml:"consume"`
	Admin    bool     `yaml:"admin"`
}

// Default returns the configuration used when there is no file and no environment: the embedded
// server in ./data, listening on loopback only.
func Default() Config {
	return Config{
		DataDir: "./data",
		HTTP: HTTP{
			Addr:            "127.0.0.1:8080",
			MaxWait:         30 * time.Second,
			ShutdownTimeout: 30 * time.Second,
		},
		Protocol: Protocol{Enabled: true, Addr: "127.0.0.1:8123"},
		Log: Log{
			Fsync:                  "always",
			SegmentBytes:           1 << 30,
			Retention:              168 * time.Hour,
			RetentionCheckInterval: time.Minute,
			CheckpointInterval:     time.Second,
			IndexSegmentEntries:    1 << 18,
		},
		Offsets:           Offsets{Store: "file", GroupCommit: 2 * time.Millisecond},
		Coordinator:       Coordinator{DecisionLog: DecisionLogFile, Grace: 30 * time.Second, RecoveryInterval: 5 * time.Second},
		ZooKeeper:         ZooKeeper{Root: "/imago"},
		Cluster:           Cluster{Forward: ForwardProxy, TickInterval: DefaultTickInterval, ElectionTicks: DefaultElectionTicks},
		DefaultPartitions: 1,
		MaxBodyBytes:      16 << 20,
	}
}
