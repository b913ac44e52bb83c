package main

import (
	"bufio"
	"context"
	"fmt"
	"time"

	"github.com/imagomq/imago/client"
)

// runGroupConsume is consume --group: join the group for topic, print what the polls return
// and commit the offsets of what was printed, then leave.
func runGroupConsume(ctx context.Context, a *app, f consumeFlags, topic string) error {
	if err := checkFormat(f.format); err != nil {
		return err
	}
	if f.mode != client.Clustered && f.mode != client.Broadcast {
		return usagef("--mode %q: want clustered or broadcast", f.mode)
	}
	req := client.JoinGroupRequest{Topics: []string{topic}, Mode: f.mode}
	if f.fromSet {
		if f.from != "earliest" && f.from != "latest" {
			return usagef("--from %q: with --group, want earliest or latest (a group starts at its committed offsets)", f.from)
		}
		req.From = f.from
	}
	c := a.client()
	m, err := c.JoinGroup(ctx, f.group, req)
	if err != nil {
		return fmt.Errorf("join group %s: %w", f.group, err)
	}
	defer func() {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := c.LeaveGroup(lctx, f.group, m.MemberID); err != nil && !client.IsStatus(err, 404) {
			fmt.Fprintf(a.stderr, "imago: leave group %s: %v (the server removes the member after its session timeout)\n", f.group, err)
		}
	}()

	out := bufio.NewWriterSize(a.stdout, 64<<10)
	defer out.Flush()
	var printed int64
	// pos is where this member is in each partition it printed from: every poll says so, and
	// the server reads again what an answer lost on the way carried. It names every partition
	// printed from (the loop ends when it stops printing an answer halfway), so the positions
	// are complete: a partition without one goes back to where the member started it.
	pos := map[client.Assignment]int64{}
	for {
		opts := client.PollOptions{MaxBytes: f.maxBytes, PositionsComplete: true}
		opts.MaxMessages, opts.Wait = f.readLimits(printed)
		for tp, off := range pos {
			opts.Positions = append(opts.Positions, client.GroupOffset{Topic: tp.Topic, Partition: tp.Partition, Offset: off})
		}
		res, err := c.PollGroup(ctx, f.group, m.MemberID, opts)
		if err != nil {
			if ctx.Err() != nil && f.follow {
				return nil
			}
			return fmt.Errorf("poll group %s: %w", f.group, err)
		}
		next := map[client.Assignment]int64{}
		var order []client.Assignment
		batch := 0
		for i := range res.Messages {
			msg := &res.Messages[i]
			if err := printMessage(out, msg, f.format); err != nil {
				return err
			}
			tp := client.Assignment{Topic: msg.Topic, Partition: msg.Partition}
			if _, ok := next[tp]; !ok {
				order = append(order, tp)
			}
			next[tp] = msg.Offset + 1
			pos[tp] = msg.Offset + 1
			printed++
			batch++
			if f.max > 0 && printed >= f.max {
				break
			}
		}
		if err := out.Flush(); err != nil {
			return err
		}
		if len(order) > 0 {
			offsets := make([]client.GroupOffset, len(order))
			for i, tp := range order {
				offsets[i] = client.GroupOffset{Topic: tp.Topic, Partition: tp.Partition, Offset: next[tp]}
			}
			// Commit even when interrupted: what was printed is done.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			err := c.CommitGroup(cctx, f.group, m.MemberID, offsets)
			cancel()
			if err != nil {
				return groupCommitError(f.group, batch, err)
			}
		}
		switch {
		case f.max > 0 && printed >= f.max:
			return nil
		case !f.follow && len(res.Messages) == 0:
			return nil
		case ctx.Err() != nil:
			return nil
		}
	}
}

// groupCommitError is the error of a failed commit of the offsets of n messages consume --group
// printed. They are out, and the group (unless the commit's answer was lost) has not committed
// them: the next run prints them again. Exit 5 (unavailable) would tell a script to run the
// same command again, and it would write them twice; so the command exits 1 and says so.
func groupCommitError(group string, n int, err error) error {
	err = fmt.Errorf("commit offsets of group %s: %w; the %d messages just printed may not be committed, and the next run of the group prints them again", group, err, n)
	if exitCodeFor(err) == exitUnavailable {
		return &rerunUnsafeError{err}
	}
	return err
}
