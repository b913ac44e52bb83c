package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/xa"
)

// This file decodes the bodies of the global transactions endpoints. They are not a hot path
// (each call costs a two-phase commit over databases), so the envelope is decoded with
// encoding/json; the messages go through the produce parser (tx_decode.go), so a message of a
// global transaction follows exactly the rules of produce plus a required "topic".

const (
	maxGlobalSteps  = 64
	globalTxExample = `{"id": "t-1", "steps": [{"resource": "wallet", "operation": "debit", "params": {"account": "A", "amount": 100}}], "messages": [{"topic": "settlement.transfers", "value": {...}}]}`
)

// globalRequest is a decoded POST /v1/global-transactions body.
type globalRequest struct {
	id        string
	timeoutMS int64
	steps     []globalStep
	msgs      []broker.TxMessage
}

// object decodes raw as a JSON object into its fields, refusing names outside allowed and
// names given twice (invalid_field), as the produce and transaction decoders do.
func object(raw []byte, field string, allowed []string, example string) (map[string]json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		if field == "" {
			return nil, fieldError("body", "must be a JSON object such as %s", example)
		}
		return nil, fieldError(field, "must be an object such as %s", example)
	}
	path := func(k string) string {
		if field == "" {
			return k
		}
		return field + "." + k
	}
	m, err := rawMembers(raw, func(k string) error { return fieldError(path(k), "appears twice") })
	if err != nil {
		return nil, err
	}
	known := func(k string) bool {
		for _, a := range allowed {
			if a == k {
				return true
			}
		}
		return false
	}
	unknown := false
	for k := range m {
		unknown = unknown || !known(k)
	}
	if !unknown {
		return m, nil
	}
	// The first unknown name in sorted order, so that the answer does not depend on map order.
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if !known(k) {
			return nil, fieldError(path(k), "is not a known field; send %s", example)
		}
	}
	return m, nil
}

