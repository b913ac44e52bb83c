package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/imagomq/imago/client"
	"github.com/spf13/cobra"
)

type consumeFlags struct {
	partition int
	from      string
	follow    bool
	max       int64
	format    string
	wait      time.Duration
	maxBytes  int
	group     string
	mode      string
	fromSet   bool // --from was given (a group's join then sends it)
}

func newConsumeCmd(a *app) *cobra.Command {
	var f consumeFlags
	cmd := &cobra.Command{
		Use:   "consume TOPIC",
		Short: "Print the messages of one partition or of a group (tail it with --follow)",
		Long: `Read one partition of a topic from --from and print the messages, one per line.

--from is earliest (the first stored offset, the default), latest (the end: only new
messages, useful with --follow) or an offset. Without --follow the command stops at the end
of the partition as it was when it started; with --follow it long-polls for new messages
until interrupted (Ctrl-C) or --max messages were printed.

--format plain (or value) prints each value: a JSON string as its text, other JSON as compact
JSON, bytes (value_base64) as the raw bytes. --format offsets prints
"<partition><TAB><offset><TAB><key or -><TAB><value>". --format json prints each whole message
as one JSON object per line (topic, partition, offset, key, value, headers, timestamp).
plain and offsets print keys and values as they are: a value holding a newline spans several
lines, a tab shifts the offsets columns. A script that must tell one message from the next
uses --format json, where every message is exactly one line whatever its bytes.

With --group GROUP the command joins the consumer group (--mode clustered or broadcast) for
TOPIC, prints the messages of the partitions the group gives it, from the group's committed
offsets (--from earliest or latest applies to a group without any), and commits the offsets
of what it printed, so that the next run goes on from there. --partition is then unused.
It commits only what stdout took: a write that fails commits nothing. When a commit fails,
the command exits 1, not 5: the messages are printed, and the next run prints them again.`,
		Example: `  imago consume settlement.transfers
  imago consume settlement.transfers --partition 2 --from 1000 --max 10
  imago consume settlement.transfers --from latest --follow
  imago consume settlement.transfers --format json | jq .value.amount
  imago consume settlement.transfers --format offsets --max 5
  imago consume settlement.transfers --group audit-cli --follow`,
		Args:              exactArgs(1, "one topic name"),
		ValidArgsFunction: completeTopics(a),
		RunE:              consumeRunE(a, &f),
	}
	registerConsumeFlags(cmd, &f, "earliest", false)
	return cmd
}

// newTailCmd is consume with other defaults: from the end, following (tail -f).
func newTailCmd(a *app) *cobra.Command {
	var f consumeFlags
	cmd := &cobra.Command{
		Use:   "tail TOPIC",
		Short: "Follow new messages of a partition or a group (consume --from latest --follow)",
		Long: `tail is consume with --from latest and --follow as defaults: it prints the messages that
arrive from now on until interrupted. Every flag of consume applies; see 'imago consume --help'.`,
		Example: `  imago tail settlement.transfers
  imago tail settlement.transfers --partition 2 --format offsets
  imago tail settlement.transfers --follow=false --from 0   # same as consume`,
		Args:              exactArgs(1, "one topic name"),
		ValidArgsFunction: completeTopics(a),
		RunE:              consumeRunE(a, &f),
	}
	registerConsumeFlags(cmd, &f, "latest", true)
	return cmd
}

// consumeRunE runs consume or tail: as a group member with --group, else on one partition.
func consumeRunE(a *app, f *consumeFlags) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		f.fromSet = cmd.Flags().Changed("from")
		if f.group != "" {
			return runGroupConsume(cmd.Context(), a, *f, args[0])
		}
		return runConsume(cmd.Context(), a, *f, args[0])
	}
}

// readLimits are the message cap and the long-poll wait of the next fetch or poll, once
// printed messages were printed.
func (f *consumeFlags) readLimits(printed int64) (maxMessages int, wait time.Duration) {
	maxMessages = 1000
	if f.max > 0 && f.max-printed < int64(maxMessages) {
		maxMessages = int(f.max - printed)
	}
	if f.follow {
		wait = f.wait
	}
	return maxMessages, wait
}

