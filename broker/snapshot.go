package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/imagomq/imago/internal/fsutil"
)

// Snapshots (cluster mode). A member whose log ends below the leader's first retained entry
// (compaction, raftcompact.go, deleted what it needs) cannot catch up from the leader's log. It
// is sent a raft snapshot instead, whose data is a small manifest: the leader's last durable
// checkpoint (the derived state as of raft index Index: partition starts and ends, transaction
// branches, decisions, the idempotency store's durable point), the topics as of that index, the
// leader's compaction point, and the list of files to copy: its retained commit-log segments up
// to the checkpoint's position, its partition index files and its idempotency files.
//
// The leader links those files (hard links) into snapshots/<index>/ when it makes the
// manifest, so retention and compaction may go on deleting the originals while a member
// copies; every file is append-only below the size the manifest gives, so a link taken now
// still has exactly those bytes. A member copies them into a staging directory, fsyncs them,
// and stops; InstallSnapshot then puts them in place before the broker opens, and the broker
// opens from that checkpoint as after any restart: raft delivers the entries after Index.
//
// The links keep the space of segments deleted meanwhile until the snapshot directory goes:
// when a newer snapshot is made (not within ten minutes of the last one, which is handed out
// again while it stays above the compaction point, so that a copy under way keeps its files),
// at the next open, or an hour after it was made.

// SnapshotFile is one file of a snapshot: its path relative to the data directory and how many
// of its bytes belong to the snapshot.
type SnapshotFile struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// SnapshotManifest describes a snapshot of a replicated broker at raft index Index.
type SnapshotManifest struct {
	Version int    `json:"version"`
	Index   uint64 `json:"index"`
	Term    uint64 `json:"term"`
	// CompactedIndex and CompactedTerm are the leader's compaction point: the first segment
	// copied starts with entry CompactedIndex+1.
	CompactedIndex uint64          `json:"compacted_index"`
	CompactedTerm  uint64          `json:"compacted_term"`
	Checkpoint     json.RawMessage `json:"checkpoint"`
	Topics         []topicMeta     `json:"topics"`
	Files          []SnapshotFile  `json:"files"`
	CreatedAt      string          `json:"created_at"`
}

const (
	snapshotsDirName = "snapshots"
	// snapshotKeep is how long a snapshot's links are kept when no newer one replaces them.
	snapshotKeep = time.Hour
	// snapshotReuse is how long a snapshot is handed out again rather than replaced by one of
	// a newer checkpoint (which would delete the links of one being copied).
	snapshotReuse = 10 * time.Minute
)

// ErrNoSnapshot: no snapshot can be made yet (no checkpoint covers the compaction point).
var ErrNoSnapshot = errors.New("no snapshot available yet")

