package main

import (
	"fmt"
	"log/slog"

	"github.com/imagomq/imago/broker"
	"github.com/spf13/cobra"
)

// imago log: offline checks of a data directory's commit log (no server needed).

func newLogCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "log",
		Short:   "Verify the commit log of a data directory (offline)",
		Example: `  imago log verify --data-dir /var/lib/imago`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usagef("log needs a subcommand: verify or repair")
		},
	}
	cmd.AddCommand(newLogVerifyCmd(a), newLogRepairCmd(a))
	return cmd
}

func newLogVerifyCmd(a *app) *cobra.Command {
	var dataDir, output string
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Read and verify every batch of the commit log; report corruption and torn tails",
		Long: `Read the whole commit log of --data-dir and verify every batch (header and record CRCs),
without starting the server and without writing anything. It reports:
  - corruption: a bad batch followed by valid ones (a disk fault, not a crash). The server refuses
    to start on it; the report names the segment file, the byte position, what failed and how many
    valid batches follow. Exit status 1.
  - a torn tail: bad bytes at the end that no valid batch follows (a crash during a write). The
    next start cuts them, keeping a copy under repair/.
It also reads the part of the log behind the last checkpoint, which start-up does not re-read.`,
		Example: `  imago log verify --data-dir ./data
  imago log verify --data-dir ./data -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			rep, err := broker.VerifyLog(dataDir)
			if err != nil {
				return fmt.Errorf("verify %s: %w", dataDir, err)
			}
			if output == "json" {
				if err := printJSON(a.stdout, rep); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(a.stdout, "segments %d, log positions [%d, %d), %d valid batches\n", rep.Segments, rep.Start, rep.End, rep.Batches)
				if rep.FailMarkCut > 0 {
					fmt.Fprintf(a.stdout, "fail mark: a write or fsync failed before the last stop; the next start cuts the %d bytes after log position %d (not verified)\n",
						rep.FailMarkCut, rep.FailMark)
				}
				if rep.TornBytes > 0 {
					fmt.Fprintf(a.stdout, "torn tail: %d bytes at log position %d; the next start cuts them (a copy goes to repair/)\n",
						rep.TornBytes, rep.End-rep.FailMarkCut-rep.TornBytes)
				}
			}
			if rep.Corruption != nil {
				return rep.Corruption
			}
			if output == "text" {
				fmt.Fprintln(a.stdout, "no corruption")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "data", "data directory")
	addOutputFlag(cmd, &output)
	return cmd
}

func newLogRepairCmd(a *app) *cobra.Command {
	var dataDir string
	var pos int64
	cmd := &cobra.Command{
		Use:   "repair",
		Short: "Drop the corrupt batch that start-up refused, keeping every valid batch after it",
		Long: `With the server stopped, replace the corrupt batch at log position --drop-corrupt-batch (as
named by imago log verify or by the server's refusal to start) with a gap: its bytes, up to the
next valid batch, are first copied to repair/ and fsync'd. The batches after it keep their
positions and offsets; the offsets the dropped batch held are lost, and readers skip them with a
logged warning. The index is rebuilt at the next start. The command refuses any other position,
and refuses a cluster member's log (replace the node instead: docs/cluster.md).`,
		Example: `  imago log verify --data-dir ./data
  imago log repair --data-dir ./data --drop-corrupt-batch 558`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("drop-corrupt-batch") {
				return usagef("log repair needs --drop-corrupt-batch POS (the log position imago log verify names)")
			}
			logger := slog.New(slog.NewTextHandler(a.stderr, nil))
			rep, err := broker.DropCorruptBatch(dataDir, pos, logger)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "dropped %d bytes at log position %d of %s; the original bytes are in %s\n",
				rep.Bytes, rep.Position, rep.Segment, rep.Copy)
			for _, line := range rep.Dropped {
				fmt.Fprintf(a.stdout, "  %s\n", line)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "data", "data directory")
	cmd.Flags().Int64Var(&pos, "drop-corrupt-batch", 0, "log position of the corrupt batch to drop")
	return cmd
}
