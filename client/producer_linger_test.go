package client_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
)

// TestProducerLingerZeroSendsEveryPendingBatch: with ProducerLinger(0) a lane sends what is
// pending as soon as its queue is empty. Here one lane is busy with a request while a message
// to topic a and two to topic b queue behind it; the second b message fills b's batch, which
// is sent at once. The queue is then empty, so a's batch must leave too, without waiting for
// a later Send, Flush or Close.
func TestProducerLingerZeroSendsEveryPendingBatch(t *testing.T) {
	ctx := background(t)
	release := make(chan struct{})
	blocked := make(chan struct{}, 1)
	gate := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Method == http.MethodPost && strings.Contains(r.URL.Path, "/gate-") {
			blocked <- struct{}{}
			<-release // the lane stays in this request while the next messages queue up
		}
		return http.DefaultTransport.RoundTrip(r)
	})}
	c := client.New(imagoURL, client.WithHTTPClient(gate))
	gateT, a, b := uniqueTopic("gate"), uniqueTopic("lz-a"), uniqueTopic("lz-b")
	for _, tp := range []string{gateT, a, b} {
		if _, err := c.CreateTopic(ctx, tp, client.TopicConfig{Partitions: 1}); err != nil {
			t.Fatal(err)
		}
	}
	p := c.NewProducer(client.ProducerLinger(0), client.ProducerLanes(1), client.ProducerMaxBatch(2))
	defer p.Close(context.Background())

	gch := p.SendCh(ctx, gateT, client.Text("gate"))
	<-blocked // the lane is inside the request for gateT
	ach := p.SendCh(ctx, a, client.Text("a1"))
	bch1 := p.SendCh(ctx, b, client.Text("b1"))
	bch2 := p.SendCh(ctx, b, client.Text("b2")) // fills b's batch (max 2)
	close(release)
	for _, ch := range []<-chan client.Delivery{gch, bch1, bch2} {
		if d := <-ch; d.Err != nil {
			t.Fatal(d.Err)
		}
	}
	// b's batch was sent; a's must follow on its own (5 s bounds a failure, it is no wait for
	// success: a's request leaves right after b's).
	select {
	case d := <-ach:
		if d.Err != nil {
			t.Fatal(d.Err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the message to topic a is still in the lane 5s after b's batch was sent with linger 0: it waits for a later Send, Flush or Close")
	}
}
