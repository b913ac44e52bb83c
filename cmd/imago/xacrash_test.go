package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
)

// xaCall posts one XA verb and returns the status and the decoded body.
func xaCall(t *testing.T, base, verb string, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(base+"/v1/xa/"+verb, "application/json", bytes.NewReader(b))
	if err != nil {
		return 0, map[string]any{"transport_error": err.Error()}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

func crashXid(n int) map[string]any {
	return map[string]any{"format_id": 4242, "gtrid": hex.EncodeToString([]byte(fmt.Sprintf("crash-%04d", n))), "bqual": "01"}
}

func xidKey(x map[string]any) string {
	return fmt.Sprint(x["format_id"], ":", x["gtrid"], ":", x["bqual"])
}

// branchMsgs are the messages of branch n: two per branch, spread over partitions, each value
// naming its branch so the test can tell which branches became visible.
func branchMsgs(n int) []map[string]any {
	return []map[string]any{
		{"topic": "xacrash", "value": fmt.Sprintf("b%04d-0", n), "partition": n % 4},
		{"topic": "xacrash", "value": fmt.Sprintf("b%04d-1", n), "partition": (n + 1) % 4},
	}
}

func mustXA(t *testing.T, base, verb string, body map[string]any) {
	t.Helper()
	if code, out := xaCall(t, base, verb, body); code != 200 {
		t.Fatalf("%s: %d %v", verb, code, out)
	}
}

// visibleBranches reads every partition and counts the messages of each branch.
func visibleBranches(t *testing.T, cl *client.Client) map[string]int {
	t.Helper()
	ctx := context.Background()
	seen := map[string]int{}
	for p := 0; p < 4; p++ {
		off := int64(0)
		for {
			res, err := cl.Fetch(ctx, "xacrash", p, client.FetchOptions{Offset: off, MaxMessages: 1000})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Messages) == 0 {
				break
			}
			for _, m := range res.Messages {
				var v string
				if err := json.Unmarshal(m.Value, &v); err != nil {
					t.Fatalf("value %s: %v", m.Value, err)
				}
				seen[v[:5]]++
				if m.Offset != off {
					t.Fatalf("partition %d: offset %d after %d: offsets are not dense", p, m.Offset, off-1)
				}
				off++
			}
		}
	}
	return seen
}

// TestCrashXABranches kills a real server with branches in every state: active, idle,
// prepared, and committing (commits in flight at the kill). After the restart active and idle
// branches are gone, prepared ones are in recover with their messages intact, and every
// commit cut by the kill is either complete (all of its messages visible, branch gone) or not
// at all (none visible, still prepared): never partial.
func TestCrashXABranches(t *testing.T) {
	rounds := *crashRounds
	if *crashLong {
		rounds = 50
	}
	if testing.Short() {
		rounds = 2
	}
	seed := *crashSeed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("xa crash test: %d rounds, seed %d", rounds, seed)
	rng := rand.New(rand.NewSource(seed))
	dir := t.TempDir()
	srv := startServer(t, dir)
	if _, err := srv.client().CreateTopic(context.Background(), "xacrash", client.TopicConfig{Partitions: 4}); err != nil {
		t.Fatal(err)
	}
	committed := map[string]bool{} // branch prefix → its commit was acknowledged
	n := 0
	for round := 0; round < rounds; round++ {
		base := srv.URL
		next := func() (int, map[string]any) { n++; return n, crashXid(n) }
		prefix := func(i int) string { return fmt.Sprintf("b%04d", i) }

		_, active := next()
		mustXA(t, base, "start", map[string]any{"xid": active, "flags": "noflags"})
		mustXA(t, base, "messages", map[string]any{"xid": active, "messages": branchMsgs(n)})
		activeN := n

		_, idle := next()
		mustXA(t, base, "start", map[string]any{"xid": idle, "flags": "noflags"})
		mustXA(t, base, "messages", map[string]any{"xid": idle, "messages": branchMsgs(n)})
		mustXA(t, base, "end", map[string]any{"xid": idle, "flags": "success"})
		idleN := n

		prepared := map[string]int{} // xid key → branch number
		prepare := func() map[string]any {
			i, x := next()
			mustXA(t, base, "start", map[string]any{"xid": x, "flags": "noflags"})
			mustXA(t, base, "messages", map[string]any{"xid": x, "messages": branchMsgs(i)})
			mustXA(t, base, "end", map[string]any{"xid": x, "flags": "success"})
			if code, out := xaCall(t, base, "prepare", map[string]any{"xid": x}); code != 200 || out["vote"] != "ok" {
				t.Fatalf("prepare: %d %v", code, out)
			}
			prepared[xidKey(x)] = i
			return x
		}
		for i := 0; i < 3; i++ {
			prepare()
		}
		// Branches to commit while the server is killed.
		var toCommit []map[string]any
		for i := 0; i < 40; i++ {
			toCommit = append(toCommit, prepare())
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		acks := make(chan struct{}, len(toCommit))
		work := make(chan map[string]any)
		for w := 0; w < 8; w++ { // 8 concurrent committers working through the branches
			wg.Add(1)
			go func() {
				defer wg.Done()
				for x := range work {
					code, _ := xaCall(t, base, "commit", map[string]any{"xid": x, "one_phase": false})
					if code == 200 {
						mu.Lock()
						committed[prefix(prepared[xidKey(x)])] = true
						mu.Unlock()
						acks <- struct{}{}
					}
				}
			}()
		}
		go func() {
			for _, x := range toCommit {
				work <- x
			}
			close(work)
		}()
		// Kill after a random number of acknowledged commits: some done, some in flight.
		for target := rng.Intn(len(toCommit) - 8); target > 0; target-- {
			<-acks
		}
		srv.kill()
		wg.Wait()

		srv = startServer(t, dir)
		base = srv.URL
		resp, err := http.Get(base + "/v1/xa/recover")
		if err != nil {
			t.Fatal(err)
		}
		var rec struct {
			Xids []map[string]any `json:"xids"`
		}
		json.NewDecoder(resp.Body).Decode(&rec)
		resp.Body.Close()
		inRecover := map[string]bool{}
		for _, x := range rec.Xids {
			inRecover[xidKey(x)] = true
		}
		seen := visibleBranches(t, srv.client())
		// Active and idle: gone, never visible.
		for _, x := range []struct {
			xid map[string]any
			n   int
		}{{active, activeN}, {idle, idleN}} {
			if inRecover[xidKey(x.xid)] {
				t.Fatalf("round %d: branch %d (not prepared) is in recover after the crash", round, x.n)
			}
			if c, out := xaCall(t, base, "commit", map[string]any{"xid": x.xid, "one_phase": true}); c != 404 {
				t.Fatalf("round %d: commit of a pre-crash unprepared branch answered %d %v, want 404 XAER_NOTA", round, c, out)
			}
			if seen[prefix(x.n)] != 0 {
				t.Fatalf("round %d: unprepared branch %d is visible", round, x.n)
			}
		}
		// Prepared and committing: whole or absent, never partial; absent ones still prepared.
		keys := make([]string, 0, len(prepared))
		for k := range prepared {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		finished := 0
		for _, k := range keys {
			i := prepared[k]
			switch seen[prefix(i)] {
			case 2:
				if inRecover[k] {
					t.Fatalf("round %d: branch %d is visible and still in recover", round, i)
				}
				finished++
			case 0:
				if committed[prefix(i)] {
					t.Fatalf("round %d: branch %d was acknowledged committed but is not visible", round, i)
				}
				if !inRecover[k] {
					t.Fatalf("round %d: prepared branch %d is neither visible nor in recover: lost", round, i)
				}
			default:
				t.Fatalf("round %d: branch %d is partly visible (%d of 2 messages)", round, i, seen[prefix(i)])
			}
		}
		// Finish the survivors: commit every branch still prepared; all become visible.
		for _, k := range keys {
			if !inRecover[k] {
				continue
			}
			parts := strings.SplitN(k, ":", 3)
			x := map[string]any{"format_id": 4242, "gtrid": parts[1], "bqual": parts[2]}
			mustXA(t, base, "commit", map[string]any{"xid": x, "one_phase": false})
		}
		seen = visibleBranches(t, srv.client())
		for _, i := range prepared {
			if seen[prefix(i)] != 2 {
				t.Fatalf("round %d: branch %d has %d messages after committing the survivors", round, i, seen[prefix(i)])
			}
		}
		t.Logf("round %d: %d of %d prepared branches had committed at the kill; the rest recovered and committed", round, finished, len(prepared))
	}
}
