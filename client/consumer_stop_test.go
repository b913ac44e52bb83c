package client_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
)

// TestConsumerCommitsWhatItHandledWhileStopping: Run's context ends while a handler runs, and
// the handler finishes its work and returns nil (here it cancels the context itself, as a
// handler that stops after a message does). The message is handled: the final commit, which
// does not depend on ctx, commits past it, and the next run of the group does not deliver it
// again.
func TestConsumerCommitsWhatItHandledWhileStopping(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := startGroupsServer(t)
	c := client.New(srv.URL)
	topic := uniqueTopic("stop.")
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	produceN(ctx, t, c, topic, 0, 1)

	const group = "stop-after-one"
	cs := client.NewConsumer(c, group, []string{topic},
		client.ConsumerPollWait(100*time.Millisecond), client.ConsumerLogger(quietLogger()))
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	calls := 0
	err := cs.Run(rctx, func(_ context.Context, m client.FetchedMessage) error {
		calls++
		stop() // shutting down while this message is handled; its work is done all the same
		return nil
	})
	if err != nil || calls != 1 {
		t.Fatalf("Run: %v after %d handler calls, want nil after 1", err, calls)
	}
	if committed := committedOffset(ctx, t, c, group, topic, 0); committed != 1 {
		t.Fatalf("group committed offset %d of %s/0 (-1: none), want 1: the handler returned nil for offset 0, "+
			"and the next run of the group delivers it again", committed, topic)
	}
}

// committedOffset returns the group's committed offset of a partition, -1 when it has none.
func committedOffset(ctx context.Context, t *testing.T, c *client.Client, group, topic string, partition int) int64 {
	t.Helper()
	g, err := c.GroupOffsets(ctx, group)
	if client.IsStatus(err, http.StatusNotFound) {
		return -1
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range g.Offsets {
		if o.Topic == topic && o.Partition == partition {
			return o.Offset
		}
	}
	return -1
}
