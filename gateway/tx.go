package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/broker"
	"github.com/prometheus/client_golang/prometheus"
)

// This file holds the local transactions (/v1/transactions, docs/http-api.md "Local
// transactions") and what they share with the XA verbs (xa.go): the per-topic produce check
// on messages, auto-creation of topics, and the outcome counter.
//
// A transaction's messages may go to any topics; the broker keeps them invisible until commit,
// which appends all of them as one batch (visible together at consecutive offsets per
// partition, or not at all). Ids are 96 random bits chosen by the broker: knowing one is what
// lets a producer token act on the transaction.

const localTxExample = `{"timeout_ms": 30000}`

var (
	beginTxSpec = txSpec{allowed: tfTimeout, example: localTxExample}
	addTxSpec   = txSpec{allowed: tfMessages, required: tfMessages,
		example: `{"messages": [{"topic": "t", "key": "k", "value": ...}]}`}
)

// txIDParam returns the {id} path parameter. Broker ids are hex; anything that could not be
// an id is 400 invalid_parameter rather than a lookup.
func txIDParam(r *http.Request) (string, error) {
	id := chi.URLParam(r, "id")
	if len(id) == 0 || len(id) > 128 {
		return "", paramError("id", "must be 1 to 128 characters, as returned by POST /v1/transactions")
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return "", paramError("id", "holds %q; transaction ids are as returned by POST /v1/transactions", c)
		}
	}
	return id, nil
}

// readTxBody reads and decodes a transaction or XA body. The caller returns the buffer with
// putBuf once the broker has copied the messages (AddTx and XAAdd copy them).
func (s *Server) readTxBody(w http.ResponseWriter, r *http.Request, spec txSpec) (txBody, *[]byte, error) {
	bp, err := s.readBody(w, r)
	if err != nil {
		return txBody{}, nil, err
	}
	body, err := decodeTxBody(*bp, spec)
	if err != nil {
		putBuf(bp)
		return txBody{}, nil, err
	}
	return body, bp, nil
}

// authorizeTopics checks that the caller's token may produce to the topic of every message
// (403 forbidden naming the first that it may not). The route already checked the token.
func (s *Server) authorizeTopics(w http.ResponseWriter, msgs []broker.TxMessage) error {
	if s.auth == nil {
		return nil
	}
	t := callerToken(w)
	if t == nil { // authorize already let it through: cannot happen
		return errInvalidToken()
	}
	for i := range msgs {
		topic := msgs[i].Topic
		if i > 0 && topic == msgs[i-1].Topic {
			continue
		}
		if !allows(t, rightProduce, topic) {
			return &apiError{status: http.StatusForbidden, code: api.CodeForbidden, field: msgField(i, "topic"),
				message: fmt.Sprintf("token %q lacks the produce right on topic %q (messages[%d]); ask an operator to extend its patterns", t.Name, topic, i)}
		}
	}
	return nil
}

// tokenName is the name of the caller's token, for audit logs ("" when auth is off).
func tokenName(w http.ResponseWriter) string {
	if t := callerToken(w); t != nil {
		return t.Name
	}
	return ""
}

// operatorName names who made an operator's decision (a resolve, a heuristic decision) in the
// logs and records: the token's name, or "anonymous" without auth.
func operatorName(w http.ResponseWriter) string {
	if n := tokenName(w); n != "" {
		return n
	}
	return "anonymous"
}

// addMessages runs add (AddTx or XAAdd) and, when a topic is unknown and the server
// auto-creates topics, creates the missing ones and runs it once more.
func (s *Server) addMessages(msgs []broker.TxMessage, add func() error) error {
	err := add()
	if !errors.Is(err, broker.ErrUnknownTopic) || !s.opts.AutoCreateTopics {
		return err
	}
	for i := range msgs {
		topic := msgs[i].Topic
		if _, terr := s.b.Topic(topic); !errors.Is(terr, broker.ErrUnknownTopic) {
			continue
		}
		if err := s.autoCreateTopic(topic); err != nil {
			return err
		}
	}
	return add()
}

// autoCreateTopic creates topic with Options.DefaultPartitions, for a server that
// auto-creates topics. A topic that another request created meanwhile is no error.
func (s *Server) autoCreateTopic(topic string) error {
	created, err := s.b.CreateTopic(topic, broker.TopicConfig{Partitions: s.opts.DefaultPartitions})
	if err != nil && !errors.Is(err, broker.ErrTopicExists) {
		return err
	}
	if created {
		s.log.Info("topic auto-created", "topic", topic, "partitions", s.opts.DefaultPartitions)
	}
	return nil
}

func (s *Server) handleBeginTx(w http.ResponseWriter, r *http.Request) error {
	body, bp, err := s.readTxBody(w, r, beginTxSpec)
	if err != nil {
		return err
	}
	putBuf(bp)
	ms := body.timeoutMS
	if ms == 0 {
		ms = 30_000
	}
	id, err := s.b.BeginTx(time.Duration(ms) * time.Millisecond)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, api.TxCreated{ID: id, TimeoutMS: ms})
}

func (s *Server) handleTxMessages(w http.ResponseWriter, r *http.Request) error {
	id, err := txIDParam(r)
	if err != nil {
		return err
	}
	body, bp, err := s.readTxBody(w, r, addTxSpec)
	if err != nil {
		return err
	}
	defer putBuf(bp)
	if err := s.authorizeTopics(w, body.msgs); err != nil {
		return err
	}
	if err := s.addMessages(body.msgs, func() error { return s.b.AddTx(id, body.msgs) }); err != nil {
		return err
	}
	n := len(body.msgs)
	if info, err := s.b.TxStatus(id); err == nil && info.State == broker.TxOpen {
		n = info.Messages
	}
	return writeJSON(w, http.StatusOK, api.TxMessagesResponse{Messages: n})
}

