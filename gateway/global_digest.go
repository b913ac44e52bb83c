package gateway

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// globalDigest names the work of a global transaction request: its steps (resource,
// operation, bound values with their types) and messages (topic, partition, key, value and its
// kind, headers in order), not its timeout. A repeat of a client id with another digest is
// refused (xa.BeginOptions.Digest), rather than answered with the first request's outcome as if
// that were this request's. Every part is length-prefixed, so no two requests share a digest
// by how their parts split.
func globalDigest(req globalRequest) string {
	h := sha256.New()
	put := func(b []byte) {
		var n [binary.MaxVarintLen64]byte
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(b)))])
		h.Write(b)
	}
	putInt := func(v int64) {
		var n [binary.MaxVarintLen64]byte
		h.Write(n[:binary.PutVarint(n[:], v)])
	}
	putInt(int64(len(req.steps)))
	for _, st := range req.steps {
		put([]byte(st.op.Resource()))
		put([]byte(st.op.Name()))
		putInt(int64(len(st.args)))
		for _, a := range st.args {
			put([]byte(fmt.Sprintf("%T", a))) // so that 1 and "1" differ
			put([]byte(fmt.Sprintf("%v", a)))
		}
	}
	putInt(int64(len(req.msgs)))
	for _, m := range req.msgs {
		put([]byte(m.Topic))
		putInt(int64(m.Partition))
		if m.Key == nil {
			putInt(-1)
		} else {
			put(m.Key)
		}
		put(m.Value)
		if m.ValueJSON {
			putInt(1)
		} else {
			putInt(0)
		}
		putInt(int64(len(m.Headers)))
		for _, hd := range m.Headers {
			put([]byte(hd.Key))
			put([]byte(hd.Value))
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}
