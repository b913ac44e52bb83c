package linearcheck

import (
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
		{name: "attempts closed at the first observation, whichever applied", completeRead: true, kept: 5, ok: true, ops: []porcupine.Operation{
			unknown(0, 1, "k1", "a"), // never reached the server
			unknown(0, 3, "k1", "a"), // applied at 4
			prod(1, 5, 6, "k2", ids("b"), 1),
			fetch(2, 7, 8, 0, 10, 2, "a", "b"),
			dup(0, 9, 10, "k1", ids("a"), 0),
		}},
		{name: "two attempts both applied stay illegal once closed", completeRead: true, kept: 3, ok: false, ops: []porcupine.Operation{
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
