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

// A topic the restored data directory lacked (its group's offset, 99, stays in the store:
// ClampPastEnd has no end to move it to) is created again and produced to before the group's
// member first polls. Every message in it is new: the member must get all of them, from
// offset 0, and the store must no longer hold 99, or the member's next start (a restart, a
// rebalance) would skip them again. Before, the poll moved the cursor to the end: the three
// messages produced before the first poll were never delivered.
func TestPastEndOfTopicCreatedAgain(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b := newTestBroker(t, log)
	store, err := offsetdb.OpenFile(t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if err := store.Commit(ctx, []offsetdb.Offset{
		{Group: "g", Topic: "again", Partition: 0, Next: 99}, // the lost topic's offset
		{Group: "g", Topic: "a", Partition: 0, Next: 0},      // a topic of the restored directory, within its end
	}); err != nil {
		t.Fatal(err)
	}
	if got, err := ClampPastEnd(ctx, b, store, log); err != nil || len(got) != 0 {
		t.Fatalf("clamp at start: %+v %v, want nothing moved (the topic is not there)", got, err)
	}
	c := New(b, store, log)
	c.Start()
	defer c.Close()

	if _, err := b.CreateTopic("again", broker.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Produce(ctx, "again", []broker.Message{{Value: []byte("1")}, {Value: []byte("2")}, {Value: []byte("3")}}, ""); err != nil {
		t.Fatal(err)
	}
	_, m := joinLive(t, c, clustered("g", "again"))
	ans := mustPoll(t, c, m, Limits{MaxMessages: 10, MaxBytes: 1 << 20})
	if got := polledOffsets(ans); len(got) != 3 || got[0] != 0 || got[2] != 2 {
		t.Fatalf("first poll delivered offsets %v, want [0 1 2]: messages of the topic created again were skipped", got)
	}
	o, ok, err := store.Get(ctx, "g", "again", 0)
	if err != nil || !ok || o.Next != 0 {
		t.Fatalf("stored offset %d (%v, %v) after the first poll, want 0 (moved back to the start)", o.Next, ok, err)
	}

	// A topic the broker had at start whose offset is past its end (as if the offset store was
	// restored alongside, after the clamp) keeps ClampPastEnd's rule: moved to the end.
	if err := store.Commit(ctx, []offsetdb.Offset{{Group: "h", Topic: "b", Partition: 0, Next: 50}}); err != nil {
		t.Fatal(err)
	}
	produceToB(t, b, 2)
	_, mh := joinLive(t, c, clustered("h", "b"))
	if got := polledOffsets(mustPoll(t, c, mh, Limits{MaxMessages: 10, MaxBytes: 1 << 20})); len(got) != 0 {
		t.Fatalf("group h polled %v, want nothing (moved to the end of a topic that was there at start)", got)
	}
	if o, ok, err := store.Get(ctx, "h", "b", 0); err != nil || !ok || o.Next != 2 {
		t.Fatalf("group h's stored offset %d (%v, %v), want 2 (the end)", o.Next, ok, err)
	}
}
