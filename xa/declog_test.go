package xa

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
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
			l, _, err := openDecisionLog(dir, time.Hour, 1<<20, time.Now, nil, nil, quietLogger())
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
			l, recs, err := openDecisionLog(dir, time.Hour, 1<<20, time.Now, nil, nil, quietLogger())
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
	k := &steppedClock{wall: time.Unix(10000, 0)}
	l, _, err := openDecisionLog(dir, time.Minute, 4096, k.now, k.elapsed, nil, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		r := sampleRecord(i)
		if i%10 != 0 { // finished: dropped by the first compaction past the retention
			r.Status, r.Finished = StatusCommitted, k.now()
		}
		if err := l.appendSync(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	k.advance(time.Minute, time.Minute)
	fill := compactOnce(t, l, 1000)
	l.close()
	l, recs, err := openDecisionLog(dir, time.Minute, 4096, time.Now, nil, nil, quietLogger())
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
	if active != 20+fill || expired != 0 {
		t.Fatalf("after compaction: %d active (want %d), %d expired (want 0)", active, 20+fill, expired)
	}
}

// compactOnce appends unfinished records (sampleRecord(from), from+1, ...) to l until it has
// compacted (its file was renamed over), and returns how many it appended.
func compactOnce(t *testing.T, l *decisionLog, from int) int {
	t.Helper()
	before, err := os.Stat(l.path)
	if err != nil {
		t.Fatal(err)
	}
	for n := 1; n <= 10000; n++ {
		if err := l.appendSync(context.Background(), sampleRecord(from+n-1)); err != nil {
			t.Fatal(err)
		}
		if now, err := os.Stat(l.path); err != nil {
			t.Fatal(err)
		} else if !os.SameFile(before, now) {
			return n
		}
	}
	t.Fatal("the log did not compact")
	return 0
}

func FuzzDecodeRecord(f *testing.F) {
	r := sampleRecord(3)
	f.Add(appendRecord(nil, &r))
	r.Digest = digestOf("work")
	f.Add(appendRecord(nil, &r))
	if v1, err := hex.DecodeString(version1Frame); err == nil {
		f.Add(v1)
	}
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
		if err != nil || again.Gtrid != rec.Gtrid || again.Status != rec.Status || len(again.Branches) != len(rec.Branches) || again.Digest != rec.Digest {
			t.Fatalf("re-encode: %v", err)
		}
	})
}

// version1Frame is sampleRecord(1) as "done" and committed, written by the version before
// records held a digest (record version 1).
const version1Frame = "65000000b9add6f2010404283031323334353637383961626364656630303030303030303030303030303030303030303030303108636c69656e742d318aa0b787e90580c88dc1f0058ac88dc1f00580d0d4c9c8070163016d00020677616c6c657402010662726f6b65720300"

// A record with a digest carries it through an encode and a decode (as version 2); one
// without is written byte for byte as version 1 was, and a version-1 record written before
// digests existed still decodes, with no digest. A version-2 frame cut inside the digest is
// refused.
func TestRecordDigest(t *testing.T) {
	old, err := hex.DecodeString(version1Frame)
	if err != nil {
		t.Fatal(err)
	}
	r, n, err := decodeFrame(old)
	if err != nil || n != len(old) || r.ClientID != "client-1" || r.Status != StatusCommitted || r.Digest != "" {
		t.Fatalf("version-1 record: %+v, %d, %v", r, n, err)
	}
	if again := appendRecord(nil, &r); !bytes.Equal(again, old) {
		t.Fatalf("a record without a digest is no longer written as version 1:\n%x\n%s", again, version1Frame)
	}

	r.Digest = digestOf(`{"amount": 100}`)
	buf := appendRecord(nil, &r)
	if buf[frameHeader] != recordVersionDig {
		t.Fatalf("a record with a digest is version %d", buf[frameHeader])
	}
	got, n, err := decodeFrame(buf)
	if err != nil || n != len(buf) || got.Digest != r.Digest || got.ClientID != r.ClientID || !got.Finished.Equal(r.Finished) || len(got.Branches) != 2 {
		t.Fatalf("round trip with a digest: %+v, %v", got, err)
	}

	// The payload cut inside the digest (CRC made to match): not a record.
	payload := buf[frameHeader : frameHeader+2+1+1+gtridLen+1+len(r.ClientID)+digestLen/2]
	cut := binary.LittleEndian.AppendUint32(nil, uint32(len(payload)))
	cut = binary.LittleEndian.AppendUint32(cut, crc32.Checksum(payload, crcTable))
	if _, _, err := decodeFrame(append(cut, payload...)); !errors.Is(err, errBadRecord) {
		t.Fatalf("a frame cut inside the digest: %v, want errBadRecord", err)
	}
}

