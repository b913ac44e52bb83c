package offsetdb

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/privatedb"
)

// Database faults under the SQL offset stores, on a private MariaDB or PostgreSQL
// (internal/privatedb) reached through privatedb.LossyProxy: a flush whose answer is lost
// while the server commits it, and the server killed with SIGKILL right after a flush was sent
// and started again on the same data. The shared servers are never touched.

// TestSQLStoreFlushFaults: a flush whose answer is lost (the offsets are in fact stored) fails
// its commits or, on PostgreSQL, is retried on a new connection and acknowledged once that
// retry stored them: never an ack for what is not known stored; a retry by the consumer is
// harmless, as is a late lower commit. When the server ends every session of the pool, the
// next commits succeed at once. A flush cut by the server's death fails; once the server is
// back the same Batcher commits again on new connections, without a restart, and every
// acknowledged offset is there.
func TestSQLStoreFlushFaults(t *testing.T) {
	for _, d := range []string{KindPostgres, KindMySQL} {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			srv := privatedb.Open(t, d)
			proxy := privatedb.NewLossyProxy(t, srv.Addr())
			ctx := context.Background()
			b, err := Open(ctx, Config{Store: d, DSN: srv.DSNVia(proxy.Addr()), Migrate: true, MaxConns: 4,
				GroupCommit: GroupCommitConfig{FlushTimeout: 5 * time.Second}})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			direct, err := Open(ctx, Config{Store: d, DSN: srv.DSN(), MaxConns: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer direct.Close()
			const group, topic = "g", "t"
			acked := map[int]int64{} // partition -> highest acknowledged offset
			commit := func(p int, next int64, by string) error {
				err := b.Commit(ctx, []Offset{{Group: group, Topic: topic, Partition: p, Next: next, CommittedBy: by}})
				if err == nil {
					acked[p] = max(acked[p], next)
				}
				return err
			}
			stored := func(p int) int64 {
				o, ok, err := direct.Get(ctx, group, topic, p)
				if err != nil || !ok {
					return -1
				}
				return o.Next
			}
			for p := range 4 {
				if err := commit(p, 10, "warm"); err != nil {
					t.Fatal(err)
				}
			}

			// The answer lost once the upsert is committed.
			proxy.Arm("lost-answer", privatedb.Until(func() bool { return stored(0) == 20 }))
			// An error, or (PostgreSQL retries the idempotent upsert on a new connection) an ack
			// of the retry, which stored it again: either way never an ack of what is not stored.
			err = commit(0, 20, "lost-answer")
			t.Logf("the commit whose flush lost its answer: %v", err)
			if proxy.Cuts() != 1 || stored(0) != 20 {
				t.Fatalf("the proxy cut %d answers; stored %d, want the flush committed (20)", proxy.Cuts(), stored(0))
			}
			if err := commit(0, 20, "retry"); err != nil {
				t.Fatalf("the retry of a flush whose answer was lost: %v", err)
			}
			if err := commit(0, 15, "late"); err != nil || stored(0) != 20 {
				t.Fatalf("a late lower commit: %v, stored %d, want 20 kept", err, stored(0))
			}

			// The server ends every session (pg_terminate_backend, KILL CONNECTION) of the
			// pool, fresh from a flush: the next commits succeed at once.
			for p := range 4 {
				if err := commit(p, 25, "before-kill"); err != nil {
					t.Fatal(err)
				}
			}
			killSessions(t, srv, d)
			for p := range 4 {
				if err := commit(p, 26, "after-kill"); err != nil {
					t.Errorf("partition %d: commit after the server ended the pool's sessions: %v", p, err)
				}
			}

			// The server killed right after a flush was sent.
			proxy.Arm("killed", srv.Kill)
			if err := commit(1, 30, "killed"); err == nil {
				t.Fatal("a flush cut by the server's death acknowledged its commit")
			}
			srv.Start()
			// The same Batcher, new connections: every partition's commit succeeds at once.
			for p := range 4 {
				if err := commit(p, 40+int64(p), fmt.Sprint("after-", p)); err != nil {
					t.Errorf("partition %d: commit after the server came back: %v", p, err)
				}
			}
			for p, want := range acked {
				if got := stored(p); got < want {
					t.Errorf("partition %d: stored %d, below the acknowledged %d", p, got, want)
				}
			}
		})
	}
}

// killSessions ends every client session of srv but its own, and waits until they are gone.
func killSessions(t *testing.T, srv *privatedb.Server, dialect string) {
	t.Helper()
	db := srv.DB()
	defer db.Close()
	if dialect == KindPostgres {
		if _, err := db.Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'`); err != nil {
			t.Fatal(err)
		}
		for n := -1; n != 0; time.Sleep(5 * time.Millisecond) {
			if err := db.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'`).Scan(&n); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	for {
		var ids []int64
		rows, err := db.Query(`SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND COMMAND <> 'Daemon' AND USER <> 'system user'`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		rows.Close()
		if len(ids) == 0 {
			return
		}
		for _, id := range ids {
			_, _ = db.Exec(fmt.Sprintf("KILL CONNECTION %d", id)) // may be gone already
		}
		time.Sleep(5 * time.Millisecond)
	}
}
