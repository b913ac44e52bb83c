package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

// TestProduceExitSaysWhetherARerunIsSafe: exit 5 tells a script that the same command may
// succeed later. For a produce without --idempotency-key that is only true when nothing was
// stored. Here the real server stores what it is sent, and a proxy in front of it loses the
// answer (the connection is closed after the server answered) or refuses the second request
// with 429 after the first was acknowledged: a rerun of either command stores a second copy,
// so neither may exit 5. With --idempotency-key a rerun is answered with the first outcome,
// and a lost answer stays exit 5. A connection refused stored nothing: exit 5. The faults are
// injected by the proxy; a real server does not lose answers on demand.
func TestProduceExitSaysWhetherARerunIsSafe(t *testing.T) {
	srv := startServer(t, t.TempDir()+"/data")
	if code, _, stderr := imago(t, srv, "", "topics", "create", "pay", "--partitions", "1"); code != exitOK {
		t.Fatalf("create: %d %s", code, stderr)
	}
	target, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	var mode atomic.Value // "lose": lose every produce answer; "refuse-second": 429 from the second produce on
	var produces atomic.Int64
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/messages") {
			rp.ServeHTTP(w, r)
			return
		}
		n := produces.Add(1)
		switch mode.Load() {
		case "lose":
			rp.ServeHTTP(httptest.NewRecorder(), r) // the real server stores the batch
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			conn.Close() // and its answer is lost
		case "refuse-second":
			if n > 1 {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusTooManyRequests)
				w.Write([]byte(`{"error":{"code":"backpressure","message":"busy (injected)"}}` + "\n"))
				return
			}
			rp.ServeHTTP(w, r)
		}
	}))
	defer proxy.Close()
	via := &serverProc{URL: proxy.URL}
	stored := func() int64 {
		t.Helper()
		_, out, _ := imago(t, srv, "", "topics", "describe", "pay", "-o", "json")
		var desc struct {
			Partitions []struct {
				EndOffset int64 `json:"end_offset"`
			} `json:"partitions"`
		}
		if err := json.Unmarshal([]byte(out), &desc); err != nil || len(desc.Partitions) != 1 {
			t.Fatalf("describe: %v %s", err, out)
		}
		return desc.Partitions[0].EndOffset
	}

	mode.Store("lose")
	code, _, stderr := imago(t, via, "", "produce", "pay", "payment-1")
	if n := stored(); n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
	if code == exitUnavailable {
		t.Fatalf("lost answer without a key: exit %d (the same command may succeed later), but the message is stored: a rerun stores it twice\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "may have been stored") || !strings.Contains(stderr, "--idempotency-key") {
		t.Errorf("lost answer without a key: the message does not say what is stored and how to rerun safely:\n%s", stderr)
	}

	produces.Store(0)
	mode.Store("refuse-second")
	code, stdout, stderr := imago(t, via, "", "produce", "pay", "--batch", "1", "payment-2", "payment-3")
	if n := stored(); n != 2 {
		t.Fatalf("%d messages stored, want 2 (%s)", n, stdout)
	}
	if code == exitUnavailable {
		t.Fatalf("429 after an acknowledged request: exit %d (the same command may succeed later), but a rerun stores payment-2 twice\n%s", code, stderr)
	}

	mode.Store("lose")
	code, _, stderr = imago(t, via, "", "produce", "pay", "--idempotency-key", "k-1", "payment-4")
	if code != exitUnavailable {
		t.Fatalf("lost answers with a key: exit %d, want %d (a rerun with the key is safe)\n%s", code, exitUnavailable, stderr)
	}
	if n := stored(); n != 3 {
		t.Fatalf("%d messages stored, want 3 (the keyed retries stored nothing twice)", n)
	}

	if code, _, stderr := imago(t, &serverProc{URL: "http://127.0.0.1:1"}, "", "produce", "pay", "x"); code != exitUnavailable {
		t.Fatalf("nobody there: exit %d, want %d\n%s", code, exitUnavailable, stderr)
	}
}
