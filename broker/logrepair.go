package broker

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/imagomq/imago/internal/fsutil"
)

// Dropping a corrupt batch is the operator's explicit choice when start-up refuses a log with a
// bad batch in the middle (verify.go). The bad batch's bytes, up to the next valid batch, are
// copied to repair/ and replaced in place by a gap batch of the same length: no records, zero
// padding (one gap per segment file when the bad bytes run into the next segment, since a batch
// never spans segments). Every later batch keeps its log position and its messages keep their offsets. The
// offsets the dropped batch held are lost: recovery marks them in the index (gapEntry) and
// readers skip them with a logged warning. Its idempotency key, if any, is forgotten when the
// batch lay after the last checkpoint (a retry of that request is stored again); when a
// checkpoint covered it, the key is still remembered and a retry answers "duplicate" with the
// skipped offsets. The index is rebuilt from the log at the next start. When the dropped batch
// held a partition's last messages, the rebuild keeps the end the checkpoint recorded (those
// offsets stay lost, never reused); with no checkpoint covering it, nothing on disk records
// them and new messages get them again (docs/operations.md says so to the operator). A
// prepared branch whose prepare batch is dropped cannot be committed any more: when the
// checkpoint lists it and no later batch decided it, it comes back heuristically rolled back
// (recovery.go), so the transaction manager's commit gets XA_HEURRB, not XAER_NOTA. When the
// checkpoint does not list it (prepared after the checkpoint), nothing remembers it: it is
// forgotten and a commit gets XAER_NOTA; the report names the xid for the operator. A branch
// decided before the checkpoint whose decision batch is dropped while its prepare batch is
// still in the log also comes back heuristically rolled back (recovery.go), not prepared: a
// commit would append its messages again.

// dropStep, when a test sets dropStepHook, stops DropCorruptBatch after the named step as a
// crash there would.
func dropStep(step string) error {
	if dropStepHook != nil {
		return dropStepHook(step)
	}
	return nil
}

var dropStepHook func(step string) error

// DropReport describes what DropCorruptBatch did.
type DropReport struct {
	Segment  string   // the segment file that holds the dropped batch
	Segments []string // every segment file changed: one gap per segment the bad bytes cover
	Position int64    // log position of the dropped batch
	Bytes    int64    // bytes replaced by the gap (up to the next valid batch)
	Copy     string   // where the dropped bytes were saved
	// Dropped says what the dropped batch held, as far as its header and records can still be
	// read, and what dropping it forgets; one line each.
	Dropped []string
}

// DropCorruptBatch replaces the corrupt batch at log position pos of the data directory dir with
// a gap, after saving its bytes under repair/. It refuses unless VerifyLog reports corruption at
// exactly pos, and while a broker holds the directory. Every step is fsync'd.
func DropCorruptBatch(dir string, pos int64, logger *slog.Logger) (DropReport, error) {
	if logger == nil {
		logger = slog.Default()
	}
	lock, err := fsutil.LockFile(filepath.Join(dir, "LOCK"))
	if err != nil {
		return DropReport{}, fmt.Errorf("data directory %s is in use (stop the server first): %w", dir, err)
	}
	defer lock.Close()
	rep, err := VerifyLog(dir)
	if err != nil {
		return DropReport{}, err
	}
	ce := rep.Corruption
	if ce == nil || ce.Position != pos {
		found := "no corruption"
		if ce != nil {
			found = fmt.Sprintf("corruption at log position %d", ce.Position)
		}
		return DropReport{}, fmt.Errorf("no corrupt batch at log position %d: imago log verify finds %s; nothing changed", pos, found)
	}
	n := ce.NextValid - pos
	l, err := openLogReadOnly(filepath.Join(dir, "log"))
	if err != nil {
		return DropReport{}, err
	}
	defer l.close()
	gaps, err := gapPieces(l, pos, ce.NextValid)
	if err != nil {
		return DropReport{}, err
	}
	if replicatedLog(dir, l, ce) {
		return DropReport{}, fmt.Errorf("the data directory %s belongs to a cluster member (its log holds raft entries): a batch of a "+
			"replicated log cannot be dropped, since every node must hold the same entries; replace the node instead "+
			"(docs/cluster.md, \"Runbook: replace a node\"): remove it from the cluster and add a new node with an empty "+
			"data directory, which copies the log from the leader; nothing changed", dir)
	}
	dropped := describeDropped(dir, l, pos, ce.NextValid)
	saveDir := filepath.Join(dir, "repair", strconv.FormatInt(time.Now().UnixMilli(), 10))
	name := fmt.Sprintf("dropped-at-%020d.bin", pos)
	if err := saveLogBytes(l, saveDir, name, pos, ce.NextValid); err != nil {
		return DropReport{}, fmt.Errorf("save the bytes to drop (nothing changed): %w", err)
	}
	// Crash safety: the index may point into the dropped bytes (a checkpoint covered them), and
	// a start that loads it would serve corrupt_record for them forever. So the index is removed,
	// durably, before the gap is written: a crash before the gap is on disk leaves the corrupt
	// batch, which verify reports and this command drops again; a crash after it leaves a
	// directory without an index, whose next start rebuilds every index from the log.
	if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
		return DropReport{}, fmt.Errorf("remove the index for a rebuild (the log is unchanged): %w", err)
	}
	if err := fsutil.SyncDir(dir); err != nil {
		return DropReport{}, fmt.Errorf("sync %s after removing the index (the log is unchanged): %w", dir, err)
	}
	if err := dropStep("index removed"); err != nil {
		return DropReport{}, err
	}
	// The last segment's gap first: if the drop stops half way, verify still reports the
	// corruption at pos, with the same next valid batch, and the command can run again as it was.
	for i := len(gaps) - 1; i >= 0; i-- {
		if err := writeGap(gaps[i]); err != nil {
			return DropReport{}, err
		}
		if err := dropStep("gap written"); err != nil {
			return DropReport{}, err
		}
	}
	out := DropReport{Segment: ce.Segment, Position: pos, Bytes: n, Copy: filepath.Join(saveDir, name), Dropped: dropped}
	for _, g := range gaps {
		out.Segments = append(out.Segments, g.file)
	}
	logger.Warn("dropped a corrupt batch from the commit log", "segment", out.Segment, "position", pos,
		"bytes", n, "segments", len(gaps), "reason", ce.Reason, "valid_batches_after", ce.ValidAfter, "copy", out.Copy, "dropped", strings.Join(dropped, "; "))
	return out, nil
}

