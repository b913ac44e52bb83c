package gateway

import (
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/internal/auth"
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

// authToken is the identity a request authenticated as (internal/auth).
type authToken = auth.Identity

// authenticator checks bearer tokens; nil means auth is off.
type authenticator struct{ set *auth.Set }

func newAuthenticator(tokens []Token) (*authenticator, error) {
	set, err := auth.NewSet(tokens)
	if err != nil || set == nil {
		return nil, err
	}
	return &authenticator{set: set}, nil
}

// lookup finds the token presented in an Authorization header ("Bearer <token>").
func (a *authenticator) lookup(header string) *authToken {
	const prefix = "bearer "
	if len(header) <= len(prefix) || !strings.EqualFold(header[:len(prefix)], prefix) {
		return nil
	}
	return a.set.Lookup(strings.TrimSpace(header[len(prefix):]))
}

// allows reports whether t holds right need on topic.
func allows(t *authToken, need right, topic string) bool {
	switch need {
	case rightNone, rightAny:
		return true
	case rightProduce:
		return t.CanProduce(topic)
	case rightConsume:
		return t.CanConsume(topic)
	case rightDescribe:
		return t.Admin || t.CanProduce(topic) || t.CanConsume(topic)
	case rightAdmin:
		return t.Admin
	case rightProducer:
		return t.Producer()
	}
	return false
}

// authorize checks the request's token against the route's right: 401 unauthorized for a
// missing or unknown token, 403 forbidden for a token without the right. With auth off it
// refuses requests from other sites' pages instead (refuseCrossSite). It returns the
// token (nil when auth is off or the route is open), which wrap keeps for callerToken.
func (s *Server) authorize(r *http.Request, need right) (*authToken, error) {
	if s.auth == nil {
		return nil, refuseCrossSite(r) // crosssite.go
	}
	if need == rightNone {
		return nil, nil
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, newError(http.StatusUnauthorized, api.CodeUnauthorized, "this endpoint needs a token: send the header Authorization: Bearer <token>")
	}
	t := s.auth.lookup(h)
	if t == nil {
		return nil, errInvalidToken()
	}
	topic := chi.URLParam(r, "topic")
	if !allows(t, need, topic) {
		if topic != "" {
			return nil, newError(http.StatusForbidden, api.CodeForbidden, "token %q lacks the %s right on topic %q; ask an operator to extend its patterns", t.Name, need, topic)
		}
		return nil, newError(http.StatusForbidden, api.CodeForbidden, "token %q lacks the %s right; ask an operator for an admin token", t.Name, need)
	}
	return t, nil
}

// errInvalidToken is the 401 for a token that matches none configured.
func errInvalidToken() *apiError {
	return newError(http.StatusUnauthorized, api.CodeUnauthorized, "the bearer token is not valid; check the token configured for your service")
}

// callerToken is the token the request authenticated with, as wrap kept it from authorize
// (nil when auth is off), so that a handler checking rights on the topics of its body does
// not look the token up again.
func callerToken(w http.ResponseWriter) *authToken {
	if rw, ok := w.(*recorder); ok {
		return rw.token
	}
	return nil
}
