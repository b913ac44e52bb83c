package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
)

// protoConn is a plain TCP client of the text protocol door.
type protoConn struct {
	t  *testing.T
	c  net.Conn
	rd *bufio.Reader
}

func dialProtocol(t *testing.T, addr string) *protoConn {
	t.Helper()
	if addr == "" {
		t.Fatal("the server wrote no protocol address into its ready file")
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return &protoConn{t: t, c: c, rd: bufio.NewReader(c)}
}

// do sends one request (line plus optional payload) and returns the answer's first word, its
// code (for "result") and its data block.
func (p *protoConn) do(line string, payload []byte) (kind string, code int, data []byte) {
	p.t.Helper()
	req := line + "\r\n"
	if payload != nil {
		req += string(payload)
	}
	if _, err := io.WriteString(p.c, req); err != nil {
		p.t.Fatal(err)
	}
	head, err := p.rd.ReadString('\n')
	if err != nil {
		p.t.Fatalf("%q: %v", line, err)
	}
	f := strings.Fields(head)
	var n int
	switch f[0] {
	case "result":
		fmt.Sscan(f[1], &code)
		fmt.Sscan(f[2], &n)
	case "value":
		fmt.Sscan(f[1], &n)
	default:
		p.t.Fatalf("%q answered %q", line, head)
	}
	data = make([]byte, n+2) // the block ends with \r\n
	if _, err := io.ReadFull(p.rd, data); err != nil {
		p.t.Fatal(err)
	}
	return f[0], code, data[:n]
}

// TestTwoDoorsOneBroker: a message put on the text protocol is fetched over HTTP and the
// reverse, on a real `imago serve` process.
func TestTwoDoorsOneBroker(t *testing.T) {
	srv := startServer(t, t.TempDir())
	ctx := context.Background()
	cl := srv.client()
	if _, err := cl.CreateTopic(ctx, "doors", client.TopicConfig{Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	pc := dialProtocol(t, srv.Protocol)

	// Text door → HTTP.
	_, code, data := pc.do("put doors 1 12 0 7", []byte("from-textdoor"[:12]))
	if code != 200 || strings.TrimSpace(string(data)) != "1 0" {
		t.Fatalf("put answered %d %q", code, data)
	}
	res, err := cl.Fetch(ctx, "doors", 1, client.FetchOptions{Offset: 0})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Messages) != 1 || res.Messages[0].ValueBase64 == nil {
		t.Fatalf("HTTP fetch after a text put: %+v", res)
	}
	if v, _ := base64.StdEncoding.DecodeString(*res.Messages[0].ValueBase64); string(v) != "from-textdoo" {
		t.Fatalf("HTTP sees %q", v)
	}

	// HTTP → text door.
	part := 0
	pr, err := cl.Produce(ctx, "doors", []client.Message{{Value: json.RawMessage(`"from-http"`), Partition: &part}}, client.ProduceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kind, _, data := pc.do(fmt.Sprintf("get doors g 0 %d 65536 8", pr.Offsets[0].Offset), nil)
	if kind != "value" || !strings.Contains(string(data), `"from-http"`) {
		t.Fatalf("text get after an HTTP produce: %s %q", kind, data)
	}

	// stats over the text door counts both.
	_, code, data = pc.do("stats 9", nil)
	if code != 200 || !strings.Contains(string(data), "STAT topics 1") {
		t.Fatalf("stats: %d %q", code, data)
	}
}

// TestOffsetsAcrossDoors: an offset committed with the text protocol's offset command is the
// group's offset over HTTP, and one committed over HTTP shows in the text door's stats groups.
func TestOffsetsAcrossDoors(t *testing.T) {
	srv := startServer(t, t.TempDir())
	ctx := context.Background()
	cl := srv.client()
	if _, err := cl.CreateTopic(ctx, "ledger", client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	part := 0
	for i := 0; i < 5; i++ {
		if _, err := cl.Produce(ctx, "ledger", []client.Message{{Value: json.RawMessage(`1`), Partition: &part}}, client.ProduceOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pc := dialProtocol(t, srv.Protocol)

	// Text door → HTTP.
	if _, code, data := pc.do("offset ledger billing 0 3 11", nil); code != 200 {
		t.Fatalf("offset answered %d %q", code, data)
	}
	offs, err := cl.GroupOffsets(ctx, "billing")
	if err != nil {
		t.Fatal(err)
	}
	if len(offs.Offsets) != 1 || offs.Offsets[0].Offset != 3 || offs.Offsets[0].Lag != 2 {
		t.Fatalf("HTTP sees %+v after a text-door commit of 3", offs.Offsets)
	}

	// HTTP → text door.
	m, err := cl.JoinGroup(ctx, "audit", client.JoinGroupRequest{Topics: []string{"ledger"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.CommitGroup(ctx, "audit", m.MemberID, []client.GroupOffset{{Topic: "ledger", Partition: 0, Offset: 4}}); err != nil {
		t.Fatal(err)
	}
	_, code, data := pc.do("stats groups 12", nil)
	if code != 200 || !strings.Contains(string(data), "STAT audit:ledger:0 offset=4,lag=1") {
		t.Fatalf("stats groups after an HTTP commit of 4: %d %q", code, data)
	}
}
