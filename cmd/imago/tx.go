package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/imagomq/imago/client"
	"github.com/spf13/cobra"
)

// imago tx: a thin command line over local transactions (/v1/transactions), for operators and
// shell scripts: begin prints an id, the other verbs take it.

func newTxCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tx",
		Short: "Local transactions: begin, add, commit, rollback, status",
		Long: `A local transaction collects messages for any topics and makes them visible together at
commit (at consecutive offsets per partition), or never (rollback, or its timeout).`,
		Example: `  id=$(imago tx begin --timeout 1m)
  imago tx add "$id" --topic wallet.debits --input json '{"account":"A","amount":100}'
  imago tx add "$id" --topic wallet.credits --input json '{"account":"B","amount":100}'
  imago tx commit "$id"
  imago tx status "$id" -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usagef("tx needs a subcommand: begin, add, commit, rollback or status")
		},
	}
	cmd.AddCommand(newTxBeginCmd(a), newTxAddCmd(a), newTxCommitCmd(a), newTxRollbackCmd(a), newTxStatusCmd(a))
	return cmd
}

func newTxBeginCmd(a *app) *cobra.Command {
	var timeout time.Duration
	var output string
	cmd := &cobra.Command{
		Use:   "begin",
		Short: "Begin a transaction and print its id",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if timeout < 0 || timeout > time.Hour {
				return usagef("--timeout %s: want 0 (the server default) to 1h", timeout)
			}
			tx, err := a.client().Begin(cmd.Context(), timeout)
			if err != nil {
				return fmt.Errorf("begin transaction: %w", err)
			}
			if output == "json" {
				return printJSON(a.stdout, map[string]any{"id": tx.ID, "timeout_ms": tx.Timeout.Milliseconds()})
			}
			_, err = fmt.Fprintln(a.stdout, tx.ID)
			return err
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "roll the transaction back when still open after this long (0: the server default, 30s)")
	addOutputFlag(cmd, &output)
	return cmd
}

func newTxAddCmd(a *app) *cobra.Command {
	var f produceFlags
	var topic string
	cmd := &cobra.Command{
		Use:   "add ID [VALUE...]",
		Short: "Add messages for --topic to a transaction (arguments or stdin lines)",
		Long: `Add messages to an open transaction. Each VALUE is one message; without VALUE each
non-empty line of stdin is one, all sent in one request. --input, --key, --key-field,
--partition and --header work as for 'imago produce'. Prints the number of messages the
transaction holds. When the answer is lost (the messages may have been added), the command
exits 1, not 5: check 'imago tx status ID' before adding them again.`,
		Example: `  imago tx add "$id" --topic audit "manual correction"
  jq -c '.entries[]' e.json | imago tx add "$id" --topic ledger --input json --key-field account`,
		Args: minArgs(1, "a transaction id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if topic == "" {
				return usagef("tx add needs --topic")
			}
			build, err := newMessageBuilder(f)
			if err != nil {
				return err
			}
			inputs := args[1:]
			if len(inputs) == 0 {
				if inputs, err = readLines(a.stdin); err != nil {
					return err
				}
			}
			if len(inputs) == 0 {
				return usagef("no messages: give values as arguments or lines on stdin")
			}
			msgs := make([]client.TxMessage, len(inputs))
			for i, in := range inputs {
				m, err := build(in)
				if err != nil {
					return fmt.Errorf("message %d: %w", i+1, err)
				}
				msgs[i] = client.To(topic, m)
			}
			held, err := a.client().Tx(args[0]).Add(cmd.Context(), msgs...)
			if err != nil {
				return txAddError(args[0], len(msgs), err)
			}
			_, err = fmt.Fprintf(a.stdout, "transaction %s holds %d messages\n", args[0], held)
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&topic, "topic", "t", "", "topic of the messages")
	fl.StringVarP(&f.key, "key", "k", "", "message key")
	fl.StringVar(&f.keyField, "key-field", "", "with --input json: take each key from this field of the value")
	fl.IntVarP(&f.partition, "partition", "p", -1, "target partition (default: by key hash, round-robin without a key)")
	fl.StringVar(&f.input, "input", "text", "what a value is: text, json or message")
	fl.StringArrayVarP(&f.headers, "header", "H", nil, "header NAME=VALUE, repeatable")
	_ = cmd.RegisterFlagCompletionFunc("topic", func(cmd *cobra.Command, _ []string, s string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return completeTopics(a)(cmd, nil, s)
	})
	_ = cmd.RegisterFlagCompletionFunc("input", fixedCompletions("text", "json", "message"))
	return cmd
}

// txAddError is the error of a failed tx add of n messages. Exit 5 (unavailable) says the
// same command may succeed later; that holds only when the messages were not added (the
// server refused, or the connection was never made). When the answer was lost the
// transaction may hold them already, and a rerun would add them a second time, published
// twice at commit: then the command exits 1 (rerunUnsafeError) and says how to find out.
func txAddError(id string, n int, err error) error {
	err = fmt.Errorf("add to transaction %s: %w", id, err)
	if exitCodeFor(err) != exitUnavailable || !client.MayHaveBeenDone(err) {
		return err
	}
	return &rerunUnsafeError{fmt.Errorf("%w; the outcome is unknown: the transaction may hold the %d messages already, and running the same command again could add them a second time ('imago tx status %s' shows how many it holds; roll it back when unsure)", err, n, id)}
}

// readLines returns the non-empty lines of r.
func readLines(r io.Reader) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) != "" {
			out = append(out, sc.Text())
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read stdin: %w", err)
	}
	return out, nil
}

func newTxCommitCmd(a *app) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "commit ID",
		Short: "Commit a transaction and print where its messages were stored",
		Long: `Commit a transaction: its messages become visible together. Prints one line per
