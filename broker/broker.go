package broker

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imagomq/imago/broker/internal/dedupe"
	"github.com/imagomq/imago/internal/fsutil"
)

// slowSync is the fsync duration above which a warning is logged.
const slowSync = 500 * time.Millisecond

// Broker is an open data directory: topics, their partitions and the shared commit log.
// All methods are safe for concurrent use.
type Broker struct {
	opts Options
	lock *os.File // flock on the data directory

	log    *commitLog
	dedupe *dedupe.Store
	opened reading // both clocks at Open (clock.go)
	found  int64   // the newest timestamp (unix ms) of the data Open read (clock.go); set by Open
	// held: the idempotency keys of the batches Open's replay read, waiting for the store,
	// which opens after recovery (addHeldKeys, recovery.go).
	held []heldKey

	topicMu     sync.Mutex // serialises topic creation; guards metas, nextTopicID
	metas       []topicMeta
	nextTopicID uint32
	table       atomic.Pointer[topicTable]

	// Produce queue, drained by the flusher.
	qmu     sync.Mutex
	queue   []*produceReq
	qbytes  int64
	closing bool
	qsig    chan struct{}

	txMu sync.Mutex // guards txs and every *tx in it; taken after stateMu, never before
	txs  map[string]*tx

	decMu     sync.Mutex // guards decisions; taken after stateMu and txMu, never before
	decisions map[string]heldDecision
	// decPending holds the keys of decisions with more than one version (decisions.go).
	decPending map[string]struct{}

	idemMu   sync.Mutex
	inflight map[dedupe.Key]*produceReq

	ckptMu sync.Mutex // one checkpoint at a time (checkpoint.go); taken before stateMu

	// stateMu orders the flusher's apply phase (index writes, offsets, dedupe adds) against
	// checkpoints and retention, so each sees a consistent cut of the log.
	stateMu     sync.Mutex
	appliedPos  int64                          // log position covered by the index state
	ckptStale   bool                           // retention changed start offsets: checkpoint even if appliedPos did not move
	retired     []*indexSegment                // index segments retention let go whose files wait for a checkpoint (stateMu)
	lastCkptPos atomic.Int64                   // position of the last checkpoint written; stored under ckptMu
	ckptKeepPos atomic.Int64                   // lowest log position the last checkpoint's start offsets point at (retention.go); stored under ckptMu
	ckptPrepPos atomic.Int64                   // lowest prepare position the last checkpoint lists (math.MaxInt64: none); stored under ckptMu
	lastCkpt    []byte                         // the last checkpoint written, as on disk; guarded by ckptMu
	ckptBroken  error                          // an index fsync failed: no later checkpoint may be written; guarded by ckptMu
	snap        atomic.Pointer[linkedSnapshot] // the snapshot linked for members that copy it (snapshot.go); stored under ckptMu
	failed      error                          // set when the log cannot be written; the broker then refuses produces
	failedc     chan struct{}                  // closed when failed is set (setFailedLocked)
	// syncedPos and syncedDedupe are appliedPos and the idempotency store's end as of the last
	// log fsync: the most a checkpoint may claim (fsync interval or never).
	syncedPos    int64
	syncedDedupe dedupe.Checkpoint
	fmark        *failMark // failmark.go
	gapSeen      bool      // recovery met a dropped batch (logrepair.go): offsets may jump
	lastGapPos   int64     // the log position of the last dropped batch recovery met
	failUnknown  error     // flusher only: set when the fail mark could not be recorded
	failMarked   bool      // flusher only: fail ran (the mark is recorded, or failUnknown set)
	// logFailed is set when a write or fsync of the log failed (fail): the restart cuts the
	// log at its durable end.
	logFailed atomic.Bool
	// unsyncedKeys (fsync interval or never; guarded by stateMu) holds the batch position of
	// each keyed request acknowledged, once written, since the last fsync that covered
	// everything applied. Once the log has failed, a retry of one past the durable end, which
	// the restart cuts, is answered with the failure, not "duplicate" (cutAtRestart).
	unsyncedKeys map[dedupe.Key]int64

	// Cluster mode (replicate.go, raftlog.go).
	rlog            *RaftLog
	repl            replState
	topicProposeMu  sync.Mutex // one topic proposal at a time; taken before topicMu
	raftApplied     uint64     // guarded by stateMu: the last raft index applied
	raftAppliedTerm uint64
	syncedRaft      uint64 // guarded by stateMu: the raft index of syncedPos

	flusherDone chan struct{}
	ckptSig     chan struct{}
	stop        chan struct{}
	wg          sync.WaitGroup
	closed      atomic.Bool
	closeOnce   sync.Once
	closeErr    error

	stats struct {
		messagesIn, bytesIn, messagesOut, bytesOut atomic.Int64
		recovered, truncated                       int64
		dedupeDamaged                              int // idempotency files set aside at Open (rebuildKeys)
		openDuration                               time.Duration
	}
}

