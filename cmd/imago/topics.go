package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/imagomq/imago/client"
	"github.com/spf13/cobra"
)

func newTopicsCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "topics",
		Short: "Create, list and describe topics",
		Example: `  imago topics create settlement.transfers --partitions 4
  imago topics list
  imago topics describe settlement.transfers --output json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usagef("topics needs a subcommand: create, list or describe")
		},
	}
	cmd.AddCommand(newTopicsCreateCmd(a), newTopicsListCmd(a), newTopicsDescribeCmd(a))
	return cmd
}

func addOutputFlag(cmd *cobra.Command, output *string) {
	cmd.Flags().StringVarP(output, "output", "o", "text", "output format: text or json")
}

func checkOutput(output string) error {
	if output != "text" && output != "json" {
		return usagef("--output %q: want text or json", output)
	}
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newTopicsCreateCmd(a *app) *cobra.Command {
	var partitions int
	var retention time.Duration
	var retentionBytes int64
	cmd := &cobra.Command{
		Use:   "create TOPIC",
		Short: "Create a topic (no error if it exists with the same partition count)",
		Long: `Create a topic with --partitions partitions. Creating a topic that exists with the same
configuration succeeds and says so; one that exists with another configuration fails (409).
Topic names match ^[A-Za-z0-9._-]{1,249}$.`,
		Example: `  imago topics create settlement.transfers --partitions 4
  imago topics create audit --partitions 1 --retention 720h`,
		Args: exactArgs(1, "one topic name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if partitions < 1 {
				return usagef("--partitions %d: want at least 1", partitions)
			}
			created, err := a.client().CreateTopic(cmd.Context(), args[0], client.TopicConfig{
				Partitions: partitions, RetentionMS: retention.Milliseconds(), RetentionBytes: retentionBytes,
			})
			if err != nil {
				return fmt.Errorf("create topic %s: %w", args[0], err)
			}
			if created {
				fmt.Fprintf(a.stdout, "created topic %s with %d partitions\n", args[0], partitions)
			} else {
				fmt.Fprintf(a.stdout, "topic %s exists with %d partitions\n", args[0], partitions)
			}
			return nil
		},
	}
	cmd.Flags().IntVarP(&partitions, "partitions", "p", 1, "number of partitions")
	cmd.Flags().DurationVar(&retention, "retention", 0, "delete segments older than this (0: the server default)")
	cmd.Flags().Int64Var(&retentionBytes, "retention-bytes", 0, "cap each partition at this many bytes (0: the server default)")
	return cmd
}

func newTopicsListCmd(a *app) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List topics with their partition counts",
		Example: "  imago topics list\n  imago topics list -o json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			topics, err := a.client().ListTopics(cmd.Context())
			if err != nil {
				return fmt.Errorf("list topics: %w", err)
			}
			if output == "json" {
				return printJSON(a.stdout, map[string]any{"topics": topics})
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TOPIC\tPARTITIONS")
			for _, t := range topics {
				fmt.Fprintf(tw, "%s\t%d\n", t.Name, t.Partitions)
			}
			return tw.Flush()
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func newTopicsDescribeCmd(a *app) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "describe TOPIC",
		Short: "Show a topic's partitions with start offset, end offset and size",
		Long: `Show each partition of a topic: the first stored offset, the end offset (one past the
last durable message: the offset the next message will get) and the bytes stored.`,
		Example: "  imago topics describe settlement.transfers\n  imago topics describe settlement.transfers -o json",
		Args:    exactArgs(1, "one topic name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			t, err := a.client().DescribeTopic(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("describe topic %s: %w", args[0], err)
			}
			if output == "json" {
				return printJSON(a.stdout, t)
			}
			fmt.Fprintf(a.stdout, "topic %s: %d partitions\n", t.Name, len(t.Partitions))
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "PARTITION\tSTART\tEND\tMESSAGES\tBYTES\t")
			for _, p := range t.Partitions {
				fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t\n", p.Partition, p.StartOffset, p.EndOffset, p.EndOffset-p.StartOffset, p.Bytes)
			}
			return tw.Flush()
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}
