package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/imagomq/imago/client"
	"github.com/spf13/cobra"
)

type produceFlags struct {
	key            string
	keyField       string
	partition      int
	idempotencyKey string
	batch          int
	input          string
	headers        []string
	quiet          bool
}

func newProduceCmd(a *app) *cobra.Command {
	var f produceFlags
	cmd := &cobra.Command{
		Use:   "produce TOPIC [VALUE...]",
		Short: "Produce messages from arguments or stdin lines",
		Long: `Produce messages to a topic. Each VALUE argument is one message; without arguments each
non-empty line of stdin is one message. Messages are sent in requests of up to --batch
messages (lines already read are sent together; a slow stdin is sent as it comes), and each
request is stored all-or-nothing and acknowledged once durable.

--input says what a value is:
  text     the value is stored as a JSON string (the default)
  json     the value is JSON text, stored as is ({"amount":100}, 42, "s")
  message  a whole message object: {"key":..., "value":..., "headers":{...}, "partition":N}

Keys: --key gives every message the same key; --key-field NAME (with --input json) takes the
key of each message from the field NAME of its value; with --input message the object's "key"
field is the key. --header NAME=VALUE (repeatable) adds headers to every message.

With --idempotency-key all messages go in one request, which the server stores at most once:
run the same command again (after a timeout, say) and it answers with the first offsets,
marked duplicate. Without it a request is sent once: when its answer is lost, or after
earlier requests were acknowledged, a rerun may store messages twice, and the command exits 1
(not 5) and says so. For each message the command prints "partition=P offset=O".`,
		Example: `  imago produce settlement.transfers hello world
  echo '{"from":"A","to":"B","amount":100}' | imago produce settlement.transfers --input json --key A
  imago produce settlement.transfers --input json --idempotency-key transfer-8812 '{"amount":100}'
  seq 1 100000 | imago produce load-test --batch 500 --quiet
  imago produce audit --header source=cli --partition 0 "manual correction"
  jq -c '.transfers[]' batch.json | imago produce settlement.transfers --input json --key-field from`,
		Args: minArgs(1, "a topic name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runProduce(cmd.Context(), a, f, args[0], args[1:])
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.key, "key", "k", "", "message key (messages with one key go to one partition)")
	fl.StringVar(&f.keyField, "key-field", "", "with --input json: take each message's key from this top-level field of the value")
	fl.IntVarP(&f.partition, "partition", "p", -1, "target partition (default: by key hash, round-robin without a key)")
	fl.StringVar(&f.idempotencyKey, "idempotency-key", "", "send everything as one request with this Idempotency-Key")
	fl.IntVar(&f.batch, "batch", 100, "maximum messages per request")
	fl.StringVar(&f.input, "input", "text", "what a value is: text, json or message")
	fl.StringArrayVarP(&f.headers, "header", "H", nil, "header NAME=VALUE, repeatable")
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "do not print offsets")
	return cmd
}

func runProduce(ctx context.Context, a *app, f produceFlags, topic string, values []string) error {
	if f.batch < 1 {
		return usagef("--batch %d: want at least 1", f.batch)
	}
	build, err := newMessageBuilder(f)
	if err != nil {
		return err
	}

	// A reader goroutine turns input into messages; the sender takes whatever is ready, up to
	// --batch, so a fast pipe is batched and an interactive stdin is sent line by line.
	type item struct {
		m   client.Message
		err error
	}
	items := make(chan item, f.batch)
	rctx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	go func() {
		defer close(items)
		emit := func(s string) bool {
			m, err := build(s)
			select {
			case items <- item{m, err}:
				return err == nil
			case <-rctx.Done():
				return false
			}
		}
		if len(values) > 0 {
			for _, v := range values {
				if !emit(v) {
					return
				}
			}
			return
		}
		sc := bufio.NewScanner(a.stdin)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "" {
				continue
			}
			if !emit(sc.Text()) {
				return
			}
		}
		if err := sc.Err(); err != nil {
			select {
			case items <- item{err: fmt.Errorf("read stdin: %w", err)}:
			case <-rctx.Done():
			}
		}
	}()

	c := a.client()
	sent, line := 0, 0
	for {
		it, ok := <-items
		if !ok {
			break
		}
		var batch []client.Message
		for ok {
			line++
			if it.err != nil {
				return fmt.Errorf("message %d: %w", line, it.err)
			}
			batch = append(batch, it.m)
			if f.idempotencyKey != "" {
				it, ok = <-items // one request for everything: wait for the whole input
				continue
			}
			if len(batch) >= f.batch {
				break
			}
			select {
			case it, ok = <-items:
			default:
				ok = false
			}
		}
		if ctx.Err() != nil {
			break
		}
		res, err := c.Produce(ctx, topic, batch, client.ProduceOptions{IdempotencyKey: f.idempotencyKey})
		if err != nil {
			return produceError(topic, sent, len(batch), f.idempotencyKey != "", err)
		}
		sent += len(batch)
		if !f.quiet {
			if err := printOffsets(a.stdout, res); err != nil {
				return err
			}
		}
		if res.Duplicate {
			fmt.Fprintf(a.stderr, "duplicate: the server had seen this idempotency key; nothing was stored again, the offsets are those of the first request\n")
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted after %d acknowledged messages", sent)
	}
	if sent == 0 {
		return usagef("no messages: give values as arguments or lines on stdin")
	}
	return nil
}

