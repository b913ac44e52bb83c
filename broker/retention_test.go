package broker

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestRetentionByBytesAndAge(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	dir := t.TempDir()
	o := testOptions(t, dir)
	o.Now = clock
	o.SegmentBytes = 2048
	o.IndexSegmentEntries = 10
	o.RetentionCheckInterval = time.Hour // driven by hand below
	b := mustOpen(t, o)
	defer b.Close()
	if _, err := b.CreateTopic("small", TopicConfig{Partitions: 1, RetentionBytes: 600}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreateTopic("aged", TopicConfig{Partitions: 1, RetentionAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 45; i++ {
		b.Produce(context.Background(), "small", []Message{msg(fmt.Sprintf("s%d", i))}, "")
		b.Produce(context.Background(), "aged", []Message{msg(fmt.Sprintf("a%d", i))}, "")
	}
	segsBefore := len(b.log.segmentBounds())
	b.EnforceRetention()
	small, _ := b.Topic("small")
	p := small.Partitions[0]
	if p.StartOffset == 0 || p.StartOffset%10 != 0 || p.EndOffset != 45 {
		t.Fatalf("small after size retention: %+v", p)
	}
	if p.Bytes >= 600+10*int64(recordSize(&Message{Value: []byte("s10")})) {
		t.Fatalf("small keeps %d bytes", p.Bytes)
	}
	aged, _ := b.Topic("aged")
	if aged.Partitions[0].StartOffset != 0 {
		t.Fatalf("aged lost messages before their time: %+v", aged.Partitions[0])
	}
	advance(2 * time.Hour)
	b.Produce(context.Background(), "aged", []Message{msg("fresh")}, "")
	b.EnforceRetention()
	aged, _ = b.Topic("aged")
	if got := aged.Partitions[0].StartOffset; got != 40 {
		t.Fatalf("aged start after age retention = %d, want 40 (the last, active index segment stays)", got)
	}
	got := fetchAll(t, b, "aged", 0)
	if len(got) != 6 || string(got[0].Value) != "a40" || string(got[5].Value) != "fresh" {
		t.Fatalf("aged holds %v", values(got))
	}
	if _, err := b.Fetch(context.Background(), "aged", 0, FetchOptions{Offset: 3}); err == nil {
		t.Fatal("fetch before the start succeeded")
	}
	if segsAfter := len(b.log.segmentBounds()); segsAfter >= segsBefore {
		t.Fatalf("log segments %d -> %d: none deleted", segsBefore, segsAfter)
	}
	idx, _ := filepath.Glob(filepath.Join(dir, "index", "aged-0", "*.idx"))
	if len(idx) != 1 {
		t.Fatalf("aged keeps %d index files", len(idx))
	}
	// Restart: start offsets and contents survive.
	b.Close()
	b = mustOpen(t, o)
	aged, _ = b.Topic("aged")
	if aged.Partitions[0].StartOffset != 40 || len(fetchAll(t, b, "aged", 0)) != 6 {
		t.Fatalf("after restart: %+v", aged.Partitions[0])
	}
}

func TestFsyncPolicies(t *testing.T) {
	for _, pol := range []string{"always", "interval:5ms", "never"} {
		t.Run(pol, func(t *testing.T) {
			fp, err := ParseFsyncPolicy(pol)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			o := testOptions(t, dir)
			o.Fsync = fp
			b := mustOpen(t, o)
			mustCreate(t, b, "t", 1)
			produceN(t, b, 20)
			// Readers see the messages (after the interval's fsync in interval mode).
			res, err := b.Fetch(context.Background(), "t", 0, FetchOptions{Offset: 0, Wait: 10 * time.Second, MaxMessages: 100})
			if err != nil || len(res.Messages) == 0 {
				t.Fatalf("fetch: %+v %v", res, err)
			}
			b.Close()
			b = mustOpen(t, o)
			defer b.Close()
			wantValues(t, fetchAll(t, b, "t", 0), 20)
		})
	}
	for _, bad := range []string{"sometimes", "interval:", "interval:-1s", "interval:abc"} {
		if _, err := ParseFsyncPolicy(bad); err == nil {
			t.Errorf("ParseFsyncPolicy(%q) accepted", bad)
		}
	}
}

func TestCreateTopicRules(t *testing.T) {
	b := mustOpen(t, testOptions(t, t.TempDir()))
	defer b.Close()
	if created, err := b.CreateTopic("t", TopicConfig{Partitions: 2}); !created || err != nil {
		t.Fatal(created, err)
	}
	if created, err := b.CreateTopic("t", TopicConfig{Partitions: 2}); created || err != nil {
		t.Fatal("same config:", created, err)
	}
	if _, err := b.CreateTopic("t", TopicConfig{Partitions: 3}); err == nil {
		t.Fatal("different partitions accepted")
	}
	for _, bad := range []string{"", "a/b", "..", "x y", string(make([]byte, 250))} {
		if _, err := b.CreateTopic(bad, TopicConfig{Partitions: 1}); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
	for _, n := range []int{0, -1, maxPartitions + 1} {
		if _, err := b.CreateTopic("p", TopicConfig{Partitions: n}); err == nil {
			t.Errorf("%d partitions accepted", n)
		}
	}
}