message, "topic=T partition=P offset=O", in the order they were added. When the answer is
lost the command asks the transaction's status until the outcome is known; a transaction
already committed (by an earlier commit whose outcome was unknown) prints its positions again.`,
		Args: exactArgs(1, "a transaction id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			pos, err := a.client().Tx(args[0]).Commit(cmd.Context())
			if err != nil {
				return fmt.Errorf("commit transaction %s: %w", args[0], err)
			}
			return printTopicPositions(a.stdout, pos, output)
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func printTopicPositions(w io.Writer, pos []client.TopicPosition, output string) error {
	if output == "json" {
		return printJSON(w, map[string]any{"offsets": pos})
	}
	bw := bufio.NewWriter(w)
	for _, p := range pos {
		fmt.Fprintf(bw, "topic=%s partition=%d offset=%d\n", p.Topic, p.Partition, p.Offset)
	}
	return bw.Flush()
}

func newTxRollbackCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "rollback ID",
		Short: "Roll a transaction back: its messages are discarded",
		Args:  exactArgs(1, "a transaction id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.client().Tx(args[0]).Rollback(cmd.Context()); err != nil {
				return fmt.Errorf("roll back transaction %s: %w", args[0], err)
			}
			_, err := fmt.Fprintf(a.stdout, "transaction %s rolled back\n", args[0])
			return err
		},
	}
}

func newTxStatusCmd(a *app) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status ID",
		Short: "Show a transaction's state (open, committed, rolled_back, timed_out)",
		Long: `Show a transaction's state, the messages it holds, and once committed where they were
stored. The server remembers a finished transaction for an hour, and not across a restart.`,
		Args: exactArgs(1, "a transaction id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			st, err := a.client().Tx(args[0]).Status(cmd.Context())
			if err != nil {
				return fmt.Errorf("transaction %s: %w", args[0], err)
			}
			if output == "json" {
				return printJSON(a.stdout, st)
			}
			fmt.Fprintf(a.stdout, "transaction %s: %s", st.ID, st.State)
			if st.Messages != nil {
				fmt.Fprintf(a.stdout, ", %d messages", *st.Messages)
			}
			if st.CreatedAt != "" {
				fmt.Fprintf(a.stdout, ", created %s", st.CreatedAt)
			}
			fmt.Fprintln(a.stdout)
			return printTopicPositions(a.stdout, st.Offsets, "text")
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}
