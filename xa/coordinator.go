package xa

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/fsutil"
)

// Options configure a Coordinator. NewOptions returns the defaults.
type Options struct {
	// Dir holds the decision log (unless DecisionDB is set), the node id and a lock file.
	// Required.
	Dir string
	// DecisionDB, when set, keeps the decision log in a table of this database instead of
	// the file Dir/decisions.log: imago.xa_decisions in PostgreSQL, imago_xa_decisions in
	// MySQL/MariaDB, created or updated by Open (package migrations). Same protocol as the
	// file: the commit decision is committed there before the first phase-2 commit (the
	// database's commit is the fsync), one row per transaction of this node id holds its last
	// record, and finished transactions are deleted after Retention. The caller keeps
	// ownership of the pool (it may be a resource's) and closes it after the coordinator.
	// Coordinators sharing the database need distinct node ids. Open refuses to switch from a
	// file that still holds unfinished transactions; a switch back to the file does not carry
	// the table's rows over, so make it with none unfinished. Default nil: the file.
	DecisionDB *sql.DB
	// DecisionBroker, when set, keeps the decision log in the broker's commit log (decision
	// batches, always fsync'd, sharing the flusher's fsync with the broker's other writes; see
	// declog_broker.go). Pass the *broker.Broker this process runs; set at most one of
	// DecisionDB and DecisionBroker. Open refuses to switch from a file that still holds
	// unfinished transactions; a switch away does not carry the held decisions over, so make
	// it with none unfinished. Default nil.
	DecisionBroker DecisionBroker
	// DecisionDialect is DecisionDB's dialect: "mysql" (go-sql-driver/mysql; MySQL or
	// MariaDB) or "postgres" (pgx stdlib). Required with DecisionDB.
	DecisionDialect string
	// NodeID is this coordinator's id inside every gtrid: 16 lowercase hex digits. Empty: read
	// from Dir/node-id, created at random on first use. Coordinators sharing a database must
	// have different node ids; recovery only touches its own node's branches.
	NodeID string
	// Resources are the resource managers transactions may enlist, by their names.
	Resources []Resource
	// DefaultTimeout applies when BeginOptions.Timeout is 0. Default 30s.
	DefaultTimeout time.Duration
	// MaxTimeout caps BeginOptions.Timeout. Default 1h.
	MaxTimeout time.Duration
	// Grace is how long a prepared branch with no decision (and no transaction running in this
	// process) must have been seen before recovery presumes abort and rolls it back. Default 30s.
	Grace time.Duration
	// RecoveryInterval is the period of the recovery scan. Default 5s.
	RecoveryInterval time.Duration
	// PhaseTimeout bounds one phase-2 or recovery call on one resource. Default 30s.
	PhaseTimeout time.Duration
	// Retention is how long a finished transaction with a client id is remembered (repeats of
	// its id return its outcome), and how long the decision log (file or table) keeps a
	// finished transaction. Default 1h.
	Retention time.Duration
	// StatusRetention is how long a finished transaction without a client id stays visible to
	// Get. Default 5m.
	StatusRetention time.Duration
	// CompactBytes: the decision log file is compacted when it grows past this. Default 64 MiB.
	CompactBytes int64
	// LazyRecordDelay (decisions in the commit log) is how long the records nobody waits for
	// ("preparing", "done") are held before they are written together (declog_broker.go);
	// longer holds save fsyncs and leave recovery more to redo after a crash. Zero: 20ms.
	LazyRecordDelay time.Duration
	// Logger receives the coordinator's structured log. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Elapsed is the monotonic clock: the time since Open, never moved by a step of the wall
	// clock. A finished transaction (and its client id) is forgotten only when it is past its
	// retention by Now and by Elapsed, so a wall clock stepped forward (NTP, a resumed VM)
	// forgets nothing early; one loaded at Open is aged from its recorded finish by the wall
	// clock at Open (a step while the process was down counts as time passed). The decision
	// log's clean-up (compaction of the file, the sweep of the table or of the commit log's
	// decisions) drops a finished transaction's record by the same rule. Default: the
	// monotonic reading of Now (time.Now has one; a fake clock without one moves both).
	Elapsed func() time.Duration
}

