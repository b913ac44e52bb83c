package broker

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
)

// TestDropCorruptBatch: the operator drops the corrupt batch that start-up refused; the batches
// after it keep their offsets, readers skip the lost offset, the dropped bytes are in repair/,
// and the log verifies clean.
func TestDropCorruptBatch(t *testing.T) {
	for _, withCheckpoint := range []bool{false, true} {
		name := "no checkpoint"
		if withCheckpoint {
			name = "checkpoint covers it"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			b := mustOpen(t, testOptions(t, dir))
			mustCreate(t, b, "t", 1)
			ends := produceN(t, b, 10)
			if withCheckpoint {
				b.Close()
			} else {
				b.abandon()
			}
			seg := lastSegment(t, dir)
			raw, _ := os.ReadFile(seg)
			dropped := bytes.Clone(raw[ends[5]:ends[6]])
			overwrite(t, seg, ends[5]+batchHeaderSize+recordHeaderSize, []byte{'X'}) // v6's value

			if _, err := DropCorruptBatch(dir, ends[4], nil); err == nil || !strings.Contains(err.Error(), "no corrupt batch") {
				t.Fatalf("drop at a valid batch: %v", err)
			}
			rep, err := DropCorruptBatch(dir, ends[5], nil)
			if err != nil {
				t.Fatal(err)
			}
			saved, err := os.ReadFile(rep.Copy)
			if err != nil || len(saved) != len(dropped) || rep.Bytes != int64(len(dropped)) {
				t.Fatalf("saved copy %d bytes (%v), want %d", len(saved), err, len(dropped))
			}
			if v, err := VerifyLog(dir); err != nil || v.Corruption != nil || v.TornBytes != 0 || v.Batches != 10 {
				t.Fatalf("verify after the drop: %+v %v", v, err)
			}
			b = mustOpen(t, testOptions(t, dir))
			defer func() { b.Close() }()
			got := fetchAll(t, b, "t", 0)
			var offs []int64
			for _, m := range got {
				offs = append(offs, m.Offset)
			}
			if len(got) != 9 || got[6].Offset != 7 || string(got[6].Value) != "v7" || string(got[5].Value) != "v5" {
				t.Fatalf("after the drop: %v at %v, want v0..v5, v7..v9 at their offsets", values(got), offs)
			}
			res, err := b.Produce(context.Background(), "t", []Message{msg("v10")}, "")
			if err != nil || res.Offsets[0].Offset != 10 {
				t.Fatalf("produce after the drop: %+v %v", res, err)
			}
			// Once more from the checkpoint the rebuild wrote, with the gap in the index.
			b.Close()
			b = mustOpen(t, testOptions(t, dir))
			if got := fetchAll(t, b, "t", 0); len(got) != 10 || got[9].Offset != 10 {
				t.Fatalf("after a restart: %v", values(got))
			}
		})
	}
}
