package outbox_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/privatedb"
	"github.com/imagomq/imago/outbox"
)

// TestRelayDatabaseDiskFull runs the outbox's PostgreSQL out of disk (a private server on a
// small tmpfs, privatedb.OnTmpfs; root only) once the broker acknowledged a batch, before the
// transaction that completes it: PostgreSQL PANICs at the next WAL write (the completing
// transaction's, as the relay writes nothing else meanwhile) and stays down until the space
// is back. The relay keeps trying; once the server is back every row is in the topic exactly
// once, each key's messages in outbox order, none skipped, the outbox empty, and rows written
// afterwards follow. (MariaDB needs no new page to complete a batch, which deletes rows and
// updates one: its full disk refuses the writers' inserts, not the relay.)
func TestRelayDatabaseDiskFull(t *testing.T) {
	po := newPrivateOutbox(t, outbox.Postgres, privatedb.OnTmpfs("64m"))
	e := po.fresh(t)
	topic := uniqueName(t, "t.")
	b := openBroker(t, topic, 2)
	l := newLedger()
	ctx := context.Background()
	write := func(from, n int) {
		for i := from; i < from+n; i++ {
			key := fmt.Sprintf("k%d", i%3)
			if err := e.writeTx(ctx, topic, key, []int{i}, true); err != nil {
				t.Fatal(err)
			}
			l.add(key, []int{i}, true)
		}
	}
	write(0, 40)

	pub := &faultPublisher{b: b, at: 2}
	full := make(chan func()) // the function that frees the space
	pub.after = func() {
		free := po.srv.Fill(0)
		// The next WAL record needs a segment there is no room for.
		if _, err := e.db.Exec("SELECT pg_switch_wal()"); err != nil {
			t.Errorf("pg_switch_wal: %v", err)
		}
		full <- free
	}
	opts := e.relayOptions()
	opts.BatchSize = 10
	opts.MaxPoll = 50 * time.Millisecond
	startRelay(t, opts, pub)
	free := <-full
	waitFor(t, 30*time.Second, "PostgreSQL to shut down for lack of space", po.srv.Exited)
	for _, line := range strings.Split(po.srv.Log(), "\n") {
		if strings.Contains(line, "PANIC") || strings.Contains(line, "STATEMENT") {
			t.Log(line)
		}
	}
	if !strings.Contains(po.srv.Log(), "No space left on device") {
		t.Fatalf("PostgreSQL shut down, but not for lack of space:\n%s", po.srv.Log())
	}
	free()
	po.srv.Start()
	write(40, 10)
	waitFor(t, 30*time.Second, "the outbox to drain", func() bool { return po.rowsLeft(e) == 0 && pub.calls.Load() > 2 })
	l.check(t, fetchAllBroker(t, b, topic))
}