// NewOptions returns the default options for a coordinator keeping its files in dir.
func NewOptions(dir string) Options {
	return Options{
		Dir:              dir,
		DefaultTimeout:   30 * time.Second,
		MaxTimeout:       time.Hour,
		Grace:            30 * time.Second,
		RecoveryInterval: 5 * time.Second,
		PhaseTimeout:     30 * time.Second,
		Retention:        time.Hour,
		StatusRetention:  5 * time.Minute,
		CompactBytes:     64 << 20,
		Logger:           slog.Default(),
		Now:              time.Now,
	}
}

func (o Options) withDefaults() Options {
	d := NewOptions(o.Dir)
	if o.DefaultTimeout <= 0 {
		o.DefaultTimeout = d.DefaultTimeout
	}
	if o.MaxTimeout <= 0 {
		o.MaxTimeout = d.MaxTimeout
	}
	if o.Grace <= 0 {
		o.Grace = d.Grace
	}
	if o.RecoveryInterval <= 0 {
		o.RecoveryInterval = d.RecoveryInterval
	}
	if o.PhaseTimeout <= 0 {
		o.PhaseTimeout = d.PhaseTimeout
	}
	if o.Retention <= 0 {
		o.Retention = d.Retention
	}
	if o.StatusRetention <= 0 {
		o.StatusRetention = d.StatusRetention
	}
	if o.CompactBytes <= 0 {
		o.CompactBytes = d.CompactBytes
	}
	if o.Logger == nil {
		o.Logger = d.Logger
	}
	if o.Now == nil {
		o.Now = d.Now
	}
	if o.Elapsed == nil {
		start, now := o.Now(), o.Now
		o.Elapsed = func() time.Duration { return now().Sub(start) }
	}
	return o
}

// Coordinator runs global transactions over its resources. It is safe for concurrent use.
type Coordinator struct {
	opts    Options
	log     *slog.Logger
	node    string
	dlog    decisionStore
	lock    *os.File
	leases  *leaseSet // the node lease in every database (lease.go)
	rms     map[string]resourceManager
	order   []string
	brokerN string
	metrics *metrics

	mu     sync.Mutex
	txs    map[string]*txState // by gtrid
	byID   map[string]*txState // by public id (client id, or the gtrid)
	closed bool

	recMu     sync.Mutex
	firstSeen map[string]time.Time // xid key → when recovery first saw it prepared without a decision
	scanSeq   atomic.Uint64        // orders recovery scans and transactions' outcomes (recovery_scan.go)
	lastScan  map[string]scan      // resource → its last successful scan; guarded by mu
	healed    map[string]record    // outcomes the healed table log found, not applied yet; guarded by mu
	kick      chan struct{}
	stop      chan struct{}
	wg        sync.WaitGroup

	// Test hooks (package tests only): called after the prepare phase and after the commit
	// decision is durable; a non-nil error abandons the transaction as a crash would.
	hookAfterPrepare  func(gtrid string) error
	hookAfterDecision func(gtrid string) error
}

// txState is what the coordinator knows of one global transaction. Guarded by Coordinator.mu.
type txState struct {
	id, gtrid, clientID string
	digest              string // digestOf(BeginOptions.Digest), in every record of it; "" when none or unknown
	status              Status
	created, decided    time.Time
	finished, deadline  time.Time
	finishedMono        time.Duration // Options.Elapsed at finished (for one loaded at Open: as if)
	code, message, by   string
	branches            []*branchState
	offsets             []broker.TopicPosition
	live                bool          // a GlobalTx of this process still owns it
	abandoned           bool          // test hook: left as a crash leaves it
	logged              bool          // the decision log has a record of it
	resolving           bool          // a Resolve waits for its record to be durable
	settled             chan struct{} // closed when the live owner lets go
	nextTry             time.Time     // recovery backoff
	tries               int
	quiet               uint64 // scanSeq when its outcome last changed (released, or settled final)
}

type branchState struct {
	resource   string
	state      BranchState
	commitSent bool
}

func (st *txState) branch(resource string) *branchState {
	for _, b := range st.branches {
		if b.resource == resource {
			return b
		}
	}
	return nil
}