func registerConsumeFlags(cmd *cobra.Command, f *consumeFlags, from string, follow bool) {
	fl := cmd.Flags()
	fl.IntVarP(&f.partition, "partition", "p", 0, "partition to read")
	fl.StringVar(&f.from, "from", from, "where to start: earliest, latest or an offset")
	fl.BoolVarP(&f.follow, "follow", "f", follow, "keep waiting for new messages")
	fl.Int64VarP(&f.max, "max", "n", 0, "stop after this many messages (0: no limit)")
	fl.StringVar(&f.format, "format", "plain", "output: plain (value), offsets or json")
	fl.DurationVar(&f.wait, "wait", 30*time.Second, "with --follow, how long one long-poll request waits")
	fl.IntVar(&f.maxBytes, "max-bytes", 1<<20, "bytes per fetch request")
	fl.StringVarP(&f.group, "group", "g", "", "consume as a member of this consumer group and commit what is printed")
	fl.StringVar(&f.mode, "mode", "clustered", "with --group: clustered (share the partitions) or broadcast")
	_ = cmd.RegisterFlagCompletionFunc("format", fixedCompletions("plain", "offsets", "json"))
	_ = cmd.RegisterFlagCompletionFunc("from", fixedCompletions("earliest", "latest"))
	_ = cmd.RegisterFlagCompletionFunc("mode", fixedCompletions("clustered", "broadcast"))
}

func checkFormat(format string) error {
	switch format {
	case "plain", "value", "offsets", "json":
		return nil
	}
	return usagef("--format %q: want plain, offsets or json", format)
}

func runConsume(ctx context.Context, a *app, f consumeFlags, topic string) (err error) {
	if err := checkFormat(f.format); err != nil {
		return err
	}
	if f.partition < 0 {
		return usagef("--partition %d: want 0 or more", f.partition)
	}
	c := a.client()
	var offset int64
	switch f.from {
	case "earliest", "latest":
		t, err := c.DescribeTopic(ctx, topic)
		if err != nil {
			return fmt.Errorf("describe topic %s: %w", topic, err)
		}
		if f.partition >= len(t.Partitions) {
			return fmt.Errorf("topic %s has %d partitions; there is no partition %d", topic, len(t.Partitions), f.partition)
		}
		p := t.Partitions[f.partition]
		offset = p.StartOffset
		if f.from == "latest" {
			offset = p.EndOffset
		}
	default:
		n, err := strconv.ParseInt(f.from, 10, 64)
		if err != nil || n < 0 {
			return usagef("--from %q: want earliest, latest or an offset (0 or more)", f.from)
		}
		offset = n
	}

	out := bufio.NewWriterSize(a.stdout, 64<<10)
	defer func() {
		// Every return flushes here, --max and the end included: a write that fails (a full
		// disk, a closed pipe) is the command's failure, never exit 0.
		if ferr := out.Flush(); ferr != nil && err == nil {
			err = ferr
		}
	}()
	var printed int64
	stopAt := int64(-1) // without --follow: the end when the first fetch answered
	for {
		opts := client.FetchOptions{Offset: offset, MaxBytes: f.maxBytes}
		opts.MaxMessages, opts.Wait = f.readLimits(printed)
		res, err := c.Fetch(ctx, topic, f.partition, opts)
		if err != nil {
			if ctx.Err() != nil && f.follow {
				return nil // interrupted while following: a normal way to stop
			}
			return fmt.Errorf("fetch %s/%d at offset %d: %w", topic, f.partition, offset, err)
		}
		if stopAt < 0 {
			stopAt = res.EndOffset
		}
		for i := range res.Messages {
			m := &res.Messages[i]
			if !f.follow && m.Offset >= stopAt {
				return nil
			}
			if err := printMessage(out, m, f.format); err != nil {
				return err
			}
			printed++
			if f.max > 0 && printed >= f.max {
				return nil
			}
		}
		if err := out.Flush(); err != nil {
			return err
		}
		if res.NextOffset > offset {
			offset = res.NextOffset
		}
		if !f.follow && (offset >= stopAt || len(res.Messages) == 0) {
			return nil
		}
		if ctx.Err() != nil {
			if f.follow {
				return nil
			}
			return ctx.Err()
		}
	}
}

func printMessage(w io.Writer, m *client.FetchedMessage, format string) error {
	switch format {
	case "json":
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		b = append(b, '\n')
		_, err = w.Write(b)
		return err
	case "offsets":
		key := "-"
		if m.Key != nil {
			key = *m.Key
		}
		if _, err := fmt.Fprintf(w, "%d\t%d\t%s\t", m.Partition, m.Offset, key); err != nil {
			return err
		}
	}
	var line []byte
	switch {
	case m.ValueBase64 != nil:
		raw, err := base64.StdEncoding.DecodeString(*m.ValueBase64)
		if err != nil {
			return fmt.Errorf("offset %d: value_base64: %w", m.Offset, err)
		}
		line = raw
	case len(m.Value) > 0 && m.Value[0] == '"':
		var s string
		if err := json.Unmarshal(m.Value, &s); err != nil {
			return fmt.Errorf("offset %d: value: %w", m.Offset, err)
		}
		line = []byte(s)
	default:
		line = m.Value
	}
	if _, err := w.Write(line); err != nil {
		return err
	}
	_, err := w.Write([]byte{'\n'})
	return err
}
