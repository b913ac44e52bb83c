package settlement

// TestSettlementExample runs the README's commands: the two .sql files (into databases of
// the test's own), imago serve with imago.yaml (the DSNs overridden by environment variables),
// the consumer, and transfers.sh 10. It checks what the README says they print and that the
// money moved: ten 200s, ten settlement lines, wallets down and the ledger up by the same sum.

import (
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/examples/internal/exampletest"
)

func TestSettlementExample(t *testing.T) {
	my, pg := exampletest.MySQL(t), exampletest.Postgres(t)
	exampletest.ExecFile(t, "mysql", my, "mysql.sql")
	exampletest.ExecFile(t, "pgx", pg, "postgres.sql")
	imago := exampletest.Build(t, "./cmd/imago")
	consumer := exampletest.Build(t, "./examples/settlement/consumer")
	cfg, _ := filepath.Abs("imago.yaml")
	url := exampletest.Serve(t, imago, cfg, "IMAGO_RESOURCES_WALLET_DSN="+my, "IMAGO_RESOURCES_LEDGER_DSN="+pg)

	out := exampletest.Run(t, ".", []string{"IMAGO_URL=" + url}, "sh", "transfers.sh", "10")
	if n := strings.Count(out, ": HTTP 200 "); n != 10 {
		t.Fatalf("transfers.sh: %d answers 200, want 10:\n%s", n, out)
	}
	if !strings.Contains(out, `"status":"committed"`) {
		t.Errorf("transfers.sh does not print the committed outcome:\n%s", out)
	}
	cons := exampletest.Start(t, ".", nil, consumer, "-server", url)
	lines := cons.WaitLines(t, `"transfer":"settle-`, 10, 30*time.Second)
	for _, l := range lines {
		if !strings.Contains(l, " key=") || !strings.Contains(l, "@") {
			t.Errorf("consumer line not as the README shows: %q", l)
		}
	}
	wallets := exampletest.Query(t, "mysql", my, "SELECT SUM(balance) FROM wallets")
	ledger := exampletest.Query(t, "pgx", pg, "SELECT SUM(balance) FROM ledger")
	if wallets[0] != "245000" || ledger[0] != "55000" {
		t.Errorf("wallets %v, ledger %v: want 245000 and 55000 (1000+...+10000 moved)", wallets, ledger)
	}
	t.Logf("transfers.sh printed:\n%s\nthe consumer printed:\n%s", firstLines(out, 2), firstLines(cons.Output(), 2))
}

// TestSettlementTransfersRetryLostAnswer runs transfers.sh through a proxy that loses the
// answer to the first transfer after the server committed it. The script must send that
// transfer again with the same id (answered as a duplicate) and go on: every transfer moved
// once, none twice, none left unknown. Then the whole run again with the same RUN, as the
// script says to do after an unknown outcome: every transfer answers duplicate, no money moves.
func TestSettlementTransfersRetryLostAnswer(t *testing.T) {
	my, pg := exampletest.MySQL(t), exampletest.Postgres(t)
	exampletest.ExecFile(t, "mysql", my, "mysql.sql")
	exampletest.ExecFile(t, "pgx", pg, "postgres.sql")
	imago := exampletest.Build(t, "./cmd/imago")
	cfg, _ := filepath.Abs("imago.yaml")
	url := exampletest.Serve(t, imago, cfg, "IMAGO_RESOURCES_WALLET_DSN="+my, "IMAGO_RESOURCES_LEDGER_DSN="+pg)
	var cuts atomic.Int32
	proxy := exampletest.CutAnswers(t, url, func(r *http.Request) bool {
		return r.Method == http.MethodPost && r.URL.Path == "/v1/global-transactions" && cuts.Add(1) == 1
	})
	balances := func() (string, string) {
		t.Helper()
		return exampletest.Query(t, "mysql", my, "SELECT SUM(balance) FROM wallets")[0],
			exampletest.Query(t, "pgx", pg, "SELECT SUM(balance) FROM ledger")[0]
	}

	out := exampletest.Run(t, ".", []string{"IMAGO_URL=" + proxy, "RUN=lost"}, "sh", "transfers.sh", "3")
	if n := strings.Count(out, ": HTTP 200 "); n != 3 {
		t.Fatalf("transfers.sh: %d answers 200, want 3:\n%s", n, out)
	}
	if !strings.Contains(out, "settle-lost-1 bob -> shop-2 1000: HTTP 200 ") || !strings.Contains(out, `"duplicate":true`) {
		t.Errorf("the transfer whose answer was lost was not sent again with its id:\n%s", out)
	}
	if w, l := balances(); w != "294000" || l != "6000" {
		t.Errorf("wallets %s, ledger %s: want 294000 and 6000 (1000+2000+3000 moved once)\n%s", w, l, out)
	}

	again := exampletest.Run(t, ".", []string{"IMAGO_URL=" + url, "RUN=lost"}, "sh", "transfers.sh", "3")
	if n := strings.Count(again, `"duplicate":true`); n != 3 {
		t.Errorf("the same RUN again: %d duplicates, want 3:\n%s", n, again)
	}
	if w, l := balances(); w != "294000" || l != "6000" {
		t.Errorf("after the same RUN again: wallets %s, ledger %s: want 294000 and 6000\n%s", w, l, again)
	}
}

func firstLines(s string, n int) string {
	l := strings.SplitN(s, "\n", n+1)
	return strings.Join(l[:min(n, len(l))], "\n")
}
