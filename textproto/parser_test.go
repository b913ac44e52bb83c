package textproto

import (
	"strings"
	"testing"
	"time"
)

func TestParseLine(t *testing.T) {
	cases := []struct {
		line string
		want request
	}{
		{"put t 0 5 0 1\r\n", request{cmd: cmdPut, topic: "t", length: 5, lengthOK: true, opaque: 1}},
		{"put t -1 5 2 TX:ab 9\n", request{cmd: cmdPut, topic: "t", partition: -1, length: 5, lengthOK: true, flag: 2, txkey: "TX:ab", opaque: 9}},
		{"get a.b g 3 10 4096 -7\r\n", request{cmd: cmdGet, topic: "a.b", group: "g", partition: 3, offset: 10, maxBytes: 4096, opaque: -7}},
		{"offset t g 0 12 3\r\n", request{cmd: cmdOffset, topic: "t", group: "g", offset: 12, opaque: 3}},
		{"transaction TX:- s BEGIN 30 4\r\n", request{cmd: cmdTransaction, txkey: "TX:-", session: "s", txType: "BEGIN", timeout: 30 * time.Second, opaque: 4}},
		{"transaction XID:1:61:62 s PREPARE 5\r\n", request{cmd: cmdTransaction, txkey: "XID:1:61:62", session: "s", txType: "PREPARE", opaque: 5}},
		{"stats topics 6\r\n", request{cmd: cmdStats, item: "topics", opaque: 6}},
		{"stats\r\n", request{cmd: cmdStats}},
		{"  version \t 8 \r\n", request{cmd: cmdVersion, opaque: 8}},
		{"quit\r\n", request{cmd: cmdQuit}},
		{"auth tok 9\r\n", request{cmd: cmdAuth, token: "tok", opaque: 9}},
		{"\r\n", request{}},
	}
	for _, tc := range cases {
		got, err := parseLine([]byte(tc.line))
		if err != nil || got != tc.want {
			t.Errorf("%q: got %+v, %v; want %+v", tc.line, got, err, tc.want)
		}
	}
}

func TestParseLineNeverEchoesToken(t *testing.T) {
	for _, line := range []string{"auth s3cret\r\n", "auth s3cret 1 2\r\n", "auth s3cret x\r\n"} {
		r, err := parseLine([]byte(line))
		if err == nil || strings.Contains(err.Error(), "s3cret") || strings.Contains(r.String(), "s3cret") {
			t.Errorf("%q: %v / %q", line, err, r.String())
		}
	}
}

// FuzzParseLine: the parser never panics, a request it accepts formats to a line that parses
// to the same request, and a 400's text stays small.
func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		"put t 0 5 0 1\r\n", "put t -1 5 3 XID:1:61:62 9\r\n", "get t g 0 0 100 2\r\n",
		"offset t g 0 0 3\r\n", "transaction TX:- s BEGIN 30 4\r\n", "transaction - s RECOVER 5\r\n",
		"stats groups 6\r\n", "stats\r\n", "version 7\r\n", "quit\r\n", "auth tok 8\r\n", "put t 0 -5 0 1\r\n",
		"\x00\xff put", "get t g 0 0 1 99999999999999999999\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := parseLine(line)
		if err != nil {
			if len(err.Error()) > 400 {
				t.Fatalf("error text of %d bytes", len(err.Error()))
			}
			if r.lengthOK && r.length < 0 {
				t.Fatalf("negative length %d marked valid", r.length)
			}
			return
		}
		if r.cmd == cmdNone {
			return
		}
		if r.cmd == cmdAuth {
			r.token = "x" // String hides the token
		}
		again, err := parseLine([]byte(r.String()))
		if err != nil {
			t.Fatalf("%q parsed, but its formatted form %q does not: %v", line, r.String(), err)
		}
		if r.cmd == cmdAuth {
			again.token = "x"
			r.token = "x"
			if again.cmd == cmdAuth {
				return // "<token>" stands for the token
			}
		}
		if again != r {
			t.Fatalf("%q: %+v formats as %q which parses to %+v", line, r, r.String(), again)
		}
	})
}
