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
