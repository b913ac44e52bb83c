package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/internal/config"
	"github.com/imagomq/imago/migrations"
	"github.com/imagomq/imago/offsetdb"
)

func newGroupsCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "groups",
		Short: "List, describe and reset consumer groups",
		Long: `Consumer groups share a topic's partitions among their members and keep a committed
offset (the next offset to read) per partition in the server's offset store.

list and describe ask the server over HTTP. reset writes the offset store itself (the file
store in the data directory, or the PostgreSQL/MySQL/ZooKeeper store of the configuration),
so it works with the server stopped; it refuses while the group has live members.`,
		Example: `  imago groups list
  imago groups describe settlement
  imago groups reset settlement --topic settlement.transfers --to-earliest
  imago groups reset settlement --topic settlement.transfers --partition 2 --to-offset 1200 --config imago.yaml`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usagef("groups needs a subcommand: list, describe or reset")
		},
	}
	cmd.AddCommand(newGroupsListCmd(a), newGroupsDescribeCmd(a), newGroupsResetCmd(a))
	return cmd
}

// storeFlags select an offset store to open directly (list --store, reset).
type storeFlags struct {
	configPath string
	store      string
	dsn        string
	dataDir    string
}

func (f *storeFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.configPath, "config", "", "configuration file of the server (its offsets and data_dir keys are used)")
	fl.StringVar(&f.store, "store", "", "offset store: file, postgres, mysql or zookeeper (overrides offsets.store)")
	fl.StringVar(&f.dsn, "dsn", "", "database of a postgres or mysql store (overrides offsets.dsn; default $IMAGO_OFFSETS_DSN)")
	fl.StringVar(&f.dataDir, "data-dir", "", "data directory of the file store (overrides data_dir; default ./data)")
}

func (f *storeFlags) given(cmd *cobra.Command) bool {
	for _, n := range []string{"config", "store", "dsn", "data-dir"} {
		if cmd.Flags().Changed(n) {
			return true
		}
	}
	return false
}

// open opens the offset store the flags, the configuration file and IMAGO_* variables name,
// without group commit.
func (f *storeFlags) open(ctx context.Context, cmd *cobra.Command) (offsetdb.Store, string, error) {
	cfg, err := config.Load(f.configPath)
	if err != nil {
		return nil, "", &usageError{err}
	}
	if cmd.Flags().Changed("store") {
		cfg.Offsets.Store = f.store
	}
	if cmd.Flags().Changed("dsn") {
		cfg.Offsets.DSN = f.dsn
	}
	if cmd.Flags().Changed("data-dir") {
		cfg.DataDir = f.dataDir
	}
	kind := storeName(cfg.Offsets.Store)
	if _, sql := migrations.Dialect(kind); sql && cfg.Offsets.DSN == "" {
		return nil, kind, usagef("the %s offset store needs --dsn (or offsets.dsn, or IMAGO_OFFSETS_DSN)", kind)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := offsetdb.OpenDirect(ctx, offsetdb.Config{
		Store: cfg.Offsets.Store, DSN: cfg.Offsets.DSN, Dir: filepath.Join(cfg.DataDir, "offsets"),
		ZooKeeper: cfg.ZooKeeper.Servers, Root: cfg.ZooKeeper.Root, MaxConns: 2,
	})
	if err != nil {
		if kind == "file" && strings.Contains(err.Error(), "locked by another process") {
			return nil, kind, fmt.Errorf("the file offset store in %s is in use by a running imago serve: stop the server first (the file store admits one process), or use its HTTP API: %w",
				filepath.Join(cfg.DataDir, "offsets"), err)
		}
		return nil, kind, fmt.Errorf("open the %s offset store: %w", kind, err)
	}
	return s, kind, nil
}

func newGroupsListCmd(a *app) *cobra.Command {
	var output string
	var sf storeFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List consumer groups (with committed offsets or live members)",
		Long: `List the consumer groups the server knows: every group with committed offsets in its
offset store or with live members, with its mode and member count.

With --config, --store, --dsn or --data-dir, the offset store is read directly instead (the
server may be stopped; a DBA can point it at the database): then only groups with committed
offsets are listed, with their partition count and last commit. A broadcast group's members
keep their offsets under "<group>~<consumer>".`,
		Example: `  imago groups list
  imago groups list -o json
  imago groups list --store postgres --dsn "postgres://imago@db:5432/payments"
  imago groups list --data-dir /var/lib/imago      # the file store, server stopped`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if sf.given(cmd) {
				return listGroupsFromStore(cmd, a, &sf, output)
			}
			groups, err := a.client().ListGroups(cmd.Context())
			if err != nil {
				return fmt.Errorf("list groups: %w", err)
			}
			if output == "json" {
				return printJSON(a.stdout, map[string]any{"groups": groups})
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "GROUP\tMODE\tMEMBERS")
			for _, g := range groups {
				fmt.Fprintf(tw, "%s\t%s\t%d\n", g.Name, dash(g.Mode), g.Members)
			}
			return tw.Flush()
		},
	}
	addOutputFlag(cmd, &output)
	sf.add(cmd)
	return cmd
}

