package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/imagomq/imago/client"
	"github.com/spf13/cobra"
)

func newDLQCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "Work with dead-letter topics (<topic>.DLQ)",
		Long: `A consumer built on the Go client (client.Consumer) retries a message whose handler fails,
with backoff, and then moves it to the dead-letter topic <topic>.DLQ, with the failure in its
headers (imago-dlq-error, imago-dlq-topic, imago-dlq-partition, imago-dlq-offset,
imago-dlq-attempts, imago-dlq-group, imago-dlq-time), and goes on. Read dead letters with
'imago consume <topic>.DLQ --format json'; put them back with 'imago dlq replay'.`,
		Example: `  imago consume settlement.transfers.DLQ --partition 0 --format json
  imago dlq replay settlement.transfers`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usagef("dlq needs a subcommand: replay")
		},
	}
	cmd.AddCommand(newDLQReplayCmd(a))
	return cmd
}

func newDLQReplayCmd(a *app) *cobra.Command {
	var (
		opts      client.ReplayOptions
		partition int
		output    string
	)
	cmd := &cobra.Command{
		Use:   "replay TOPIC",
		Short: "Produce the dead letters of TOPIC again to the topic they came from",
		Long: `Read TOPIC.DLQ, up to its end when the command starts, and produce each dead letter again to
its original topic and partition, without the imago-dlq-* headers and with
imago-replay-group set to the group that dead-lettered it: consumers of other groups (Go
client) skip it, since they handled the original. Fix the cause of the failures first.

Progress is committed as the offsets of a consumer group on TOPIC.DLQ (--group, default
imago-dlq-replay), so the next replay starts after what this one replayed (--from committed,
the default). Each message is produced with an idempotency key made from its dead-letter
position, so a replay that was cut short can simply be run again: nothing is stored twice
(within the server's dedupe window, 24 h by default).`,
		Example: `  imago dlq replay settlement.transfers
  imago dlq replay settlement.transfers --from earliest --partition 1
  imago dlq replay settlement.transfers --group ops-replay --max 10 -o json`,
		Args: exactArgs(1, "one topic name (its dead letters are in TOPIC.DLQ)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if cmd.Flags().Changed("partition") {
				if partition < 0 {
					return usagef("--partition %d: want 0 or more", partition)
				}
				opts.Partition = &partition
			}
			if opts.Max < 0 {
				return usagef("--max %d: want 0 or more", opts.Max)
			}
			switch opts.From {
			case "committed", "earliest":
			default:
				var n int64
				if _, err := fmt.Sscan(opts.From, &n); err != nil || n < 0 || fmt.Sprint(n) != opts.From {
					return usagef("--from %q: want committed, earliest or an offset", opts.From)
				}
			}
			res, err := a.client().ReplayDeadLetters(cmd.Context(), args[0], opts)
			if err != nil {
				if res != nil && res.Replayed > 0 {
					fmt.Fprintf(a.stderr, "imago: replayed %d dead letters before the failure; run the command again to go on\n", res.Replayed)
				}
				return fmt.Errorf("replay %s: %w", client.DLQTopic(args[0]), err)
			}
			if output == "json" {
				return printJSON(a.stdout, res)
			}
			fmt.Fprintf(a.stdout, "replayed %d dead letters from %s (group %s)\n", res.Replayed, res.DLQTopic, res.Group)
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PARTITION\tFROM\tTO\tREPLAYED")
			for _, p := range res.Partitions {
				fmt.Fprintf(tw, "%d\t%d\t%d\t%d\n", p.Partition, p.From, p.To, p.Replayed)
			}
			return tw.Flush()
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&opts.Group, "group", "imago-dlq-replay", "consumer group that records the replay's progress on TOPIC.DLQ")
	fl.StringVar(&opts.From, "from", "committed", "where to start in each partition: committed, earliest or an offset")
	fl.IntVarP(&partition, "partition", "p", 0, "replay this partition of TOPIC.DLQ only (default: all)")
	fl.IntVar(&opts.Max, "max", 0, "stop after this many messages (0: all)")
	addOutputFlag(cmd, &output)
	return cmd
}