func (s *Server) handleCommitTx(w http.ResponseWriter, r *http.Request) error {
	id, err := txIDParam(r)
	if err != nil {
		return err
	}
	pos, err := s.b.CommitTx(r.Context(), id)
	switch {
	case err == nil:
		s.metrics.txEnded(kindLocal, outcomeCommitted)
	case errors.Is(err, broker.ErrTxTimedOut):
		s.metrics.txEnded(kindLocal, outcomeTimedOut)
		return err
	case errors.Is(err, broker.ErrTxNotFound), errors.Is(err, broker.ErrTxState):
		return err
	case errors.Is(err, broker.ErrClosed):
		// The log failed or is closing: the broker dropped the transaction, but a batch
		// written just before an fsync failure is recovered (whole) at the next start.
		s.metrics.txEnded(kindLocal, outcomeFailed)
		return fmt.Errorf("commit of transaction %s did not complete; it is rolled back unless the log write reached the disk before the failure: %w", id, err)
	case errors.Is(err, broker.ErrBackpressure):
		// Not queued: the broker kept the transaction open with its messages (429).
		return fmt.Errorf("commit of transaction %s was refused for back-pressure; the transaction is still open with its messages: retry the commit, do not begin it again: %w", id, err)
	case errors.Is(err, broker.ErrOutcomeUnknown):
		// The commit batch may be in the log. In a cluster the transaction stays committing
		// (shown open, refusing rollback and commit) until this node has applied its commit
		// (committed) or an entry of a later leadership term (lost: open again).
		return fmt.Errorf("commit of transaction %s has an unknown outcome: it may be in the log; do not begin it again: read its state until it is committed, or open again (the commit was lost: commit again): %w", id, err)
	default:
		// The broker rolled the transaction back.
		s.metrics.txEnded(kindLocal, outcomeFailed)
		return fmt.Errorf("commit of transaction %s was refused and the transaction is rolled back; begin it again: %w", id, err)
	}
	return writeJSON(w, http.StatusOK, api.TxCommitResponse{ID: id, State: api.TxCommitted, Offsets: positionsJSON(pos)})
}

func (s *Server) handleRollbackTx(w http.ResponseWriter, r *http.Request) error {
	id, err := txIDParam(r)
	if err != nil {
		return err
	}
	if err := s.b.RollbackTx(r.Context(), id); err != nil {
		if errors.Is(err, broker.ErrTxTimedOut) {
			s.metrics.txEnded(kindLocal, outcomeTimedOut)
		}
		return err
	}
	s.metrics.txEnded(kindLocal, outcomeRolledBack)
	return writeJSON(w, http.StatusOK, api.TxStatus{ID: id, State: api.TxRolledBack})
}

func (s *Server) handleTxStatus(w http.ResponseWriter, r *http.Request) error {
	id, err := txIDParam(r)
	if err != nil {
		return err
	}
	info, err := s.b.TxStatus(id)
	if err != nil {
		return err
	}
	n := info.Messages
	out := api.TxStatus{ID: id, State: string(info.State), Messages: &n, CreatedAt: formatTimestamp(info.Created)}
	if info.State == broker.TxCommitted {
		out.Offsets = positionsJSON(info.Offsets)
	}
	return writeJSON(w, http.StatusOK, out)
}

// positionsJSON converts commit positions; never nil, so that "offsets" is always an array.
func positionsJSON(pos []broker.TopicPosition) []api.TopicPosition {
	out := make([]api.TopicPosition, len(pos))
	for i, p := range pos {
		out[i] = api.TopicPosition{Topic: p.Topic, Partition: p.Partition, Offset: p.Offset}
	}
	return out
}

// Labels of imago_transactions_total.
const (
	kindLocal = "local"
	kindXA    = "xa"

	outcomeCommitted    = "committed"
	outcomeRolledBack   = "rolled_back"
	outcomeTimedOut     = "timed_out"
	outcomeReadOnly     = "read_only" // XA prepare voted rdonly: nothing to commit
	outcomeHeurCommit   = "heuristic_commit"
	outcomeHeurRollback = "heuristic_rollback"
	outcomeFailed       = "failed" // local commit not accepted by the log (rolled back)
)

// newTxOutcomes builds imago_transactions_total with every known series at zero, so that
// dashboards and rate() see them before the first event.
func newTxOutcomes() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imago_transactions_total",
		Help: "Local transactions (kind=local) and XA branches (kind=xa) ended through the gateway, by outcome. " +
			"Transactions rolled back by their timeout count when a client's verb learns of it.",
	}, []string{"kind", "outcome"})
	for _, o := range []string{outcomeCommitted, outcomeRolledBack, outcomeTimedOut, outcomeFailed} {
		c.WithLabelValues(kindLocal, o)
	}
	for _, o := range []string{outcomeCommitted, outcomeRolledBack, outcomeTimedOut, outcomeReadOnly, outcomeHeurCommit, outcomeHeurRollback} {
		c.WithLabelValues(kindXA, o)
	}
	return c
}

// txEnded counts one transaction or branch outcome.
func (m *Metrics) txEnded(kind, outcome string) {
	if m == nil {
		return
	}
	m.txOutcomes.WithLabelValues(kind, outcome).Inc()
}
