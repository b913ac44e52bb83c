package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"
)

func testOptions(t testing.TB, dir string) Options {
	t.Helper()
	o := NewOptions(dir)
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return o
}

// manualOptions is testOptions with the periodic checkpoint and retention passes pushed an hour
// away, for tests that run them (or crash around them) themselves.
func manualOptions(t testing.TB, dir string) Options {
	t.Helper()
	o := testOptions(t, dir)
	o.CheckpointInterval = time.Hour
	o.RetentionCheckInterval = time.Hour
	return o
}

func mustOpen(t testing.TB, o Options) *Broker {
	t.Helper()
	b, err := Open(o)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return b
}

func mustCreate(t testing.TB, b *Broker, name string, parts int) {
	t.Helper()
	if _, err := b.CreateTopic(name, TopicConfig{Partitions: parts}); err != nil {
		t.Fatalf("create topic: %v", err)
	}
}

func msg(v string) Message { return Message{Value: []byte(v), Partition: 0} }

func fetchAll(t testing.TB, b *Broker, topic string, part int) []FetchedMessage {
	t.Helper()
	info, err := b.Topic(topic)
	if err != nil {
		t.Fatal(err)
	}
	off := info.Partitions[part].StartOffset
	var out []FetchedMessage
	for {
		res, err := b.Fetch(context.Background(), topic, part, FetchOptions{Offset: off, MaxMessages: 1000})
		if err != nil {
			t.Fatalf("fetch %s/%d@%d: %v", topic, part, off, err)
		}
		if len(res.Messages) == 0 {
			return out
		}
		for _, m := range res.Messages {
			m.Value = bytes.Clone(m.Value)
			m.Key = bytes.Clone(m.Key)
			out = append(out, m)
		}
		off = res.NextOffset
	}
}

func TestProduceFetchRoundTrip(t *testing.T) {
	b := mustOpen(t, testOptions(t, t.TempDir()))
	defer b.Close()
	mustCreate(t, b, "payments", 3)
	in := []Message{
		{Key: []byte("acct-1"), Value: []byte(`{"amount":1}`), ValueJSON: true, Headers: []Header{{"h", "v"}}, Partition: -1},
		{Key: []byte{}, Value: []byte{0, 1, 2}, Partition: 2},
		{Value: []byte("x"), Partition: 1},
	}
	res, err := b.Produce(context.Background(), "payments", in, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Offsets) != 3 || res.Duplicate {
		t.Fatalf("offsets %+v", res)
	}
	wantPart := PartitionForKey([]byte("acct-1"), 3)
	if res.Offsets[0].Partition != wantPart {
		t.Fatalf("keyed message went to %d, want %d", res.Offsets[0].Partition, wantPart)
	}
	for i, pos := range res.Offsets {
		got, err := b.Fetch(context.Background(), "payments", pos.Partition, FetchOptions{Offset: pos.Offset, MaxMessages: 1})
		if err != nil {
			t.Fatal(err)
		}
		m := got.Messages[0]
		if !bytes.Equal(m.Value, in[i].Value) || m.ValueJSON != in[i].ValueJSON || (m.Key == nil) != (in[i].Key == nil) || !bytes.Equal(m.Key, in[i].Key) {
			t.Fatalf("message %d: got %+v want %+v", i, m, in[i])
		}
		if len(m.Headers) != len(in[i].Headers) {
			t.Fatalf("headers %v", m.Headers)
		}
	}
}

func TestRestartKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	b := mustOpen(t, testOptions(t, dir))
	mustCreate(t, b, "t", 2)
	for i := 0; i < 50; i++ {
		if _, err := b.Produce(context.Background(), "t", []Message{msg(fmt.Sprint(i)), {Value: []byte(fmt.Sprint("p1-", i)), Partition: 1}}, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = mustOpen(t, testOptions(t, dir))
	defer b.Close()
	got := fetchAll(t, b, "t", 0)
	if len(got) != 50 || string(got[49].Value) != "49" {
		t.Fatalf("after restart: %d messages", len(got))
	}
	res, err := b.Produce(context.Background(), "t", []Message{msg("more")}, "")
	if err != nil || res.Offsets[0].Offset != 50 {
		t.Fatalf("produce after restart: %+v %v", res, err)
	}
}

func TestConcurrentProduceGroupCommit(t *testing.T) {
	b := mustOpen(t, testOptions(t, t.TempDir()))
	defer b.Close()
	mustCreate(t, b, "t", 4)
	const writers, each = 32, 50
	var wg sync.WaitGroup
	seen := make(map[Position]string)
	var mu sync.Mutex
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				v := fmt.Sprintf("w%d-%d", w, i)
				res, err := b.Produce(context.Background(), "t", []Message{{Value: []byte(v), Partition: -1}}, "")
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if _, dup := seen[res.Offsets[0]]; dup {
					t.Errorf("position %v handed out twice", res.Offsets[0])
				}
				seen[res.Offsets[0]] = v
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	total := 0
	for p := 0; p < 4; p++ {
		for _, m := range fetchAll(t, b, "t", p) {
			if seen[Position{p, m.Offset}] != string(m.Value) {
				t.Fatalf("%d/%d holds %q, acknowledged %q", p, m.Offset, m.Value, seen[Position{p, m.Offset}])
			}
			total++
		}
	}
	if total != writers*each {
		t.Fatalf("%d messages stored, %d acknowledged", total, writers*each)
	}
	if s := b.Stats(); s.Fsyncs >= int64(writers*each) {
		t.Fatalf("%d fsyncs for %d produces: no group commit", s.Fsyncs, writers*each)
	}
}

func TestFetchWaitWakesOnAppend(t *testing.T) {
	b := mustOpen(t, testOptions(t, t.TempDir()))
	defer b.Close()
	mustCreate(t, b, "t", 1)
	got := make(chan *FetchResult, 1)
	go func() {
		res, err := b.Fetch(context.Background(), "t", 0, FetchOptions{Offset: 0, Wait: time.Minute})
		if err != nil {
			t.Error(err)
		}
		got <- res
	}()
	if _, err := b.Produce(context.Background(), "t", []Message{msg("hello")}, ""); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-got:
		if len(res.Messages) != 1 || string(res.Messages[0].Value) != "hello" {
			t.Fatalf("got %+v", res)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("long-poll did not wake on append")
	}
}

func TestOffsetOutOfRange(t *testing.T) {
	b := mustOpen(t, testOptions(t, t.TempDir()))
	defer b.Close()
	mustCreate(t, b, "t", 1)
	b.Produce(context.Background(), "t", []Message{msg("a")}, "")
	_, err := b.Fetch(context.Background(), "t", 0, FetchOptions{Offset: 5})
	var re *OffsetRangeError
	if !errors.As(err, &re) || !errors.Is(err, ErrOffsetOutOfRange) || re.EndOffset != 1 {
		t.Fatalf("got %v", err)
	}
	if _, err := b.Fetch(context.Background(), "t", 3, FetchOptions{}); !errors.Is(err, ErrUnknownPartition) {
		t.Fatalf("got %v", err)
	}
	if _, err := b.Fetch(context.Background(), "nope", 0, FetchOptions{}); !errors.Is(err, ErrUnknownTopic) {
		t.Fatalf("got %v", err)
	}
}

func TestWaitAny(t *testing.T) {
	b := mustOpen(t, testOptions(t, t.TempDir()))
	defer b.Close()
	mustCreate(t, b, "t", 3)
	at := []PartitionOffset{{"t", 0, 0}, {"t", 1, 0}, {"t", 2, 0}}
	if ready, err := b.WaitAny(context.Background(), 10*time.Millisecond, at); ready || err != nil {
		t.Fatalf("empty partitions: ready=%v err=%v", ready, err)
	}
	done := make(chan bool, 1)
	go func() {
		ready, err := b.WaitAny(context.Background(), time.Minute, at)
		if err != nil {
			t.Error(err)
		}
		done <- ready
	}()
	b.Produce(context.Background(), "t", []Message{{Value: []byte("x"), Partition: 2}}, "")
	select {
	case ready := <-done:
		if !ready {
			t.Fatal("WaitAny returned without a message")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("WaitAny did not wake on a produce to one of its partitions")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.WaitAny(ctx, time.Minute, []PartitionOffset{{"t", 2, 1}}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	if _, err := b.WaitAny(ctx, time.Minute, []PartitionOffset{{"nope", 0, 0}}); !errors.Is(err, ErrUnknownTopic) {
		t.Fatalf("unknown topic: %v", err)
	}
}

// TestFailedLogRefusesWrites: after a write or fsync error (injected here: a real disk cannot
// be made to fail on demand) the broker refuses produces, says why through Err, and a restart
// recovers what was durable.
func TestFailedLogRefusesWrites(t *testing.T) {
	dir := t.TempDir()
	b := mustOpen(t, testOptions(t, dir))
	mustCreate(t, b, "t", 1)
	if _, err := b.Produce(context.Background(), "t", []Message{msg("kept")}, ""); err != nil {
		t.Fatal(err)
	}
	if b.Err() != nil {
		t.Fatalf("healthy broker reports %v", b.Err())
	}
	b.fail(errors.New("injected fsync failure"), nil)
	if b.Err() == nil {
		t.Fatal("Err is nil after a failure")
	}
	if _, err := b.Produce(context.Background(), "t", []Message{msg("refused")}, ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("produce after a failure: %v", err)
	}
	b.Close()
	b = mustOpen(t, testOptions(t, dir))
	defer b.Close()
	if b.Err() != nil {
		t.Fatalf("after restart: %v", b.Err())
	}
	if v := values(fetchAll(t, b, "t", 0)); len(v) != 1 || v[0] != "kept" {
		t.Fatalf("after restart: %v", v)
	}
}
