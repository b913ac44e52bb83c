package replica

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"

	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/cluster"
	"github.com/imagomq/imago/internal/fsutil"
)

// Catch-up by snapshot (docs/cluster.md, "Catch-up by snapshot"). When a member's log ends
// below the leader's compacted log, raft sends it a snapshot whose data is the leader's broker
// manifest (broker.Snapshot: the last durable checkpoint, the topics, and the files to copy)
// plus the members' addresses. The member then, on its Ready loop:
//
//  1. copies every listed file from the leader's raft port into snapshot-staging/ and fsyncs
//     it, writes the checkpoint, topics and compaction point there
//     (broker.WriteSnapshotState), fsyncs every directory;
//  2. writes the marker snapshot-install.json atomically: from here on the snapshot is staged;
//  3. stops (cluster.ErrSnapshotStaged): nothing of the Ready that carried the snapshot was
//     persisted or answered. serve re-executes the process.
//
// At the next start, before the broker opens, InstallStaged moves the staged state in place of
// the old one (broker.InstallSnapshot), writes the raft state (commit at the snapshot's index,
// the snapshot's membership) and the members file, and removes the marker. A crash before the
// marker leaves a staging directory that the next start deletes (the member is sent the
// snapshot again); a crash after it repeats the install, which finishes what the first
// started.

const (
	stagingDirName     = "snapshot-staging"
	installMarkerName  = "snapshot-install.json"
	snapshotDataFormat = 1
)

// snapshotData is the data of a raft snapshot: what the member that made it knows.
type snapshotData struct {
	Format    int                     `json:"format"`
	Source    uint64                  `json:"source"`
	ConfIndex uint64                  `json:"conf_index"`
	Members   []Peer                  `json:"members"`
	Removed   []uint64                `json:"removed,omitempty"`
	Broker    broker.SnapshotManifest `json:"broker"`
}

// installMarker is snapshot-install.json: what InstallStaged writes besides the broker state.
type installMarker struct {
	Index     uint64   `json:"index"`
	Term      uint64   `json:"term"`
	ConfIndex uint64   `json:"conf_index"`
	Voters    []uint64 `json:"voters"`
	Learners  []uint64 `json:"learners,omitempty"`
	Members   []Peer   `json:"members"`
	Removed   []uint64 `json:"removed,omitempty"`
}

// SnapshotStaged reports whether the member stopped because it staged a snapshot
// (cluster.ErrSnapshotStaged): the process should restart rather than exit.
func (m *Member) SnapshotStaged() bool {
	return m.staged.Load()
}

// snapshotter is a member's cluster.Snapshotter. Its parts are functions so that the
// deterministic simulation can run it without a transport.
type snapshotter struct {
	b    *broker.Broker
	self uint64
	log  *slog.Logger
	// confIndex is the index of the last membership change applied.
	confIndex func() uint64
	// members lists the members' addresses and the removed ids.
	members func() ([]Peer, []uint64)
	// fetch copies file name of the snapshot at index from member src into w.
	fetch func(ctx context.Context, src, index uint64, name string, w io.Writer) (int64, error)
	// staged is set once a snapshot is staged.
	staged *atomic.Bool
}

// memberSnapshotter is m's snapshotter: files travel over its raft transport.
func memberSnapshotter(m *Member) snapshotter {
	return snapshotter{
		b: m.b, self: m.cfg.NodeID, log: m.log,
		confIndex: func() uint64 { return m.node.ConfIndex() },
		members: func() ([]Peer, []uint64) {
			m.members.mu.Lock()
			defer m.members.mu.Unlock()
			return slices.Collect(maps.Values(m.members.peers)), slices.Clone(m.members.removed)
		},
		fetch: func(ctx context.Context, src, index uint64, name string, w io.Writer) (int64, error) {
			return m.tr.FetchFile(ctx, src, index, name, w) // m.tr is set after the node is made
		},
		staged: &m.staged,
	}
}

func (s snapshotter) Make() ([]byte, uint64, uint64, error) {
	man, err := s.b.Snapshot()
	if err != nil {
		if !errors.Is(err, broker.ErrNoSnapshot) {
			s.log.Error("make a snapshot", "err", err)
		}
		return nil, 0, 0, err
	}
	d := snapshotData{Format: snapshotDataFormat, Source: s.self, ConfIndex: s.confIndex(), Broker: man}
	d.Members, d.Removed = s.members()
	slices.SortFunc(d.Members, func(a, b Peer) int { return int(a.ID) - int(b.ID) })
	data, err := json.Marshal(d)
	if err != nil {
		return nil, 0, 0, err
	}
	return data, man.Index, man.Term, nil
}