// Open opens (creating if needed) the data directory in opts.Dir, recovers it after a crash
// (truncating a torn tail, replaying the log since the last checkpoint) and starts the flusher.
func Open(opts Options) (*Broker, error) {
	if opts.Dir == "" {
		return nil, errors.New("open broker: no data directory")
	}
	opts = opts.withDefaults()
	began := time.Now()
	// A new data directory's name (and any parent made for it) is fsync'd into its parent:
	// a power loss must not take it with its first acknowledged writes.
	if err := fsutil.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("open broker: %w", err)
	}
	b := &Broker{
		opts:        opts,
		qsig:        make(chan struct{}, 1),
		inflight:    make(map[dedupe.Key]*produceReq),
		txs:         make(map[string]*tx),
		decisions:   make(map[string]heldDecision),
		decPending:  make(map[string]struct{}),
		flusherDone: make(chan struct{}),
		ckptSig:     make(chan struct{}, 1),
		failedc:     make(chan struct{}),
		stop:        make(chan struct{}),
		nextTopicID: 1,
	}
	b.repl.inflight = make(map[*byte]*produceReq)
	if opts.Replicated && opts.Fsync.Mode != FsyncAlways {
		return nil, fmt.Errorf("open broker: fsync %s is refused in cluster mode: an acknowledgement needs a quorum's fsync", opts.Fsync)
	}
	b.lastCkptPos.Store(-1)
	b.table.Store(&topicTable{byName: map[string]*topic{}, byID: map[uint32]*topic{}})
	if err := b.lockDir(); err != nil {
		return nil, err
	}
	if err := b.open(); err != nil {
		b.closeFiles()
		return nil, err
	}
	b.stats.openDuration = time.Since(began)
	opts.Logger.Info("broker open", "dir", opts.Dir, "fsync", opts.Fsync.String(),
		"topics", len(b.metas), "log_bytes", b.log.end.Load()-b.log.start(),
		"replayed_bytes", b.stats.recovered, "truncated_bytes", b.stats.truncated,
		"duration", b.stats.openDuration)
	if opts.Replicated {
		go b.runProposer()
	} else {
		go b.runFlusher()
	}
	b.wg.Add(3)
	go b.runCheckpointer()
	go b.runRetention()
	go b.runTxSweeper()
	return b, nil
}

func (b *Broker) lockDir() error {
	f, err := fsutil.LockFile(filepath.Join(b.opts.Dir, "LOCK"))
	if errors.Is(err, fsutil.ErrLocked) {
		return fmt.Errorf("open broker: data directory %s is in use by another process: %w", b.opts.Dir, err)
	}
	if err != nil {
		return fmt.Errorf("open broker: lock file: %w", err)
	}
	b.lock = f
	return nil
}

