package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/cluster"
	"github.com/imagomq/imago/replica"
)

// The "leaders" below are fakes on a raw socket: a real leader cannot be made to die, or hang up,
// right after it read a request and before it answered (fault injection).

// crashAfterSecond is a "leader" that answers the first request of each connection 200 and
// keeps it alive; it reads the second request on the connection (it "executes" it), then the
// process "dies": the connection is closed and the listener too.
func crashAfterSecond(t *testing.T) (string, *atomic.Int64, *sync.Mutex, *[]string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	var mu sync.Mutex
	var seen []string
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for i := 0; ; i++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					n.Add(1)
					mu.Lock()
					seen = append(seen, req.Method+" "+req.URL.Path)
					mu.Unlock()
					if i == 0 {
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}")
						continue
					}
					ln.Close() // the leader dies after it received (and applied) the commit
					return
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String(), &n, &mu, &seen
}

// A bodiless POST (commit of a local transaction) carrying an Idempotency-Key header, forwarded
// over a kept-alive connection to a leader that received it and then died, is not sent again
// (Go's transport would take it for replayable), and the follower answers outcome_unknown, not
// no_leader "nothing was sent": the leader got the commit and may have applied it.
func TestForwardedCommitNotResentAfterLeaderDied(t *testing.T) {
	m := startMember(t, 2, Options{})
	addr, n, mu, seen := crashAfterSecond(t)
	m.fc.set(&replica.Peer{ID: 1, HTTPAddr: addr}, false)
	m.must(http.StatusOK, http.MethodGet, "/v1/topics", "") // warms a kept-alive connection
	r := m.do(http.MethodPost, "/v1/transactions/tx-1/commit", "", "Idempotency-Key", "k-commit")
	mu.Lock()
	t.Logf("leader received %d requests: %v; follower answered %d %s", n.Load(), *seen, r.status, r.body)
	mu.Unlock()
	e := errorBody(t, r)
	if e.Error.Code != api.CodeOutcomeUnknown {
		t.Fatalf("the leader received the commit, yet the follower answered %d %s: %s", r.status, e.Error.Code, e.Error.Message)
	}
}

// Same, with a leader that hangs up after reading the commit and takes the next connection: the
// commit reaches it once, never twice.
func TestForwardedCommitSentOnce(t *testing.T) {
	m := startMember(t, 2, Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	var seen []string
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for i := 0; ; i++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					mu.Lock()
					seen = append(seen, req.Method+" "+req.URL.Path)
					k := len(seen)
					mu.Unlock()
					if i == 0 && k != 2 { // the first commit on the reused conn: hang up after reading
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
						continue
					}
					if k == 2 {
						return
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
				}
			}()
		}
	}()
	m.fc.set(&replica.Peer{ID: 1, HTTPAddr: ln.Addr().String()}, false)
	m.must(http.StatusOK, http.MethodGet, "/v1/topics", "")
	r := m.do(http.MethodPost, "/v1/transactions/tx-1/commit", "", "Idempotency-Key", "k-commit")
	mu.Lock()
	defer mu.Unlock()
	t.Logf("leader received %v; follower answered %d %s", seen, r.status, r.body)
	commits := 0
	for _, s := range seen {
		if strings.HasSuffix(s, "/commit") {
			commits++
		}
	}
	if commits > 1 {
		t.Fatalf("the follower sent the commit %d times", commits)
	}
}

// Auth off: a same-origin browser POST to a follower (Origin = the follower) passes the
// follower's cross-site check and is not refused by the leader, whose Host the proxy rewrote.
func TestForwardedSameOriginPostAuthOff(t *testing.T) {
	leader, follower := startPair(t, Options{}, Options{})
	leader.createTopic("serve.t", 1)
	// On the follower, same-origin: passes its own cross-site check.
	r := follower.do(http.MethodPost, "/v1/topics/serve.t/messages", `{"messages":[{"value":1}]}`,
		"Origin", "http://"+follower.addr(), "Sec-Fetch-Site", "same-origin", "Content-Type", "application/json")
	t.Logf("follower answered %d %s", r.status, r.body)
	if r.status != http.StatusOK {
		t.Fatalf("same-origin POST through the follower: %d %s", r.status, r.body)
	}
}

// A membership change whose leader lost leadership after proposing it (cluster/node.go: the
// pending proposal gets cluster.ErrOutcomeUnknown) may still commit; the answer must be 503
// outcome_unknown, not 500 internal_error.
func TestMembershipOutcomeUnknown(t *testing.T) {
	for _, err := range []error{
		fmt.Errorf("%w: leadership lost after proposing at index 9 term 2", cluster.ErrOutcomeUnknown),
		fmt.Errorf("%w: index 9 committed with term 3, proposed in 2", cluster.ErrOutcomeUnknown),
	} {
		ae := errorFor(membershipError(err))
		t.Logf("%v -> %d %s", err, ae.status, ae.code)
		if ae.code != api.CodeOutcomeUnknown {
			t.Errorf("%v: answered %d %s, want 503 outcome_unknown", err, ae.status, ae.code)
		}
	}
}
