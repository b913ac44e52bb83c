package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/groups"
	"github.com/imagomq/imago/offsetdb"
)

// groupServer is a testServer with a real offset store (the file store unless given).
type groupServer struct {
	*testServer
	store     offsetdb.Store
	offsetDir string
}

// startGroupServer serves a fresh broker with a file offset store; both close with the test.
func startGroupServer(t testing.TB, opts Options) *groupServer {
	t.Helper()
	return startGroupServerDirs(t, t.TempDir(), t.TempDir(), opts)
}

func startGroupServerDirs(t testing.TB, brokerDir, offsetDir string, opts Options) *groupServer {
	t.Helper()
	store, err := offsetdb.Open(context.Background(), offsetdb.Config{Dir: offsetDir, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("open offset store: %v", err)
	}
	t.Cleanup(func() { store.Close() }) // runs after the server's cleanup (LIFO)
	opts.Offsets = store
	return &groupServer{testServer: startServerDir(t, brokerDir, opts), store: store, offsetDir: offsetDir}
}

// uniqueName returns prefix plus random hex, for names shared databases must not collide on.
func uniqueName(prefix string) string {
	var b [6]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func (ts *testServer) join(group, body string, hdr ...string) api.JoinGroupResponse {
	ts.t.Helper()
	r := ts.must(http.StatusCreated, http.MethodPost, "/v1/groups/"+group+"/members", body, hdr...)
	var out api.JoinGroupResponse
	decodeJSON(ts.t, r.body, &out)
	if out.MemberID == "" {
		ts.t.Fatalf("join %s: no member_id in %s", group, r.body)
	}
	return out
}

func (ts *testServer) poll(group, member, query string) api.GroupMessages {
	ts.t.Helper()
	r := ts.must(http.StatusOK, http.MethodGet, "/v1/groups/"+group+"/members/"+member+"/messages?"+query, "")
	var out api.GroupMessages
	decodeJSON(ts.t, r.body, &out)
	return out
}

func commitBodyOf(member string, offs ...api.GroupOffset) string {
	b, _ := json.Marshal(api.CommitOffsetsRequest{MemberID: member, Offsets: offs})
	return string(b)
}

func (ts *testServer) groupOffsets(group string) api.GroupOffsets {
	ts.t.Helper()
	r := ts.must(http.StatusOK, http.MethodGet, "/v1/groups/"+group+"/offsets", "")
	var out api.GroupOffsets
	decodeJSON(ts.t, r.body, &out)
	return out
}

// produceTo appends n messages to each partition of topic ({"i": k} values).
func (ts *testServer) produceTo(topic string, partitions, n int) {
	ts.t.Helper()
	var sb strings.Builder
	sb.WriteString(`{"messages":[`)
	for p := 0; p < partitions; p++ {
		for k := 0; k < n; k++ {
			if sb.Len() > len(`{"messages":[`) {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, `{"value":{"p":%d,"k":%d},"partition":%d}`, p, k, p)
		}
	}
	sb.WriteString(`]}`)
	ts.produce(topic, sb.String())
}

// waitUntil polls cond until it holds or d passes.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestGroupsWithoutOffsetStore(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("t", 1)
	r := ts.must(http.StatusServiceUnavailable, http.MethodPost, "/v1/groups/g/members", `{"topics":["t"]}`)
	if e := errorBody(t, r); e.Error.Code != "not_ready" || !strings.Contains(e.Error.Message, "offset store") {
		t.Errorf("error %+v", e.Error)
	}
}

func TestGroupJoinAssignsEveryPartitionOnce(t *testing.T) {
	ts := startGroupServer(t, Options{})
	ts.createTopic("orders", 6)
	a := ts.join("g", `{"topics":["orders"],"mode":"clustered"}`)
	if len(a.Assignments) != 6 || a.Generation != 1 || a.SessionTimeoutMS != 30000 || a.Mode != "clustered" {
		t.Fatalf("first member: %+v", a)
	}
	b := ts.join("g", `{"topics":["orders"]}`)
	c := ts.join("g", `{"topics":["orders"],"session_timeout_ms":5000}`)
	if c.SessionTimeoutMS != 5000 || c.Generation != 3 {
		t.Fatalf("third member: %+v", c)
	}
	owner := map[api.Assignment]string{}
	for _, m := range []string{a.MemberID, b.MemberID, c.MemberID} {
		got := ts.poll("g", m, "")
		if got.Generation != 3 || len(got.Assignments) != 2 {
			t.Fatalf("member %s: generation %d, assignments %v", m, got.Generation, got.Assignments)
		}
		for _, as := range got.Assignments {
			if prev, ok := owner[as]; ok {
				t.Fatalf("%v owned by %s and %s", as, prev, m)
			}
			owner[as] = m
		}
	}
	if len(owner) != 6 {
		t.Fatalf("owned partitions %v", owner)
	}
	// Leaving gives the partitions to the others at once.
	ts.must(http.StatusNoContent, http.MethodDelete, "/v1/groups/g/members/"+c.MemberID, "")
	ga, gb := ts.poll("g", a.MemberID, ""), ts.poll("g", b.MemberID, "")
	if ga.Generation != 4 || len(ga.Assignments)+len(gb.Assignments) != 6 || len(ga.Assignments) != 3 {
		t.Fatalf("after leave: %+v / %+v", ga, gb)
	}
	r := ts.must(http.StatusNotFound, http.MethodGet, "/v1/groups/g/members/"+c.MemberID+"/messages", "")
	if e := errorBody(t, r); e.Error.Code != "unknown_member" {
		t.Errorf("poll after leave: %+v", e.Error)
	}
	d := ts.groupOffsets("g")
	if d.Mode != "clustered" || len(d.Members) != 2 || d.Generation != 4 {
		t.Errorf("describe: %+v", d)
	}
}

func TestGroupModeAndTopicConflicts(t *testing.T) {
	ts := startGroupServer(t, Options{})
	ts.createTopic("t1", 2)
	ts.createTopic("t2", 2)
	ts.join("g", `{"topics":["t1","t2"]}`)
	ts.join("g", `{"topics":["t2","t1","t1"]}`) // same set
	for _, tc := range []struct{ body, code string }{
		{`{"topics":["t1","t2"],"mode":"broadcast"}`, "group_mode_conflict"},
		{`{"topics":["t1"]}`, "group_topics_conflict"},
	} {
		r := ts.must(http.StatusConflict, http.MethodPost, "/v1/groups/g/members", tc.body)
		if e := errorBody(t, r); e.Error.Code != tc.code {
			t.Errorf("%s: code %s, want %s", tc.body, e.Error.Code, tc.code)
		}
	}
}

func TestGroupPollCursorAndCommit(t *testing.T) {
	ts := startGroupServer(t, Options{})
	ts.createTopic("t", 2)
	ts.produceTo("t", 2, 5)
	m := ts.join("g", `{"topics":["t"]}`)
	got := ts.poll("g", m.MemberID, "max_messages=3")
	if len(got.Messages) != 3 {
		t.Fatalf("first poll: %d messages", len(got.Messages))
	}
	rest := ts.poll("g", m.MemberID, "")
	if len(rest.Messages) != 7 {
		t.Fatalf("second poll: %d messages, want the 7 not yet returned", len(rest.Messages))
	}
	seen := map[string]bool{}
	for _, msg := range append(got.Messages, rest.Messages...) {
		k := fmt.Sprintf("%d/%d", msg.Partition, msg.Offset)
		if seen[k] {
			t.Fatalf("message %s returned twice without a rebalance", k)
		}
		seen[k] = true
		if msg.Topic != "t" || msg.Timestamp == "" || len(msg.Value) == 0 {
			t.Fatalf("message %+v", msg)
		}
	}
	if empty := ts.poll("g", m.MemberID, ""); len(empty.Messages) != 0 {
		t.Fatalf("third poll: %d messages", len(empty.Messages))
	}
	ts.must(http.StatusOK, http.MethodPost, "/v1/groups/g/offsets", commitBodyOf(m.MemberID,
		api.GroupOffset{Topic: "t", Partition: 0, Offset: 5}, api.GroupOffset{Topic: "t", Partition: 1, Offset: 2}))
	// Backwards is accepted and changes nothing.
	ts.must(http.StatusOK, http.MethodPost, "/v1/groups/g/offsets", commitBodyOf(m.MemberID, api.GroupOffset{Topic: "t", Partition: 0, Offset: 1}))
	// Past the end: 416 with the range.
	r := ts.must(http.StatusRequestedRangeNotSatisfiable, http.MethodPost, "/v1/groups/g/offsets", commitBodyOf(m.MemberID, api.GroupOffset{Topic: "t", Partition: 0, Offset: 6}))
	if e := errorBody(t, r); e.Error.Code != "offset_out_of_range" || e.EndOffset == nil || *e.EndOffset != 5 {
		t.Errorf("past the end: %s", r.body)
	}
	d := ts.groupOffsets("g")
	want := []api.GroupOffsetStatus{{Topic: "t", Partition: 0, Offset: 5, EndOffset: 5, Lag: 0}, {Topic: "t", Partition: 1, Offset: 2, EndOffset: 5, Lag: 3}}
	if len(d.Offsets) != 2 {
		t.Fatalf("offsets %+v", d.Offsets)
	}
	for i, w := range want {
		g := d.Offsets[i]
		if g.UpdatedAt == "" {
			t.Errorf("offset %d: no updated_at", i)
		}
		g.UpdatedAt = ""
		if g != w {
			t.Errorf("offset %d: %+v, want %+v", i, g, w)
		}
	}
	// A new member after the first leaves starts at the committed offsets.
	ts.must(http.StatusNoContent, http.MethodDelete, "/v1/groups/g/members/"+m.MemberID, "")
	m2 := ts.join("g", `{"topics":["t"]}`)
	again := ts.poll("g", m2.MemberID, "")
	if len(again.Messages) != 3 {
		t.Fatalf("after rejoin: %d messages, want the 3 uncommitted of partition 1", len(again.Messages))
	}
	for _, msg := range again.Messages {
		if msg.Partition != 1 || msg.Offset < 2 {
			t.Errorf("committed message delivered again: %+v", msg)
		}
	}
	// Lag in /metrics.
	waitUntil(t, 10*time.Second, "consumer lag metric", func() bool {
		return metricValue(t, ts.testServer, "imago_consumer_lag", "g", "t", "1") == 3 &&
			metricValue(t, ts.testServer, "imago_consumer_committed_offset", "g", "t", "0") == 5
	})
}

// TestGroupPollPositions: a poll answer lost on its way (here: read and thrown away) has
// moved the member's cursor; the next poll with the client's position gets those messages
// again, and one without positions does not.
func TestGroupPollPositions(t *testing.T) {
	ts := startGroupServer(t, Options{})
	ts.createTopic("t", 1)
	ts.produceTo("t", 1, 4)
	m := ts.join("g", `{"topics":["t"]}`)
	if got := ts.poll("g", m.MemberID, "max_messages=2"); len(got.Messages) != 2 {
		t.Fatalf("first poll: %d messages", len(got.Messages))
	}
	ts.poll("g", m.MemberID, "max_messages=2") // offsets 2 and 3: "lost"
	again := ts.poll("g", m.MemberID, "position=t:0:2")
	if len(again.Messages) != 2 || again.Messages[0].Offset != 2 || again.Messages[1].Offset != 3 {
		t.Fatalf("poll with position 2: %+v, want offsets 2 and 3", again.Messages)
	}
	if rest := ts.poll("g", m.MemberID, ""); len(rest.Messages) != 0 {
		t.Fatalf("poll without position after that: %d messages", len(rest.Messages))
	}
	// A client that has no position yet says its positions are complete (none): the
	// partition goes back to where the member started it.
	if again := ts.poll("g", m.MemberID, "positions_complete=true&max_messages=1"); len(again.Messages) != 1 || again.Messages[0].Offset != 0 {
		t.Fatalf("poll with positions_complete and no position: %+v, want offset 0", again.Messages)
	}
	mfs, err := ts.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	rewinds := -1.0
	for _, mf := range mfs {
		if mf.GetName() == "imago_consumer_poll_rewinds_total" {
			for _, mt := range mf.GetMetric() {
				if len(mt.GetLabel()) == 1 && mt.GetLabel()[0].GetValue() == "g" {
					rewinds = mt.GetCounter().GetValue()
				}
			}
		}
	}
	if rewinds != 2 {
		t.Fatalf("imago_consumer_poll_rewinds_total{group=\"g\"} = %v, want 2", rewinds)
	}
}

// FuzzParsePollQuery feeds arbitrary query strings to a poll's parser: it never panics, every
// rejection is a 4xx API error, and every accepted position is a valid topic, partition and
// offset.
func FuzzParsePollQuery(f *testing.F) {
	for _, s := range []string{"", "max_messages=5&wait_ms=100", "position=t:0:5", "position=a.b:3:0&position=c:1:9",
		"position=t:0", "position=%zz", "position=t:-1:0", "position%3D=x", "position=t%3A0%3A1", "position=::", "position=t:0:99999999999999999999",
		"positions_complete=true&position=t:0:1", "positions_complete=1", "positions_complete=false&positions_complete=true"} {
		f.Add(s)
	}
	s := &Server{opts: Options{MaxWait: 5 * time.Second}}
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := s.parsePollQuery(raw)
		if err != nil {
			ae := errorFor(err)
			if ae.status < 400 || ae.status >= 500 || ae.code == "internal_error" {
				t.Fatalf("query %q: error %v maps to %d %s", raw, err, ae.status, ae.code)
			}
			return
		}
		for k, off := range p.positions {
			if !broker.ValidName(k.Topic) || k.Partition < 0 || off < 0 {
				t.Fatalf("query %q accepted position %+v at %d", raw, k, off)
			}
		}
	})
}