// produceError is the error of a failed produce request of n messages after sent acknowledged
// ones. Exit 5 (unavailable) tells a script that the same command may succeed later, which
// holds only when running it again stores nothing twice: with --idempotency-key (one request,
// whose key answers a rerun with the first outcome), or when nothing was stored (no request
// acknowledged before, and this one refused or never sent). Otherwise a rerun would store
// messages a second time: the acknowledged ones, or this request's when its answer was lost
// (outcome unknown). Then the command exits 1 (rerunUnsafeError) and says so.
func produceError(topic string, sent, n int, keyed bool, err error) error {
	if sent > 0 {
		err = fmt.Errorf("produce to %s after %d acknowledged messages: %w", topic, sent, err)
	} else {
		err = fmt.Errorf("produce to %s: %w", topic, err)
	}
	if keyed || exitCodeFor(err) != exitUnavailable {
		return err
	}
	refused := !client.MayHaveBeenDone(err)
	if sent == 0 && refused {
		return err
	}
	msg := fmt.Sprintf("running the same command again would store the %d acknowledged messages a second time", sent)
	if !refused {
		msg = fmt.Sprintf("the outcome is unknown: the request's %d messages may have been stored, and running the same command again could store them a second time", n)
		if sent > 0 {
			msg += fmt.Sprintf(", as it would the %d acknowledged before", sent)
		}
	}
	return &rerunUnsafeError{fmt.Errorf("%w; %s (send only what is not stored, or use --idempotency-key, which makes a rerun answer the first outcome)", err, msg)}
}

// rerunUnsafeError marks a failure that a rerun of the same command would make worse (a second
// copy): it exits 1, never 5.
type rerunUnsafeError struct{ err error }

func (e *rerunUnsafeError) Error() string { return e.err.Error() }
func (e *rerunUnsafeError) Unwrap() error { return e.err }

func printOffsets(w io.Writer, res *client.ProduceResult) error {
	bw := bufio.NewWriter(w)
	for _, p := range res.Offsets {
		fmt.Fprintf(bw, "partition=%d offset=%d\n", p.Partition, p.Offset)
	}
	return bw.Flush()
}

// newMessageBuilder returns the function that turns one input (an argument or a line) into a
// message under the flags --input, --key, --key-field, --partition and --header.
func newMessageBuilder(f produceFlags) (func(string) (client.Message, error), error) {
	if f.input != "text" && f.input != "json" && f.input != "message" {
		return nil, usagef("--input %q: want text, json or message", f.input)
	}
	if f.keyField != "" && f.input != "json" {
		return nil, usagef("--key-field needs --input json (with --input message, set the message's \"key\")")
	}
	if f.keyField != "" && f.key != "" {
		return nil, usagef("--key and --key-field exclude each other")
	}
	headers := map[string]string{}
	for _, h := range f.headers {
		k, v, ok := strings.Cut(h, "=")
		if !ok || k == "" {
			return nil, usagef("--header %q: want NAME=VALUE", h)
		}
		headers[k] = v
	}
	return func(s string) (client.Message, error) {
		var m client.Message
		switch f.input {
		case "text":
			m = client.Text(s)
		case "json":
			if !json.Valid([]byte(s)) {
				return m, fmt.Errorf("not JSON (use --input text to send it as a string): %.80q", s)
			}
			m.Value = json.RawMessage(s)
			if f.keyField != "" {
				k, err := keyFromField(m.Value, f.keyField)
				if err != nil {
					return m, err
				}
				m.Key = &k
			}
		case "message":
			dec := json.NewDecoder(strings.NewReader(s))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&m); err != nil {
				return m, fmt.Errorf("not a message object {\"key\",\"value\",\"headers\",\"partition\"}: %v", err)
			}
		}
		if f.key != "" && m.Key == nil {
			m.Key = client.Ptr(f.key)
		}
		if f.partition >= 0 && m.Partition == nil {
			m.Partition = client.Ptr(f.partition)
		}
		if len(headers) > 0 {
			if m.Headers == nil {
				m.Headers = map[string]string{}
			}
			for k, v := range headers {
				if _, ok := m.Headers[k]; !ok {
					m.Headers[k] = v
				}
			}
		}
		return m, nil
	}, nil
}

// keyFromField returns the top-level field name of a JSON object as a key: a string as is,
// a number or boolean as its JSON text.
func keyFromField(value json.RawMessage, name string) (string, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(value, &obj); err != nil {
		return "", fmt.Errorf("--key-field %s: the value is not a JSON object", name)
	}
	raw, ok := obj[name]
	if !ok {
		return "", fmt.Errorf("--key-field %s: the value has no field %q", name, name)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	if len(raw) > 0 && (raw[0] == '{' || raw[0] == '[' || string(raw) == "null") {
		return "", fmt.Errorf("--key-field %s: the field is %s; a key must be a string, number or boolean", name, raw)
	}
	return string(raw), nil
}
