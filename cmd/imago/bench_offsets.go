package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
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
	var regather, cpuDuration time.Duration
	var cpuprofile string
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
imago-bench-<mode>-<time>.

Then, unless --cpu-duration is 0, the CPU this process spends: group commit alone for
--cpu-duration, and the ceiling's shapes for a quarter of it each, with the process's CPU
time (user and system, getrusage: Unix only) read around each; printed as CPU µs per
commit, per offset of the ceiling, and the difference (what the batcher costs above writing
the same offsets directly). --cpuprofile writes a CPU profile of the alternated rounds.`,
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
			if cpuDuration < 0 {
				return usagef("--cpu-duration %s: want 0 (no CPU phase) or more", cpuDuration)
			}
			o := benchOffsetsOpts{store: store, dsn: dsn, committers: committers, rounds: rounds, gcc: gcc,
				cpuDuration: cpuDuration, cpuprofile: cpuprofile}
			return runBenchOffsets(cmd.Context(), a, c, o)
		},
	}
	c.register(cmd, 5*time.Second, "how long to run each of the loads (the ceiling's shapes get a quarter each)")
	cmd.Flags().StringVar(&store, "store", "postgres", "postgres or mysql (also MariaDB)")
	cmd.Flags().StringVar(&dsn, "dsn", "", "the database's DSN (pgx URL or key=value; go-sql-driver format for mysql)")
	cmd.Flags().IntVar(&committers, "committers", 64, "concurrent committers")
	cmd.Flags().IntVar(&flushers, "flushers", 0, "concurrent flushes of the group commit (0: the store's default)")
	cmd.Flags().DurationVar(&regather, "regather", 0, "longest wait of a flush for the commits the last one released (0: the store's default; negative: no wait)")
	cmd.Flags().DurationVar(&cpuDuration, "cpu-duration", 2*time.Second, "how long to measure the process's CPU per commit of group commit (and a quarter of it per ceiling shape); 0: not at all")
	cmd.Flags().StringVar(&cpuprofile, "cpuprofile", "", "write a CPU profile of the alternated rounds to this file")
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
	// CPU of this process (µs, user and system) per group commit, per offset
	// written by the ceiling's direct commits, and the difference; 0 when not
	// measured (--cpu-duration 0, or no getrusage).
	CPUPerCommitUs        float64 `json:"cpu_us_per_commit,omitempty"`
	CeilingCPUPerOffsetUs float64 `json:"ceiling_cpu_us_per_offset,omitempty"`
	CPUAboveCeilingUs     float64 `json:"cpu_us_above_ceiling,omitempty"`
}

// benchOffsetsOpts are the flags of bench offsets past the common ones.
type benchOffsetsOpts struct {
	store, dsn         string
	committers, rounds int
	gcc                offsetdb.GroupCommitConfig
	cpuDuration        time.Duration
	cpuprofile         string
}

func runBenchOffsets(ctx context.Context, a *app, c benchCommon, o benchOffsetsOpts) error {
	store, dsn, committers, rounds, gcc := o.store, o.dsn, o.committers, o.rounds, o.gcc
	base, err := offsetbench.Commits(ctx, offsetbench.Config{
		Store: store, DSN: dsn, Mode: offsetbench.ModeUpdatePerCommit, Committers: committers, Duration: c.duration,
	})
	if err != nil {
		return err
	}
	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			return fmt.Errorf("bench offsets: --cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("bench offsets: --cpuprofile: %w", err)
		}
	}
	gc, shapes, err := offsetbench.AgainstCeiling(ctx, offsetbench.Config{
		Store: store, DSN: dsn, Committers: committers, Duration: c.duration,
		GroupCommit: gcc,
	}, rounds)
	if o.cpuprofile != "" {
		pprof.StopCPUProfile()
	}
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
	if o.cpuDuration > 0 {
		perCommit, perOffset, err := benchOffsetsCPU(ctx, store, dsn, committers, gcc, o.cpuDuration)
		switch {
		case errors.Is(err, errNoProcessCPU):
			// Not Linux: the figures stay 0.
		case err != nil:
			return err
		default:
			rep.CPUPerCommitUs, rep.CeilingCPUPerOffsetUs = perCommit, perOffset
			rep.CPUAboveCeilingUs = perCommit - perOffset
		}
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
	if rep.CPUPerCommitUs > 0 {
		fmt.Fprintf(a.stdout, "cpu: group commit %.1f µs/commit, ceiling %.1f µs/offset: %.1f µs/commit above the ceiling\n",
			rep.CPUPerCommitUs, rep.CeilingCPUPerOffsetUs, rep.CPUAboveCeilingUs)
	}
	return nil
}

// errNoProcessCPU: this system cannot tell the process's CPU time (processCPU).
var errNoProcessCPU = errors.New("bench offsets: no process CPU time on this system")

// benchOffsetsCPU measures this process's CPU per commit of group commit (for d) and per
// offset of the ceiling's direct commits (each shape for d/4), alone, one after the other.
// Each figure includes opening its store (a few milliseconds of CPU over d).
func benchOffsetsCPU(ctx context.Context, store, dsn string, committers int, gcc offsetdb.GroupCommitConfig, d time.Duration) (perCommit, perOffset float64, err error) {
	cpu0, err := processCPU()
	if err != nil {
		return 0, 0, err
	}
	gc, err := offsetbench.Commits(ctx, offsetbench.Config{
		Store: store, DSN: dsn, Mode: offsetbench.ModeGroupCommit, Committers: committers, Duration: d, GroupCommit: gcc,
	})
	if err != nil {
		return 0, 0, err
	}
	cpu1, err := processCPU()
	if err != nil {
		return 0, 0, err
	}
	shapeTime := max(d/4, 50*time.Millisecond)
	shapes, err := offsetbench.FlushCeiling(ctx, store, dsn, committers, shapeTime)
	if err != nil {
		return 0, 0, err
	}
	cpu2, err := processCPU()
	if err != nil {
		return 0, 0, err
	}
	var offsets float64
	for _, sh := range shapes {
		offsets += sh.PerSecond * shapeTime.Seconds()
	}
	if gc.Commits == 0 || offsets == 0 {
		return 0, 0, errors.New("bench offsets: CPU phase: nothing committed")
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	return us(cpu1-cpu0) / float64(gc.Commits), us(cpu2-cpu1) / offsets, nil
}
