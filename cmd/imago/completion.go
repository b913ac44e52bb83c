package main

import (
	"context"
	"os"
	"time"

	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/internal/config"
	"github.com/spf13/cobra"
)

// Shell completion: cobra's `imago completion bash|zsh|fish|powershell` writes the script;
// the functions here complete topic names from the server and the fixed words of flags.

// completionHelp is the root command's note on completion, for `imago --help`.
const completionHelp = `Shell completion: source <(imago completion bash), or see 'imago completion --help' for zsh,
fish and PowerShell. Topic names are completed from --server (or IMAGO_SERVER).`

// completeTopics completes the first argument with the server's topic names. It gives up
// silently (no suggestions) when the server cannot be reached within a second.
func completeTopics(a *app) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		server, token := a.server, a.token
		if !cmd.Flags().Changed("server") {
			if v := os.Getenv("IMAGO_SERVER"); v != "" {
				server = v
			}
		}
		if !cmd.Flags().Changed("token") {
			token = os.Getenv("IMAGO_TOKEN")
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		tlsConfig, err := config.ClientTLS(a.tlsFiles(cmd))
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		topics, err := client.New(server, client.WithToken(token), client.WithTLSConfig(tlsConfig), client.WithRetries(1)).ListTopics(ctx)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		out := make([]cobra.Completion, 0, len(topics))
		for _, t := range topics {
			out = append(out, t.Name)
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// fixedCompletions completes a flag with a fixed list of words.
func fixedCompletions(words ...string) cobra.CompletionFunc {
	return func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return words, cobra.ShellCompDirectiveNoFileComp
	}
}
