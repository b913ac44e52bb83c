package broker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestIdempotencyKeysExpireOnClusterMembers: once the idempotency window has passed, the
// retention pass forgets the keys, in memory and on disk, on a cluster member as on a single
// node. A cluster member's pass only proposed the retention record and returned, so its keys
// were never forgotten: every keyed produce stayed in memory (imago_broker_idempotency_keys
// only grew) and its dedupe files were never deleted, until memory or disk ran out. Within the
// window the keys are kept: a retry is a duplicate.
func TestIdempotencyKeysExpireOnClusterMembers(t *testing.T) {
	for _, replicated := range []bool{false, true} {
		t.Run(fmt.Sprintf("replicated=%v", replicated), func(t *testing.T) {
			clk := newStepClocks()
			dir := t.TempDir()
			o := manualOptions(t, dir)
			o.Now, o.Elapsed = clk.now, clk.elapsed
			o.IdempotencyWindow = time.Hour // dedupe files rotate every 2.5 minutes
			o.Replicated = replicated
			b := mustOpen(t, o)
			defer b.Close()
			if replicated {
				b.SetProposer(&heldProposer{b: b, term: 1, auto: true})
			}
			mustCreate(t, b, "t", 1)
			ctx := context.Background()
			const keys = 20
			for i := 0; i < keys; i++ {
				if _, err := b.Produce(ctx, "t", []Message{msg(fmt.Sprint("pay ", i))}, fmt.Sprint("k", i)); err != nil {
					t.Fatal(err)
				}
				clk.pass(time.Minute) // the keys span several dedupe files
			}
			if err := b.Checkpoint(); err != nil { // the files are durable and named by a checkpoint
				t.Fatal(err)
			}
			files := dedupeFiles(t, dir)
			if len(files) < 2 {
				t.Fatalf("dedupe files %v: want the keys spread over several", files)
			}

			// Within the window (the last key is 1 minute old): kept, a retry is a duplicate.
			b.EnforceRetention()
			if n := b.Stats().IdempotencyKeys; n != keys {
				t.Fatalf("within the window: %d keys remembered, want %d", n, keys)
			}
			last := keys - 1
			res, err := b.Produce(ctx, "t", []Message{msg(fmt.Sprint("pay ", last))}, fmt.Sprint("k", last))
			if err != nil || !res.Duplicate || res.Offsets[0].Offset != int64(last) {
				t.Fatalf("retry within the window: %+v %v, want a duplicate of offset %d", res, err, last)
			}

			// Past the window by both clocks: the pass forgets them and deletes their files, all
			// but the one keys are appended to now (never deleted).
			clk.pass(2 * time.Hour)
			b.EnforceRetention()
			if n := b.Stats().IdempotencyKeys; n != 0 {
				t.Errorf("past the window: %d keys still remembered, want 0", n)
			}
			if err := b.Checkpoint(); err != nil { // makes the deletions durable
				t.Fatal(err)
			}
			for _, f := range files[:len(files)-1] {
				if _, err := os.Stat(filepath.Join(dir, "dedupe", f)); err == nil {
					t.Errorf("past the window: dedupe file %s is still there", f)
				}
			}
		})
	}
}

func dedupeFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "dedupe"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out // sorted by name: oldest first
}
