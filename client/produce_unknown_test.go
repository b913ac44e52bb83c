package client_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/client"
)

// TestKeyedProduceUnknownThenRefusedIsNotARefusal: the first attempt of a keyed produce is
// stored by the real server but its answer is lost; every retry is then refused with 429. The
// batch is stored, so the error must not read as a refusal (a 429 says nothing was appended, and
// a caller that believes it sends the messages again, under a new key: a second copy). It must
// say that the outcome is unknown. The refusals and the lost answer are injected by a transport
// in front of the real server: a real broker refuses only under real overload.
func TestKeyedProduceUnknownThenRefusedIsNotARefusal(t *testing.T) {
	ctx := background(t)
	topic := uniqueTopic("unknown-then-429")
	if _, err := client.New(imagoURL).CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	for _, first := range []string{"lost answer", "cut answer", "outcome_unknown"} {
		t.Run(first, func(t *testing.T) {
			var calls atomic.Int64
			hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
				if r.Method != http.MethodPost || calls.Add(1) > 1 {
					if r.Method != http.MethodPost {
						return http.DefaultTransport.RoundTrip(r)
					}
					return &http.Response{StatusCode: http.StatusTooManyRequests, Request: r,
						Header: http.Header{"Content-Type": {"application/json"}},
						Body:   io.NopCloser(strings.NewReader(`{"error":{"code":"backpressure","message":"busy (injected)"}}`))}, nil
				}
				resp, err := http.DefaultTransport.RoundTrip(r) // the real server stores the batch
				if err != nil {
					return nil, err
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch first {
				case "lost answer":
					return nil, &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer (injected)")}
				case "cut answer":
					resp.Body = io.NopCloser(strings.NewReader(string(body[:len(body)/2])))
					return resp, nil
				}
				return &http.Response{StatusCode: http.StatusServiceUnavailable, Request: r,
					Header: http.Header{"Content-Type": {"application/json"}},
					Body:   io.NopCloser(strings.NewReader(`{"error":{"code":"outcome_unknown","message":"leader lost (injected)"}}`))}, nil
			})}
			c := client.New(imagoURL, client.WithHTTPClient(hc), client.WithBackoff(time.Millisecond, 2*time.Millisecond))
			_, err := c.Produce(ctx, topic, []client.Message{client.Text(first)}, client.ProduceOptions{Idempotent: true})
			if calls.Load() < 2 {
				t.Fatalf("%d attempts: the produce was not retried", calls.Load())
			}
			if err == nil {
				t.Fatal("every retry was refused, yet Produce reports success")
			}
			if client.IsStatus(err, http.StatusTooManyRequests) || client.IsCode(err, api.CodeBackpressure) {
				t.Fatalf("Produce reports a refusal (%v) for a batch the server stored", err)
			}
			if !errors.Is(err, client.ErrOutcomeUnknown) {
				t.Fatalf("error %v does not wrap ErrOutcomeUnknown", err)
			}
			if first == "outcome_unknown" && !client.IsCode(err, api.CodeOutcomeUnknown) {
				t.Fatalf("error %v lost the server's outcome_unknown", err)
			}
		})
	}
	page, err := client.New(imagoURL).Fetch(ctx, topic, 0, client.FetchOptions{Offset: 0})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Messages) != 3 {
		t.Fatalf("%d messages stored, want 3 (each stored once by its first attempt)", len(page.Messages))
	}
}

// A produce whose attempts were all refused (nothing was stored) still reports the refusal.
func TestKeyedProduceRefusedStaysARefusal(t *testing.T) {
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if strings.HasPrefix(r.URL.Path, "/v1/topics/") && r.Method == http.MethodPost {
			return &http.Response{StatusCode: http.StatusTooManyRequests, Request: r,
				Header: http.Header{"Content-Type": {"application/json"}},
				Body:   io.NopCloser(strings.NewReader(`{"error":{"code":"backpressure","message":"busy (injected)"}}`))}, nil
		}
		return http.DefaultTransport.RoundTrip(r)
	})}
	c := client.New(imagoURL, client.WithHTTPClient(hc), client.WithBackoff(time.Millisecond, 2*time.Millisecond))
	_, err := c.Produce(context.Background(), uniqueTopic("refused"), []client.Message{client.Text("x")}, client.ProduceOptions{Idempotent: true})
	if !client.IsStatus(err, http.StatusTooManyRequests) || errors.Is(err, client.ErrOutcomeUnknown) {
		t.Fatalf("%v, want the 429 refusal", err)
	}
}
