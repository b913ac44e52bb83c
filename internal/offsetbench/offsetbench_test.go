package offsetbench

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/testenv"
	"github.com/imagomq/imago/migrations"
)

// BenchmarkOffsetCommits measures offset commits through group commit
// against one autocommitted UPDATE per commit, 64 committers, on PostgreSQL
// and MariaDB . Custom metrics: commits/s, p99-ms.
//
//	go test -run '^$' -bench OffsetCommits -benchtime 20000x ./internal/offsetbench/
func BenchmarkOffsetCommits(b *testing.B) {
	for _, db := range []struct{ kind, dsn string }{
		{migrations.Postgres, testenv.PostgresDSN(b)},
		{migrations.MySQL, testenv.MySQLDSN(b)},
	} {
		for _, mode := range []string{ModeGroupCommit, ModeUpdatePerCommit} {
			b.Run(db.kind+"/"+mode, func(b *testing.B) {
				res, err := Commits(context.Background(), Config{
					Store: db.kind, DSN: db.dsn, Mode: mode, Committers: 64, Commits: b.N,
				})
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(res.PerSecond, "commits/s")
				b.ReportMetric(float64(res.P99)/float64(time.Millisecond), "p99-ms")
				b.ReportMetric(float64(res.Transactions)/float64(res.Commits), "tx/commit")
				b.Logf("%s", res)
			})
		}
	}
}

// TestCommitFigures runs the comparison once per database and checks the
// targets: at least 10x the commits per second of one UPDATE
// per commit, p99 under 20 ms. It measures for 12 s and depends on the
// machine and its load (other test packages share the databases), so it runs
// only when asked: IMAGO_FIGURES=1 go test -run CommitFigures -v ./internal/offsetbench/
// It also prints the ceiling of FlushCeiling: the most offsets per second
// the database absorbs with 64 in flight, whatever the batching.
func TestCommitFigures(t *testing.T) {
	if os.Getenv("IMAGO_FIGURES") != "1" {
		t.Skip("a measurement: set IMAGO_FIGURES=1 to run it")
	}
	for _, db := range []struct{ kind, dsn string }{
		{migrations.Postgres, testenv.PostgresDSN(t)},
		{migrations.MySQL, testenv.MySQLDSN(t)},
	} {
		t.Run(db.kind, func(t *testing.T) {
			run := func(mode string) Result {
				res, err := Commits(context.Background(), Config{
					Store: db.kind, DSN: db.dsn, Mode: mode, Committers: 64, Duration: 3 * time.Second,
				})
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%s %s", db.kind, res)
				return res
			}
			base := run(ModeUpdatePerCommit)
			// Group commit in alternation with what the database sustains with 64 offsets in
			// flight and no client overhead: the bound for any group commit of 64 synchronous
			// committers (see FlushCeiling), to tell a slow batcher from a database at its
			// limit. Alternating, both see the same load of the machine.
			gc, shapes, err := AgainstCeiling(context.Background(), Config{
				Store: db.kind, DSN: db.dsn, Committers: 64, Duration: 3 * time.Second,
			}, 3)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s %s", db.kind, gc)
			var ceiling float64
			for _, sh := range shapes {
				t.Logf("%s ceiling: %d flushes x %d rows in flight: %.0f offsets/s", db.kind, sh.Flushes, sh.Rows, sh.PerSecond)
				ceiling = max(ceiling, sh.PerSecond)
			}
			ratio := gc.PerSecond / base.PerSecond
			t.Logf("%s: group commit %.0f/s vs update-per-commit %.0f/s = %.1fx, p99 %v; ceiling for 64 committers %.0f/s = %.1fx the baseline (group commit reaches %.0f%% of it)",
				db.kind, gc.PerSecond, base.PerSecond, ratio, gc.P99, ceiling, ceiling/base.PerSecond, 100*gc.PerSecond/ceiling)
			if ratio < 10 {
				t.Errorf("group commit is %.1fx one UPDATE per commit, want >= 10x", ratio)
			}
			if gc.P99 > 20*time.Millisecond {
				t.Errorf("group commit p99 %v, want < 20ms", gc.P99)
			}
		})
	}
}
