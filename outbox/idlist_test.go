package outbox

import (
	"strings"
	"testing"
)

// A batch's id list is padded to a power of two with its last id, so that a few prepared
// statements serve every size, and never binds more parameters than MySQL allows.
func TestIDListPadsToAPowerOfTwoWithinMySQLsParameters(t *testing.T) {
	for _, tt := range []struct{ ids, want int }{
		{1, 1}, {2, 2}, {3, 4}, {21, 32}, {1000, 1024}, {32768, 32768}, {32769, 32769}, {MaxMySQLBatchSize, MaxMySQLBatchSize},
	} {
		ids := make([]int64, tt.ids)
		for i := range ids {
			ids[i] = int64(100 + i)
		}
		in, args := idList(ids)
		if len(args) != tt.want || strings.Count(in, "?") != tt.want {
			t.Fatalf("%d ids: %d arguments and %d placeholders, want %d", tt.ids, len(args), strings.Count(in, "?"), tt.want)
		}
		for i, a := range args {
			want := ids[min(i, len(ids)-1)]
			if a.(int64) != want {
				t.Fatalf("%d ids: argument %d is %v, want %d (the ids, then the last one repeated)", tt.ids, i, a, want)
			}
		}
	}
}