// The file log keeps each transaction's digest through a reopen and through compaction.
func TestDecisionLogKeepsDigest(t *testing.T) {
	dir := t.TempDir()
	l, _, err := openDecisionLog(dir, time.Hour, 4096, time.Now, nil, nil, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for i := 0; i < 200; i++ { // past 4096 bytes: compacted on the way
		r := sampleRecord(i % 20)
		r.Digest = digestOf(fmt.Sprint("work-", i%20))
		want[r.Gtrid] = r.Digest
		if err := l.appendSync(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	l.close()
	if fi, _ := os.Stat(filepath.Join(dir, logFileName)); fi.Size() > 8192 {
		t.Fatalf("log is %d bytes: not compacted", fi.Size())
	}
	l, recs, err := openDecisionLog(dir, time.Hour, 4096, time.Now, nil, nil, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	if len(recs) != len(want) {
		t.Fatalf("%d records after a reopen, want %d", len(recs), len(want))
	}
	for _, r := range recs {
		if r.Digest != want[r.Gtrid] {
			t.Errorf("%s: digest %x after compaction and a reopen, want %x", r.Gtrid, r.Digest, want[r.Gtrid])
		}
	}
}

// A decision log written before digests were recorded (version-1 records) opens, and a repeat
// of a client id it holds is answered as a duplicate whatever its digest: the first request's
// digest is unknown, as it always was after a restart.
func TestVersion1RecordRepeatIsDuplicate(t *testing.T) {
	old, err := hex.DecodeString(version1Frame)
	if err != nil {
		t.Fatal(err)
	}
	o := NewOptions(t.TempDir())
	o.NodeID = "0123456789abcdef" // the record's gtrid's
	o.Logger = quietLogger()
	o.Now = func() time.Time { return time.Unix(102, 0) } // within the retention of its finish
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(o.Dir, logFileName), old, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var dup *DuplicateError
	if _, err := c.Begin(context.Background(), BeginOptions{ID: "client-1", Digest: "any work"}); !errors.As(err, &dup) || dup.Info.Status != StatusCommitted {
		t.Fatalf("repeat of an id recorded without a digest: %v, want a duplicate of the commit", err)
	}
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

// A frame of a version this build does not know, with a good checksum, was written by a newer
// Imago: the open refuses, naming it, and leaves the file as it is. Cut as a torn tail (what an
// unknown version was before), a downgrade would lose the decisions it holds.
func TestDecisionLogRefusesNewerRecord(t *testing.T) {
	dir := t.TempDir()
	l, _, err := openDecisionLog(dir, time.Hour, 1<<20, time.Now, nil, nil, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := l.appendSync(context.Background(), sampleRecord(i)); err != nil {
			t.Fatal(err)
		}
	}
	l.close()
	r := sampleRecord(5)
	frame := appendRecord(nil, &r)
	payload := append([]byte(nil), frame[frameHeader:]...)
	payload[0] = recordVersionDig + 1
	newer := binary.LittleEndian.AppendUint32(nil, uint32(len(payload)))
	newer = binary.LittleEndian.AppendUint32(newer, crc32.Checksum(payload, crcTable))
	newer = append(newer, payload...)
	path := filepath.Join(dir, logFileName)
	before, _ := os.ReadFile(path)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(newer); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if l, _, err := openDecisionLog(dir, time.Hour, 1<<20, time.Now, nil, nil, quietLogger()); !errors.Is(err, errNewerRecord) {
		if err == nil {
			l.close()
		}
		t.Fatalf("open over a newer record: %v, want errNewerRecord", err)
	}
	after, _ := os.ReadFile(path)
	if want := append(before, newer...); !bytes.Equal(after, want) {
		t.Fatalf("the refused open changed the file: %d bytes, want %d", len(after), len(want))
	}
}
