package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
)

// TestCorruptLogRefusesToStart: a byte flipped in a batch header in the middle of the log (a
// disk fault) makes `imago log verify` fail naming the place, and `imago serve` refuse to start
// with the same report, without cutting the valid batches after it.
func TestCorruptLogRefusesToStart(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	srv := startServer(t, dataDir)
	c := srv.client()
	ctx := context.Background()
	if _, err := c.CreateTopic(ctx, "t", client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, err := c.Produce(ctx, "t", []client.Message{{Value: []byte(`"v` + strconv.Itoa(i) + `"`)}}, client.ProduceOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	srv.stop()
	// A clean stop's checkpoint covers the batches, and start-up re-reads only the log after
	// the checkpoint; without one it replays the whole log (as after a crash before the first
	// checkpoint), so it meets the damage.
	if err := os.Remove(filepath.Join(dataDir, "checkpoint.json")); err != nil {
		t.Fatal(err)
	}

	seg := filepath.Join(dataDir, "log", "00000000000000000000.log")
	raw, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	var starts []int64 // batch positions: each batch starts with its length
	for at := int64(0); at < int64(len(raw)); at += int64(binary.BigEndian.Uint32(raw[at:])) {
		starts = append(starts, at)
	}
	if len(starts) != 5 {
		t.Fatalf("%d batches in the segment, want 5", len(starts))
	}
	bad := starts[1] // the second request's batch
	raw[bad+13] ^= 0x40
	if err := os.WriteFile(seg, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	where := []string{seg, "byte " + strconv.FormatInt(bad, 10), "header checksum mismatch", "3 valid batches follow"}

	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"log", "verify", "--data-dir", dataDir}, strings.NewReader(""), &stdout, &stderr)
	if code != exitFailure {
		t.Fatalf("log verify: exit %d, want %d; %s %s", code, exitFailure, stdout.String(), stderr.String())
	}
	for _, w := range where {
		if !strings.Contains(stderr.String(), w) {
			t.Errorf("log verify says %q; it should name %q", stderr.String(), w)
		}
	}

	cmd := imagoCmd("serve", "--data-dir", dataDir, "--http-addr", "127.0.0.1:0", "--protocol-addr", "127.0.0.1:0")
	cmd.WaitDelay = time.Second
	timer := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() }) // it must exit on its own
	out, err := cmd.CombinedOutput()
	timer.Stop()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
		t.Fatalf("serve on a corrupt log: %v, want a non-zero exit; output:\n%s", err, out)
	}
	for _, w := range where {
		if !strings.Contains(string(out), w) {
			t.Errorf("serve's refusal does not name %q:\n%s", w, out)
		}
	}
	if fi, err := os.Stat(seg); err != nil || fi.Size() != int64(len(raw)) {
		t.Fatalf("the refused start changed the segment: %v %v", fi, err)
	}

	// The operator's choice: drop the bad batch, keep the three after it at their offsets.
	stdout.Reset()
	stderr.Reset()
	code = run(ctx, []string{"log", "repair", "--data-dir", dataDir, "--drop-corrupt-batch", strconv.FormatInt(bad, 10)}, strings.NewReader(""), &stdout, &stderr)
	if code != 0 || !strings.Contains(stdout.String(), "dropped") {
		t.Fatalf("log repair: exit %d: %s %s", code, stdout.String(), stderr.String())
	}
	srv = startServer(t, dataDir)
	c = srv.client()
	res, err := c.Fetch(ctx, "t", 0, client.FetchOptions{Offset: 0, MaxMessages: 10})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range res.Messages {
		got = append(got, strconv.FormatInt(m.Offset, 10)+"="+string(m.Value))
	}
	if strings.Join(got, " ") != `0="v0" 2="v2" 3="v3" 4="v4"` {
		t.Fatalf("after the repair: %v", got)
	}
}
