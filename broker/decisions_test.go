package broker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func decisionMap(b *Broker) map[string]string {
	m := map[string]string{}
	for _, d := range b.Decisions() {
		m[d.Key] = string(d.Value)
	}
	return m
}

func sameDecisions(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s: decisions %v, want %v", what, got, want)
	}
}

// Decision batches are fsync'd when AppendDecisions returns, whatever the fsync policy, and the
// held decisions (the last value per key, dropped keys gone) come back after a restart: from
// the log after the checkpoint, from the checkpoint, and from a full rebuild when the
// checkpoint is moved aside.
func TestDecisionsDurableAndRebuilt(t *testing.T) {
	for _, pol := range []FsyncPolicy{{Mode: FsyncAlways}, {Mode: FsyncInterval, Interval: time.Hour}, {Mode: FsyncNever}} {
		t.Run(pol.String(), func(t *testing.T) {
			dir := t.TempDir()
			o := testOptions(t, dir)
			o.Fsync = pol
			o.CheckpointInterval = time.Hour
			b := mustOpen(t, o)
			mustCreate(t, b, "t", 1)
			ctx := context.Background()
			if _, err := b.Produce(ctx, "t", []Message{msg("before")}, ""); err != nil {
				t.Fatal(err)
			}
			if err := b.AppendDecisions(ctx, []DecisionRecord{{Key: "g1", Value: []byte("commit-1")}, {Key: "g2", Value: []byte("preparing-2")}, {Key: "g3", Value: []byte("rollback-3")}}); err != nil {
				t.Fatal(err)
			}
			if d, e := b.log.durable.Load(), b.log.end.Load(); d < e {
				t.Fatalf("AppendDecisions returned with the log durable to %d of %d", d, e)
			}
			if err := b.checkpoint(); err != nil {
				t.Fatal(err)
			}
			// After the checkpoint: a newer value, a drop, a new key.
			if err := b.AppendDecisions(ctx, []DecisionRecord{{Key: "g2", Value: []byte("commit-2")}, {Key: "g3"}, {Key: "g4", Value: []byte("commit-4")}}); err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"g1": "commit-1", "g2": "commit-2", "g4": "commit-4"}
			sameDecisions(t, "live", decisionMap(b), want)
			b.Close()

			b = mustOpen(t, o)
			sameDecisions(t, "after a restart", decisionMap(b), want)
			if err := b.checkpoint(); err != nil {
				t.Fatal(err)
			}
			b.Close()
			b = mustOpen(t, o)
			sameDecisions(t, "after a restart from a checkpoint holding them", decisionMap(b), want)
			b.Close()

			if err := os.Rename(filepath.Join(dir, checkpointFileName), filepath.Join(dir, "aside.json")); err != nil {
				t.Fatal(err)
			}
			b = mustOpen(t, o)
			defer b.Close()
			sameDecisions(t, "after a full rebuild", decisionMap(b), want)
			if got := fetchAll(t, b, "t", 0); len(got) != 1 || string(got[0].Value) != "before" {
				t.Fatalf("decision records were read as messages: %v", got)
			}
		})
	}
}

// Retention re-writes held decisions at the head of the log before it deletes the segment they
// are in: the log shrinks, and a full rebuild of what is left still finds them.
func TestDecisionsSurviveRetention(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	o := testOptions(t, dir)
	o.SegmentBytes = 4096
	o.IndexSegmentEntries = 16
	o.RetentionBytes = 2000
	b := mustOpen(t, o)
	mustCreate(t, b, "a", 2)
	if err := b.AppendDecisions(ctx, []DecisionRecord{{Key: "kept", Value: []byte("commit")}, {Key: "dropped", Value: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	if err := b.AppendDecisions(ctx, []DecisionRecord{{Key: "dropped"}}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 300; i++ {
		if _, err := b.Produce(ctx, "a", []Message{{Value: []byte(fmt.Sprintf("filler-%03d", i)), Partition: -1}}, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.checkpoint(); err != nil {
		t.Fatal(err)
	}
	b.EnforceRetention()
	b.EnforceRetention()
	bounds := b.log.segmentBounds()
	if bounds[0][0] == 0 {
		t.Fatal("retention deleted nothing: the decision pins the log")
	}
	b.decMu.Lock()
	pos := b.decisions["kept"].pos
	b.decMu.Unlock()
	if pos < bounds[0][0] {
		t.Fatalf("the decision's batch at %d was deleted (log starts at %d)", pos, bounds[0][0])
	}
	b.Close()
	if err := os.Remove(filepath.Join(dir, checkpointFileName)); err != nil {
		t.Fatal(err)
	}
	b = mustOpen(t, o)
	defer b.Close()
	sameDecisions(t, "full rebuild after retention", decisionMap(b), map[string]string{"kept": "commit"})
}

// XACommitDecided commits an idle branch and records the decision in one batch: the messages
// are readable and the decision held when it returns (fsync'd under fsync never too), the
// branch is never listed by recover, and both survive a restart and a full rebuild.
func TestXACommitDecided(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(t, dir)
	o.Fsync = FsyncPolicy{Mode: FsyncNever}
	o.CheckpointInterval = time.Hour
	b := mustOpen(t, o)
	mustCreate(t, b, "a", 2)
	ctx := context.Background()
	x := xid(1)
	if err := b.XAStart(x, XANoFlags, 0); err != nil {
		t.Fatal(err)
	}
	if err := b.XAAdd(x, txMsgs("a", "m0", "m1")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.XACommitDecided(ctx, x, DecisionRecord{Key: "g", Value: []byte("commit")}); err == nil {
		t.Fatal("a decided commit of an active branch was taken")
	}
	if err := b.XAEnd(x, XASuccess); err != nil {
		t.Fatal(err)
	}
	pos, err := b.XACommitDecided(ctx, x, DecisionRecord{Key: "g", Value: []byte("commit")})
	if err != nil || len(pos) != 2 {
		t.Fatalf("decided commit: %v %v", pos, err)
	}
	if d, e := b.log.durable.Load(), b.log.end.Load(); d < e {
		t.Fatalf("XACommitDecided returned with the log durable to %d of %d", d, e)
	}
	check := func(what string) {
		t.Helper()
		sameDecisions(t, what, decisionMap(b), map[string]string{"g": "commit"})
		p0, p1 := fetchAll(t, b, "a", 0), fetchAll(t, b, "a", 1)
		if len(p0) != 1 || len(p1) != 1 || string(p0[0].Value) != "m0" || string(p1[0].Value) != "m1" {
			t.Fatalf("%s: messages %v %v", what, p0, p1)
		}
		if r := b.XARecover(); len(r) != 0 {
			t.Fatalf("%s: recover lists %v", what, r)
		}
	}
	check("live")
	b.Close()
	b = mustOpen(t, o)
	check("after a restart")
	b.Close()
	if err := os.Remove(filepath.Join(dir, checkpointFileName)); err != nil {
		t.Fatal(err)
	}
	b = mustOpen(t, o)
	defer b.Close()
	check("after a full rebuild")
}
