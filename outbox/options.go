package outbox

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/imagomq/imago/migrations"
)

// Mode says what the relay does with a published row.
type Mode string

// Modes.
const (
	// ModeDelete deletes published rows (the default).
	ModeDelete Mode = "delete"
	// ModeMark keeps published rows and stamps relayed_at; the operator purges them.
	ModeMark Mode = "mark"
)

// Options configure a Relay. Zero fields take the documented defaults.
type Options struct {
	// Name is the source name: it keys the relay's state row, its lock and its idempotency keys.
	Name string
	// Dialect is "postgres" or "mysql" ("mariadb" is accepted).
	Dialect string
	// DSN of the application's database (pgx URL or keyword/value; go-sql-driver/mysql DSN).
	DSN string
	// Table is the outbox table; default imago.outbox (PostgreSQL) or imago_outbox (MySQL).
	Table string
	// Mode: delete (default) or mark.
	Mode Mode
	// BatchSize caps rows per batch. Default 1000; at most MaxMySQLBatchSize on MySQL.
	BatchSize int
	// BatchBytes caps a batch's rows as they are encoded in produce requests (the payload in
	// base64, the key and headers as JSON strings, the JSON around them: encodedSize), and so
	// the body of each request it becomes; a single larger row is still sent, alone. Default
	// DefaultBatchBytes (4 MiB). Keep it below the body limit of the gateway ClientPublisher
	// sends to (max_body_bytes).
	BatchBytes int
	// MinPoll is the shortest interval between two reads of the outbox table: while rows keep
	// coming the relay reads (and publishes) a batch every MinPoll, or at once after a full
	// batch (BatchSize or BatchBytes), so that a steady stream costs the database one read and
	// one completing transaction per MinPoll, not per row; a read that finds no row to relay
	// is followed by a wait of MinPoll, then twice as long each time, up to MaxPoll. A row
	// committed into a steady stream waits up to MinPoll for its read. Default 10ms; at most
	// MaxPoll.
	MinPoll time.Duration
	// MaxPoll bounds the poll interval of an idle relay, and so the delay of the first row
	// after a quiet period. Default 200ms. A PostgreSQL relay also wakes on NOTIFY
	// imago_outbox, where an operator attached the optional imago.outbox_notify() trigger.
	MaxPoll time.Duration
	// LockRetry is how often a standby relay tries to take the source's lock. Default 1s.
	LockRetry time.Duration
	// SessionTimeout bounds how long the database keeps the relay's session, and so the
	// source's lock, once the relay stops talking to it (a frozen process, a dead host): the
	// session is ended after SessionTimeout without a statement (MySQL wait_timeout,
	// PostgreSQL idle_session_timeout and idle_in_transaction_session_timeout), and TCP
	// keepalives and tcp_user_timeout drop a connection to a dead host sooner. A standby takes
	// over within SessionTimeout + LockRetry (about 16 s with the defaults). The relay talks at
	// least every MaxPoll, and pings every SessionTimeout/3 while it publishes. Default 15s; it
	// must exceed 2×MaxPoll and 2×LockRetry.
	SessionTimeout time.Duration
	// GapCheckDelay is how long the MySQL relay waits after seeing an id gap (and opening its
	// sentinel transaction) before it first reads information_schema.innodb_trx, a cache InnoDB
	// refreshes only after 100 ms without readers; a view without the sentinel is stale and is
	// read again later. Default 250ms.
	GapCheckDelay time.Duration
	// GapSettle is how long after reading MAX(id) the MySQL relay takes its second look at a
	// gap it would pass: a new sentinel transaction and a fresh view of
	// information_schema.innodb_trx, whose writers that may have written before that sentinel
	// it waits for too. It catches a writer whose INSERT had allocated its id but that was not
	// yet listed in innodb_trx at the first look (descheduled between the two, on a loaded
	// host or under a CPU quota); only one kept off the CPU longer than GapSettle could still
	// be missed. Only a gap that no writer fills (a rolled-back insert) waits for it. Default 1s.
	GapSettle time.Duration
	// GapGrace is the MySQL fallback without the PROCESS privilege: a gap older than this is
	// passed. Default 1m.
	GapGrace time.Duration
	// lateChecks are the delays after a MySQL batch's completion at which its range is read
	// again for late rows (mysql_late.go); nil is defaultLateChecks. Tests set it.
	lateChecks []time.Duration
	// lateScanRows bounds the rows one late-row recheck reads; 0 is defaultLateScanRows. Tests
	// set it.
	lateScanRows int
	// lateChecked, set only by tests, sees each range a late-row recheck read to its end
	// without finding a row, with the round (the index into lateChecks) that read it.
	lateChecked func(lo, hi int64, round int)
	// BacklogEvery is how often the active relay counts its backlog. Default 2s.
	BacklogEvery time.Duration
	Logger       *slog.Logger
	// Metrics, when set, receives the source's series.
	Metrics *Metrics
}

// Check reports what starting a relay with o would refuse (a missing name, an unknown dialect,
// a bad table or mode, poll intervals that do not fit together or with the session timeout),
// without connecting to anything: imago serve checks its configured sources with it at start,
// on every node, before any relay runs.
func (o Options) Check() error { return o.defaults() }