// Open opens the coordinator: it locks Dir, reads the decision log (cutting a torn tail),
// rolls back the transactions a previous run left undecided, checks every resource (a
// resource that cannot be reached is logged and checked again at its first enlistment; one
// that is unsuitable fails Open) and starts the recovery loop, whose first pass runs at once.
func Open(ctx context.Context, opts Options) (*Coordinator, error) {
	if opts.Dir == "" {
		return nil, errors.New("open coordinator: no directory")
	}
	opts = opts.withDefaults()
	if err := fsutil.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("open coordinator: %w", err)
	}
	c := &Coordinator{
		opts: opts, log: opts.Logger, rms: map[string]resourceManager{},
		txs: map[string]*txState{}, byID: map[string]*txState{}, firstSeen: map[string]time.Time{}, lastScan: map[string]scan{},
		kick: make(chan struct{}, 1), stop: make(chan struct{}),
	}
	if len(opts.Resources) > maxBranches {
		// A decision record lists every branch of its transaction (declog_record.go).
		return nil, fmt.Errorf("open coordinator: %d resources configured; at most %d", len(opts.Resources), maxBranches)
	}
	for _, r := range opts.Resources {
		if err := ValidResourceName(r.Name()); err != nil {
			return nil, fmt.Errorf("open coordinator: %w", err)
		}
		if _, dup := c.rms[r.Name()]; dup {
			return nil, fmt.Errorf("open coordinator: resource %q is configured twice", r.Name())
		}
		if r.Driver() == "broker" {
			if c.brokerN != "" {
				return nil, fmt.Errorf("open coordinator: two broker resources (%s, %s); at most one", c.brokerN, r.Name())
			}
			c.brokerN = r.Name()
		}
		c.rms[r.Name()] = r.rm()
		c.order = append(c.order, r.Name())
		if p, ok := r.rm().(interface{ setPhaseTimeout(time.Duration) }); ok {
			p.setPhaseTimeout(opts.PhaseTimeout) // bounds its sessions' idleness (mysql_session.go)
		}
	}
	sort.Strings(c.order)
	c.metrics = newMetrics(c)
	if err := c.lockDir(); err != nil {
		return nil, err
	}
	node, err := c.nodeID()
	if err != nil {
		c.lock.Close()
		return nil, err
	}
	c.node = node
	if err := c.takeLeases(ctx); err != nil {
		c.lock.Close()
		return nil, err
	}
	recs, where, err := c.openLog(ctx)
	if err != nil {
		c.leases.release()
		c.lock.Close()
		return nil, err
	}
	c.load(recs)
	for _, name := range c.order {
		err := c.rms[name].check(ctx)
		if errors.Is(err, ErrUnsupportedServer) {
			c.Close()
			return nil, fmt.Errorf("open coordinator: %w", err)
		}
		if err != nil {
			c.log.Warn("xa resource not reachable at start-up; checked again at first use", "resource", name, "err", err)
		}
	}
	c.log.Info("xa coordinator open", "dir", opts.Dir, "decision_log", where, "node", c.node, "resources", strings.Join(c.order, ","), "transactions_in_log", len(recs))
	c.wg.Add(1)
	go c.runRecovery()
	return c, nil
}

// openLog opens the decision log (the file in Dir, or the table in Options.DecisionDB), sets
// c.dlog and returns the records it holds and where it is.
func (c *Coordinator) openLog(ctx context.Context) ([]record, string, error) {
	o := c.opts
	if o.DecisionDB != nil && o.DecisionBroker != nil {
		return nil, "", errors.New("open coordinator: both DecisionDB and DecisionBroker are set; the decision log is in one place")
	}
	if o.DecisionDB == nil && o.DecisionBroker == nil {
		l, recs, err := openDecisionLog(o.Dir, o.Retention, o.CompactBytes, o.Now, o.Elapsed, c.metrics.observeFsync, c.log)
		if err != nil {
			return nil, "", err
		}
		c.dlog = l
		return recs, l.path, nil
	}
	n, err := unfinishedInFileLog(o.Dir)
	if err != nil {
		return nil, "", fmt.Errorf("open coordinator: %w", err)
	}
	if n > 0 {
		return nil, "", fmt.Errorf("open coordinator: %s holds %d unfinished global transactions; "+
			"finish them with the file decision log (leave Options.DecisionDB and DecisionBroker unset until none is left), then switch",
			filepath.Join(o.Dir, logFileName), n)
	}
	if o.DecisionBroker != nil {
		delay := o.LazyRecordDelay
		if delay <= 0 {
			delay = lazyDelay
		}
		l, recs, err := openBrokerDecisionLog(o.DecisionBroker, c.node, o.Retention, o.Now, o.Elapsed, delay, c.metrics.observeFsync, c.log)
		if err != nil {
			return nil, "", fmt.Errorf("open coordinator: %w", err)
		}
		c.dlog = l
		return recs, "commitlog", nil
	}
	l, recs, err := openSQLDecisionLog(ctx, sqlLogConfig{
		db: o.DecisionDB, dialect: o.DecisionDialect, node: c.node, retention: o.Retention,
		writeTimeout: o.PhaseTimeout, now: o.Now, elapsed: o.Elapsed, onSync: c.metrics.observeFsync, log: c.log,
		onHeal: func() { c.metrics.heals.Inc(); c.kickRecovery() },
	})
	if err != nil {
		return nil, "", fmt.Errorf("open coordinator: %w", err)
	}
	c.dlog = l
	return recs, l.table, nil
}

