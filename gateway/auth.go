package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"path"
	"strings"

	"github.com/go-chi/chi/v5"
)

// right is what a route asks of the caller's token.
type right int

const (
	rightNone     right = iota // open: no token needed (/healthz, /readyz, /metrics, /openapi.yaml)
	rightAny                   // any valid token (listing topics, /v1/stats)
	rightProduce               // a produce pattern matching {topic}
	rightConsume               // a consume pattern matching {topic}
	rightDescribe              // a produce or consume pattern matching {topic}, or admin
	rightAdmin                 // the admin flag (creating topics)
	rightProducer              // at least one produce pattern (transactions, XA verbs)
)

func (r right) String() string {
	switch r {
	case rightNone:
		return "none"
	case rightAny:
		return "any valid token"
	case rightProduce:
		return "produce"
	case rightConsume:
		return "consume"
	case rightDescribe:
		return "produce, consume or admin"
	case rightAdmin:
		return "admin"
	case rightProducer:
		return "produce (on any topic)"
	}
	return "unknown"
}

// authToken is a configured token, kept as its SHA-256 so that lookups compare fixed-size
// digests in constant time and the secret is not held in plain form.
type authToken struct {
	digest  [sha256.Size]byte
	name    string
	produce []string
	consume []string
	admin   bool
}

// authenticator checks bearer tokens; nil means auth is off.
type authenticator struct {
	tokens []authToken
}

func newAuthenticator(tokens []Token) (*authenticator, error) {
	if len(tokens) == 0 {
		return nil, nil
	}
	a := &authenticator{}
	names := map[string]bool{}
	digests := map[[sha256.Size]byte]bool{}
	for i, t := range tokens {
		name := t.Name
		if name == "" {
			name = fmt.Sprintf("#%d", i)
		}
		if t.Token == "" {
			return nil, fmt.Errorf("auth token %s: the token is empty", name)
		}
		if names[name] {
			return nil, fmt.Errorf("auth token %s: the name appears twice", name)
		}
		names[name] = true
		d := sha256.Sum256([]byte(t.Token))
		if digests[d] {
			return nil, fmt.Errorf("auth token %s: the same secret is configured twice", name)
		}
		digests[d] = true
		for _, p := range append(append([]string(nil), t.Produce...), t.Consume...) {
			if _, err := path.Match(p, ""); err != nil {
				return nil, fmt.Errorf("auth token %s: topic pattern %q: %w", name, p, err)
			}
		}
		a.tokens = append(a.tokens, authToken{digest: d, name: name,
			produce: append([]string(nil), t.Produce...), consume: append([]string(nil), t.Consume...), admin: t.Admin})
	}
	return a, nil
}

// lookup finds the token presented in an Authorization header. Every configured token is
// compared, in constant time, so timing tells nothing about which one (if any) matched.
func (a *authenticator) lookup(header string) *authToken {
	const prefix = "bearer "
	if len(header) <= len(prefix) || !strings.EqualFold(header[:len(prefix)], prefix) {
		return nil
	}
	d := sha256.Sum256([]byte(strings.TrimSpace(header[len(prefix):])))
	var found *authToken
	for i := range a.tokens {
		if subtle.ConstantTimeCompare(d[:], a.tokens[i].digest[:]) == 1 {
			found = &a.tokens[i]
		}
	}
	return found
}

func matchAny(patterns []string, topic string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, topic); ok {
			return true
		}
	}
	return false
}

// allows reports whether t holds right need on topic.
func (t *authToken) allows(need right, topic string) bool {
	switch need {
	case rightNone, rightAny:
		return true
	case rightProduce:
		return matchAny(t.produce, topic)
	case rightConsume:
		return matchAny(t.consume, topic)
	case rightDescribe:
		return t.admin || matchAny(t.produce, topic) || matchAny(t.consume, topic)
	case rightAdmin:
		return t.admin
	case rightProducer:
		return len(t.produce) > 0
	}
	return false
}

// authorize checks the request's token against the route's right: 401 unauthorized for a
// missing or unknown token, 403 forbidden for a token without the right.
func (s *Server) authorize(r *http.Request, need right) error {
	if s.auth == nil || need == rightNone {
		return nil
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return newError(http.StatusUnauthorized, "unauthorized", "this endpoint needs a token: send the header Authorization: Bearer <token>")
	}
	t := s.auth.lookup(h)
	if t == nil {
		return newError(http.StatusUnauthorized, "unauthorized", "the bearer token is not valid; check the token configured for your service")
	}
	topic := chi.URLParam(r, "topic")
	if !t.allows(need, topic) {
		if topic != "" {
			return newError(http.StatusForbidden, "forbidden", "token %q lacks the %s right on topic %q; ask an operator to extend its patterns", t.name, need, topic)
		}
		return newError(http.StatusForbidden, "forbidden", "token %q lacks the %s right; ask an operator for an admin token", t.name, need)
	}
	return nil
}
