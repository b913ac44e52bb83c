package gateway

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"

	"github.com/imagomq/imago/api"
)

// This file holds who sent a request, for the audit records of an operator's decisions (a
// global transaction's resolve, a heuristic decision on an XA branch). On a single node that
// is the connection's address. In a cluster such a request sent to a follower reaches the
// leader through the follower's proxy (cluster.go), so the connection's address there is the
// follower's. The follower therefore sends the client's address (Imago-Forwarded-For) signed
// with the forward secret every member shares (Options.ForwardSecret; Imago-Forwarded-Sig),
// over its own node id, the method and the request URI. The leader believes the address only
// when the signature checks out: an outside client that sends those headers itself cannot
// sign them, and is recorded by its own address. Without a secret nothing is signed, and a
// forwarded request is recorded by the follower's address, marked as such.

// forwardSig signs the client address a member forwarded a request for.
func forwardSig(secret []byte, node, client, method, uri string) string {
	m := hmac.New(sha256.New, secret)
	for _, part := range []string{"imago forwarded-for v1", node, client, method, uri} {
		m.Write([]byte(part))
		m.Write([]byte{0})
	}
	return hex.EncodeToString(m.Sum(nil))
}

// signForward sets (or, without a secret, removes) the forwarded-for headers of out, the
// request this member sends to the leader for a client at clientAddr. Whatever the client
// sent under those names is replaced.
func (s *Server) signForward(out *http.Request, node, clientAddr string) {
	if len(s.opts.ForwardSecret) == 0 {
		out.Header.Del(api.HeaderForwardedFor)
		out.Header.Del(api.HeaderForwardedSig)
		return
	}
	out.Header.Set(api.HeaderForwardedFor, clientAddr)
	out.Header.Set(api.HeaderForwardedSig, forwardSig(s.opts.ForwardSecret, node, clientAddr, out.Method, out.URL.RequestURI()))
}

// clientAddr is the address of the client that sent r, for audit records: the connection's
// address, or for a request a member forwarded with a valid signature, the client's address
// it vouched for and the member ("127.0.0.2:41234 via node 2"). A request that says it was
// forwarded but carries no valid signature is recorded by the connection's address, marked
// unverified.
func (s *Server) clientAddr(r *http.Request) string {
	node := r.Header.Get(api.HeaderForwardedBy)
	if node == "" {
		return r.RemoteAddr
	}
	client, sig := r.Header.Get(api.HeaderForwardedFor), r.Header.Get(api.HeaderForwardedSig)
	if _, err := strconv.ParseUint(node, 10, 64); err == nil && len(s.opts.ForwardSecret) > 0 && client != "" &&
		hmac.Equal([]byte(sig), []byte(forwardSig(s.opts.ForwardSecret, node, client, r.Method, r.RequestURI))) {
		return client + " via node " + node
	}
	return r.RemoteAddr + " (forwarded; client address unverified)"
}
