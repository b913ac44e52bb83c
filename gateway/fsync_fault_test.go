package gateway

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/imagomq/imago/internal/fsutil"
)

// TestFsyncEIOOverHTTP makes the commit log's fdatasync fail with EIO (through the fsutil
// seam: a real disk cannot be made to fail on cue) and checks the whole answer over HTTP: the
// produce that needed the failed sync is never answered 200, /readyz turns 503, later writes
// are refused even once the disk "works" again (Linux reports a writeback error only once, so
// a later successful fsync proves nothing), and a restart serves every message acknowledged
// before the failure at its offset, and not the batch whose sync failed.
func TestFsyncEIOOverHTTP(t *testing.T) {
	dir := t.TempDir()
	ts := startServerDir(t, dir, Options{})
	ts.createTopic("pay", 1)
	for i := 0; i < 5; i++ {
		r := ts.produce("pay", fmt.Sprintf(`{"messages":[{"value":{"n":%d}}]}`, i))
		if r.Offsets[0].Offset != int64(i) {
			t.Fatalf("produce %d: offset %d", i, r.Offsets[0].Offset)
		}
	}
	ts.must(http.StatusOK, "GET", "/readyz", "")

	logDir := filepath.Join(dir, "log") + string(filepath.Separator)
	var failing atomic.Bool
	failing.Store(true)
	var failed atomic.Int64
	restore := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		if failing.Load() && ev.Kind == fsutil.File && strings.HasPrefix(ev.Path, logDir) {
			failed.Add(1)
			return syscall.EIO
		}
		return do()
	})
	defer restore()

	r := ts.do("POST", "/v1/topics/pay/messages", `{"messages":[{"value":{"n":"lost"}}]}`)
	if r.status < 500 {
		t.Fatalf("produce with a failing fsync answered %d %s, want 5xx", r.status, r.body)
	}
	if failed.Load() == 0 {
		t.Fatal("the commit log's sync did not go through the fsutil seam")
	}
	ts.must(http.StatusServiceUnavailable, "GET", "/readyz", "")

	// The disk recovers; the broker must not.
	failing.Store(false)
	r = ts.do("POST", "/v1/topics/pay/messages", `{"messages":[{"value":{"n":"after"}}]}`)
	if r.status < 500 {
		t.Fatalf("produce after a failed fsync answered %d %s, want 5xx (fail-stop)", r.status, r.body)
	}
	ts.must(http.StatusServiceUnavailable, "GET", "/readyz", "")

	// Restart: close what is open (the broker reports its failure on close) and reopen.
	ts.s.Close()
	ts.hs.Close()
	ts.b.Close()
	ts.hs = nil
	ts2 := startServerDir(t, dir, Options{})
	ts2.must(http.StatusOK, "GET", "/readyz", "")
	f := ts2.fetch("pay", 0, "offset=0&max_messages=100")
	if len(f.Messages) != 5 {
		t.Fatalf("after restart %d messages, want the 5 acknowledged ones: %+v", len(f.Messages), f.Messages)
	}
	for i, m := range f.Messages {
		if m.Offset != int64(i) || string(m.Value) != fmt.Sprintf(`{"n":%d}`, i) {
			t.Fatalf("message %d after restart: offset %d value %s", i, m.Offset, m.Value)
		}
	}
	// Writable again, right after the acknowledged ones.
	if r := ts2.produce("pay", `{"messages":[{"value":{"n":5}}]}`); r.Offsets[0].Offset != 5 {
		t.Fatalf("first produce after restart at offset %d, want 5", r.Offsets[0].Offset)
	}
}
