package offsetdb

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/imagomq/imago/internal/testenv"
)

// TestPartitionEndsAndLag runs the broker's side (PartitionEnds) and the
// consumer's side (a Store) against each database and reads the lag view,
// with CommitTx (transactional consume) writing one of the offsets.
func TestPartitionEndsAndLag(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{KindPostgres, KindMySQL} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			cfg := Config{Store: kind, Migrate: true, Logger: quietLogger()}
			if kind == KindPostgres {
				cfg.DSN = testenv.PostgresDSN(t)
			} else {
				cfg.DSN = testenv.MySQLDSN(t)
			}
			topic := uniqueName(t, "topic")
			group := uniqueName(t, "g")
			ends, err := OpenPartitionEnds(ctx, cfg, 20*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			ends.Record(topic, 0, 500)
			ends.Record(topic, 0, 400) // stale: kept greater
			ends.Record(topic, 1, 70)
			if err := ends.Update(ctx, []PartitionEnd{{Topic: topic, Partition: 2, End: 9}}); err != nil {
				t.Fatal(err)
			}
			if err := ends.Close(); err != nil { // writes what is pending
				t.Fatal(err)
			}

			s, err := Open(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			mustCommit(t, s, Offset{Group: group, Topic: topic, Partition: 0, Next: 450},
				Offset{Group: group, Topic: topic, Partition: 1, Next: 70})

			// Transactional consume: the offset commits with the caller's transaction.
			var db *sql.DB
			if kind == KindPostgres {
				db = stdlib.OpenDBFromPool(s.store.(*PostgresStore).Pool())
				defer db.Close()
			} else {
				db = s.store.(*MySQLStore).DB()
			}
			for _, commit := range []bool{false, true} {
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				if err := CommitTx(ctx, tx, kind, []Offset{{Group: group, Topic: topic, Partition: 2, Next: 3, CommittedBy: "tx"}}); err != nil {
					t.Fatal(err)
				}
				if commit {
					err = tx.Commit()
				} else {
					err = tx.Rollback()
				}
				if err != nil {
					t.Fatal(err)
				}
				_, ok, err := s.Get(ctx, group, topic, 2)
				if err != nil || ok != commit {
					t.Fatalf("after tx (commit=%v): present=%v err=%v", commit, ok, err)
				}
			}

			view, part, ph := "imago.consumer_lag", "partition", "$1"
			if kind == KindMySQL {
				view, part, ph = "imago_consumer_lag", "`partition`", "?"
			}
			rows, err := db.QueryContext(ctx, fmt.Sprintf("SELECT %s, next_offset, end_offset, lag FROM %s WHERE group_name = %s ORDER BY %s", part, view, ph, part), group)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var got []string
			for rows.Next() {
				var p int
				var next, end, lag int64
				if err := rows.Scan(&p, &next, &end, &lag); err != nil {
					t.Fatal(err)
				}
				got = append(got, fmt.Sprintf("%d:%d/%d lag %d", p, next, end, lag))
			}
			if want := "[0:450/500 lag 50 1:70/70 lag 0 2:3/9 lag 6]"; fmt.Sprint(got) != want {
				t.Fatalf("lag view %v, want %s", got, want)
			}
		})
	}
}

func TestPartitionEndsWithoutDatabase(t *testing.T) {
	p, err := OpenPartitionEnds(context.Background(), Config{Store: "file"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	p.Record("t", 0, 1)
	if err := p.Update(context.Background(), []PartitionEnd{{Topic: "t", End: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}
