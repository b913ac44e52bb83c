package client_test

import (
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
)

// TestXAPrepareAnswerWithoutVoteVotesFromRecover: the server prepared the branch and answered
// 200, but the JSON of its answer, whole, carried no vote ({}) or one the client does not know
// ({"vote":"maybe"}), as a proxy or a half-upgraded server could answer. A real server always
// sends "ok" or "rdonly", so a fake layer between it and the client (withBody) replaces the
// body of its real 200. Such an answer says nothing of the vote, so Prepare asks recover, as
// for a vote cut off: a branch holding messages is listed and votes XA_OK (and commits), an
// empty branch is not and votes XA_RDONLY, and with recover failing the vote is unknown:
// XAER_RMFAIL, never XAER_RMERR. (Before, both branches voted XA_OK without asking recover,
// and the failing recover was never asked.)
func TestXAPrepareAnswerWithoutVoteVotesFromRecover(t *testing.T) {
	for _, tc := range []struct{ name, body string }{
		{"no-vote", `{}`},
		{"unknown-vote", `{"vote":"maybe"}`},
	} {
		body := tc.body
		t.Run(tc.name, func(t *testing.T) {
			ctx := background(t)
			var spoil, recoverFails atomic.Bool
			var spoiled, recovers atomic.Int64
			next := roundTripFunc(func(r *http.Request) (*http.Response, error) {
				switch r.URL.Path {
				case "/v1/xa/prepare":
					if spoil.Load() {
						spoiled.Add(1)
					}
				case "/v1/xa/recover":
					recovers.Add(1)
					if recoverFails.Load() {
						return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused (injected)")}
					}
				}
				return http.DefaultTransport.RoundTrip(r)
			})
			c := client.New(imagoURL, client.WithHTTPClient(withBody(next, "/v1/xa/prepare", &spoil, body)),
				client.WithBackoff(time.Millisecond, 5*time.Millisecond))
			topic := uniqueTopic("xa-prepare-novote")
			if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
				t.Fatal(err)
			}
			rm := c.NewXAResource()
			// prepare prepares x with the server's answer replaced by body, fails the test when
			// it was not replaced, and says whether prepare asked recover.
			prepare := func(t *testing.T, x client.Xid) (rdonly, askedRecover bool, err error) {
				t.Helper()
				spoiled.Store(0)
				before := recovers.Load()
				spoil.Store(true)
				rdonly, err = rm.Prepare(ctx, x)
				spoil.Store(false)
				if spoiled.Load() != 1 {
					t.Fatalf("%d prepare answers replaced, want 1: the test tested nothing", spoiled.Load())
				}
				return rdonly, recovers.Load() != before, err
			}

			t.Run("prepared", func(t *testing.T) {
				x := preparedBranch(t, rm, topic, "debit", "credit")
				rdonly, asked, err := prepare(t, x)
				if err != nil || rdonly {
					t.Fatalf("prepare of a branch with messages answered 200 %s: rdonly=%v err=%v, want vote XA_OK", body, rdonly, err)
				}
				if !asked {
					t.Fatalf("prepare answered 200 %s voted XA_OK without asking recover: nothing said the branch is prepared", body)
				}
				if _, err := rm.Commit(ctx, x, false); err != nil {
					t.Fatalf("commit after the recovered vote: %v", err)
				}
				if end := endOffset(t, c, topic); end != 2 {
					t.Fatalf("end %d, want 2: the branch is committed", end)
				}
			})

			t.Run("read-only", func(t *testing.T) {
				x := preparedBranch(t, rm, topic)
				rdonly, _, err := prepare(t, x)
				if err != nil || !rdonly {
					t.Fatalf("prepare of an empty branch answered 200 %s: rdonly=%v err=%v, want vote XA_RDONLY", body, rdonly, err)
				}
				if _, err := rm.Commit(ctx, x, false); !client.IsXACode(err, client.XAERNota) {
					t.Fatalf("commit of the read-only branch: %v, want XAER_NOTA (it is forgotten)", err)
				}
			})

			t.Run("recover-fails", func(t *testing.T) {
				x := preparedBranch(t, rm, topic, "debit")
				recoverFails.Store(true)
				rdonly, _, err := prepare(t, x)
				recoverFails.Store(false)
				if !client.IsXACode(err, client.XAERRMFail) {
					t.Fatalf("prepare answered 200 %s whose recover failed: rdonly=%v err=%v, want XAER_RMFAIL", body, rdonly, err)
				}
				// The branch is prepared on the server: the manager's recovery finds it and
				// rolls it back.
				xids, err := rm.Recover(ctx)
				if err != nil || !containsXid(xids, x) {
					t.Fatalf("recover %v %v does not list the prepared branch %s", xids, err, x)
				}
				if err := rm.Rollback(ctx, x); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}
