package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/imagomq/imago/api"
)

// rebalanceLedger records what a group's members were given and what the group committed,
// to check that no message committed by the group is delivered to it again.
type rebalanceLedger struct {
	mu         sync.Mutex
	committed  map[int]int64 // partition -> highest offset whose commit returned 200
	delivered  map[int]map[int64]int
	violations []string
	latest     map[string]api.GroupMessages // member -> last poll answer
	errs       []error
}

func (l *rebalanceLedger) snapshot() map[int]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[int]int64, len(l.committed))
	for p, o := range l.committed {
		out[p] = o
	}
	return out
}

func (l *rebalanceLedger) fail(err error) {
	l.mu.Lock()
	l.errs = append(l.errs, err)
	l.mu.Unlock()
}

// groupHTTP is a tiny client for member goroutines (which must not call t.Fatal).
type groupHTTP struct {
	base string
	c    *http.Client
}

func (g groupHTTP) call(method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, g.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	resp, err := g.c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// runMember polls and commits until stop closes or the member is gone. With crashAfter > 0
// it returns, without committing, once it has received that many messages: a consumer that
// died mid-batch, whose session then times out.
func runMember(g groupHTTP, group, id string, l *rebalanceLedger, stop <-chan struct{}, crashAfter int, lastPoll *time.Time) {
	received := 0
	for {
		select {
		case <-stop:
			return
		default:
		}
		before := l.snapshot()
		status, body, err := g.call(http.MethodGet, "/v1/groups/"+group+"/members/"+id+"/messages?max_messages=25&wait_ms=100", nil)
		if err != nil {
			l.fail(fmt.Errorf("member %s poll: %w", id, err))
			return
		}
		if status == http.StatusNotFound {
			return
		}
		if status != http.StatusOK {
			l.fail(fmt.Errorf("member %s poll: status %d: %s", id, status, body))
			return
		}
		if lastPoll != nil {
			*lastPoll = time.Now()
		}
		var got api.GroupMessages
		if err := json.Unmarshal(body, &got); err != nil {
			l.fail(err)
			return
		}
		next := map[int]int64{}
		l.mu.Lock()
		l.latest[id] = got
		for _, m := range got.Messages {
			if m.Offset < before[m.Partition] {
				l.violations = append(l.violations, fmt.Sprintf("member %s got %d/%d, committed by the group up to %d before the poll",
					id, m.Partition, m.Offset, before[m.Partition]))
			}
			if l.delivered[m.Partition] == nil {
				l.delivered[m.Partition] = map[int64]int{}
			}
			l.delivered[m.Partition][m.Offset]++
			next[m.Partition] = max(next[m.Partition], m.Offset+1)
		}
		l.mu.Unlock()
		received += len(got.Messages)
		if crashAfter > 0 && received >= crashAfter {
			return // dies holding uncommitted messages
		}
		if len(next) == 0 {
			continue
		}
		req := api.CommitOffsetsRequest{MemberID: id}
		for p, o := range next {
			req.Offsets = append(req.Offsets, api.GroupOffset{Topic: "pay", Partition: p, Offset: o})
		}
		status, body, err = g.call(http.MethodPost, "/v1/groups/"+group+"/offsets", req)
		switch {
		case err != nil:
			l.fail(fmt.Errorf("member %s commit: %w", id, err))
			return
		case status == http.StatusOK:
			l.mu.Lock()
			for p, o := range next {
				l.committed[p] = max(l.committed[p], o)
			}
			l.mu.Unlock()
		case status == http.StatusConflict || status == http.StatusNotFound:
			// Lost the partition (or the membership) in a rebalance: its messages go to the
			// new owner again from the committed offset.
		default:
			l.fail(fmt.Errorf("member %s commit: status %d: %s", id, status, body))
			return
		}
	}
}

// TestGroupRebalanceThreeMembers is issue 3's acceptance 3: three HTTP members on a
// six-partition topic. Every partition is owned by exactly one live member; a member that
// stops polling loses its partitions within its session timeout; no message committed by
// the group is delivered to it again after the rebalance; every message is delivered.
func TestGroupRebalanceThreeMembers(t *testing.T) {
	ts := startGroupServer(t, Options{})
	const partitions, perPartition = 6, 150
	const session = 1000 * time.Millisecond
	ts.createTopic("pay", partitions)
	ts.produceTo("pay", partitions, perPartition)
	join := fmt.Sprintf(`{"topics":["pay"],"session_timeout_ms":%d}`, session.Milliseconds())
	ids := []string{ts.join("g", join).MemberID, ts.join("g", join).MemberID, ts.join("g", join).MemberID}

	l := &rebalanceLedger{committed: map[int]int64{}, delivered: map[int]map[int64]int{}, latest: map[string]api.GroupMessages{}}
	// Ownership in generation 3: each partition exactly once, two per member.
	owner := map[int]string{}
	for _, id := range ids {
		got := ts.poll("g", id, "max_messages=1")
		for _, m := range got.Messages {
			l.delivered[m.Partition] = map[int64]int{m.Offset: 1}
		}
		if got.Generation != 3 || len(got.Assignments) != 2 {
			t.Fatalf("member %s: generation %d assignments %v", id, got.Generation, got.Assignments)
		}
		for _, a := range got.Assignments {
			if prev, dup := owner[a.Partition]; dup {
				t.Fatalf("partition %d owned by %s and %s", a.Partition, prev, id)
			}
			owner[a.Partition] = id
		}
	}
	if len(owner) != partitions {
		t.Fatalf("owners %v", owner)
	}
	// Those probe polls moved cursors without commits: the messages stay uncommitted until
	// the members below commit past them.

	g := groupHTTP{base: ts.hs.URL, c: ts.hs.Client()}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var crashedAt time.Time
	crashed := make(chan struct{})
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == 2 {
				defer close(crashed)
				runMember(g, "g", id, l, stop, 120, &crashedAt)
				return
			}
			runMember(g, "g", id, l, stop, 0, nil)
		}()
	}
	<-crashed
	// Within the session timeout (plus the sweep interval and a poll), the two live
	// members own all six partitions, in one generation, each exactly once.
	waitUntil(t, session+5*time.Second, "the survivors to own every partition", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		a, b := l.latest[ids[0]], l.latest[ids[1]]
		if a.Generation != 4 || b.Generation != 4 {
			return false
		}
		seen := map[int]bool{}
		for _, as := range append(slices.Clone(a.Assignments), b.Assignments...) {
			if seen[as.Partition] {
				t.Errorf("partition %d owned twice in generation 4", as.Partition)
			}
			seen[as.Partition] = true
		}
		return len(seen) == partitions
	})
	took := time.Since(crashedAt)
	t.Logf("the silent member's partitions moved %v after its last poll (session timeout %v)", took.Round(time.Millisecond), session)
	if took < session-100*time.Millisecond {
		t.Errorf("partitions moved after %v, before the session timeout %v", took, session)
	}
	if took > session+2*time.Second {
		t.Errorf("partitions moved only after %v (session timeout %v)", took, session)
	}
	// More messages after the rebalance, then wait until the group committed everything.
	ts.produceTo("pay", partitions, 50)
	const total = perPartition + 50
	waitUntil(t, 30*time.Second, "the group to commit every message", func() bool {
		c := l.snapshot()
		for p := 0; p < partitions; p++ {
			if c[p] != total {
				return false
			}
		}
		return true
	})
	close(stop)
	wg.Wait()

	l.mu.Lock()
	defer l.mu.Unlock()
	for _, err := range l.errs {
		t.Error(err)
	}
	for _, v := range l.violations {
		t.Error(v)
	}
	redelivered := 0
	for p := 0; p < partitions; p++ {
		for o := int64(0); o < total; o++ {
			n := l.delivered[p][o]
			if n == 0 {
				t.Errorf("message %d/%d never delivered", p, o)
			}
			if n > 1 {
				redelivered += n - 1
			}
		}
	}
	t.Logf("redelivered (uncommitted when their owner died): %d messages", redelivered)
	// The group's offsets are all at the end.
	for _, o := range ts.groupOffsets("g").Offsets {
		if o.Offset != total || o.Lag != 0 {
			t.Errorf("final offset %+v", o)
		}
	}
	// The dead member is gone: its late commit is refused.
	r := ts.must(http.StatusNotFound, http.MethodPost, "/v1/groups/g/offsets",
		commitBodyOf(ids[2], api.GroupOffset{Topic: "pay", Partition: 0, Offset: 1}))
	if e := errorBody(t, r); e.Error.Code != "unknown_member" {
		t.Errorf("dead member's commit: %+v", e.Error)
	}
}
