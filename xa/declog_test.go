package xa

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func sampleRecord(i int) record {
	g := fmt.Sprintf("0123456789abcdef%024x", i)
	return record{Kind: recCommit, Status: StatusCommitting, Gtrid: g, ClientID: "client-1",
		Created: time.Unix(100, 5), Decided: time.Unix(101, 0), Deadline: time.Unix(130, 0),
		Code: "c", Message: "m", Branches: []recBranch{{Resource: "wallet", State: BranchPrepared, CommitSent: true}, {Resource: "broker", State: BranchReadOnly}}}
}

func TestRecordRoundTrip(t *testing.T) {
	r := sampleRecord(1)
	buf := appendRecord(nil, &r)
	got, n, err := decodeFrame(buf)
	if err != nil || n != len(buf) {
		t.Fatal(err, n)
	}
	if got.Gtrid != r.Gtrid || got.Status != r.Status || !got.Created.Equal(r.Created) || len(got.Branches) != 2 || !got.Branches[0].CommitSent || got.Branches[1].State != BranchReadOnly {
		t.Fatalf("%+v", got)
	}
}

// A torn or corrupt tail is cut at the last good record; what precedes it survives.
func TestDecisionLogCutsTornTail(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(b []byte) []byte
	}{
		{"truncated mid-record", func(b []byte) []byte { return b[:len(b)-3] }},
		{"flipped byte", func(b []byte) []byte { b[len(b)-2] ^= 0xff; return b }},
		{"garbage appended", func(b []byte) []byte { return append(b, 1, 2, 3, 4, 5, 6, 7, 8, 9) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, _, err := openDecisionLog(dir, time.Hour, 1<<20, time.Now, nil, quietLogger())
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				if err := l.appendSync(context.Background(), sampleRecord(i)); err != nil {
					t.Fatal(err)
				}
			}
			l.close()
			path := filepath.Join(dir, logFileName)
			b, _ := os.ReadFile(path)
			if err := os.WriteFile(path, tc.damage(b), 0o644); err != nil {
				t.Fatal(err)
			}
			l, recs, err := openDecisionLog(dir, time.Hour, 1<<20, time.Now, nil, quietLogger())
			if err != nil {
				t.Fatal(err)
			}
			defer l.close()
			want := 2
			if tc.name == "garbage appended" {
				want = 3
			}
			if len(recs) != want {
				t.Fatalf("%d records survived, want %d", len(recs), want)
			}
			// The log keeps working after the cut.
			if err := l.appendSync(context.Background(), sampleRecord(7)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestDecisionLogCompacts(t *testing.T) {
	dir := t.TempDir()
	now := time.Unix(10000, 0)
	l, _, err := openDecisionLog(dir, time.Minute, 4096, func() time.Time { return now }, nil, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		r := sampleRecord(i)
		if i%10 != 0 { // finished long ago: dropped by compaction
			r.Status, r.Finished = StatusCommitted, now.Add(-time.Hour)
		}
		if err := l.appendSync(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	l.close()
	fi, _ := os.Stat(filepath.Join(dir, logFileName))
	if fi.Size() > 8192 {
		t.Fatalf("log is %d bytes after compaction", fi.Size())
	}
	l, recs, err := openDecisionLog(dir, time.Minute, 4096, time.Now, nil, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	expired, active := 0, 0
	for _, r := range recs {
		if r.Status == StatusCommitted {
			expired++
		} else {
			active++
		}
	}
	// Records written after the last compaction remain until the next one.
	if active != 20 || expired > 60 {
		t.Fatalf("after compaction: %d active (want 20), %d expired", active, expired)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	r := sampleRecord(3)
	f.Add(appendRecord(nil, &r))
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, n, err := decodeFrame(data)
		if err != nil {
			return
		}
		if n > len(data) || n < frameHeader {
			t.Fatalf("size %d of %d", n, len(data))
		}
		// What decodes re-encodes to a frame that decodes the same.
		again, _, err := decodeFrame(appendRecord(nil, &rec))
		if err != nil || again.Gtrid != rec.Gtrid || again.Status != rec.Status || len(again.Branches) != len(rec.Branches) {
			t.Fatalf("re-encode: %v", err)
		}
	})
}

func TestXidFormat(t *testing.T) {
	node := "0123456789abcdef"
	g := node + "000000000000000000000001"
	x := makeXid(g, "wallet")
	if len(x.Gtrid)+len(x.Bqual) > 64 {
		t.Fatal("over MySQL's limit")
	}
	if got := mysqlXid(x); got != "X'"+hexOf(g)+"',X'77616c6c6574',1229801265" {
		t.Fatal(got)
	}
	gid := pgGID(x)
	back, ok := parsePGGID(gid)
	if !ok || string(back.Gtrid) != g || string(back.Bqual) != "wallet" {
		t.Fatalf("%s → %+v", gid, back)
	}
	if _, err := pgLiteral("abc'; DROP"); err == nil {
		t.Fatal("pgLiteral accepted a quote")
	}
	if _, ok := parsePGGID("494d4731_" + g + "_zz"); ok {
		t.Fatal("parsed a bad gid")
	}
	if x2, ok := decodeMySQLRecover(int64(FormatID), len(g), 6, []byte(g+"wallet")); !ok || string(x2.Bqual) != "wallet" {
		t.Fatal("XA RECOVER row")
	}
	if _, ok := decodeMySQLRecover(1, 2, 0, []byte("aa")); ok {
		t.Fatal("foreign format accepted")
	}
	if mysqlVersionOK("10.4.30-MariaDB") == nil || mysqlVersionOK("10.11.19-MariaDB-0+deb12u1") != nil ||
		mysqlVersionOK("5.7.6") == nil || mysqlVersionOK("8.0.36") != nil {
		t.Fatal("version check")
	}
}

func hexOf(s string) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(s))
	for i := 0; i < len(s); i++ {
		out = append(out, digits[s[i]>>4], digits[s[i]&15])
	}
	return string(out)
}
