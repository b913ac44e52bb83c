// Package textproto is the MetaQ-style text protocol door over the same broker as the HTTP
// gateway (docs/protocol.md): a listener, a line parser and command handlers that an
// operator can drive with nc, the way MetaQ's and memcached's ports are driven.
//
// A request is a line of space-separated words ending in "\r\n" (a bare "\n" is accepted),
// optionally followed by a payload whose length the line gives; every request but quit
// carries a client-chosen integer, the opaque, as its last word, and the answer echoes it. An
// answer is a header line, "result <code> <length> <opaque>" or "value <length> <opaque>",
// then <length> bytes, then "\r\n" (not counted in <length>, as after a memcached data
// block, so that answers read well in a terminal). Empty request lines are ignored, so a
// payload typed into nc may be followed by Enter.
//
// # Connections
//
// Each connection has exactly two goroutines, owned by the Server and stopped by Close: a
// reader that parses and executes requests, and a writer that sends answers and flushes when
// it has nothing more queued. Requests are executed in order, and answers leave in request
// order; clients still match them by opaque. The reader collects the puts that a client has
// pipelined (those already received, for one topic, outside a transaction) into one
// broker.Produce call, so that a connection's pipelined puts, and those of every other
// connection, share one group commit: that is what makes the door fast with durable puts.
// Such a batch is appended atomically; when it fails for a reason that belongs to one
// message, each put of it is retried alone so that every put gets its own answer.
//
// # Put flags
//
// The flag word of put uses the bits of Imago's record attributes (docs/protocol.md):
// bit 0 (1): the payload starts with a key, as a big-endian u32 key length and the key bytes,
// and the rest is the value; bit 1 (2): the value is JSON text (checked; the HTTP door then
// returns it as "value" rather than "value_base64"). Other bits are reserved and refused.
//
// # Values
//
// The payload of a value answer is the messages of a get, each framed as described in
// docs/protocol.md; DecodeMessages parses it.
//
// # Auth
//
// With Options.Tokens set, the first request of a connection must be "auth <token> <opaque>";
// anything else gets "result 401" and the connection is closed, as does a connection that
// has not authenticated within Options.AuthTimeout of being accepted. Token is the same type as
// gateway.Token (both are internal/auth.Token); put needs a produce pattern matching
// the topic, get and offset a consume pattern, transaction (every verb, as over HTTP) some
// produce pattern, everything else any valid token.
package textproto