func (b *Broker) open() error {
	b.opened = b.clock() // the ages of what Open finds count from here (clock.go)
	b.found = math.MinInt64
	// Temporary files of atomic replacements cut short by a crash (".tmp" is the fixed name
	// earlier versions used).
	for _, name := range []string{topicsFileName, checkpointFileName} {
		if err := fsutil.RemoveTemps(b.opts.Dir, name); err != nil {
			return fmt.Errorf("open broker: %w", err)
		}
		if err := os.Remove(filepath.Join(b.opts.Dir, name+".tmp")); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("open broker: %w", err)
		}
	}
	// Links a snapshot made before the restart kept (snapshot.go): whoever was copying it
	// asks again.
	if err := os.RemoveAll(filepath.Join(b.opts.Dir, snapshotsDirName)); err != nil {
		return fmt.Errorf("open broker: %w", err)
	}
	metas, err := loadTopics(b.opts.Dir)
	if err != nil {
		return err
	}
	b.metas = metas
	for _, m := range metas {
		if m.ID >= b.nextTopicID {
			b.nextTopicID = m.ID + 1
		}
		b.addTopic(b.newTopic(m))
	}
	if b.log, err = openCommitLog(filepath.Join(b.opts.Dir, "log"), b.opts.SegmentBytes); err != nil {
		return err
	}
	if err := b.applyFailMark(); err != nil {
		return err
	}
	cp, err := loadCheckpoint(b.opts.Dir)
	if err != nil {
		// Not "no checkpoint": without it the idempotency store would be opened empty (its
		// durable point is recorded here), forgetting keys whose batches retention deleted.
		return fmt.Errorf("open broker: %s in %s cannot be used (%w); refusing to start. "+
			"Restore it, or move it aside to rebuild every index from the log, accepting that "+
			"Idempotency-Keys whose batches retention already deleted are forgotten",
			checkpointFileName, b.opts.Dir, err)
	}
	var dcp dedupe.Checkpoint
	if cp != nil {
		dcp = cp.Dedupe
	}
	// The idempotency store opens once recovery has read the log: what it finds is aged
	// against the newest timestamp of the broker's data (b.found, clock.go), and the keys of
	// the log after its durable point are added to it then.
	keysFrom := int64(-1)
	if b.opts.Replicated {
		err = b.recoverReplicated(cp) // raft re-delivers the entries after the checkpoint
	} else {
		keysFrom, err = b.recover(cp)
	}
	if err != nil {
		return err
	}
	b.noteIndexTimes() // clock.go
	// Damaged idempotency files are copied here before they are cut (dedupe.Open), and their
	// keys rebuilt from the log (rebuildKeys).
	repairDir := filepath.Join(b.opts.Dir, "repair", strconv.FormatInt(b.opts.Now().UnixMilli(), 10), "dedupe")
	b.dedupe, err = dedupe.Open(dedupe.Options{Dir: filepath.Join(b.opts.Dir, "dedupe"), Window: b.opts.IdempotencyWindow, Now: b.opts.Now, Elapsed: b.opts.Elapsed, Newest: max(b.found, 0), RepairDir: repairDir}, dcp)
	if err != nil {
		return fmt.Errorf("open idempotency store: %w", err)
	}
	damaged := b.dedupe.Damaged()
	if len(damaged) > 0 {
		if err := b.rebuildKeys(damaged, repairDir); err != nil { // recovery.go
			return err
		}
	} else if keysFrom >= 0 {
		if err := b.addHeldKeys(keysFrom); err != nil { // recovery.go
			return err
		}
	}
	b.held = nil
	b.markSyncedLocked()
	b.log.onSync = func(d time.Duration) {
		if d > slowSync {
			b.opts.Logger.Warn("slow fsync", "duration", d)
		}
	}
	if err := b.checkpoint(); err != nil {
		return err
	}
	if len(damaged) > 0 {
		// The rebuilt keys are durable in the checkpoint just written.
		if err := b.dedupe.RebuildDone(); err != nil {
			return fmt.Errorf("open idempotency store: %w", err)
		}
	}
	return nil
}

// Close stops accepting produces, flushes and syncs what is pending, writes a checkpoint and
// closes every file. It is safe to call more than once.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.stopWorkers()
		if err := b.checkpoint(); err != nil {
			b.closeErr = err
		}
		if err := b.closeFiles(); err != nil && b.closeErr == nil {
			b.closeErr = err
		}
		b.opts.Logger.Info("broker closed", "dir", b.opts.Dir)
	})
	return b.closeErr
}