func (c *Coordinator) lockDir() error {
	f, err := fsutil.LockFile(filepath.Join(c.opts.Dir, "LOCK"))
	if err != nil {
		return fmt.Errorf("open coordinator: directory %s is in use by another coordinator: %w", c.opts.Dir, err)
	}
	c.lock = f
	return nil
}

func (c *Coordinator) nodeID() (string, error) {
	path := filepath.Join(c.opts.Dir, "node-id")
	if c.opts.NodeID != "" {
		if err := validNodeID(c.opts.NodeID); err != nil {
			return "", fmt.Errorf("open coordinator: %w", err)
		}
		if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) != c.opts.NodeID {
			return "", fmt.Errorf("open coordinator: node id %s differs from %s in %s; a directory keeps one node id", c.opts.NodeID, strings.TrimSpace(string(b)), path)
		}
		return c.opts.NodeID, writeFileSync(path, c.opts.NodeID+"\n")
	}
	if b, err := fsutil.ReadFileDurable(path); err == nil {
		id := strings.TrimSpace(string(b))
		if err := validNodeID(id); err != nil {
			return "", fmt.Errorf("open coordinator: %s: %w", path, err)
		}
		return id, nil
	} else if !os.IsNotExist(err) {
		return "", fmt.Errorf("open coordinator: %w", err)
	}
	var raw [nodeIDLen / 2]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	id := hex.EncodeToString(raw[:])
	return id, writeFileSync(path, id+"\n")
}

// writeFileSync replaces path with content durably (fsutil.WriteFileAtomic), unless it already
// holds exactly that.
func writeFileSync(path, content string) error {
	if b, err := fsutil.ReadFileDurable(path); err == nil && string(b) == content {
		return nil
	}
	return fsutil.WriteFileAtomic(filepath.Dir(path), filepath.Base(path), []byte(content), 0o644)
}

// load rebuilds the table from the decision log. A transaction a previous run left without a
// decision cannot still be preparing (that process is gone): it is decided rollback now (the
// decision durable first, abortUndecided), so recovery rolls its branches back without waiting
// for the grace period.
func (c *Coordinator) load(recs []record) {
	now, el := c.opts.Now(), c.opts.Elapsed()
	var newest time.Time
	for _, r := range recs {
		newest = r.newest(newest)
	}
	var undecided []*txState
	for _, r := range recs {
		st := &txState{
			id: r.Gtrid, gtrid: r.Gtrid, clientID: r.ClientID, digest: r.Digest, status: r.Status,
			created: r.Created, decided: r.Decided, finished: r.Finished, deadline: r.Deadline,
			code: r.Code, message: r.Message, by: r.By, logged: true, settled: make(chan struct{}),
		}
		close(st.settled)
		if !r.Finished.IsZero() {
			st.finishedMono = el - openAge(r.Finished, newest, now) // declog_age.go
		}
		if st.clientID != "" {
			st.id = st.clientID
		}
		for _, b := range r.Branches {
			st.branches = append(st.branches, &branchState{resource: b.Resource, state: b.State, commitSent: b.CommitSent})
		}
		if st.status == StatusActive || st.status == StatusPreparing {
			undecided = append(undecided, st)
		}
		c.txs[st.gtrid] = st
		c.byID[st.id] = st
	}
	c.abortUndecided(undecided, now)
}

