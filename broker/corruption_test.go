package broker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

// The damage table: ten one-message batches v0..v9, one kind of damage, with and without a
// checkpoint covering them. Each row says what survives, or that start-up refuses (a bad batch
// followed by valid ones is corruption, not a torn tail) and what the refusal names.

func overwrite(t *testing.T, seg string, at int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(seg, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

type damageOutcome struct {
	refuse     string // the reason a refusal names ("" = start-up succeeds)
	validAfter int    // valid batches the refusal counts
	survive    int    // messages v0..v{survive-1} readable after start-up
	badOffset  int64  // when >= 0: this offset reads as ErrCorrupt, the others survive
}

func TestDamageTable(t *testing.T) {
	ok := func(n int) damageOutcome { return damageOutcome{survive: n, badOffset: -1} }
	refuse := func(reason string, after int) damageOutcome {
		return damageOutcome{refuse: reason, validAfter: after, badOffset: -1}
	}
	cases := []struct {
		name    string
		damage  func(t *testing.T, seg string, ends []int64) int64 // returns the damaged batch's position
		without damageOutcome                                      // no checkpoint covers the messages
		with    damageOutcome                                      // a clean shutdown's checkpoint does
	}{
		{"flipped byte in a middle batch header", func(t *testing.T, seg string, ends []int64) int64 {
			overwrite(t, seg, ends[5]+13, []byte{0x7f})
			return ends[5]
		}, refuse("header checksum mismatch", 3), ok(10)},
		{"flipped byte in a middle record", func(t *testing.T, seg string, ends []int64) int64 {
			overwrite(t, seg, ends[5]+batchHeaderSize+recordHeaderSize, []byte{'X'})
			return ends[5]
		}, refuse("record checksum mismatch", 3), damageOutcome{survive: 10, badOffset: 6}},
		{"zeroed middle batch", func(t *testing.T, seg string, ends []int64) int64 {
			overwrite(t, seg, ends[5], make([]byte, ends[6]-ends[5]))
			return ends[5]
		}, refuse("header checksum mismatch", 3), damageOutcome{survive: 10, badOffset: 6}},
		{"flipped byte in the last batch header", func(t *testing.T, seg string, ends []int64) int64 {
			overwrite(t, seg, ends[8]+13, []byte{0x7f})
			return ends[8]
		}, ok(9), ok(10)},
		{"zeroed tail", func(t *testing.T, seg string, ends []int64) int64 {
			overwrite(t, seg, ends[7], make([]byte, ends[9]-ends[7]))
			return ends[7]
		}, ok(8), ok(8)},
		{"truncated tail", func(t *testing.T, seg string, ends []int64) int64 {
			if err := os.Truncate(seg, ends[9]-7); err != nil {
				t.Fatal(err)
			}
			return ends[8]
		}, ok(9), ok(9)},
		{"garbage appended", func(t *testing.T, seg string, ends []int64) int64 {
			overwrite(t, seg, ends[9], []byte("\xde\xad\xbe\xef not a batch \x01\x00\xff"))
			return ends[9]
		}, ok(10), ok(10)},
	}
	for _, tc := range cases {
		for _, withCheckpoint := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/checkpoint=%v", tc.name, withCheckpoint), func(t *testing.T) {
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
				pos := tc.damage(t, seg, ends)
				want := tc.without
				if withCheckpoint {
					want = tc.with
				}
				before, _ := os.Stat(seg)
				rep, err := VerifyLog(dir)
				if err != nil {
					t.Fatal(err)
				}
				b, err = Open(testOptions(t, dir))
				if want.refuse != "" {
					if err == nil {
						b.Close()
						t.Fatal("start-up succeeded over a corrupt batch that valid batches follow")
					}
					var ce *CorruptionError
					if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
						t.Fatalf("start-up refused with %v, want a CorruptionError", err)
					}
					if ce.Segment != seg || ce.FileOffset != pos || ce.Position != pos || ce.ValidAfter != want.validAfter || !strings.Contains(ce.Reason, want.refuse) {
						t.Fatalf("refusal %+v, want %s at %d, %d valid after, reason %q", ce, seg, pos, want.validAfter, want.refuse)
					}
					if after, _ := os.Stat(seg); after.Size() != before.Size() {
						t.Fatalf("refusing start-up cut the log from %d to %d bytes", before.Size(), after.Size())
					}
					if rep.Corruption == nil || *rep.Corruption != *ce {
						t.Fatalf("VerifyLog reports %+v, start-up %+v", rep.Corruption, ce)
					}
					return
				}
				if err != nil {
					t.Fatalf("start-up: %v", err)
				}
				defer b.Close()
				// VerifyLog reads the whole log, also behind the checkpoint.
				if (rep.Corruption != nil) != (tc.without.refuse != "") {
					t.Fatalf("VerifyLog reports corruption %v; want it exactly when the damage is corruption", rep.Corruption)
				}
				if want.badOffset < 0 {
					wantValues(t, fetchAll(t, b, "t", 0), want.survive)
					res, err := b.Produce(context.Background(), "t", []Message{msg("after")}, "")
					if err != nil || res.Offsets[0].Offset != int64(want.survive) {
						t.Fatalf("produce after start-up: %+v %v", res, err)
					}
					return
				}
				for off := int64(0); off < int64(want.survive); off++ {
					res, err := b.Fetch(context.Background(), "t", 0, FetchOptions{Offset: off, MaxMessages: 1})
					if off == want.badOffset {
						if !errors.Is(err, ErrCorrupt) {
							t.Fatalf("damaged offset %d: %+v %v, want ErrCorrupt", off, res, err)
						}
						continue
					}
					if err != nil || string(res.Messages[0].Value) != fmt.Sprintf("v%d", off) {
						t.Fatalf("offset %d: %+v %v", off, res, err)
					}
				}
			})
		}
	}
}

// TestCorruptionBeforeTheLastSegmentRefuses: damage in an older segment used to move every
// later segment aside; the later segments hold valid batches, so start-up refuses instead.
func TestCorruptionBeforeTheLastSegmentRefuses(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(t, dir)
	o.SegmentBytes = 1 << 10
	b := mustOpen(t, o)
	mustCreate(t, b, "t", 1)
	ends := produceN(t, b, 40)
	b.abandon()
	first := dir + "/log/" + segmentName(0)
	overwrite(t, first, ends[2]+13, []byte{0x7f})
	_, err := Open(o)
	var ce *CorruptionError
	if !errors.As(err, &ce) || ce.Segment != first || ce.FileOffset != ends[2] || ce.ValidAfter < 30 {
		t.Fatalf("start-up: %v, want a refusal naming %s at %d with the later batches counted", err, first, ends[2])
	}
	if names, _ := os.ReadDir(dir + "/log"); len(names) < 2 {
		t.Fatalf("later segments were moved away: %v", names)
	}
}