func (b *Broker) closeFiles() error {
	var first error
	keep := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	for _, t := range b.topicsByName() {
		for _, p := range t.parts {
			keep(p.close())
		}
	}
	b.stateMu.Lock()
	for _, s := range b.retired {
		keep(s.close()) // the files stay: the next start opens them below the start and retention deletes them
	}
	b.retired = nil
	b.stateMu.Unlock()
	if b.dedupe != nil {
		keep(b.dedupe.Close())
	}
	if b.log != nil {
		keep(b.log.close())
	}
	if b.fmark != nil {
		keep(b.fmark.close())
	}
	if b.lock != nil {
		keep(b.lock.Close())
	}
	return first
}

// Stats returns broker-wide counters.
func (b *Broker) Stats() Stats {
	m := b.topicsByName()
	s := Stats{Topics: len(m)}
	for _, t := range m {
		s.Partitions += len(t.parts)
	}
	s.MessagesIn = b.stats.messagesIn.Load()
	s.BytesIn = b.stats.bytesIn.Load()
	s.MessagesOut = b.stats.messagesOut.Load()
	s.BytesOut = b.stats.bytesOut.Load()
	s.Fsyncs = b.log.syncs.Load()
	s.LogBytes = b.log.end.Load() - b.log.start()
	b.qmu.Lock()
	s.PendingBytes = b.qbytes
	b.qmu.Unlock()
	s.RecoveredBytes = b.stats.recovered
	s.TruncatedBytes = b.stats.truncated
	s.OpenDuration = b.stats.openDuration
	s.IdempotencyKeys = b.dedupe.Len()
	s.IdempotencyDamaged = b.stats.dedupeDamaged
	return s
}

// abandon stops the broker the way a crash would, as far as the disk is concerned: pending
// requests are flushed as usual, but no final checkpoint is written. Tests use it.
func (b *Broker) abandon() {
	b.closeOnce.Do(func() {
		b.stopWorkers()
		b.closeFiles()
	})
}

// stopWorkers refuses new produces, lets the flusher write what is queued, and stops the
// background goroutines.
func (b *Broker) stopWorkers() {
	b.closed.Store(true)
	b.qmu.Lock()
	b.closing = true
	b.qmu.Unlock()
	b.signal()
	<-b.flusherDone
	close(b.stop)
	b.wg.Wait()
}

// idempotencyFailedLocked stops writes when the idempotency store has failed (a write or fsync
// error is sticky there: nothing more would be remembered). Keyed produces acknowledged from
// then on would not be recognised when retried, so the broker stops as after a log failure:
// produces are refused and Err reports it until a restart, whose replay of the log since the
// last checkpoint re-adds every key the failed store lost. The batch that was being applied is
// durable and still acknowledged. The caller holds stateMu.
func (b *Broker) idempotencyFailedLocked() {
	derr := b.dedupe.Err()
	if derr == nil || b.failed != nil {
		return // not a store failure (a refused entry), or already stopped
	}
	b.setFailedLocked(fmt.Errorf("%w: %w: idempotency store failed, restart required: %v", ErrClosed, ErrStorage, derr))
	b.opts.Logger.Error("idempotency store failed; refusing writes until restart", "err", derr)
}

// setFailedLocked puts the broker in the failed state (the first error stays) and closes
// Failed's channel. The caller holds stateMu.
func (b *Broker) setFailedLocked(err error) {
	if b.failed != nil {
		return
	}
	b.failed = err
	close(b.failedc)
}

// Failed is closed when the broker starts refusing writes until a restart (Err says why). A
// cluster member stops its raft node then: a leader that cannot write must not keep the
// leadership (its heartbeats need no disk), and a restart recovers the node from its log.
func (b *Broker) Failed() <-chan struct{} { return b.failedc }

// Err reports why the broker refuses writes, or nil: after a failed write or fsync of the
// commit log (or of the idempotency store) the kernel's view of the file is unknown, so it
// stops appending until a restart recovers the log from disk. Health checks report it (the gateway's /readyz answers 503).
func (b *Broker) Err() error {
	b.stateMu.Lock()
	defer b.stateMu.Unlock()
	return b.failed
}
