package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/internal/config"
	"github.com/spf13/cobra"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

const defaultServer = "http://127.0.0.1:8080"

// app is what every command shares: the global flags and the standard streams.
type app struct {
	server string
	token  string
	// caFile, certFile and keyFile are the TLS files of an https:// --server (tls is what
	// they make, read before the command runs).
	caFile, certFile, keyFile string
	tls                       *tls.Config
	stdin                     io.Reader
	stdout                    io.Writer
	stderr                    io.Writer
}

// client returns an HTTP API client for --server and --token (or IMAGO_TOKEN).
func (a *app) client() *client.Client {
	return client.New(a.server, a.clientOptions()...)
}

// tlsFiles returns --ca-file, --cert-file and --key-file, each from its environment variable
// (IMAGO_CA_FILE, IMAGO_CERT_FILE, IMAGO_KEY_FILE) when the flag was not given.
func (a *app) tlsFiles(cmd *cobra.Command) (ca, cert, key string) {
	files := []string{a.caFile, a.certFile, a.keyFile}
	for i, flag := range []string{"ca-file", "cert-file", "key-file"} {
		if !cmd.Flags().Changed(flag) {
			files[i] = os.Getenv("IMAGO_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_")))
		}
	}
	return files[0], files[1], files[2]
}

// clientOptions are the options of every client the commands make: the token and the TLS files.
func (a *app) clientOptions(more ...client.Option) []client.Option {
	return append([]client.Option{client.WithToken(a.token), client.WithTLSConfig(a.tls)}, more...)
}

// usageError marks an error as the caller's: bad flags, arguments or configuration (exit 2).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return &usageError{fmt.Errorf(format, args...)} }

// run executes the command line args and returns the exit code. Tests call it in-process.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRootCmd(a)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	if isUsage(err) {
		name := "imago"
		if cmd != nil {
			name = cmd.CommandPath()
		}
		fmt.Fprintf(stderr, "imago: %v\nRun '%s --help' for usage.\n", err, name)
		return exitUsage
	}
	fmt.Fprintf(stderr, "imago: %v\n", err)
	return exitCodeFor(err)
}

// isUsage reports whether err is a usage error, ours or one of cobra's (which are not typed).
func isUsage(err error) bool {
	var ue *usageError
	if errors.As(err, &ue) {
		return true
	}
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "invalid argument",
		"flag needs an argument", "required flag", "accepts ", "requires at least", "requires at most"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

func newRootCmd(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "imago",
		Short: "Imago: a transactional messaging gateway for payment systems",
		Long: `Imago keeps partitioned, append-only, fsync'd logs behind an HTTP/JSON API.

Start a server with 'imago serve' (./data, 127.0.0.1:8080, no configuration needed), then use
the other commands against it. They talk to --server (or IMAGO_SERVER) over HTTP and send
--token (or IMAGO_TOKEN) as a bearer token when the server has auth.tokens configured.

Listings take --output json (-o json) for scripts.

` + exitCodesHelp + `

` + completionHelp,
		Example: `  imago serve
  imago topics create settlement.transfers --partitions 4
  echo '{"from":"A","to":"B","amount":100}' | imago produce settlement.transfers --input json --key A
  imago consume settlement.transfers --partition 0 --from earliest --follow`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("server") {
				if v := os.Getenv("IMAGO_SERVER"); v != "" {
					a.server = v
				}
			}
			if !cmd.Flags().Changed("token") {
				a.token = os.Getenv("IMAGO_TOKEN")
			}
			if !talksToServer(cmd) {
				return nil // its TLS files do not matter: a stale IMAGO_CA_FILE must not stop serve
			}
			var err error
			if a.tls, err = config.ClientTLS(a.tlsFiles(cmd)); err != nil {
				return usagef("--ca-file, --cert-file, --key-file: %v", err)
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.server, "server", defaultServer, "server base URL (env IMAGO_SERVER)")
	pf.StringVar(&a.token, "token", "", "bearer token (default $IMAGO_TOKEN)")
	pf.StringVar(&a.caFile, "ca-file", "", "PEM CA bundle that an https:// server's certificate is checked against (default $IMAGO_CA_FILE; empty: the system's roots)")
	pf.StringVar(&a.certFile, "cert-file", "", "PEM client certificate for a server that requires mutual TLS (default $IMAGO_CERT_FILE)")
	pf.StringVar(&a.keyFile, "key-file", "", "the private key of --cert-file (default $IMAGO_KEY_FILE)")

	root.AddCommand(newServeCmd(a), newTopicsCmd(a), newProduceCmd(a), newConsumeCmd(a),
		newBenchCmd(a), newVersionCmd(a))
	root.AddCommand(newTailCmd(a), newStatsCmd(a), newTxCmd(a), newXACmd(a))
	root.AddCommand(newGroupsCmd(a))
	root.AddCommand(newMigrateCmd(a))
	root.AddCommand(newDLQCmd(a))
	root.AddCommand(newOutboxCmd(a))
	root.AddCommand(newLogCmd(a))
	root.AddCommand(newClusterCmd(a))
	for _, c := range root.Commands() {
		switch c.Name() {
		case "serve", "version", "migrate", "log":
			c.Annotations = map[string]string{annotationOffline: "true"}
		}
	}
	return root
}

// annotationOffline marks a command that never talks to a server as a client (serve, version,
// migrate, log and their subcommands): the client's TLS files are not read for it.
const annotationOffline = "offline"

// talksToServer reports whether cmd may call a server, so that its --ca-file, --cert-file and
// --key-file (or IMAGO_CA_FILE, ...) must be readable.
func talksToServer(cmd *cobra.Command) bool {
	for c := cmd; c != nil; c = c.Parent() {
		if c.Annotations[annotationOffline] == "true" {
			return false
		}
		switch c.Name() {
		case "help", "completion", cobra.ShellCompRequestCmd, cobra.ShellCompNoDescRequestCmd:
			return false
		}
	}
	return true
}

// Argument validators that report usage errors (exit 2).

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}

func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s needs %s", cmd.CommandPath(), what)
		}
		return nil
	}
}

func minArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usagef("%s needs %s", cmd.CommandPath(), what)
		}
		return nil
	}
}
