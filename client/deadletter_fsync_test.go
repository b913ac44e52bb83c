package client_test

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/gateway"
	"github.com/imagomq/imago/internal/fsutil"
	"github.com/imagomq/imago/offsetdb"
)

// TestDeadLetterOfUnknownOutcomeIsNotCommittedPast: under fsync interval a dead letter is
// acknowledged once written, and the answer is lost on the way (a cut connection); then the
// log's next fsync fails, the broker stops, and its restart will cut the dead letter. Asked
// again with the same key and the same body, the broker answers with its failure, never
// "duplicate" (broker.TestNoDuplicateAnswerForCutRequest). The consumer must go on asking
// that same request: a dead letter sent again with other headers (a new imago-dlq-time) is
// answered idempotency_key_reused, which the consumer takes as "stored already", and it
// would commit past a message that is then neither handled nor in the dead-letter topic.
// The failed fsync is injected (internal/fsutil): a real disk cannot be made to fail one
// chosen fsync; the lost answer is a transport that drops it after the server answered.
func TestDeadLetterOfUnknownOutcomeIsNotCommittedPast(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	offs, err := offsetdb.OpenFile(t.TempDir(), quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { offs.Close() })
	lazy := func(o *broker.Options) {
		o.Fsync = broker.FsyncPolicy{Mode: broker.FsyncInterval, Interval: time.Hour}
		o.CheckpointInterval = time.Hour
		o.SegmentBytes = 64 << 10
	}
	opts := gateway.Options{Offsets: offs, Logger: quietLogger()}
	srv, err := openImago(dir, opts, lazy)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.close() }() // after the injected failure Close reports it: not this test's subject

	c := client.New(srv.URL)
	topic, fill := uniqueTopic("pay."), uniqueTopic("fill.")
	dlq := client.DLQTopic(topic)
	for _, name := range []string{topic, dlq, fill} {
		if _, err := c.CreateTopic(ctx, name, client.TopicConfig{Partitions: 1}); err != nil {
			t.Fatal(err)
		}
	}
	// A transaction's commit is fsync'd under every policy: the message is readable at once.
	tx, err := c.Begin(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Add(ctx, client.To(topic, client.Text("transfer 1"))); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	var failing atomic.Bool
	var failedSyncs atomic.Int64
	logDir := filepath.Join(dir, "log") + string(filepath.Separator)
	restore := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		if failing.Load() && ev.Kind == fsutil.File && strings.HasPrefix(filepath.Clean(ev.Path), logDir) {
			failedSyncs.Add(1)
			return errors.New("input/output error (injected)")
		}
		return do()
	})
	defer restore()

	var dlqPosts atomic.Int64
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err != nil || r.Method != http.MethodPost || r.URL.Path != "/v1/topics/"+dlq+"/messages" || dlqPosts.Add(1) != 1 {
			return resp, err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("first dead letter: status %d, want 200", resp.StatusCode)
		}
		// The dead letter is written and acknowledged, not fsync'd. The next fsync of the log
		// (the roll a message larger than the segment's room makes) fails.
		failing.Store(true)
		big := client.Text(strings.Repeat("x", 70<<10))
		if _, err := c.Produce(ctx, fill, []client.Message{big}, client.ProduceOptions{}); err == nil {
			t.Errorf("a produce whose roll fsync failed was acknowledged")
		}
		return nil, errors.New("connection reset by peer (injected after the server answered)")
	})}

	const group = "dlq-unknown"
	cs := client.NewConsumer(client.New(srv.URL, client.WithHTTPClient(hc), client.WithBackoff(time.Millisecond, 5*time.Millisecond)),
		group, []string{topic}, client.ConsumerRetry(client.RetryPolicy{Attempts: 1}),
		client.ConsumerPollWait(100*time.Millisecond), client.ConsumerLogger(quietLogger()))
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- cs.Run(rctx, func(context.Context, client.FetchedMessage) error { return errors.New("ledger rejects the transfer") })
	}()
	// The client sends one request 5 times: wait for the consumer's second round of the dead
	// letter, or for a commit.
	for dlqPosts.Load() < 8 && committedOffset(ctx, t, c, group, topic, 0) < 0 {
		if !sleepCtx(ctx, 20*time.Millisecond) {
			t.Fatalf("the consumer sent the dead letter %d times and committed nothing: %v", dlqPosts.Load(), ctx.Err())
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if failedSyncs.Load() == 0 {
		t.Fatal("no fsync failed: the scene did not happen")
	}
	if off := committedOffset(ctx, t, c, group, topic, 0); off >= 0 {
		t.Fatalf("the group committed offset %d of %s/0 after the dead letter's outcome became unknown (the restart cuts it): "+
			"the message is neither handled nor in %s", off, topic, dlq)
	}

	// After a restart the dead letter is gone, and the consumer stores it again and commits.
	srv.close()
	restore()
	srv, err = openImago(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	c = client.New(srv.URL)
	if end := endOffset(t, c, dlq); end != 0 {
		t.Fatalf("%s ends at %d after the restart, want 0: the dead letter was not cut, the test tested nothing", dlq, end)
	}
	cs = client.NewConsumer(c, group, []string{topic}, client.ConsumerRetry(client.RetryPolicy{Attempts: 1}),
		client.ConsumerPollWait(100*time.Millisecond), client.ConsumerLogger(quietLogger()))
	rctx, stop = context.WithCancel(ctx)
	defer stop()
	go func() {
		done <- cs.Run(rctx, func(context.Context, client.FetchedMessage) error { return errors.New("ledger rejects the transfer") })
	}()
	for committedOffset(ctx, t, c, group, topic, 0) < 1 {
		if !sleepCtx(ctx, 20*time.Millisecond) {
			t.Fatalf("after the restart the consumer did not move the message to %s: %v", dlq, ctx.Err())
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run after the restart: %v", err)
	}
	if end := endOffset(t, c, dlq); end != 1 {
		t.Fatalf("%s ends at %d, want 1: one dead letter", dlq, end)
	}
}
