package main

import (
	"fmt"

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
			return usagef("log needs a subcommand: verify")
		},
	}
	cmd.AddCommand(newLogVerifyCmd(a))
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
				if rep.TornBytes > 0 {
					fmt.Fprintf(a.stdout, "torn tail: %d bytes at log position %d; the next start cuts them (a copy goes to repair/)\n",
						rep.TornBytes, rep.End-rep.TornBytes)
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
