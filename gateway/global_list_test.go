package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/imagomq/imago/xa"
)

// globalList is the list answer as a client reads it.
type globalList struct {
	Transactions []struct {
		ID         string `json:"id"`
		Status     string `json:"status"`
		ResolvedBy string `json:"resolved_by"`
	} `json:"transactions"`
	Counts    map[string]int `json:"counts"`
	Total     *int           `json:"total"`
	Truncated *bool          `json:"truncated"`
}

func (l globalList) ids() []string {
	var out []string
	for _, t := range l.Transactions {
		out = append(out, t.ID)
	}
	return out
}

// TestGlobalTxListNewestAndCounts: with more transactions retained than the limit, counts are
// over every retained one (whatever status and limit select), total and truncated say the
// list was cut, order=newest returns the newest, and order and resolved are checked.
func TestGlobalTxListNewestAndCounts(t *testing.T) {
	dir := t.TempDir()
	b := openBroker(t, dir)
	c := openCoordinator(t, dir, xa.Broker("broker", b))
	ts := serve(t, b, Options{Coordinator: c})
	ts.createTopic("gl.list", 1)
	const n = 12
	var ids []string // oldest first: each POST answers before the next begins
	for i := range n {
		id := fmt.Sprintf("l-%02d", i)
		ts.must(http.StatusOK, "POST", "/v1/global-transactions", `{"id": "`+id+`", "messages": [{"topic": "gl.list", "value": `+fmt.Sprint(i)+`}]}`)
		ids = append(ids, id)
	}
	list := func(q string) globalList {
		t.Helper()
		var l globalList
		r := ts.must(http.StatusOK, "GET", "/v1/global-transactions?"+q, "")
		if err := json.Unmarshal(r.body, &l); err != nil {
			t.Fatalf("?%s: %v: %s", q, err, r.body)
		}
		return l
	}
	reverse := func(s []string) []string {
		out := make([]string, len(s))
		for i, v := range s {
			out[len(s)-1-i] = v
		}
		return out
	}
	all := map[string]int{"active": 0, "preparing": 0, "committing": 0, "committed": n, "rolling_back": 0, "rolled_back": 0, "in_doubt": 0}
	for _, c := range []struct {
		query     string
		want      []string
		total     int
		truncated bool
	}{
		{"limit=5", ids[:5], n, true},
		{"order=oldest&limit=5", ids[:5], n, true},
		{"order=newest&limit=5", reverse(ids)[:5], n, true},
		{"order=newest", reverse(ids), n, false}, // the default limit, 100
		{"order=newest&limit=12", reverse(ids), n, false},
		{"status=committed&order=newest&limit=1", ids[n-1:], n, true},
		{"status=in_doubt&limit=3", nil, 0, false},
		{"resolved=true&order=newest&limit=20", nil, 0, false},
		{"resolved=false&order=newest&limit=2", reverse(ids)[:2], n, true},
	} {
		l := list(c.query)
		if fmt.Sprint(l.ids()) != fmt.Sprint(c.want) {
			t.Errorf("?%s: %v, want %v", c.query, l.ids(), c.want)
		}
		if fmt.Sprint(l.Counts) != fmt.Sprint(all) {
			t.Errorf("?%s: counts %v, want %v (every retained transaction)", c.query, l.Counts, all)
		}
		if l.Total == nil || *l.Total != c.total || l.Truncated == nil || *l.Truncated != c.truncated {
			t.Errorf("?%s: total %v truncated %v, want %d %v", c.query, l.Total, l.Truncated, c.total, c.truncated)
		}
	}
	for _, q := range []string{"order=latest", "order=NEWEST", "order=newest,oldest", "resolved=yes", "resolved=1", "resolved=TRUE"} {
		r := ts.do("GET", "/v1/global-transactions?"+q, "")
		if r.status != 400 {
			t.Errorf("?%s: %d, want 400 invalid_parameter", q, r.status)
		} else if eb := errorBody(t, r); eb.Error.Code != "invalid_parameter" {
			t.Errorf("?%s: %s, want invalid_parameter", q, r.body)
		}
	}
}
