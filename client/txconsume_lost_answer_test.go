package client_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
)

// TestTxConsumerRecoversALostFirstPollAnswer: a transactional consumer whose database has no
// offset row yet for the partition loses the answer to its first poll. Its next poll says its
// positions are complete (it has none), so the server reads the partition again from where
// the member started it: the row is created at offset 0 and every message is applied, instead
// of the row starting at the first offset of the next answer and the lost messages never being
// applied. Against both real databases.
func TestTxConsumerRecoversALostFirstPollAnswer(t *testing.T) {
	for _, driver := range []string{"pgx", "mysql"} {
		t.Run(driver, func(t *testing.T) {
			c, topic, group, db, url := txSetup(t, driver) // offset 0 holds one message
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			produceN(ctx, t, c, topic, 0, 5) // offsets 1..5
			if off := storedOffset(t, db, driver, group, topic); off != -1 {
				t.Fatalf("the database holds offset %d before the first run, want no row", off)
			}

			lossy, polls, lost := lossyPolls(func(n int64, ans *client.GroupMessages) bool { return n == 1 && len(ans.Messages) > 0 })
			dialect := "postgres"
			if driver == "mysql" {
				dialect = "mysql"
			}
			tc := client.NewTxConsumer(client.New(url, client.WithHTTPClient(lossy)), group, []string{topic}, db, dialect,
				client.ConsumerMaxMessages(3), client.ConsumerPollWait(100*time.Millisecond), client.ConsumerLogger(quietLogger()))
			h := newHandledLog()
			rctx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() {
				done <- tc.Run(rctx, func(_ context.Context, _ *sql.Tx, m client.FetchedMessage) error {
					h.add(m)
					return nil
				})
			}()
			// The run is over when the database holds the offset after the last message
			// (a row started past the lost messages gets there too, without them).
			for storedOffset(t, db, driver, group, topic) != 6 {
				select {
				case err := <-done:
					t.Fatalf("Run returned early: %v", err)
				case <-ctx.Done():
					t.Fatalf("the database holds offset %d, want 6; handled %s", storedOffset(t, db, driver, group, topic), h)
				case <-h.changed: // a message was handled; its transaction commits right after
				case <-time.After(50 * time.Millisecond): // the commit of the last one
				}
			}
			stop()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			select {
			case <-lost:
			default:
				t.Fatalf("%d polls: the first answer was never lost", polls.Load())
			}
			h.wantEachOnce(t, map[client.Assignment][]int64{{Topic: topic, Partition: 0}: {0, 1, 2, 3, 4, 5}})
		})
	}
}
