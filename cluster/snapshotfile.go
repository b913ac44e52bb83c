package cluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Snapshot files travel on the raft port, outside the message stream: a member that stages a
// snapshot dials the member that sent it with a hello of version helloFile, sends one request
// frame (JSON: the snapshot's index and a file name), and reads one answer frame (JSON: the
// file's size, or an error) followed by exactly that many bytes. One connection per file; the
// raft connections are not held up by a large copy. The files are the whole message store, so
// the connection is mutual TLS like the raft stream when the transport has TLS.

// helloFile is the hello version of a file request.
const helloFile = 2

// FileSource opens a file of the snapshot at index for a peer that copies it: a reader of
// exactly size bytes.
type FileSource func(index uint64, name string) (r io.ReadCloser, size int64, err error)

// snapshotReporter is what the handler may also implement (Node does): told whether a
// snapshot message went out.
type snapshotReporter interface {
	ReportSnapshot(id uint64, failed bool)
}

type fileRequest struct {
	Index uint64 `json:"index"`
	Name  string `json:"name"`
}

type fileAnswer struct {
	Size  int64  `json:"size"`
	Error string `json:"error,omitempty"`
}

// fileIdle bounds how long one read or write of a file copy may take.
const fileIdle = 30 * time.Second

// idleConn moves the connection's deadline forward before each read and write: a copy fails
// after fileIdle without progress, however long the whole file takes.
type idleConn struct{ net.Conn }

func (c idleConn) Read(p []byte) (int, error) {
	c.SetReadDeadline(time.Now().Add(fileIdle))
	return c.Conn.Read(p)
}

func (c idleConn) Write(p []byte) (int, error) {
	c.SetWriteDeadline(time.Now().Add(fileIdle))
	return c.Conn.Write(p)
}

func writeFrame(w io.Writer, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var lenBuf [4]byte
	binary.BigEndian.PutUint32(lenBuf[:], uint32(len(data)))
	if _, err := w.Write(lenBuf[:]); err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

// serveFile answers one file request (req, the request frame) on c.
func (t *Transport) serveFile(c net.Conn, from uint64, req []byte) {
	var fr fileRequest
	ans := fileAnswer{}
	var r io.ReadCloser
	switch err := json.Unmarshal(req, &fr); {
	case err != nil:
		ans.Error = "bad request: " + err.Error()
	case t.cfg.Files == nil:
		ans.Error = "this node serves no snapshot files"
	default:
		var err error
		if r, ans.Size, err = t.cfg.Files(fr.Index, fr.Name); err != nil {
			ans.Error = err.Error()
		}
	}
	if r != nil {
		defer r.Close()
	}
	w := bufio.NewWriterSize(idleConn{c}, 256<<10)
	if err := writeFrame(w, ans); err != nil || ans.Error != "" {
		_ = w.Flush()
		if ans.Error != "" {
			t.log.Warn("raft transport: snapshot file refused", "peer", from, "index", fr.Index, "file", fr.Name, "err", ans.Error)
		}
		return
	}
	// A short file ends the connection early: the member sees fewer bytes than announced.
	if sent, err := io.CopyN(w, r, ans.Size); err != nil {
		t.log.Warn("raft transport: snapshot file not sent whole", "peer", from, "file", fr.Name, "sent", sent, "size", ans.Size, "err", err)
		return
	}
	_ = w.Flush()
}

// FetchFile copies file name of the snapshot at index from peer into w and returns its size.
// It fails unless every byte the peer announced arrived.
func (t *Transport) FetchFile(ctx context.Context, peerID, index uint64, name string, w io.Writer) (int64, error) {
	p := t.peer(peerID)
	if p == nil {
		return 0, fmt.Errorf("fetch snapshot file %s: node %d is not a known peer", name, peerID)
	}
	conn, err := dialPeer(ctx, t.cfg.TLS, p.addr, t.cfg.DialTimeout)
	if err != nil {
		return 0, fmt.Errorf("fetch snapshot file %s from node %d: %w", name, peerID, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	hello := []byte(helloMagic)
	hello = append(hello, helloFile)
	hello = binary.BigEndian.AppendUint64(hello, t.cfg.ID)
	hello = binary.BigEndian.AppendUint64(hello, peerID)
	bw := bufio.NewWriter(idleConn{conn})
	bw.Write(hello)
	if err := writeFrame(bw, fileRequest{Index: index, Name: name}); err != nil {
		return 0, fmt.Errorf("fetch snapshot file %s from node %d: %w", name, peerID, err)
	}
	if err := bw.Flush(); err != nil {
		return 0, fmt.Errorf("fetch snapshot file %s from node %d: %w", name, peerID, err)
	}
	r := bufio.NewReaderSize(idleConn{conn}, 256<<10)
	var lenBuf [4]byte
	if _, err := io.ReadFull(r, lenBuf[:]); err != nil {
		return 0, fmt.Errorf("fetch snapshot file %s from node %d: read answer: %w", name, peerID, err)
	}
	n := binary.BigEndian.Uint32(lenBuf[:])
	if n > 1<<20 {
		return 0, fmt.Errorf("fetch snapshot file %s from node %d: answer of %d bytes", name, peerID, n)
	}
	raw := make([]byte, n)
	if _, err := io.ReadFull(r, raw); err != nil {
		return 0, fmt.Errorf("fetch snapshot file %s from node %d: read answer: %w", name, peerID, err)
	}
	var ans fileAnswer
	if err := json.Unmarshal(raw, &ans); err != nil {
		return 0, fmt.Errorf("fetch snapshot file %s from node %d: %w", name, peerID, err)
	}
	if ans.Error != "" {
		return 0, fmt.Errorf("fetch snapshot file %s from node %d: %w", name, peerID, errors.New(ans.Error))
	}
	got, err := io.CopyN(w, r, ans.Size)
	if err != nil {
		return got, fmt.Errorf("fetch snapshot file %s from node %d: %d of %d bytes: %w", name, peerID, got, ans.Size, err)
	}
	return got, nil
}
