package mysqlpool

import (
	"crypto/sha256"
	"encoding/hex"
)

// maxLockName is the longest name GET_LOCK takes.
const maxLockName = 64

// LockName is the GET_LOCK name prefix+key, or, when that is longer than GET_LOCK's 64
// characters, prefix and the first 40 hex digits of key's SHA-256, which an operator computes
// with CONCAT(prefix, LEFT(SHA2(key, 256), 40)). GET_LOCK names are server-wide: key should
// name what the lock guards (its database, its source) so that locks of two databases of one
// server do not collide. prefix must leave room for the 40 digits.
func LockName(prefix, key string) string {
	if n := prefix + key; len(n) <= maxLockName {
		return n
	}
	h := sha256.Sum256([]byte(key))
	return prefix + hex.EncodeToString(h[:20])
}
