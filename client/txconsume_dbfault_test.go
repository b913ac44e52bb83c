package client_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/gateway"
	"github.com/imagomq/imago/internal/privatedb"
	"github.com/imagomq/imago/migrations"
	"github.com/imagomq/imago/offsetdb"
)

// TestTxConsumerDatabaseFaults: the transactional consumer's database, a private MariaDB or
// PostgreSQL (internal/privatedb) behind privatedb.LossyProxy, fails in the middle of a
// batch's transaction: the server killed with SIGKILL between the handler's write and the
// commit, the commit's answer lost while it commits, or the server killed right after the
// COMMIT was sent. Once the server is back each message's effect is in the database exactly
// once and the offset is past every message.
func TestTxConsumerDatabaseFaults(t *testing.T) {
	for _, d := range []string{"postgres", "mysql"} {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			srv := privatedb.Open(t, d)
			direct := srv.DB()
			if err := migrations.Apply(context.Background(), direct, d); err != nil {
				t.Fatal(err)
			}
			for _, fault := range []string{"killed-before-commit", "commit-answer-lost", "killed-at-commit"} {
				t.Run(fault, func(t *testing.T) { testTxConsumerFault(t, srv, direct, d, fault) })
			}
		})
	}
}

func testTxConsumerFault(t *testing.T, srv *privatedb.Server, direct *sql.DB, dialect, fault string) {
	ctx := context.Background()
	table := txName(t, "effects_")
	if _, err := direct.Exec(`CREATE TABLE ` + table + ` (off BIGINT NOT NULL)`); err != nil { // no key: a second effect is a second row
		t.Fatal(err)
	}
	ph := map[string]string{"postgres": "$1", "mysql": "?"}[dialect]
	proxy := privatedb.NewLossyProxy(t, srv.Addr())
	db, err := sql.Open(srv.Driver(), srv.DSNVia(proxy.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	offs, err := offsetdb.OpenFile(t.TempDir(), quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer offs.Close()
	imago := startImago(t, "", gateway.Options{Offsets: offs, Logger: quietLogger()})
	c := client.New(imago.URL)
	topic, group := txName(t, "txf."), txName(t, "g-")
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	const n, at = 30, 12 // messages; the faulted batch holds offset at
	for i := range n {
		if _, err := c.Produce(ctx, topic, []client.Message{{Value: []byte(fmt.Sprint(i))}}, client.ProduceOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	stored := func() int64 {
		q := `SELECT next_offset FROM imago.consumer_offsets WHERE group_name = $1 AND topic = $2 AND partition = 0`
		if dialect == "mysql" {
			q = "SELECT next_offset FROM imago_consumer_offsets WHERE group_name = ? AND topic = ? AND `partition` = 0"
		}
		var next int64
		if err := direct.QueryRow(q, group, topic).Scan(&next); err != nil {
			return -1
		}
		return next
	}
	var faulted atomic.Bool
	killed := make(chan struct{})
	commitMarker := map[string]string{"postgres": "commit", "mysql": "COMMIT"}[dialect]
	h := func(ctx context.Context, tx *sql.Tx, m client.FetchedMessage) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO `+table+` (off) VALUES (`+ph+`)`, m.Offset); err != nil {
			return err
		}
		if m.Offset != at || !faulted.CompareAndSwap(false, true) {
			return nil
		}
		switch fault {
		case "killed-before-commit":
			srv.Kill()
			close(killed)
		case "commit-answer-lost":
			// This batch's transaction is the pool's next COMMIT.
			proxy.Arm(commitMarker, privatedb.Until(func() bool { return stored() > at }))
		case "killed-at-commit":
			proxy.Arm(commitMarker, func() { srv.Kill(); close(killed) })
		}
		return nil
	}
	tc := client.NewTxConsumer(c, group, []string{topic}, db, dialect, client.ConsumerMaxMessages(5),
		client.ConsumerPollWait(50*time.Millisecond), client.ConsumerLogger(quietLogger()))
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- tc.Run(cctx, h) }()
	defer func() {
		cancel()
		if err := <-done; err != nil && cctx.Err() == nil {
			t.Errorf("consumer: %v", err)
		}
	}()
	if fault != "commit-answer-lost" {
		select {
		case <-killed:
		case <-time.After(20 * time.Second):
			t.Fatal("the fault never happened")
		}
		srv.Start()
	}
	deadline := time.Now().Add(30 * time.Second)
	for stored() != n {
		if time.Now().After(deadline) {
			t.Fatalf("stored offset %d, want %d", stored(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if fault != "killed-before-commit" && proxy.Cuts() != 1 {
		t.Fatalf("the proxy cut %d answers, want 1", proxy.Cuts())
	}
	rows, err := direct.Query(`SELECT off, COUNT(*) FROM ` + table + ` GROUP BY off`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen := map[int64]int{}
	for rows.Next() {
		var off int64
		var k int
		if err := rows.Scan(&off, &k); err != nil {
			t.Fatal(err)
		}
		seen[off] = k
	}
	for i := range int64(n) {
		if seen[i] != 1 {
			t.Errorf("message %d applied %d times, want once", i, seen[i])
		}
	}
}
