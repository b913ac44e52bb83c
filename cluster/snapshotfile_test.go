package cluster

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"
)

// TestTransportFetchFile: a snapshot file travels over the raft port whole; a name the source
// refuses is an error naming why; a source that announces more bytes than it sends fails the
// copy instead of leaving a short file that looks complete.
func TestTransportFetchFile(t *testing.T) {
	content := bytes.Repeat([]byte("0123456789abcdef"), 100_000) // 1.6 MB: several buffers
	files := func(index uint64, name string) (io.ReadCloser, int64, error) {
		switch {
		case index == 7 && name == "log/0.log":
			return io.NopCloser(bytes.NewReader(content)), int64(len(content)), nil
		case name == "short":
			return io.NopCloser(bytes.NewReader(content[:100])), 200, nil
		}
		return nil, 0, errors.New("no such file in snapshot")
	}
	src, err := NewTransport(TransportConfig{ID: 1, Listen: "127.0.0.1:0", Logger: quietLogger(), Files: files})
	if err != nil {
		t.Fatal(err)
	}
	h := &countingHandler{stepped: make(chan *pb.Message, 1)}
	src.Start(context.Background(), h)
	defer src.Stop()
	dst, err := NewTransport(TransportConfig{ID: 2, Listen: "127.0.0.1:0", Peers: map[uint64]string{1: src.Addr()}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	dst.Start(context.Background(), &countingHandler{stepped: make(chan *pb.Message, 1)})
	defer dst.Stop()

	var got bytes.Buffer
	n, err := dst.FetchFile(context.Background(), 1, 7, "log/0.log", &got)
	if err != nil || n != int64(len(content)) || !bytes.Equal(got.Bytes(), content) {
		t.Fatalf("fetched %d bytes (%d kept), err %v; want %d", n, got.Len(), err, len(content))
	}
	if _, err := dst.FetchFile(context.Background(), 1, 8, "log/0.log", io.Discard); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("a file the source refuses: %v", err)
	}
	if _, err := dst.FetchFile(context.Background(), 1, 7, "short", io.Discard); err == nil {
		t.Fatal("a file cut short was taken for complete")
	}
	if _, err := dst.FetchFile(context.Background(), 9, 7, "log/0.log", io.Discard); err == nil {
		t.Fatal("a fetch from an unknown peer succeeded")
	}
	// The raft stream is undisturbed: messages still flow from 2 to 1.
	dst.Send([]*pb.Message{{Type: pb.MsgHeartbeat.Enum(), To: new(uint64(1)), From: new(uint64(2))}})
	if m := <-h.stepped; m.GetFrom() != 2 {
		t.Fatalf("message from %d", m.GetFrom())
	}
}