// replicatedLog reports whether the log of dir is a cluster member's: the first batch, the
// damaged one or the first valid one after it is a raft entry (raftlog.go), or raft compaction
// left its marker. Dropping a batch there would leave a gap no other node has, and a log the
// replicated broker refuses to open.
func replicatedLog(dir string, l *commitLog, ce *CorruptionError) bool {
	if _, err := os.Stat(filepath.Join(dir, raftCompactedFileName)); err == nil {
		return true
	}
	for _, pos := range []int64{l.start(), ce.Position, ce.NextValid} {
		var hdr [batchHeaderSize]byte
		if l.readAt(hdr[:], pos) == nil && hdr[8] == raftMagic {
			return true
		}
	}
	return false
}

// gapPiece is one gap batch to write: the bytes [from, to) of the log, in file at off.
type gapPiece struct {
	file     string
	off      int64
	from, to int64
}

// gapPieces splits the bad bytes [pos, next) at segment boundaries. A batch never spans
// segments (readers, retention and the segment's own end rely on it), so bad bytes that run
// into the next segment get one gap per segment, each ending where its segment's bytes do. It
// refuses, before anything is written, a piece too short or too long for a gap batch.
func gapPieces(l *commitLog, pos, next int64) ([]gapPiece, error) {
	var out []gapPiece
	for _, s := range l.segmentBounds() {
		from, to := max(pos, s[0]), min(next, s[1])
		if from >= to {
			continue
		}
		if to-from < batchHeaderSize || to-from > maxBatchBytes {
			return nil, fmt.Errorf("the bad bytes at log position %d run to %d; the %d of them in segment %s do not fit one gap batch "+
				"(%d to %d bytes); nothing changed", pos, next, to-from, segmentName(s[0]), batchHeaderSize, int64(maxBatchBytes))
		}
		out = append(out, gapPiece{file: filepath.Join(l.dir, segmentName(s[0])), off: from - s[0], from: from, to: to})
	}
	if len(out) == 0 || out[0].from != pos || out[len(out)-1].to != next {
		return nil, fmt.Errorf("the bad bytes at log position %d to %d are not all in the log's segments; nothing changed", pos, next)
	}
	return out, nil
}