// Snapshot returns a manifest of this broker's state at its last durable checkpoint, linking
// the files it lists under snapshots/<index>/ (or reusing the links of the same index). Cluster
// mode only.
func (b *Broker) Snapshot() (SnapshotManifest, error) {
	if b.rlog == nil {
		return SnapshotManifest{}, errors.New("snapshot: the broker is not replicated")
	}
	b.ckptMu.Lock()
	defer b.ckptMu.Unlock()
	if len(b.lastCkpt) == 0 {
		return SnapshotManifest{}, ErrNoSnapshot
	}
	var cp checkpointFile
	if err := json.Unmarshal(b.lastCkpt, &cp); err != nil {
		return SnapshotManifest{}, fmt.Errorf("snapshot: parse the last checkpoint: %w", err)
	}
	compIndex, compTerm := b.rlog.Compacted()
	if cp.RaftIndex < compIndex || cp.RaftIndex == 0 {
		return SnapshotManifest{}, ErrNoSnapshot
	}
	term, err := b.rlog.Term(cp.RaftIndex)
	if err != nil {
		return SnapshotManifest{}, fmt.Errorf("snapshot: term of entry %d: %w", cp.RaftIndex, err)
	}
	// A snapshot made a little earlier is handed out again while it is still above the
	// compaction point: a member may be copying it, and a newer one would delete its links.
	if ls := b.snap.Load(); ls != nil && ls.m.Index >= compIndex && b.opts.Now().Sub(ls.made) < snapshotReuse {
		return ls.m, nil
	}
	root := filepath.Join(b.opts.Dir, snapshotsDirName)
	dir := filepath.Join(root, strconv.FormatUint(cp.RaftIndex, 10))
	made := b.opts.Now()
	m := SnapshotManifest{Version: 1, Index: cp.RaftIndex, Term: term, CompactedIndex: compIndex, CompactedTerm: compTerm,
		Checkpoint: slices.Clone(b.lastCkpt), CreatedAt: made.UTC().Format(time.RFC3339Nano)}
	inCkpt := make(map[uint32]bool)
	for _, p := range cp.Partitions {
		inCkpt[p.Topic] = true
	}
	b.topicMu.Lock()
	for _, t := range b.metas {
		if inCkpt[t.ID] {
			m.Topics = append(m.Topics, t)
		}
	}
	b.topicMu.Unlock()
	// Older snapshots are of no use once this one exists.
	b.snap.Store(nil)
	if err := os.RemoveAll(root); err != nil {
		return SnapshotManifest{}, fmt.Errorf("snapshot: remove older snapshots: %w", err)
	}
	link := func(name string, size int64) error {
		dst := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.Link(filepath.Join(b.opts.Dir, name), dst); err != nil {
			return err
		}
		m.Files = append(m.Files, SnapshotFile{Name: name, Size: size})
		return nil
	}
	// The log, from its first segment to the checkpoint's position.
	for _, sb := range b.log.segmentBounds() {
		if sb[0] >= cp.Position && sb[0] > b.log.start() {
			break
		}
		if err := link(filepath.Join("log", segmentName(sb[0])), min(sb[1], cp.Position)-sb[0]); err != nil {
			return SnapshotManifest{}, fmt.Errorf("snapshot: link log segment %d: %w", sb[0], err)
		}
	}
	// The index files of the topics the checkpoint covers.
	for _, t := range b.table.Load().byID {
		if !inCkpt[t.id] {
			continue
		}
		for _, p := range t.parts {
			p.mu.RLock()
			segs := slices.Clone(p.segs)
			p.mu.RUnlock()
			for _, s := range segs {
				rel, err := filepath.Rel(b.opts.Dir, s.f.Name())
				if err != nil {
					return SnapshotManifest{}, fmt.Errorf("snapshot: %w", err)
				}
				if err := link(rel, int64(len(s.data))); err != nil {
					return SnapshotManifest{}, fmt.Errorf("snapshot: link index %s: %w", rel, err)
				}
			}
		}
	}
	// The idempotency files up to the checkpoint's durable point (the store, opened with the
	// checkpoint, cuts and drops what lies beyond it; a file expiry deleted is not needed).
	if cp.Dedupe.File != "" {
		ents, err := os.ReadDir(filepath.Join(b.opts.Dir, "dedupe"))
		if err != nil {
			return SnapshotManifest{}, fmt.Errorf("snapshot: list idempotency files: %w", err)
		}
		for _, e := range ents {
			name := e.Name()
			if !strings.HasSuffix(name, ".dedupe") || name > cp.Dedupe.File {
				continue
			}
			rel := filepath.Join("dedupe", name)
			size := cp.Dedupe.Size
			if name != cp.Dedupe.File {
				st, err := os.Stat(filepath.Join(b.opts.Dir, rel))
				if errors.Is(err, os.ErrNotExist) {
					continue // expired meanwhile
				}
				if err != nil {
					return SnapshotManifest{}, fmt.Errorf("snapshot: %w", err)
				}
				size = st.Size()
			}
			if err := link(rel, size); err != nil && !errors.Is(err, os.ErrNotExist) {
				return SnapshotManifest{}, fmt.Errorf("snapshot: link idempotency file %s: %w", name, err)
			}
		}
	}
	ls := &linkedSnapshot{m: m, sizes: make(map[string]int64, len(m.Files)), made: made}
	for _, f := range m.Files {
		ls.sizes[f.Name] = f.Size
	}
	b.snap.Store(ls)
	b.opts.Logger.Info("snapshot made for a member behind the compacted log", "index", m.Index, "term", m.Term, "files", len(m.Files))
	return m, nil
}

// linkedSnapshot is the snapshot whose files are linked under snapshots/<index>/: its
// manifest, the size of each file by name, and when it was made.
type linkedSnapshot struct {
	m     SnapshotManifest
	sizes map[string]int64
	made  time.Time
}