// metricValue reads a gauge with labels group, topic, partition from the test registry
// (-1 when absent).
func metricValue(t *testing.T, ts *testServer, name, group, topic, partition string) float64 {
	t.Helper()
	mfs, err := ts.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["group"] == group && l["topic"] == topic && l["partition"] == partition {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

func TestGroupZombieCommitRefused(t *testing.T) {
	ts := startGroupServer(t, Options{})
	ts.createTopic("t", 2)
	ts.produceTo("t", 2, 3)
	a := ts.join("g", `{"topics":["t"],"session_timeout_ms":1000}`)
	if got := ts.poll("g", a.MemberID, ""); len(got.Messages) != 6 {
		t.Fatalf("a polled %d", len(got.Messages))
	}
	b := ts.join("g", `{"topics":["t"]}`)
	bp := ts.poll("g", b.MemberID, "")
	if len(bp.Assignments) != 1 {
		t.Fatalf("b assignments %v", bp.Assignments)
	}
	lost := bp.Assignments[0]
	// a still lives but lost the partition: it may not commit it.
	r := ts.must(http.StatusConflict, http.MethodPost, "/v1/groups/g/offsets",
		commitBodyOf(a.MemberID, api.GroupOffset{Topic: lost.Topic, Partition: lost.Partition, Offset: 3}))
	if e := errorBody(t, r); e.Error.Code != "not_partition_owner" || e.Error.Field != "offsets[0]" {
		t.Errorf("zombie commit: %+v", e.Error)
	}
	// b got the partition's messages again (nothing was committed).
	if len(bp.Messages) != 3 {
		t.Errorf("new owner got %d messages, want 3 uncommitted", len(bp.Messages))
	}
	// Once a times out, it is unknown: 404 on commit and poll.
	waitUntil(t, 5*time.Second, "a's session to time out", func() bool {
		// b polls (heartbeats) while a stays silent.
		return len(ts.poll("g", b.MemberID, "").Assignments) == 2
	})
	r = ts.must(http.StatusNotFound, http.MethodPost, "/v1/groups/g/offsets",
		commitBodyOf(a.MemberID, api.GroupOffset{Topic: "t", Partition: 0, Offset: 1}))
	if e := errorBody(t, r); e.Error.Code != "unknown_member" {
		t.Errorf("commit after timeout: %+v", e.Error)
	}
	if d := ts.groupOffsets("g"); len(d.Offsets) != 0 {
		t.Errorf("refused commits were stored: %+v", d.Offsets)
	}
}

func TestGroupBroadcast(t *testing.T) {
	ts := startGroupServer(t, Options{})
	ts.createTopic("t", 3)
	ts.produceTo("t", 3, 2) // before the join: not seen with the default "latest"
	a := ts.join("b", `{"topics":["t"],"mode":"broadcast","consumer_id":"node-a"}`)
	b := ts.join("b", `{"topics":["t"],"mode":"broadcast"}`)
	e := ts.join("b", `{"topics":["t"],"mode":"broadcast","from":"earliest","consumer_id":"node-e"}`)
	if len(a.Assignments) != 3 || len(b.Assignments) != 3 || a.Mode != "broadcast" {
		t.Fatalf("broadcast assignments: %+v %+v", a, b)
	}
	ts.produceTo("t", 3, 4)
	for _, m := range []string{a.MemberID, b.MemberID} {
		if got := ts.poll("b", m, ""); len(got.Messages) != 12 {
			t.Fatalf("member %s got %d messages, want all 12 produced after it joined", m, len(got.Messages))
		}
	}
	if got := ts.poll("b", e.MemberID, ""); len(got.Messages) != 18 {
		t.Fatalf("earliest member got %d messages, want 18", len(got.Messages))
	}
	// Separate offsets: a commits all, b only partition 0.
	ts.must(http.StatusOK, http.MethodPost, "/v1/groups/b/offsets", commitBodyOf(a.MemberID,
		api.GroupOffset{Topic: "t", Partition: 0, Offset: 6}, api.GroupOffset{Topic: "t", Partition: 1, Offset: 6}, api.GroupOffset{Topic: "t", Partition: 2, Offset: 6}))
	ts.must(http.StatusOK, http.MethodPost, "/v1/groups/b/offsets", commitBodyOf(b.MemberID, api.GroupOffset{Topic: "t", Partition: 0, Offset: 4}))
	d := ts.groupOffsets("b")
	byConsumer := map[string]int{}
	for _, o := range d.Offsets {
		byConsumer[o.Consumer]++
		if o.Consumer == b.MemberID && o.Offset != 4 {
			t.Errorf("b's offset %+v", o)
		}
	}
	if byConsumer["node-a"] != 3 || byConsumer[b.MemberID] != 1 || d.Mode != "broadcast" || len(d.Members) != 3 {
		t.Fatalf("broadcast offsets %+v", d)
	}
	// A consumer rejoining with its consumer_id replaces its old member and resumes at
	// its own offsets.
	a2 := ts.join("b", `{"topics":["t"],"mode":"broadcast","consumer_id":"node-a"}`)
	ts.must(http.StatusNotFound, http.MethodGet, "/v1/groups/b/members/"+a.MemberID+"/messages", "")
	if got := ts.poll("b", a2.MemberID, ""); len(got.Messages) != 0 {
		t.Fatalf("rejoined consumer got %d messages, want none (all committed)", len(got.Messages))
	}
	ts.produceTo("t", 1, 1)
	if got := ts.poll("b", a2.MemberID, ""); len(got.Messages) != 1 {
		t.Fatalf("rejoined consumer got %d new messages, want 1", len(got.Messages))
	}
	l := ts.must(http.StatusOK, http.MethodGet, "/v1/groups", "")
	var list api.GroupList
	decodeJSON(t, l.body, &list)
	if len(list.Groups) != 1 || list.Groups[0].Name != "b" || list.Groups[0].Members != 3 {
		t.Errorf("groups %+v", list)
	}
}

func TestGroupLongPollWakesOnProduce(t *testing.T) {
	ts := startGroupServer(t, Options{})
	ts.createTopic("t", 4)
	m := ts.join("g", `{"topics":["t"]}`)
	ts.poll("g", m.MemberID, "") // cursors set
	type result struct {
		got api.GroupMessages
		d   time.Duration
	}
	done := make(chan result, 1)
	go func() {
		start := time.Now()
		r := ts.do(http.MethodGet, "/v1/groups/g/members/"+m.MemberID+"/messages?wait_ms=20000", "")
		var got api.GroupMessages
		json.Unmarshal(r.body, &got)
		done <- result{got, time.Since(start)}
	}()
	waitUntil(t, 5*time.Second, "the long poll to be in flight", func() bool { return ts.inFlight() >= 1 })
	ts.produce("t", `{"messages":[{"value":1,"partition":3}]}`)
	select {
	case r := <-done:
		if len(r.got.Messages) != 1 || r.got.Messages[0].Partition != 3 {
			t.Fatalf("long poll answered %+v", r.got)
		}
		if r.d > 10*time.Second {
			t.Fatalf("long poll took %v", r.d)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("long poll did not wake on produce")
	}
	// And a leave of the member ends its long poll (404: it is gone).
	go func() {
		r := ts.do(http.MethodGet, "/v1/groups/g/members/"+m.MemberID+"/messages?wait_ms=20000", "")
		done <- result{d: time.Duration(r.status)}
	}()
	waitUntil(t, 5*time.Second, "the long poll to be in flight", func() bool { return ts.inFlight() >= 1 })
	ts.must(http.StatusNoContent, http.MethodDelete, "/v1/groups/g/members/"+m.MemberID, "")
	select {
	case r := <-done:
		if int(r.d) != http.StatusNotFound {
			t.Fatalf("long poll of a member that left answered %d", int(r.d))
		}
	case <-time.After(15 * time.Second):
		t.Fatal("long poll did not end when its member left")
	}
}

func TestGroupOffsetsSurviveRestart(t *testing.T) {
	brokerDir, offsetDir := t.TempDir(), t.TempDir()
	ts := startGroupServerDirs(t, brokerDir, offsetDir, Options{})
	ts.createTopic("t", 2)
	ts.produceTo("t", 2, 4)
	m := ts.join("g", `{"topics":["t"]}`)
	if got := ts.poll("g", m.MemberID, ""); len(got.Messages) != 8 {
		t.Fatalf("polled %d", len(got.Messages))
	}
	ts.must(http.StatusOK, http.MethodPost, "/v1/groups/g/offsets", commitBodyOf(m.MemberID,
		api.GroupOffset{Topic: "t", Partition: 0, Offset: 3}, api.GroupOffset{Topic: "t", Partition: 1, Offset: 4}))
	ts.stop()
	if err := ts.store.Close(); err != nil {
		t.Fatal(err)
	}

	ts2 := startGroupServerDirs(t, brokerDir, offsetDir, Options{})
	ts2.must(http.StatusNotFound, http.MethodGet, "/v1/groups/g/members/"+m.MemberID+"/messages", "")
	d := ts2.groupOffsets("g")
	if len(d.Offsets) != 2 || d.Offsets[0].Offset != 3 || d.Offsets[1].Offset != 4 || d.Offsets[0].Lag != 1 || len(d.Members) != 0 {
		t.Fatalf("after restart: %+v", d)
	}
	m2 := ts2.join("g", `{"topics":["t"]}`)
	got := ts2.poll("g", m2.MemberID, "")
	if len(got.Messages) != 1 || got.Messages[0].Partition != 0 || got.Messages[0].Offset != 3 {
		t.Fatalf("after restart the member got %+v, want only t/0@3", got.Messages)
	}
}

func TestGroupBadInput(t *testing.T) {
	ts := startGroupServer(t, Options{MaxWait: 5 * time.Second})
	ts.createTopic("t", 1)
	m := ts.join("g", `{"topics":["t"]}`)
	long := strings.Repeat("x", 250)
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code, field              string
	}{
		{"bad group name", "POST", "/v1/groups/a%20b/members", `{"topics":["t"]}`, 400, "invalid_name", ""},
		{"long group name", "POST", "/v1/groups/" + long + "/members", `{"topics":["t"]}`, 400, "invalid_name", ""},
		{"group named dot", "POST", "/v1/groups/./members", `{"topics":["t"]}`, 400, "invalid_name", ""},
		{"group named dot dot", "POST", "/v1/groups/../members", `{"topics":["t"]}`, 400, "invalid_name", ""},
		{"group named dot, escaped", "GET", "/v1/groups/%2E/offsets", "", 400, "invalid_name", ""},
		{"empty body", "POST", "/v1/groups/g/members", ``, 400, "invalid_json", ""},
		{"not json", "POST", "/v1/groups/g/members", `{"topics":`, 400, "invalid_json", ""},
		{"array body", "POST", "/v1/groups/g/members", `["t"]`, 400, "invalid_field", "body"},
		{"unknown field", "POST", "/v1/groups/g/members", `{"topics":["t"],"x":1}`, 400, "invalid_field", ""},
		{"no topics", "POST", "/v1/groups/g/members", `{"mode":"clustered"}`, 400, "invalid_field", "topics"},
		{"empty topics", "POST", "/v1/groups/g/members", `{"topics":[]}`, 400, "invalid_field", "topics"},
		{"topics not array", "POST", "/v1/groups/g/members", `{"topics":"t"}`, 400, "invalid_field", "topics"},
		{"bad topic", "POST", "/v1/groups/g/members", `{"topics":["t","a/b"]}`, 400, "invalid_name", "topics[1]"},
		{"unknown topic", "POST", "/v1/groups/g/members", `{"topics":["nope"]}`, 404, "unknown_topic", ""},
		{"bad mode", "POST", "/v1/groups/g/members", `{"topics":["t"],"mode":"fanout"}`, 400, "invalid_field", "mode"},
		{"short timeout", "POST", "/v1/groups/g/members", `{"topics":["t"],"session_timeout_ms":999}`, 400, "invalid_field", "session_timeout_ms"},
		{"long timeout", "POST", "/v1/groups/g/members", `{"topics":["t"],"session_timeout_ms":300001}`, 400, "invalid_field", "session_timeout_ms"},
		{"bad from", "POST", "/v1/groups/g/members", `{"topics":["t"],"mode":"broadcast","from":"middle"}`, 400, "invalid_field", "from"},
		{"latest clustered", "POST", "/v1/groups/g/members", `{"topics":["t"],"from":"latest"}`, 400, "invalid_field", "from"},
		{"bad consumer_id", "POST", "/v1/groups/g/members", `{"topics":["t"],"consumer_id":"a b"}`, 400, "invalid_name", "consumer_id"},
		{"broadcast name too long", "POST", "/v1/groups/" + long[:249] + "/members", `{"topics":["t"],"mode":"broadcast"}`, 400, "invalid_field", "consumer_id"},
		{"unknown member poll", "GET", "/v1/groups/g/members/m-0000/messages", ``, 404, "unknown_member", ""},
		{"unknown group poll", "GET", "/v1/groups/nogroup/members/m-0000/messages", ``, 404, "unknown_member", ""},
		{"bad member", "GET", "/v1/groups/g/members/a%20b/messages", ``, 400, "invalid_name", ""},
		{"bad wait", "GET", "/v1/groups/g/members/" + m.MemberID + "/messages?wait_ms=x", ``, 400, "invalid_parameter", "wait_ms"},
		{"wait too long", "GET", "/v1/groups/g/members/" + m.MemberID + "/messages?wait_ms=5001", ``, 400, "invalid_parameter", "wait_ms"},
		{"max_messages 0", "GET", "/v1/groups/g/members/" + m.MemberID + "/messages?max_messages=0", ``, 400, "invalid_parameter", "max_messages"},
		{"max_bytes twice", "GET", "/v1/groups/g/members/" + m.MemberID + "/messages?max_bytes=1&max_bytes=2", ``, 400, "invalid_parameter", "max_bytes"},
		{"bad query", "GET", "/v1/groups/g/members/" + m.MemberID + "/messages?wait_ms=%zz", ``, 400, "invalid_parameter", ""},
		{"position without offset", "GET", "/v1/groups/g/members/" + m.MemberID + "/messages?position=t:0", ``, 400, "invalid_parameter", "position"},
		{"position bad topic", "GET", "/v1/groups/g/members/" + m.MemberID + "/messages?position=a%2Fb:0:1", ``, 400, "invalid_parameter", "position"},
		{"position negative offset", "GET", "/v1/groups/g/members/" + m.MemberID + "/messages?position=t:0:-1", ``, 400, "invalid_parameter", "position"},
		{"position bad partition", "GET", "/v1/groups/g/members/" + m.MemberID + "/messages?position=t:x:1", ``, 400, "invalid_parameter", "position"},
		{"position twice", "GET", "/v1/groups/g/members/" + m.MemberID + "/messages?position=t:0:1&position=t:0:2", ``, 400, "invalid_parameter", "position"},
		{"position malformed escape", "GET", "/v1/groups/g/members/" + m.MemberID + "/messages?position=t:0:%zz", ``, 400, "invalid_parameter", ""},
		{"positions_complete not a bool", "GET", "/v1/groups/g/members/" + m.MemberID + "/messages?positions_complete=yes", ``, 400, "invalid_parameter", "positions_complete"},
		{"positions_complete twice", "GET", "/v1/groups/g/members/" + m.MemberID + "/messages?positions_complete=true&positions_complete=true", ``, 400, "invalid_parameter", "positions_complete"},
		{"unknown member leave", "DELETE", "/v1/groups/g/members/m-0000", ``, 404, "unknown_member", ""},
		{"commit no member", "POST", "/v1/groups/g/offsets", `{"offsets":[{"topic":"t","partition":0,"offset":0}]}`, 400, "invalid_field", "member_id"},
		{"commit no offsets", "POST", "/v1/groups/g/offsets", `{"member_id":"` + m.MemberID + `"}`, 400, "invalid_field", "offsets"},
		{"commit empty offsets", "POST", "/v1/groups/g/offsets", `{"member_id":"` + m.MemberID + `","offsets":[]}`, 400, "invalid_field", "offsets"},
		{"commit no offset", "POST", "/v1/groups/g/offsets", `{"member_id":"` + m.MemberID + `","offsets":[{"topic":"t","partition":0}]}`, 400, "invalid_field", "offsets[0].offset"},
		{"commit no partition", "POST", "/v1/groups/g/offsets", `{"member_id":"` + m.MemberID + `","offsets":[{"topic":"t","offset":0}]}`, 400, "invalid_field", "offsets[0].partition"},
		{"commit negative", "POST", "/v1/groups/g/offsets", `{"member_id":"` + m.MemberID + `","offsets":[{"topic":"t","partition":0,"offset":-1}]}`, 400, "invalid_field", "offsets[0].offset"},
		{"commit bad partition", "POST", "/v1/groups/g/offsets", `{"member_id":"` + m.MemberID + `","offsets":[{"topic":"t","partition":-1,"offset":0}]}`, 400, "invalid_field", "offsets[0].partition"},
		{"commit float offset", "POST", "/v1/groups/g/offsets", `{"member_id":"` + m.MemberID + `","offsets":[{"topic":"t","partition":0,"offset":1.5}]}`, 400, "invalid_field", ""},
		{"commit bad topic", "POST", "/v1/groups/g/offsets", `{"member_id":"` + m.MemberID + `","offsets":[{"topic":"","partition":0,"offset":0}]}`, 400, "invalid_name", "offsets[0].topic"},
		{"commit unknown topic", "POST", "/v1/groups/g/offsets", `{"member_id":"` + m.MemberID + `","offsets":[{"topic":"nope","partition":0,"offset":0}]}`, 404, "unknown_topic", "offsets[0].topic"},
		{"commit unknown partition", "POST", "/v1/groups/g/offsets", `{"member_id":"` + m.MemberID + `","offsets":[{"topic":"t","partition":7,"offset":0}]}`, 404, "unknown_partition", "offsets[0].partition"},
		{"commit unknown member", "POST", "/v1/groups/g/offsets", `{"member_id":"m-0000","offsets":[{"topic":"t","partition":0,"offset":0}]}`, 404, "unknown_member", ""},
		{"commit bad json", "POST", "/v1/groups/g/offsets", `{"member_id":`, 400, "invalid_json", ""},
		{"unknown group offsets", "GET", "/v1/groups/nogroup/offsets", ``, 404, "unknown_group", ""},
		{"bad group offsets", "GET", "/v1/groups/a%7Eb/offsets", ``, 400, "invalid_name", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ts.do(tc.method, tc.path, tc.body)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			e := errorBody(t, r)
			if e.Error.Code != tc.code || (tc.field != "" && e.Error.Field != tc.field) {
				t.Errorf("error %+v, want code %s field %q", e.Error, tc.code, tc.field)
			}
		})
	}
	// Nothing above disturbed the member.
	if got := ts.poll("g", m.MemberID, ""); got.Generation != 1 || len(got.Assignments) != 1 {
		t.Errorf("member after bad input: %+v", got)
	}
}

func TestGroupRights(t *testing.T) {
	tokens := []Token{
		{Name: "c", Token: "consume-secret", Consume: []string{"pay.*"}},
		{Name: "p", Token: "produce-secret", Produce: []string{"*"}},
		{Name: "adm", Token: "admin-secret", Admin: true},
	}
	ts := startGroupServer(t, Options{Tokens: tokens})
	admin := []string{"Authorization", "Bearer admin-secret"}
	cons := []string{"Authorization", "Bearer consume-secret"}
	prod := []string{"Authorization", "Bearer produce-secret"}
	ts.createTopic("pay.a", 1, admin...)
	ts.createTopic("other", 1, admin...)
	ts.must(http.StatusUnauthorized, "POST", "/v1/groups/g/members", `{"topics":["pay.a"]}`)
	r := ts.must(http.StatusForbidden, "POST", "/v1/groups/g/members", `{"topics":["pay.a","other"]}`, cons...)
	if e := errorBody(t, r); e.Error.Code != "forbidden" || !strings.Contains(e.Error.Message, `"other"`) {
		t.Errorf("join other: %+v", e.Error)
	}
	ts.must(http.StatusForbidden, "POST", "/v1/groups/g/members", `{"topics":["pay.a"]}`, prod...)
	m := ts.join("g", `{"topics":["pay.a"]}`, cons...)
	ts.must(http.StatusOK, "GET", "/v1/groups/g/members/"+m.MemberID+"/messages", "", cons...)
	ts.must(http.StatusForbidden, "GET", "/v1/groups/g/members/"+m.MemberID+"/messages", "", prod...)
	ts.must(http.StatusForbidden, "POST", "/v1/groups/g/offsets", commitBodyOf(m.MemberID, api.GroupOffset{Topic: "pay.a", Partition: 0, Offset: 0}), prod...)
	ts.must(http.StatusOK, "POST", "/v1/groups/g/offsets", commitBodyOf(m.MemberID, api.GroupOffset{Topic: "pay.a", Partition: 0, Offset: 0}), cons...)
	ts.must(http.StatusForbidden, "GET", "/v1/groups/g/offsets", "", prod...)
	ts.must(http.StatusOK, "GET", "/v1/groups/g/offsets", "", cons...)
	ts.must(http.StatusOK, "GET", "/v1/groups", "", admin...)
	ts.must(http.StatusForbidden, "DELETE", "/v1/groups/g/members/"+m.MemberID, "", prod...)
	ts.must(http.StatusNoContent, "DELETE", "/v1/groups/g/members/"+m.MemberID, "", cons...)
}

// TestGroupRefusedRequestIsNoHeartbeat: a poll or leave refused 403 (the token lacks consume
// on the member's topics) does not count as the member's heartbeat: its last_seen stays where
// the join put it, so the member still times out on schedule. An allowed poll moves it.
func TestGroupRefusedRequestIsNoHeartbeat(t *testing.T) {
	ts := startGroupServer(t, Options{Tokens: []Token{
		{Name: "c", Token: "consume-secret", Consume: []string{"pay.*"}},
		{Name: "o", Token: "other-secret", Consume: []string{"other.*"}},
		{Name: "adm", Token: "admin-secret", Admin: true},
	}})
	admin := []string{"Authorization", "Bearer admin-secret"}
	cons := []string{"Authorization", "Bearer consume-secret"}
	other := []string{"Authorization", "Bearer other-secret"}
	ts.createTopic("pay.a", 1, admin...)
	m := ts.join("g", `{"topics":["pay.a"]}`, cons...)
	lastSeen := func() time.Time {
		t.Helper()
		var st api.GroupOffsets
		decodeJSON(t, ts.must(http.StatusOK, "GET", "/v1/groups/g/offsets", "", admin...).body, &st)
		if len(st.Members) != 1 || st.Members[0].MemberID != m.MemberID {
			t.Fatalf("members %+v, want %s alone", st.Members, m.MemberID)
		}
		at, err := time.Parse(time.RFC3339Nano, st.Members[0].LastSeen)
		if err != nil {
			t.Fatal(err)
		}
		return at
	}
	joined := lastSeen()
	// last_seen has millisecond precision: let the clock pass it, so a heartbeat would show.
	for time.Since(joined) < 2*time.Millisecond {
	}

	path := "/v1/groups/g/members/" + m.MemberID
	for _, method := range []string{"GET", "DELETE"} {
		p := path
		if method == "GET" {
			p += "/messages"
		}
		r := ts.must(http.StatusForbidden, method, p, "", other...)
		if e := errorBody(t, r); e.Error.Code != "forbidden" || e.Error.Field != "member" {
			t.Errorf("%s %s with a token without consume on pay.a: %+v", method, p, e.Error)
		}
		if got := lastSeen(); !got.Equal(joined) {
			t.Fatalf("a %s refused 403 moved last_seen from %v to %v", method, joined, got)
		}
	}
	ts.must(http.StatusOK, "GET", path+"/messages", "", cons...)
	if got := lastSeen(); !got.After(joined) {
		t.Fatalf("an allowed poll left last_seen at %v (joined %v)", got, joined)
	}
}

// FuzzDecodeGroupRequests feeds arbitrary bodies to the join and commit decoders: they must
// never panic, and every rejection is a 4xx API error.
func FuzzDecodeGroupRequests(f *testing.F) {
	for _, s := range []string{
		`{"topics":["t"],"mode":"clustered"}`,
		`{"topics":["a","b"],"mode":"broadcast","from":"earliest","session_timeout_ms":1000,"consumer_id":"n1"}`,
		`{"member_id":"m-1","offsets":[{"topic":"t","partition":0,"offset":42}]}`,
		`{"offsets":[{"topic":null}]}`, `[]`, `{"topics":[1]}`, ``, `{"member_id":"x","offsets":[{"partition":99999999999}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		check := func(err error) {
			if err == nil {
				return
			}
			ae := errorFor(err)
			if ae.status < 400 || ae.status >= 500 || ae.code == "internal_error" {
				t.Fatalf("body %q: error %v maps to %d %s", body, err, ae.status, ae.code)
			}
		}
		req, err := decodeJoin("g", body)
		check(err)
		if err == nil && (len(req.Topics) == 0 || req.SessionTimeout < MinSessionTimeout || req.SessionTimeout > MaxSessionTimeout ||
			(req.Mode != groups.Clustered && req.Mode != groups.Broadcast)) {
			t.Fatalf("body %q accepted as %+v", body, req)
		}
		id, offs, err := decodeCommit(body)
		check(err)
		if err == nil {
			if !broker.ValidName(id) || len(offs) == 0 {
				t.Fatalf("body %q accepted with member %q and %d offsets", body, id, len(offs))
			}
			for _, o := range offs {
				if o.Next < 0 || o.Partition < 0 || !broker.ValidName(o.Topic) {
					t.Fatalf("body %q accepted offset %+v", body, o)
				}
			}
		}
	})
}
