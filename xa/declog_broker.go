package xa

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/imagomq/imago/broker"
)

// The decision log in the broker's commit log (Options.DecisionBroker; coordinator.decision_log:
// commitlog). Each record is a broker decision record keyed by its gtrid whose value is the
// record's frame (the same bytes as the file log's); the broker keeps the last one per gtrid,
// rebuilds them at recovery like its indexes, and keeps them through retention. One writer
// goroutine group-commits like the other logs: every batch it takes becomes one decision batch,
// which the broker's flusher writes and fsyncs together with whatever else it writes in that
// round (produces, XA prepares and commits), so a decision costs no fsync of its own when the
// broker is busy.
//
// What is kept: a finished transaction without a client id is dropped from the held set by its
// "done" record (nothing asks for it after a restart, and the broker's checkpoint carries the
// held set); one with a client id is kept for Options.Retention (repeats of its id return its
// outcome) and then dropped by a sweep, once that retention has passed by the wall clock and
// by the monotonic clock (finishedAges, the file log's rule: a wall clock stepped forward drops
// nothing the coordinator still remembers). Unfinished ones are kept until they finish. The
// broker itself never drops a decision by age: it keeps the last value of every key until the
// coordinator drops it (broker/decisions.go).

// DecisionBroker is what the commit-log decision log needs of the broker; *broker.Broker
// satisfies it.
type DecisionBroker interface {
	AppendDecisions(ctx context.Context, recs []broker.DecisionRecord) error
	Decisions() []broker.DecisionRecord
}

var _ DecisionBroker = (*broker.Broker)(nil)

type brokerDecisionLog struct {
	b      DecisionBroker
	node   string
	onSync func(time.Duration)
	log    *slog.Logger
	// entries is the last record per gtrid the broker holds or is writing (set when a record
	// is taken, so that a decided commit, which does not go through the writer, and the
	// writer's records are checked against each other: declog_first.go). Guarded by mu, as is
	// ages (what the sweep keeps).
	mu      sync.Mutex
	entries map[string]record
	ages    *finishedAges

	logQueue
}

// brokerSweepEvery is how often finished transactions past retention are dropped.
const brokerSweepEvery = time.Minute

// openBrokerDecisionLog reads this node's held decisions and starts the writer. A held value
// that does not decode is corruption (the broker verified its CRC): the open fails naming it.
// The sweep drops a finished transaction once retention has passed by now and by elapsed (nil:
// the monotonic reading of now).
func openBrokerDecisionLog(b DecisionBroker, node string, retention time.Duration, now func() time.Time, elapsed func() time.Duration,
	delay time.Duration, onSync func(time.Duration), log *slog.Logger) (*brokerDecisionLog, []record, error) {
	l := &brokerDecisionLog{b: b, node: node, onSync: onSync, log: log, ages: newFinishedAges(retention, now, elapsed),
		entries: map[string]record{}, logQueue: newLogQueue(log, "log", "commitlog")}
	var out []record
	for _, d := range b.Decisions() {
		if !strings.HasPrefix(d.Key, node) {
			continue // another node's (a shared data directory is refused, but be exact)
		}
		r, n, err := decodeFrame(d.Value)
		if err != nil || n != len(d.Value) || r.Gtrid != d.Key {
			return nil, nil, fmt.Errorf("decision log in the commit log: the record of %s does not decode (%v): restore the data directory, or repair it knowing what it decided", d.Key, err)
		}
		l.entries[r.Gtrid] = r
		out = append(out, r)
	}
	l.ages.loaded(l.entries)
	go l.run(delay)
	return l, out, nil
}

func (l *brokerDecisionLog) close() error {
	l.stopWriter()
	return nil
}

// lazyDelay is how long the writer keeps back records nobody waits for (the "preparing" and
// "done" records) before writing them, and lazyMax how many it keeps back at most. A decided
// commit does not go through the writer, so under load the writer would otherwise cost the
// broker a round and an fsync of its own for every such record; kept back, they go in one
// round every lazyDelay. Neither kind is needed for correctness: a crash that loses a
// "preparing" record leaves its branches to presumed abort after Options.Grace instead of at
// once, and one that loses a "done" record leaves recovery to find the transaction's branches
// gone and record it again.
// (lazyDelay is the default of Options.LazyRecordDelay, and a variable for this package's tests,
// which set it before opening a log; the log reads it once, when it opens.)
var lazyDelay = 20 * time.Millisecond

