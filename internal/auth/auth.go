// Package auth holds the bearer tokens that both doors (HTTP and the text protocol) check:
// each token's name and rights (produce and consume topic patterns, admin). Secrets are kept
// only as SHA-256 digests, and a lookup compares the presented secret with every configured
// token in constant time, so timing tells nothing about which one (if any) matched.
package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"path"
)

// Token is one configured token. Produce and Consume hold topic patterns in path.Match syntax
// ("settlement.*"); Admin allows topic creation and the admin endpoints.
type Token struct {
	Name    string
	Token   string
	Produce []string
	Consume []string
	Admin   bool
}

// Identity is a configured token without its secret: what a request authenticated as.
type Identity struct {
	// Name names the token in logs and errors (never the secret).
	Name    string
	Admin   bool
	produce []string
	consume []string
	digest  [sha256.Size]byte
}

// CanProduce reports whether a produce pattern matches topic.
func (id *Identity) CanProduce(topic string) bool { return matchAny(id.produce, topic) }

// CanConsume reports whether a consume pattern matches topic.
func (id *Identity) CanConsume(topic string) bool { return matchAny(id.consume, topic) }

// Producer reports whether the token may produce to any topic at all.
func (id *Identity) Producer() bool { return len(id.produce) > 0 }

// Consumer reports whether the token may consume from any topic at all.
func (id *Identity) Consumer() bool { return len(id.consume) > 0 }

// Set is the configured tokens; a nil *Set means auth is off.
type Set struct{ ids []Identity }

// NewSet checks tokens (non-empty secrets, unique names and secrets, valid patterns) and
// returns their set; no tokens gives a nil set.
func NewSet(tokens []Token) (*Set, error) {
	if len(tokens) == 0 {
		return nil, nil
	}
	s := &Set{}
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
		s.ids = append(s.ids, Identity{Name: name, Admin: t.Admin, digest: d,
			produce: append([]string(nil), t.Produce...), consume: append([]string(nil), t.Consume...)})
	}
	return s, nil
}

// Lookup returns the identity whose secret is secret, or nil.
func (s *Set) Lookup(secret string) *Identity {
	d := sha256.Sum256([]byte(secret))
	var found *Identity
	for i := range s.ids {
		if subtle.ConstantTimeCompare(d[:], s.ids[i].digest[:]) == 1 {
			found = &s.ids[i]
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
