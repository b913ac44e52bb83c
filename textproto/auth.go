package textproto

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"path"
)

// authToken is a configured token kept as its SHA-256, compared in constant time; the secret
// itself is not kept.
type authToken struct {
	digest  [sha256.Size]byte
	name    string
	produce []string
	consume []string
}

// authenticator checks auth tokens; nil means auth is off.
type authenticator struct{ tokens []authToken }

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
			produce: append([]string(nil), t.Produce...), consume: append([]string(nil), t.Consume...)})
	}
	return a, nil
}

// lookup compares the secret with every token in constant time.
func (a *authenticator) lookup(secret string) *authToken {
	d := sha256.Sum256([]byte(secret))
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

// The rights a command needs on its topic.
type right uint8

const (
	rightAny right = iota
	rightProduce
	rightConsume
)

func (r right) String() string {
	switch r {
	case rightProduce:
		return "produce"
	case rightConsume:
		return "consume"
	}
	return "any"
}

// allows reports whether the token (nil: auth is off) holds need on topic.
func (t *authToken) allows(need right, topic string) bool {
	switch {
	case t == nil || need == rightAny:
		return true
	case need == rightProduce:
		return matchAny(t.produce, topic)
	case need == rightConsume:
		return matchAny(t.consume, topic)
	}
	return false
}