const lazyMax = 4096

// run is the writer goroutine. Records are written in the order they were queued: held keeps
// back the fire-and-forget ones until a record somebody waits for comes (they are written
// with it, before it), lazyDelay passes, lazyMax are held, or the log stops.
func (l *brokerDecisionLog) run(delay time.Duration) {
	defer close(l.done)
	sweep := time.NewTicker(brokerSweepEvery)
	defer sweep.Stop()
	lazy := time.NewTimer(delay)
	lazy.Stop()
	armed := false
	var batch, held []*logReq
	for {
		batch = batch[:0]
		select {
		case req := <-l.reqs:
			batch = append(batch, req)
		case <-lazy.C:
			armed = false
			l.write(held)
			held = held[:0]
			continue
		case <-sweep.C:
			l.sweep()
			continue
		case <-l.stop:
			held, _ = l.take(held, l.drain(batch, int(^uint(0)>>1)))
			l.write(held)
			return
		}
		var mustWrite bool
		held, mustWrite = l.take(held, l.drain(batch, 4096))
		if mustWrite || len(held) >= lazyMax {
			if armed {
				lazy.Stop()
				armed = false
			}
			l.write(held)
			held = held[:0]
		} else if len(held) > 0 && !armed {
			lazy.Reset(delay)
			armed = true
		}
	}
}

// take adds batch to held in order, settling barriers on the way, and reports whether one of
// its records is waited for (held must be written now).
func (l *brokerDecisionLog) take(held, batch []*logReq) ([]*logReq, bool) {
	wait := false
	for _, req := range batch {
		switch {
		case req.barrier:
			held = l.settleBarrier(req, held)
		default:
			held = append(held, req)
			wait = wait || req.done != nil
		}
	}
	return held, wait
}

// settleBarrier answers a decided commit's barrier (commitDecided) once no record of its
// transaction queued before it can land after the commit. held is what the writer keeps back;
// the transaction's "preparing" records among them are dropped, as the commit record
// supersedes them; any other record of it is written now, with everything held before it.
// It returns what stays held.
func (l *brokerDecisionLog) settleBarrier(bar *logReq, held []*logReq) []*logReq {
	kept := held[:0]
	write := false
	for _, req := range held {
		switch {
		case req.rec.Gtrid != bar.rec.Gtrid:
			kept = append(kept, req)
		case req.rec.Kind == recPreparing && req.done == nil:
			// superseded by the commit record written next: dropped
		default:
			kept = append(kept, req)
			write = true
		}
	}
	held = kept
	if write {
		l.write(held)
		held = held[:0]
	}
	bar.done <- l.failedErr()
	return held
}

// dropped reports whether r's record drops its transaction from the held set.
func dropped(r *record) bool { return r.Status.Final() && r.ClientID == "" }

// write appends the batch as one decision batch and answers its waiters. The broker refuses a
// batch it has not stored (it failed or is closing, and a restart cuts what a failed round
// wrote): those records are certainly not in the log, and the log fails for good since the
// broker takes nothing more. An outcome the broker cannot tell fails the log too.
func (l *brokerDecisionLog) write(batch []*logReq) {
	if len(batch) == 0 {
		return
	}
	if err := l.failedErr(); err != nil {
		answer(batch, notWritten(err))
		return
	}
	l.mu.Lock()
	batch = firstDecisionWins(batch, l.entries, l.log, l.where)
	for _, req := range batch {
		if dropped(&req.rec) {
			delete(l.entries, req.rec.Gtrid)
			l.ages.forget(req.rec.Gtrid)
		} else {
			l.entries[req.rec.Gtrid] = req.rec
			l.ages.written(req.rec)
		}
	}
	l.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	recs := make([]broker.DecisionRecord, len(batch))
	for i, req := range batch {
		recs[i].Key = req.rec.Gtrid
		if !dropped(&req.rec) {
			recs[i].Value = appendRecord(nil, &req.rec)
		}
	}
	began := time.Now()
	err := l.b.AppendDecisions(context.Background(), recs)
	if l.onSync != nil {
		l.onSync(time.Since(began))
	}
	if err != nil {
		// The log fails for good: entries may now name records that are not in it, which
		// matters to nobody (every later record is refused).
		err = fmt.Errorf("write decisions to the commit log: %w", err)
		l.fail(err)
		if !errors.Is(err, broker.ErrOutcomeUnknown) {
			err = notWritten(err)
		}
		answer(batch, err)
		return
	}
	answer(batch, nil)
}

