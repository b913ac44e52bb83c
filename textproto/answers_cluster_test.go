package textproto

import (
	"fmt"
	"strings"
	"testing"

	"github.com/imagomq/imago/broker"
)

// On a cluster follower the broker refuses writes (ErrNotLeader), and a write whose leader
// lost leadership after proposing it is ErrOutcomeUnknown: both are 503 answers that say what
// to do, never an internal error.
func TestClusterErrorsAnswered(t *testing.T) {
	for err, want := range map[error]string{
		fmt.Errorf("%w", broker.ErrNotLeader):      "connect to the leader",
		fmt.Errorf("%w", broker.ErrOutcomeUnknown): "same idempotency key",
	} {
		f := failureFor(err)
		if f.code != codeUnavailable || !strings.Contains(f.text, want) {
			t.Errorf("%v: %d %q, want 503 saying %q", err, f.code, f.text, want)
		}
	}
}
