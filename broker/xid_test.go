package broker

import (
	"encoding/hex"
	"strconv"
	"testing"
)

// An xid's key is the txkey form ParseXid reads back (the broker's checkpoints and logs keep it).
func TestXidStringForm(t *testing.T) {
	for _, x := range []Xid{
		{FormatID: 0x494d4147, Gtrid: []byte("imago-0123456789abcdef"), Bqual: []byte{0x00, 0x0f, 0xf0, 0xff}},
		{FormatID: 0, Gtrid: []byte{1}, Bqual: []byte{0xab}},
	} {
		want := "XID:" + strconv.FormatInt(int64(x.FormatID), 10) + ":" + hex.EncodeToString(x.Gtrid) + ":" + hex.EncodeToString(x.Bqual)
		if got := x.String(); got != want {
			t.Fatalf("Xid.String() = %q, want %q", got, want)
		}
		back, err := ParseXid(x.String())
		if err != nil || back.String() != want {
			t.Fatalf("ParseXid(%q) = %v, %v", want, back, err)
		}
	}
}

// Every XA verb builds its branch's key: one allocation.
func TestXidStringAllocatesOnce(t *testing.T) {
	x := Xid{FormatID: 0x494d4147, Gtrid: []byte("imago-0123456789abcdef"), Bqual: []byte("wallet")}
	if n := testing.AllocsPerRun(100, func() { _ = x.String() }); n != 1 {
		t.Errorf("Xid.String: %v allocations, want 1", n)
	}
}
