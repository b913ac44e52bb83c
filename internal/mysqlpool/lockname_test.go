package mysqlpool

import (
	"strings"
	"testing"
)

// A lock name is readable while it fits GET_LOCK's 64 characters, and otherwise the prefix and
// 40 hex digits of the key's SHA-256: at most 64 characters, and distinct for distinct keys.
func TestLockName(t *testing.T) {
	if got := LockName("imago.outbox/", "db/orders"); got != "imago.outbox/db/orders" {
		t.Errorf("short name: %q", got)
	}
	long := strings.Repeat("d", 60)
	a, b := LockName("imago.outbox/", long+"/a"), LockName("imago.outbox/", long+"/b")
	if len(a) > 64 || len(b) > 64 || a == b || !strings.HasPrefix(a, "imago.outbox/") {
		t.Errorf("long names: %q, %q", a, b)
	}
	if len(a) != len("imago.outbox/")+40 {
		t.Errorf("hashed name %q: want the prefix and 40 hex digits", a)
	}
}