// decidedCommitter is the broker's decided commit (broker.XACommitDecided), which a
// BrokerResource may offer.
type decidedCommitter interface {
	XACommitDecided(ctx context.Context, xid broker.Xid, dec broker.DecisionRecord) ([]broker.TopicPosition, error)
}

// commitDecided makes the commit decision rec durable in the same batch that commits the
// broker branch xid (idle, never prepared): one write and one fsync for the branch's prepare,
// its commit and the decision. It keeps the first-decision rule like the writer. Errors: one
// wrapping errNotWritten when nothing was written (the broker refused the commit before writing
// it, or has failed: the log then fails too), any other when the outcome is unknown (the log
// fails).
func (l *brokerDecisionLog) commitDecided(ctx context.Context, dc decidedCommitter, xid Xid, rec record) ([]broker.TopicPosition, error) {
	if err := l.failedErr(); err != nil {
		return nil, notWritten(err)
	}
	// No record of the transaction queued before this one (its "preparing" record, queued
	// without waiting) may land after it: the decided commit does not go through the writer,
	// and a record of the transaction landing after it in the log would be the one the broker
	// holds, leaving a committed transaction undecided at the next start. The barrier goes
	// through the writer's queue; the writer drops the transaction's "preparing" records it
	// still holds (the commit record supersedes them) and writes any other first
	// (settleBarrier). One being written when the barrier comes is written before it.
	bar := &logReq{rec: record{Gtrid: rec.Gtrid}, barrier: true, done: make(chan error, 1)}
	if err := l.submit(bar); err != nil {
		return nil, err
	}
	if err := <-bar.done; err != nil {
		return nil, notWritten(err)
	}
	req := &logReq{rec: rec, done: make(chan error, 1)}
	l.mu.Lock()
	if len(firstDecisionWins([]*logReq{req}, l.entries, l.log, l.where)) == 0 {
		l.mu.Unlock()
		return nil, <-req.done
	}
	prev, had := l.entries[rec.Gtrid]
	l.entries[rec.Gtrid] = rec
	l.ages.written(rec)
	l.mu.Unlock()
	began := time.Now()
	pos, err := dc.XACommitDecided(ctx, xid, broker.DecisionRecord{Key: rec.Gtrid, Value: appendRecord(nil, &rec)})
	if l.onSync != nil {
		l.onSync(time.Since(began))
	}
	if err == nil {
		return pos, nil
	}
	var xe *broker.XAError
	refused := errors.As(err, &xe) && xe.Code != broker.XAERRMFail || errors.Is(err, broker.ErrBackpressure)
	if refused {
		// Refused before anything was written (the branch timed out, back-pressure): the log
		// stays usable and holds what it held.
		l.mu.Lock()
		if had {
			l.entries[rec.Gtrid] = prev
		} else {
			delete(l.entries, rec.Gtrid)
		}
		l.mu.Unlock()
		return nil, notWritten(fmt.Errorf("commit decision with the broker branch: %w", err))
	}
	err = fmt.Errorf("commit decision with the broker branch: %w", err)
	l.fail(err)
	if errors.Is(err, broker.ErrOutcomeUnknown) {
		return nil, err
	}
	return nil, notWritten(err)
}

// sweep drops the finished transactions past retention by both clocks (finishedAges).
func (l *brokerDecisionLog) sweep() {
	if l.failedErr() != nil {
		return
	}
	var recs []broker.DecisionRecord
	l.mu.Lock()
	now, el := l.ages.clocks()
	for g, r := range l.entries {
		if !l.ages.keep(r, now, el) {
			recs = append(recs, broker.DecisionRecord{Key: g})
		}
	}
	l.mu.Unlock()
	if len(recs) == 0 {
		return
	}
	// A final transaction gets no later record (its gtrid is never reused), so nothing
	// changes these entries while the drop is written.
	if err := l.b.AppendDecisions(context.Background(), recs); err != nil {
		l.log.Warn("decision log: dropping finished transactions past retention failed", "err", err)
		return
	}
	l.mu.Lock()
	for _, r := range recs {
		delete(l.entries, r.Key)
		l.ages.forget(r.Key)
	}
	l.mu.Unlock()
}
