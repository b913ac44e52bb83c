package textproto

import (
	"strings"
	"testing"
)

// memcachedStats checks the memcached shape: every line "STAT <name> <value>", then "END", and
// nothing after it. It returns the values by name.
func memcachedStats(t *testing.T, body string) map[string]string {
	t.Helper()
	if !strings.HasSuffix(body, "END\r\n") {
		t.Fatalf("stats does not end with END: %q", body)
	}
	lines := strings.Split(strings.TrimSuffix(body, "END\r\n"), "\r\n")
	lines = lines[:len(lines)-1] // the empty string after the last \r\n
	out := map[string]string{}
	for _, l := range lines {
		w := strings.SplitN(l, " ", 3)
		if len(w) != 3 || w[0] != "STAT" || w[1] == "" || w[2] == "" || strings.ContainsAny(w[1], " \r\n") {
			t.Fatalf("not a STAT <name> <value> line: %q", l)
		}
		if _, dup := out[w[1]]; dup {
			t.Fatalf("stat %q twice", w[1])
		}
		out[w[1]] = w[2]
	}
	return out
}

func TestStats(t *testing.T) {
	ts := startServer(t, Options{BrokerID: 7})
	ts.createTopic("settlement.transfers", 2)
	c := ts.dial()
	c.expect(putLine("settlement.transfers", 0, "hello", 0, 1), 200)
	c.expect(putLine("settlement.transfers", 0, "world", 0, 2), 200)
	c.call("get settlement.transfers g 0 0 100 3\r\n")
	c.call("get settlement.transfers g 0 2 100 4\r\n")
	c.expect("offset settlement.transfers billing 0 1 5\r\n", 200)

	st := memcachedStats(t, c.expect("stats 6\r\n", 200))
	for _, name := range []string{"pid", "broker_id", "version", "uptime", "curr_connections", "total_connections",
		"cmd_put", "cmd_get", "cmd_offset", "put_failed", "get_miss", "bytes_in", "bytes_out", "fsync_count",
		"fsync_p99_us", "topics", "partitions"} {
		if _, ok := st[name]; !ok {
			t.Errorf("stats lacks %s", name)
		}
	}
	for name, want := range map[string]string{"broker_id": "7", "version": "1.2.3-test", "cmd_put": "2", "cmd_get": "2",
		"cmd_offset": "1", "get_miss": "1", "get_hits": "1", "topics": "1", "partitions": "2", "curr_connections": "1"} {
		if st[name] != want {
			t.Errorf("stat %s = %q, want %q", name, st[name], want)
		}
	}
	if st["fsync_count"] == "0" || st["fsync_p99_us"] == "0" {
		t.Errorf("fsyncs not reported: count %s, p99 %s", st["fsync_count"], st["fsync_p99_us"])
	}

	if got := memcachedStats(t, c.expect("stats topics 7\r\n", 200)); got["settlement.transfers"] != "partitions=2,messages=2,bytes="+bytesOf(t, ts, "settlement.transfers") {
		t.Errorf("stats topics: %v", got)
	}
	got := memcachedStats(t, c.expect("stats offsets 8\r\n", 200))
	if got["settlement.transfers:0"] != "start=0,end=2" || got["settlement.transfers:1"] != "start=0,end=0" {
		t.Errorf("stats offsets: %v", got)
	}
	if got := memcachedStats(t, c.expect("stats groups 9\r\n", 200)); got["billing:settlement.transfers:0"] != "offset=1,lag=1" {
		t.Errorf("stats groups: %v", got)
	}
	got = memcachedStats(t, c.expect("stats transactions 10\r\n", 200))
	for _, name := range []string{"open", "prepared", "heuristic", "committed", "rolled_back", "timed_out", "oldest_prepared_age_s"} {
		if _, ok := got[name]; !ok {
			t.Errorf("stats transactions lacks %s", name)
		}
	}
	if got := memcachedStats(t, c.expect("stats help 11\r\n", 200)); len(got) != len(statsHelp) {
		t.Errorf("stats help: %v", got)
	}
	// Typed by hand, without an opaque.
	if a := c.call("stats topics\r\n"); a.code != 200 || a.opaque != 0 {
		t.Errorf("stats topics without opaque: %v", a)
	}
	c.expect("stats nosuch 12\r\n", 400)
}

func bytesOf(t *testing.T, ts *testServer, topic string) string {
	ti, err := ts.b.Topic(topic)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, p := range ti.Partitions {
		n += p.Bytes
	}
	return i64(n)
}
