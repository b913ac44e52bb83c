package xa

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// A submitter waiting for room in a full queue must not stop the writer from reading or
// setting the failure state (it did once: both used one lock, and the writer blocked on it
// while the submitter blocked on the queue the writer was to drain).
func TestLogQueueFullDoesNotBlockWriter(t *testing.T) {
	q := newLogQueue(quietLogger())
	q.reqs = make(chan *logReq, 1)
	q.reqs <- &logReq{} // full
	submitted := make(chan error, 1)
	go func() { submitted <- q.append(record{Gtrid: "x"}) }()
	waitFor(t, "the submitter to wait on the full queue", func() bool {
		if !q.mu.TryLock() {
			return true // held shared by the submitter
		}
		q.mu.Unlock()
		return false
	})
	done := make(chan struct{})
	go func() {
		q.fail(errors.New("disk gone"))
		_ = q.failedErr()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the writer blocked on the failure state while a submitter waited for room")
	}
	<-q.reqs // the writer drains: the submitter gets in
	if err := <-submitted; err != nil {
		t.Fatalf("a submission that started before the failure: %v", err)
	}
	if err := q.append(record{Gtrid: "y"}); !errors.Is(err, errNotWritten) || !strings.HasSuffix(err.Error(), "disk gone") {
		t.Fatalf("append after the failure: %v, want the failure (nothing written)", err)
	}
}
