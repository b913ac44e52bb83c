package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/imagomq/imago/internal/offsetbench"
	"github.com/imagomq/imago/migrations"
	"github.com/imagomq/imago/offsetdb"
)

func newBenchOffsetsCmd(a *app) *cobra.Command {
	var c benchCommon
	var store, dsn string
	var committers, rounds, flushers int
	var regather time.Duration
	cmd := &cobra.Command{
		Use:   "offsets",
		Short: "Measure offset commits/s: group commit against one UPDATE per commit, and the database's ceiling",
		Long: `Commit consumer offsets into a real database (--store postgres or mysql, --dsn) from
--committers concurrent committers, each committing increasing offsets of its own partition
and waiting for each commit, as consumers do. Three loads in one run:

  update-per-commit  one autocommitted UPDATE per commit, one connection per committer
                     (the baseline), for --duration
  group-commit       through Imago's group commit (the Batcher of offsetdb)
  ceiling            what the database absorbs with --committers offsets in flight and no
                     client in between: k concurrent transactions of committers/k rows each
                     (k = 1, 2, 4, 8), written back to back; no group commit of that many
                     synchronous committers can beat the best of them

Group commit and the ceiling run in alternation, --rounds times: each round gives group
commit --duration/rounds and each ceiling shape a quarter of that, so both are measured
under the same load of the machine (by default one round per second; --rounds 1 runs group
commit for --duration, then the ceiling). Prints commits/s, latency and database
transactions of the first two, the ceiling, and the ratios (the goal: group commit 10x the
baseline with p99 under 20 ms, and at least 85% of the ceiling). The tables are created by
the migrations if missing; the rows are written under a group named
imago-bench-<mode>-<time>.`,
		Example: `  imago bench offsets --store postgres --dsn postgres://postgres@127.0.0.1:5432/test
  imago bench offsets --store mysql --dsn 'root@tcp(127.0.0.1:3306)/test' --duration 10s --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.check(); err != nil {
				return err
			}
			if _, ok := migrations.Dialect(store); !ok {
				return usagef("--store %q: want postgres or mysql", store)
			}
			if dsn == "" {
				return usagef("--dsn is required: the database to write offsets into")
			}
			if committers < 1 {
				return usagef("--committers %d: want at least 1", committers)
			}
			if rounds < 0 {
				return usagef("--rounds %d: want 0 (one per second) or more", rounds)
			}
			if rounds == 0 {
				rounds = max(1, int(c.duration/time.Second))
			}
			if flushers < 0 {
				return usagef("--flushers %d: want 0 (the default) or more", flushers)
			}
			gcc := offsetdb.GroupCommitConfig{Flushers: flushers, Regather: regather}
			return runBenchOffsets(cmd.Context(), a, c, store, dsn, committers, rounds, gcc)
		},
	}
	c.register(cmd, 5*time.Second, "how long to run each of the loads (the ceiling's shapes get a quarter each)")
	cmd.Flags().StringVar(&store, "store", "postgres", "postgres or mysql (also MariaDB)")
	cmd.Flags().StringVar(&dsn, "dsn", "", "the database's DSN (pgx URL or key=value; go-sql-driver format for mysql)")
	cmd.Flags().IntVar(&committers, "committers", 64, "concurrent committers")
	cmd.Flags().IntVar(&flushers, "flushers", 0, "concurrent flushes of the group commit (0: the store's default)")
	cmd.Flags().DurationVar(&regather, "regather", 0, "longest wait of a flush for the commits the last one released (0: the store's default; negative: no wait)")
	cmd.Flags().IntVar(&rounds, "rounds", 0, "alternations of group commit and ceiling (0: one per second of --duration)")
	return cmd
}

// benchOffsetsReport is the --json line of bench offsets.
type benchOffsetsReport struct {
	Store            string                     `json:"store"`
	Committers       int                        `json:"committers"`
	Rounds           int                        `json:"rounds"`
	Baseline         offsetbench.Result         `json:"update_per_commit"`
	GroupCommit      offsetbench.Result         `json:"group_commit"`
	Ceiling          []offsetbench.CeilingShape `json:"ceiling"`
	Ratio            float64                    `json:"ratio"`
	CeilingRatio     float64                    `json:"ceiling_ratio"`
	ShareOfCeiling   float64                    `json:"share_of_ceiling"`
	GroupCommitP99Ms float64                    `json:"group_commit_p99_ms"`
}

func runBenchOffsets(ctx context.Context, a *app, c benchCommon, store, dsn string, committers, rounds int, gcc offsetdb.GroupCommitConfig) error {
	base, err := offsetbench.Commits(ctx, offsetbench.Config{
		Store: store, DSN: dsn, Mode: offsetbench.ModeUpdatePerCommit, Committers: committers, Duration: c.duration,
	})
	if err != nil {
		return err
	}
	gc, shapes, err := offsetbench.AgainstCeiling(ctx, offsetbench.Config{
		Store: store, DSN: dsn, Committers: committers, Duration: c.duration,
		GroupCommit: gcc,
	}, rounds)
	if err != nil {
		return err
	}
	var ceiling float64
	for _, sh := range shapes {
		ceiling = max(ceiling, sh.PerSecond)
	}
	rep := benchOffsetsReport{
		Store: store, Committers: committers, Rounds: rounds, Baseline: base, GroupCommit: gc, Ceiling: shapes,
		Ratio: gc.PerSecond / base.PerSecond, CeilingRatio: ceiling / base.PerSecond,
		GroupCommitP99Ms: float64(gc.P99) / float64(time.Millisecond),
		ShareOfCeiling:   gc.PerSecond / ceiling,
	}
	if c.json {
		return json.NewEncoder(a.stdout).Encode(rep)
	}
	fmt.Fprintf(a.stdout, "%s\n%s\n", base, gc)
	for _, sh := range shapes {
		fmt.Fprintf(a.stdout, "ceiling: %d transactions x %d rows in flight: %.0f offsets/s\n", sh.Flushes, sh.Rows, sh.PerSecond)
	}
	fmt.Fprintf(a.stdout, "group commit %.0f/s = %.1fx one UPDATE per commit (%.0f/s), p99 %v; ceiling %.0f/s = %.1fx (group commit at %.0f%% of it; %d rounds)\n",
		gc.PerSecond, rep.Ratio, base.PerSecond, gc.P99.Round(time.Microsecond), ceiling, rep.CeilingRatio, 100*rep.ShareOfCeiling, rounds)
	return nil
}
