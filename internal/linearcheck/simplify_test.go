package linearcheck

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

func TestSimplify(t *testing.T) {
	for _, tc := range []struct {
		name         string
		completeRead bool
		ops          []porcupine.Operation
		kept         int // operations left
		ok           bool
	}{
		{name: "an attempt answered fresh settles the unknown ones of its key", kept: 2, ok: true, ops: []porcupine.Operation{
			unknown(0, 1, "k1", "a"),
			unknown(0, 2, "k1", "a"),
			prod(0, 3, 4, "k1", ids("a"), 0),
			fetch(1, 5, 6, 0, 10, 1, "a"),
		}},
		{name: "a second copy after a fresh answer stays illegal", kept: 2, ok: false, ops: []porcupine.Operation{
			unknown(0, 1, "k1", "a"),
			prod(0, 3, 4, "k1", ids("a"), 0),
			fetch(1, 5, 6, 0, 10, 2, "a", "a"),
		}},
		{name: "an attempt applied and answered by a duplicate is kept", kept: 3, ok: true, ops: []porcupine.Operation{
			unknown(0, 1, "k1", "a"),
			dup(0, 3, 4, "k1", ids("a"), 0),
			fetch(1, 5, 6, 0, 10, 1, "a"),
		}},
		{name: "without a complete read an unseen attempt is kept", kept: 2, ok: true, ops: []porcupine.Operation{
			unknown(0, 1, "", "a"),
			fetch(1, 5, 6, 0, 10, 0),
		}},
		{name: "with a complete read an unseen attempt goes", completeRead: true, kept: 2, ok: true, ops: []porcupine.Operation{
			unknown(0, 1, "", "a"),
			prod(2, 2, 3, "k2", ids("b"), 0),
			fetch(1, 5, 6, 0, 10, 1, "b"),
		}},
		{name: "with a complete read a seen attempt stays", completeRead: true, kept: 2, ok: true, ops: []porcupine.Operation{
			unknown(0, 1, "", "a"),
			fetch(1, 5, 6, 0, 10, 1, "a"),
		}},
		{name: "an acknowledged message lost is still illegal", completeRead: true, kept: 2, ok: false, ops: []porcupine.Operation{
			unknown(0, 1, "", "a"), // unseen: dropped
			prod(2, 2, 3, "k2", ids("b"), 0),
			fetch(1, 5, 6, 0, 10, 0),
		}},
		{name: "attempts closed at the first observation, whichever applied", completeRead: true, kept: 4, ok: true, ops: []porcupine.Operation{
			unknown(0, 1, "k1", "a"), // never reached the server
			unknown(0, 3, "k1", "a"), // applied at 4
			prod(1, 5, 6, "k2", ids("b"), 1),
			fetch(2, 7, 8, 0, 10, 2, "a", "b"),
			dup(0, 9, 10, "k1", ids("a"), 0),
		}},
		{name: "two attempts both applied stay illegal once closed", completeRead: true, kept: 2, ok: false, ops: []porcupine.Operation{
			unknown(0, 1, "k1", "a"),
			unknown(0, 3, "k1", "a"),
			fetch(2, 7, 8, 0, 10, 2, "a", "a"),
		}},
		{name: "a closed attempt keeps its place before what it observed", completeRead: true, kept: 4, ok: false, ops: []porcupine.Operation{
			unknown(0, 1, "", "a"),
			fetch(2, 2, 3, 0, 10, 0),
			fetch(2, 4, 5, 0, 10, 1, "a"),
			prod(1, 6, 7, "k2", ids("b"), 0), // offset 0 again, after a was read there
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Simplify(tc.ops, tc.completeRead)
			if len(got) != tc.kept {
				t.Fatalf("kept %d operations, want %d", len(got), tc.kept)
			}
			want := porcupine.Illegal
			if tc.ok {
				want = porcupine.Ok
			}
			if res := Check(0, got, 5*time.Second); res.Verdict != want {
				t.Fatalf("verdict %s, want %s\n%s", res.Verdict, want, res.Explain)
			}
		})
	}
}

