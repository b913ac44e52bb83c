package xa

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/imagomq/imago/internal/fsutil"
)

// The decision log: an append-only file in the coordinator's directory, written by one goroutine
// that group-commits (many transactions' records share one write and one fsync). A record that
// must be durable before the caller goes on (the commit decision, an operator's resolve) waits
// for the fsync that covers it; the others ride along with the next one. The file is compacted
// (rewritten with the last record of each transaction still worth keeping) when it grows.

const logFileName = "decisions.log"

// decisionStore is a decision log as the coordinator uses it: the file in the coordinator's
// directory (decisionLog, the default) or a table in a database (sqlDecisionLog). Both keep the
// last record of each transaction, group-commit, and fail for good after a write whose outcome
// is unknown (only a restart, which reads the log back, can tell what it holds).
type decisionStore interface {
	// append queues r without waiting for it to be durable.
	append(r record) error
	// appendSync appends r and returns once it is durable (or the write failed).
	appendSync(ctx context.Context, r record) error
	// close writes what was queued and stops the writer.
	close() error
	// failedErr is the error that failed the log for good, or nil.
	failedErr() error
	// fail makes the log refuse every later record.
	fail(err error)
}

type logReq struct {
	rec  record
	sync bool
	done chan error // nil for fire-and-forget
	// barrier (commit-log decision log only): a decided commit's, rec holding only its gtrid;
	// answered once no record of that transaction queued before it can land after the commit
	// (declog_broker.go, commitDecided and settleBarrier).
	barrier bool
}

type decisionLog struct {
	path         string
	dir          string
	log          *slog.Logger
	ages         *finishedAges // what compaction keeps (writer goroutine only after open)
	compactBytes int64
	baseCompact  int64
	onSync       func(time.Duration)

	f       *os.File
	size    int64
	entries map[string]record // the last record per gtrid in the file (writer goroutine only)

	logQueue
}

// openDecisionLog opens (creating) the log, cuts a torn tail and returns the last record of
// every transaction in it. A bad frame followed by a valid one is corruption, not a torn tail
// (appends only ever tear the end): the open fails naming the file and the offset, and the file
// is left as it is. Compaction drops a finished transaction once retention has passed by now
// and by elapsed (finishedAges; nil elapsed: the monotonic reading of now).
func openDecisionLog(dir string, retention time.Duration, compactBytes int64, now func() time.Time, elapsed func() time.Duration,
	onSync func(time.Duration), log *slog.Logger) (*decisionLog, []record, error) {
	l := &decisionLog{
		path: filepath.Join(dir, logFileName), dir: dir, log: log, ages: newFinishedAges(retention, now, elapsed),
		compactBytes: compactBytes, baseCompact: compactBytes, onSync: onSync,
		entries:  map[string]record{},
		logQueue: newLogQueue(log, "path", filepath.Join(dir, logFileName)),
	}
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("open decision log: %w", err)
	}
	// The file may have just been created: its name must be durable before the first decision
	// is acknowledged into it, or a power loss takes the file with the decisions.
	if err := fsutil.SyncDir(dir); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("open decision log: %w", err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("read decision log: %w", err)
	}
	good, recs, cutErr := replay(data)
	if errors.Is(cutErr, errNewerRecord) {
		f.Close()
		return nil, nil, fmt.Errorf("decision log %s at offset %d: %w: it was written by a newer version of imago; "+
			"run that version (a downgrade cannot read its decisions, and cutting them would lose them)", l.path, good, cutErr)
	}
	if good < int64(len(data)) {
		if next := nextValidFrame(data, good); next >= 0 {
			f.Close()
			return nil, nil, fmt.Errorf("decision log %s is corrupt at offset %d (%v), and a valid record follows at offset %d: "+
				"that is not a torn tail, and cutting it would drop decisions; restore the file, or repair it knowing what it decided",
				l.path, good, cutErr, next)
		}
		log.Warn("decision log: cutting a torn or corrupt tail", "path", l.path, "offset", good, "cut_bytes", int64(len(data))-good, "err", cutErr)
		if err := f.Truncate(good); err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("cut decision log at %d: %w", good, err)
		}
	}
	// What was read may be only in the page cache: a write whose fsync never completed (the
	// process died in it) is read back all the same. The coordinator acts on what it reads (a
	// commit decision has recovery commit the branches; a client id is answered as a
	// duplicate), so it must be durable first: a power loss must not take a decision that
	// branches were committed on.
	if err := fsutil.Fsync(f); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("sync decision log %s: %w", l.path, err)
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, nil, err
	}
	l.f, l.size = f, good
	out := make([]record, 0, len(recs))
	for _, r := range recs {
		l.entries[r.Gtrid] = r
	}
	l.ages.loaded(l.entries)
	for _, r := range l.entries {
		out = append(out, r)
	}
	go l.run()
	return l, out, nil
}

// replay decodes frames until the end or the first bad one; good is the length of the
// valid prefix.
func replay(data []byte) (good int64, recs []record, err error) {
	for int(good) < len(data) {
		r, n, err := decodeFrame(data[good:])
		if err != nil {
			return good, recs, err
		}
		recs = append(recs, r)
		good += int64(n)
	}
	return good, recs, nil
}

