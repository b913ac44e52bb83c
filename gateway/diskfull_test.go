package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/tmpfs"
)

// The disk-full tests run the broker on a small tmpfs (internal/tmpfs: mounted by the test, so
// they need root; elsewhere they skip). A tmpfs runs out of space or of inodes exactly when told to, which a
// real disk cannot be made to do on demand. Each case fills the file system so that one part of
// the storage meets it first, then produces until the answer is not 200 and checks: no crash,
// that answer and /readyz are 503, and after space is freed and the server restarted every
// acknowledged message is readable at its offset.

// stopAfterFailure stops a server whose broker may fail to write its last checkpoint.
func (ts *testServer) stopAfterFailure() {
	if ts.hs == nil {
		return
	}
	ts.s.Close()
	ts.hs.Close()
	ts.b.Close() // may fail: the disk was full; the restart recovers from the log
	ts.hs = nil
}

type diskFullCase struct {
	name   string
	tune   func(*broker.Options)
	keyed  bool
	value  int // bytes per message value
	before func(t *testing.T, ts *testServer, dir string) (free func())
	cause  string // what Err names
}

func TestDiskFull(t *testing.T) {
	cases := []diskFullCase{
		{
			name:  "produce",
			tune:  func(o *broker.Options) { o.IndexSegmentEntries = 1024; o.CheckpointInterval = time.Hour },
			value: 2000,
			before: func(t *testing.T, ts *testServer, dir string) func() {
				return tmpfs.Fill(t, dir, 32<<10)
			},
			cause: "write segment",
		},
		{
			name:  "index creation",
			tune:  func(o *broker.Options) { o.IndexSegmentEntries = 4096; o.CheckpointInterval = time.Hour },
			value: 10,
			before: func(t *testing.T, ts *testServer, dir string) func() {
				// 4090 of the 4096 entries of the first index segment (96 KiB), then room for
				// the log's next pages but not for the next index segment.
				var msgs []string
				for i := 0; i < 409; i++ {
					msgs = append(msgs, `{"value":"pre"}`)
				}
				body := `{"messages":[` + strings.Join(msgs, ",") + `]}`
				for i := 0; i < 10; i++ {
					ts.must(http.StatusOK, http.MethodPost, "/v1/topics/t/messages", body)
				}
				return tmpfs.Fill(t, dir, 48<<10)
			},
			cause: "allocate index",
		},
		{
			name: "dedupe rotation",
			tune: func(o *broker.Options) {
				o.IndexSegmentEntries = 1024
				o.IdempotencyWindow = 2400 * time.Millisecond // files rotate every 100ms
				o.CheckpointInterval = time.Hour
			},
			keyed: true,
			value: 10,
			before: func(t *testing.T, ts *testServer, dir string) func() {
				// No inode left: the next dedupe file cannot be created.
				free := tmpfs.NoInodes(t, filepath.Dir(dir))
				time.Sleep(150 * time.Millisecond) // the current dedupe file is due for rotation
				return free
			},
			cause: "idempotency",
		},
		{
			name:  "checkpoint",
			tune:  func(o *broker.Options) { o.IndexSegmentEntries = 1024; o.CheckpointInterval = 20 * time.Millisecond },
			value: 10,
			before: func(t *testing.T, ts *testServer, dir string) func() {
				// No inode left: the checkpoint's temporary file cannot be created.
				return tmpfs.NoInodes(t, filepath.Dir(dir))
			},
			cause: "checkpoint",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runDiskFull(t, c) })
	}
}

