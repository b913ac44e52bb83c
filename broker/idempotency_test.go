package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestIdempotencyKey(t *testing.T) {
	for _, restart := range []string{"none", "clean", "crash"} {
		t.Run(restart, func(t *testing.T) {
			dir := t.TempDir()
			b := mustOpen(t, testOptions(t, dir))
			mustCreate(t, b, "t", 2)
			req := []Message{{Value: []byte("pay-1"), Partition: -1}, {Value: []byte("pay-2"), Partition: -1}}
			first, err := b.Produce(context.Background(), "t", req, "order-42")
			if err != nil || first.Duplicate {
				t.Fatalf("first: %+v %v", first, err)
			}
			switch restart {
			case "clean":
				b.Close()
				b = mustOpen(t, testOptions(t, dir))
			case "crash":
				b.abandon() // the key lives only in the log: replay must bring it back
				b = mustOpen(t, testOptions(t, dir))
			}
			defer b.Close()
			again, err := b.Produce(context.Background(), "t", req, "order-42")
			if err != nil || !again.Duplicate {
				t.Fatalf("repeat: %+v %v", again, err)
			}
			for i := range first.Offsets {
				if again.Offsets[i] != first.Offsets[i] {
					t.Fatalf("repeat offsets %v, first %v", again.Offsets, first.Offsets)
				}
			}
			n := len(fetchAll(t, b, "t", 0)) + len(fetchAll(t, b, "t", 1))
			if n != 2 {
				t.Fatalf("topic holds %d messages, want one copy of 2", n)
			}
			_, err = b.Produce(context.Background(), "t", []Message{msg("other")}, "order-42")
			if !errors.Is(err, ErrIdempotencyReused) {
				t.Fatalf("key reused with other messages: %v", err)
			}
			// The same key on another topic is another key.
			mustCreate(t, b, "u", 1)
			if res, err := b.Produce(context.Background(), "u", req, "order-42"); err != nil || res.Duplicate {
				t.Fatalf("other topic: %+v %v", res, err)
			}
		})
	}
}

func TestIdempotencyConcurrentSameKey(t *testing.T) {
	b := mustOpen(t, testOptions(t, t.TempDir()))
	defer b.Close()
	mustCreate(t, b, "t", 1)
	const n = 16
	var wg sync.WaitGroup
	results := make([]ProduceResult, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			res, err := b.Produce(context.Background(), "t", []Message{msg("once")}, "k")
			if err != nil {
				t.Error(err)
			}
			results[i] = res
		}(i)
	}
	wg.Wait()
	originals := 0
	for _, r := range results {
		if !r.Duplicate {
			originals++
		}
		if r.Offsets[0] != (Position{0, 0}) {
			t.Fatalf("offsets %v", r.Offsets)
		}
	}
	if originals != 1 || len(fetchAll(t, b, "t", 0)) != 1 {
		t.Fatalf("%d originals, %d stored", originals, len(fetchAll(t, b, "t", 0)))
	}
}

func TestIdempotencyWindowExpires(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	o := testOptions(t, t.TempDir())
	o.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	o.IdempotencyWindow = time.Hour
	b := mustOpen(t, o)
	defer b.Close()
	mustCreate(t, b, "t", 1)
	b.Produce(context.Background(), "t", []Message{msg("a")}, "k")
	mu.Lock()
	now = now.Add(2 * time.Hour)
	mu.Unlock()
	res, err := b.Produce(context.Background(), "t", []Message{msg("a")}, "k")
	if err != nil || res.Duplicate || res.Offsets[0].Offset != 1 {
		t.Fatalf("after the window: %+v %v", res, err)
	}
}

