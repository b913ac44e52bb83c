package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/imagomq/imago/client"
	"github.com/spf13/cobra"
)

func newClusterCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Inspect a cluster of Imago servers",
		Long: `Inspect a cluster of Imago servers (servers with a cluster block in their configuration;
see docs/cluster.md).`,
		Args: noArgs,
	}
	cmd.AddCommand(newClusterStatusCmd(a))
	return cmd
}

func newClusterStatusCmd(a *app) *cobra.Command {
	var output string
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every node of the cluster: role, term, applied index, lag, reachability, leader",
		Long: `Show the cluster as --server sees it (GET /v1/cluster), one row per node:

  NODE       the node's id ("*" marks the node that answered)
  ROLE       leader, follower or learner, as the answering node sees it
  TERM       the node's raft term
  APPLIED    the node's applied index
  LAG        raft entries the node is behind the leader (the leader's view)
  REACHABLE  whether the answering node's raft link to the node is up
  LEADER     the leader the node knows (0: none)

TERM, APPLIED and LEADER come from each node's own GET /v1/cluster at its http_addr (same
scheme and token as --server, one second each); "-" when it did not answer. LAG comes from
the leader's answer. --json prints the answer of --server as it is.`,
		Example: `  imago cluster status
  imago cluster status --server http://127.0.0.1:8082
  imago cluster status --json | jq .leader_id`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if jsonOut {
				output = "json"
			}
			if err := checkOutput(output); err != nil {
				return err
			}
			st, err := a.client().ClusterStatus(cmd.Context())
			if err != nil {
				return fmt.Errorf("cluster status from %s: %w", a.server, err)
			}
			if output == "json" {
				return printJSON(a.stdout, st)
			}
			views := askNodes(cmd.Context(), a, st)
			return printClusterTable(a.stdout, st, views)
		},
	}
	addOutputFlag(cmd, &output)
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the server's answer as JSON (same as -o json)")
	return cmd
}

// askNodes asks every node of st but the one that answered for its own view, concurrently,
// one second each, without retries. A node that does not answer is absent from the result.
func askNodes(ctx context.Context, a *app, st *client.ClusterStatus) map[uint64]*client.ClusterStatus {
	views := map[uint64]*client.ClusterStatus{st.NodeID: st}
	scheme := "http"
	if u, err := url.Parse(a.server); err == nil && u.Scheme != "" {
		scheme = u.Scheme
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range st.Nodes {
		if n.ID == st.NodeID || n.HTTPAddr == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := client.New(scheme+"://"+n.HTTPAddr, a.clientOptions(client.WithRetries(1))...)
			ctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			v, err := c.ClusterStatus(ctx)
			if err != nil {
				return
			}
			mu.Lock()
			views[n.ID] = v
			mu.Unlock()
		}()
	}
	wg.Wait()
	return views
}

// printClusterTable prints one row per node of st, filled in from each node's own view.
func printClusterTable(w io.Writer, st *client.ClusterStatus, views map[uint64]*client.ClusterStatus) error {
	leaderView := views[st.LeaderID] // the leader knows every node's lag
	fmt.Fprintf(w, "cluster %s: answered by node %d (%s), leader %s, term %d, commit index %d\n\n",
		orDash(st.ClusterID), st.NodeID, orDash(st.Role), leaderName(st.LeaderID), st.Term, st.CommitIndex)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tTERM\tAPPLIED\tLAG\tREACHABLE\tLEADER")
	for _, n := range st.Nodes {
		id := strconv.FormatUint(n.ID, 10)
		if n.ID == st.NodeID {
			id += " *"
		}
		term, applied, leader := "-", "-", "-"
		if v := views[n.ID]; v != nil {
			term = strconv.FormatUint(v.Term, 10)
			applied = strconv.FormatUint(v.AppliedIndex, 10)
			leader = strconv.FormatUint(v.LeaderID, 10)
		}
		lag := "-"
		if leaderView != nil && leaderView.LeaderID == leaderView.NodeID {
			for _, ln := range leaderView.Nodes {
				if ln.ID == n.ID {
					lag = strconv.FormatUint(ln.LagEntries, 10)
				}
			}
		}
		reachable := "no"
		if n.Reachable {
			reachable = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", id, orDash(n.Role), term, applied, lag, reachable, leader)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if st.Error != "" {
		fmt.Fprintf(w, "\nnode %d stopped: %s\n", st.NodeID, st.Error)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func leaderName(id uint64) string {
	if id == 0 {
		return "none known"
	}
	return strconv.FormatUint(id, 10)
}
