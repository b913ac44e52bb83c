package javaharness_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestJavaXAFaults runs clients/java/testdata/faults/FaultInjection: how ImagoXAResource maps
// answers a real broker cannot be made to give on demand (a 500 from a handler panic or a
// proxy, a 401 after a token rotation, a follower's 307 to the leader, a redirect loop, a 200
// whose body is cut off, a 200 to prepare without a vote it knows), served by a fake broker inside the Java program (fault injection),
// and the transaction timeout limits against the real Imago started here.
func TestJavaXAFaults(t *testing.T) {
	java, javac := javaTools(t)
	classes := compileJava(t, javac, "", "src")
	faults := compileJava(t, javac, classes, "testdata/faults")
	srv := startImago(t)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := javaRun(t, ctx, srv, java,
		"-cp", faults+string(os.PathListSeparator)+classes, "FaultInjection", "--imago", srv.url())
	report(t, "FaultInjection", out)
	if err != nil {
		t.Fatalf("FaultInjection failed (%v); the FAIL lines above say which case", err)
	}
	if !strings.Contains(out, "faults: PASS") {
		t.Fatalf("FaultInjection exited 0 without its PASS line")
	}
}
