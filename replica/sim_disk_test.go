package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/imagomq/imago/internal/fsutil"
)

// The simulation's disk: one sync hook for the three nodes records what every sync made
// durable (internal/powerloss) and the contents of every commit-log segment at its sync, and
// fails, or turns into a power loss or a kill, the syncs of a node the seed chose.
//
// The commit log after a power loss is modelled harder than internal/powerloss does. The
// recorder cuts every file back to the size of its last sync and keeps what is below it as it
// is now. A disk may also have written some of the unsynced bytes (a torn tail of valid or
// half-written batches), and where the log was truncated and rewritten since its last sync (a
// new leader overwrote uncommitted entries) it may still hold the old pages, or the old length
// when the truncation itself was never synced. For each segment file the seed picks one of
// those outcomes. Whatever the file holds afterwards survived the power loss, so it is
// recorded as durable.

// disk states of a node, as the sync hook sees them.
const (
	diskOK         = iota
	diskDoomed     // the next commit-log sync loses power
	diskDoomedAny  // the next sync of any of the node's files (raft state, topics) loses power
	diskKillInSync // the process is killed in its next commit-log sync of a Ready (kill -9)
	diskDead       // power is gone: every sync fails and records nothing
)

// hook is the process-wide sync hook: it records what each sync made durable, fails the syncs
// of a node whose power is gone, and turns a doomed node's next commit-log sync into the
// moment the power goes.
func (s *sim) hook(ev fsutil.Event, do func() error) error {
	s.diskMu.Lock()
	for _, nd := range s.nodes[1:] {
		if !strings.HasPrefix(ev.Path, nd.dir+string(filepath.Separator)) && ev.Path != nd.dir {
			continue
		}
		if nd.disk == diskDoomed && ev.Kind == fsutil.File && strings.HasPrefix(ev.Path, filepath.Join(nd.dir, "log")+string(filepath.Separator)) ||
			nd.disk == diskDoomedAny {
			nd.disk = diskDead
		}
		if nd.disk == diskDead {
			s.diskMu.Unlock()
			return fmt.Errorf("sync %s: %w", ev.Path, syscall.EIO)
		}
		if nd.disk == diskKillInSync && s.processing == nd && ev.Kind == fsutil.File && strings.HasPrefix(ev.Path, filepath.Join(nd.dir, "log")+string(filepath.Separator)) {
			// The process dies in fdatasync: the entries are written, not synced, and the
			// page cache keeps them. The panic unwinds the Ready loop to process.
			nd.disk = diskDead
			s.diskMu.Unlock()
			panic(simKilled{nd})
		}
	}
	s.diskMu.Unlock()
	if err := s.rec.Hook(ev, func() error { return nil }); err != nil {
		return err
	}
	s.diskMu.Lock()
	s.logImage(ev)
	s.diskMu.Unlock()
	return nil
}

func (s *sim) setDisk(nd *simNode, state int) {
	s.diskMu.Lock()
	nd.disk = state
	s.diskMu.Unlock()
}

func (s *sim) diskOf(nd *simNode) int {
	s.diskMu.Lock()
	defer s.diskMu.Unlock()
	return nd.disk
}

const simPage = 4096

// logImage records the contents of a commit-log segment as its sync made them durable. The
// caller holds diskMu.
func (s *sim) logImage(ev fsutil.Event) {
	if ev.Kind != fsutil.File || filepath.Ext(ev.Path) != ".log" || !strings.Contains(ev.Path, string(filepath.Separator)+"log"+string(filepath.Separator)) {
		return
	}
	b, err := os.ReadFile(ev.Path)
	if err != nil {
		return
	}
	if int64(len(b)) > ev.Size {
		b = b[:ev.Size]
	}
	s.images[ev.Path] = b
}

// segments returns the contents of nd's commit-log segments now.
func (s *sim) segments(nd *simNode) map[string][]byte {
	out := map[string][]byte{}
	dir := filepath.Join(nd.dir, "log")
	ents, err := os.ReadDir(dir)
	if err != nil {
		s.fatalf("node %d: %v", nd.id, err)
	}
	for _, e := range ents {
		if filepath.Ext(e.Name()) != ".log" {
			continue
		}
		p := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			s.fatalf("node %d: %v", nd.id, err)
		}
		out[p] = b
	}
	return out
}

// tear applies the harder model to nd's segments after the recorder's cut: before holds their
// contents just before the power went.
func (s *sim) tear(nd *simNode, before map[string][]byte) (torn, old int) {
	for p, cur := range before {
		after, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue // its name was never durable
		}
		if err != nil {
			s.fatalf("node %d: %v", nd.id, err)
		}
		s.diskMu.Lock()
		img := s.images[p]
		s.diskMu.Unlock()
		out := append([]byte(nil), after...)
		mode := s.rng.IntN(4)
		if mode&1 != 0 && len(cur) > len(out) { // some unsynced bytes reached the disk
			n := s.rng.IntN(len(cur) - len(out) + 1)
			out = append(out, cur[len(out):len(out)+n]...)
			if n > 0 {
				torn++
			}
		}
		if mode&2 != 0 && img != nil { // old pages where the log was rewritten since its sync
			if len(img) > len(out) && len(cur) < len(img) && s.rng.IntN(2) == 0 {
				out = append(out, img[len(out):]...) // the truncation was never synced
				old++
			}
			for at := 0; at < min(len(out), len(img)); at += simPage {
				end := min(at+simPage, len(out), len(img))
				if string(out[at:end]) != string(img[at:end]) && s.rng.IntN(2) == 0 {
					copy(out[at:end], img[at:end])
					old++
				}
			}
		}
		if string(out) == string(after) {
			continue
		}
		if err := os.WriteFile(p, out, 0o644); err != nil {
			s.fatalf("node %d: %v", nd.id, err)
		}
		// What survived the power loss is on the disk: record it (and its image) as durable.
		s.durable(p, int64(len(out)))
	}
	return torn, old
}

