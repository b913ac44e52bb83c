package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "imago.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDefaults(t *testing.T) {
	c, err := load("", envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "./data" || c.HTTP.Addr != "127.0.0.1:8080" || c.Protocol.Addr != "127.0.0.1:8123" ||
		!c.Protocol.Enabled || c.Log.Fsync != "always" || c.Log.SegmentBytes != 1<<30 ||
		c.Log.Retention != 168*time.Hour || c.Offsets.Store != "file" {
		t.Fatalf("defaults: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
}

func TestLoad(t *testing.T) {
	full := `
data_dir: /var/lib/imago
http:     {addr: 127.0.0.1:9090, max_wait: 5s}
protocol: {addr: 127.0.0.1:9123, enabled: false}
log:      {fsync: "interval:10ms", segment_bytes: 512MiB, retention: 24h, retention_bytes: 10GB, retention_check_interval: 30s, checkpoint_interval: 2s, index_segment_entries: 4096}
offsets:  {store: postgres, dsn: "postgres://x@127.0.0.1/test", group_commit: 5ms}
zookeeper: {servers: [127.0.0.1:2181], root: /imago}
resources:
  wallet: {driver: mysql,    dsn: "root@tcp(127.0.0.1:3306)/test"}
  ledger: {driver: postgres, dsn: "postgres://postgres@127.0.0.1:5432/test"}
operations:
  wallet.debit:
    sql: "UPDATE wallets SET balance = balance - :amount WHERE id = :account AND balance >= :amount"
    expect_rows: 1
outbox:
  - {name: orders, resource: ledger, table: imago_outbox, batch_size: 500, min_poll: 5ms, max_poll: 1s}
auth:
  tokens:
    - {name: payments, token_env: IMAGO_TOKEN_PAYMENTS, produce: ["settlement.*"], consume: [], admin: false}
auto_create_topics: true
default_partitions: 8
max_body_bytes: 4MiB
`
	tests := []struct {
		name    string
		file    string // "" means no file
		env     map[string]string
		check   func(t *testing.T, c Config)
		wantErr string
	}{
		{
			name: "full file",
			file: full,
			env:  map[string]string{"IMAGO_TOKEN_PAYMENTS": "s3cret"},
			check: func(t *testing.T, c Config) {
				if c.DataDir != "/var/lib/imago" || c.HTTP.Addr != "127.0.0.1:9090" || c.HTTP.MaxWait != 5*time.Second {
					t.Errorf("http: %+v", c.HTTP)
				}
				if c.HTTP.ShutdownTimeout != 30*time.Second {
					t.Errorf("unmentioned key lost its default: %v", c.HTTP.ShutdownTimeout)
				}
				if c.Protocol.Enabled || c.Protocol.Addr != "127.0.0.1:9123" {
					t.Errorf("protocol: %+v", c.Protocol)
				}
				if c.Log.Fsync != "interval:10ms" || c.Log.SegmentBytes != 512<<20 || c.Log.Retention != 24*time.Hour || c.Log.RetentionBytes != 10e9 ||
					c.Log.RetentionCheckInterval != 30*time.Second || c.Log.CheckpointInterval != 2*time.Second || c.Log.IndexSegmentEntries != 4096 {
					t.Errorf("log: %+v", c.Log)
				}
				if got := strings.Join(c.ZooKeeper.Servers, "|"); got != "127.0.0.1:2181" {
					t.Errorf("servers %q", got)
				}
				if c.Resources["wallet"].Driver != "mysql" || c.Operations["wallet.debit"].ExpectRows != 1 || len(c.Outbox) != 1 {
					t.Errorf("resources/operations/outbox: %+v %+v %+v", c.Resources, c.Operations, c.Outbox)
				} else if o := c.Outbox[0]; o.BatchSize != 500 || o.MinPoll != 5*time.Millisecond || o.MaxPoll != time.Second {
					t.Errorf("outbox relay tuning: %+v", o)
				}
				if len(c.Auth.Tokens) != 1 || c.Auth.Tokens[0].Token != "s3cret" || c.Auth.Tokens[0].Produce[0] != "settlement.*" {
					t.Errorf("tokens: %#v", c.Auth.Tokens)
				}
				if !c.AutoCreateTopics || c.DefaultPartitions != 8 || c.MaxBodyBytes != 4<<20 {
					t.Errorf("top level: %v %v %v", c.AutoCreateTopics, c.DefaultPartitions, c.MaxBodyBytes)
				}
				if err := c.Validate(); err != nil {
					t.Errorf("validate: %v", err)
				}
			},
		},
		{
			name: "environment overrides file",
			file: "data_dir: /from/file\nlog: {segment_bytes: 1GiB}\nresources: {wallet: {driver: mysql, dsn: x}}\n",
			env: map[string]string{
				"IMAGO_DATA_DIR": "/from/env", "IMAGO_HTTP_ADDR": "[::1]:0", "IMAGO_LOG_FSYNC": "never",
				"IMAGO_LOG_SEGMENT_BYTES": "64MiB", "IMAGO_LOG_RETENTION": "1h", "IMAGO_AUTO_CREATE_TOPICS": "true",
				"IMAGO_DEFAULT_PARTITIONS": "3", "IMAGO_PROTOCOL_ENABLED": "false", "IMAGO_ZOOKEEPER_SERVERS": "a:1, b:2",
				"IMAGO_RESOURCES_WALLET_DSN": "root:pw@tcp(127.0.0.1:3306)/test", "IMAGO_MAX_BODY_BYTES": "1048576",
			},
			check: func(t *testing.T, c Config) {
				if c.DataDir != "/from/env" || c.HTTP.Addr != "[::1]:0" || c.Log.Fsync != "never" ||
					c.Log.SegmentBytes != 64<<20 || c.Log.Retention != time.Hour || !c.AutoCreateTopics ||
					c.DefaultPartitions != 3 || c.Protocol.Enabled || c.MaxBodyBytes != 1<<20 {
					t.Errorf("got %+v", c)
				}
				if got := strings.Join(c.ZooKeeper.Servers, "|"); got != "a:1|b:2" {
					t.Errorf("servers %q", got)
				}
				if c.Resources["wallet"].DSN != "root:pw@tcp(127.0.0.1:3306)/test" || c.Resources["wallet"].Driver != "mysql" {
					t.Errorf("resource override: %+v", c.Resources["wallet"])
				}
			},
		},
		{name: "unknown key names the key", file: "data_dir: x\nhttp: {adr: 127.0.0.1:1}\n", wantErr: `unknown field "adr"`},
		{name: "unknown top-level key", file: "fsync: always\n", wantErr: `unknown field "fsync"`},
		{name: "bad size", file: "data_dir: x\nlog: {segment_bytes: 1 gigabyte}\n", wantErr: "line 2"},
		{name: "bad env bool", env: map[string]string{"IMAGO_AUTO_CREATE_TOPICS": "yes please"}, wantErr: "IMAGO_AUTO_CREATE_TOPICS"},
		{name: "bad env size", env: map[string]string{"IMAGO_LOG_SEGMENT_BYTES": "lots"}, wantErr: "IMAGO_LOG_SEGMENT_BYTES"},
		{name: "bad env duration", env: map[string]string{"IMAGO_LOG_RETENTION": "7 days"}, wantErr: "IMAGO_LOG_RETENTION"},
		{name: "token_env unset", file: "auth: {tokens: [{name: p, token_env: NOPE_NOT_SET}]}\n", wantErr: "NOPE_NOT_SET"},
		{name: "token_env missing", file: "auth: {tokens: [{name: p}]}\n", wantErr: "token_env is required"},
		{name: "secret in the file refused", file: "auth: {tokens: [{name: p, token: s3cret, token_env: X}]}\n", env: map[string]string{"X": "y"}, wantErr: `unknown field "token"`},
		{name: "comments only means defaults", file: "# nothing yet\n", check: func(t *testing.T, c Config) {
			if c.HTTP.Addr != "127.0.0.1:8080" || c.Log.SegmentBytes != 1<<30 {
				t.Errorf("defaults lost: %+v", c)
			}
		}},
		{name: "block list of servers", file: "zookeeper:\n  servers:\n    - 127.0.0.1:2181\n    - \"[::1]:2181\"\n", check: func(t *testing.T, c Config) {
			if got := strings.Join(c.ZooKeeper.Servers, "|"); got != "127.0.0.1:2181|[::1]:2181" {
				t.Errorf("servers %q", got)
			}
		}},
		{name: "empty file means defaults", file: "\n", check: func(t *testing.T, c Config) {
			if c.HTTP.Addr != "127.0.0.1:8080" {
				t.Errorf("addr %q", c.HTTP.Addr)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.file != "" {
				path = writeFile(t, tt.file)
			}
			c, err := load(path, envMap(tt.env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

// The coordinator section: defaults, the file, and the IMAGO_COORDINATOR_* overrides.
func TestLoadCoordinator(t *testing.T) {
	c, err := load("", envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Coordinator != (Coordinator{DecisionLog: "file", Grace: 30 * time.Second, RecoveryInterval: 5 * time.Second}) {
		t.Fatalf("coordinator defaults: %+v", c.Coordinator)
	}
	path := writeFile(t, `
resources:
  ledger: {driver: postgres, dsn: "postgres://postgres@127.0.0.1:5432/test"}
coordinator: {decision_log: ledger, grace: 10s}
`)
	c, err = load(path, envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Coordinator != (Coordinator{DecisionLog: "ledger", Grace: 10 * time.Second, RecoveryInterval: 5 * time.Second}) {
		t.Fatalf("coordinator from the file: %+v", c.Coordinator)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c, err = load(path, envMap(map[string]string{
		"IMAGO_COORDINATOR_DECISION_LOG": "file", "IMAGO_COORDINATOR_GRACE": "2s", "IMAGO_COORDINATOR_RECOVERY_INTERVAL": "250ms",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Coordinator != (Coordinator{DecisionLog: "file", Grace: 2 * time.Second, RecoveryInterval: 250 * time.Millisecond}) {
		t.Fatalf("coordinator with the environment: %+v", c.Coordinator)
	}
	if _, err := load(path, envMap(map[string]string{"IMAGO_COORDINATOR_GRACE": "soon"})); err == nil || !strings.Contains(err.Error(), "coordinator.grace") {
		t.Fatalf("IMAGO_COORDINATOR_GRACE=soon: %v", err)
	}
	if _, err := load(writeFile(t, "coordinator: {decision_table: x}\n"), envMap(nil)); err == nil || !strings.Contains(err.Error(), "decision_table") {
		t.Fatalf("unknown coordinator key: %v", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "nope.yaml")); err == nil {
		t.Fatal("want an error for a missing file")
	}
}

// outboxWith sets one outbox source with src's relay tuning on a valid resource.
func outboxWith(src OutboxSource) func(c *Config) {
	return func(c *Config) {
		c.Resources = map[string]Resource{"db": {Driver: "postgres", DSN: "postgres://x"}}
		src.Name, src.Resource, src.Table = "o", "db", "t"
		c.Outbox = []OutboxSource{src}
	}
}

func TestValidate(t *testing.T) {
	withTokens := func(c *Config) {
		c.Auth.Tokens = []Token{{Name: "ops", Token: "t0k3n", Admin: true}}
	}
	tests := []struct {
		name    string
		mutate  func(c *Config)
		wantErr []string // substrings; nil means valid
	}{
		{name: "defaults", mutate: func(c *Config) {}},
		{name: "index segments too small", mutate: func(c *Config) { c.Log.IndexSegmentEntries = 8 }, wantErr: []string{"log.index_segment_entries 8"}},
		{name: "retention checked too often", mutate: func(c *Config) { c.Log.RetentionCheckInterval = time.Millisecond }, wantErr: []string{"log.retention_check_interval"}},
		{name: "checkpoint interval zero", mutate: func(c *Config) { c.Log.CheckpointInterval = 0 }, wantErr: []string{"log.checkpoint_interval"}},
		{name: "127.0.0.2", mutate: func(c *Config) { c.HTTP.Addr = "127.0.0.2:80" }},
		{name: "ipv6 loopback", mutate: func(c *Config) { c.HTTP.Addr = "[::1]:8080" }},
		{name: "localhost", mutate: func(c *Config) { c.HTTP.Addr = "localhost:0" }},
		{name: "all interfaces refused", mutate: func(c *Config) { c.HTTP.Addr = "0.0.0.0:8080" },
			wantErr: []string{"http.addr", "not a loopback address", "auth.tokens"}},
		{name: "empty host refused", mutate: func(c *Config) { c.HTTP.Addr = ":8080" },
			wantErr: []string{`":8080"`, "not a loopback address"}},
		{name: "ipv6 any refused", mutate: func(c *Config) { c.HTTP.Addr = "[::]:8080" }, wantErr: []string{"not a loopback"}},
		{name: "host name refused", mutate: func(c *Config) { c.HTTP.Addr = "example.internal:8080" }, wantErr: []string{"not a loopback"}},
		{name: "protocol checked too", mutate: func(c *Config) { c.Protocol.Addr = "10.0.0.1:8123" }, wantErr: []string{"protocol.addr"}},
		{name: "protocol disabled not checked", mutate: func(c *Config) { c.Protocol.Addr = "10.0.0.1:8123"; c.Protocol.Enabled = false }},
		{name: "tokens allow any address", mutate: func(c *Config) { withTokens(c); c.HTTP.Addr = "0.0.0.0:8080"; c.Protocol.Addr = ":8123" }},
		{name: "no port", mutate: func(c *Config) { c.HTTP.Addr = "127.0.0.1" }, wantErr: []string{"host:port"}},
		{name: "bad fsync", mutate: func(c *Config) { c.Log.Fsync = "sometimes" }, wantErr: []string{"log.fsync"}},
		{name: "tiny segments", mutate: func(c *Config) { c.Log.SegmentBytes = 10 }, wantErr: []string{"segment_bytes"}},
		// 0 is not "keep forever" (that is no setting) nor "delete at once": the broker took it
		// as its default, a week, while the start-up log said retention=0s.
		{name: "zero retention", mutate: func(c *Config) { c.Log.Retention = 0 }, wantErr: []string{"log.retention 0s", "168h"}},
		{name: "negative retention", mutate: func(c *Config) { c.Log.Retention = -time.Hour }, wantErr: []string{"log.retention -1h0m0s"}},
		{name: "bad store", mutate: func(c *Config) { c.Offsets.Store = "redis" }, wantErr: []string{"offsets.store"}},
		{name: "partitions", mutate: func(c *Config) { c.DefaultPartitions = 0 }, wantErr: []string{"default_partitions"}},
		{name: "token without secret", mutate: func(c *Config) { c.Auth.Tokens = []Token{{Name: "x"}} }, wantErr: []string{"no secret"}},
		{name: "duplicate secret", mutate: func(c *Config) {
			c.Auth.Tokens = []Token{{Name: "a", Token: "s"}, {Name: "b", Token: "s"}}
		}, wantErr: []string{"same secret"}},
		{name: "bad pattern", mutate: func(c *Config) { c.Auth.Tokens = []Token{{Name: "a", Token: "s", Produce: []string{"["}}} },
			wantErr: []string{"topic pattern"}},
		{name: "outbox resource", mutate: func(c *Config) { c.Outbox = []OutboxSource{{Name: "o", Resource: "nope", Table: "t"}} },
			wantErr: []string{`resource "nope"`}},
		{name: "outbox mode", mutate: func(c *Config) {
			c.Resources = map[string]Resource{"db": {Driver: "postgres", DSN: "postgres://x"}}
			c.Outbox = []OutboxSource{{Name: "o", Resource: "db", Table: "t", Mode: "shred"}}
		}, wantErr: []string{`mode "shred"`}},
		{name: "outbox relay tuning", mutate: outboxWith(OutboxSource{BatchSize: 200, MinPoll: 2 * time.Millisecond, MaxPoll: time.Second})},
		{name: "outbox min_poll alone", mutate: outboxWith(OutboxSource{MinPoll: 50 * time.Millisecond})},
		{name: "outbox batch_size negative", mutate: outboxWith(OutboxSource{BatchSize: -1}), wantErr: []string{"batch_size -1"}},
		{name: "outbox min_poll negative", mutate: outboxWith(OutboxSource{MinPoll: -time.Millisecond}), wantErr: []string{"min_poll -1ms"}},
		{name: "outbox min_poll below 1ms", mutate: outboxWith(OutboxSource{MinPoll: time.Microsecond}), wantErr: []string{"min_poll 1µs: want at least 1ms"}},
		{name: "decision log in a postgres resource", mutate: func(c *Config) {
			c.Resources = map[string]Resource{"ledger": {Driver: "postgres", DSN: "postgres://x"}}
			c.Coordinator.DecisionLog = "ledger"
		}},
		{name: "decision log in a mysql resource", mutate: func(c *Config) {
			c.Resources = map[string]Resource{"wallet": {Driver: "mysql", DSN: "root@tcp(127.0.0.1:3306)/test"}}
			c.Coordinator.DecisionLog = "wallet"
		}},
		{name: "decision log names no resource", mutate: func(c *Config) {
			c.Resources = map[string]Resource{"wallet": {Driver: "mysql", DSN: "x"}, "ledger": {Driver: "postgres", DSN: "y"}}
			c.Coordinator.DecisionLog = "ledgr"
		}, wantErr: []string{`coordinator.decision_log "ledgr"`, `"file"`, "configured: ledger, wallet"}},
		{name: "decision log with no resources", mutate: func(c *Config) { c.Coordinator.DecisionLog = "postgres" },
			wantErr: []string{`coordinator.decision_log "postgres"`, "none is configured"}},
		{name: "decision log empty", mutate: func(c *Config) { c.Coordinator.DecisionLog = "" },
			wantErr: []string{`coordinator.decision_log ""`}},
		{name: "decision log in a resource of another driver", mutate: func(c *Config) {
			c.Resources = map[string]Resource{"kv": {Driver: "redis", DSN: "x"}}
			c.Coordinator.DecisionLog = "kv"
		}, wantErr: []string{`coordinator.decision_log "kv"`, `driver is "redis"`}},
		{name: "grace", mutate: func(c *Config) { c.Coordinator.Grace = 0 }, wantErr: []string{"coordinator.grace 0s: must be positive"}},
		{name: "node id", mutate: func(c *Config) { c.Coordinator.NodeID = "NODE-1" }, wantErr: []string{`coordinator.node_id "NODE-1": want 16 lowercase hex digits`}},
		{name: "recovery interval", mutate: func(c *Config) { c.Coordinator.RecoveryInterval = -time.Second },
			wantErr: []string{"coordinator.recovery_interval -1s: must be positive"}},
		{name: "several problems at once", mutate: func(c *Config) { c.DataDir = ""; c.HTTP.Addr = ":1" },
			wantErr: []string{"data_dir", "http.addr"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(&c)
			checkErrs(t, c.Validate(), tt.wantErr)
		})
	}
}

func TestByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want ByteSize
		err  bool
	}{
		{"1GiB", 1 << 30, false}, {"512MiB", 512 << 20, false}, {"64KiB", 64 << 10, false},
		{"1.5GiB", 3 << 29, false}, {"10MB", 10e6, false}, {"1kB", 1000, false}, {"100B", 100, false},
		{"1048576", 1 << 20, false}, {" 2 GiB ", 2 << 30, false}, {"1TiB", 1 << 40, false},
		{"", 0, true}, {"-1", 0, true}, {"-1GiB", 0, true}, {"1 GB!", 0, true}, {"GiB", 0, true}, {"1XB", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseByteSize(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d, err=%v", tt.in, got, err, tt.want, tt.err)
		}
	}
	for _, tt := range []struct {
		in   ByteSize
		want string
	}{{1 << 30, "1GiB"}, {1536 << 10, "1536KiB"}, {1000, "1000"}, {0, "0"}} {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("%d.String() = %q, want %q", int64(tt.in), got, tt.want)
		}
	}
}

func TestEnvVarNames(t *testing.T) {
	c := Default()
	c.Resources = map[string]Resource{"wallet": {}}
	c.Operations = map[string]Operation{"wallet.debit": {}}
	vars := EnvVars(c)
	for env, key := range map[string]string{
		"IMAGO_DATA_DIR": "data_dir", "IMAGO_HTTP_ADDR": "http.addr", "IMAGO_LOG_FSYNC": "log.fsync",
		"IMAGO_LOG_SEGMENT_BYTES": "log.segment_bytes", "IMAGO_AUTO_CREATE_TOPICS": "auto_create_topics",
		"IMAGO_PROTOCOL_ENABLED": "protocol.enabled", "IMAGO_ZOOKEEPER_SERVERS": "zookeeper.servers",
		"IMAGO_RESOURCES_WALLET_DSN": "resources.wallet.dsn", "IMAGO_OPERATIONS_WALLET_DEBIT_SQL": "operations.wallet.debit.sql",
		"IMAGO_MAX_BODY_BYTES": "max_body_bytes", "IMAGO_OFFSETS_GROUP_COMMIT": "offsets.group_commit",
		"IMAGO_COORDINATOR_DECISION_LOG": "coordinator.decision_log", "IMAGO_COORDINATOR_GRACE": "coordinator.grace",
		"IMAGO_COORDINATOR_RECOVERY_INTERVAL": "coordinator.recovery_interval", "IMAGO_COORDINATOR_NODE_ID": "coordinator.node_id",
	} {
		if vars[env] != key {
			t.Errorf("%s -> %q, want %q", env, vars[env], key)
		}
	}
	for env := range vars {
		if strings.Contains(env, "TOKENS") || strings.Contains(env, "OUTBOX") {
			t.Errorf("lists of objects must not be env-overridable: %s", env)
		}
	}
}

func TestTokenNeverPrinted(t *testing.T) {
	tok := Token{Name: "payments", Token: "s3cret-value"}
	for _, s := range []string{tok.String(), tok.GoString()} {
		if strings.Contains(s, "s3cret") {
			t.Fatalf("secret printed: %s", s)
		}
	}
}
