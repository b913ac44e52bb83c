package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

const defaultProtocolAddr = "127.0.0.1:8123"

func newStatsCmd(a *app) *cobra.Command {
	var output, protoAddr string
	var protocol, protocolTLS bool
	cmd := &cobra.Command{
		Use:   "stats [ITEM]",
		Short: "Show the server's counters, over HTTP or the text protocol door",
		Long: `Show the server's counters. By default over HTTP (GET /v1/stats on --server); with
--protocol over the text protocol door (the "stats" command at --protocol-addr, env
IMAGO_PROTOCOL_ADDR, default 127.0.0.1:8123), which also answers the items topics, offsets,
groups, transactions and help. --token (or IMAGO_TOKEN) is sent as the door's "auth" line.
--protocol-tls speaks TLS to a door that serves protocol.tls, with --ca-file, --cert-file and
--key-file.

The text output is one "name value" line per counter; --output json prints an object (over
the protocol door every value is a string, as the door sends it).`,
		Example: `  imago stats
  imago stats -o json | jq .messages_in
  imago stats --protocol
  imago stats --protocol transactions
  imago stats --protocol --protocol-addr 10.0.0.5:8123 offsets`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("%s takes at most one item", cmd.CommandPath())
			}
			if len(args) == 1 && !protocol {
				return usagef("stats items (%s) are answered by the text protocol door: add --protocol", args[0])
			}
			return nil
		},
		ValidArgsFunction: fixedCompletions("topics", "offsets", "groups", "transactions", "help"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if protocol {
				if !cmd.Flags().Changed("protocol-addr") {
					if v := os.Getenv("IMAGO_PROTOCOL_ADDR"); v != "" {
						protoAddr = v
					}
				}
				item := ""
				if len(args) == 1 {
					item = args[0]
				}
				var tlsConfig *tls.Config
				if protocolTLS {
					tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12}
					if a.tls != nil {
						tlsConfig = a.tls.Clone()
					}
				}
				lines, err := protocolStats(cmd.Context(), protoAddr, a.token, item, tlsConfig)
				if err != nil {
					return err
				}
				return printStatLines(a.stdout, lines, output)
			}
			st, err := a.client().Stats(cmd.Context())
			if err != nil {
				return fmt.Errorf("stats: %w", err)
			}
			if output == "json" {
				return printJSON(a.stdout, st)
			}
			// The JSON fields in their order, as name value lines.
			b, _ := json.Marshal(st)
			dec := json.NewDecoder(strings.NewReader(string(b)))
			dec.UseNumber()
			var lines [][2]string
			if _, err := dec.Token(); err != nil {
				return err
			}
			for dec.More() {
				k, _ := dec.Token()
				var v any
				if err := dec.Decode(&v); err != nil {
					return err
				}
				lines = append(lines, [2]string{k.(string), fmt.Sprint(v)})
			}
			return printStatLines(a.stdout, lines, "text")
		},
	}
	addOutputFlag(cmd, &output)
	cmd.Flags().BoolVar(&protocol, "protocol", false, "ask the text protocol door instead of HTTP")
	cmd.Flags().StringVar(&protoAddr, "protocol-addr", defaultProtocolAddr, "host:port of the text protocol door (env IMAGO_PROTOCOL_ADDR)")
	cmd.Flags().BoolVar(&protocolTLS, "protocol-tls", false, "with --protocol: speak TLS to the door (protocol.tls), trusting --ca-file")
	return cmd
}

