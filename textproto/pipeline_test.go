package textproto

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// TestPipelinedPuts writes many puts, several topics and a few bad ones among them, before
// reading any answer; every answer must come back, matched by opaque.
func TestPipelinedPuts(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("a", 3)
	ts.createTopic("b", 1)
	c := ts.dial()
	const n = 600
	var sb strings.Builder
	wantCode := map[int64]int{}
	for i := 0; i < n; i++ {
		op := int64(1000 + i)
		switch {
		case i%97 == 5:
			sb.WriteString(putLine("a", 7, "bad partition", 0, op)) // 404, in the middle of a batch
			wantCode[op] = 404
		case i%50 == 7:
			sb.WriteString(fmt.Sprintf("version %d\r\n", op))
			wantCode[op] = 200
		case i%3 == 0:
			sb.WriteString(putLine("b", -1, fmt.Sprintf("b-%d", i), 0, op))
			wantCode[op] = 200
		default:
			sb.WriteString(putLine("a", -1, fmt.Sprintf("a-%d", i), 0, op))
			wantCode[op] = 200
		}
	}
	go c.write(sb.String()) // the answers may fill the socket buffers before the writes end
	for i := 0; i < n; i++ {
		a := c.readAnswer()
		want, ok := wantCode[a.opaque]
		if !ok {
			t.Fatalf("answer with unknown or repeated opaque: %v", a)
		}
		delete(wantCode, a.opaque)
		if a.code != want {
			t.Fatalf("opaque %d: %v, want %d", a.opaque, a, want)
		}
	}
	if len(wantCode) != 0 {
		t.Fatalf("%d answers missing", len(wantCode))
	}
	// Everything is there exactly once.
	var total int64
	for _, tp := range []string{"a", "b"} {
		ti, _ := ts.b.Topic(tp)
		for _, p := range ti.Partitions {
			total += p.EndOffset
		}
	}
	puts := 0
	for i := 0; i < n; i++ {
		if !(i%97 == 5) && !(i%50 == 7) {
			puts++
		}
	}
	if total != int64(puts) {
		t.Fatalf("the broker holds %d messages, want %d", total, puts)
	}
}

// TestPipelinedPutsManyConnections runs concurrent pipelined clients; each must get all its
// answers, and the broker must hold every message once.
func TestPipelinedPutsManyConnections(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("t", 4)
	const conns, per = 8, 200
	var wg sync.WaitGroup
	for k := 0; k < conns; k++ {
		c := ts.dial()
		wg.Add(1)
		go func() {
			defer wg.Done()
			var sb strings.Builder
			for i := 0; i < per; i++ {
				sb.WriteString(putLine("t", -1, strings.Repeat("x", 100), 0, int64(i)))
			}
			go c.write(sb.String())
			got := map[int64]bool{}
			for i := 0; i < per; i++ {
				a, err := c.tryRead()
				if err != nil || a.code != 200 || got[a.opaque] {
					t.Errorf("conn %d: answer %v, err %v", k, a, err)
					return
				}
				got[a.opaque] = true
			}
		}()
	}
	wg.Wait()
	ti, _ := ts.b.Topic("t")
	var total int64
	for _, p := range ti.Partitions {
		total += p.EndOffset
	}
	if total != conns*per {
		t.Fatalf("the broker holds %d messages, want %d", total, conns*per)
	}
}

// TestPipelinedPutMeansTheSameBatched: what follows a put means the same whether it arrives
// with that put (and the server gathers it into the put's batch) or after the put was
// answered. A line that starts with a stray carriage return ("\rput ...") is an unknown
// command, not a put; behind a put it was batched as one and stored. Blank lines before a put
// (Enter typed in nc) are skipped either way.
func TestPipelinedPutMeansTheSameBatched(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("t", 1)
	const first = "put t 0 5 0 1\r\nhello"
	type want struct {
		code   int
		opaque int64
	}
	cases := []struct {
		name string
		rest string
		want []want // after the first put's 200
	}{
		{"stray CR", "\rput t 0 5 0 2\r\nworld\r\n", []want{{400, 2}, {400, 0}}},
		{"blank line, stray CR", "\n\rput t 0 5 0 2\r\nworld\r\n", []want{{400, 2}, {400, 0}}},
		{"blank lines", "\r\n \t\r\r\nput t 0 5 0 2\r\nworld", []want{{200, 2}}},
	}
	for _, tc := range cases {
		for _, together := range []bool{false, true} {
			before, _ := ts.b.Topic("t")
			c := ts.dial()
			if together {
				c.write(first + tc.rest)
			} else {
				c.write(first)
			}
			if a := c.readAnswer(); a.code != 200 || a.opaque != 1 {
				t.Fatalf("%s (together %v): first put answered %v", tc.name, together, a)
			}
			if !together {
				c.write(tc.rest)
			}
			stored := int64(1)
			for _, w := range tc.want {
				a := c.readAnswer()
				if a.kind != "result" || a.code != w.code || a.opaque != w.opaque {
					t.Errorf("%s (together %v): got %v, want result %d with opaque %d", tc.name, together, a, w.code, w.opaque)
				}
				if w.code == 200 {
					stored++
				}
			}
			after, _ := ts.b.Topic("t")
			if n := after.Partitions[0].EndOffset - before.Partitions[0].EndOffset; n != stored {
				t.Errorf("%s (together %v): %d messages stored, want %d", tc.name, together, n, stored)
			}
		}
	}
}
