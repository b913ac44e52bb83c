package textproto

import "github.com/imagomq/imago/internal/auth"

// authToken is the identity a connection authenticated as (internal/auth).
type authToken = auth.Identity

// The rights a command needs on its topic.
type right uint8

const (
	rightAny right = iota
	rightProduce
	rightConsume
	rightProducer // some produce pattern, whatever the topic: the transaction verbs, as over HTTP
)

func (r right) String() string {
	switch r {
	case rightProduce:
		return "produce"
	case rightConsume:
		return "consume"
	case rightProducer:
		return "produce (on any topic)"
	}
	return "any"
}

// allows reports whether the token (nil: auth is off) holds need on topic.
func allows(t *authToken, need right, topic string) bool {
	switch {
	case t == nil || need == rightAny:
		return true
	case need == rightProduce:
		return t.CanProduce(topic)
	case need == rightConsume:
		return t.CanConsume(topic)
	case need == rightProducer:
		return t.Producer()
	}
	return false
}