func printStatLines(w io.Writer, lines [][2]string, output string) error {
	if output == "json" {
		// An object in the server's order.
		var sb strings.Builder
		sb.WriteString("{\n")
		for i, l := range lines {
			k, _ := json.Marshal(l[0])
			v, _ := json.Marshal(l[1])
			fmt.Fprintf(&sb, "  %s: %s", k, v)
			if i < len(lines)-1 {
				sb.WriteByte(',')
			}
			sb.WriteByte('\n')
		}
		sb.WriteString("}\n")
		_, err := io.WriteString(w, sb.String())
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, l := range lines {
		fmt.Fprintf(tw, "%s\t%s\n", l[0], l[1])
	}
	return tw.Flush()
}

// protocolStats sends "stats [item]" to the text protocol door (after "auth" when a token is
// given) and returns the STAT lines as name/value pairs.
// With tlsConfig the connection is TLS.
func protocolStats(ctx context.Context, addr, token, item string, tlsConfig *tls.Config) ([][2]string, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{}, Config: tlsConfig}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var conn net.Conn
	var err error
	if tlsConfig != nil {
		conn, err = d.DialContext(dctx, "tcp", addr)
	} else {
		conn, err = d.NetDialer.DialContext(dctx, "tcp", addr)
	}
	if err != nil {
		return nil, &unavailableError{fmt.Errorf("text protocol door at %s: %w", addr, err)}
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(conn)
	if token != "" {
		if strings.ContainsAny(token, " \r\n") {
			return nil, usagef("the token holds a space or a line break; the text protocol cannot send it")
		}
		if _, err := fmt.Fprintf(conn, "auth %s 1\r\n", token); err != nil {
			return nil, &unavailableError{err}
		}
		code, text, err := readResult(br)
		if err != nil {
			return nil, err
		}
		if code != 200 {
			return nil, protocolError(code, text)
		}
	}
	line := "stats 2\r\n"
	if item != "" {
		line = "stats " + item + " 2\r\n"
	}
	if _, err := io.WriteString(conn, line); err != nil {
		return nil, &unavailableError{err}
	}
	code, text, err := readResult(br)
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, protocolError(code, text)
	}
	_, _ = io.WriteString(conn, "quit\r\n")
	return parseStats(text)
}

// readResult reads one "result <code> <length> <opaque>" answer and its text.
func readResult(br *bufio.Reader) (int, string, error) {
	head, err := br.ReadString('\n')
	if err != nil {
		return 0, "", &unavailableError{fmt.Errorf("read the door's answer: %w", err)}
	}
	f := strings.Fields(head)
	if len(f) != 4 || f[0] != "result" {
		return 0, "", fmt.Errorf("unexpected answer from the text protocol door: %q", strings.TrimSpace(head))
	}
	code, err1 := strconv.Atoi(f[1])
	n, err2 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil || n < 0 || n > 64<<20 {
		return 0, "", fmt.Errorf("malformed answer from the text protocol door: %q", strings.TrimSpace(head))
	}
	body := make([]byte, n+2) // the text and its trailing CRLF
	if _, err := io.ReadFull(br, body); err != nil {
		return 0, "", &unavailableError{fmt.Errorf("read the door's answer: %w", err)}
	}
	return code, string(body[:n]), nil
}

// protocolError turns a door's refusal into the CLI's exit codes (client.Error by status).
func protocolError(code int, text string) error {
	err := fmt.Errorf("text protocol door: result %d: %s", code, strings.TrimSpace(text))
	switch code {
	case 400:
		return usagef("%v", err)
	case 401, 403:
		return &deniedError{err}
	case 503:
		return &unavailableError{err}
	}
	return err
}

// deniedError marks a refusal of the token (exit 6).
type deniedError struct{ err error }

func (e *deniedError) Error() string { return e.err.Error() }
func (e *deniedError) Unwrap() error { return e.err }

// parseStats reads memcached-style "STAT <name> <value>" lines ending with "END".
func parseStats(text string) ([][2]string, error) {
	var out [][2]string
	for _, l := range strings.Split(strings.TrimRight(text, "\r\n"), "\n") {
		l = strings.TrimRight(l, "\r")
		if l == "END" {
			return out, nil
		}
		rest, ok := strings.CutPrefix(l, "STAT ")
		if !ok {
			return nil, fmt.Errorf("text protocol door: not a STAT line: %q", l)
		}
		name, value, _ := strings.Cut(rest, " ")
		out = append(out, [2]string{name, value})
	}
	return nil, fmt.Errorf("text protocol door: the stats answer does not end with END")
}
