package broker

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestDropCorruptBatchCrashAnywhere: a crash at any step of dropping a corrupt batch leaves
// either the corrupt batch (verify reports it and the drop can be run again) or a dropped batch
// whose next start rebuilds the index, never a directory that verifies clean while the index
// still points into the dropped bytes (reads of those offsets failing with corrupt_record).
func TestDropCorruptBatchCrashAnywhere(t *testing.T) {
	base := t.TempDir()
	b := mustOpen(t, testOptions(t, base))
	mustCreate(t, b, "t", 1)
	ends := produceN(t, b, 10)
	// Closing checkpoints: the index covers the batch that is about to be damaged.
	b.Close()
	overwrite(t, lastSegment(t, base), ends[5]+batchHeaderSize+recordHeaderSize, []byte{'X'}) // v6's value
	errCrash := errors.New("crash")
	for _, step := range []string{"index removed", "gap written", ""} {
		t.Run("crash after "+step, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			if out, err := exec.Command("cp", "-a", base, dir).CombinedOutput(); err != nil {
				t.Fatal(string(out), err)
			}
			crashed := false
			dropStepHook = func(s string) error {
				if s == step {
					crashed = true
					return errCrash
				}
				return nil
			}
			_, err := DropCorruptBatch(dir, ends[5], nil)
			dropStepHook = nil
			if step != "" && (!crashed || !errors.Is(err, errCrash)) {
				t.Fatalf("the drop did not stop after %q: %v", step, err)
			} else if step == "" && err != nil {
				t.Fatal(err)
			}
			v, err := VerifyLog(dir)
			if err != nil {
				t.Fatal(err)
			}
			if v.Corruption != nil {
				if v.Corruption.Position != ends[5] {
					t.Fatalf("verify after the crash: corruption at %d, want %d", v.Corruption.Position, ends[5])
				}
				if _, err := DropCorruptBatch(dir, ends[5], nil); err != nil {
					t.Fatalf("running the drop again after the crash: %v", err)
				}
			}
			b := mustOpen(t, testOptions(t, dir))
			defer b.Close()
			var got []string
			for off := int64(0); off < 10; off++ {
				res, err := b.Fetch(context.Background(), "t", 0, FetchOptions{Offset: off, MaxMessages: 1})
				if err != nil {
					t.Fatalf("fetch offset %d: %v", off, err)
				}
				for _, m := range res.Messages {
					got = append(got, fmt.Sprintf("%s@%d", m.Value, m.Offset))
				}
			}
			want := "[v0@0 v1@1 v2@2 v3@3 v4@4 v5@5 v7@7 v7@7 v8@8 v9@9]"
			if fmt.Sprint(got) != want {
				t.Fatalf("read offset by offset: %v, want %s (offset 6 dropped)", got, want)
			}
		})
	}
}
