package offsetdb

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/privatedb"
)

// The database of an SQL offset store runs out of disk: a private MariaDB or PostgreSQL whose
// data directory is on a small tmpfs (privatedb.OnTmpfs; root only), filled by the test.
// PostgreSQL PANICs at the first WAL write that needs a segment there is no room for, and
// shuts down; MariaDB refuses the rows a table has no page for ("table is full").

// TestSQLStoreDiskFull: a group commit whose flush fails for lack of space is not
// acknowledged; once the space is back (and PostgreSQL started again) the same Batcher
// commits again at once, without a restart, and every acknowledged offset is stored.
func TestSQLStoreDiskFull(t *testing.T) {
	for _, d := range []string{KindPostgres, KindMySQL} {
		t.Run(d, func(t *testing.T) {
			size := "64m"
			if d == KindMySQL {
				size = "128m"
			}
			srv := privatedb.Open(t, d, privatedb.OnTmpfs(size))
			ctx := context.Background()
			b, err := Open(ctx, Config{Store: d, DSN: srv.DSN(), Migrate: true, MaxConns: 4,
				GroupCommit: GroupCommitConfig{FlushTimeout: 5 * time.Second}})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			const group, topic = "g", "t"
			acked := map[int]int64{} // partition -> highest acknowledged offset
			commit := func(next int64, partitions ...int) error {
				offs := make([]Offset, len(partitions))
				for i, p := range partitions {
					offs[i] = Offset{Group: group, Topic: topic, Partition: p, Next: next, CommittedBy: strings.Repeat("m", 64)}
				}
				err := b.Commit(ctx, offs)
				if err == nil {
					for _, p := range partitions {
						acked[p] = max(acked[p], next)
					}
				}
				return err
			}
			for p := range 4 {
				if err := commit(10, p); err != nil {
					t.Fatal(err)
				}
			}

			free := srv.Fill(0)
			var failed error
			if d == KindPostgres {
				admin, err := sql.Open(srv.Driver(), srv.DSN())
				if err != nil {
					t.Fatal(err)
				}
				// The next WAL record needs a segment there is no room for.
				_, err = admin.Exec("SELECT pg_switch_wal()")
				admin.Close()
				if err != nil {
					t.Fatal(err)
				}
				failed = commit(20, 0, 1)
			} else {
				// New rows until a page is missing: 100 partitions a commit.
				for next := 4; failed == nil && next < 100000; next += 100 {
					parts := make([]int, 100)
					for i := range parts {
						parts[i] = next + i
					}
					failed = commit(20, parts...)
				}
			}
			if failed == nil {
				t.Fatal("every commit was acknowledged on a full disk")
			}
			t.Logf("the commit whose flush ran out of space: %v", failed)
			if d == KindPostgres {
				waitFor(t, 30*time.Second, "PostgreSQL to shut down for lack of space", srv.Exited)
				free()
				srv.Start()
			} else {
				free()
			}
			// The same Batcher: every partition's commit succeeds at once.
			for p := range 4 {
				if err := commit(40+int64(p), p); err != nil {
					t.Errorf("partition %d: commit once the space is back: %v", p, err)
				}
			}
			direct, err := Open(ctx, Config{Store: d, DSN: srv.DSN(), MaxConns: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer direct.Close()
			for p, want := range acked {
				o, ok, err := direct.Get(ctx, group, topic, p)
				if err != nil || !ok || o.Next < want {
					t.Errorf("partition %d: stored %v (found %v, %v), below the acknowledged %d", p, o.Next, ok, err, want)
				}
			}
			t.Logf("%d partitions acknowledged", len(acked))
		})
	}
}
