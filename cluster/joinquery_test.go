package cluster

import (
	"context"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
)

// TestAskJoin: the join question travels over the raft port to the member's JoinSource, which
// is asked about the id the hello names; a member without one answers an error, a question put
// to the wrong id is refused, and the raft stream is undisturbed.
func TestAskJoin(t *testing.T) {
	asked := make(chan uint64, 1)
	join := func(_ context.Context, id uint64) JoinInfo {
		asked <- id
		return JoinInfo{Leader: 1, Confirmed: true, Learner: true}
	}
	src, err := NewTransport(TransportConfig{ID: 1, Listen: "127.0.0.1:0", Logger: quietLogger(), Join: join})
	if err != nil {
		t.Fatal(err)
	}
	h := &countingHandler{stepped: make(chan *pb.Message, 1)}
	src.Start(context.Background(), h)
	defer src.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	info, err := AskJoin(ctx, nil, 4, 1, src.Addr())
	if err != nil || !info.Confirmed || !info.Learner || info.Leader != 1 {
		t.Fatalf("answer %+v, err %v", info, err)
	}
	if id := <-asked; id != 4 {
		t.Fatalf("the source was asked about %d, want 4", id)
	}
	if _, err := AskJoin(ctx, nil, 4, 2, src.Addr()); err == nil {
		t.Fatal("a question addressed to node 2 was answered by node 1")
	}

	none, err := NewTransport(TransportConfig{ID: 2, Listen: "127.0.0.1:0", Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	none.Start(context.Background(), &countingHandler{stepped: make(chan *pb.Message, 1)})
	defer none.Stop()
	if info, err := AskJoin(ctx, nil, 4, 2, none.Addr()); err != nil || info.Confirmed || !strings.Contains(info.Error, "no join questions") {
		t.Fatalf("a member without a JoinSource: %+v, %v", info, err)
	}

	dst, err := NewTransport(TransportConfig{ID: 3, Listen: "127.0.0.1:0", Peers: map[uint64]string{1: src.Addr()}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	dst.Start(context.Background(), &countingHandler{stepped: make(chan *pb.Message, 1)})
	defer dst.Stop()
	dst.Send([]*pb.Message{{Type: pb.MsgHeartbeat.Enum(), To: new(uint64(1)), From: new(uint64(3))}})
	if m := <-h.stepped; m.GetFrom() != 3 {
		t.Fatalf("message from %d", m.GetFrom())
	}
}