func (o *Options) defaults() error {
	if o.Name == "" {
		return errors.New("outbox: a relay needs a source name")
	}
	d, ok := migrations.Dialect(o.Dialect)
	if !ok {
		return fmt.Errorf("outbox: source %s: unknown dialect %q (want postgres or mysql)", o.Name, o.Dialect)
	}
	o.Dialect = d
	if o.Table == "" {
		o.Table = DefaultPostgresTable
		if o.Dialect == MySQL {
			o.Table = DefaultMySQLTable
		}
	}
	if !ValidTable(o.Table) {
		return fmt.Errorf("outbox: source %s: table name %q: want an identifier, optionally schema-qualified", o.Name, o.Table)
	}
	switch o.Mode {
	case "":
		o.Mode = ModeDelete
	case ModeDelete, ModeMark:
	default:
		return fmt.Errorf("outbox: source %s: mode %q: want delete or mark", o.Name, o.Mode)
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 1000
	}
	if o.Dialect == MySQL && o.BatchSize > MaxMySQLBatchSize {
		return fmt.Errorf("outbox: source %s: batch size %d: at most %d on MySQL (a batch's ids are the parameters of one statement)", o.Name, o.BatchSize, MaxMySQLBatchSize)
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = DefaultBatchBytes
	}
	if o.MaxPoll <= 0 {
		o.MaxPoll = 200 * time.Millisecond
	}
	if o.MinPoll <= 0 {
		o.MinPoll = min(DefaultMinPoll, o.MaxPoll)
	}
	if o.MinPoll > o.MaxPoll {
		return fmt.Errorf("outbox: source %s: min poll %s exceeds max poll %s", o.Name, o.MinPoll, o.MaxPoll)
	}
	if o.LockRetry <= 0 {
		o.LockRetry = time.Second
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = DefaultSessionTimeout
	}
	if o.SessionTimeout < 2*o.MaxPoll || o.SessionTimeout < 2*o.LockRetry || o.SessionTimeout < 2*time.Second {
		return fmt.Errorf("outbox: source %s: session timeout %s: want at least 2s and twice max poll (%s) and lock retry (%s)",
			o.Name, o.SessionTimeout, o.MaxPoll, o.LockRetry)
	}
	if o.GapCheckDelay <= 0 {
		o.GapCheckDelay = 250 * time.Millisecond
	}
	if o.GapSettle <= 0 {
		o.GapSettle = time.Second
	}
	if o.GapGrace <= 0 {
		o.GapGrace = time.Minute
	}
	if o.BacklogEvery <= 0 {
		o.BacklogEvery = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// A PostgreSQL relay whose committed rows wait behind an older open transaction polls at
// most heldPoll apart for the first heldFor of the wait, then backs off to MaxPoll (a
// forgotten prepared transaction must not keep it polling fast for hours).
const (
	heldPoll = 8 * time.Millisecond
	heldFor  = time.Second
)

// MaxMySQLBatchSize is the largest BatchSize of a MySQL source: completing a batch binds each
// of its ids as a parameter of one statement, and MySQL allows 65535 parameters.
const MaxMySQLBatchSize = 65535

// DefaultMinPoll is Options.MinPoll's default: a row committed into a steady stream waits up
// to 10 ms for the relay's next read, and the relay reads and completes at most about 100
// batches a second however small they are. At 2,000 writes/s its PostgreSQL session then
// takes 15-22% of the server CPU the writers' sessions take; reading 2 ms apart and again at
// once after each batch (the old behaviour) it took 25-30% (see "What the PostgreSQL relay
// waits on" in the package documentation).
const DefaultMinPoll = 10 * time.Millisecond

// DefaultBatchBytes is Options.BatchBytes's default: 4 MiB of rows as a produce request
// encodes them (encodedSize). It keeps every request of rows the broker accepts under the
// gateway's default body limit, 16 MiB (gateway.DefaultMaxBodyBytes), which is on the JSON
// body, where a payload grows by a third (base64) and a key or header by up to six times (JSON
// escapes). The relay sends a batch as one produce request per topic, holding some of the
// batch's rows: a request of several rows takes at most 4 MiB + 15 bytes (requestFraming). A
// row goes alone when it is larger than BatchBytes or has more than soloRawBytes of key,
// headers and payload; a row the broker accepts (at most 1 MiB of them by default) takes at
// most 6 MiB + 79 bytes alone. So no request the broker would accept is refused for its
// body's size, with a margin: a gateway configured down to 6.1 MiB takes them too.
const DefaultBatchBytes = 4 << 20

// soloRawBytes: a row with more key, headers and payload than this (the broker's default
// limit on one message, broker.Options.MaxMessageBytes) goes in a batch of its own, so that if
// the broker refuses it the relay's error names that row rather than a batch of several.
const soloRawBytes = 1 << 20

// DefaultSessionTimeout is Options.SessionTimeout's default.
const DefaultSessionTimeout = 15 * time.Second
