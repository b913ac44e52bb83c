package groups

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/offsetdb"
)

// ClampPastEnd moves back exactly the offsets past their partition's end (clustered and
// broadcast groups alike), to that end, and leaves offsets at or below the end, and those of
// topics or partitions the broker does not have, as they were.
func TestClampPastEnd(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b := newTestBroker(t, log)
	if _, err := b.Produce(ctx, "a", []broker.Message{{Value: []byte("1")}, {Value: []byte("2")}, {Value: []byte("3")}}, ""); err != nil {
		t.Fatal(err)
	}
	info, err := b.Topic("a")
	if err != nil {
		t.Fatal(err)
	}
	ends := map[int]int64{}
	for _, p := range info.Partitions {
		ends[p.Partition] = p.EndOffset
	}
	store, err := offsetdb.OpenFile(t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	bc := "g" + BroadcastSep + "c1"
	in := []offsetdb.Offset{
		{Group: "g", Topic: "a", Partition: 0, Next: ends[0] + 7}, // past: moved back
		{Group: "g", Topic: "a", Partition: 1, Next: ends[1]},     // at the end: kept
		{Group: "g", Topic: "b", Partition: 0, Next: 0},           // below (empty partition): kept
		{Group: bc, Topic: "a", Partition: 1, Next: ends[1] + 1},  // a broadcast consumer's, past: moved back
		{Group: "g", Topic: "gone", Partition: 0, Next: 99},       // no such topic: kept
		{Group: "g", Topic: "b", Partition: 5, Next: 99},          // no such partition: kept
	}
	if err := store.Commit(ctx, in); err != nil {
		t.Fatal(err)
	}
	got, err := ClampPastEnd(ctx, b, store, log)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != (Clamped{"g", "a", 0, ends[0] + 7, ends[0]}) && got[1] != (Clamped{"g", "a", 0, ends[0] + 7, ends[0]}) {
		t.Fatalf("clamped %+v", got)
	}
	want := map[offsetdb.Key]int64{}
	for _, o := range in {
		want[offsetdb.Key{Group: o.Group, Topic: o.Topic, Partition: o.Partition}] = o.Next
	}
	want[offsetdb.Key{Group: "g", Topic: "a", Partition: 0}] = ends[0]
	want[offsetdb.Key{Group: bc, Topic: "a", Partition: 1}] = ends[1]
	for k, w := range want {
		o, ok, err := store.Get(ctx, k.Group, k.Topic, k.Partition)
		if err != nil || !ok || o.Next != w {
			t.Errorf("%+v: stored %d (%v, %v), want %d", k, o.Next, ok, err, w)
		}
	}
}
