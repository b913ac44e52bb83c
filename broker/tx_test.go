package broker

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func xid(n int) Xid {
	return Xid{FormatID: 7, Gtrid: []byte(fmt.Sprintf("g%d", n)), Bqual: []byte("b")}
}

func txMsgs(topic string, vals ...string) []TxMessage {
	out := make([]TxMessage, len(vals))
	for i, v := range vals {
		out[i] = TxMessage{Topic: topic, Message: Message{Value: []byte(v), Partition: i % 2}}
	}
	return out
}

func xaCode(err error) string {
	var xe *XAError
	if errors.As(err, &xe) {
		return xe.Code
	}
	if err == nil {
		return "ok"
	}
	return err.Error()
}

func endOffsets(t *testing.T, b *Broker, topic string) []int64 {
	t.Helper()
	info, err := b.Topic(topic)
	if err != nil {
		t.Fatal(err)
	}
	var out []int64
	for _, p := range info.Partitions {
		out = append(out, p.EndOffset)
	}
	return out
}

func TestLocalTransactionVisibility(t *testing.T) {
	b := mustOpen(t, testOptions(t, t.TempDir()))
	defer b.Close()
	mustCreate(t, b, "a", 2)
	mustCreate(t, b, "b", 1)
	id, err := b.BeginTx(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddTx(id, txMsgs("a", "a0", "a1", "a2")); err != nil {
		t.Fatal(err)
	}
	if err := b.AddTx(id, []TxMessage{{Topic: "b", Message: Message{Value: []byte("b0"), Partition: -1}}}); err != nil {
		t.Fatal(err)
	}
	// Interleave an ordinary produce: it is visible, the transaction's messages are not.
	b.Produce(context.Background(), "a", []Message{msg("plain")}, "")
	if got := endOffsets(t, b, "a"); got[0] != 1 || got[1] != 0 {
		t.Fatalf("open transaction visible: ends %v", got)
	}
	pos, err := b.CommitTx(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if len(pos) != 4 || pos[0] != (TopicPosition{"a", 0, 1}) || pos[2] != (TopicPosition{"a", 0, 2}) || pos[1] != (TopicPosition{"a", 1, 0}) || pos[3].Topic != "b" {
		t.Fatalf("commit positions %v", pos)
	}
	if v := values(fetchAll(t, b, "a", 0)); fmt.Sprint(v) != "[plain a0 a2]" {
		t.Fatalf("partition a/0 holds %v", v)
	}
	if st, _ := b.TxStatus(id); st.State != TxCommitted {
		t.Fatalf("state %s", st.State)
	}
	if _, err := b.CommitTx(context.Background(), id); !errors.Is(err, ErrTxState) {
		t.Fatalf("second commit: %v", err)
	}

	// Rollback: never visible.
	id2, _ := b.BeginTx(0)
	b.AddTx(id2, txMsgs("a", "r0", "r1"))
	if err := b.RollbackTx(context.Background(), id2); err != nil {
		t.Fatal(err)
	}
	if got := endOffsets(t, b, "a"); got[0] != 3 || got[1] != 1 {
		t.Fatalf("rolled back messages visible: %v", got)
	}
	if st, _ := b.TxStatus(id2); st.State != TxRolledBack {
		t.Fatalf("state %s", st.State)
	}
}

func TestLocalTransactionTimeout(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	o := testOptions(t, t.TempDir())
	o.Now = func() time.Time { return now }
	b := mustOpen(t, o)
	defer b.Close()
	mustCreate(t, b, "a", 2)
	id, _ := b.BeginTx(time.Second)
	b.AddTx(id, txMsgs("a", "x"))
	now = now.Add(2 * time.Second)
	if _, err := b.CommitTx(context.Background(), id); !errors.Is(err, ErrTxTimedOut) {
		t.Fatalf("commit after timeout: %v", err)
	}
	if st, _ := b.TxStatus(id); st.State != TxTimedOut {
		t.Fatalf("state %s", st.State)
	}
	if _, err := b.TxStatus("nope"); !errors.Is(err, ErrTxNotFound) {
		t.Fatal(err)
	}
}

// TestXAStateMachine drives every verb from every state and checks the XA code.
func TestXAStateMachine(t *testing.T) {
	b := mustOpen(t, testOptions(t, t.TempDir()))
	defer b.Close()
	mustCreate(t, b, "a", 2)
	ctx := context.Background()
	n := 0
	// setup brings a fresh branch into a state and returns it.
	setup := map[TxState]func() Xid{
		"none": func() Xid { n++; return xid(n) },
		TxOpen: func() Xid {
			n++
			x := xid(n)
			b.XAStart(x, XANoFlags, 0)
			b.XAAdd(x, txMsgs("a", "m"))
			return x
		},
	}
	setup[TxIdle] = func() Xid { x := setup[TxOpen](); b.XAEnd(x, XASuccess); return x }
	setup[TxSuspended] = func() Xid { x := setup[TxOpen](); b.XAEnd(x, XASuspend); return x }
	setup[TxRollbackOnly] = func() Xid { x := setup[TxOpen](); b.XAEnd(x, XAFail); return x }
	setup[TxPrepared] = func() Xid {
		x := setup[TxIdle]()
		if _, err := b.XAPrepare(ctx, x); err != nil {
			t.Fatal(err)
		}
		return x
	}
	setup[TxHeurCommitted] = func() Xid { x := setup[TxPrepared](); b.XAHeuristic(ctx, x, true); return x }
	setup[TxHeurRolledBack] = func() Xid { x := setup[TxPrepared](); b.XAHeuristic(ctx, x, false); return x }

	verbs := map[string]func(Xid) error{
		"start":       func(x Xid) error { return b.XAStart(x, XANoFlags, 0) },
		"join":        func(x Xid) error { return b.XAStart(x, XAJoin, 0) },
		"resume":      func(x Xid) error { return b.XAStart(x, XAResume, 0) },
		"add":         func(x Xid) error { return b.XAAdd(x, txMsgs("a", "more")) },
		"end":         func(x Xid) error { return b.XAEnd(x, XASuccess) },
		"end-fail":    func(x Xid) error { return b.XAEnd(x, XAFail) },
		"suspend":     func(x Xid) error { return b.XAEnd(x, XASuspend) },
		"prepare":     func(x Xid) error { _, err := b.XAPrepare(ctx, x); return err },
		"commit":      func(x Xid) error { _, err := b.XACommit(ctx, x, false); return err },
		"commit-1p":   func(x Xid) error { _, err := b.XACommit(ctx, x, true); return err },
		"rollback":    func(x Xid) error { return b.XARollback(ctx, x) },
		"forget":      func(x Xid) error { return b.XAForget(ctx, x) },
		"heur-commit": func(x Xid) error { return b.XAHeuristic(ctx, x, true) },
	}
	P, N, D, R := XAERProto, XAERNota, XAERDupID, XARBRollback
	// want[state][verb]
	want := map[TxState]map[string]string{
		"none":           {"start": "ok", "join": N, "resume": N, "add": N, "end": N, "end-fail": N, "suspend": N, "prepare": N, "commit": N, "commit-1p": N, "rollback": N, "forget": N, "heur-commit": N},
		TxOpen:           {"start": D, "join": P, "resume": P, "add": "ok", "end": "ok", "end-fail": "ok", "suspend": "ok", "prepare": P, "commit": P, "commit-1p": P, "rollback": P, "forget": P, "heur-commit": P},
		TxIdle:           {"start": D, "join": "ok", "resume": P, "add": P, "end": P, "end-fail": P, "suspend": P, "prepare": "ok", "commit": P, "commit-1p": "ok", "rollback": "ok", "forget": P, "heur-commit": P},
		TxSuspended:      {"start": D, "join": P, "resume": "ok", "add": P, "end": "ok", "end-fail": "ok", "suspend": P, "prepare": P, "commit": P, "commit-1p": P, "rollback": "ok", "forget": P, "heur-commit": P},
		TxRollbackOnly:   {"start": D, "join": R, "resume": R, "add": P, "end": P, "end-fail": P, "suspend": P, "prepare": R, "commit": R, "commit-1p": R, "rollback": "ok", "forget": P, "heur-commit": P},
		TxPrepared:       {"start": D, "join": P, "resume": P, "add": P, "end": P, "end-fail": P, "suspend": P, "prepare": P, "commit": "ok", "commit-1p": P, "rollback": "ok", "forget": P, "heur-commit": "ok"},
		TxHeurCommitted:  {"start": D, "join": P, "resume": P, "add": P, "end": P, "end-fail": P, "suspend": P, "prepare": P, "commit": XAHeurCom, "commit-1p": XAHeurCom, "rollback": XAHeurCom, "forget": "ok", "heur-commit": P},
		TxHeurRolledBack: {"start": D, "join": P, "resume": P, "add": P, "end": P, "end-fail": P, "suspend": P, "prepare": P, "commit": XAHeurRB, "commit-1p": XAHeurRB, "rollback": XAHeurRB, "forget": "ok", "heur-commit": P},
	}
	for state, row := range want {
		for verb, code := range row {
			x := setup[state]()
			if got := xaCode(verbs[verb](x)); got != code {
				t.Errorf("%s in state %s: got %s, want %s", verb, state, got, code)
			}
		}
	}
	// An empty branch votes rdonly and needs no phase 2.
	x := xid(9999)
	b.XAStart(x, XANoFlags, 0)
	b.XAEnd(x, XASuccess)
	if ro, err := b.XAPrepare(ctx, x); !ro || err != nil {
		t.Fatalf("empty branch: rdonly=%v err=%v", ro, err)
	}
	if _, err := b.XACommit(ctx, x, false); xaCode(err) != N {
		t.Fatalf("commit after rdonly: %v", err)
	}
	// Bad xids are refused at the door.
	for _, bad := range []Xid{{Gtrid: nil, Bqual: []byte("b")}, {Gtrid: make([]byte, 65), Bqual: []byte("b")}, {Gtrid: []byte("g"), Bqual: make([]byte, 65)}} {
		if got := xaCode(b.XAStart(bad, XANoFlags, 0)); got != XAERInval {
			t.Errorf("xid %v: %s", bad, got)
		}
	}
}

func TestXAVisibilityAndRecoverAcrossRestart(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(fmt.Sprintf("crash=%v", crash), func(t *testing.T) {
			dir := t.TempDir()
			ctx := context.Background()
			b := mustOpen(t, testOptions(t, dir))
			mustCreate(t, b, "a", 2)
			// One branch in each state.
			active, idle, prepared, committed, rolled := xid(1), xid(2), xid(3), xid(4), xid(5)
			for _, x := range []Xid{active, idle, prepared, committed, rolled} {
				b.XAStart(x, XANoFlags, 0)
				b.XAAdd(x, txMsgs("a", x.String()+"-0", x.String()+"-1"))
			}
			for _, x := range []Xid{idle, prepared, committed, rolled} {
				b.XAEnd(x, XASuccess)
			}
			for _, x := range []Xid{prepared, committed, rolled} {
				if _, err := b.XAPrepare(ctx, x); err != nil {
					t.Fatal(err)
				}
			}
			if got := endOffsets(t, b, "a"); got[0] != 0 || got[1] != 0 {
				t.Fatalf("prepared messages visible: %v", got)
			}
			if _, err := b.XACommit(ctx, committed, false); err != nil {
				t.Fatal(err)
			}
			if err := b.XARollback(ctx, rolled); err != nil {
				t.Fatal(err)
			}
			if got := endOffsets(t, b, "a"); got[0] != 1 || got[1] != 1 {
				t.Fatalf("after one commit: %v", got)
			}
			if crash {
				b.abandon()
			} else {
				b.Close()
			}
			b = mustOpen(t, testOptions(t, dir))
			defer b.Close()
			rec := b.XARecover()
			if len(rec) != 1 || rec[0].String() != prepared.String() {
				t.Fatalf("recover after restart: %v", rec)
			}
			for _, x := range []Xid{active, idle} {
				if _, ok := b.XAState(x); ok {
					t.Fatalf("%s survived the restart", x)
				}
			}
			if _, err := b.XACommit(ctx, prepared, false); err != nil {
				t.Fatalf("commit prepared after restart: %v", err)
			}
			got := append(values(fetchAll(t, b, "a", 0)), values(fetchAll(t, b, "a", 1))...)
			want := fmt.Sprint([]string{committed.String() + "-0", prepared.String() + "-0", committed.String() + "-1", prepared.String() + "-1"})
			if fmt.Sprint(got) != want {
				t.Fatalf("messages %v, want %v", got, want)
			}
			if len(b.XARecover()) != 0 {
				t.Fatal("recover not empty after commit")
			}
		})
	}
}

func TestXAPreparedSurvivesCheckpointAndCompaction(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	o := testOptions(t, dir)
	o.SegmentBytes = 4096
	o.IndexSegmentEntries = 16
	o.RetentionBytes = 2000
	b := mustOpen(t, o)
	mustCreate(t, b, "a", 2)
	x := xid(1)
	b.XAStart(x, XANoFlags, 0)
	b.XAAdd(x, txMsgs("a", "keep-0", "keep-1"))
	b.XAEnd(x, XASuccess)
	if _, err := b.XAPrepare(ctx, x); err != nil {
		t.Fatal(err)
	}
	// Push the prepare batch far behind: many segments of other traffic, checkpoints, retention.
	for i := 0; i < 300; i++ {
		b.Produce(ctx, "a", []Message{{Value: []byte(fmt.Sprintf("filler-%03d", i)), Partition: -1}}, "")
	}
	if err := b.checkpoint(); err != nil {
		t.Fatal(err)
	}
	b.EnforceRetention()
	b.EnforceRetention()
	bounds := b.log.segmentBounds()
	b.txMu.Lock()
	pos := b.txs[x.String()].preparePos
	b.txMu.Unlock()
	if pos < bounds[0][0] {
		t.Fatalf("prepare batch at %d was deleted (log starts at %d)", pos, bounds[0][0])
	}
	if bounds[0][0] == 0 {
		t.Fatalf("retention deleted nothing: the prepared branch pins the log")
	}
	b.Close()
	b = mustOpen(t, o)
	defer b.Close()
	if rec := b.XARecover(); len(rec) != 1 {
		t.Fatalf("recover %v", rec)
	}
	res, err := b.XACommit(ctx, x, false)
	if err != nil || len(res) != 2 {
		t.Fatalf("commit: %v %v", res, err)
	}
	m, err := b.Fetch(ctx, "a", res[0].Partition, FetchOptions{Offset: res[0].Offset, MaxMessages: 1})
	if err != nil || string(m.Messages[0].Value) != "keep-0" {
		t.Fatalf("fetch committed: %+v %v", m, err)
	}
}

func TestXAHeuristicSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	b := mustOpen(t, testOptions(t, dir))
	mustCreate(t, b, "a", 2)
	c, r := xid(1), xid(2)
	for _, x := range []Xid{c, r} {
		b.XAStart(x, XANoFlags, 0)
		b.XAAdd(x, txMsgs("a", "h"))
		b.XAEnd(x, XASuccess)
		b.XAPrepare(ctx, x)
	}
	if err := b.XAHeuristic(ctx, c, true); err != nil {
		t.Fatal(err)
	}
	if err := b.XAHeuristic(ctx, r, false); err != nil {
		t.Fatal(err)
	}
	b.abandon()
	b = mustOpen(t, testOptions(t, dir))
	defer b.Close()
	if got := xaCode(func() error { _, err := b.XACommit(ctx, c, false); return err }()); got != XAHeurCom {
		t.Fatalf("commit after heuristic commit: %s", got)
	}
	if got := xaCode(b.XARollback(ctx, r)); got != XAHeurRB {
		t.Fatalf("rollback after heuristic rollback: %s", got)
	}
	if len(b.XARecover()) != 2 {
		t.Fatalf("recover %v", b.XARecover())
	}
	if len(fetchAll(t, b, "a", 0)) != 1 {
		t.Fatal("heuristic commit's message missing")
	}
	b.XAForget(ctx, c)
	b.XAForget(ctx, r)
	if len(b.XARecover()) != 0 {
		t.Fatal("forget did not clear")
	}
}

func TestOnePhaseCommitFailureKeepsBranchIdle(t *testing.T) {
	b := mustOpen(t, testOptions(t, t.TempDir()))
	mustCreate(t, b, "a", 1)
	x := xid(1)
	if err := b.XAStart(x, XANoFlags, 0); err != nil {
		t.Fatal(err)
	}
	if err := b.XAAdd(x, txMsgs("a", "v")); err != nil {
		t.Fatal(err)
	}
	if err := b.XAEnd(x, XASuccess); err != nil {
		t.Fatal(err)
	}
	b.Close() // submit now fails with ErrClosed; ErrBackpressure takes the same path on a live broker
	if _, err := b.XACommit(context.Background(), x, true); xaCode(err) != XAERRMFail {
		t.Fatalf("commit: %v", err)
	}
	if st, _ := b.XAState(x); st != TxIdle {
		t.Errorf("branch is %s after a failed one-phase commit, want idle", st)
	}
	if got := b.XARecover(); len(got) != 0 {
		t.Errorf("recover lists a branch that never prepared: %v", got)
	}
}