// writeGap writes and fdatasyncs the gap batch g.
func writeGap(g gapPiece) error {
	n := g.to - g.from
	gap := make([]byte, n)
	putBatchHeader(gap, batchHeader{Length: uint32(n), Type: batchGap, Timestamp: time.Now().UnixMilli()})
	f, err := os.OpenFile(g.file, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(gap, g.off); err != nil {
		return fmt.Errorf("write the gap into %s at %d: %w", g.file, g.off, err)
	}
	if err := fsutil.Fdatasync(f); err != nil {
		return fmt.Errorf("sync %s: %w", g.file, err)
	}
	return f.Close()
}

// describeDropped reads what it can of the bad batch at pos (the bad bytes end at end): its
// header, then its records up to the first that fails its CRC, and says what the batch held and
// whether the last checkpoint covers it. It reads only; anything unreadable is said so.
func describeDropped(dir string, l *commitLog, pos, end int64) []string {
	var out []string
	cp, cpErr := loadCheckpoint(dir)
	names := map[uint32]string{}
	if metas, err := loadTopics(dir); err == nil {
		for _, m := range metas {
			names[m.ID] = m.Name
		}
	}
	topicName := func(id uint32) string {
		if n, ok := names[id]; ok {
			return n
		}
		return fmt.Sprintf("topic id %d", id)
	}
	hdr := make([]byte, min(int64(raftHeaderSize), end-pos))
	var h batchHeader
	err := l.readAt(hdr, pos)
	if err == nil {
		h, err = parseBatchHeader(hdr)
	}
	switch {
	case err != nil:
		out = append(out, fmt.Sprintf("the batch header is unreadable (%v): what the batch held is unknown", err))
	default:
		raw := make([]byte, min(int64(h.Length), end-pos))
		if err := l.readAt(raw, pos); err != nil {
			raw = raw[:0]
		}
		var recs []record
		bad := ""
		for at := h.size(); at < len(raw) && len(recs) < int(h.Count); {
			r, err := decodeRecord(raw[at:])
			if err != nil {
				bad = err.Error()
				break
			}
			recs = append(recs, r)
			at += r.Size
		}
		readable := fmt.Sprintf("%d of its %d records readable", len(recs), h.Count)
		if bad != "" {
			readable += " (the next: " + strings.TrimPrefix(bad, errTorn.Error()+": ") + ")"
		}
		key := ""
		if h.Flags&batchFlagKey != 0 {
			key = fmt.Sprintf(", with an idempotency key (%x)", h.Key)
		}
		msgs := func(recs []record) string {
			var parts []string
			type tp struct {
				t uint32
				p uint32
			}
			lo, hi := map[tp]int64{}, map[tp]int64{}
			var order []tp
			for _, r := range recs {
				k := tp{r.TopicID, r.Partition}
				if _, ok := lo[k]; !ok {
					lo[k], hi[k] = r.Offset, r.Offset
					order = append(order, k)
				}
				lo[k], hi[k] = min(lo[k], r.Offset), max(hi[k], r.Offset)
			}
			for _, k := range order {
				if lo[k] < 0 {
					parts = append(parts, fmt.Sprintf("%s/%d", topicName(k.t), k.p))
				} else {
					parts = append(parts, fmt.Sprintf("%s/%d offsets %d-%d", topicName(k.t), k.p, lo[k], hi[k]))
				}
			}
			if len(parts) == 0 {
				return "none readable"
			}
			return strings.Join(parts, ", ")
		}
		switch h.Type {
		case batchMessages:
			out = append(out, fmt.Sprintf("a message batch%s; %s; messages: %s", key, readable, msgs(recs)))
		case batchTx:
			if len(recs) == 0 || recs[0].TopicID != 0 || len(recs[0].Value) < 1 {
				out = append(out, fmt.Sprintf("a transaction batch; %s: which transaction and what record is unknown", readable))
				break
			}
			op, txKey := recs[0].Value[0], string(recs[0].Value[1:])
			line := fmt.Sprintf("a transaction batch: the %s record of %s; %s", txOpName(op), txKey, readable)
			if len(recs) > 1 {
				line += "; messages: " + msgs(recs[1:])
			}
			out = append(out, line)
			if cp != nil && strings.HasPrefix(txKey, "XID:") {
				listed := ""
				for _, c := range cp.Txs {
					if c.Key == txKey {
						listed = string(c.State)
					}
				}
				if listed != "" {
					out = append(out, fmt.Sprintf("the last checkpoint lists %s as %s", txKey, listed))
				} else if op != txOpPrepare && pos < cp.Position {
					out = append(out, fmt.Sprintf("the last checkpoint does not list %s (it was decided before the checkpoint): "+
						"if its prepare batch is still in the log, it comes back heuristically rolled back (a commit is answered XA_HEURRB)", txKey))
				} else {
					out = append(out, fmt.Sprintf("the last checkpoint does not list %s", txKey))
				}
			}
		case batchDecision:
			out = append(out, fmt.Sprintf("a batch of the coordinator's decisions; %s", readable))
		case batchSnapshot:
			out = append(out, fmt.Sprintf("a snapshot batch (partition ends after a segment roll); %s", readable))
		default:
			out = append(out, fmt.Sprintf("a batch of type %d; %s", h.Type, readable))
		}
	}
	switch {
	case cpErr != nil:
		out = append(out, fmt.Sprintf("the checkpoint is unreadable (%v): whether it covers the batch is unknown", cpErr))
	case cp == nil || pos >= cp.Position:
		out = append(out, "the batch lies after the last checkpoint: a prepare, decision or idempotency key held there is forgotten")
	default:
		out = append(out, fmt.Sprintf("the last checkpoint (log position %d) covers the batch: the idempotency keys, prepared branches and decisions it records are kept", cp.Position))
	}
	return out
}

func txOpName(op byte) string {
	switch op {
	case txOpPrepare:
		return "prepare"
	case txOpCommit:
		return "commit"
	case txOpCommitDecided:
		return "commit (with the coordinator's decision)"
	case txOpRollback:
		return "rollback"
	case txOpHeurCommit:
		return "heuristic commit"
	case txOpHeurRollback:
		return "heuristic rollback"
	case txOpForget:
		return "forget"
	}
	return fmt.Sprintf("unknown (op %d)", op)
}
