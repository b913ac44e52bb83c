package main

import (
	"bufio"
	"fmt"

	"github.com/imagomq/imago/client"
	"github.com/spf13/cobra"
)

// imago xa: what an operator does with XA branches by hand. A transaction manager drives the
// verbs (start, end, prepare, commit, …) through client.XAResource; a person lists the
// prepared branches and, when the manager is lost for good, decides one heuristically.

func newXACmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "xa",
		Short: "XA branches: recover (list in-doubt), heuristic commit or rollback, forget",
		Long: `The broker is an XA resource manager. 'imago xa recover' lists the prepared branches no
transaction manager has decided yet (they never time out) and those decided heuristically but
not yet forgotten. When a transaction manager is gone for good, an operator may decide a
prepared branch: 'imago xa commit --heuristic XID' or 'imago xa rollback --heuristic XID'
(needs a token with the admin right; logged by the server, durable). The manager's later
commit or rollback of that branch then gets XA_HEURCOM, XA_HEURRB or XA_HEURHAZ, and its
forget (or 'imago xa forget XID') clears it.

An XID is written XID:<format_id>:<gtrid hex>:<bqual hex>, as recover prints it.`,
		Example: `  imago xa recover
  imago xa recover -o json
  imago xa commit --heuristic XID:1:7472616e736665722d31:62726f6b6572
  imago xa rollback --heuristic XID:1:7472616e736665722d32:62726f6b6572
  imago xa forget XID:1:7472616e736665722d32:62726f6b6572`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usagef("xa needs a subcommand: recover, commit, rollback or forget")
		},
	}
	cmd.AddCommand(newXARecoverCmd(a), newXADecideCmd(a, true), newXADecideCmd(a, false), newXAForgetCmd(a))
	return cmd
}

func newXARecoverCmd(a *app) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "recover",
		Short: "List prepared, undecided branches (and heuristic ones not forgotten), one XID a line",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			xids, err := a.client().NewXAResource().Recover(cmd.Context())
			if err != nil {
				return fmt.Errorf("xa recover: %w", err)
			}
			if output == "json" {
				type xidJSON struct {
					Xid      string `json:"xid"`
					FormatID int32  `json:"format_id"`
					Gtrid    string `json:"gtrid"`
					Bqual    string `json:"bqual"`
				}
				out := make([]xidJSON, len(xids))
				for i, x := range xids {
					out[i] = xidJSON{Xid: x.String(), FormatID: x.FormatID, Gtrid: fmt.Sprintf("%x", x.Gtrid), Bqual: fmt.Sprintf("%x", x.Bqual)}
				}
				return printJSON(a.stdout, map[string]any{"xids": out})
			}
			bw := bufio.NewWriter(a.stdout)
			for _, x := range xids {
				fmt.Fprintln(bw, x.String())
			}
			return bw.Flush()
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func newXADecideCmd(a *app, commit bool) *cobra.Command {
	verb, done := "rollback", "rolled back"
	if commit {
		verb, done = "commit", "committed"
	}
	var heuristic bool
	cmd := &cobra.Command{
		Use:   verb + " --heuristic XID",
		Short: "Heuristically " + map[bool]string{true: "commit", false: "roll back"}[commit] + " a prepared branch (admin)",
		Long: `Decide a prepared branch without its transaction manager: the operator's heuristic
decision, for when the manager is lost. It needs --heuristic (to say you mean it) and a token
with the admin right. The server logs it and keeps it across restarts; the manager's later
commit or rollback of the branch answers XA_HEURCOM, XA_HEURRB or XA_HEURHAZ until it forgets
the branch.`,
		Args: exactArgs(1, "one XID (XID:<format_id>:<gtrid hex>:<bqual hex>, as 'imago xa recover' prints it)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !heuristic {
				return usagef("xa %s decides a branch in place of its transaction manager: add --heuristic to confirm", verb)
			}
			xid, err := client.ParseXid(args[0])
			if err != nil {
				return usagef("%v", err)
			}
			if err := a.client().NewXAResource().Heuristic(cmd.Context(), xid, commit); err != nil {
				return fmt.Errorf("heuristic %s of %s: %w", verb, xid, err)
			}
			_, err = fmt.Fprintf(a.stdout, "branch %s heuristically %s\n", xid, done)
			return err
		},
	}
	cmd.Flags().BoolVar(&heuristic, "heuristic", false, "confirm a heuristic decision (required)")
	return cmd
}

func newXAForgetCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "forget XID",
		Short: "Forget a heuristically completed branch",
		Args:  exactArgs(1, "one XID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			xid, err := client.ParseXid(args[0])
			if err != nil {
				return usagef("%v", err)
			}
			if err := a.client().NewXAResource().Forget(cmd.Context(), xid); err != nil {
				return fmt.Errorf("forget %s: %w", xid, err)
			}
			_, err = fmt.Fprintf(a.stdout, "branch %s forgotten\n", xid)
			return err
		},
	}
}