// TestSavedHistory checks a history a failed run saved (SaveHistory), named by
// LINEARCHECK_HISTORY, and reports how long the check took and what Simplify left.
func TestSavedHistory(t *testing.T) {
	path := os.Getenv("LINEARCHECK_HISTORY")
	if path == "" {
		t.Skip("LINEARCHECK_HISTORY names no saved history")
	}
	ops, err := LoadHistory(path)
	if err != nil {
		t.Fatal(err)
	}
	simple := Simplify(ops, true)
	res := Check(0, simple, 10*time.Minute)
	t.Logf("%d operations, %d after Simplify (%d open-ended): %v in %v\n%s", len(ops), len(simple), res.Open, res.Verdict, res.Took, res.Explain)
}

// TestSimplifyRetriedAttempts is the history shape of a server down for a while: the first
// attempt of a request applied but its answer was lost, and the producer retried it with the
// same key every few milliseconds until the server was back and answered "duplicate", while
// other producers and fetchers went on around it. Each retried attempt is closed at that
// answer, so all overlap; porcupine tries every subset of them as "linearized so far", which
// is exponential in their number (a CI run hit the checker's two-minute limit on 294
// operations). Only the earliest attempt of a request can matter (see Simplify), so the check
// must finish at once.
func TestSimplifyRetriedAttempts(t *testing.T) {
	for _, seenFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("seen by a fetch before the retries %v", seenFirst), func(t *testing.T) {
			retriedAttempts(t, seenFirst)
		})
	}
}

// retriedAttempts checks the history of TestSimplifyRetriedAttempts; with seenFirst a fetch
// reads the request's messages before the retries start (so they are called after an
// observation and would stay open-ended), otherwise only the final duplicate answer observes it.
func retriedAttempts(t *testing.T, seenFirst bool) {
	const retries = 40
	var ops []porcupine.Operation
	ops = append(ops, unknown(0, 1, "k1", "a", "a2")) // applied at 2, answer lost
	if seenFirst {
		ops = append(ops, fetch(1, 3, 4, 0, 10, 2, "a", "a2"))
	}
	end := int64(2)
	at := int64(10)
	for i := 0; i < retries; i++ {
		ops = append(ops, unknown(0, at, "k1", "a", "a2"))
		id := fmt.Sprintf("b%d", i)
		ops = append(ops, prod(2, at+1, at+3, fmt.Sprintf("kb%d", i), ids(id), end))
		end++
		ops = append(ops, fetch(1, at+4, at+5, end-1, 10, end, id))
		at += 10
	}
	ops = append(ops, dup(0, at, at+1, "k1", ids("a", "a2"), 0, 1))
	all := []string{"a", "a2"}
	for i := 0; i < retries; i++ {
		all = append(all, fmt.Sprintf("b%d", i))
	}
	ops = append(ops, fetch(1, at+2, at+3, 0, 100, end, all...))

	got := Simplify(ops, true)
	if want := len(ops) - retries; len(got) != want { // the first attempt is kept
		t.Fatalf("kept %d operations, want %d (the retried attempts of k1 dropped)", len(got), want)
	}
	if res := Check(0, got, 10*time.Second); res.Verdict != porcupine.Ok {
		t.Fatalf("verdict %s in %v, want Ok\n%s", res.Verdict, res.Took, res.Explain)
	}
	// The same history with a second copy of k1's request appended by the broker stays illegal.
	bad := append(append([]porcupine.Operation(nil), ops[:len(ops)-1]...), fetch(1, at+2, at+3, end, 100, end+2, "a", "a2"))
	if res := Check(0, Simplify(bad, true), 10*time.Second); res.Verdict != porcupine.Illegal {
		t.Fatalf("a second copy of a retried request: verdict %s, want Illegal", res.Verdict)
	}
}
