package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/internal/testenv"
)

// TestRestoredDataDirDoesNotSkip: the data directory is restored from a backup older than the
// offset store (PostgreSQL here, backed up apart), so a group's committed offset lies past the
// restored partition's end. New messages take the offsets of the lost ones, and a commit never
// moves an offset back: the group skipped them (its poll past the end continued at the end).
// At start the offset is moved back to the end, and the group gets every new message.
func TestRestoredDataDirDoesNotSkip(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "imago.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("offsets: {store: postgres, dsn: %q}\n", testenv.PostgresDSN(t))), 0o600); err != nil {
		t.Fatal(err)
	}
	data, backup := filepath.Join(dir, "data"), filepath.Join(dir, "backup")
	topic, group := uniqueName(t, "restore."), uniqueName(t, "restore-g-")
	ctx := context.Background()
	produce := func(srv *serverProc, values ...string) {
		t.Helper()
		var msgs []client.Message
		for _, v := range values {
			msgs = append(msgs, client.Message{Value: []byte(fmt.Sprintf("%q", v))})
		}
		if _, err := srv.client().Produce(ctx, topic, msgs, client.ProduceOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// consume joins the group, polls until it has want messages (or a poll comes back
	// empty), commits what it got and leaves; it returns the values with their offsets.
	consume := func(srv *serverProc, want int) []string {
		t.Helper()
		cl := srv.client()
		m, err := cl.JoinGroup(ctx, group, client.JoinGroupRequest{Topics: []string{topic}, From: "earliest"})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		var next int64 = -1
		for len(got) < want {
			res, err := cl.PollGroup(ctx, group, m.MemberID, client.PollOptions{Wait: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Messages) == 0 {
				break
			}
			for _, msg := range res.Messages {
				got = append(got, fmt.Sprintf("%d:%s", msg.Offset, msg.Value))
				next = msg.Offset + 1
			}
		}
		if next >= 0 {
			if err := cl.CommitGroup(ctx, group, m.MemberID, []client.GroupOffset{{Topic: topic, Partition: 0, Offset: next}}); err != nil {
				t.Fatal(err)
			}
		}
		if err := cl.LeaveGroup(ctx, group, m.MemberID); err != nil {
			t.Fatal(err)
		}
		return got
	}

	srv := startServer(t, data, "--config", cfg)
	if _, err := srv.client().CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	produce(srv, "a0", "a1", "a2")
	srv.stop()
	if out, err := exec.Command("cp", "-a", data, backup).CombinedOutput(); err != nil { // the backup: three messages
		t.Fatalf("back up the data directory: %v %s", err, out)
	}
	srv = startServer(t, data, "--config", cfg)
	produce(srv, "a3", "a4", "a5")
	if got := consume(srv, 6); len(got) != 6 {
		t.Fatalf("before the restore the group got %v, want 6 messages", got)
	}
	srv.stop()

	// The disk is lost; the backup comes back. The offset store still says 6.
	if err := os.RemoveAll(data); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(backup, data); err != nil {
		t.Fatal(err)
	}
	srv = startServer(t, data, "--config", cfg)
	produce(srv, "b3", "b4")
	got := consume(srv, 2)
	if want := []string{`3:"b3"`, `4:"b4"`}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after the restore the group got %v, want %v: the messages written after the restore", got, want)
	}
}
