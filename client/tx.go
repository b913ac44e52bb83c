package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/imagomq/imago/api"
)

// This file holds local transactions (/v1/transactions): messages for any topics made visible
// together at commit, or never.

// Types of local transactions and XA branches.
type (
	// TxMessage is a message of a transaction or XA branch: a Message that names its topic.
	TxMessage = api.TxMessage
	// TopicPosition is where a committed transaction's message was stored.
	TopicPosition = api.TopicPosition
	// TxStatus describes a local transaction.
	TxStatus = api.TxStatus
)

// States of a local transaction (TxStatus.State).
const (
	TxOpen       = api.TxOpen
	TxCommitted  = api.TxCommitted
	TxRolledBack = api.TxRolledBack
	TxTimedOut   = api.TxTimedOut
)

// ErrOutcomeUnknown is returned by Tx.Commit when the commit's answer was lost and the server
// no longer knows the transaction (it restarted, or forgot it an hour after it ended): the
// messages may or may not be stored. Fetch them to find out. It is also wrapped by the error of
// a retried write (a produce with an idempotency key, CreateTopic, Begin) when an attempt may
// have been done (its answer was lost, cut off, or 503 outcome_unknown) and the retries ended
// without an answer that tells: send it again only with the same idempotency key.
var ErrOutcomeUnknown = errors.New("imago client: the outcome is unknown")

// To returns m as a message of topic, for transactions and XA branches.
func To(topic string, m Message) TxMessage { return TxMessage{Topic: topic, ProduceMessage: m} }

// Tx is a local transaction. Its methods may be called from any goroutine, one at a time.
type Tx struct {
	c *Client
	// ID is the server's id of the transaction; Client.Tx(ID) finds it again.
	ID string
	// Timeout is the transaction's timeout as the server applied it.
	Timeout time.Duration
}

// Begin starts a local transaction that the server rolls back when it is still open after
// timeout (0: the server default, 30 s; at most 1 h).
func (c *Client) Begin(ctx context.Context, timeout time.Duration) (*Tx, error) {
	var out api.TxCreated
	// Safe to retry: a transaction begun by a lost attempt holds nothing and times out.
	_, err := c.send(ctx, request{method: http.MethodPost, path: "/v1/transactions",
		in: api.BeginTxRequest{TimeoutMS: timeout.Milliseconds()}, out: &out, retry: true})
	if err != nil {
		return nil, err
	}
	return &Tx{c: c, ID: out.ID, Timeout: time.Duration(out.TimeoutMS) * time.Millisecond}, nil
}

// Tx returns the transaction with the given id, begun earlier (by another process, say).
func (c *Client) Tx(id string) *Tx { return &Tx{c: c, ID: id} }

func (t *Tx) path(suffix string) string { return "/v1/transactions/" + url.PathEscape(t.ID) + suffix }

// Add adds msgs to the transaction and returns the number of messages it holds. It is not
// retried: after a network error, Status tells whether the messages were added (the count).
func (t *Tx) Add(ctx context.Context, msgs ...TxMessage) (held int, err error) {
	var out api.TxMessagesResponse
	_, err = t.c.send(ctx, request{method: http.MethodPost, path: t.path("/messages"),
		in: api.TxMessagesRequest{Messages: msgs}, out: &out})
	return out.Messages, err
}

// Commit makes the transaction's messages visible, all together, and returns where each was
// stored, in the order they were added. When the answer is lost (a network error, 503 while
// the server stops, or a 2xx answer cut off on the way: the commit is done, the positions
// are lost), Commit asks the transaction's status until the outcome is known or ctx ends:
// committed returns the positions, rolled back an error, and a server that forgot the
// transaction, or refuses to tell (401, 403), an error wrapping ErrOutcomeUnknown.
//
// A Commit that returned with the outcome unknown (ctx ended first) may be called again to
// settle it: a transaction already committed answers its positions, one still committing is
// waited for, and one rolled back or timed out returns the server's 409.
func (t *Tx) Commit(ctx context.Context) ([]TopicPosition, error) {
	pos, err := t.commitOnce(ctx)
	if err == nil {
		return pos, nil
	}
	if IsCode(err, api.CodeTransactionNotOpen) {
		// Not open: committed (by an earlier Commit whose answer was lost), committing, or
		// rolled back. Only the status tells which; the 409 alone reads as a failed commit.
		// Committing (shown open) or a status not read: the loop below settles it as it
		// settles a lost answer.
		st, serr := t.Status(ctx)
		switch {
		case serr == nil && st.State == TxCommitted:
			return st.Offsets, nil
		case serr == nil && st.State != TxOpen:
			return nil, err
		}
	} else if !outcomeLost(err) {
		return nil, err
	}
	// The lost answer's error (a network error, or a 503 *Error) is kept as text below, not
	// wrapped: wrapped, IsStatus(err, 503) and the CLI's exit code would call an unknown
	// outcome "retry later", and a caller that retries with a new transaction could publish
	// the messages twice. What the caller branches on is ErrOutcomeUnknown or ctx's error.
	for n := 1; ; n++ {
		if !sleepCtx(ctx, t.c.retry.backoff(n, err)) {
			return nil, fmt.Errorf("commit of transaction %s: %w (the outcome is unknown: %v)", t.ID, ctx.Err(), err)
		}
		st, serr := t.Status(ctx)
		switch {
		case IsStatus(serr, http.StatusNotFound):
			return nil, fmt.Errorf("commit of transaction %s: %w (%v)", t.ID, ErrOutcomeUnknown, err)
		case serr != nil && permanent(serr):
			// Asking again gets the same answer: the status cannot settle the outcome.
			return nil, fmt.Errorf("commit of transaction %s: %w (%v); its status cannot be read: %v", t.ID, ErrOutcomeUnknown, err, serr)
		case serr != nil:
			continue
		case st.State == TxCommitted:
			return st.Offsets, nil
		case st.State != TxOpen:
			return nil, fmt.Errorf("commit of transaction %s: the transaction is %s", t.ID, st.State)
		}
		// Still open (or committing): ask again.
		if pos, err = t.commitOnce(ctx); err == nil {
			return pos, nil
		}
		if !outcomeLost(err) && !IsCode(err, api.CodeTransactionNotOpen) {
			return nil, err
		}
	}
}

// commitOnce sends the commit one time.
func (t *Tx) commitOnce(ctx context.Context) ([]TopicPosition, error) {
	var out api.TxCommitResponse
	_, err := t.c.send(ctx, request{method: http.MethodPost, path: t.path("/commit"), out: &out})
	return out.Offsets, err
}

// outcomeLost reports whether err leaves the outcome of a commit, or its positions, to be
// learnt from the transaction's status: a network error, a 503, a proxy's 502 or 504
// (proxyGaveUp), or a 2xx answer whose body could not be read (the commit is done; what it
// answered is lost).
func outcomeLost(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Status == http.StatusServiceUnavailable || proxyGaveUp(e.Status)
	}
	return true
}

// Rollback discards the transaction's messages.
func (t *Tx) Rollback(ctx context.Context) error {
	_, err := t.c.send(ctx, request{method: http.MethodPost, path: t.path("/rollback")})
	return err
}

// Status returns the transaction's state (TxOpen, TxCommitted, TxRolledBack, TxTimedOut), the
// messages it holds and, once committed, where they were stored. The server remembers a
// finished transaction for an hour, and not across a restart.
func (t *Tx) Status(ctx context.Context) (*TxStatus, error) {
	var out TxStatus
	if _, err := t.c.get(ctx, t.path(""), &out); err != nil {
		return nil, err
	}
	return &out, nil
}