// storedGroup is one line of `groups list` read from a store.
type storedGroup struct {
	Name          string    `json:"name"`
	Partitions    int       `json:"partitions"`
	LastCommitted time.Time `json:"last_committed_at"`
}

func listGroupsFromStore(cmd *cobra.Command, a *app, sf *storeFlags, output string) error {
	ctx := cmd.Context()
	s, _, err := sf.open(ctx, cmd)
	if err != nil {
		return err
	}
	defer s.Close()
	names, err := s.Groups(ctx)
	if err != nil {
		return fmt.Errorf("list groups: %w", err)
	}
	out := make([]storedGroup, 0, len(names))
	for _, n := range names {
		offs, err := s.List(ctx, n)
		if err != nil {
			return fmt.Errorf("list offsets of %s: %w", n, err)
		}
		g := storedGroup{Name: n, Partitions: len(offs)}
		for _, o := range offs {
			if o.CommittedAt.After(g.LastCommitted) {
				g.LastCommitted = o.CommittedAt
			}
		}
		out = append(out, g)
	}
	if output == "json" {
		return printJSON(a.stdout, map[string]any{"groups": out})
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tPARTITIONS\tLAST COMMIT")
	for _, g := range out {
		fmt.Fprintf(tw, "%s\t%d\t%s\n", g.Name, g.Partitions, g.LastCommitted.Format(time.RFC3339))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newGroupsDescribeCmd(a *app) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "describe GROUP",
		Short: "Show a group's committed offsets, partition ends, lag and live members",
		Long: `Show, for each partition the group committed an offset for: the committed offset (the
next offset the group reads), the partition's end (the offset the next message gets), the lag
between them, and when the offset was last committed; then the group's live members and their
partitions. A broadcast group shows one line per consumer and partition.`,
		Example: "  imago groups describe settlement\n  imago groups describe settlement -o json",
		Args:    exactArgs(1, "one group name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			g, err := a.client().GroupOffsets(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("describe group %s: %w", args[0], err)
			}
			if output == "json" {
				return printJSON(a.stdout, g)
			}
			var lag int64
			for _, o := range g.Offsets {
				lag += o.Lag
			}
			fmt.Fprintf(a.stdout, "group %s: mode %s, generation %d, %d live members, total lag %d\n",
				args[0], dash(g.Mode), g.Generation, len(g.Members), lag)
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TOPIC\tPARTITION\tOFFSET\tEND\tLAG\tCOMMITTED AT\tCONSUMER")
			for _, o := range g.Offsets {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%s\n", o.Topic, o.Partition, o.Offset, o.EndOffset, o.Lag, dash(o.UpdatedAt), dash(o.Consumer))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if len(g.Members) == 0 {
				return nil
			}
			fmt.Fprintln(a.stdout)
			tw = tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MEMBER\tCONSUMER\tLAST SEEN\tPARTITIONS")
			for _, m := range g.Members {
				parts := make([]string, 0, len(m.Assignments))
				for _, as := range m.Assignments {
					parts = append(parts, fmt.Sprintf("%s/%d", as.Topic, as.Partition))
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.MemberID, dash(m.ConsumerID), m.LastSeen, strings.Join(parts, " "))
			}
			return tw.Flush()
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

// resetRow is one partition reset by `groups reset`.
type resetRow struct {
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	From      *int64 `json:"from"`
	To        int64  `json:"to"`
}

func newGroupsResetCmd(a *app) *cobra.Command {
	var (
		output               string
		sf                   storeFlags
		topic                string
		partition            int
		toOffset             int64
		toEarliest, toLatest bool
		dryRun               bool
	)
	cmd := &cobra.Command{
		Use:   "reset GROUP --topic TOPIC (--to-offset N | --to-earliest | --to-latest)",
		Short: "Move a group's committed offsets, backwards included",
		Long: `Set the committed offset of GROUP on every partition of --topic (or on --partition only):
to an offset (--to-offset), to each partition's start (--to-earliest: the group reads
everything still stored again) or to its end (--to-latest: the group skips what is there).
This is the one operation that moves an offset backwards.

The command writes the offset store directly: the file store in the data directory (the
server must be stopped: the file store admits one process), or the database or ZooKeeper of
the configuration (--config, or --store/--dsn), where the server may keep running. It first
asks the server (--server) whether the group has live members and refuses if so: a live
member keeps its position in memory and would commit forward again; stop the consumers
first. When the server does not answer, reset cannot tell a stopped server from one it does
not reach: with a database or ZooKeeper store it goes on and warns on stderr that live members
and the partitions' bounds were not checked. --to-earliest and --to-latest need the server to learn the partitions' bounds; with
the server stopped use --to-offset (and --partition, or the partitions the group committed).

A transactional consumer (client.TxConsumer) keeps its offsets in the application's own
database: reset those with SQL there, not with this command.`,
		Example: `  imago groups reset settlement --topic settlement.transfers --to-earliest
  imago groups reset settlement --topic settlement.transfers --partition 2 --to-offset 1200
  imago groups reset settlement --topic settlement.transfers --to-latest --config imago.yaml --dry-run
  imago groups reset settlement --topic settlement.transfers --to-offset 0 --data-dir ./data   # server stopped`,
		Args: exactArgs(1, "one group name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			group := args[0]
			if topic == "" {
				return usagef("reset needs --topic")
			}
			n := 0
			for _, b := range []bool{cmd.Flags().Changed("to-offset"), toEarliest, toLatest} {
				if b {
					n++
				}
			}
			if n != 1 {
				return usagef("reset needs exactly one of --to-offset, --to-earliest and --to-latest")
			}
			if cmd.Flags().Changed("to-offset") && toOffset < 0 {
				return usagef("--to-offset %d: want 0 or more", toOffset)
			}
			if cmd.Flags().Changed("partition") && partition < 0 {
				return usagef("--partition %d: want 0 or more", partition)
			}
			ctx := cmd.Context()
			c := a.client()

			// Is the server up, and does the group have live members?
			up := true
			hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			g, err := c.GroupOffsets(hctx, group)
			cancel()
			switch {
			case err == nil:
				if len(g.Members) > 0 {
					ids := make([]string, 0, len(g.Members))
					for _, m := range g.Members {
						ids = append(ids, m.MemberID)
					}
					return fmt.Errorf("group %s has %d live members (%s): stop its consumers first, then reset",
						group, len(g.Members), strings.Join(ids, ", "))
				}
			case client.IsStatus(err, 404):
				// No offsets and no members yet: nothing to refuse.
			case isUnreachable(err):
				up = false
			default:
				return fmt.Errorf("ask the server about group %s: %w", group, err)
			}

			var bounds map[int][2]int64
			if up {
				t, err := c.DescribeTopic(ctx, topic)
				if err != nil {
					return fmt.Errorf("describe topic %s: %w", topic, err)
				}
				bounds = map[int][2]int64{}
				for _, p := range t.Partitions {
					bounds[p.Partition] = [2]int64{p.StartOffset, p.EndOffset}
				}
				if cmd.Flags().Changed("partition") {
					if _, ok := bounds[partition]; !ok {
						return fmt.Errorf("topic %s has no partition %d (it has %d)", topic, partition, len(t.Partitions))
					}
				}
			} else if toEarliest || toLatest {
				return fmt.Errorf("the server at %s does not answer: --to-earliest and --to-latest need it for the partitions' bounds; use --to-offset", a.server)
			}

			store, kind, err := sf.open(ctx, cmd)
			if err != nil {
				return err
			}
			defer store.Close()
			if !up && kind != "file" {
				// The file store's lock proves no server runs on it; a database or ZooKeeper
				// may serve a server this command did not reach (another --server).
				fmt.Fprintf(a.stderr, "imago: warning: the server at %s does not answer: group %s was not checked for live members (a live member would commit forward again over the reset), and --to-offset not against the partitions' bounds\n", a.server, group)
			}
			current, err := store.List(ctx, group)
			if err != nil {
				return fmt.Errorf("read offsets of %s: %w", group, err)
			}
			cur := map[int]int64{}
			for _, o := range current {
				if o.Topic == topic {
					cur[o.Partition] = o.Next
				}
			}
			var parts []int
			switch {
			case cmd.Flags().Changed("partition"):
				parts = []int{partition}
			case bounds != nil:
				for p := range bounds {
					parts = append(parts, p)
				}
			default:
				for p := range cur {
					parts = append(parts, p)
				}
				if len(parts) == 0 {
					return fmt.Errorf("group %s has no offsets on %s and the server is down: name the partition with --partition", group, topic)
				}
			}
			slices.Sort(parts)
			rows := make([]resetRow, 0, len(parts))
			for _, p := range parts {
				to := toOffset
				if b, ok := bounds[p]; ok {
					switch {
					case toEarliest:
						to = b[0]
					case toLatest:
						to = b[1]
					case to < b[0] || to > b[1]:
						return fmt.Errorf("--to-offset %d is outside partition %d of %s, which holds offsets %d to %d", to, p, topic, b[0], b[1])
					}
				}
				r := resetRow{Topic: topic, Partition: p, To: to}
				if v, ok := cur[p]; ok {
					r.From = &v
				}
				rows = append(rows, r)
			}
			if !dryRun {
				for _, r := range rows {
					if err := store.Reset(ctx, group, r.Topic, r.Partition, r.To); err != nil {
						return fmt.Errorf("reset %s on %s/%d: %w", group, r.Topic, r.Partition, err)
					}
				}
			}
			if output == "json" {
				return printJSON(a.stdout, map[string]any{"group": group, "dry_run": dryRun, "offsets": rows})
			}
			verb := "reset"
			if dryRun {
				verb = "would reset (dry run)"
			}
			fmt.Fprintf(a.stdout, "%s group %s on %s:\n", verb, group, topic)
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PARTITION\tFROM\tTO")
			for _, r := range rows {
				from := "-"
				if r.From != nil {
					from = fmt.Sprint(*r.From)
				}
				fmt.Fprintf(tw, "%d\t%s\t%d\n", r.Partition, from, r.To)
			}
			return tw.Flush()
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&topic, "topic", "t", "", "topic whose offsets to reset (required)")
	fl.IntVarP(&partition, "partition", "p", 0, "reset this partition only (default: every partition)")
	fl.Int64Var(&toOffset, "to-offset", 0, "set the committed offset to N (the next offset the group reads)")
	fl.BoolVar(&toEarliest, "to-earliest", false, "set it to each partition's start offset")
	fl.BoolVar(&toLatest, "to-latest", false, "set it to each partition's end offset")
	fl.BoolVar(&dryRun, "dry-run", false, "show what would be set, change nothing")
	addOutputFlag(cmd, &output)
	sf.add(cmd)
	return cmd
}

// isUnreachable reports a request that never got an answer (connection refused, timeout).
func isUnreachable(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &oe) || (errors.As(err, &ne) && ne.Timeout()) || errors.Is(err, context.DeadlineExceeded)
}
