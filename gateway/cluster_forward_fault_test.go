package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/cluster"
	"github.com/imagomq/imago/replica"
)

// The "leaders" below are fakes on a raw socket: a real leader cannot be made to die, or hang up,
// right after it read a request and before it answered (fault injection).

// fakeLeader is a "leader" on a raw socket that answers 200 to every request but one: the
// second request of the run (the commit, after a GET that warms a kept-alive connection), which
// it reads, so it has it, and then hangs up without an answer; with die it also closes its
// listener, as a process that dies. requests returns the requests it read, in order.
func fakeLeader(t *testing.T, die bool) (addr string, requests func() []string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
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
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					mu.Lock()
					seen = append(seen, req.Method+" "+req.URL.Path)
					k := len(seen)
					mu.Unlock()
					if k == 2 {
						if die {
							ln.Close()
						}
						return
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}")
				}
			}()
		}
	}()
	return ln.Addr().String(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}
}

// forwardCommit sends a GET (which leaves a kept-alive connection to the fake leader) and then
// a bodiless commit carrying an Idempotency-Key through follower m.
func forwardCommit(t *testing.T, m *member, addr string) response {
	m.fc.set(&replica.Peer{ID: 1, HTTPAddr: addr}, false)
	m.must(http.StatusOK, http.MethodGet, "/v1/topics", "")
	return m.do(http.MethodPost, "/v1/transactions/tx-1/commit", "", "Idempotency-Key", "k-commit")
}

// A bodiless POST (commit of a local transaction) carrying an Idempotency-Key header, forwarded
// over a kept-alive connection to a leader that received it and then died, is not sent again
// (Go's transport would take it for replayable), and the follower answers outcome_unknown, not
// no_leader "nothing was sent": the leader got the commit and may have applied it.
func TestForwardedCommitNotResentAfterLeaderDied(t *testing.T) {
	m := startMember(t, 2, Options{})
	addr, requests := fakeLeader(t, true)
	r := forwardCommit(t, m, addr)
	t.Logf("leader received %v; follower answered %d %s", requests(), r.status, r.body)
	e := errorBody(t, r)
	if e.Error.Code != api.CodeOutcomeUnknown {
		t.Fatalf("the leader received the commit, yet the follower answered %d %s: %s", r.status, e.Error.Code, e.Error.Message)
	}
}

// Same, with a leader that hangs up after reading the commit and takes the next connection: the
// commit reaches it once, never twice.
func TestForwardedCommitSentOnce(t *testing.T) {
	m := startMember(t, 2, Options{})
	addr, requests := fakeLeader(t, false)
	r := forwardCommit(t, m, addr)
	seen := requests()
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