func runDiskFull(t *testing.T, c diskFullCase) {
	dir := filepath.Join(tmpfs.Mount(t, "2m"), "data")
	ts := startServerTuned(t, dir, Options{}, c.tune)
	ts.createTopic("t", 1)
	acked := map[int64]string{}
	n := 0
	produce := func() response {
		n++
		v := fmt.Sprintf("m%06d-%s", n, strings.Repeat("x", c.value))
		body, _ := json.Marshal(api.ProduceRequest{Messages: []api.ProduceMessage{{Value: json.RawMessage(strconv.Quote(v))}}})
		var hdr []string
		if c.keyed {
			hdr = []string{"Idempotency-Key", fmt.Sprintf("k%d", n)}
		}
		r := ts.do(http.MethodPost, "/v1/topics/t/messages", string(body), hdr...)
		if r.status == http.StatusOK {
			var pr api.ProduceResponse
			decodeJSON(t, r.body, &pr)
			acked[pr.Offsets[0].Offset] = strconv.Quote(v)
		}
		return r
	}
	if r := produce(); r.status != http.StatusOK {
		t.Fatalf("first produce: %d %s", r.status, r.body)
	}
	free := c.before(t, ts, dir)

	var last response
	deadline := time.Now().Add(10 * time.Second)
	for {
		last = produce()
		if last.status != http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still 200 after %d produces with the %s full", n, c.name)
		}
		if c.name == "checkpoint" {
			time.Sleep(5 * time.Millisecond) // let the 20ms checkpointer run between requests
		}
	}
	if last.status != http.StatusServiceUnavailable || errorBody(t, last).Error.Code != api.CodeStorageFailed {
		t.Fatalf("with the disk full: %d %s, want 503 %s", last.status, last.body, api.CodeStorageFailed)
	}
	if r := ts.do(http.MethodGet, "/readyz", ""); r.status != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with the disk full: %d %s", r.status, r.body)
	}
	if err := ts.b.Err(); err == nil || !strings.Contains(strings.ReplaceAll(err.Error(), dir, "DIR"), c.cause) {
		t.Errorf("the broker stopped for %v; this case fills the disk for the %s", err, c.cause)
	}
	t.Logf("%d acknowledged, then %d %s", len(acked), last.status, bytes.TrimSpace(last.body))

	ts.stopAfterFailure()
	free()
	ts = startServerTuned(t, dir, Options{}, c.tune)
	ts.must(http.StatusOK, http.MethodGet, "/readyz", "")
	got := map[int64]string{}
	for off := int64(0); ; {
		res := ts.fetch("t", 0, "offset="+strconv.FormatInt(off, 10)+"&max_messages=1000")
		if len(res.Messages) == 0 {
			break
		}
		for _, m := range res.Messages {
			got[m.Offset] = string(m.Value)
		}
		off = res.NextOffset
	}
	for off, v := range acked {
		if got[off] != v {
			t.Errorf("acknowledged offset %d: after restart %q, want %q", off, got[off], v)
		}
	}
	if r := produce(); r.status != http.StatusOK {
		t.Fatalf("produce after space was freed and the server restarted: %d %s", r.status, r.body)
	}
}

// TestOffsetStoreDiskFull: the file offset store (on a tmpfs of its own) meets a full disk: the
// commit it cannot write is 503 offset_store_unavailable, and /readyz turns 503, since the
// store refuses every commit until the server is restarted; after space is freed and a restart
// the last acknowledged offset is the group's.
func TestOffsetStoreDiskFull(t *testing.T) {
	brokerDir := t.TempDir()
	offsetDir := filepath.Join(tmpfs.Mount(t, "1m"), "offsets")
	ts := startGroupServerDirs(t, brokerDir, offsetDir, Options{})
	ts.createTopic("t", 1)
	ts.produceTo("t", 1, 500)
	m := ts.join("g", `{"topics":["t"]}`)
	ts.must(http.StatusOK, http.MethodPost, "/v1/groups/g/offsets", commitBodyOf(m.MemberID, api.GroupOffset{Topic: "t", Partition: 0, Offset: 1}))
	free := tmpfs.Fill(t, filepath.Dir(offsetDir), 0)
	acked := int64(1)
	var last response
	for off := int64(2); ; off++ {
		if off > 500 {
			t.Fatal("500 commits acknowledged on a full disk")
		}
		last = ts.do(http.MethodPost, "/v1/groups/g/offsets", commitBodyOf(m.MemberID, api.GroupOffset{Topic: "t", Partition: 0, Offset: off}))
		if last.status != http.StatusOK {
			break
		}
		acked = off
	}
	if last.status != http.StatusServiceUnavailable || errorBody(t, last).Error.Code != api.CodeOffsetStoreUnavailable {
		t.Fatalf("a commit on a full disk: %d %s", last.status, last.body)
	}
	r := ts.do(http.MethodGet, "/readyz", "")
	if r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), "offset store") {
		t.Fatalf("/readyz with the offset store refusing commits: %d %s", r.status, r.body)
	}
	ts.stop()
	ts.store.Close()
	free()

	ts = startGroupServerDirs(t, brokerDir, offsetDir, Options{})
	ts.must(http.StatusOK, http.MethodGet, "/readyz", "")
	if offs := ts.groupOffsets("g").Offsets; len(offs) != 1 || offs[0].Offset < acked || offs[0].Offset > acked+1 {
		t.Fatalf("after the restart: %+v; acknowledged %d", offs, acked)
	}
}
