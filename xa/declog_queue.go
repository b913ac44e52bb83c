package xa

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
)

// errNotWritten marks an append error after which the record is certainly not in the log: the
// log refused it (failed earlier, or closed), or the database rolled the write back. A commit
// decision that was not written is a rollback; any other append error leaves the outcome
// unknown until a restart reads the log back.
var errNotWritten = errors.New("nothing was written")

// notWritten wraps err as an error of a write that certainly wrote nothing.
func notWritten(err error) error { return fmt.Errorf("%w: %w", errNotWritten, err) }

// logQueue is what both decision logs (the file, declog.go; the table, declog_sql.go) share
// on the submitting side: records go through reqs to one writer goroutine, which answers a
// synchronous one once the write that holds it is durable. After a failed write the log
// refuses every later record: what the write left behind is unknown until a restart reads it
// back, or, for the table, until the writer has read it back (heals, declog_sql_heal.go).
type logQueue struct {
	reqs chan *logReq
	stop chan struct{} // closed by stopWriter
	done chan struct{} // closed by the writer when it returns

	// mu is held shared while a submitter queues and exclusively to set closed, so nothing is
	// queued after the writer's last drain. The writer never takes it (a submitter may hold it
	// while it waits for room in reqs).
	mu     sync.RWMutex
	closed bool

	failMu sync.Mutex
	failed error
	heals  bool // the log un-fails itself (the table)
	log    *slog.Logger
	where  []any // log attributes naming the log
}

func newLogQueue(log *slog.Logger, where ...any) logQueue {
	return logQueue{
		reqs: make(chan *logReq, 1024), stop: make(chan struct{}), done: make(chan struct{}),
		log: log, where: where,
	}
}

func (q *logQueue) submit(req *logReq) error {
	if err := q.failedErr(); err != nil {
		return notWritten(err)
	}
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		return notWritten(ErrClosed)
	}
	q.reqs <- req
	return nil
}

// append queues r without waiting for it to be durable.
func (q *logQueue) append(r record) error {
	return q.submit(&logReq{rec: r})
}

// appendSync appends r and returns once the write that holds it is durable.
func (q *logQueue) appendSync(ctx context.Context, r record) error {
	req := &logReq{rec: r, sync: true, done: make(chan error, 1)}
	if err := q.submit(req); err != nil {
		return err
	}
	// Not abandoned on ctx: the caller must know whether its decision is durable.
	return <-req.done
}

// stopWriter refuses new records, lets the writer write what was queued and waits for it to
// return. It reports false if the log was already stopped.
func (q *logQueue) stopWriter() bool {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return false
	}
	q.closed = true
	q.mu.Unlock()
	close(q.stop)
	<-q.done
	return true
}

// drain appends to batch what is queued now, without waiting, up to max requests.
func (q *logQueue) drain(batch []*logReq, max int) []*logReq {
	for len(batch) < max {
		select {
		case req := <-q.reqs:
			batch = append(batch, req)
		default:
			return batch
		}
	}
	return batch
}

// answer tells the waiters of batch the outcome of its write.
func answer(batch []*logReq, err error) {
	for _, r := range batch {
		if r.done != nil {
			r.done <- err
		}
	}
}

// failedErr is the error that failed the log, or nil.
func (q *logQueue) failedErr() error {
	q.failMu.Lock()
	defer q.failMu.Unlock()
	return q.failed
}

// fail makes the log refuse every later record.
func (q *logQueue) fail(err error) {
	q.failMu.Lock()
	defer q.failMu.Unlock()
	if q.failed == nil {
		q.failed = err
		if q.heals {
			q.log.Error("decision log failed: a write's outcome is unknown; no new global transaction can decide until the table is read back", append(q.where, "err", err)...)
		} else {
			q.log.Error("decision log failed; no new global transaction can decide until restart", append(q.where, "err", err)...)
		}
	}
}

// unfail makes the log take records again, once what failed it is settled (the table's
// healing).
func (q *logQueue) unfail() {
	q.failMu.Lock()
	defer q.failMu.Unlock()
	q.failed = nil
}