func (s snapshotter) Stage(ctx context.Context, snap *pb.Snapshot) error {
	var d snapshotData
	if err := json.Unmarshal(snap.GetData(), &d); err != nil {
		return fmt.Errorf("snapshot data: %w", err)
	}
	if d.Format != snapshotDataFormat || d.Broker.Index != snap.GetMetadata().GetIndex() {
		return fmt.Errorf("snapshot data: format %d for index %d, expected format %d for index %d",
			d.Format, d.Broker.Index, snapshotDataFormat, snap.GetMetadata().GetIndex())
	}
	dir := s.b.Dir()
	staging := filepath.Join(dir, stagingDirName)
	if err := os.RemoveAll(staging); err != nil {
		return err
	}
	var bytes int64
	dirs := map[string]bool{staging: true}
	for _, f := range d.Broker.Files {
		if !filepath.IsLocal(f.Name) {
			return fmt.Errorf("snapshot names file %q outside the data directory", f.Name)
		}
		path := filepath.Join(staging, f.Name)
		for p := filepath.Dir(path); p != staging && !dirs[p]; p = filepath.Dir(p) {
			dirs[p] = true
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := s.fetchFile(ctx, d.Source, d.Broker.Index, f, path); err != nil {
			return err
		}
		bytes += f.Size
	}
	if err := broker.WriteSnapshotState(staging, d.Broker); err != nil {
		return err
	}
	// Deepest first, so that each directory's entry is durable in its parent.
	order := make([]string, 0, len(dirs))
	for p := range dirs {
		order = append(order, p)
	}
	slices.SortFunc(order, func(a, b string) int { return len(b) - len(a) })
	for _, p := range append(order, dir) {
		if err := fsutil.SyncDir(p); err != nil {
			return err
		}
	}
	cs := snap.GetMetadata().GetConfState()
	mark := installMarker{Index: d.Broker.Index, Term: d.Broker.Term, ConfIndex: d.ConfIndex,
		Voters: cs.GetVoters(), Learners: cs.GetLearners(), Members: d.Members, Removed: d.Removed}
	data, err := json.Marshal(mark)
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(dir, installMarkerName, data, 0o644); err != nil {
		return fmt.Errorf("mark the snapshot staged: %w", err)
	}
	s.staged.Store(true)
	s.log.Info("snapshot staged", "index", d.Broker.Index, "from_node", d.Source, "files", len(d.Broker.Files), "bytes", bytes)
	return nil
}

// fetchFile copies f of the snapshot at index from node src into path and fsyncs it.
func (s snapshotter) fetchFile(ctx context.Context, src, index uint64, f broker.SnapshotFile, path string) error {
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	n, err := s.fetch(ctx, src, index, f.Name, out)
	if err == nil && n != f.Size {
		err = fmt.Errorf("fetch snapshot file %s: %d bytes, the manifest says %d", f.Name, n, f.Size)
	}
	if err == nil {
		err = fsutil.Fsync(out)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// InstallStaged installs a snapshot a member staged before it stopped, if there is one. It
// must run before the broker opens dir. It is safe to run again after a crash at any point.
// A staging directory without the marker (a copy cut short) is deleted.
func InstallStaged(dir string, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.Default()
	}
	staging := filepath.Join(dir, stagingDirName)
	raw, err := fsutil.ReadFileDurable(filepath.Join(dir, installMarkerName))
	if errors.Is(err, os.ErrNotExist) {
		if err := os.RemoveAll(staging); err != nil {
			return fmt.Errorf("remove an unfinished snapshot copy: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", installMarkerName, err)
	}
	var mark installMarker
	if err := json.Unmarshal(raw, &mark); err != nil {
		return fmt.Errorf("parse %s: %w", installMarkerName, err)
	}
	if err := broker.InstallSnapshot(dir, staging); err != nil {
		return err
	}
	if err := cluster.InstallSnapshotState(dir, mark.Index, mark.Term, mark.ConfIndex, &pb.ConfState{Voters: mark.Voters, Learners: mark.Learners}); err != nil {
		return err
	}
	members := &membership{dir: dir, peers: make(map[uint64]Peer), removed: mark.Removed}
	for _, p := range mark.Members {
		members.peers[p.ID] = p
	}
	members.mu.Lock()
	err = members.saveLocked()
	members.mu.Unlock()
	if err != nil {
		return fmt.Errorf("install snapshot: write %s: %w", membersFileName, err)
	}
	if err := os.Remove(filepath.Join(dir, installMarkerName)); err != nil {
		return fmt.Errorf("install snapshot: %w", err)
	}
	if err := os.RemoveAll(staging); err != nil {
		return fmt.Errorf("install snapshot: %w", err)
	}
	if err := fsutil.SyncDir(dir); err != nil {
		return err
	}
	logger.Info("installed the snapshot staged from the leader", "index", mark.Index, "term", mark.Term, "voters", mark.Voters)
	return nil
}