// abortUndecided decides rollback for the transactions a previous run left undecided, each
// once its record is durable (a decision is recorded before recovery acts on it). One whose
// record cannot be written stays undecided: recovery's presumed abort tries again after the
// grace period, recording it first as well.
func (c *Coordinator) abortUndecided(sts []*txState, now time.Time) {
	var wg sync.WaitGroup
	for _, st := range sts {
		prev := *st
		st.status, st.decided = StatusRollingBack, now
		st.code, st.message = "coordinator_restarted", "the coordinator stopped before deciding; rolled back (presumed abort)"
		rec := st.snapshot(recRollback)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.dlog.appendSync(context.Background(), rec); err != nil {
				c.log.Warn("decision log: the rollback of a transaction left undecided could not be recorded; recovery presumes abort after the grace period", "gtrid", st.gtrid, "err", err)
				c.mu.Lock()
				st.status, st.decided, st.code, st.message = prev.status, prev.decided, prev.code, prev.message
				c.mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// snapshot is the decision-log record of st. The caller holds c.mu.
func (st *txState) snapshot(kind recKind) record {
	r := record{
		Kind: kind, Status: st.status, Gtrid: st.gtrid, ClientID: st.clientID, Digest: st.digest,
		Created: st.created, Decided: st.decided, Finished: st.finished, Deadline: st.deadline,
		Code: st.code, Message: st.message, By: st.by,
	}
	for _, b := range st.branches {
		sent := b.commitSent
		if kind == recCommit {
			// Once the decision is durable, commits may be sent to every branch: after a
			// restart a branch gone from its resource counts as committed.
			sent = true
		}
		r.Branches = append(r.Branches, recBranch{Resource: b.resource, State: b.state, CommitSent: sent})
	}
	return r
}

// appendLog writes st's snapshot; with wait it returns once the record is fsync'd. The
// caller holds c.mu only when !wait.
func (c *Coordinator) appendLog(st *txState, kind recKind, wait bool) error {
	rec := st.snapshot(kind)
	st.logged = true
	if !wait {
		if err := c.dlog.append(rec); err != nil {
			c.log.Error("decision log append", "gtrid", st.gtrid, "err", err)
			return err
		}
		return nil
	}
	return c.dlog.appendSync(context.Background(), rec)
}

// Close rolls back the transactions still active, waits for the running ones to settle,
// stops recovery and closes the decision log and the resources it opened.
func (c *Coordinator) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	var live []*txState
	for _, st := range c.txs {
		if st.live {
			live = append(live, st)
		}
	}
	c.mu.Unlock()
	for _, st := range live {
		<-st.settled
	}
	close(c.stop)
	c.wg.Wait()
	var errs []error
	if c.dlog != nil {
		errs = append(errs, c.dlog.close())
	}
	if c.leases != nil {
		c.leases.release()
	}
	for _, name := range c.order {
		errs = append(errs, c.rms[name].close())
	}
	if c.lock != nil {
		errs = append(errs, c.lock.Close())
	}
	return errors.Join(errs...)
}

// NodeID is the node id in this coordinator's gtrids.
func (c *Coordinator) NodeID() string { return c.node }

// Resources lists the configured resource names, sorted.
func (c *Coordinator) Resources() []string { return append([]string(nil), c.order...) }

// Driver returns the driver of a resource ("mysql", "postgres", "broker"), for callers that
// must write placeholders in its dialect (? or $1).
func (c *Coordinator) Driver(resource string) (string, error) {
	r, ok := c.rms[resource]
	if !ok {
		return "", fmt.Errorf("%w: %q", ErrUnknownResource, resource)
	}
	return r.Driver(), nil
}

// Ping checks that the decision log has not failed and that every resource answers (for
// /readyz). A table log whose last write the database refused (and which retries the next
// one) does not fail Ping: with no traffic it would never recover; a resource's own check
// shows an unreachable database.
func (c *Coordinator) Ping(ctx context.Context) error {
	if err := c.dlog.failedErr(); err != nil {
		return fmt.Errorf("%w: %v", ErrDecisionLogFailed, err)
	}
	for _, name := range c.order {
		if _, err := c.rms[name].recover(ctx); err != nil {
			return err
		}
	}
	return nil
}

// BranchInfo describes one branch.
type BranchInfo struct {
	Resource string
	Xid      Xid
	State    BranchState
}

// CodeDecisionLogFailed is the code of a transaction the decision log failed: rolled back when
// the log certainly did not write its commit decision, in_doubt when whether it did is unknown.
const CodeDecisionLogFailed = "decision_log_failed"

// DecisionUnknown reports a transaction in doubt because whether its commit decision is durable
// is unknown (its write failed midway, or a cluster leader lost its leadership after proposing
// it), not because a branch finished against the decision: recovery settles it (at the
// restart, on the new leader, or once the decision table heals) without an operator.
func (in TxInfo) DecisionUnknown() bool {
	return in.Status == StatusInDoubt && in.Code == CodeDecisionLogFailed
}

// TxInfo describes a global transaction: Get, List and the outcome of Commit and Rollback.
type TxInfo struct {
	ID       string // the client id, or the gtrid when none was given
	Gtrid    string
	Status   Status
	Branches []BranchInfo
	Created  time.Time
	Decided  time.Time // zero until decided
	Finished time.Time // zero until final
	Deadline time.Time
	// Code and Message say why a transaction rolled back or is in doubt ("step_failed",
	// "timed_out", "prepare_failed", "heuristic_hazard", ...), or how it was resolved.
	Code, Message string
	// ResolvedBy is who resolved an in_doubt transaction.
	ResolvedBy string
	// Offsets are where the broker branch's messages were stored (once committed, in this run).
	Offsets []broker.TopicPosition
}

func (st *txState) info() TxInfo {
	in := TxInfo{ID: st.id, Gtrid: st.gtrid, Status: st.status, Created: st.created, Decided: st.decided,
		Finished: st.finished, Deadline: st.deadline, Code: st.code, Message: st.message, ResolvedBy: st.by,
		Offsets: append([]broker.TopicPosition(nil), st.offsets...)}
	for _, b := range st.branches {
		in.Branches = append(in.Branches, BranchInfo{Resource: b.resource, Xid: makeXid(st.gtrid, b.resource), State: b.state})
	}
	return in
}

// Get returns a transaction by its id (client id or gtrid).
func (c *Coordinator) Get(id string) (TxInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.byID[id]
	if !ok {
		st, ok = c.txs[id]
	}
	if !ok {
		return TxInfo{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return st.info(), nil
}

// Decision is an operator's decision on an in_doubt transaction.
type Decision string

// Decisions for Resolve.
const (
	DecideCommit   Decision = "commit"
	DecideRollback Decision = "rollback"
)

// Resolve records an operator's decision on an in_doubt transaction (durably, with who and
// when) and has recovery apply it to the branches still prepared. Branches that are gone
// count as done: the operator answers for them.
func (c *Coordinator) Resolve(ctx context.Context, id string, d Decision, by string) (TxInfo, error) {
	if d != DecideCommit && d != DecideRollback {
		return TxInfo{}, fmt.Errorf("decision %q: want commit or rollback", d)
	}
	if by == "" {
		by = "unknown"
	}
	c.mu.Lock()
	st, ok := c.byID[id]
	if !ok {
		st, ok = c.txs[id]
	}
	if !ok {
		c.mu.Unlock()
		return TxInfo{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if st.status != StatusInDoubt {
		c.mu.Unlock()
		return TxInfo{}, fmt.Errorf("%w: %s is %s", ErrNotInDoubt, id, st.status)
	}
	if st.resolving {
		c.mu.Unlock()
		return TxInfo{}, fmt.Errorf("%w: %s is being resolved", ErrNotInDoubt, id)
	}
	// The decision takes effect once its record is durable: until then the transaction stays
	// in_doubt (recovery leaves it alone), and stays so if the append fails.
	st.resolving = true
	rec := resolveRecord(st, d, by, c.opts.Now())
	c.mu.Unlock()
	if err := c.dlog.appendSync(ctx, rec); err != nil {
		c.mu.Lock()
		st.resolving = false
		c.mu.Unlock()
		return TxInfo{}, fmt.Errorf("record resolve of %s (not applied; still in_doubt): %w", id, err)
	}
	c.mu.Lock()
	st.resolving = false
	st.status, st.by, st.decided, st.code, st.message = rec.Status, rec.By, rec.Decided, rec.Code, rec.Message
	for _, b := range st.branches {
		b.commitSent = true
	}
	st.nextTry, st.tries = time.Time{}, 0
	st.logged = true
	c.mu.Unlock()
	c.log.Warn("in-doubt global transaction resolved by an operator", "id", id, "gtrid", st.gtrid, "decision", string(d), "by", by)
	c.kickRecovery()
	return c.Get(id)
}

// Stats are the coordinator's counts.
type Stats struct {
	Active  int // live in this process
	Pending int // decided, waiting for recovery to finish phase 2
	InDoubt int
}

// Stats counts the transactions in the table.
func (c *Coordinator) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	var s Stats
	for _, st := range c.txs {
		switch {
		case st.live:
			s.Active++
		case st.status == StatusInDoubt:
			s.InDoubt++
		case !st.status.Final():
			s.Pending++
		}
	}
	return s
}