// A keyed request whose key the idempotency store could not remember (too many messages, or
// too many changes of partition, for one entry: dedupe.Fits) is refused before anything is
// appended. It was appended and acknowledged while its key was dropped with a log line, so a
// retry appended a second copy. The store's real limits need millions of messages; the test
// makes them small (keyFits), and checks the real rule against the store in the dedupe tests.
func TestIdempotencyKeyTooLargeToRemember(t *testing.T) {
	defer func(f func(int, int) bool) { keyFits = f }(keyFits)
	keyFits = func(n, runs int) bool { return n <= 4 && runs <= 2 }
	b := mustOpen(t, testOptions(t, t.TempDir()))
	defer b.Close()
	mustCreate(t, b, "t", 2)
	at := func(parts ...int) []Message {
		var ms []Message
		for _, p := range parts {
			ms = append(ms, Message{Value: []byte("pay"), Partition: p})
		}
		return ms
	}
	for _, req := range [][]Message{at(0, 1, 0), at(0, 0, 0, 0, 0)} {
		if _, err := b.Produce(context.Background(), "t", req, "big"); !errors.Is(err, ErrMessageTooLarge) {
			t.Fatalf("keyed request of partitions %v: %v, want ErrMessageTooLarge", req, err)
		}
	}
	if n := len(fetchAll(t, b, "t", 0)) + len(fetchAll(t, b, "t", 1)); n != 0 {
		t.Fatalf("refused requests appended %d messages", n)
	}
	if _, err := b.Produce(context.Background(), "t", at(0, 1, 0), ""); err != nil {
		t.Fatalf("the same request without a key: %v", err)
	}
	res, err := b.Produce(context.Background(), "t", at(0, 0, 1, 1), "fits")
	if err != nil || res.Duplicate {
		t.Fatalf("keyed request within the limits: %+v %v", res, err)
	}
}

// The keys of the log tail that Open replays are held until the idempotency store opens, and a
// long replay drops those that cannot be live (older than the window against the newest
// timestamp read and the wall clock, whichever is earlier) so that it holds no more than a
// window of keys. The rule must drop nothing the store would keep: here the tail spans 100
// minutes of a one-hour window and the clock was set back 30 minutes before the restart, so keys
// up to 90 minutes before the newest batch are live by the wall clock and must still be
// answered as duplicates, and only older ones stored again.
func TestReplayHoldsKeysOfTheWindow(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	now := t0
	dir := t.TempDir()
	o := manualOptions(t, dir)
	o.Fsync = FsyncPolicy{Mode: FsyncNever}
	o.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	o.IdempotencyWindow = time.Hour
	b := mustOpen(t, o)
	mustCreate(t, b, "t", 1)
	ctx := context.Background()
	const n = 3000 // past the 1024 keys at which the held list is first pruned
	for i := 0; i < n; i++ {
		mu.Lock()
		now = t0.Add(time.Duration(2*i) * time.Second)
		mu.Unlock()
		if _, err := b.Produce(ctx, "t", []Message{msg(fmt.Sprint(i))}, fmt.Sprint("k", i)); err != nil {
			t.Fatal(err)
		}
	}
	b.abandon() // the keys live only in the log after Open's checkpoint
	mu.Lock()
	now = now.Add(-30 * time.Minute)
	mu.Unlock()
	b = mustOpen(t, o)
	defer b.Close()
	if b.held != nil {
		t.Errorf("Open keeps %d held keys after adding them", len(b.held))
	}
	for _, i := range []int{n - 1, 1500, 400} { // 400: 93 min before the newest, 83 before now
		res, err := b.Produce(ctx, "t", []Message{msg(fmt.Sprint(i))}, fmt.Sprint("k", i))
		if err != nil || !res.Duplicate || res.Offsets[0].Offset != int64(i) {
			t.Fatalf("retry of k%d after the restart: %+v %v, want the duplicate at offset %d", i, res, err, i)
		}
	}
	if res, err := b.Produce(ctx, "t", []Message{msg("100")}, "k100"); err != nil || res.Duplicate {
		t.Fatalf("retry of k100, past the window by both clocks: %+v %v, want it stored again", res, err)
	}
}
