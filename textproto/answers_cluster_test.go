package textproto

import (
	"fmt"
	"strings"
	"testing"

	"github.com/imagomq/imago/broker"
)

// On a cluster follower the broker refuses writes (ErrNotLeader), and a write whose leader
// lost leadership after proposing it is ErrOutcomeUnknown: both are 503 answers that say what
// to do, never an internal error. A put of unknown outcome may be stored: the answer must not
// send the client to retry "with the same idempotency key", which a put cannot carry (sent
// again, it is a second copy), but say that it may be stored and how to check.
func TestClusterErrorsAnswered(t *testing.T) {
	for err, want := range map[error][]string{
		fmt.Errorf("%w", broker.ErrNotLeader):      {"connect to the leader"},
		fmt.Errorf("%w", broker.ErrOutcomeUnknown): {"may have been stored", "may be stored twice", "get the partition"},
	} {
		f := failureFor(err)
		if f.code != codeUnavailable {
			t.Errorf("%v: %d %q, want 503", err, f.code, f.text)
		}
		for _, w := range want {
			if !strings.Contains(f.text, w) {
				t.Errorf("%v: %q, want it to say %q", err, f.text, w)
			}
		}
	}
	if f := failureFor(broker.ErrOutcomeUnknown); strings.Contains(f.text, "retry only with the same idempotency key") {
		t.Errorf("outcome unknown: %q tells a text-protocol client to retry with an idempotency key it cannot send", f.text)
	}
}
