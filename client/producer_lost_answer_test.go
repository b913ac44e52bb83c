package client_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
)

// TestProducerDeliveryErrMayBeStored: every answer to a produce is lost after the server
// stored the batch (the transport reads the server's answer, then reports a reset), until the
// delivery timeout. The idempotent producer's retries store nothing twice, but the delivery
// reports an error for a message that is stored: a caller that sends it again (a new batch,
// so a new idempotency key) stores it twice. ExampleProducer and Delivery.Err say so.
func TestProducerDeliveryErrMayBeStored(t *testing.T) {
	ctx := background(t)
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err != nil || r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/messages") {
			return resp, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil, &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer (injected)")}
	})}
	c := client.New(imagoURL, client.WithHTTPClient(hc), client.WithBackoff(time.Millisecond, 20*time.Millisecond))
	topic := uniqueTopic("lost-delivery")
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	p := c.NewProducer(client.ProducerDeliveryTimeout(300 * time.Millisecond))
	d := <-p.SendCh(ctx, topic, client.Text("payment-1"))
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d.Err == nil {
		t.Fatal("every answer was lost, yet the delivery reports success")
	}
	page, err := client.New(imagoURL).Fetch(ctx, topic, 0, client.FetchOptions{Offset: 0})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Messages) != 1 {
		t.Fatalf("%d messages stored, want 1 (stored once, though the delivery failed: %v)", len(page.Messages), d.Err)
	}
}