// rawMembers walks the JSON object raw (its '{' first) with the produce parser's members and
// returns each member's value as raw JSON text, by name; a name given a second time answers
// twice(name). The caller has checked raw with json.Valid.
func rawMembers(raw []byte, twice func(name string) error) (map[string]json.RawMessage, error) {
	m := map[string]json.RawMessage{}
	p := parser{b: raw}
	err := p.members(func(name []byte) error {
		if _, ok := m[string(name)]; ok {
			return twice(string(name))
		}
		start := p.i
		if err := p.skip(0, new(bool)); err != nil {
			return err
		}
		m[string(name)] = raw[start:p.i:p.i]
		return nil
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// rawElements splits the JSON array raw (its '[' first; the caller has checked raw with
// json.Valid) into its elements' raw JSON text. Nesting is checked inside the elements' members
// (rawMembers), as before.
func rawElements(raw []byte) ([]json.RawMessage, error) {
	p := parser{b: raw, i: 1}
	p.ws()
	if p.peek() == ']' {
		return nil, nil
	}
	var list []json.RawMessage
	for {
		p.ws()
		start := p.i
		if err := p.skip(math.MinInt32, new(bool)); err != nil {
			return nil, err
		}
		list = append(list, raw[start:p.i:p.i])
		c, err := p.next(",]", "',' or ']'")
		if err != nil {
			return nil, err
		}
		if c == ']' {
			return list, nil
		}
	}
}

// stringField decodes a JSON string field.
func stringField(raw json.RawMessage, field string) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '"' {
		return "", fieldError(field, "must be a string")
	}
	if len(raw) >= 2 && raw[len(raw)-1] == '"' {
		if in := raw[1 : len(raw)-1]; bytes.IndexByte(in, '\\') < 0 && utf8.Valid(in) {
			// No escape (raw is valid JSON, so no control character either): the text itself.
			return string(in), nil
		}
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fieldError(field, "must be a string")
	}
	return s, nil
}

// decodeGlobalRequest decodes and checks a global transaction body: every step must name a
// configured operation with well-typed parameters, and there must be something to do.
func decodeGlobalRequest(body []byte, ops *xa.Operations, driverOf func(string) (string, error)) (globalRequest, error) {
	var out globalRequest
	if len(bytes.TrimSpace(body)) == 0 {
		return out, newError(http.StatusBadRequest, api.CodeInvalidJSON, "request body is empty; send %s", globalTxExample)
	}
	if !utf8.Valid(body) {
		return out, newError(http.StatusBadRequest, api.CodeInvalidJSON, "request body is not valid UTF-8; JSON text must be UTF-8")
	}
	if !json.Valid(body) {
		return out, jsonSyntaxError(body)
	}
	m, err := object(body, "", []string{"id", "timeout_ms", "steps", "messages"}, globalTxExample)
	if err != nil {
		return out, err
	}
	if raw, ok := m["id"]; ok {
		if out.id, err = stringField(raw, "id"); err != nil {
			return out, err
		}
		if out.id == "" {
			return out, fieldError("id", "is empty; leave it out or send 1 to 128 characters")
		}
	}
	if raw, ok := m["timeout_ms"]; ok {
		d := txDecoder{parser: parser{b: bytes.TrimSpace(raw)}, spec: txSpec{}}
		n, err := d.integer("timeout_ms", 0, maxTimeoutMS)
		if err == nil && d.i != len(d.b) {
			err = fieldError("timeout_ms", "must be an integer from 0 to %d", maxTimeoutMS)
		}
		if err != nil {
			return out, err
		}
		out.timeoutMS = n
	}
	if raw, ok := m["steps"]; ok {
		if out.steps, err = decodeSteps(raw, ops, driverOf); err != nil {
			return out, err
		}
	}
	if raw, ok := m["messages"]; ok {
		wrapped := make([]byte, 0, len(raw)+14)
		wrapped = append(append(append(wrapped, `{"messages":`...), raw...), '}')
		tb, err := decodeTxBody(wrapped, txSpec{allowed: tfMessages, required: tfMessages, example: globalTxExample})
		if err != nil {
			return out, err
		}
		out.msgs = tb.msgs
	}
	if len(out.steps) == 0 && len(out.msgs) == 0 {
		return out, fieldError("steps", "and messages are both empty: a global transaction needs at least one step or message; send %s", globalTxExample)
	}
	return out, nil
}

func decodeSteps(raw json.RawMessage, ops *xa.Operations, driverOf func(string) (string, error)) ([]globalStep, error) {
	raw = bytes.TrimSpace(raw)
	const stepExample = `{"resource": "wallet", "operation": "debit", "params": {"account": "A", "amount": 100}}`
	if len(raw) == 0 || raw[0] != '[' {
		return nil, fieldError("steps", "must be an array of steps such as %s", stepExample)
	}
	list, err := rawElements(raw)
	if err != nil {
		return nil, err
	}
	if len(list) > maxGlobalSteps {
		return nil, fieldError("steps", "holds %d steps; at most %d per global transaction", len(list), maxGlobalSteps)
	}
	steps := make([]globalStep, 0, len(list))
	for i, sraw := range list {
		field := "steps[" + strconv.Itoa(i) + "]"
		sm, err := object(sraw, field, []string{"resource", "operation", "params"}, stepExample)
		if err != nil {
			return nil, err
		}
		rraw, ok := sm["resource"]
		if !ok {
			return nil, fieldError(field+".resource", "is required: send %s", stepExample)
		}
		resource, err := stringField(rraw, field+".resource")
		if err != nil {
			return nil, err
		}
		oraw, ok := sm["operation"]
		if !ok {
			return nil, fieldError(field+".operation", "is required: send %s", stepExample)
		}
		opName, err := stringField(oraw, field+".operation")
		if err != nil {
			return nil, err
		}
		op, ok := ops.Lookup(resource, opName)
		if !ok {
			if _, derr := driverOf(resource); derr != nil {
				return nil, &apiError{status: http.StatusBadRequest, code: api.CodeUnknownResource, field: field + ".resource",
					message: fmt.Sprintf("resource %q is not configured; resources are configured under resources", resource)}
			}
			return nil, unknownOperation(field, resource, opName, ops)
		}
		params := map[string]json.RawMessage{}
		if praw, ok := sm["params"]; ok {
			praw = bytes.TrimSpace(praw)
			if len(praw) == 0 || praw[0] != '{' {
				return nil, fieldError(field+".params", "must be an object of parameter values such as {\"account\": \"A\", \"amount\": 100}")
			}
			if params, err = rawMembers(praw, func(name string) error {
				return paramError(field+".params."+name, "appears twice")
			}); err != nil {
				return nil, err
			}
		}
		args, err := op.Bind(params)
		var pe *xa.ParamError
		if errors.As(err, &pe) {
			return nil, paramError(field+".params."+pe.Param, "%s", pe.Reason)
		}
		if err != nil {
			return nil, err
		}
		steps = append(steps, globalStep{op: op, args: args})
	}
	return steps, nil
}

// unknownOperation is the 400 for a step naming an operation that is not configured.
func unknownOperation(field, resource, name string, ops *xa.Operations) *apiError {
	list := "none"
	if known := ops.Names(resource); len(known) > 0 {
		list = strings.Join(known, ", ")
	}
	return &apiError{status: http.StatusBadRequest, code: api.CodeUnknownOperation, field: field + ".operation",
		message: fmt.Sprintf("operation %q is not configured for resource %q (its operations: %s); configure it as operations.%s.%s", name, resource, list, resource, name)}
}

// resolveRequest is a decoded resolve body.
type resolveRequest struct {
	Decision string
	Operator string
}

func decodeResolveRequest(body []byte) (resolveRequest, error) {
	var out resolveRequest
	const example = `{"decision": "commit"}`
	if len(bytes.TrimSpace(body)) == 0 {
		return out, newError(http.StatusBadRequest, api.CodeInvalidJSON, "request body is empty; send %s", example)
	}
	if !json.Valid(body) {
		return out, jsonSyntaxError(body)
	}
	m, err := object(body, "", []string{"decision", "operator"}, example)
	if err != nil {
		return out, err
	}
	raw, ok := m["decision"]
	if !ok {
		return out, fieldError("decision", "is required: send %s", example)
	}
	if out.Decision, err = stringField(raw, "decision"); err != nil {
		return out, err
	}
	if out.Decision != "commit" && out.Decision != "rollback" {
		return out, fieldError("decision", "must be commit or rollback, not %q", out.Decision)
	}
	if raw, ok := m["operator"]; ok {
		if out.Operator, err = stringField(raw, "operator"); err != nil {
			return out, err
		}
		if len(out.Operator) > 128 {
			return out, fieldError("operator", "must be at most 128 bytes")
		}
	}
	return out, nil
}