// OpenSnapshotFile opens file name of the snapshot at index, as the manifest lists it, and
// returns a reader of exactly the manifest's size. Names not in the manifest are refused.
func (b *Broker) OpenSnapshotFile(index uint64, name string) (io.ReadCloser, int64, error) {
	ls := b.snap.Load()
	if ls == nil || ls.m.Index != index {
		return nil, 0, fmt.Errorf("snapshot %d: %w", index, ErrNoSnapshot)
	}
	size, ok := ls.sizes[name]
	if !ok {
		return nil, 0, fmt.Errorf("snapshot %d has no file %q", index, name)
	}
	f, err := os.Open(filepath.Join(b.opts.Dir, snapshotsDirName, strconv.FormatUint(index, 10), name))
	if err != nil {
		return nil, 0, fmt.Errorf("snapshot %d: %w", index, err)
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(f, size), f}, size, nil
}

// removeOldSnapshots deletes the links of a snapshot made more than snapshotKeep ago.
func (b *Broker) removeOldSnapshots() {
	b.ckptMu.Lock()
	defer b.ckptMu.Unlock()
	ls := b.snap.Load()
	if ls == nil || b.opts.Now().Sub(ls.made) <= snapshotKeep {
		return
	}
	b.snap.Store(nil)
	if err := os.RemoveAll(filepath.Join(b.opts.Dir, snapshotsDirName)); err != nil {
		b.opts.Logger.Warn("remove an old snapshot", "index", ls.m.Index, "err", err)
	}
}

// brokerState lists the names in a data directory that make up a replicated broker's state,
// which installing a snapshot replaces.
var brokerState = []string{"log", "index", "dedupe", checkpointFileName, topicsFileName, raftCompactedFileName}

// WriteSnapshotState writes the small files of manifest m into dir (a staging directory whose
// copied files are already in place): the checkpoint, the topics and the compaction point, each
// fsync'd, and makes every directory of the state exist.
func WriteSnapshotState(dir string, m SnapshotManifest) error {
	// Every name of the state exists in the staging directory, empty or not, so that
	// InstallSnapshot replaces each of them.
	for _, name := range []string{"log", "index", "dedupe"} {
		if err := fsutil.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			return fmt.Errorf("stage snapshot: %w", err)
		}
	}
	if err := fsutil.WriteFileAtomic(dir, checkpointFileName, m.Checkpoint, 0o644); err != nil {
		return fmt.Errorf("stage snapshot: %w", err)
	}
	topics := slices.Clone(m.Topics)
	if err := saveTopics(dir, topics); err != nil {
		return fmt.Errorf("stage snapshot: %w", err)
	}
	if err := writeRaftCompaction(dir, raftCompaction{Index: m.CompactedIndex, Term: m.CompactedTerm}); err != nil {
		return fmt.Errorf("stage snapshot: %w", err)
	}
	return nil
}

// InstallSnapshot replaces the broker state in dataDir with the one staged in staged (files
// copied from a snapshot and WriteSnapshotState). Each name moves whole (the old one removed
// first), so running it again after a crash at any point finishes the job: a name already
// moved is no longer in staged. The broker must not be open. Leftovers of the old state that
// refer to its log (the fail mark, old snapshot links) are removed.
func InstallSnapshot(dataDir, staged string) error {
	for _, name := range brokerState {
		src := filepath.Join(staged, name)
		if _, err := os.Lstat(src); errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return fmt.Errorf("install snapshot: %w", err)
		}
		dst := filepath.Join(dataDir, name)
		if err := os.RemoveAll(dst); err != nil {
			return fmt.Errorf("install snapshot: remove the old %s: %w", name, err)
		}
		if err := os.Rename(src, dst); err != nil {
			return fmt.Errorf("install snapshot: move %s in place: %w", name, err)
		}
	}
	for _, name := range []string{failMarkName, snapshotsDirName} {
		if err := os.RemoveAll(filepath.Join(dataDir, name)); err != nil {
			return fmt.Errorf("install snapshot: remove %s: %w", name, err)
		}
	}
	if err := fsutil.SyncDir(dataDir); err != nil {
		return err
	}
	// The moved directories' entries were synced where they were staged; syncing them again
	// where they are now costs little and does not rely on the file system keeping a
	// directory's durable entries across a rename.
	for _, name := range []string{"log", "index", "dedupe"} {
		err := filepath.WalkDir(filepath.Join(dataDir, name), func(path string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return err
			}
			return fsutil.SyncDir(path)
		})
		if err != nil {
			return fmt.Errorf("install snapshot: sync %s: %w", name, err)
		}
	}
	return nil
}