// nextValidFrame returns the offset of the first valid frame after the bad one at bad, or -1
// when none follows (a torn tail).
func nextValidFrame(data []byte, bad int64) int64 {
	for off := bad + 1; off+frameHeader <= int64(len(data)); off++ {
		if _, _, err := decodeFrame(data[off:]); err == nil {
			return off
		}
	}
	return -1
}

func (l *decisionLog) close() error {
	if !l.stopWriter() {
		return nil
	}
	return l.f.Close()
}

// run is the writer goroutine.
func (l *decisionLog) run() {
	defer close(l.done)
	var buf []byte
	var batch []*logReq
	dirty := false
	for {
		batch = batch[:0]
		select {
		case req := <-l.reqs:
			batch = append(batch, req)
		case <-l.stop:
			// Drain what was queued before close, then sync.
			batch = l.drain(batch, int(^uint(0)>>1))
			if len(batch) > 0 || dirty {
				l.write(buf[:0], batch, true)
			}
			return
		}
		batch = l.drain(batch, 4096)
		wantSync := false
		for _, r := range batch {
			wantSync = wantSync || r.sync
		}
		buf = l.write(buf[:0], batch, wantSync)
		dirty = !wantSync
		if l.size > l.compactBytes {
			l.compact()
		}
	}
}

// write writes the batch (and fsyncs with sync) and answers its waiters. Any error fails the
// log; the waiters learn whether their records were certainly not written (errNotWritten).
func (l *decisionLog) write(buf []byte, batch []*logReq, sync bool) []byte {
	batch = firstDecisionWins(batch, l.entries, l.log, l.where)
	for _, r := range batch {
		buf = appendRecord(buf, &r.rec)
	}
	if err := l.failedErr(); err != nil {
		answer(batch, notWritten(err))
		return buf
	}
	var err error
	if len(buf) > 0 {
		if n, werr := l.f.Write(buf); werr != nil {
			err = fmt.Errorf("write decision log: %w", werr)
			l.fail(err)
			if n == 0 {
				err = notWritten(err)
			}
		}
	}
	if err == nil && sync {
		if err = l.sync(); err != nil {
			l.fail(err)
		}
	}
	if err == nil {
		l.size += int64(len(buf))
		for _, r := range batch {
			l.entries[r.rec.Gtrid] = r.rec
			l.ages.written(r.rec)
		}
	}
	answer(batch, err)
	return buf
}

// sync is the one fsync of the log, timed.
func (l *decisionLog) sync() error {
	began := time.Now()
	err := fsutil.Fdatasync(l.f)
	d := time.Since(began)
	if l.onSync != nil {
		l.onSync(d)
	}
	if d > time.Second {
		l.log.Warn("decision log: slow fsync", "duration", d)
	}
	if err != nil {
		return fmt.Errorf("fsync decision log: %w", err)
	}
	return nil
}

// compact rewrites the log with the records worth keeping: into a temporary file, fsync'd,
// renamed over the log, and the directory fsync'd. A failure before the rename leaves the old
// log in use. Once renamed, the new file is the log (the old one has no name left: writing on
// there would be writing to nothing); a directory fsync that still fails after retries leaves
// the rename not known durable, so the log fails.
//
// It keeps every unfinished transaction, and finished ones for the retention period by both
// clocks (finishedAges: for status queries and client-id repeats).
func (l *decisionLog) compact() {
	now, el := l.ages.clocks()
	var buf []byte
	kept := map[string]record{}
	var gone []string
	for g, r := range l.entries {
		if !l.ages.keep(r, now, el) {
			gone = append(gone, g)
			continue
		}
		r.Kind = recSnapshot
		kept[g] = r
		buf = appendRecord(buf, &r)
	}
	tmp := l.path + ".compact"
	f, err := func() (*os.File, error) {
		f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return nil, err
		}
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return nil, err
		}
		if err := fsutil.Fsync(f); err != nil {
			f.Close()
			return nil, err
		}
		if err := os.Rename(tmp, l.path); err != nil {
			f.Close()
			return nil, err
		}
		return f, nil
	}()
	if err != nil {
		os.Remove(tmp)
		l.log.Warn("decision log: compaction failed; keeping the old file", "err", err)
		// Do not retry on every batch.
		l.compactBytes = l.size * 2
		return
	}
	l.f.Close()
	from := l.size
	l.f, l.entries, l.size = f, kept, int64(len(buf))
	for _, g := range gone {
		l.ages.forget(g)
	}
	l.compactBytes = max(l.baseCompact, l.size*2)
	if err := syncDirRetry(l.dir); err != nil {
		l.fail(fmt.Errorf("decision log compacted and renamed, but the directory fsync failed, so the rename is not known durable: %w", err))
		return
	}
	l.log.Info("decision log compacted", "from_bytes", from, "to_bytes", len(buf), "transactions", len(kept))
}

// dirSyncTries is how many times syncDirRetry tries, with a growing pause.
const dirSyncTries = 4

// syncDirRetry fsyncs dir, again after a failure (EMFILE, or an EIO the next try does not
// repeat), and returns the last error.
func syncDirRetry(dir string) error {
	var err error
	pause := 10 * time.Millisecond
	for i := 1; ; i++ {
		if err = fsutil.SyncDir(dir); err == nil || i == dirSyncTries {
			return err
		}
		time.Sleep(pause)
		pause *= 4
	}
}