// durable records p's current contents as durable, as a sync of it would.
func (s *sim) durable(p string, size int64) {
	if err := s.hook(fsutil.Event{Kind: fsutil.File, Path: p, Size: size}, func() error { return nil }); err != nil {
		s.fatalf("record %s: %v", p, err)
	}
}

// durableEntries parses nd's commit log as its syncs left it (the images of its segments, in
// order): the raft entries a power loss cannot take, each as raft hands it to the applier
// (the batch with term and index zeroed and its header CRC recomputed, or the body of a batch
// that is not the broker's). Parsing stops at the first damaged or missing byte.
//
// A compacted log starts after its compaction point (raft-compacted, written before any segment
// is deleted): entries at or below it that a deletion cut short left behind are passed over.
func (s *sim) durableEntries(nd *simNode) map[uint64]appliedEntry {
	dir := filepath.Join(nd.dir, "log")
	files, err := os.ReadDir(dir)
	if err != nil {
		s.fatalf("node %d: %v", nd.id, err)
	}
	be := binary.BigEndian
	out := map[uint64]appliedEntry{}
	comp := s.compaction(nd)
	next := comp + 1
	for _, f := range files {
		if filepath.Ext(f.Name()) != ".log" {
			continue
		}
		s.diskMu.Lock()
		img := s.images[filepath.Join(dir, f.Name())]
		s.diskMu.Unlock()
		pos := 0
		for pos+simRaftHeader <= len(img) {
			n := int(be.Uint32(img[pos:]))
			if n < simRaftHeader || pos+n > len(img) {
				return out
			}
			b := img[pos : pos+n]
			if b[8] != simRaftMagic || crc32.Checksum(b[8:simRaftHeader], simCastagnoli) != be.Uint32(b[4:]) {
				return out
			}
			if idx := be.Uint64(b[56:]); idx <= comp && idx < next {
				pos += n
				continue
			} else if idx != next {
				return out
			}
			var data []byte
			if b[9] == simBatchRaft {
				data = b[simRaftHeader:]
				if be.Uint16(b[10:])>>1&3 != 0 {
					data = nil // a membership change (the bootstrap voters): applied as its index only
				}
			} else {
				data = append([]byte(nil), b...)
				clear(data[48:simRaftHeader])
				be.PutUint32(data[4:], crc32.Checksum(data[8:simRaftHeader], simCastagnoli))
			}
			out[next] = appliedEntry{term: be.Uint64(b[48:]), data: string(data)}
			next++
			pos += n
		}
		if pos != len(img) {
			return out
		}
	}
	return out
}

// The commit log's batch header as durableEntries reads it (broker/record.go).
const (
	simRaftHeader = 64
	simRaftMagic  = 2
	simBatchRaft  = 7
)

var simCastagnoli = crc32.MakeTable(crc32.Castagnoli)

// checkDurable asserts that every entry applied anywhere is durable on at least need nodes: a
// quorum (2) at any time, raft's promise, which breaks if a node acknowledges, or a leader
// counts itself, before its sync, or if a restart serves bytes it never made durable; all three
// once the group has converged (a node applies only what its own log holds durably).
func (s *sim) checkDurable(when string, need int) {
	var (
		logs  []map[uint64]appliedEntry
		comps []uint64
	)
	for _, nd := range s.nodes[1:] {
		logs = append(logs, s.durableEntries(nd))
		comps = append(comps, s.compaction(nd))
	}
	for i := uint64(1); i <= s.maxIndex; i++ {
		a := s.applied[i]
		have := 0
		for k, l := range logs {
			// An entry a node compacted is covered by its durable checkpoint (compaction never
			// passes it): its effect is durable there, its bytes are not needed.
			if e, ok := l[i]; ok && e == a || i <= comps[k] {
				have++
			}
		}
		if have < need {
			var detail []string
			for k, nd := range s.nodes[1:] {
				files, _ := os.ReadDir(filepath.Join(nd.dir, "log"))
				var segs []string
				for _, f := range files {
					path := filepath.Join(nd.dir, "log", f.Name())
					st, _ := os.Stat(path)
					s.diskMu.Lock()
					img := len(s.images[path])
					s.diskMu.Unlock()
					segs = append(segs, fmt.Sprintf("%s(%d bytes, image %d)", f.Name(), st.Size(), img))
				}
				detail = append(detail, fmt.Sprintf("node %d: compacted through %d, %d durable entries, segments %v", nd.id, comps[k], len(logs[k]), segs))
			}
			s.fatalf("%s: committed entry %d (term %d) is durable on %d node(s); %s", when, i, a.term, have, strings.Join(detail, "; "))
		}
	}
}
